//! A container on the bridge: a veth pair whose node end is a port of the bridge and whose
//! other end is the container's `eth0`, in the container's namespace, with its address and
//! a default route through the bridge's.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use rtnetlink::{Handle, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::bridge::{link_index, required_index};
use super::{netlink, netns, set_link, NetError};

/// How the node's ends of containers' veth pairs are named.
pub const NODE_LINK_PREFIX: &str = "cv";

/// The container's end of its veth pair, in its namespace.
pub const CONTAINER_LINK: &str = "eth0";

/// What [`attach`] set up, for [`detach`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The container's namespace file (the OCI spec's network namespace path).
    pub netns: PathBuf,
    /// The node's end of the veth pair.
    pub node_link: String,
    /// The container's address, with the subnet's prefix.
    pub address: Ipv4Net,
}

/// The node's end of a container's veth pair: at most 15 bytes (IFNAMSIZ), from `key` (a
/// run id), so that the same run always has the same link and a leftover is found again.
pub fn node_link_name(key: &str) -> String {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{NODE_LINK_PREFIX}{:012x}", hash & 0xffff_ffff_ffff)
}

/// Puts a new namespace at `netns` on the bridge at `bridge` (index): a veth pair, the
/// node's end `node_link` on the bridge and up, the other end `eth0` inside with `address`
/// (the container's, with the subnet's prefix) and a default route via `gateway`.
/// Whatever was made is taken down again when a step fails.
pub async fn attach(
    handle: &Handle,
    bridge: u32,
    key: &str,
    netns_path: &Path,
    address: Ipv4Net,
    gateway: Ipv4Addr,
) -> Result<Attached, NetError> {
    let attached = Attached {
        netns: netns_path.to_owned(),
        node_link: node_link_name(key),
        address,
    };
    let made = attach_inner(handle, bridge, &attached, gateway).await;
    if made.is_err() {
        let _ = detach(handle, &attached).await;
    }
    made.map(|()| attached)
}

async fn attach_inner(
    handle: &Handle,
    bridge: u32,
    a: &Attached,
    gateway: Ipv4Addr,
) -> Result<(), NetError> {
    netns::create(&a.netns)?;
    // The peer is made under a temporary name unique to this container, then moved and
    // renamed eth0 inside, where that name is free.
    let peer = format!("{}p", &a.node_link[..a.node_link.len().min(14)]);
    handle
        .link()
        .add(LinkVeth::new(&a.node_link, &peer).build())
        .execute()
        .await
        .map_err(netlink(format!("adding the veth pair {}", a.node_link)))?;
    let node_end = required_index(handle, &a.node_link).await?;
    let peer_end = required_index(handle, &peer).await?;
    set_link(
        handle,
        LinkUnspec::new_with_index(node_end)
            .controller(bridge)
            .up()
            .build(),
        format!("putting {} on the bridge", a.node_link),
    )
    .await?;
    // Hairpin: a container calling a published port of its own node is forwarded back to
    // itself. Where br_netfilter hands bridged frames to the IP hooks, the answer then
    // leaves by the port it came in on, which a bridge port only does in hairpin mode.
    // (A port's settings go by RTM_NEWLINK: the kernel's setlink ignores them.)
    handle
        .link()
        .set_port(LinkBridgePort::new(node_end).hairpin(true).build())
        .execute()
        .await
        .map_err(netlink(format!(
            "turning on hairpin mode on {}",
            a.node_link
        )))?;
    let ns = std::fs::File::open(&a.netns).map_err(|source| NetError::Io {
        action: "opening",
        path: a.netns.clone(),
        source,
    })?;
    set_link(
        handle,
        LinkUnspec::new_with_index(peer_end)
            .setns_by_fd(ns.as_raw_fd())
            .build(),
        "moving the container's end into its namespace",
    )
    .await?;
    let address = a.address;
    netns::within(&a.netns, move || {
        Box::pin(async move { inside(&peer, address, gateway).await })
    })
}

/// In the container's namespace: loopback up, the peer renamed eth0, up, addressed, and
/// the default route.
async fn inside(peer: &str, address: Ipv4Net, gateway: Ipv4Addr) -> Result<(), NetError> {
    let handle = super::connect()?;
    if let Some(lo) = link_index(&handle, "lo").await? {
        set_link(
            &handle,
            LinkUnspec::new_with_index(lo).up().build(),
            "bringing lo up",
        )
        .await?;
    }
    let index = required_index(&handle, peer).await?;
    set_link(
        &handle,
        LinkUnspec::new_with_index(index)
            .name(CONTAINER_LINK.to_owned())
            .build(),
        "naming the container's link eth0",
    )
    .await?;
    handle
        .address()
        .add(index, IpAddr::V4(address.addr()), address.prefix_len())
        .execute()
        .await
        .map_err(netlink(format!("adding {address} to eth0")))?;
    set_link(
        &handle,
        LinkUnspec::new_with_index(index).up().build(),
        "bringing eth0 up",
    )
    .await?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .output_interface(index)
        .build();
    handle
        .route()
        .add(route)
        .execute()
        .await
        .map_err(netlink(format!("adding the default route via {gateway}")))
}

/// Takes a container off the bridge: its veth pair (both ends go together) and its
/// namespace. What is gone already is fine, so a cleanup after a crash can run it blindly.
pub async fn detach(handle: &Handle, a: &Attached) -> Result<(), NetError> {
    if let Some(index) = link_index(handle, &a.node_link).await? {
        match handle.link().del(index).execute().await {
            Ok(()) => {}
            // Gone meanwhile: its namespace went first.
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code() == -(nix::errno::Errno::ENODEV as i32) => {}
            Err(e) => return Err(netlink(format!("removing {}", a.node_link))(e)),
        }
    }
    netns::remove(&a.netns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_link_names_fit_and_stay_the_same() {
        let name = node_link_name("r-0123456789abcdef-service-web-1");
        assert!(name.len() <= 15, "{name}");
        assert_eq!(name, node_link_name("r-0123456789abcdef-service-web-1"));
        assert_ne!(name, node_link_name("r-0123456789abcdef-service-web-2"));
        assert!(name.starts_with("cv"));
    }
}
