//! The installer's view of the live machine ([`cloudos_installer::System`]): disks from
//! sysfs, the live medium by its volume id, masters by mDNS, a master's CA over TLS 1.3,
//! and the network the live system's own network service configured.

use std::time::Duration;

use cloudos_cluster::client::{self, ClientError};
use cloudos_cluster::{CaPin, Role, Token};
use cloudos_installer::disks::{self, Disk, DiskError};
use cloudos_installer::restore::{BackupInfo, FoundBackup, OpenError};
use cloudos_installer::{MasterInfo, NetworkAnswers, System};
use cloudos_master::backup::{BackupError, Passphrase};
use cloudos_settings::Secret;

use crate::net::state::NetState;

/// How long the installer listens for masters.
const BROWSE_FOR: Duration = Duration::from_secs(3);
/// How long a DHCP install waits for the live system's lease.
const LEASE_WAIT: Duration = Duration::from_secs(30);

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
                m.dialable()
                    .map(|ip| MasterInfo {
                        name: m.instance.clone(),
                        address: ip,
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
        runtime.block_on(check_with_master(master, token))
    }

    fn check_network(&self, network: &NetworkAnswers) -> Result<(), String> {
        match network {
            NetworkAnswers::Dhcp => {
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
            // Applied now, so a compute node reaches its master and a wrong gateway shows.
            NetworkAnswers::Static {
                address,
                gateway,
                dns,
            } => super::livenet::apply_static(address, *gateway, dns),
        }
    }

    fn find_backups(&self) -> Vec<FoundBackup> {
        super::medium::find_backups()
    }

    fn read_passphrase(&self, source: &str) -> Result<Secret, String> {
        crate::roles::restore::read_passphrase(source).map_err(|e| format!("{e:#}"))
    }

    fn open_backup(&self, source: &str, passphrase: &Secret) -> Result<BackupInfo, OpenError> {
        let passphrase = Passphrase::for_restore(passphrase.expose());
        let opened = crate::roles::restore::inspect(source, &passphrase).map_err(|e| {
            match e.downcast_ref::<BackupError>() {
                Some(BackupError::WrongPassphrase { .. }) => {
                    OpenError::WrongPassphrase(e.to_string())
                }
                _ => OpenError::Unusable(format!("{e:#}")),
            }
        })?;
        Ok(backup_info(&opened.manifest))
    }
}

/// Asks the master at `master` (`host:port`) whether a compute node's join with `token`
/// would be admitted, over TLS 1.3 pinned to the token's CA: another cluster's master is
/// refused in the handshake, before the secret is sent. The token is not used up.
async fn check_with_master(master: &str, token: &Token) -> Result<(), String> {
    let answer = client::check_token(master, token)
        .await
        .map_err(|e| match e {
            ClientError::PinMismatch { .. } => other_cluster(master, token.pin()),
            ClientError::TokenInvalid { message } => {
                format!("the master at {master} refused the token: {message}")
            }
            ClientError::Refused { message, .. } => {
                format!("the master at {master} refused the token: {message}")
            }
            other => other.to_string(),
        })?;
    if answer.role != Role::Compute {
        return Err(format!(
            "this token is for the {} role, not for a compute node; create one on the master \
             with `cloudos token create`",
            answer.role
        ));
    }
    Ok(())
}

fn other_cluster(master: &str, pin: CaPin) -> String {
    format!(
        "the master at {master} belongs to another cluster: its CA is not the one this \
         token pins (CA pin {pin}); use a token created on that master"
    )
}

/// What the wizard and the summary show of a backup, from its manifest.
fn backup_info(m: &cloudos_master::backup::Manifest) -> BackupInfo {
    let count = |table: &str| m.records.get(table).copied().unwrap_or(0);
    BackupInfo {
        cluster: m.cluster.clone(),
        ca_pin: m.ca_pin.clone(),
        created_at: m
            .created_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| m.created_at.to_string()),
        made_by: m.nodeos_version.clone(),
        nodes: count("nodes"),
        services: count("services"),
        tasks: count("tasks"),
        admins: count("admins"),
        master_addresses: m
            .master_addresses
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_master::config::MasterConfig;
    use cloudos_master::Master;

    /// A real master on loopback. Its bootstrap token reaches it and is verified (it is an
    /// admin token, which a compute node cannot use), without being used up: it still
    /// joins afterwards. A wrong secret, another cluster's pin and an address nobody
    /// answers on are refused with the reason.
    #[tokio::test]
    async fn the_token_is_checked_by_its_master_without_using_it_up() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = MasterConfig::new(dir.path().join("state"), "m1");
        config.listen = "127.0.0.1:0".parse().expect("address");
        config.mdns = false;
        let mut master = Master::open(config).await.expect("master");
        let address = master.local_addr().to_string();
        let pin = master.ca_pin();
        let admin = master.take_bootstrap_token().expect("a bootstrap token");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(master.run(async {
            let _ = stopped.await;
        }));

        let err = check_with_master(&address, &admin)
            .await
            .expect_err("an admin token");
        assert!(err.contains("admin role"), "{err}");

        let reversed: String = admin.secret().chars().rev().collect();
        let wrong: Token = format!("cloudos1_{}_{reversed}_{}", admin.id(), pin.to_hex())
            .parse()
            .expect("a token");
        let err = check_with_master(&address, &wrong)
            .await
            .expect_err("a wrong secret");
        assert!(err.contains("refused the token"), "{err}");
        assert!(!err.contains(&reversed), "the secret is in {err}");

        let other_pin = "ab".repeat(32);
        let other: Token = format!("cloudos1_{}_{}_{other_pin}", admin.id(), admin.secret())
            .parse()
            .expect("a token");
        let err = check_with_master(&address, &other)
            .await
            .expect_err("another cluster");
        assert!(
            err.contains("belongs to another cluster") && err.contains(&address),
            "{err}"
        );

        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        let nobody = closed.local_addr().expect("address").to_string();
        drop(closed);
        let err = check_with_master(&nobody, &admin)
            .await
            .expect_err("nobody there");
        assert!(err.contains("unreachable"), "{err}");

        // Checked twice, still unused: the admin joins with it.
        client::join(
            &address,
            &admin,
            "admin-laptop",
            "x86_64",
            &Default::default(),
            Some(Role::Admin),
        )
        .await
        .expect("the checked token still joins");

        let _ = stop.send(());
        let _ = running.await;
    }
}
