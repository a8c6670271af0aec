//! The node's bridge: one per node, holding the first address of the node's subnet (the
//! containers' gateway), with IPv4 forwarding on so that containers reach past the node.
//! The bridge has no IPv6: containers are IPv4's, and so is the node's guard (nat), which
//! a link-local IPv6 address on the bridge would let them past to any of the node's
//! listeners on `[::]`.

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::{Handle, LinkBridge, LinkUnspec};

use super::{ensure_only_address, netlink, set_link, NetError};

/// The bridge's name on every node.
pub const BRIDGE: &str = "cloudos0";

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
/// Where this namespace's IPv6 settings are, when the kernel has IPv6.
const IPV6_CONF: &str = "/proc/sys/net/ipv6/conf";

/// The index of the link called `name`, if there is one.
pub async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, NetError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        // The kernel answers a lookup by a name it does not know with ENODEV.
        Err(rtnetlink::Error::NetlinkError(e))
            if e.raw_code() == -(nix::errno::Errno::ENODEV as i32) =>
        {
            Ok(None)
        }
        Err(e) => Err(netlink(format!("looking up {name}"))(e)),
    }
}

/// The index of the link called `name`, which must be there.
pub async fn required_index(handle: &Handle, name: &str) -> Result<u32, NetError> {
    link_index(handle, name)
        .await?
        .ok_or_else(|| NetError::NoLink(name.to_owned()))
}

/// Makes sure the bridge `name` exists, is up and holds `gateway` (the containers'
/// gateway with the subnet's prefix, `10.250.3.1/24`) and no IPv6 address, and that this
/// namespace forwards IPv4. An existing bridge is kept; another IPv4 address on it (the
/// node's subnet changed) is replaced. Returns its index.
pub async fn ensure(handle: &Handle, name: &str, gateway: &Ipv4Net) -> Result<u32, NetError> {
    let index = match link_index(handle, name).await? {
        Some(index) => index,
        None => {
            handle
                .link()
                .add(LinkBridge::new(name).build())
                .execute()
                .await
                .map_err(netlink(format!("adding the bridge {name}")))?;
            required_index(handle, name).await?
        }
    };
    ensure_only_address(handle, index, name, gateway).await?;
    // Before it is up, so that it never has a link-local address; an existing bridge loses
    // its IPv6 addresses. A kernel without IPv6 has none to lose.
    let ipv6 = std::path::Path::new(IPV6_CONF)
        .join(name)
        .join("disable_ipv6");
    if std::path::Path::new(IPV6_CONF).exists() {
        std::fs::write(&ipv6, "1").map_err(|source| NetError::Io {
            action: "turning IPv6 off on the bridge through",
            path: ipv6,
            source,
        })?;
    }
    set_link(
        handle,
        LinkUnspec::new_with_index(index).up().build(),
        format!("bringing {name} up"),
    )
    .await?;
    std::fs::write(IP_FORWARD, "1").map_err(|source| NetError::Io {
        action: "turning on forwarding in",
        path: IP_FORWARD.into(),
        source,
    })?;
    Ok(index)
}
