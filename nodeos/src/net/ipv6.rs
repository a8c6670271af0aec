//! IPv6 on the node's links: the kernel does SLAAC and takes the default route from the
//! router advertisements (RA); this module makes sure it will, reads what the last RA
//! said, and lists a link's IPv6 addresses for `status`.
//!
//! It owns the per-link IPv6 sysctls (`accept_ra`, `autoconf`), the RA flags as the kernel
//! reports them over rtnetlink (`IFLA_INET6_FLAGS`) and the IPv6 part of the published
//! state. It must not configure addresses itself: SLAAC is the kernel's, DHCPv6 is
//! `dhcp6`'s.

use std::net::{IpAddr, Ipv6Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::link::{AfSpecInet6, AfSpecUnspec, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder};
use serde::{Deserialize, Serialize};

use super::links::LinkError;

/// `IFLA_INET6_FLAGS` inside `IFLA_PROTINFO` (the kernel's `RTNLGRP_IPV6_IFINFO` messages).
const IFLA_INET6_FLAGS: u16 = 1;
/// The kernel's `if_flags` bits for what the last RA said (include/net/if_inet6.h).
const IF_RA_OTHERCONF: u32 = 0x80;
const IF_RA_MANAGED: u32 = 0x40;
const IF_RA_RCVD: u32 = 0x20;

/// What the last router advertisement on a link said about DHCPv6.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RaFlags {
    /// An RA has been received at all.
    pub received: bool,
    /// M: addresses come from DHCPv6.
    pub managed: bool,
    /// O: other configuration (DNS) comes from DHCPv6.
    pub other: bool,
}

/// What the node does about DHCPv6 on a link, given its RA flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dhcp6Need {
    /// No RA yet, or one that asks for nothing: SLAAC only.
    None,
    /// M set: ask DHCPv6 for an address (and DNS with it).
    Address,
    /// Only O set: the router means stateless DHCPv6 for DNS, which mozim does not speak;
    /// the name servers come from the RA's RDNSS option or DHCPv4 instead.
    OtherOnly,
}

impl RaFlags {
    pub fn from_bits(bits: u32) -> RaFlags {
        RaFlags {
            received: bits & IF_RA_RCVD != 0,
            managed: bits & IF_RA_MANAGED != 0,
            other: bits & IF_RA_OTHERCONF != 0,
        }
    }

    /// The flags in a link message: `IFLA_AF_SPEC`/`AF_INET6` in a link dump or an
    /// `RTNLGRP_LINK` event, `IFLA_PROTINFO` in an `RTNLGRP_IPV6_IFINFO` event (sent when an
    /// RA changes them). `None` when the message carries neither (IPv6 off on the link).
    pub fn from_link_message(msg: &LinkMessage) -> Option<RaFlags> {
        msg.attributes.iter().find_map(|attr| match attr {
            LinkAttribute::AfSpecUnspec(specs) => specs.iter().find_map(|spec| match spec {
                AfSpecUnspec::Inet6(inet6) => inet6.iter().find_map(|a| match a {
                    AfSpecInet6::Flags(flags) => Some(RaFlags::from_bits(flags.bits())),
                    _ => None,
                }),
                _ => None,
            }),
            LinkAttribute::ProtoInfoInet6(infos) => infos.iter().find_map(|info| {
                use rtnetlink::packet_core::Nla;
                if info.kind() != IFLA_INET6_FLAGS || info.value_len() != 4 {
                    return None;
                }
                let mut bytes = [0u8; 4];
                info.emit_value(&mut bytes);
                Some(RaFlags::from_bits(u32::from_ne_bytes(bytes)))
            }),
            _ => None,
        })
    }

    pub fn dhcp6(&self) -> Dhcp6Need {
        if self.managed {
            Dhcp6Need::Address
        } else if self.other {
            Dhcp6Need::OtherOnly
        } else {
            Dhcp6Need::None
        }
    }
}

/// The RA flags of every link, from a link dump (its `IFLA_AF_SPEC`).
pub async fn ra_flags_of_all(handle: &Handle) -> Result<Vec<(u32, RaFlags)>, LinkError> {
    let mut stream = handle.link().get().execute();
    let mut found = Vec::new();
    while let Some(msg) = stream.try_next().await? {
        if let Some(flags) = RaFlags::from_link_message(&msg) {
            found.push((msg.header.index, flags));
        }
    }
    Ok(found)
}

/// Makes the kernel take SLAAC addresses and a default route from RAs on `link`:
/// `accept_ra=2` (accept even when forwarding is on, which container networking turns
/// on, and `1` would then ignore every RA) and `autoconf=1`. Also optimistic duplicate
/// address detection, where the kernel has it (RFC 4429: `optimistic_dad`, and
/// `use_optimistic` so source selection takes the address): the SLAAC address is usable
/// as soon as the RA arrives, so the first connections (the agent's join) leave from it
/// and not from the link-local address, which the master would then take for the node's.
/// Call it before the link is brought up, so the router solicitations sent then count.
pub fn accept_router_advertisements(link: &str) -> std::io::Result<()> {
    let path = |key: &str| {
        sysctl_path(link, key).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{link:?} is not a link name"),
            )
        })
    };
    for key in ["accept_ra", "autoconf"] {
        let value = if key == "accept_ra" { "2" } else { "1" };
        std::fs::write(path(key)?, value)?;
    }
    for key in ["optimistic_dad", "use_optimistic"] {
        match std::fs::write(path(key)?, "1") {
            Ok(()) => {}
            // A kernel built without CONFIG_IPV6_OPTIMISTIC_DAD: plain DAD, ~1 s slower.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `/proc/sys/net/ipv6/conf/<link>/<key>`; `None` for a name that is not a link's.
fn sysctl_path(link: &str, key: &str) -> Option<String> {
    let plain =
        !link.is_empty() && link.len() < 16 && link != "." && link != ".." && !link.contains('/');
    plain.then(|| format!("/proc/sys/net/ipv6/conf/{link}/{key}"))
}

/// One IPv6 address of a link, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv6State {
    /// `fd77::5054:ff:fe12:3456/64`.
    pub address: String,
    /// `slaac` (the kernel, from an RA), `dhcp6` (ours), `link` (link-local) or `static`.
    pub method: String,
}

/// A usable IPv6 address of a link and how it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Entry {
    pub address: Ipv6Addr,
    pub prefix: u8,
    pub method: &'static str,
}

impl Ipv6Entry {
    /// The address in an address message; `None` for IPv4, and for an address not usable
    /// yet (duplicate address detection running, unless optimistic) or any more (DAD
    /// failed).
    pub fn from_message(msg: &AddressMessage) -> Option<Ipv6Entry> {
        if msg.header.family != AddressFamily::Inet6 {
            return None;
        }
        let address = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V6(v6)) => Some(*v6),
            _ => None,
        })?;
        // IFA_FLAGS has all 32 bits; the header byte is its low part, for old kernels.
        let flags = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                AddressAttribute::Flags(f) => Some(*f),
                _ => None,
            })
            .unwrap_or_else(|| AddressFlags::from_bits_retain(msg.header.flags.bits().into()));
        // Tentative: DAD is running; usable all the same when optimistic (RFC 4429).
        let tentative =
            flags.contains(AddressFlags::Tentative) && !flags.contains(AddressFlags::Optimistic);
        if tentative || flags.contains(AddressFlags::Dadfailed) {
            return None;
        }
        let method = if address.is_unicast_link_local() {
            "link"
        } else if !flags.contains(AddressFlags::Permanent) {
            // Addresses with lifetimes are the kernel's SLAAC ones (dhcp6 adds its
            // address with the lease's lifetimes too, but always as a /128).
            if msg.header.prefix_len == 128 {
                "dhcp6"
            } else {
                "slaac"
            }
        } else if msg.header.prefix_len == 128 {
            "dhcp6"
        } else {
            "static"
        };
        Some(Ipv6Entry {
            address,
            prefix: msg.header.prefix_len,
            method,
        })
    }

    pub fn to_state(&self) -> Ipv6State {
        Ipv6State {
            address: format!("{}/{}", self.address, self.prefix),
            method: self.method.to_owned(),
        }
    }
}

/// Global and unique-local addresses first (what other machines dial), link-local last;
/// each group in address order.
pub fn sort_for_people(entries: &mut [Ipv6Entry]) {
    entries.sort_by_key(|e| (e.address.is_unicast_link_local(), e.address, e.prefix));
}

/// The usable IPv6 addresses of a link, best first.
pub async fn addresses(handle: &Handle, index: u32) -> Result<Vec<Ipv6Entry>, LinkError> {
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    let mut found = Vec::new();
    while let Some(msg) = stream.try_next().await? {
        // The filter is applied by the kernel only on newer versions: check again.
        if msg.header.index == index {
            found.extend(Ipv6Entry::from_message(&msg));
        }
    }
    sort_for_people(&mut found);
    Ok(found)
}

/// The router of the IPv6 default route (from an RA) on a link, if there is one.
pub async fn default_router(handle: &Handle, index: u32) -> Result<Option<Ipv6Addr>, LinkError> {
    let filter = RouteMessageBuilder::<Ipv6Addr>::new().build();
    let mut stream = handle.route().get(filter).execute();
    let mut router = None;
    while let Some(msg) = stream.try_next().await? {
        if msg.header.destination_prefix_length != 0 {
            continue;
        }
        let mut oif = None;
        let mut gateway = None;
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(RouteAddress::Inet6(gw)) => gateway = Some(*gw),
                _ => {}
            }
        }
        if oif == Some(index) && gateway.is_some() {
            router = gateway;
            break;
        }
    }
    Ok(router)
}

/// Adds `address/128` from a DHCPv6 lease, with the lease's lifetimes so the kernel drops
/// it if renewals stop; the on-link prefix route comes from the RA's prefix option.
pub async fn add_leased_address(
    handle: &Handle,
    index: u32,
    address: Ipv6Addr,
    preferred_secs: u32,
    valid_secs: u32,
) -> Result<(), LinkError> {
    use rtnetlink::packet_route::address::CacheInfo;
    let mut request = handle.address().add(index, IpAddr::V6(address), 128);
    let mut info = CacheInfo::default();
    info.ifa_preferred = preferred_secs;
    info.ifa_valid = valid_secs.max(preferred_secs);
    request
        .message_mut()
        .attributes
        .push(AddressAttribute::CacheInfo(info));
    // NLM_F_REPLACE: a renewal updates the lifetimes of the address that is there.
    match request.replace().execute().await {
        Ok(()) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes the addresses `dhcp6` added (every IPv6 /128 that is not link-local), when the
/// link loses its carrier or the lease is gone. SLAAC addresses stay: the kernel owns them.
pub async fn remove_leased_addresses(handle: &Handle, index: u32) -> Result<(), LinkError> {
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    let mut doomed = Vec::new();
    while let Some(msg) = stream.try_next().await? {
        let leased = msg.header.index == index
            && msg.header.family == AddressFamily::Inet6
            && msg.header.prefix_len == 128
            && msg.attributes.iter().any(
                |a| matches!(a, AddressAttribute::Address(IpAddr::V6(v6)) if !v6.is_unicast_link_local()),
            );
        if leased {
            doomed.push(msg);
        }
    }
    for msg in doomed {
        handle.address().del(msg).execute().await?;
    }
    Ok(())
}

/// The link-local address of a link once duplicate address detection has passed (DHCPv6
/// is sent from it); `None` until then.
pub async fn link_local(handle: &Handle, index: u32) -> Result<Option<Ipv6Addr>, LinkError> {
    Ok(addresses(handle, index)
        .await?
        .into_iter()
        .find(|e| e.address.is_unicast_link_local())
        .map(|e| e.address))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::address::{AddressHeaderFlags, AddressScope};
    use rtnetlink::packet_route::link::Inet6IfaceFlags;

    #[test]
    fn ra_flags_say_what_dhcpv6_must_do() {
        let cases = [
            (0, RaFlags::default(), Dhcp6Need::None),
            (
                IF_RA_RCVD,
                RaFlags {
                    received: true,
                    ..RaFlags::default()
                },
                Dhcp6Need::None,
            ),
            (
                IF_RA_RCVD | IF_RA_MANAGED,
                RaFlags {
                    received: true,
                    managed: true,
                    other: false,
                },
                Dhcp6Need::Address,
            ),
            (
                IF_RA_RCVD | IF_RA_MANAGED | IF_RA_OTHERCONF,
                RaFlags {
                    received: true,
                    managed: true,
                    other: true,
                },
                Dhcp6Need::Address,
            ),
            (
                IF_RA_RCVD | IF_RA_OTHERCONF,
                RaFlags {
                    received: true,
                    managed: false,
                    other: true,
                },
                Dhcp6Need::OtherOnly,
            ),
            // IF_READY and the RS-sent bit change nothing.
            (
                0x8000_0000 | 0x10 | IF_RA_RCVD,
                RaFlags {
                    received: true,
                    ..RaFlags::default()
                },
                Dhcp6Need::None,
            ),
        ];
        for (bits, flags, need) in cases {
            assert_eq!(RaFlags::from_bits(bits), flags, "{bits:#x}");
            assert_eq!(flags.dhcp6(), need, "{bits:#x}");
        }
    }

    #[test]
    fn ra_flags_are_read_from_a_link_dump_and_from_an_ipv6_ifinfo_event() {
        let mut dump = LinkMessage::default();
        dump.attributes.push(LinkAttribute::IfName("eth0".into()));
        assert_eq!(RaFlags::from_link_message(&dump), None);
        dump.attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::Flags(Inet6IfaceFlags::from_bits_retain(
                    IF_RA_RCVD | IF_RA_MANAGED,
                ))],
            )]));
        assert_eq!(
            RaFlags::from_link_message(&dump).map(|f| f.dhcp6()),
            Some(Dhcp6Need::Address)
        );

        // What RTNLGRP_IPV6_IFINFO carries: IFLA_PROTINFO { IFLA_INET6_FLAGS: u32, ... },
        // decoded from the bytes the kernel sends.
        let mut bytes = Vec::new();
        let flags = (IF_RA_RCVD | IF_RA_OTHERCONF).to_ne_bytes();
        // struct ifinfomsg: family AF_INET6, pad, type ARPHRD_ETHER, index 2, flags, change.
        bytes.extend([10u8, 0]);
        bytes.extend(1u16.to_ne_bytes());
        bytes.extend(2i32.to_ne_bytes());
        bytes.extend(0u32.to_ne_bytes());
        bytes.extend(0u32.to_ne_bytes());
        // IFLA_PROTINFO (12), nested, holding IFLA_INET6_FLAGS (1).
        bytes.extend((4u16 + 8).to_ne_bytes());
        bytes.extend((12u16 | 0x8000).to_ne_bytes());
        bytes.extend(8u16.to_ne_bytes());
        bytes.extend(IFLA_INET6_FLAGS.to_ne_bytes());
        bytes.extend(flags);
        use rtnetlink::packet_core::Parseable;
        let event = LinkMessage::parse(bytes.as_slice()).expect("link message");
        assert_eq!(
            RaFlags::from_link_message(&event),
            Some(RaFlags {
                received: true,
                managed: false,
                other: true
            })
        );
    }

    fn address(ip: &str, prefix: u8, flags: AddressFlags) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet6;
        msg.header.prefix_len = prefix;
        msg.header.scope = AddressScope::Universe;
        msg.header.flags = AddressHeaderFlags::from_bits_truncate(flags.bits() as u8);
        msg.attributes
            .push(AddressAttribute::Address(ip.parse().expect("ip")));
        msg.attributes.push(AddressAttribute::Flags(flags));
        msg
    }

    #[test]
    fn addresses_are_named_by_how_they_came_and_unusable_ones_left_out() {
        let none = AddressFlags::empty();
        let cases = [
            (address("fd77::5054:ff:fe00:1", 64, none), Some("slaac")),
            (
                address("2001:db8::5054:ff:fe00:1", 64, AddressFlags::Managetempaddr),
                Some("slaac"),
            ),
            (
                address("fe80::5054:ff:fe00:1", 64, AddressFlags::Permanent),
                Some("link"),
            ),
            (address("fd77::1:99", 128, none), Some("dhcp6")),
            (
                address("fd77::1:99", 128, AddressFlags::Permanent),
                Some("dhcp6"),
            ),
            (
                address("fd00::5", 64, AddressFlags::Permanent),
                Some("static"),
            ),
            (address("fd77::7", 64, AddressFlags::Tentative), None),
            (
                address(
                    "fd77::9",
                    64,
                    AddressFlags::Tentative | AddressFlags::Optimistic,
                ),
                Some("slaac"),
            ),
            (address("fd77::8", 64, AddressFlags::Dadfailed), None),
        ];
        for (msg, want) in cases {
            assert_eq!(
                Ipv6Entry::from_message(&msg).map(|e| e.method),
                want,
                "{msg:?}"
            );
        }
        let mut v4 = address("fd77::1", 64, none);
        v4.header.family = AddressFamily::Inet;
        assert_eq!(Ipv6Entry::from_message(&v4), None);
    }

    #[test]
    fn global_addresses_come_before_link_local_ones() {
        let entry = |ip: &str| Ipv6Entry {
            address: ip.parse().expect("ip"),
            prefix: 64,
            method: "slaac",
        };
        let mut entries = [
            entry("fe80::1"),
            entry("fd77::2"),
            entry("2001:db8::1"),
            entry("fd77::1"),
        ];
        sort_for_people(&mut entries);
        let shown: Vec<String> = entries.iter().map(|e| e.to_state().address).collect();
        assert_eq!(
            shown,
            ["2001:db8::1/64", "fd77::1/64", "fd77::2/64", "fe80::1/64"]
        );
    }

    #[test]
    fn only_link_names_become_sysctl_paths() {
        assert_eq!(
            sysctl_path("eth0", "accept_ra").as_deref(),
            Some("/proc/sys/net/ipv6/conf/eth0/accept_ra")
        );
        for bad in ["", ".", "..", "../all", "a/b", "sixteen-chars-xx"] {
            assert_eq!(sysctl_path(bad, "accept_ra"), None, "{bad:?}");
        }
    }
}
