//! The host's addresses, and a task that notices when they change (DHCP lease, SLAAC, cable
//! pulled). The serving certificate and the mDNS advertisement follow them.

use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::watch;

/// How often the addresses are read; DHCP changes are rare, a few seconds is soon enough.
const POLL: Duration = Duration::from_secs(3);

/// Every IPv4 address of the host's interfaces (loopback included) and every IPv6 address
/// another machine can dial without naming an interface (global and unique-local: not
/// loopback, not link-local, fe80::/10, which needs `%eth0`), sorted, IPv4 first.
pub fn host_addresses() -> Vec<IpAddr> {
    let ips = match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => addrs
            .filter(|ifa| !node_link(&ifa.interface_name))
            .filter_map(|ifa| ifa.address)
            .filter_map(|a| {
                a.as_sockaddr_in()
                    .map(|sin| IpAddr::V4(sin.ip()))
                    .or_else(|| a.as_sockaddr_in6().map(|sin6| IpAddr::V6(sin6.ip())))
            })
            .collect(),
        Err(e) => {
            log::warn!("cannot list the host's addresses: {e}");
            Vec::new()
        }
    };
    dialable(ips)
}

/// The host's IPv4 addresses other than loopback, each with its prefix length, sorted:
/// what a backup records as the addresses the nodes dialled.
pub fn host_ipv4_networks() -> Vec<cloudos_cluster::Ipv4Cidr> {
    let mut networks: Vec<cloudos_cluster::Ipv4Cidr> = match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => addrs
            .filter(|ifa| !node_link(&ifa.interface_name))
            .filter_map(|ifa| {
                let address = ifa.address?.as_sockaddr_in()?.ip();
                let prefix = ifa
                    .netmask
                    .and_then(|m| m.as_sockaddr_in().map(|m| u32::from(m.ip()).count_ones()))
                    .and_then(|p| u8::try_from(p).ok())
                    .filter(|p| (1..=32).contains(p))
                    .unwrap_or(32);
                (!address.is_loopback()).then_some(cloudos_cluster::Ipv4Cidr { address, prefix })
            })
            .collect(),
        Err(e) => {
            log::warn!("cannot list the host's addresses: {e}");
            Vec::new()
        }
    };
    networks.sort_by_key(|n| (n.address, n.prefix));
    networks.dedup();
    networks
}

/// A link the agent of a master that runs workloads made (decision 58): its addresses
/// are the cluster's, not the machine's.
fn node_link(name: &str) -> bool {
    cloudos_cluster::subnets::NODE_LINKS.contains(&name)
}

/// The addresses worth naming in a certificate and an advertisement, sorted, IPv4 first.
fn dialable(ips: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = ips
        .into_iter()
        .filter(|ip| match ip {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unicast_link_local(),
        })
        .collect();
    ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    ips.dedup();
    ips
}

/// Publishes the address list whenever it changes; runs until the master stops.
pub async fn watch(tx: watch::Sender<Vec<IpAddr>>) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = host_addresses();
        tx.send_if_modified(|current| {
            if *current == now {
                return false;
            }
            log::info!("addresses changed: {now:?}");
            *current = now;
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed() {
        assert!(host_addresses().contains(&IpAddr::from([127, 0, 0, 1])));
    }

    #[test]
    fn ipv6_addresses_that_need_an_interface_are_left_out() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let got = dialable([
            ip("fe80::1"),
            ip("fd77::5054:ff:fe00:2"),
            ip("::1"),
            ip("10.0.0.5"),
            ip("2001:db8::2"),
            ip("127.0.0.1"),
            ip("febf::1"),
            ip("fd77::5054:ff:fe00:2"),
        ]);
        assert_eq!(
            got,
            [
                ip("10.0.0.5"),
                ip("127.0.0.1"),
                ip("2001:db8::2"),
                ip("fd77::5054:ff:fe00:2")
            ]
        );
    }
}
