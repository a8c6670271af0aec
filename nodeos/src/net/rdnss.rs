//! Name servers from router advertisements (RDNSS and DNSSL, RFC 8106): the kernel applies
//! an RA's addresses and routes but leaves its DNS options to userspace. One raw ICMPv6
//! socket per link, bound to it and opened before the link comes up (so the answer to the
//! kernel's router solicitation is seen), reads every RA; its servers go to resolv.conf
//! next to DHCP's and to the published state.
//!
//! It owns that socket and the RA parser. It must not touch addresses or routes (the
//! kernel's), nor DHCPv6's servers.

use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockProtocol, SockType};
use tokio::io::unix::AsyncFd;

use super::state::NetState;

/// ICMPv6 type of a router advertisement, and the size of its fixed part.
const ROUTER_ADVERTISEMENT: u8 = 134;
const RA_HEADER: usize = 16;
/// Option types (RFC 8106).
const OPTION_RDNSS: u8 = 25;
const OPTION_DNSSL: u8 = 31;

/// The DNS part of one router advertisement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaDns {
    /// Servers with a lifetime above zero, in the RA's order.
    pub servers: Vec<Ipv6Addr>,
    pub search: Vec<String>,
    /// The RA carried an RDNSS option at all (lifetime 0 withdraws the servers).
    pub has_rdnss: bool,
}

/// The DNS options of an ICMPv6 message; `None` when it is not a router advertisement or
/// is malformed. Options are walked by their length fields, as RFC 4861 says, and a
/// zero-length option ends the walk (it would loop forever).
pub fn parse_ra(packet: &[u8]) -> Option<RaDns> {
    if packet.len() < RA_HEADER || packet.first() != Some(&ROUTER_ADVERTISEMENT) {
        return None;
    }
    let mut dns = RaDns::default();
    let mut rest = packet.get(RA_HEADER..)?;
    while rest.len() >= 8 {
        let kind = rest[0];
        let len = usize::from(rest[1]) * 8;
        if len == 0 || len > rest.len() {
            return None;
        }
        let (option, next) = rest.split_at(len);
        let lifetime = u32::from_be_bytes([option[4], option[5], option[6], option[7]]);
        let body = &option[8..];
        match kind {
            OPTION_RDNSS => {
                dns.has_rdnss = true;
                if lifetime > 0 {
                    for chunk in body.chunks_exact(16) {
                        let mut octets = [0u8; 16];
                        octets.copy_from_slice(chunk);
                        dns.servers.push(Ipv6Addr::from(octets));
                    }
                }
            }
            OPTION_DNSSL if lifetime > 0 => dns.search.extend(domain_names(body)),
            _ => {}
        }
        rest = next;
    }
    Some(dns)
}

/// DNS wire-format names (labels, each ended by a zero length), up to the zero padding.
fn domain_names(mut body: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut labels: Vec<String> = Vec::new();
    while let Some((&len, rest)) = body.split_first() {
        let len = usize::from(len);
        if len == 0 {
            if labels.is_empty() {
                break; // padding
            }
            names.push(labels.join("."));
            labels.clear();
            body = rest;
            continue;
        }
        let Some(label) = rest.get(..len) else {
            break;
        };
        let printable = label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
        if !printable {
            return names;
        }
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        body = &rest[len..];
    }
    names
}

/// A raw ICMPv6 socket that sees only what arrives on `link`. Open it before the link is
/// brought up.
pub fn open(link: &str) -> std::io::Result<OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Inet6,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::IcmpV6,
    )?;
    socket::setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(link))?;
    Ok(fd)
}

/// Reads RAs on the link's socket until the task is aborted, keeping the link's RDNSS
/// servers in resolv.conf and the state.
pub async fn run(name: String, fd: OwnedFd, state: Arc<Mutex<NetState>>) {
    // SAFETY: the OwnedFd moves into the AsyncFd, which owns it (and so keeps it open and
    // the same descriptor) until both are dropped together.
    let fd = match unsafe { AsyncFd::register(fd) } {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!("{name}: cannot watch router advertisements for DNS: {e}");
            return;
        }
    };
    let mut current: Option<RaDns> = None;
    let mut buf = [0u8; 1500];
    loop {
        let mut ready = match fd.readable().await {
            Ok(ready) => ready,
            Err(e) => {
                log::warn!("{name}: router advertisements: {e}");
                return;
            }
        };
        let received = ready.try_io(|inner| {
            socket::recvfrom::<socket::SockaddrIn6>(inner.get_ref().as_raw_fd(), &mut buf)
                .map_err(std::io::Error::from)
        });
        let (n, from) = match received {
            Ok(Ok(got)) => got,
            Ok(Err(e)) => {
                log::debug!("{name}: icmpv6: {e}");
                continue;
            }
            Err(_would_block) => continue,
        };
        // RFC 4861: a router advertises from its link-local address.
        if !from.is_some_and(|f| f.ip().is_unicast_link_local()) {
            continue;
        }
        let Some(dns) = buf.get(..n).and_then(parse_ra) else {
            continue;
        };
        if !dns.has_rdnss || current.as_ref() == Some(&dns) {
            continue;
        }
        let shown: Vec<String> = dns.servers.iter().map(|s| s.to_string()).collect();
        log::info!(
            "{name}: router advertises dns {}",
            if shown.is_empty() {
                "none".into()
            } else {
                shown.join(",")
            }
        );
        if let Err(e) = super::resolv::write_ra(&name, &dns.servers, &dns.search) {
            log::warn!("cannot write {}: {e}", super::resolv::RESOLV_CONF);
        }
        if let Ok(mut s) = state.lock() {
            s.dns6 = super::resolv::ipv6_servers();
            s.publish();
        }
        current = Some(dns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A router advertisement as dnsmasq sends it: header, a prefix option, RDNSS, DNSSL.
    fn ra(options: &[&[u8]]) -> Vec<u8> {
        let mut packet = vec![ROUTER_ADVERTISEMENT, 0, 0, 0, 64, 0x40, 0x07, 0x08];
        packet.extend([0u8; 8]);
        for option in options {
            packet.extend_from_slice(option);
        }
        packet
    }

    fn rdnss(lifetime: u32, servers: &[&str]) -> Vec<u8> {
        let mut option = vec![OPTION_RDNSS, (1 + 2 * servers.len()) as u8, 0, 0];
        option.extend(lifetime.to_be_bytes());
        for s in servers {
            option.extend(s.parse::<Ipv6Addr>().expect("ip").octets());
        }
        option
    }

    fn prefix_info() -> Vec<u8> {
        let mut option = vec![3u8, 4, 64, 0xc0];
        option.extend([0u8; 28]);
        option
    }

    #[test]
    fn rdnss_and_dnssl_are_read_and_other_options_skipped() {
        let mut dnssl = vec![OPTION_DNSSL, 3, 0, 0];
        dnssl.extend(600u32.to_be_bytes());
        dnssl.extend(b"\x03lab\x00\x02v6\x03LAN\x00");
        dnssl.resize(24, 0);
        let packet = ra(&[
            &prefix_info(),
            &rdnss(600, &["fd77::1", "fd77::53"]),
            &dnssl,
        ]);
        assert_eq!(
            parse_ra(&packet),
            Some(RaDns {
                servers: vec![
                    "fd77::1".parse().expect("ip"),
                    "fd77::53".parse().expect("ip")
                ],
                search: vec!["lab".into(), "v6.lan".into()],
                has_rdnss: true,
            })
        );
    }

    #[test]
    fn a_zero_lifetime_withdraws_and_no_rdnss_is_not_a_withdrawal() {
        let gone = parse_ra(&ra(&[&rdnss(0, &["fd77::1"])])).expect("an RA");
        assert!(gone.has_rdnss && gone.servers.is_empty());
        let silent = parse_ra(&ra(&[&prefix_info()])).expect("an RA");
        assert!(!silent.has_rdnss);
    }

    #[test]
    fn malformed_or_other_messages_are_refused() {
        // A router solicitation, a truncated RA, a zero-length option, an option past the end.
        assert_eq!(parse_ra(&[133, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(parse_ra(&ra(&[])[..10]), None);
        assert_eq!(parse_ra(&ra(&[&[OPTION_RDNSS, 0, 0, 0, 0, 0, 0, 0]])), None);
        let mut long = rdnss(600, &["fd77::1"]);
        long[1] = 9;
        assert_eq!(parse_ra(&ra(&[&long])), None);
        // A label that is not a host name ends the list there.
        let mut dnssl = vec![OPTION_DNSSL, 2, 0, 0];
        dnssl.extend(600u32.to_be_bytes());
        dnssl.extend(b"\x02ok\x00\x03a b\x00");
        assert_eq!(parse_ra(&ra(&[&dnssl])).expect("an RA").search, ["ok"]);
    }
}
