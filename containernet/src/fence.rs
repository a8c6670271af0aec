//! Ranges the node never sends on: an `unreachable` route in the main table for each (the
//! cluster's service range). An address in it that no rule or more specific route takes
//! (a service with no replica running) then fails at once with "no route to host",
//! instead of leaving by the default route, masqueraded, to die past the LAN's router.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use rtnetlink::packet_route::route::{RouteMessage, RouteType};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::{netlink, NetError};

/// Makes `range` unreachable; one that is so already is replaced in place.
pub async fn close(handle: &Handle, range: Ipv4Net) -> Result<(), NetError> {
    handle
        .route()
        .add(route(range))
        .replace()
        .execute()
        .await
        .map_err(netlink(format!("making {range} unreachable")))
}

/// Takes the unreachable route of `range` away; one that is gone already is fine.
pub async fn open(handle: &Handle, range: Ipv4Net) -> Result<(), NetError> {
    match handle.route().del(route(range)).execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e))
            if e.raw_code() == -(nix::errno::Errno::ESRCH as i32) =>
        {
            Ok(())
        }
        Err(e) => Err(netlink(format!(
            "removing the unreachable route of {range}"
        ))(e)),
    }
}

fn route(range: Ipv4Net) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(range.network(), range.prefix_len())
        .kind(RouteType::Unreachable)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_is_the_whole_range_of_the_unreachable_kind() {
        let message = route("10.251.0.0/16".parse().unwrap());
        assert_eq!(message.header.kind, RouteType::Unreachable);
        assert_eq!(message.header.destination_prefix_length, 16);
    }
}
