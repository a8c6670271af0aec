//! A node's container networks (`bridge` mode, issue 20): the node's bridge holding the
//! first address of the node's subnet, and for each container a network namespace of its
//! own, joined to the bridge by a veth pair, with an address from the subnet and a default
//! route through the bridge.
//!
//! Modules, one job each:
//! - [`netns`]: network namespaces kept as bind-mounted files, and work done inside one.
//! - [`bridge`]: the node's bridge, its address (IPv4 only), and forwarding.
//! - [`attach`]: a container's veth pair, address and route; and taking them down.
//! - [`nat`]: the node's nftables table (`ip cloudos`): containers' outbound masquerade,
//!   published ports forwarded to containers, and the hairpin between them; and the guard
//!   of what a container reaches: of its node only the ports the admin opened, past it
//!   anything but the blocked addresses (the masters' API), other nodes' containers
//!   through the mesh but never their nodes. Through nftables netlink messages, replaced
//!   whole in one batch.
//! - [`fence`]: ranges the node never sends on (an `unreachable` route each).
//! - [`mesh`]: the node's WireGuard link to the other nodes (`cloudos-wg`): its key pair,
//!   its peers and the routes to their subnets, so that containers on different nodes
//!   reach each other by their own addresses, encrypted between nodes; through rtnetlink
//!   and WireGuard's generic netlink messages.
//!
//! The subnet is the master's (cluster/src/subnets.rs); which address each container has
//! is the caller's, and so are the mesh's peers. Every call is idempotent where it can be:
//! a bridge that exists is checked and kept, a namespace or link that is gone is not an
//! error to remove.

pub mod attach;
pub mod bridge;
pub mod fence;
pub mod mesh;
pub mod nat;
pub mod netns;

use std::net::IpAddr;
use std::path::PathBuf;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::AddressAttribute;

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
    /// The kernel lacks WireGuard.
    #[error(
        "the kernel has no WireGuard ({what}): the node's mesh needs the module wireguard (CONFIG_WIREGUARD), built in or loadable"
    )]
    NoWireGuard { what: String },
    /// The kernel's WireGuard refused a change to the node's device, or a question about it.
    #[error("WireGuard refused {what}: {errno}{}", wireguard_hint(*.errno))]
    WireGuardRefused {
        /// The request, in words.
        what: String,
        errno: nix::errno::Errno,
    },
    /// Talking to the kernel on a generic netlink socket failed.
    #[error("generic netlink: {action}: {source}")]
    GenlIo {
        action: String,
        #[source]
        source: std::io::Error,
    },
    /// A mesh that cannot be the node's; nothing was changed.
    #[error("the node's mesh cannot be applied: {0}")]
    BadMesh(String),
    /// The node's mesh key file holds no key; it is left as it is.
    #[error(
        "the mesh key at {} is not a WireGuard key ({why}): restore it, or remove it to have a new one made (the other nodes then need the new public key)",
        path.display()
    )]
    BadKey { path: PathBuf, why: String },
}

/// What the node's table needs of the kernel, as modules (most kernels build them in).
const NF_TABLES_MODULES: &str =
    "nf_tables, nft_chain_nat, nft_masq, nft_nat, nft_fib_ipv4, nft_numgen, nf_nat and nf_conntrack";

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

/// What an errno from WireGuard's generic netlink family most likely means.
fn wireguard_hint(errno: nix::errno::Errno) -> &'static str {
    use nix::errno::Errno;
    match errno {
        Errno::EPERM => " (changing WireGuard needs CAP_NET_ADMIN: run as root)",
        Errno::ENODEV => " (the link is not there)",
        Errno::EOPNOTSUPP => {
            " (a link of that name is there but is no WireGuard link; mesh::remove takes it away)"
        }
        Errno::EADDRINUSE => " (another socket holds the mesh's UDP port)",
        _ => "",
    }
}

pub(crate) fn netlink(action: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let action = action.into();
    move |source| NetError::Netlink { action, source }
}

/// Whether the link called `name` is one of the container networks' own (the bridge, a
/// container's veth, the mesh link): never the node's network, whatever the kernel's
/// notifications about it carry.
pub fn is_own_link(name: &str) -> bool {
    name == bridge::BRIDGE || name == mesh::MESH_LINK || name.starts_with(attach::NODE_LINK_PREFIX)
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

/// Makes `address` (with its prefix) the only IPv4 address of the link `name` at `index`:
/// added if missing, any other removed (the node's subnet changed).
pub(crate) async fn ensure_only_address(
    handle: &rtnetlink::Handle,
    index: u32,
    name: &str,
    address: &Ipv4Net,
) -> Result<(), NetError> {
    let mut has_address = false;
    let mut addresses = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    let mut stale = Vec::new();
    while let Some(msg) = addresses
        .try_next()
        .await
        .map_err(netlink(format!("reading {name}'s addresses")))?
    {
        let ip = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        match ip {
            Some(ip) if ip == address.addr() && msg.header.prefix_len == address.prefix_len() => {
                has_address = true
            }
            Some(_) => stale.push(msg),
            None => {}
        }
    }
    for msg in stale {
        handle
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(netlink(format!("removing an old address of {name}")))?;
    }
    if !has_address {
        handle
            .address()
            .add(index, IpAddr::V4(address.addr()), address.prefix_len())
            .execute()
            .await
            .map_err(netlink(format!("adding {address} to {name}")))?;
    }
    Ok(())
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

#[cfg(test)]
mod own_link_tests {
    #[test]
    fn the_bridge_the_veths_and_the_mesh_are_ours_the_nics_are_not() {
        let veth = super::attach::node_link_name("r-1");
        for ours in ["cloudos0", "cloudos-wg", veth.as_str()] {
            assert!(super::is_own_link(ours), "{ours}");
        }
        for nic in ["eth0", "enp3s0", "ens18", "wlan0", "lo"] {
            assert!(!super::is_own_link(nic), "{nic}");
        }
    }
}
