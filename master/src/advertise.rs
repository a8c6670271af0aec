//! Advertising the master over mDNS (`_cloudos._tcp`) with the discovery crate, restarted
//! whenever the host's addresses change, because libmdns joins the multicast groups only on
//! the interfaces that have an address when it starts. It answers with A records over IPv4
//! and AAAA records over IPv6, so a master on an IPv6-only LAN is found too.

use std::net::IpAddr;
use std::sync::Arc;

use cloudos_discovery::{pin_prefix, AdvertiseHandle, Advertiser, MasterAd};
use tokio::sync::watch;

use super::state::MasterState;

/// Bytes allowed in a DNS-SD instance label by the discovery crate.
const MAX_INSTANCE: usize = 62;

/// `cloudos <cluster> <host>`, without dots, cut to a valid label length.
fn instance_name(cluster: &str, host: &str) -> String {
    let mut name: String = format!("cloudos {cluster} {host}")
        .chars()
        .map(|c| if c == '.' || c.is_control() { '-' } else { c })
        .collect();
    while name.len() > MAX_INSTANCE {
        name.pop();
    }
    name
}

fn ad(state: &MasterState) -> Result<MasterAd, cloudos_discovery::DiscoveryError> {
    Ok(MasterAd {
        instance: instance_name(&state.cluster_name, &state.config.node_name),
        cluster: state.cluster_name.clone(),
        pin_prefix: pin_prefix(&state.ca.pin().to_string())?,
        port: state.local_addr.port(),
        version: cloudos_release::version().to_string(),
    })
}

fn start(state: &MasterState, ips: &[IpAddr]) -> Option<AdvertiseHandle> {
    if ips.iter().all(|ip| ip.is_loopback()) {
        log::info!("not advertising over mDNS yet: no address besides loopback");
        return None;
    }
    let host = state
        .config
        .node_name
        .split('.')
        .next()
        .unwrap_or_default()
        .to_owned();
    let result = ad(state).and_then(|ad| Advertiser::new().host(host).start(&ad));
    match result {
        Ok(handle) => Some(handle),
        Err(e) => {
            log::warn!(
                "cannot advertise the master over mDNS: {e}; nodes need cloudos.master=ADDRESS"
            );
            None
        }
    }
}

/// Keeps an advertisement running that matches the current addresses.
pub async fn run(state: Arc<MasterState>, mut addresses: watch::Receiver<Vec<IpAddr>>) {
    let mut handle: Option<AdvertiseHandle> = None;
    loop {
        let ips = addresses.borrow_and_update().clone();
        let previous = handle.take();
        let s = Arc::clone(&state);
        // Starting and withdrawing block (a responder thread, goodbye packets).
        let started = tokio::task::spawn_blocking(move || {
            drop(previous);
            start(&s, &ips)
        })
        .await;
        handle = started.unwrap_or_else(|e| {
            log::error!("mDNS advertiser task failed: {e}");
            None
        });
        if addresses.changed().await.is_err() {
            break;
        }
    }
    if let Some(h) = handle {
        let _ = tokio::task::spawn_blocking(move || drop(h)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_are_labels() {
        assert_eq!(instance_name("lab", "m1.lan"), "cloudos lab m1-lan");
        let long = instance_name(&"x".repeat(64), "m1");
        assert_eq!(long.len(), MAX_INSTANCE);
    }
}
