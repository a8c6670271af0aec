//! `cloudos login`: joins the cluster as an admin with a token (the same pinned join a node
//! makes) and stores the client certificate, its key, the CA and the endpoint.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use cloudos_cluster::client::{self, ClientError};
use cloudos_cluster::Token;
use cloudos_discovery::{matching_pin, DiscoveredMaster};

use super::{discover, Ctx};
use crate::config::Credentials;

pub async fn run(
    ctx: &Ctx,
    token: &str,
    master: Option<String>,
    name: Option<String>,
    discover_timeout: Duration,
) -> anyhow::Result<()> {
    let token: Token = token
        .parse()
        .context("the --token value is not a CloudOS token")?;
    let name = name.unwrap_or_else(default_name);
    let candidates = match master {
        Some(master) => vec![master],
        None => {
            eprintln!(
                "looking for the master on the LAN ({}s)…",
                discover_timeout.as_secs()
            );
            let report = discover::browse(discover_timeout).await?;
            choose(&report.masters, &token)?
        }
    };
    let mut last: Option<ClientError> = None;
    for addr in candidates {
        match client::join(
            &addr,
            &token,
            &name,
            std::env::consts::ARCH,
            &BTreeMap::new(),
            None,
        )
        .await
        {
            Ok(id) if !id.role.is_user() => {
                bail!(
                    "that token made a {} certificate, not a person's; log in with a token from \
                     `cloudos user add NAME --role ROLE`",
                    id.role
                )
            }
            Ok(id) => {
                Credentials::from_join(&name, &id)?.save(&ctx.config_dir)?;
                // With several masters, keep them all, to turn to another later.
                if let Ok(status) = async {
                    ctx.client()
                        .await?
                        .status()
                        .await
                        .map_err(anyhow::Error::from)
                }
                .await
                {
                    ctx.remember_masters(&status.masters);
                }
                println!(
                    "logged in to cluster {} at {} as {name}; credentials in {}",
                    id.cluster_name,
                    id.master_addr,
                    ctx.config_dir.display()
                );
                return Ok(());
            }
            Err(e) if e.is_retryable() => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    match last {
        Some(e) => Err(e.into()),
        None => bail!("no master address to try"),
    }
}

/// The addresses of the one discovered master whose CA matches the token; an error that
/// lists the choices when there is none or more than one.
pub fn choose(masters: &[DiscoveredMaster], token: &Token) -> anyhow::Result<Vec<String>> {
    let pin = token.pin().to_string();
    let matching = matching_pin(masters, &pin);
    let describe = |m: &DiscoveredMaster| {
        let addr = addresses(m)
            .into_iter()
            .next()
            .unwrap_or_else(|| m.host.clone());
        format!("{} (cluster {}) at {addr}", m.instance, m.cluster)
    };
    match matching.as_slice() {
        [] => {
            let others = if masters.is_empty() {
                String::new()
            } else {
                format!(
                    " (found only masters of other clusters: {})",
                    masters.iter().map(describe).collect::<Vec<_>>().join(", ")
                )
            };
            bail!(
                "no master with CA {}… found on the LAN{others}; give its address with --master HOST:PORT",
                &pin[..pin.len().min(23)]
            )
        }
        [one] => Ok(addresses(one)),
        several => bail!(
            "several masters match the token: {}; choose one with --master HOST:PORT",
            several.iter().map(describe).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// `host:port` for each address of `m` that can be dialled (no IPv6 link-local).
fn addresses(m: &DiscoveredMaster) -> Vec<String> {
    m.dialable()
        .map(|ip| SocketAddr::new(ip, m.port).to_string())
        .collect()
}

/// `USER-HOST`, made into a valid node name: an admin's certificate names the person and
/// the machine the credentials are on.
pub fn default_name() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "admin".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    node_name(&user, host.trim())
}

pub fn node_name(user: &str, host: &str) -> String {
    let host = host.split('.').next().unwrap_or_default();
    let raw = if host.is_empty() {
        user.to_owned()
    } else {
        format!("{user}-{host}")
    };
    let cleaned: String = raw
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let trimmed: String = cleaned.trim_matches('-').chars().take(63).collect();
    let trimmed = trimmed.trim_end_matches('-');
    if trimmed.is_empty() {
        "admin".into()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_cluster::CaPin;

    fn master(name: &str, pin_hex: &str) -> DiscoveredMaster {
        DiscoveredMaster {
            instance: name.into(),
            host: format!("{name}.local."),
            addresses: vec![
                "fe80::1".parse().expect("ip"),
                "10.0.0.5".parse().expect("ip"),
            ],
            port: 9443,
            cluster: "lab".into(),
            pin_prefix: pin_hex[..16].into(),
            version: None,
        }
    }

    #[test]
    fn chooses_the_master_of_the_token() {
        let ours = "ab".repeat(32);
        let theirs = "cd".repeat(32);
        let token = Token::generate(CaPin::from_hex(&ours).expect("pin")).expect("token");
        let found = [master("m1", &theirs), master("m2", &ours)];
        assert_eq!(choose(&found, &token).expect("one"), ["10.0.0.5:9443"]);

        let err = choose(&found[..1], &token).expect_err("none").to_string();
        assert!(
            err.starts_with("no master with CA sha256:abababababababab… found on the LAN (found only masters of other clusters: m1 (cluster lab) at 10.0.0.5:9443)"),
            "{err}"
        );
        let twice = [master("m2", &ours), master("m3", &ours)];
        let err = choose(&twice, &token).expect_err("several").to_string();
        assert!(
            err.starts_with("several masters match the token: m2"),
            "{err}"
        );
        assert!(err.contains("--master"), "{err}");
    }

    #[test]
    fn default_names_are_valid_node_names() {
        let cases = [
            ("alice", "Laptop.example.com", "alice-laptop"),
            ("Bob_Smith", "", "bob-smith"),
            ("", "", "admin"),
            ("-x-", "h", "x--h"),
        ];
        for (user, host, want) in cases {
            let name = node_name(user, host);
            assert_eq!(name, want);
            assert!(
                cloudos_cluster::identity::validate_node_name(&name).is_ok(),
                "{name}"
            );
        }
    }
}
