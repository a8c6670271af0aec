//! The agent: a compute node's side of the cluster. It joins a master with a token
//! (checking the master's CA against the token's pin first), keeps its identity on the data
//! partition, holds one connection open to the master and sends heartbeats with telemetry
//! over it, renews its certificate, and forgets its identity when the master evicts it.
//!
//! Modules: `identity` (the files on disk), `discovery` (finding the master by mDNS),
//! `join` (the first join), `connection` (the WebSocket session), `telemetry` (/proc),
//! `renewal` (new certificates), `backoff` (retry delays), `metrics` (the node's /metrics). This module ties them together
//! and owns the `nodeos agent` command and the `agent` service. It must not touch the
//! master's state or any other service's files.

mod backoff;
mod connection;
mod discovery;
mod identity;
mod join;
pub mod metrics;
mod renewal;
mod telemetry;
pub mod workloads;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cloudos_cluster::client::{ApiClient, ClientError};
use cloudos_cluster::token::{parse_ttl, TokenError};
use cloudos_cluster::Token;
use time::OffsetDateTime;

use crate::settings::Settings;

pub use backoff::{Backoff, RETRY_BACKOFF};
pub use identity::{IdentityStore, IdentityStoreError, StoredIdentity};
pub use join::join_once;
pub use telemetry::Sampler;

use connection::{NodeFacts, SessionEnd};

/// The data partition, where the identity lives under `agent/`.
pub const DATA_DIR: &str = "/var/lib/cloudos";

/// The shortest time between two renewals, even when a master hands out certificates that
/// are due at once (a lifetime shorter than its clock-skew allowance): never a renewal loop.
const MIN_RENEWAL_GAP: time::Duration = time::Duration::seconds(30);

/// `nodeos agent`: run the agent outside PID 1 (on a host, or in tests).
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Where the agent keeps its identity (in `agent/` below it).
    #[arg(long, default_value = DATA_DIR)]
    pub data_dir: PathBuf,
    /// Join token from `cloudos token create`; only needed for the first join.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// The master's host:port; found by mDNS when left out.
    #[arg(long, value_name = "HOST:PORT")]
    pub master: Option<String>,
    /// This node's name in the cluster (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Labels for scheduling: `zone=a,disk=ssd`.
    #[arg(long, value_name = "K=V,…", value_parser = parse_labels)]
    pub labels: Option<BTreeMap<String, String>>,
    /// How long one mDNS browse for the master lasts.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub discover_timeout: Duration,
    /// Where the node serves its Prometheus metrics (plain HTTP, no secrets).
    #[arg(long, default_value = metrics::DEFAULT_LISTEN)]
    pub metrics_listen: std::net::SocketAddr,
    /// Do not serve metrics.
    #[arg(long)]
    pub no_metrics: bool,
    /// An image registry (`host:port`) to reach over plain HTTP; repeat for more.
    #[arg(long, value_name = "HOST:PORT")]
    pub insecure_registry: Vec<String>,
}

fn parse_duration(value: &str) -> Result<Duration, String> {
    let d = parse_ttl(value).map_err(|e| e.to_string())?;
    Ok(d.unsigned_abs())
}

/// Labels in the syntax of `cloudos.labels`, checked by the same parser.
fn parse_labels(value: &str) -> Result<BTreeMap<String, String>, String> {
    let (settings, warnings) = Settings::load(None, &format!("cloudos.labels={value}"));
    match warnings.first() {
        Some(w) => Err(w.to_string()),
        None => Ok(settings.labels),
    }
}

/// What the agent runs with, from `nodeos agent` arguments or boot settings.
#[derive(Debug, Clone)]
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
    /// The settings file the token came from (the installer's `config.toml`): once the
    /// node has joined, its identity replaces the token, which is removed from the file so
    /// a copy of the card or disk carries no usable secret.
    pub forget_token_in: Option<PathBuf>,
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
    let mut identity = match store.load()? {
        Some(id) if !is_expired(&id) => {
            log::info!(
                "using the identity of {} in cluster {} (master at {})",
                id.node_name,
                id.joined.cluster_name,
                id.joined.master_addr
            );
            id
        }
        stale => {
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
            let joined = join::join_cluster(&config, token)
                .await
                .map_err(AgentError::JoinRefused)?;
            store.save(&joined)?;
            if let Some(path) = &config.forget_token_in {
                crate::settings::forget_token_in(path);
            }
            joined
        }
    };

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
    });
    let facts = NodeFacts {
        labels: &config.labels,
        data_dir: &config.data_dir,
        metrics: &node_metrics,
        executor: &executor,
    };
    let mut sampler = Sampler::new();
    let mut retry = config.retry.start();
    // After a failed renewal, the next attempt waits this long instead of looping.
    let mut renew_not_before = OffsetDateTime::UNIX_EPOCH;
    let mut unreachable_in_a_row = 0u32;
    loop {
        let api = ApiClient::from_identity(&identity.joined).map_err(AgentError::BadIdentity)?;
        let now = OffsetDateTime::now_utc();
        if now >= identity.joined.renew_after && now >= renew_not_before {
            match renewal::renew(&api, &identity).await {
                Ok(renewed) => {
                    store.save(&renewed)?;
                    log::info!(
                        "renewed the certificate of {}; next renewal at {}",
                        renewed.node_name,
                        renewed.joined.renew_after
                    );
                    identity = renewed;
                    renew_not_before = now + MIN_RENEWAL_GAP;
                    continue;
                }
                Err(e) => {
                    let delay = config.retry.max;
                    log::warn!(
                        "cannot renew the certificate yet: {e}; retrying in {}",
                        backoff::show(delay)
                    );
                    renew_not_before = now + delay;
                }
            }
        }
        let renew_at = identity.joined.renew_after.max(renew_not_before);
        let renew_in = renewal::until(renew_at, OffsetDateTime::now_utc());
        let deadline = tokio::time::Instant::now() + renew_in;
        let addr = api.address();
        match connection::session(&api, &facts, &mut sampler, deadline, &mut outbox).await {
            Ok(SessionEnd::RenewDue) => {
                unreachable_in_a_row = 0;
                retry.reset()
            }
            Ok(SessionEnd::Evicted(reason)) => {
                log::warn!(
                    "evicted from cluster {}: {reason}; forgetting this node's identity",
                    identity.joined.cluster_name
                );
                store.remove()?;
                return Ok(Outcome::Evicted { reason });
            }
            Ok(SessionEnd::Lost(reason)) => {
                retry.reset();
                let delay = retry.next_delay();
                log::warn!(
                    "lost the connection to master at {addr}: {reason}; reconnecting in {}",
                    backoff::show(delay)
                );
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                let delay = retry.next_delay();
                match e {
                    ClientError::Unreachable { .. } => {
                        unreachable_in_a_row += 1;
                        // A master found by mDNS may come back at another address
                        // (a new DHCP lease): look for it again by its CA.
                        if config.master.is_none() && unreachable_in_a_row >= 2 {
                            if let Some(moved) = rediscover(&config, &identity).await {
                                identity.joined.master_addr = moved;
                                store.save(&identity)?;
                                unreachable_in_a_row = 0;
                                continue;
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
    }
}

/// The master of this node's cluster at a new address, found by mDNS and
/// recognised by its CA pin; `None` if it is not on the LAN or has not moved.
async fn rediscover(config: &AgentConfig, identity: &StoredIdentity) -> Option<String> {
    let ca = cloudos_cluster::pki::cert_from_pem(&identity.joined.ca_pem, "cluster CA").ok()?;
    let pin = cloudos_cluster::CaPin::of_cert(&ca).ok()?;
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

pub fn host_name() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_else(|_| "cloudos".into())
}

fn parse_token(token: Option<&str>) -> Result<Option<Token>, TokenError> {
    token.map(str::parse).transpose()
}

/// `nodeos agent …` on a host: runs in the foreground until evicted or stopped.
pub fn main(args: AgentArgs) -> anyhow::Result<()> {
    crate::logging::init_for_tool(false);
    let config = AgentConfig {
        token: parse_token(args.token.as_deref())?,
        data_dir: args.data_dir,
        master: args.master,
        name: args.name.unwrap_or_else(host_name),
        labels: args.labels.unwrap_or_default(),
        discover_timeout: args.discover_timeout,
        retry: RETRY_BACKOFF,
        metrics_listen: (!args.no_metrics).then_some(args.metrics_listen),
        insecure_registries: args.insecure_registry,
        forget_token_in: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(run(config))? {
        Outcome::Evicted { reason } => {
            log::info!("agent stopped: the node was evicted ({reason})");
            Ok(())
        }
    }
}

/// The `agent` service under PID 1 (`cloudos.role=compute`).
pub fn run_service(settings: &Settings) -> anyhow::Result<()> {
    let config = AgentConfig {
        data_dir: PathBuf::from(DATA_DIR),
        // settings.rs only keeps a token that parses.
        token: parse_token(settings.token.as_ref().map(|t| t.expose()))?,
        master: settings.master.clone(),
        name: settings.hostname.clone().unwrap_or_else(host_name),
        labels: settings.labels.clone(),
        discover_timeout: Duration::from_secs(3),
        retry: RETRY_BACKOFF,
        metrics_listen: metrics::DEFAULT_LISTEN.parse().ok(),
        insecure_registries: settings.insecure_registries.clone(),
        forget_token_in: Some(PathBuf::from(crate::settings::CONFIG_FILE)),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    crate::services::report_ready();
    let stopped = match runtime.block_on(run(config)) {
        Ok(Outcome::Evicted { .. }) => {
            "the node was evicted; give it a new token to join again".to_owned()
        }
        Err(e) if e.needs_a_person() => {
            log::error!("{e}");
            "waiting for a new setting".to_owned()
        }
        Err(e) => return Err(e.into()),
    };
    // Idle rather than exit: the supervisor would restart the agent into the same answer.
    log::warn!("agent stopped: {stopped}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
