//! A node's container networks (`bridge` mode, issue 20): the node's bridge holding the
//! first address of the node's subnet, and for each container a network namespace of its
//! own, joined to the bridge by a veth pair, with an address from the subnet and a default
//! route through the bridge.
//!
//! Modules, one job each:
//! - [`netns`]: network namespaces kept as bind-mounted files, and work done inside one.
//! - [`bridge`]: the node's bridge, its address, and forwarding.
//! - [`attach`]: a container's veth pair, address and route; and taking them down.
//!
//! The subnet is the master's (cluster/src/subnets.rs); which address each container has
//! is the caller's. Every call is idempotent where it can be: a bridge that exists is
//! checked and kept, a namespace or link that is gone is not an error to remove.

pub mod attach;
pub mod bridge;
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
