//! The host's IPv4 addresses, and a task that notices when they change (DHCP lease, cable
//! pulled). The serving certificate and the mDNS advertisement follow them.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::sync::watch;

/// How often the addresses are read; DHCP changes are rare, a few seconds is soon enough.
const POLL: Duration = Duration::from_secs(3);

/// Every IPv4 address of the host's interfaces, loopback included, sorted.
pub fn ipv4_addresses() -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => addrs
            .filter_map(|ifa| ifa.address)
            .filter_map(|a| a.as_sockaddr_in().map(|sin| sin.ip()))
            .collect(),
        Err(e) => {
            log::warn!("cannot list the host's addresses: {e}");
            Vec::new()
        }
    };
    ips.sort();
    ips.dedup();
    ips
}

/// Publishes the address list whenever it changes; runs until the master stops.
pub async fn watch(tx: watch::Sender<Vec<Ipv4Addr>>) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = ipv4_addresses();
        tx.send_if_modified(|current| {
            if *current == now {
                return false;
            }
            log::info!("IPv4 addresses changed: {now:?}");
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
        assert!(ipv4_addresses().contains(&Ipv4Addr::LOCALHOST));
    }
}
