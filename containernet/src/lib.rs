//! A node's container networks (`bridge` mode, issue 20): the node's bridge holding the
//! first address of the node's subnet, and for each container a network namespace of its
//! own, joined to the bridge by a veth pair, with an address from the subnet and a default
//! route through the bridge.
//!
//! Modules, one job each:
//! - [`netns`]: network namespaces kept as bind-mounted files, and work done inside one.
//! - [`bridge`]: the node's bridge, its address, and forwarding.
//! - [`attach`]: a container's veth pair, address and route; and taking them down.
//! - [`nat`]: the node's nftables table (`ip cloudos`): containers' outbound masquerade,
//!   published ports forwarded to containers, and the hairpin between them; through
//!   nftables netlink messages, replaced whole in one batch.
//!
//! The subnet is the master's (cluster/src/subnets.rs); which address each container has
//! is the caller's. Every call is idempotent where it can be: a bridge that exists is
//! checked and kept, a namespace or link that is gone is not an error to remove.

pub mod attach;
pub mod bridge;
pub mod nat;
pub mod netns;

use std::path::PathBuf;

/// Why a container network could not be set up or taken down.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("netlink: {action}: {source}")]
    Netlink {
        action: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("the link {0} is not there")]
    NoLink(String),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{action}: {source}")]
    Sys {
        action: String,
        #[source]
        source: nix::Error,
    },
    #[error("{0}")]
    Thread(String),
    /// The kernel lacks nf_tables, or a part of it the node's table needs.
    #[error(
        "the kernel has no nf_tables ({what}): the node's NAT needs the modules {}, built in or loadable",
        NF_TABLES_MODULES
    )]
    NoNfTables { what: String },
    /// The kernel refused a message of an nftables batch, so it applied none of the batch.
    #[error("nftables refused {what}: {errno}{}; nothing of the change was applied", refusal_hint(*.errno))]
    NfTablesRefused {
        /// The message, in words (a rule in nft's syntax).
        what: String,
        errno: nix::errno::Errno,
    },
    /// Talking to the kernel on a netfilter netlink socket failed.
    #[error("netfilter netlink: {action}: {source}")]
    NfTablesIo {
        action: String,
        #[source]
        source: std::io::Error,
    },
    /// Rules that cannot make the node's table; nothing was sent.
    #[error("the node's NAT rules cannot be applied: {0}")]
    BadRules(String),
}

/// What the node's table needs of the kernel, as modules (most kernels build them in).
const NF_TABLES_MODULES: &str =
    "nf_tables, nft_chain_nat, nft_masq, nft_nat, nft_fib_ipv4, nf_nat and nf_conntrack";

/// What an errno from nftables most likely means for the node's table, which names only
/// what the same batch makes.
fn refusal_hint(errno: nix::errno::Errno) -> String {
    use nix::errno::Errno;
    match errno {
        // A missing chain type or expression (the batch makes every table and chain it
        // names); the kernel tried to load its module and found none.
        Errno::ENOENT | Errno::EOPNOTSUPP => format!(
            " (the kernel lacks a part of nf_tables: it needs the modules {NF_TABLES_MODULES})"
        ),
        Errno::EPERM => " (changing nftables needs CAP_NET_ADMIN: run as root)".to_owned(),
        _ => String::new(),
    }
}

pub(crate) fn netlink(action: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let action = action.into();
    move |source| NetError::Netlink { action, source }
}

/// Changes a link as `message` says (up, renamed, moved, on a bridge).
pub(crate) async fn set_link(
    handle: &rtnetlink::Handle,
    message: rtnetlink::packet_route::link::LinkMessage,
    action: impl Into<String>,
) -> Result<(), NetError> {
    handle
        .link()
        .set(message)
        .execute()
        .await
        .map_err(netlink(action))
}

/// A netlink connection on the calling thread's network namespace, driven on the current
/// runtime; the handle works for as long as the runtime runs.
pub fn connect() -> Result<rtnetlink::Handle, NetError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(|e| NetError::Io {
        action: "opening a netlink socket in",
        path: PathBuf::from("/proc/thread-self/ns/net"),
        source: e,
    })?;
    tokio::spawn(connection);
    Ok(handle)
}
