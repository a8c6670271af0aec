//! The mesh link's routes: one in the main table for each subnet of a peer, through the
//! link, from the node's address on it. WireGuard then picks the peer by the packet's
//! destination among the peers' allowed subnets; the route only brings the packet to the
//! link. The link's routes are the mesh's: any other in the main table is removed.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope,
};
use rtnetlink::{Handle, RouteMessageBuilder};

use super::MESH_LINK;
use crate::{netlink, NetError};

/// Makes the link at `index` carry exactly the routes to `wanted`, each with the preferred
/// source `source` (the node's address, inside its own subnet, which the peers accept).
/// A route that is there is replaced in place, so a packet never finds none.
pub async fn replace(
    handle: &Handle,
    index: u32,
    source: Ipv4Addr,
    wanted: BTreeSet<Ipv4Net>,
) -> Result<(), NetError> {
    for net in &wanted {
        handle
            .route()
            .add(route(index, source, *net))
            .replace()
            .execute()
            .await
            .map_err(netlink(format!(
                "adding the route to {net} via {MESH_LINK}"
            )))?;
    }
    let mut stale = Vec::new();
    let mut routes = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(route) = routes
        .try_next()
        .await
        .map_err(netlink(format!("reading the routes via {MESH_LINK}")))?
    {
        if route.header.table == RouteHeader::RT_TABLE_MAIN
            && route.attributes.contains(&RouteAttribute::Oif(index))
            && !wanted.contains(&destination(&route))
        {
            stale.push(route);
        }
    }
    for route in stale {
        let net = destination(&route);
        match handle.route().del(route).execute().await {
            Ok(()) => {}
            // Gone meanwhile.
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code() == -(nix::errno::Errno::ESRCH as i32) => {}
            Err(e) => {
                return Err(netlink(format!(
                    "removing the route to {net} via {MESH_LINK}"
                ))(e))
            }
        }
    }
    Ok(())
}

/// `NET dev cloudos-wg scope link src SOURCE`, in the main table.
fn route(index: u32, source: Ipv4Addr, net: Ipv4Net) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(net.network(), net.prefix_len())
        .output_interface(index)
        .pref_source(source)
        // No gateway: the peer is "on" the link, as `ip route add NET dev LINK` makes it.
        .scope(RouteScope::Link)
        .build()
}

/// A route's destination; a route without one is the default route.
fn destination(route: &RouteMessage) -> Ipv4Net {
    let address = route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(address)) => Some(*address),
            _ => None,
        })
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    // The kernel never reports a prefix longer than 32; were it to, the address alone.
    Ipv4Net::new(address, route.header.destination_prefix_length)
        .unwrap_or_else(|_| Ipv4Net::from(address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_is_the_subnet_through_the_link_from_the_nodes_address() {
        let message = route(
            7,
            Ipv4Addr::new(10, 250, 0, 1),
            "10.250.1.0/24".parse().unwrap(),
        );
        assert_eq!(message.header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(message.header.scope, RouteScope::Link);
        assert_eq!(message.header.destination_prefix_length, 24);
        assert!(message.attributes.contains(&RouteAttribute::Oif(7)));
        assert!(message
            .attributes
            .contains(&RouteAttribute::PrefSource(RouteAddress::Inet(
                Ipv4Addr::new(10, 250, 0, 1)
            ))));
        assert_eq!(
            destination(&message),
            "10.250.1.0/24".parse::<Ipv4Net>().unwrap()
        );
        assert!(
            !message
                .attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Gateway(_))),
            "no gateway"
        );
        let mut default = RouteMessageBuilder::<Ipv4Addr>::new().build();
        default.header.destination_prefix_length = 0;
        assert_eq!(
            destination(&default),
            "0.0.0.0/0".parse::<Ipv4Net>().unwrap()
        );
    }
}
