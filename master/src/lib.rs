//! The master role: the cluster's CA and join tokens, the node roster fed by
//! the agents' connections, and the HTTPS API (TLS 1.3, mTLS) the agents and
//! the `cloudos` CLI talk to. It never dials a node. State lives in the
//! cluster store under the data directory.
//!
//! Modules, one job each:
//! - [`config`]: what a master is told, and the defaults (`nodeos` maps flags and boot
//!   settings onto it).
//! - `bootstrap`: opening the store, creating or loading the cluster, the first admin token.
//! - `console`: showing that token on the console only (never through the log).
//! - `state`: what the request handlers share.
//! - `roster`: the nodes and their live state (last heartbeat, connection) in memory.
//! - `credentials`: which certificate serial is current for each node and admin; revoking.
//! - `health`: Ready/NotReady transitions and periodic persistence of live state.
//! - `server`, `tls_accept`: TCP accept, TLS handshake, the caller's identity, hyper, and
//!   the timeouts that keep idle and slow clients from holding connections.
//! - [`connlimit`]: connection slots per source address and in all.
//! - `routes`: the HTTP API; `error` maps every failure to an `ErrorBody`.
//! - `ratelimit`: failed joins per source address.
//! - [`workloads`]: tasks and services: their book, dispatch loop, logs and outputs.
//! - [`downloads`]: the binaries and digests `install.sh` fetches (served by `routes`).
//! - `addresses`, `serving`, `advertise`: the host's addresses (IPv4, global and
//!   unique-local IPv6), the serving certificate that names them, the mDNS advertisement
//!   that follows them.
//! - `listen`: the API's socket, dual-stack on `[::]`.
//! - `releases`: the signed update bundles kept for the nodes (`cloudos release`).
//! - [`backup`]: encrypted backups of the state (on demand and scheduled) and restoring them.
//! - `nodeops`: cordon, drain and reboot of a node, for the API and the rolling upgrade.
//! - [`rollout`]: rolling upgrades of the cluster (`cloudos upgrade`), the master last.
//! - `ids`: random ids of the requests the master sends nodes.
//! - [`ha`]: a master among several on etcd: its etcd member, the election, and the
//!   followers' forwarding to the leader.

mod addresses;
mod advertise;
mod audit;
pub mod backup;
mod bootstrap;
pub mod config;
pub mod connlimit;
mod console;
mod credentials;
mod dashboard;
pub mod downloads;
mod error;
pub mod ha;
mod health;
pub mod history;
mod ids;
mod listen;
mod mesh;
mod metrics;
mod nodeops;
mod passwords;
mod ratelimit;
mod registries;
pub mod releases;
pub mod rollout;
mod roster;
mod routes;
mod secrets;
mod server;
mod serving;
mod since;
mod state;
#[cfg(feature = "testing")]
pub mod testing;
mod tls_accept;
pub mod workloads;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use cloudos_cluster::{CaPin, Token};
use cloudos_store::{RedbStore, Store};
use tokio::net::TcpListener;

pub use bootstrap::own_node_token_file;
pub use config::MasterConfig;
pub use console::{token_file, TokenOutput};
pub use error::MasterError;

/// A master whose state is open and whose port is bound, ready to [`Master::run`].
pub struct Master {
    state: Arc<state::MasterState>,
    listener: TcpListener,
    bootstrap_token: Option<Token>,
    /// Set when this master is one of several, on etcd.
    ha: Option<ha::Ha>,
    /// Where a leader elected later shows the first admin's token.
    token_output: TokenOutput,
}

impl Master {
    /// Opens (or creates) the cluster under `config.data_dir` and binds `config.listen`.
    /// `<data>/master` holds the CA's key (in the store): it is made private (0700, the
    /// store 0600), also when an older install left it readable.
    pub async fn open(config: MasterConfig) -> Result<Master, MasterError> {
        let dir = config.data_dir.join("master");
        cloudos_cluster::files::create_private_dir(&dir).map_err(|source| {
            MasterError::DataDir {
                path: dir.clone(),
                source,
            }
        })?;
        if let Some(schedule) = &config.backups {
            schedule.check()?;
        }
        let (store, ha): (Arc<dyn Store>, _) = match &config.ha {
            None => (Arc::new(RedbStore::open(dir.join("state.redb"))?), None),
            Some(ha) => {
                let ha = ha::open(ha, &config.data_dir).await?;
                (Arc::clone(&ha.store) as Arc<dyn Store>, Some(ha))
            }
        };
        if ha.is_none() {
            // With several masters, the leader does this once it is elected.
            quarantine(store.as_ref())?;
        }
        let listener = listen::bind(config.listen)
            .await
            .map_err(|source| MasterError::Bind {
                addr: config.listen,
                source,
            })?;
        let local = listener.local_addr().map_err(|source| MasterError::Bind {
            addr: config.listen,
            source,
        })?;
        let boot = bootstrap::open_cluster(store.as_ref(), &config.cluster_name)?;
        let bootstrap_token = match ha {
            None => bootstrap::bootstrap_admin_token(store.as_ref(), &boot.ca)?,
            // The leader makes it once it is elected, and shows it on its console.
            Some(_) => None,
        };
        if let Some(path) = &config.own_node_token {
            bootstrap::own_node_token(store.as_ref(), &boot.ca, path)?;
        }
        let state = state::MasterState::new(config, store, boot, local)?;
        Ok(Master {
            state: Arc::new(state),
            listener,
            bootstrap_token,
            ha,
            token_output: TokenOutput::File,
        })
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.state.local_addr
    }

    pub fn ca_pin(&self) -> CaPin {
        self.state.ca.pin()
    }

    /// The cluster CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        self.state.ca.cert_pem()
    }

    /// The first admin's token, made on this start because no admin has joined yet. Only
    /// [`console::show_bootstrap_token`] (or a test) may see it.
    pub fn take_bootstrap_token(&mut self) -> Option<Token> {
        self.bootstrap_token.take()
    }

    /// Serves until `shutdown` completes, then stops every task it started. With several
    /// masters, follows (forwarding) until elected, then leads (see [`ha`]).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), MasterError> {
        let Master {
            state,
            listener,
            ha,
            token_output,
            ..
        } = self;
        let listener = Arc::new(listener);
        match ha {
            None => lead(state, listener, shutdown).await,
            Some(ha) => ha::run(ha, state, listener, token_output, shutdown).await,
        }
    }
}

/// Moves what does not decode into the quarantine table, saying so in the log.
fn quarantine(store: &dyn Store) -> Result<(), MasterError> {
    for q in store.quarantine_unreadable(time::OffsetDateTime::now_utc())? {
        log::warn!(
            "stored {} record `{}` is unreadable ({}); moved it to the quarantine table \
             and carried on without it",
            q.table,
            q.key,
            q.error
        );
    }
    Ok(())
}

/// The master's work, on `listener`, until `shutdown`: all of it on a master of its own,
/// the leader's on a master among several.
pub(crate) async fn lead(
    state: Arc<state::MasterState>,
    listener: Arc<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), MasterError> {
    log::info!(
        "master listening on https://{} (cluster {:?}, CA pin {})",
        state.local_addr,
        state.cluster_name,
        state.ca.pin()
    );
    let mut tasks = tokio::task::JoinSet::new();
    let (addr_tx, addr_rx) = tokio::sync::watch::channel(addresses::host_addresses());
    tasks.spawn(addresses::watch(addr_tx));
    tasks.spawn(serving::keep_fresh(Arc::clone(&state), addr_rx.clone()));
    if state.config.mdns {
        tasks.spawn(advertise::run(Arc::clone(&state), addr_rx));
    }
    tasks.spawn(health::run(Arc::clone(&state)));
    tasks.spawn(history::run(Arc::clone(&state)));
    let s = Arc::clone(&state);
    tasks.spawn(async move {
        s.mesh
            .run(|| mesh::announce(&s.roster, &s.config.node_name))
            .await
    });
    tasks.spawn(workloads::run(Arc::clone(&state)));
    tasks.spawn(workloads::sweep_loop(Arc::clone(&state)));
    tasks.spawn(ha::masters::keep(Arc::clone(&state)));
    tasks.spawn(server::accept_loop(
        Arc::clone(&state),
        listener,
        routes::router(Arc::clone(&state)),
    ));
    if let Some(schedule) = state.config.backups.clone() {
        tasks.spawn(backup::schedule::run(Arc::clone(&state), schedule));
    }
    if let Err(e) = rollout::load(&state) {
        log::error!("cannot read the last rollout: {e}; `cloudos upgrade status` shows none");
    }
    shutdown.await;
    tasks.shutdown().await;
    health::save(&state, roster::Unsaved::All).await;
    log::info!("master stopped");
    Ok(())
}

/// The master as a systemd service (cloud install): the admin token goes to a root-only
/// file, and `ready` (sd_notify) is called once the API listens.
pub fn run_host_service(config: MasterConfig, ready: impl FnOnce()) -> Result<(), MasterError> {
    serve(config, TokenOutput::File, ready)
}

/// Runs a master until it is stopped (SIGTERM, SIGINT): opens its state, shows the first
/// admin token where `output` says, calls `ready` once the API listens (unless the token
/// goes to a person's terminal), and serves.
pub fn serve(
    config: MasterConfig,
    output: TokenOutput,
    ready: impl FnOnce(),
) -> Result<(), MasterError> {
    // Everything the master writes (store, logs, outputs, the admin token file) is its
    // own: nothing it creates is for other users, whatever umask it was started with.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("master")
        .build()
        .map_err(MasterError::Runtime)?;
    let served = runtime.block_on(async move {
        let mut master = Master::open(config).await?;
        master.token_output = output;
        match master.take_bootstrap_token() {
            Some(token) => console::show_bootstrap_token(output, &master.state, &token),
            // A token shown at an earlier start is used up once an admin exists.
            None if output == TokenOutput::File => {
                let _ = std::fs::remove_file(console::token_file(&master.state.config.data_dir));
            }
            None => {}
        }
        if output != TokenOutput::Stdout {
            // The supervisor (or systemd) waits for this; a person at a terminal need not.
            ready();
        }
        master.run(stop_signal()).await?;
        Ok(())
    });
    // A blocking task that does not end by itself (a campaign still waiting to lead when
    // the master was removed) must not keep the process: what is left gets two seconds.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    served
}

/// SIGTERM (the supervisor or systemd stopping us) or Ctrl-C.
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            log::warn!("cannot watch SIGTERM ({e}); stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
