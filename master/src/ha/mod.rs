//! A master among several, on etcd (design decisions 16, 68, 69).
//!
//! Each master runs its etcd member ([`member`]) and connects to the etcd cluster. All of
//! them campaign in one election; the one elected (the *leader*) runs the master as a
//! master on its own runs it, over a store whose every commit is fenced by its leadership.
//! The others (*followers*) serve the same port and forward every request to the leader
//! ([`forward`]). A leader whose lease ends stops at once: the process exits with
//! [`MasterError::LostLeadership`] and its supervisor starts it again, as a follower.
//!
//! - [`file`]: the file that makes a master one of several, `<data>/master/ha.json`.
//! - [`grow`]: a master joining the masters.
//! - [`health`]: etcd's members as `status` shows them.
//! - [`masters`]: the list of masters the leader keeps for the agents.
//! - [`member`]: the etcd member as a supervised child process.
//! - [`forward`]: the followers' forwarding, and the leader's reading of forwarded callers.

pub mod file;
pub mod forward;
pub mod grow;
pub mod health;
pub mod masters;
pub mod member;
pub mod shrink;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudos_store::etcd::member::Member;
use cloudos_store::etcd::Leadership;
use cloudos_store::{EtcdConfig, EtcdStore, RedbStore, Store, StoreError};
use tokio::net::TcpListener;

use crate::config::MasterConfig;
use crate::error::MasterError;
use crate::state::MasterState;
use crate::{bootstrap, console, TokenOutput};

use file::{Founding, HaFile};
use forward::{Forwarder, LeaderAddr};
use member::{EtcdProgram, MemberProcess};

/// The election the masters campaign in.
pub const ELECTION: &str = "master";
/// The leader's lease: a leader that stops answering is replaced within about this long
/// (plus etcd's own election when the dead master's member led etcd: etcd then extends
/// every lease by its time to live). One second, with etcd's 500 ms election timeout,
/// keeps a failover under the 3 s the seeds ask (`scripts/bench-ha.sh`); a leader that
/// stalls for a second loses its place, is fenced and comes back as a follower.
/// `ha.json`'s `lease_secs` sets another (emulated machines stall for longer).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(1);
/// How long a starting master waits for its etcd cluster to answer.
const CONNECT_FOR: Duration = Duration::from_secs(120);
/// How often a follower reads who leads.
const LEADER_POLL: Duration = Duration::from_millis(250);

/// How a master takes part in a cluster of several masters.
#[derive(Debug, Clone)]
pub struct HaConfig {
    /// The etcd cluster, and this master's certificate for it.
    pub etcd: EtcdConfig,
    /// This master's own etcd member, when the master runs it (always on the appliance;
    /// `None` when etcd runs apart, as in some tests).
    pub member: Option<(EtcdProgram, Member)>,
    /// `host:port` where the other masters reach this master's API.
    pub advertise: String,
    /// The leader's lease.
    pub lease: Duration,
    /// Whether this master brings the cluster's state into etcd (see [`Founding`]).
    pub founding: Founding,
}

/// The running part of a master on etcd.
pub struct Ha {
    pub store: Arc<EtcdStore>,
    config: HaConfig,
    /// Kept for its `Drop`: ends the etcd member with the master.
    _member: Option<MemberProcess>,
}

/// Starts this master's etcd member and connects to the etcd cluster, waiting up to
/// [`CONNECT_FOR`] for it to answer (a member starting with its peers needs a quorum).
pub async fn open(config: &HaConfig, data_dir: &Path) -> Result<Ha, MasterError> {
    let member = config
        .member
        .clone()
        .map(|(program, member)| member::supervise(program, member));
    let etcd = config.etcd.clone();
    let store = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + CONNECT_FOR;
        loop {
            match EtcdStore::connect(&etcd) {
                Ok(store) => return Ok(store),
                Err(e @ StoreError::Unavailable { .. }) if Instant::now() < deadline => {
                    log::info!("waiting for the etcd cluster: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .map_err(task_failed("connect"))??;
    let store = Arc::new(store);
    let (s, founding, dir) = (Arc::clone(&store), config.founding, data_dir.to_owned());
    tokio::task::spawn_blocking(move || found(&s, founding, &dir))
        .await
        .map_err(task_failed("find the cluster's state"))??;
    Ok(Ha {
        store,
        config: config.clone(),
        _member: member,
    })
}

/// Makes sure etcd holds the cluster's state before the master loads it: moves this
/// master's embedded store there ([`Founding::Migrate`]), or waits for the master that
/// does ([`Founding::Join`]).
fn found(store: &EtcdStore, founding: Founding, data_dir: &Path) -> Result<(), MasterError> {
    match founding {
        Founding::Create => Ok(()),
        Founding::Migrate => {
            let path = data_dir.join("master").join("state.redb");
            if store.cluster_meta()?.is_none() {
                let redb = RedbStore::open(&path)?;
                let snapshot = redb.snapshot()?;
                drop(redb);
                // One transaction: all of the state lands, or none of it.
                store.restore(&snapshot)?;
                let moved = path.with_extension("redb.moved-to-etcd");
                if let Err(e) = std::fs::rename(&path, &moved) {
                    log::warn!(
                        "cannot rename {} after moving it into etcd: {e}",
                        path.display()
                    );
                }
                log::info!(
                    "moved the cluster's state from {} into etcd ({} records); the file is kept as {}",
                    path.display(),
                    snapshot.tables.values().map(Vec::len).sum::<usize>(),
                    moved.display()
                );
            }
            if let Some(mut file) = HaFile::load(data_dir)? {
                file.founding = Founding::Join;
                file.save(data_dir)?;
            }
            Ok(())
        }
        Founding::Join => {
            let mut waited = 0u32;
            while store.cluster_meta()?.is_none() {
                if waited % 10 == 0 {
                    log::info!("etcd holds no cluster yet: waiting for the master that brings it");
                }
                waited += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            Ok(())
        }
    }
}

/// Follows until elected, then leads until `shutdown`, until the leadership is lost, or
/// until an admin removes this master from the masters ([`shrink::watch`]).
pub async fn run(
    ha: Ha,
    follower: Arc<MasterState>,
    listener: Arc<TcpListener>,
    output: TokenOutput,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), MasterError> {
    let removed = match &ha.config.member {
        Some((_, member)) => futures::future::Either::Left(shrink::watch(
            Arc::clone(&ha.store),
            member.peer_url.clone(),
            follower.config.data_dir.clone(),
        )),
        // A master without a member of its own (etcd apart) is not removed this way.
        None => futures::future::Either::Right(std::future::pending()),
    };
    tokio::select! {
        done = serve(ha, follower, listener, output, shutdown) => done,
        e = removed => Err(e),
    }
}

async fn serve(
    ha: Ha,
    follower: Arc<MasterState>,
    listener: Arc<TcpListener>,
    output: TokenOutput,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), MasterError> {
    tokio::pin!(shutdown);
    let me = LeaderAddr {
        name: follower.config.node_name.clone(),
        addr: ha.config.advertise.clone(),
    };

    // Follow: serve the port by forwarding, while campaigning.
    let mut following = tokio::task::JoinSet::new();
    let (leader_tx, leader_rx) = tokio::sync::watch::channel(None);
    following.spawn(watch_leader(Arc::clone(&ha.store), leader_tx));
    let (addr_tx, addr_rx) = tokio::sync::watch::channel(crate::addresses::host_addresses());
    following.spawn(crate::addresses::watch(addr_tx));
    following.spawn(crate::serving::keep_fresh(
        Arc::clone(&follower),
        addr_rx.clone(),
    ));
    // Every master advertises itself, with the same CA pin: an installer or a node on
    // the LAN finds whichever answers.
    if follower.config.mdns {
        following.spawn(crate::advertise::run(Arc::clone(&follower), addr_rx));
    }
    let forwarder = Arc::new(Forwarder::new(leader_rx, &follower.ca, &me.name)?);
    following.spawn(crate::server::accept_loop(
        Arc::clone(&follower),
        Arc::clone(&listener),
        forward::router(forwarder),
    ));
    log::info!(
        "master listening on https://{} as a follower: requests go to the elected leader \
         (cluster {:?}, CA pin {}); campaigning to lead",
        follower.local_addr,
        follower.cluster_name,
        follower.ca.pin()
    );
    let give_up = Arc::new(AtomicBool::new(false));
    let campaign = {
        let (store, give_up, value, lease) = (
            Arc::clone(&ha.store),
            Arc::clone(&give_up),
            me.to_value(),
            ha.config.lease,
        );
        tokio::task::spawn_blocking(move || store.campaign(ELECTION, &value, lease, &give_up))
    };
    let leadership = tokio::select! {
        () = &mut shutdown => {
            give_up.store(true, Ordering::Release);
            following.shutdown().await;
            log::info!("master stopped");
            return Ok(());
        }
        elected = campaign => elected.map_err(task_failed("campaign"))??,
    };
    following.shutdown().await;
    let config = follower.config.clone();
    drop(follower);
    log::info!("master {} is the leader", me.name);
    lead(ha, config, leadership, listener, output, shutdown).await
}

/// The leader's part: the master as it runs on its own, over the fenced store.
async fn lead(
    ha: Ha,
    config: MasterConfig,
    leadership: Leadership,
    listener: Arc<TcpListener>,
    output: TokenOutput,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), MasterError> {
    let store: Arc<dyn Store> = leadership.store();
    let (state, token) = {
        let store = Arc::clone(&store);
        let etcd = Arc::clone(&ha.store);
        let local = listener.local_addr().map_err(|source| MasterError::Bind {
            addr: config.listen,
            source,
        })?;
        tokio::task::spawn_blocking(move || -> Result<_, MasterError> {
            // What a master on its own does at start, done once by the leader.
            crate::quarantine(store.as_ref())?;
            let boot = bootstrap::open_cluster(store.as_ref(), &config.cluster_name)?;
            let token = bootstrap::bootstrap_admin_token(store.as_ref(), &boot.ca)?;
            let mut state = MasterState::new(config, store, boot, local)?;
            state.etcd = Some(etcd);
            Ok((Arc::new(state), token))
        })
        .await
        .map_err(task_failed("load the state"))??
    };
    if let Some(token) = token {
        console::show_bootstrap_token(output, &state, &token);
    }
    let lost = async {
        while !leadership.is_lost() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut lost_it = false;
    let stop = async {
        tokio::select! {
            () = shutdown => {}
            () = lost => lost_it = true,
        }
    };
    crate::lead(state, listener, stop).await?;
    drop(ha);
    if lost_it {
        return Err(MasterError::LostLeadership);
    }
    Ok(())
}

/// A blocking task of the HA start that died (panicked), as the master's error.
fn task_failed(action: &'static str) -> impl FnOnce(tokio::task::JoinError) -> MasterError {
    move |e| {
        MasterError::Store(StoreError::Backend {
            action,
            source: Box::new(e),
        })
    }
}

/// Keeps `tx` on the current leader, as the election says.
async fn watch_leader(store: Arc<EtcdStore>, tx: tokio::sync::watch::Sender<Option<LeaderAddr>>) {
    loop {
        let s = Arc::clone(&store);
        let leader = tokio::task::spawn_blocking(move || s.leader(ELECTION)).await;
        match leader {
            Ok(Ok(value)) => {
                let leader = value.as_deref().and_then(LeaderAddr::from_value);
                tx.send_if_modified(|current| {
                    let changed = *current != leader;
                    if changed {
                        if let Some(l) = &leader {
                            log::info!("the leader is {} at {}", l.name, l.addr);
                        }
                        *current = leader.clone();
                    }
                    changed
                });
            }
            Ok(Err(e)) => log::warn!("cannot read who leads: {e}"),
            Err(_) => return,
        }
        tokio::time::sleep(LEADER_POLL).await;
    }
}
