//! The installer's view of the live machine ([`cloudos_installer::System`]): disks from
//! sysfs, the live medium by its volume id, masters by mDNS, a master's CA over TLS 1.3,
//! and the network the live system's own network service configured.

use std::sync::Arc;
use std::time::Duration;

use cloudos_cluster::pki::cert_from_pem;
use cloudos_cluster::tls::{client_config_pinned, pin_mismatch, TlsError};
use cloudos_cluster::{CaPin, Token};
use cloudos_installer::disks::{self, Disk, DiskError};
use cloudos_installer::{MasterInfo, Network, System};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::net::state::NetState;

/// How long the installer listens for masters.
const BROWSE_FOR: Duration = Duration::from_secs(3);
/// How long a DHCP install waits for the live system's lease.
const LEASE_WAIT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The master serves its CA here without a client certificate (master/routes/install.rs).
const CA_PATH: &str = "/install/ca.pem";

pub struct LiveSystem;

impl System for LiveSystem {
    fn disks(&self) -> Result<Vec<Disk>, DiskError> {
        disks::list(std::path::Path::new(disks::SYSFS))
    }

    fn boot_medium(&self) -> Option<String> {
        super::medium::boot_medium()
    }

    fn discover_masters(&self) -> Result<Vec<MasterInfo>, String> {
        let found = cloudos_discovery::browse(BROWSE_FOR).map_err(|e| e.to_string())?;
        Ok(found
            .into_iter()
            .flat_map(|m| {
                // One entry per address a person could pick; link-local IPv6 needs an
                // interface, which an address alone does not carry.
                m.addresses
                    .iter()
                    .filter(|ip| match ip {
                        std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
                        std::net::IpAddr::V4(_) => true,
                    })
                    .map(|ip| MasterInfo {
                        name: m.instance.clone(),
                        address: *ip,
                        port: m.port,
                        cluster: m.cluster.clone(),
                        pin_prefix: m.pin_prefix.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect())
    }

    fn check_token(&self, master: &str, token: &Token) -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the network client: {e}"))?;
        runtime.block_on(check_ca(master, token.pin()))
    }

    fn check_network(&self, network: &Network) -> Result<(), String> {
        match network {
            Network::Dhcp => {
                // The live system's network service may still be waiting for its lease.
                let deadline = std::time::Instant::now() + LEASE_WAIT;
                loop {
                    let state = NetState::read().unwrap_or_default();
                    if state.links.iter().any(|l| l.address.is_some()) {
                        return Ok(());
                    }
                    if std::time::Instant::now() >= deadline {
                        let links: Vec<&str> =
                            state.links.iter().map(|l| l.name.as_str()).collect();
                        return Err(format!(
                            "no DHCP server answered on {} within {}s; check the cable, or \
                             give a static address",
                            if links.is_empty() {
                                "any link".to_owned()
                            } else {
                                links.join(", ")
                            },
                            LEASE_WAIT.as_secs()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
            // The answers' parser has checked the address, gateway and DNS; the installed
            // node applies them at its first boot, so the live system keeps its own.
            Network::Static { .. } => Ok(()),
        }
    }
}

/// Fetches the CA of the master at `master` (`host:port`) over TLS 1.3 and checks it is
/// the one `pin` names. The handshake itself already refuses another CA (the pinned
/// verifier); the CA file is compared too, as the node will trust it.
async fn check_ca(master: &str, pin: CaPin) -> Result<(), String> {
    let (host, _) = master
        .rsplit_once(':')
        .ok_or_else(|| format!("{master} is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let config = client_config_pinned(pin).map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| format!("{host} is not a host name or an address"))?;
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(master))
        .await
        .map_err(|_| {
            format!(
                "no answer from {master} within {}s",
                CONNECT_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("cannot reach {master}: {e}"))?;
    let connector = TlsConnector::from(Arc::new(config));
    let mut tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| format!("{master} did not finish the TLS handshake"))?
        .map_err(|e| match pin_mismatch(&e) {
            Some(TlsError::PinMismatch { got, .. }) => other_cluster(master, got, &pin),
            _ => format!("TLS with {master} failed: {e}"),
        })?;
    let request =
        format!("GET {CA_PATH} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: cloudos-installer\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("asking {master} for its CA: {e}"))?;
    let mut answer = Vec::new();
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        (&mut tls).take(1 << 20).read_to_end(&mut answer),
    )
    .await
    .map_err(|_| format!("{master} did not send its CA in time"))?
    .map_err(|e| format!("reading {master}'s CA: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let status = text.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{master} answered {status:?} for its CA"));
    }
    let cert = cert_from_pem(&text, "the master's CA").map_err(|e| e.to_string())?;
    let got = CaPin::of_cert(&cert).map_err(|e| e.to_string())?;
    if got != pin {
        return Err(other_cluster(master, &got, &pin));
    }
    Ok(())
}

fn other_cluster(master: &str, got: &CaPin, pin: &CaPin) -> String {
    format!(
        "the master at {master} belongs to another cluster (CA pin {got}), not the one this \
         token is for (CA pin {pin}); use a token created on that master"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::config::MasterConfig;
    use crate::master::Master;

    /// A real master on loopback: its CA passes for its own pin; a token of another
    /// cluster and an address nobody answers on are refused with the reason.
    #[tokio::test]
    async fn the_masters_ca_is_checked_against_the_tokens_pin() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = MasterConfig::new(dir.path().join("state"), "m1");
        config.listen = "127.0.0.1:0".parse().expect("address");
        config.mdns = false;
        let master = Master::open(config).await.expect("master");
        let address = master.local_addr().to_string();
        let pin = master.ca_pin();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(master.run(async {
            let _ = stopped.await;
        }));

        check_ca(&address, pin).await.expect("its own CA");
        let other = CaPin::from_hex(&"ab".repeat(32)).expect("pin");
        let err = check_ca(&address, other)
            .await
            .expect_err("another cluster");
        assert!(
            err.contains("belongs to another cluster")
                && err.contains(&address)
                && err.contains(&pin.to_string())
                && err.contains(&other.to_string()),
            "{err}"
        );
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        let nobody = closed.local_addr().expect("address").to_string();
        drop(closed);
        let err = check_ca(&nobody, pin).await.expect_err("nobody there");
        assert!(err.contains("cannot reach"), "{err}");

        let _ = stop.send(());
        let _ = running.await;
    }
}
