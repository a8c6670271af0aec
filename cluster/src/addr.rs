//! Addresses as people type them into settings, answer files and the installer:
//! a node's IPv4 address with its prefix, and a master's `host[:port]` (`[v6]:port`). One
//! set of rules for every place that reads them.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::client::DEFAULT_API_PORT;
use crate::identity::validate_hostname;

/// An IPv4 address with its prefix length, as written in `10.0.0.5/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Ipv4Cidr {
    pub address: Ipv4Addr,
    pub prefix: u8,
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} needs a prefix length, as in 10.0.0.5/24"))?;
        let address = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| (1..=32).contains(p))
            .ok_or_else(|| format!("prefix length {prefix:?} is not in 1..=32"))?;
        Ok(Ipv4Cidr { address, prefix })
    }
}

/// A master's address as `host:port` (the API port when none is given); the host is an
/// IPv4 address, an IPv6 address (in brackets when a port follows: `[fd00::2]:9443`) or a
/// host name. IPv6 comes back in brackets, so the result always splits at its last `:`.
pub fn parse_master_address(value: &str) -> Result<String, String> {
    let value = value.trim();
    let port_of = |port: &str| {
        port.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{value:?}: port {port:?} is not a number in 1..=65535"))
    };
    if let Some(rest) = value.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{value:?}: `[` without `]`"))?;
        let ip: Ipv6Addr = host
            .parse()
            .map_err(|_| format!("{value:?}: {host:?} in brackets is not an IPv6 address"))?;
        let port = match after {
            "" => DEFAULT_API_PORT,
            _ => match after.strip_prefix(':') {
                Some(port) => port_of(port)?,
                None => return Err(format!("{value:?}: unexpected {after:?} after `]`")),
            },
        };
        return Ok(format!("[{ip}]:{port}"));
    }
    if let Ok(ip) = value.parse::<Ipv6Addr>() {
        return Ok(format!("[{ip}]:{DEFAULT_API_PORT}"));
    }
    let (host, port) = match value.split_once(':') {
        Some((host, port)) if !port.contains(':') => (host, port_of(port)?),
        Some(_) => {
            return Err(format!(
                "{value:?} is not host:port: an IPv6 address with a port goes in brackets, as in [fd00::2]:9443"
            ))
        }
        None => (value, DEFAULT_API_PORT),
    };
    let valid = host.parse::<Ipv4Addr>().is_ok() || validate_hostname(host).is_ok();
    if !valid {
        return Err(format!(
            "{value:?} is not host:port (an IP address, IPv6 in brackets, or a host name)"
        ));
    }
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c: Ipv4Cidr = " 10.0.0.5/24 ".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.5/24");
        assert!("10.0.0.5"
            .parse::<Ipv4Cidr>()
            .unwrap_err()
            .contains("prefix length"));
        assert!("10.0.0.5/33"
            .parse::<Ipv4Cidr>()
            .unwrap_err()
            .contains("1..=32"));
        assert!("ten/8"
            .parse::<Ipv4Cidr>()
            .unwrap_err()
            .contains("not an IPv4"));
    }

    #[test]
    fn master_addresses() {
        let cases = [
            ("master-1", Ok("master-1:9443")),
            ("10.0.0.1:7000", Ok("10.0.0.1:7000")),
            ("[fd00::1]:7000", Ok("[fd00::1]:7000")),
            ("[fd00::2]", Ok("[fd00::2]:9443")),
            ("[FD00:0::2]:9443", Ok("[fd00::2]:9443")),
            ("fd00::2", Ok("[fd00::2]:9443")),
            ("2001:db8:0:0:0:0:0:1", Ok("[2001:db8::1]:9443")),
            (" master-1.lan:7000 ", Ok("master-1.lan:7000")),
            ("10.0.0.1:0", Err("port")),
            ("[fd00::1]:0", Err("port")),
            ("[fd00::1]:x", Err("port")),
            ("[fd00::1", Err("without `]`")),
            ("[10.0.0.1]:9443", Err("not an IPv6 address")),
            ("[fd00::1]9443", Err("after `]`")),
            ("fd00::1::9443", Err("in brackets")),
            ("fd00:1:9443", Err("in brackets")),
            ("-bad-", Err("not host:port")),
            ("a b:1", Err("not host:port")),
            (":9443", Err("not host:port")),
        ];
        for (input, expected) in cases {
            match (parse_master_address(input), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(got), Err(want)) => assert!(got.contains(want), "{input}: {got}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }
}
