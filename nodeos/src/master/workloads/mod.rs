//! Workloads on the master: tasks and services (issue 4). The [`book`] holds the rules;
//! this module carries out what the book decides (store writes, messages on the agents'
//! connections), keeps task logs and `/output` archives on the data partition, and runs
//! the dispatch loop that notices lost nodes and places queued work.
//!
//! Files, under `<data>/master/workloads/`: `logs/<task>/stdout|stderr` (appended from the
//! agents' log chunks, each byte once thanks to offsets) and `outputs/<task>.tar`.

pub mod book;
mod platforms;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cloudos_cluster::api::MasterMessage;
use cloudos_cluster::store::NodeState;
use cloudos_cluster::workload::{LogChunk, LogStream};
use cloudos_cluster::{Role, Store};
use cloudos_scheduler::{Resources, Scheduler};
use time::OffsetDateTime;

use self::book::{Book, Effects, NodeFacts};
use super::registry::Registry;
use super::state::MasterState;

/// How often the dispatcher looks at nodes and the queue.
const DISPATCH_PERIOD: Duration = Duration::from_millis(250);
/// How long a node may be NotReady before its replicas count as lost: long enough for an
/// agent to reconnect after renewing its certificate, short enough that a replica moves
/// within a couple of seconds of its node dying.
const REPLICA_LOST_AFTER: Duration = Duration::from_secs(1);
/// The same for tasks, longer: a task moved is a task run twice, so a node that is only
/// slow to answer (a busy machine, a flaky link) gets more time to come back.
const TASK_LOST_AFTER: Duration = Duration::from_secs(10);

pub struct Workloads {
    book: Mutex<Book>,
    scheduler: Scheduler,
    dir: PathBuf,
    /// Serialises appends to log files (chunks of one run arrive on one connection, but a
    /// reconnect may overlap the old one).
    log_lock: Mutex<()>,
    /// The architectures of images, for placement.
    pub platforms: platforms::ImagePlatforms,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkloadsError {
    #[error("cannot create {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] cloudos_cluster::store::StoreError),
    #[error("unknown scheduler policy {0:?}: use spread or binpack")]
    Policy(String),
}

impl Workloads {
    /// The book as stored, with files under `dir`.
    pub fn open(
        store: &dyn Store,
        dir: PathBuf,
        policy: &str,
        insecure_registries: &[String],
    ) -> Result<Self, WorkloadsError> {
        for sub in ["logs", "outputs"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path)
                .map_err(|source| WorkloadsError::Dir { path, source })?;
        }
        let policy = cloudos_scheduler::policy_by_name(policy)
            .ok_or_else(|| WorkloadsError::Policy(policy.to_owned()))?;
        let book = Book::load(store.list_tasks()?, store.list_services()?);
        Ok(Workloads {
            book: Mutex::new(book),
            scheduler: Scheduler::new(policy),
            dir,
            log_lock: Mutex::new(()),
            platforms: platforms::ImagePlatforms::new(insecure_registries),
        })
    }

    pub fn book(&self) -> MutexGuard<'_, Book> {
        // Plain data: a panic elsewhere while holding it leaves nothing half-done that
        // matters more than staying up.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    pub fn log_path(&self, task: &str, stream: LogStream) -> PathBuf {
        self.dir.join("logs").join(task).join(stream.file_name())
    }

    pub fn output_path(&self, task: &str) -> PathBuf {
        self.dir.join("outputs").join(format!("{task}.tar"))
    }

    pub fn log_size(&self, task: &str, stream: LogStream) -> u64 {
        std::fs::metadata(self.log_path(task, stream))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Appends the part of `chunk` the file does not have yet.
    pub fn append_log(&self, task: &str, chunk: &LogChunk) -> std::io::Result<()> {
        let _guard = self.log_lock.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.log_path(task, chunk.stream);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let have = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let data = chunk.data.as_bytes();
        let end = chunk.offset + data.len() as u64;
        if end <= have {
            return Ok(());
        }
        // Bytes before `have` arrived already; a gap (offset beyond `have`) means the node
        // rotated them away while disconnected, and is appended as it is.
        let skip = have.saturating_sub(chunk.offset) as usize;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        file.write_all(data.get(skip..).unwrap_or_default())
    }

    /// Removes the logs and output of tasks that were deleted.
    fn forget_files(&self, task: &str) {
        let _ = std::fs::remove_dir_all(self.dir.join("logs").join(task));
        let _ = std::fs::remove_file(self.output_path(task));
    }
}

/// Carries out `effects`: store first (so a master restart never forgets what agents were
/// told), then the messages. Blocking (store writes): call off the async workers.
pub fn apply(state: &MasterState, effects: Effects) {
    let store = state.store.as_ref();
    for task in &effects.save_tasks {
        if let Err(e) = store.put_task(task) {
            log::error!("cannot save task {}: {e}", task.id);
        }
    }
    for id in &effects.delete_tasks {
        if let Err(e) = store.delete_task(id) {
            log::error!("cannot delete task {id}: {e}");
        }
        state.workloads.forget_files(id);
    }
    for service in &effects.save_services {
        if let Err(e) = store.put_service(service) {
            log::error!("cannot save service {}: {e}", service.name);
        }
    }
    for name in &effects.delete_services {
        if let Err(e) = store.delete_service(name) {
            log::error!("cannot delete service {name}: {e}");
        }
    }
    send_all(&state.registry, effects.messages);
}

fn send_all(registry: &Registry, messages: Vec<(String, MasterMessage)>) {
    for (node, message) in messages {
        if !registry.send(&node, message) {
            log::debug!("node {node} is not connected; its next hello catches it up");
        }
    }
}

/// The nodes workloads can go to, as the scheduler needs them.
fn node_facts(registry: &Registry) -> Vec<NodeFacts> {
    let mut facts = Vec::new();
    registry.each(|n, telemetry| {
        if n.role == Role::Admin {
            return;
        }
        let capacity = telemetry
            .map(|t| Resources {
                cpu_millis: t.capacity.cpu_millicores,
                memory_bytes: t.capacity.memory_bytes,
            })
            .unwrap_or_default();
        facts.push(NodeFacts {
            ready: n.state == NodeState::Ready,
            name: n.name.clone(),
            arch: n.arch.clone(),
            labels: n.labels.clone(),
            capacity,
        });
    });
    facts.sort_by(|a, b| a.name.cmp(&b.name));
    facts
}

/// The dispatch loop: lost runs, service replicas, the queue.
pub async fn run(state: Arc<MasterState>) {
    let mut tick = tokio::time::interval(DISPATCH_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut not_ready_since: HashMap<String, Instant> = HashMap::new();
    loop {
        tick.tick().await;
        let nodes = node_facts(&state.registry);
        let now = Instant::now();
        not_ready_since.retain(|name, _| nodes.iter().any(|n| &n.name == name && !n.ready));
        for n in nodes.iter().filter(|n| !n.ready) {
            not_ready_since.entry(n.name.clone()).or_insert(now);
        }
        let alive = |name: &str, replica: bool| -> bool {
            let grace = if replica {
                REPLICA_LOST_AFTER
            } else {
                TASK_LOST_AFTER
            };
            match nodes.iter().find(|n| n.name == name) {
                Some(n) if n.ready => true,
                Some(_) => not_ready_since
                    .get(name)
                    .is_some_and(|since| now.duration_since(*since) < grace),
                None => false,
            }
        };
        let effects = {
            let wall = OffsetDateTime::now_utc();
            let mut book = state.workloads.book();
            let mut effects = book.nodes_lost(&alive, wall);
            effects.merge(book.reconcile_services(wall));
            effects.merge(book.schedule(state.workloads.scheduler(), &nodes, wall));
            effects
        };
        if effects.is_empty() {
            continue;
        }
        for (node, message) in &effects.messages {
            if let MasterMessage::Assign(a) = message {
                log::info!("run {} assigned to {node} ({})", a.run, a.spec.image);
            }
        }
        let s = Arc::clone(&state);
        if let Err(e) = tokio::task::spawn_blocking(move || apply(&s, effects)).await {
            log::error!("applying workload changes failed: {e}");
        }
    }
}

/// A new connection's hello: reconcile runs, tell the node which log bytes the master has.
pub fn on_hello(state: &MasterState, node: &str, runs: &[cloudos_cluster::workload::RunReport]) {
    let now = OffsetDateTime::now_utc();
    let (effects, active) = {
        let mut book = state.workloads.book();
        (book.hello(node, runs, now), book.active_runs_on(node))
    };
    apply(state, effects);
    let offsets = active
        .into_iter()
        .map(|(task, run)| {
            let message = MasterMessage::LogOffsets {
                stdout: state.workloads.log_size(&task, LogStream::Stdout),
                stderr: state.workloads.log_size(&task, LogStream::Stderr),
                run,
            };
            (node.to_owned(), message)
        })
        .collect();
    send_all(&state.registry, offsets);
}

/// The runs a node's heartbeat lists: those the master has moved on from are stopped.
pub fn on_heartbeat_runs(state: &MasterState, node: &str, runs: &[String]) {
    if runs.is_empty() {
        return;
    }
    let stale = state.workloads.book().stale_runs(node, runs);
    for run in stale {
        log::info!("{node} still runs {run}, which the master moved on from: stopping it");
        state.registry.send(node, MasterMessage::Stop { run });
    }
}

/// A run report from a node.
pub fn on_report(state: &MasterState, node: &str, report: &cloudos_cluster::workload::RunReport) {
    let effects = state
        .workloads
        .book()
        .report(node, report, OffsetDateTime::now_utc());
    apply(state, effects);
}

/// Log bytes from a node: kept only for the run the master assigned to it.
pub fn on_log(state: &MasterState, node: &str, chunk: &LogChunk) {
    if !state.workloads.book().is_current_run(node, &chunk.run) {
        return;
    }
    let task = book::task_of_run(&chunk.run);
    if let Err(e) = state.workloads.append_log(task, chunk) {
        log::warn!("cannot keep the log of {}: {e}", chunk.run);
    }
}

/// Where an upload of `run`'s `/output` is written before [`store_output`] takes it; unique
/// per upload (`tag`), so two uploads of one run never write into one file.
pub fn output_upload_path(state: &MasterState, run: &str, tag: &str) -> PathBuf {
    let path = state.workloads.output_path(book::task_of_run(run));
    path.with_extension(format!("tar.{tag}.tmp"))
}

/// Makes the uploaded archive `tmp` (`bytes` long) the `/output` of `run`'s task, atomically.
pub fn store_output(
    state: &MasterState,
    run: &str,
    tmp: &Path,
    bytes: u64,
) -> std::io::Result<u64> {
    std::fs::File::open(tmp)?.sync_all()?;
    std::fs::rename(tmp, state.workloads.output_path(book::task_of_run(run)))?;
    let effects = state.workloads.book().output_stored(run, bytes);
    apply(state, effects);
    Ok(bytes)
}
