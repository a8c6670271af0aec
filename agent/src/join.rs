//! The first join: find the master (the given address, or mDNS), join it with the token,
//! retrying while no master answers. Refusals that will not change (wrong pin at a given
//! address, a bad or expired token) end the attempt with the master's reason.

use cloudos_cluster::client::{self, ClientError};
use cloudos_cluster::{Role, Token};

use super::backoff::show;
use super::discovery::{find_masters, short_pin};
use super::identity::StoredIdentity;
use super::telemetry::arch;
use super::AgentConfig;

/// Joins with `token`, retrying until a master accepts or refuses for good.
pub async fn join_cluster(
    config: &AgentConfig,
    token: &Token,
) -> Result<StoredIdentity, ClientError> {
    let mut retry = config.retry.start();
    loop {
        let discovered = config.master.is_none();
        let candidates = match &config.master {
            Some(master) => vec![master.clone()],
            None => match find_masters(token.pin(), config.discover_timeout).await {
                Ok(found) => found,
                Err(e) => {
                    log::warn!("cannot browse for masters: {e}");
                    Vec::new()
                }
            },
        };
        if discovered && candidates.is_empty() {
            let delay = retry.next_delay();
            log::info!(
                "no master with CA {} found on the LAN yet; retrying in {}",
                short_pin(&token.pin()),
                show(delay)
            );
            tokio::time::sleep(delay).await;
            continue;
        }
        for master in &candidates {
            if let Some(set_clock) = &config.set_clock {
                super::clock::from_master(master, token.pin(), set_clock).await;
            }
            let result = client::join(
                master,
                token,
                &config.name,
                arch(),
                &config.labels,
                Some(Role::Compute),
            )
            .await;
            match result {
                Ok(joined) => {
                    log::info!(
                        "joined cluster {} at {} as {}",
                        joined.cluster_name,
                        joined.master_addr,
                        config.name
                    );
                    return Ok(StoredIdentity {
                        node_name: config.name.clone(),
                        joined,
                    });
                }
                // Another master whose pin prefix collides (or a rogue one copying it):
                // the TLS check caught it; try the others.
                Err(e @ ClientError::PinMismatch { .. }) if discovered => {
                    log::warn!("{e}; skipping it");
                }
                Err(e) if e.is_retryable() => log::warn!("{e}"),
                Err(e) => return Err(e),
            }
        }
        let delay = retry.next_delay();
        log::info!("retrying the join in {}", show(delay));
        tokio::time::sleep(delay).await;
    }
}

/// One join with `master` (no discovery, no retries): what an installer runs while a person
/// waits, so a wrong token, a wrong pin or an unreachable master is an answer, not a loop.
pub async fn join_once(
    master: &str,
    token: &Token,
    name: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<StoredIdentity, ClientError> {
    let joined = client::join(master, token, name, arch(), labels, Some(Role::Compute)).await?;
    Ok(StoredIdentity {
        node_name: name.to_owned(),
        joined,
    })
}
