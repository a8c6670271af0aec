//! rtnetlink operations on links, addresses and routes.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("netlink request failed: {0}")]
    Netlink(#[from] rtnetlink::Error),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: [u8; 6],
    pub up: bool,
    pub carrier: bool,
    pub ethernet: bool,
    pub loopback: bool,
}

impl Link {
    pub fn from_message(msg: &LinkMessage) -> Option<Link> {
        let mut name = None;
        let mut mac = [0u8; 6];
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Address(a) if a.len() == 6 => mac.copy_from_slice(a),
                _ => {}
            }
        }
        let flags = msg.header.flags;
        // Virtual links we create later (bridges, veths for containers) are
        // Ethernet too; they carry IFLA_LINKINFO, physical NICs do not.
        let is_virtual = msg
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::LinkInfo(_)));
        // Not all of the kernel's notifications about a container's veth carry its link
        // info (one that lost its peer does not): the names say it too.
        let own = name
            .as_deref()
            .is_some_and(cloudos_containernet::is_own_link);
        Some(Link {
            index: msg.header.index,
            name: name?,
            mac,
            up: flags.contains(LinkFlags::Up),
            carrier: flags.contains(LinkFlags::LowerUp),
            ethernet: msg.header.link_layer_type == LinkLayerType::Ether && !is_virtual && !own,
            loopback: flags.contains(LinkFlags::Loopback),
        })
    }

    pub fn mac_string(&self) -> String {
        format_mac(&self.mac)
    }
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub async fn list(handle: &Handle) -> Result<Vec<Link>, LinkError> {
    let mut links = Vec::new();
    let mut stream = handle.link().get().execute();
    while let Some(msg) = stream.try_next().await? {
        links.extend(Link::from_message(&msg));
    }
    links.sort_by_key(|l| l.index);
    Ok(links)
}

pub async fn set_up(handle: &Handle, index: u32) -> Result<(), LinkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await?;
    Ok(())
}

/// Adds an address; an address that is already there is fine.
pub async fn add_address(
    handle: &Handle,
    index: u32,
    address: Ipv4Addr,
    prefix: u8,
) -> Result<(), LinkError> {
    match handle
        .address()
        .add(index, IpAddr::V4(address), prefix)
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_exists(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes every IPv4 address of a link except `keep`.
pub async fn remove_addresses(
    handle: &Handle,
    index: u32,
    keep: Option<Ipv4Addr>,
) -> Result<(), LinkError> {
    remove_addresses_where(handle, index, |addr| Some(addr) != keep).await
}

/// Removes one IPv4 address from a link; an address that is not there is fine.
pub async fn remove_address(
    handle: &Handle,
    index: u32,
    address: Ipv4Addr,
) -> Result<(), LinkError> {
    remove_addresses_where(handle, index, |addr| addr == address).await
}

/// Removes the IPv4 addresses of a link for which `doomed` says yes.
async fn remove_addresses_where(
    handle: &Handle,
    index: u32,
    doomed: impl Fn(Ipv4Addr) -> bool,
) -> Result<(), LinkError> {
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    let mut found: Vec<AddressMessage> = Vec::new();
    while let Some(msg) = stream.try_next().await? {
        if msg.header.family != AddressFamily::Inet {
            continue;
        }
        let addr = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V4(v4)) => Some(*v4),
            _ => None,
        });
        if addr.is_some_and(&doomed) {
            found.push(msg);
        }
    }
    for msg in found {
        handle.address().del(msg).execute().await?;
    }
    Ok(())
}

/// Adds a route to `destination/prefix` via `gateway` on a link; an existing
/// identical route is fine.
pub async fn add_route(
    handle: &Handle,
    index: u32,
    destination: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
) -> Result<(), LinkError> {
    let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(destination, prefix)
        .output_interface(index);
    if let Some(gw) = gateway {
        builder = builder.gateway(gw);
    }
    match handle.route().add(builder.build()).execute().await {
        Ok(()) => Ok(()),
        Err(e) if is_exists(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Sets the default route to go via `gateway` on a link, replacing one that exists (the
/// installer's second try at a static network must not keep the first try's gateway).
pub async fn replace_default_route(
    handle: &Handle,
    index: u32,
    gateway: Ipv4Addr,
) -> Result<(), LinkError> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .output_interface(index)
        .gateway(gateway)
        .build();
    handle.route().add(route).replace().execute().await?;
    Ok(())
}

fn is_exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(msg) if msg.raw_code() == -libc::EEXIST)
}
