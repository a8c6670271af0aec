//! The master's HTTPS serving certificate: issued by the cluster CA for the master's name,
//! `localhost`, every IPv4 address of the host and its global and unique-local IPv6 ones, and issued again when the addresses
//! change or two thirds of its life have passed. New connections pick up the new one; open
//! connections keep theirs.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use cloudos_cluster::pki::{CertInfo, SERVING_CERT_LIFETIME};
use cloudos_cluster::tls::{self, TlsError};
use cloudos_cluster::ClusterCa;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_rustls::rustls::ServerConfig;

use super::state::MasterState;

/// A server configuration with a fresh serving certificate, and that certificate's info.
pub fn server_config(
    ca: &ClusterCa,
    node_name: &str,
    ips: &[IpAddr],
    extra: &[String],
) -> Result<(ServerConfig, CertInfo), TlsError> {
    let (names, ips) = subject_alt_names(node_name, ips, extra);
    let issued = ca.issue_serving_cert(
        &names,
        &ips,
        SERVING_CERT_LIFETIME,
        OffsetDateTime::now_utc(),
    )?;
    let config = tls::server_config_pem(&issued.chain_pem, &issued.key_pem, Some(ca.cert_pem()))?;
    Ok((config, issued.info))
}

/// The DNS names and IP addresses the serving certificate names: the master's own name,
/// `localhost`, its interfaces' addresses and 127.0.0.1, then `extra` (`--tls-san`: names
/// and addresses only the clients know, behind NAT or a load balancer). No duplicates.
pub fn subject_alt_names(
    node_name: &str,
    ips: &[IpAddr],
    extra: &[String],
) -> (Vec<String>, Vec<IpAddr>) {
    let mut names = vec![node_name.to_owned()];
    let mut addresses: Vec<IpAddr> = Vec::new();
    for ip in ips {
        if !addresses.contains(ip) {
            addresses.push(*ip);
        }
    }
    let wanted = std::iter::once("localhost".to_owned())
        .chain(std::iter::once("127.0.0.1".to_owned()))
        .chain(extra.iter().cloned());
    for san in wanted {
        match san.parse::<IpAddr>() {
            Ok(ip) if !addresses.contains(&ip) => addresses.push(ip),
            Err(_) if !names.contains(&san) => names.push(san),
            _ => {}
        }
    }
    (names, addresses)
}

/// Reissues the serving certificate when the addresses change or it is due for renewal.
pub async fn keep_fresh(state: Arc<MasterState>, mut addresses: watch::Receiver<Vec<IpAddr>>) {
    let mut renew_at = OffsetDateTime::now_utc() + SERVING_CERT_LIFETIME * 2 / 3;
    loop {
        let wait = Duration::try_from(renew_at - OffsetDateTime::now_utc())
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_secs(60));
        let why = tokio::select! {
            changed = addresses.changed() => match changed {
                Ok(()) => "the addresses changed",
                Err(_) => return,
            },
            _ = tokio::time::sleep(wait) => "it is due for renewal",
        };
        let ips = addresses.borrow_and_update().clone();
        match server_config(
            &state.ca,
            &state.config.node_name,
            &ips,
            &state.config.tls_san,
        ) {
            Ok((config, info)) => {
                state.set_tls_config(config);
                renew_at = info.renew_at();
                log::info!("reissued the serving certificate because {why} ({ips:?})");
            }
            Err(e) => log::error!("cannot reissue the serving certificate: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_names_and_addresses_join_the_own_ones_once() {
        let (names, ips) = subject_alt_names(
            "master-1",
            &[IpAddr::from([10, 0, 0, 5]), "fd77::2".parse().expect("ip")],
            &[
                "203.0.113.7".to_owned(),
                "master.example.org".to_owned(),
                "10.0.0.5".to_owned(),
                "master-1".to_owned(),
                "fd00::1".to_owned(),
            ],
        );
        assert_eq!(names, ["master-1", "localhost", "master.example.org"]);
        let ips: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
        assert_eq!(
            ips,
            ["10.0.0.5", "fd77::2", "127.0.0.1", "203.0.113.7", "fd00::1"]
        );
    }
}
