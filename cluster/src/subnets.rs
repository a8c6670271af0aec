//! Container networks' addresses: the cluster's range (a setting of the master) and the
//! subnet the master gives each node out of it. A node's containers in `bridge` mode take
//! their addresses from its subnet; the node's bridge holds the first one (the containers'
//! gateway). Pure: which subnets are taken is the master's book, which addresses a node's
//! containers hold is the node's.
//!
//! IPv4 only for now: the containers' own IPv6 is a later step (the nodes' IPv6 LANs work,
//! decision 38).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::addr::Ipv4Cidr;

/// The cluster's range when the master's settings name none: private, not one that home or
/// office routers hand out (192.168.x, 10.0.x, 10.1.x), nor Docker's (172.17/16),
/// podman's (10.88/16), k3s's (10.42/16) or Flannel's (10.244/16).
pub const DEFAULT_RANGE: &str = "10.250.0.0/16";
/// Each node's subnet: 253 containers at once (the network, the bridge's and the
/// broadcast address are not theirs).
pub const NODE_PREFIX: u8 = 24;

/// The links a node's agent makes (containernet's bridge and mesh link; the agent's tests
/// check the names agree). Their addresses come from the container range: a master on the
/// same machine (one that runs workloads) counts none of them as its own LAN, its
/// certificate's or its advertisement's.
pub const NODE_LINKS: [&str; 2] = ["cloudos0", "cloudos-wg"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubnetError {
    #[error("{text:?} is not an IPv4 range such as {DEFAULT_RANGE}")]
    Parse { text: String },
    #[error("the range {range} is too small: it must hold at least one /{NODE_PREFIX} (a prefix of /{NODE_PREFIX} or shorter)")]
    TooSmall { range: Ipv4Net },
    #[error("the range {range} is not a private range (10/8, 172.16/12, 192.168/16): containers would hide real addresses")]
    NotPrivate { range: Ipv4Net },
    #[error("the range {range} overlaps {lan}, a network this machine is on: its addresses would hide the LAN's; choose another range")]
    Clash { range: Ipv4Net, lan: Ipv4Net },
    #[error("every /{NODE_PREFIX} of {range} is given to a node ({count} nodes); remove nodes or choose a larger range")]
    Exhausted { range: Ipv4Net, count: usize },
}

/// A private range of the cluster, checked: the one node subnets come from (the setting
/// `container_range`), or the one services' addresses come from (`service_range`).
/// Written as its text (`10.250.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct ClusterRange(Ipv4Net);

impl From<ClusterRange> for String {
    fn from(range: ClusterRange) -> String {
        range.to_string()
    }
}

impl TryFrom<String> for ClusterRange {
    type Error = SubnetError;

    fn try_from(text: String) -> Result<ClusterRange, SubnetError> {
        ClusterRange::parse(&text)
    }
}

impl ClusterRange {
    /// Parses and checks `text` (`10.250.0.0/16`): private, a /24 or larger, the network
    /// address itself (no host bits).
    pub fn parse(text: &str) -> Result<ClusterRange, SubnetError> {
        let range: Ipv4Net = text
            .trim()
            .parse()
            .map_err(|_| SubnetError::Parse { text: text.into() })?;
        if range.network() != range.addr() {
            return Err(SubnetError::Parse { text: text.into() });
        }
        if range.prefix_len() > NODE_PREFIX {
            return Err(SubnetError::TooSmall { range });
        }
        if !range.addr().is_private() {
            return Err(SubnetError::NotPrivate { range });
        }
        Ok(ClusterRange(range))
    }

    pub fn net(&self) -> Ipv4Net {
        self.0
    }

    /// Refuses the range when it overlaps a network this machine has an address on (its
    /// interfaces' addresses, each with its prefix).
    pub fn check_lan(&self, lans: &[Ipv4Cidr]) -> Result<(), SubnetError> {
        let networks = lans
            .iter()
            .filter_map(|l| Ipv4Net::new(l.address, l.prefix).ok())
            .map(|n| n.trunc());
        for lan in networks {
            if overlap(&self.0, &lan) {
                return Err(SubnetError::Clash { range: self.0, lan });
            }
        }
        Ok(())
    }

    /// The first subnet of the range not in `taken`, in address order, so that a cluster's
    /// subnets are the same whichever order its nodes came in.
    pub fn allocate(&self, taken: &[Ipv4Net]) -> Result<Ipv4Net, SubnetError> {
        let subnets = self
            .0
            .subnets(NODE_PREFIX)
            .map_err(|_| SubnetError::TooSmall { range: self.0 })?;
        for subnet in subnets {
            if !taken.iter().any(|t| overlap(t, &subnet)) {
                return Ok(subnet);
            }
        }
        Err(SubnetError::Exhausted {
            range: self.0,
            count: taken.len(),
        })
    }
}

impl ClusterRange {
    /// [`crate::routing::DEFAULT_SERVICE_RANGE`]: where services' addresses come from.
    pub fn services_default() -> ClusterRange {
        ClusterRange(Ipv4Net::new_assert(Ipv4Addr::new(10, 251, 0, 0), 16))
    }

    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &ClusterRange) -> bool {
        overlap(&self.0, &other.0)
    }
}

impl Default for ClusterRange {
    /// [`DEFAULT_RANGE`].
    fn default() -> ClusterRange {
        ClusterRange(Ipv4Net::new_assert(Ipv4Addr::new(10, 250, 0, 0), 16))
    }
}

impl std::fmt::Display for ClusterRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

fn overlap(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The node's bridge address in its subnet: the containers' gateway.
pub fn gateway(subnet: &Ipv4Net) -> Ipv4Addr {
    subnet.hosts().next().unwrap_or(subnet.network())
}

/// The addresses containers may take in `subnet`: every host address but the gateway's.
pub fn container_addresses(subnet: &Ipv4Net) -> impl Iterator<Item = Ipv4Addr> {
    subnet.hosts().skip(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Net {
        text.parse().unwrap()
    }

    fn lan(text: &str) -> Ipv4Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_are_checked_in_a_table() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            (DEFAULT_RANGE, Ok("10.250.0.0/16")),
            ("172.20.0.0/14", Ok("172.20.0.0/14")),
            ("192.168.100.0/24", Ok("192.168.100.0/24")),
            (" 10.9.0.0/16 ", Ok("10.9.0.0/16")),
            ("10.250.0.1/16", Err("not an IPv4 range")),
            ("10.250.0.0", Err("not an IPv4 range")),
            ("fd00::/64", Err("not an IPv4 range")),
            ("hello", Err("not an IPv4 range")),
            ("10.250.0.0/25", Err("too small")),
            ("8.8.0.0/16", Err("not a private range")),
        ];
        assert_eq!(
            ClusterRange::default(),
            ClusterRange::parse(DEFAULT_RANGE).unwrap()
        );
        let services = ClusterRange::services_default();
        assert_eq!(
            services,
            ClusterRange::parse(crate::routing::DEFAULT_SERVICE_RANGE).unwrap()
        );
        assert!(!services.overlaps(&ClusterRange::default()));
        assert!(ClusterRange::parse("10.0.0.0/8")
            .unwrap()
            .overlaps(&services));
        for (text, want) in cases {
            match (ClusterRange::parse(text), want) {
                (Ok(r), Ok(shown)) => assert_eq!(r.to_string(), *shown, "{text}"),
                (Err(e), Err(words)) => assert!(e.to_string().contains(words), "{text}: {e}"),
                (got, _) => panic!("{text}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_range_that_overlaps_the_lan_is_refused_with_both_named() {
        let range = ClusterRange::parse("10.0.0.0/8").unwrap();
        let err = range.check_lan(&[lan("10.77.0.5/24")]).unwrap_err();
        assert_eq!(
            err,
            SubnetError::Clash {
                range: net("10.0.0.0/8"),
                lan: net("10.77.0.0/24")
            }
        );
        assert!(err.to_string().contains("10.77.0.0/24"), "{err}");
        let default = ClusterRange::parse(DEFAULT_RANGE).unwrap();
        assert!(default
            .check_lan(&[lan("10.77.0.5/24"), lan("192.168.1.20/24")])
            .is_ok());
        // A LAN larger than the range holds it too.
        assert!(default.check_lan(&[lan("10.0.0.1/8")]).is_err());
    }

    #[test]
    fn subnets_are_given_in_address_order_and_gaps_are_reused() {
        let range = ClusterRange::parse("10.250.0.0/22").unwrap();
        let first = range.allocate(&[]).unwrap();
        assert_eq!(first, net("10.250.0.0/24"));
        let taken = vec![net("10.250.0.0/24"), net("10.250.2.0/24")];
        assert_eq!(range.allocate(&taken).unwrap(), net("10.250.1.0/24"));
        let full: Vec<Ipv4Net> = range.net().subnets(NODE_PREFIX).unwrap().collect();
        let err = range.allocate(&full).unwrap_err();
        assert!(err.to_string().contains("every /24"), "{err}");
    }

    #[test]
    fn the_gateway_is_the_first_address_and_containers_take_the_rest() {
        let subnet = net("10.250.3.0/24");
        assert_eq!(gateway(&subnet), Ipv4Addr::new(10, 250, 3, 1));
        let all: Vec<Ipv4Addr> = container_addresses(&subnet).collect();
        assert_eq!(all.first(), Some(&Ipv4Addr::new(10, 250, 3, 2)));
        assert_eq!(all.last(), Some(&Ipv4Addr::new(10, 250, 3, 254)));
        assert_eq!(all.len(), 253);
    }
}
