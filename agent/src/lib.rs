//! The agent: a compute node's side of the cluster. It joins a master with a token
//! (checking the master's CA against the token's pin first), keeps its identity on the data
//! partition, holds one connection open to the master and sends heartbeats with telemetry
//! over it, renews its certificate, and forgets its identity when the master evicts it.
//!
//! Modules: `identity` (the files on disk), `discovery` (finding the master by mDNS),
//! `clock` (the master's time for a node whose clock is wrong at first contact),
//! `join` (the first join), `connection` (the WebSocket session), `telemetry` (/proc),
//! `renewal` (new certificates), `backoff` (retry delays), `metrics` (the node's /metrics),
//! `workloads` (running what the master sends), `upgrade` (fetching a release the master
//! asks for and handing it to the OS), `service` (the agent as a long-running
//! service: what happens when it stops). This module ties them together in [`run`]. It
//! must not touch the master's state or any other service's files, and it reads no boot
//! settings: `nodeos` builds its [`AgentConfig`].

mod backoff;
mod clock;
mod connection;
mod discovery;
mod identity;
mod join;
pub mod metrics;
mod renewal;
pub mod service;
mod telemetry;
mod upgrade;
pub mod workloads;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cloudos_cluster::client::{ApiClient, ClientError};
use cloudos_cluster::token::TokenError;
use cloudos_cluster::Token;
use time::OffsetDateTime;

pub use backoff::{Backoff, RETRY_BACKOFF};
pub use clock::SetClock;
pub use identity::{IdentityStore, IdentityStoreError, StoredIdentity};
pub use join::join_once;
pub use telemetry::Sampler;

use connection::{SessionEnd, SessionParts};

/// The data partition, where the identity lives under `agent/`.
pub const DATA_DIR: &str = "/var/lib/cloudos";

/// The shortest time between two renewals, even when a master hands out certificates that
/// are due at once (a lifetime shorter than its clock-skew allowance): never a renewal loop.
const MIN_RENEWAL_GAP: time::Duration = time::Duration::seconds(30);

/// What the agent runs with (`nodeos` builds it from its flags or boot settings).
#[derive(Clone)]
pub struct AgentConfig {
    pub data_dir: PathBuf,
    /// Needed only when there is no stored identity.
    pub token: Option<Token>,
    /// `host:port`; `None`: find the master by mDNS.
    pub master: Option<String>,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub discover_timeout: Duration,
    pub retry: Backoff,
    /// Where to serve the node's metrics; `None`: not at all.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Registries reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Ports of this node its bridge containers may open (setting `container_node_ports`).
    pub container_node_ports: Vec<cloudos_cluster::publish::NodePort>,
    /// Directories of this node containers may mount (setting `volume_host_paths`).
    pub volume_host_paths: Vec<String>,
    /// The resolv.conf whose resolvers the containers' DNS forwards to; `None`:
    /// `/etc/resolv.conf`.
    pub resolv_conf: Option<std::path::PathBuf>,
    /// Where other nodes reach this node's mesh, when not at its own address (setting
    /// `mesh_endpoint`).
    pub mesh_endpoint: Option<std::net::SocketAddr>,
    /// Called once a join succeeded and the identity is saved: the token is spent, and
    /// whoever keeps it (the installer's `config.toml`) removes it, so a copy of the card
    /// or disk carries no usable secret.
    pub after_join: Option<AfterJoin>,
    /// Sets the machine's clock from the master's time at first contact (see `clock`);
    /// `None` on a host, whose time is its own time service's.
    pub set_clock: Option<SetClock>,
    /// What the node's clock service says, sent with each heartbeat; `None` on a host.
    pub clock_report: Option<ClockReporter>,
    /// Checks a downloaded bundle and installs it, then reboots into it (`nodeos::upgrade`);
    /// `None`: this node cannot install releases.
    pub install_release: Option<InstallRelease>,
    /// The booted slot and the outcome of the last upgrade, as the OS knows them.
    pub system_report: Option<SystemReporter>,
    /// Switches to the other system slot and reboots into it (`cloudos node rollback`);
    /// `None`: this node has no other slot.
    pub switch_slot: Option<SwitchSlot>,
    /// Reboots the machine in an orderly way when the master asks (`cloudos node reboot`);
    /// `None` where the node does not reboot its machine (a host install). Whether it is
    /// set is what the hello tells the master.
    pub reboot: Option<Reboot>,
    /// Called each time the master acknowledges a heartbeat: the node is connected, the
    /// master has its report and counts it Ready. A host install's health check on a binary
    /// on trial (`nodeos::host`); `None`: nobody asks.
    pub healthy: Option<Healthy>,
}

/// See [`AgentConfig::install_release`]: the bundle's path, whether an older (or the same)
/// version may be installed, and the request's id (for the reports after the reboot). `Ok`
/// once the slot is written and a reboot is under way; `Err` says why not, and nothing was
/// changed.
pub type InstallRelease =
    std::sync::Arc<dyn Fn(&std::path::Path, bool, &str) -> Result<(), String> + Send + Sync>;

/// See [`AgentConfig::switch_slot`]: the request's id (for the reports after the reboot).
/// `Ok` with the version the other slot holds once the boot environment points at it and
/// a reboot is under way; `Err` says why not, and nothing was changed.
pub type SwitchSlot = std::sync::Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

/// See [`AgentConfig::system_report`].
pub type SystemReporter =
    std::sync::Arc<dyn Fn() -> Option<cloudos_cluster::api::SystemReport> + Send + Sync>;

/// See [`AgentConfig::reboot`]: asks whoever owns the machine to reboot it; the error says
/// why it could not.
pub type Reboot = std::sync::Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// See [`AgentConfig::healthy`].
pub type Healthy = std::sync::Arc<dyn Fn() + Send + Sync>;

/// See [`AgentConfig::clock_report`].
pub type ClockReporter =
    std::sync::Arc<dyn Fn() -> Option<cloudos_cluster::api::ClockReport> + Send + Sync>;

/// See [`AgentConfig::after_join`].
pub type AfterJoin = std::sync::Arc<dyn Fn() + Send + Sync>;

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("data_dir", &self.data_dir)
            .field("token", &self.token)
            .field("master", &self.master)
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("discover_timeout", &self.discover_timeout)
            .field("retry", &self.retry)
            .field("metrics_listen", &self.metrics_listen)
            .field("insecure_registries", &self.insecure_registries)
            .field("after_join", &self.after_join.is_some())
            .field("set_clock", &self.set_clock.is_some())
            .field("clock_report", &self.clock_report.is_some())
            .field("install_release", &self.install_release.is_some())
            .field("system_report", &self.system_report.is_some())
            .field("switch_slot", &self.switch_slot.is_some())
            .field("reboot", &self.reboot.is_some())
            .field("healthy", &self.healthy.is_some())
            .finish()
    }
}

/// Why the agent stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The master removed the node; the identity is deleted.
    Evicted { reason: String },
}

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("this node has not joined a cluster (no identity in {dir}) and has no join token; give it one with --token or cloudos.token=…")]
    NoToken { dir: PathBuf },
    #[error("the certificate of node {node} expired at {expired_at}; join again with a new token (--token or cloudos.token=…)")]
    Expired {
        node: String,
        expired_at: OffsetDateTime,
    },
    #[error("not a join token: {0}")]
    BadToken(#[from] TokenError),
    #[error("cannot join the cluster: {0}")]
    JoinRefused(ClientError),
    #[error("the stored identity cannot be used: {0}; delete it and join again with a token")]
    BadIdentity(ClientError),
    #[error(transparent)]
    Store(#[from] IdentityStoreError),
}

impl AgentError {
    /// Whether restarting the agent cannot help until a person acts (a new token, another
    /// master): the service then waits instead of crash-looping.
    pub fn needs_a_person(&self) -> bool {
        !matches!(self, AgentError::Store(_))
    }
}

/// Runs the agent until it is evicted or fails for good. Never returns on its own while the
/// master is merely unreachable: it retries with backoff.
pub async fn run(config: AgentConfig) -> Result<Outcome, AgentError> {
    let store = IdentityStore::new(&config.data_dir);
    let mut identity = load_or_join(&config, &store).await?;

    let node_metrics = std::sync::Arc::new(metrics::NodeMetrics::default());
    // Dropped (and so stopped) when the agent stops.
    let _metrics_server = config.metrics_listen.map(|listen| {
        AbortOnDrop(tokio::spawn(metrics::serve(
            std::sync::Arc::clone(&node_metrics),
            listen,
        )))
    });
    let (executor, mut outbox) = workloads::Executor::new(workloads::ExecutorConfig {
        data_dir: config.data_dir.clone(),
        shim: shim_command(),
        insecure_registries: config.insecure_registries.clone(),
        container_node_ports: config.container_node_ports.clone(),
        volume_host_paths: config.volume_host_paths.clone(),
        resolv_conf: config.resolv_conf.clone(),
        mesh_endpoint: config.mesh_endpoint,
    });
    let upgrader = std::sync::Arc::new(upgrade::Upgrader::new(
        config.install_release.clone(),
        config.switch_slot.clone(),
        &config.data_dir,
    ));
    let facts = SessionParts {
        labels: &config.labels,
        data_dir: &config.data_dir,
        metrics: &node_metrics,
        executor: &executor,
        clock: config.clock_report.as_ref(),
        system: config.system_report.as_ref(),
        upgrader: &upgrader,
        reboot: config.reboot.as_ref(),
        healthy: config.healthy.as_ref(),
        identity: &store,
    };
    let mut sampler = Sampler::new();
    let mut links = Links {
        retry: config.retry.start(),
        renew_not_before: OffsetDateTime::UNIX_EPOCH,
        unreachable_in_a_row: 0,
    };
    loop {
        let api = ApiClient::from_identity(&identity.joined).map_err(AgentError::BadIdentity)?;
        if renew_if_due(&config, &store, &api, &mut identity, &mut links).await? {
            // A new certificate: connect with it.
            continue;
        }
        let renew_at = identity.joined.renew_after.max(links.renew_not_before);
        let renew_in = renewal::until(renew_at, OffsetDateTime::now_utc());
        let deadline = tokio::time::Instant::now() + renew_in;
        let ended = connection::session(&api, &facts, &mut sampler, deadline, &mut outbox).await;
        if let Some(outcome) =
            after_session(ended, &config, &store, &api, &mut identity, &mut links).await?
        {
            return Ok(outcome);
        }
    }
}

/// The stored identity when it is still valid; otherwise a join with the token (and the
/// token's keeper told, see [`AgentConfig::after_join`]).
async fn load_or_join(
    config: &AgentConfig,
    store: &IdentityStore,
) -> Result<StoredIdentity, AgentError> {
    let mut stored = store.load()?;
    // An identity that looks expired may only be a clock that is ahead: ask its master.
    if let (Some(id), Some(set_clock)) = (&stored, &config.set_clock) {
        if is_expired(id) {
            if let Some(pin) = ca_pin(id) {
                clock::from_master(&id.joined.master_addr, pin, set_clock).await;
                stored = store.load()?;
            }
        }
    }
    let stale = match stored {
        Some(id) if !is_expired(&id) => {
            log::info!(
                "using the identity of {} in cluster {} (master at {})",
                id.node_name,
                id.joined.cluster_name,
                id.joined.master_addr
            );
            return Ok(id);
        }
        stale => stale,
    };
    let Some(token) = config.token.as_ref() else {
        return Err(
            match stale.and_then(|id| Some((id.node_name.clone(), id.expires_at()?))) {
                Some((node, expired_at)) => AgentError::Expired { node, expired_at },
                None => AgentError::NoToken {
                    dir: store.dir().to_owned(),
                },
            },
        );
    };
    if let Some(old) = stale {
        log::warn!(
            "the certificate of {} has expired; joining again with the token",
            old.node_name
        );
    }
    let joined = join::join_cluster(config, token)
        .await
        .map_err(AgentError::JoinRefused)?;
    store.save(&joined)?;
    if let Some(after_join) = &config.after_join {
        after_join();
    }
    Ok(joined)
}

/// What the agent remembers between sessions with the master.
struct Links {
    retry: cloudos_cluster::backoff::Retry,
    /// After a failed renewal, the next attempt waits until then instead of looping.
    renew_not_before: OffsetDateTime,
    unreachable_in_a_row: u32,
}

/// Renews the certificate when it is due (and no failed attempt asks to wait); `true` when
/// `identity` now holds a new one.
async fn renew_if_due(
    config: &AgentConfig,
    store: &IdentityStore,
    api: &ApiClient,
    identity: &mut StoredIdentity,
    links: &mut Links,
) -> Result<bool, AgentError> {
    let now = OffsetDateTime::now_utc();
    if now < identity.joined.renew_after || now < links.renew_not_before {
        return Ok(false);
    }
    match renewal::renew(api, identity).await {
        Ok(renewed) => {
            store.save(&renewed)?;
            log::info!(
                "renewed the certificate of {}; next renewal at {}",
                renewed.node_name,
                renewed.joined.renew_after
            );
            *identity = renewed;
            links.renew_not_before = now + MIN_RENEWAL_GAP;
            Ok(true)
        }
        Err(e) => {
            let delay = config.retry.max;
            log::warn!(
                "cannot renew the certificate yet: {e}; retrying in {}",
                backoff::show(delay)
            );
            links.renew_not_before = now + delay;
            Ok(false)
        }
    }
}

/// Acts on how a session ended: `Some` when the agent is done (evicted), `None` to connect
/// again (after a backoff, or at once when the master moved or a renewal is due).
async fn after_session(
    ended: Result<SessionEnd, ClientError>,
    config: &AgentConfig,
    store: &IdentityStore,
    api: &ApiClient,
    identity: &mut StoredIdentity,
    links: &mut Links,
) -> Result<Option<Outcome>, AgentError> {
    let addr = api.address();
    match ended {
        Ok(SessionEnd::RenewDue) => {
            links.unreachable_in_a_row = 0;
            links.retry.reset();
        }
        Ok(SessionEnd::Evicted(reason)) => {
            log::warn!(
                "evicted from cluster {}: {reason}; forgetting this node's identity",
                identity.joined.cluster_name
            );
            store.remove()?;
            return Ok(Some(Outcome::Evicted { reason }));
        }
        Ok(SessionEnd::Readdressed { from, to }) => {
            log::info!(
                "this node reaches the master from {to} now, not {from}: saying hello again"
            );
            links.unreachable_in_a_row = 0;
            links.retry.reset();
        }
        Ok(SessionEnd::Lost(reason)) => {
            links.retry.reset();
            let delay = links.retry.next_delay();
            log::warn!(
                "lost the connection to master at {addr}: {reason}; reconnecting in {}",
                backoff::show(delay)
            );
            tokio::time::sleep(delay).await;
        }
        Err(e) => {
            let delay = links.retry.next_delay();
            match e {
                ClientError::Unreachable { .. } => {
                    links.unreachable_in_a_row += 1;
                    // With several masters, the next one: any of them serves the node.
                    if let Some(next) = next_master(store, &identity.joined.master_addr) {
                        log::warn!("{e}; turning to the master at {next}");
                        identity.joined.master_name = host_of(&next);
                        identity.joined.master_addr = next;
                        store.save(identity)?;
                        links.unreachable_in_a_row = 0;
                        return Ok(None);
                    }
                    // A master found by mDNS may come back at another address
                    // (a new DHCP lease): look for it again by its CA.
                    if config.master.is_none() && links.unreachable_in_a_row >= 2 {
                        if let Some(moved) = rediscover(config, identity).await {
                            identity.joined.master_addr = moved;
                            store.save(identity)?;
                            links.unreachable_in_a_row = 0;
                            return Ok(None);
                        }
                    }
                    log::warn!("{e}; retrying in {}", backoff::show(delay))
                }
                _ => log::warn!(
                    "cannot connect to master at {addr}: {e}; retrying in {}",
                    backoff::show(delay)
                ),
            }
            tokio::time::sleep(delay).await;
        }
    }
    Ok(None)
}

/// The master after `current` in the list the masters sent (in a circle), if there is
/// another.
fn next_master(store: &IdentityStore, current: &str) -> Option<String> {
    let masters = store.masters();
    let at = masters.iter().position(|m| m == current);
    let next = match at {
        Some(i) => masters
            .iter()
            .cycle()
            .skip(i + 1)
            .take(masters.len())
            .find(|m| *m != current),
        None => masters.first(),
    }?;
    Some(next.clone())
}

/// The host part of `host:port` (`[v6]:port` too): the name another master's serving
/// certificate carries for the address (its addresses are among its names).
fn host_of(addr: &str) -> String {
    match addr.rsplit_once(':') {
        Some((host, _)) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        None => addr.to_owned(),
    }
}

/// The pin of the identity's cluster CA.
fn ca_pin(identity: &StoredIdentity) -> Option<cloudos_cluster::CaPin> {
    let ca = cloudos_cluster::pki::cert_from_pem(&identity.joined.ca_pem, "cluster CA").ok()?;
    cloudos_cluster::CaPin::of_cert(&ca).ok()
}

/// The master of this node's cluster at a new address, found by mDNS and
/// recognised by its CA pin; `None` if it is not on the LAN or has not moved.
async fn rediscover(config: &AgentConfig, identity: &StoredIdentity) -> Option<String> {
    let pin = ca_pin(identity)?;
    let found = discovery::find_masters(pin, config.discover_timeout)
        .await
        .ok()?;
    let moved = found
        .into_iter()
        .find(|addr| *addr != identity.joined.master_addr)?;
    log::info!(
        "master of cluster {} moved from {} to {moved} (found by mDNS)",
        identity.joined.cluster_name,
        identity.joined.master_addr
    );
    Some(moved)
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Containers' shims are this very binary, `nodeos shim run …`.
fn shim_command() -> cloudos_runtime::ShimCommand {
    let program =
        std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    cloudos_runtime::ShimCommand {
        program,
        args_prefix: vec!["shim".to_owned()],
    }
}

fn is_expired(id: &StoredIdentity) -> bool {
    id.expires_at()
        .is_some_and(|at| at <= OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_turns_to_the_next_master_in_a_circle() {
        let dir = tempfile::tempdir().expect("dir");
        let store = IdentityStore::new(dir.path());
        assert_eq!(next_master(&store, "10.0.0.1:9443"), None, "no list: stay");
        let masters = ["10.0.0.1:9443", "10.0.0.2:9443", "[fd00::3]:9443"].map(String::from);
        store.save_masters(&masters).expect("save");
        assert_eq!(store.masters(), masters);
        let order = [
            ("10.0.0.1:9443", "10.0.0.2:9443"),
            ("10.0.0.2:9443", "[fd00::3]:9443"),
            ("[fd00::3]:9443", "10.0.0.1:9443"),
            // Joined through an address the list does not hold: its first.
            ("192.0.2.9:9443", "10.0.0.1:9443"),
        ];
        for (from, to) in order {
            assert_eq!(
                next_master(&store, from).as_deref(),
                Some(to),
                "from {from}"
            );
        }
        store.save_masters(&masters[..1]).expect("save");
        assert_eq!(next_master(&store, "10.0.0.1:9443"), None, "only itself");
        assert_eq!(host_of("[fd00::3]:9443"), "fd00::3");
        assert_eq!(host_of("10.0.0.2:9443"), "10.0.0.2");
    }
}
