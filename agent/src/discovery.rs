//! Finding the master on the LAN when no address was given: an mDNS browse (the discovery
//! crate), keeping only masters whose advertised CA pin prefix matches the token's pin. The
//! prefix is only a filter; the join's TLS check against the full pin is what trusts.

use std::net::SocketAddr;
use std::time::Duration;

use cloudos_cluster::CaPin;
use cloudos_discovery::{browse_for_pin, DiscoveredMaster};

/// `sha256:` and the first 16 hex digits of `pin`, for log lines.
pub fn short_pin(pin: &CaPin) -> String {
    let hex = pin.to_hex();
    format!("sha256:{}…", &hex[..16.min(hex.len())])
}

/// Browses until a master whose CA pin prefix matches `pin` answers (or
/// `timeout` passes) and returns its `host:port` candidates, best first.
/// Masters of other clusters (another CA) are never candidates.
pub async fn find_masters(pin: CaPin, timeout: Duration) -> Result<Vec<String>, String> {
    let full_pin = pin.to_string();
    let matching = tokio::task::spawn_blocking(move || browse_for_pin(&full_pin, timeout))
        .await
        .map_err(|e| format!("the mDNS browse stopped: {e}"))?
        .map_err(|e| e.to_string())?;
    Ok(matching.iter().flat_map(candidates).collect())
}

/// Every usable address of a master, IPv4 first (the browse sorts them so). IPv6 link-local
/// addresses are left out: without the interface they cannot be dialled.
fn candidates(master: &DiscoveredMaster) -> Vec<String> {
    master
        .dialable()
        .map(|ip| SocketAddr::new(ip, master.port).to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_skip_link_local() {
        let master = DiscoveredMaster {
            instance: "m1".into(),
            host: "m1.local.".into(),
            addresses: vec![
                "10.0.0.5".parse().expect("ip"),
                "fe80::1".parse().expect("ip"),
                "fd00::5".parse().expect("ip"),
            ],
            port: 9443,
            cluster: "lab".into(),
            pin_prefix: "00".repeat(8),
            version: None,
        };
        assert_eq!(candidates(&master), ["10.0.0.5:9443", "[fd00::5]:9443"]);
    }

    #[test]
    fn short_pin_shows_the_prefix() {
        let pin = CaPin::from_hex(&"ab".repeat(32)).expect("pin");
        assert_eq!(short_pin(&pin), "sha256:abababababababab…");
    }
}
