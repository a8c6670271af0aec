//! Workloads on the master: tasks and services (issue 4). The [`book`] holds the rules;
//! this module carries out what the book decides (store writes, messages on the agents'
//! connections), keeps task logs and `/output` archives on the data partition, and runs
//! the dispatch loop that notices lost nodes and places queued work, and the [`retention`]
//! sweep that deletes old finished work.
//!
//! Every change goes through [`commit`]: the book changes, its store writes go in one
//! transaction, and if the store refuses, the book is put back as it was and the caller
//! gets the error (the API answers 5xx). Memory never holds what the store does not.
//!
//! Files, under `<data>/master/workloads/` (private: logs may hold secrets):
//! `logs/<task>/stdout|stderr` (appended from the agents' log chunks, each byte once thanks
//! to offsets, up to the log cap) and `outputs/<task>.tar`.

pub mod book;
pub mod inputs;
mod platforms;
pub mod retention;
#[cfg(test)]
mod sweep_tests;
pub mod usage;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cloudos_cluster::api::MasterMessage;
use cloudos_cluster::routing::ServiceTable;
use cloudos_cluster::workload::{LogChunk, LogStream, RetentionInfo};
use cloudos_scheduler::{Resources, Scheduler};
use cloudos_store::Store;
use cloudos_store::{NodeState, StoreError, WorkloadWrite};
use time::OffsetDateTime;

use self::book::{Book, Effects, NodeFacts};
use self::retention::Retention;
use super::roster::Roster;
use super::state::MasterState;

/// How often the dispatcher looks at nodes and the queue.
const DISPATCH_PERIOD: Duration = Duration::from_millis(250);
/// How long a NotReady node may have been silent before its replicas count as lost:
/// long enough for an agent to reconnect after its connection closed (a certificate
/// renewal, a master restart), short enough that a replica moves within a second of its
/// node being found silent.
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
    pub retention: Retention,
    /// The service table the nodes were sent last (`cloudos_cluster::routing`).
    routed: Mutex<ServiceTable>,
    /// What running tasks use, from the heartbeats.
    pub usage: usage::UsageBoard,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkloadsError {
    #[error("cannot create {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] cloudos_store::StoreError),
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
        retention: Retention,
        service_range: ipnet::Ipv4Net,
    ) -> Result<Self, WorkloadsError> {
        for path in [dir.clone(), dir.join("logs"), dir.join("outputs")] {
            cloudos_cluster::files::create_private_dir(&path)
                .map_err(|source| WorkloadsError::Dir { path, source })?;
        }
        let policy = cloudos_scheduler::policy_by_name(policy)
            .ok_or_else(|| WorkloadsError::Policy(policy.to_owned()))?;
        let mut book = Book::load(store.list_tasks()?, store.list_services()?)
            .with_volumes(store.list_volumes()?);
        // Services an older master made, or made with another range, get their address.
        let addressed = book.set_service_range(service_range);
        if addressed.writes_store() {
            store.write_workloads(&WorkloadWrite {
                save_services: &addressed.save_services,
                ..WorkloadWrite::default()
            })?;
        }
        let routed = Mutex::new(book.service_table());
        Ok(Workloads {
            book: Mutex::new(book),
            routed,
            scheduler: Scheduler::new(policy),
            dir,
            log_lock: Mutex::new(()),
            platforms: platforms::ImagePlatforms::new(insecure_registries),
            retention,
            usage: usage::UsageBoard::default(),
        })
    }

    pub fn book(&self) -> MutexGuard<'_, Book> {
        // Plain data: a panic elsewhere while holding it leaves nothing half-done that
        // matters more than staying up.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The service table as the nodes have it now: for a node that says hello.
    pub fn routed(&self) -> ServiceTable {
        self.routed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    pub fn log_path(&self, task: &str, stream: LogStream) -> PathBuf {
        self.dir.join("logs").join(task).join(stream.file_name())
    }

    /// The input archive of `digest` (`cloudos run --input`).
    pub fn input_path(&self, digest: &str) -> PathBuf {
        inputs::path(&self.dir, digest)
    }

    /// Keeps an uploaded input archive under its digest.
    pub fn store_input(
        &self,
        tmp: &Path,
        bytes: u64,
    ) -> std::io::Result<cloudos_cluster::workload::InputInfo> {
        inputs::store(&self.dir, tmp, bytes)
    }

    /// Where an input upload is received before it is kept.
    pub fn input_upload_path(&self, tag: &str) -> PathBuf {
        inputs::dir(&self.dir).join(format!("upload.{tag}.tmp"))
    }

    pub fn output_path(&self, task: &str) -> PathBuf {
        self.dir.join("outputs").join(format!("{task}.tar"))
    }

    pub fn log_size(&self, task: &str, stream: LogStream) -> u64 {
        std::fs::metadata(self.log_path(task, stream))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Appends the part of `chunk` the file does not have yet, up to the task's log cap
    /// (stdout and stderr together): the head of a log is kept, and where the cap is
    /// reached a [`truncation_marker`] line ends it. The head, not the tail: it holds how
    /// the task started and its first error, a flood cannot push it out, and the files stay
    /// append-only (the agents' offsets stay valid).
    pub fn append_log(&self, task: &str, chunk: &LogChunk) -> std::io::Result<()> {
        let _guard = self.log_lock.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.log_path(task, chunk.stream);
        if let Some(parent) = path.parent() {
            cloudos_cluster::files::create_private_dir(parent)?;
        }
        let have = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let data = chunk.data.as_str();
        let end = chunk.offset + data.len() as u64;
        if end <= have {
            return Ok(());
        }
        let cap = self.retention.log_cap;
        let total = self.log_size(task, LogStream::Stdout) + self.log_size(task, LogStream::Stderr);
        if total > cap {
            // Capped already: only the marker ever takes a log past the cap.
            return Ok(());
        }
        // Bytes before `have` arrived already; a gap (offset beyond `have`) means the node
        // rotated them away while disconnected, and is appended as it is.
        let skip = usize::try_from(have.saturating_sub(chunk.offset)).unwrap_or(usize::MAX);
        let new = data.get(skip..).unwrap_or_default();
        let room = usize::try_from(cap - total).unwrap_or(usize::MAX);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        if new.len() <= room {
            return file.write_all(new.as_bytes());
        }
        let mut cut = room;
        while !new.is_char_boundary(cut) {
            cut -= 1;
        }
        file.write_all(&new.as_bytes()[..cut])?;
        file.write_all(truncation_marker(cap).as_bytes())?;
        log::warn!("the log of task {task} reached its cap of {cap} bytes; the rest is dropped");
        Ok(())
    }

    /// Bytes of a task's log and output on disk.
    pub fn file_bytes(&self, task: &str) -> u64 {
        let output = std::fs::metadata(self.output_path(task))
            .map(|m| m.len())
            .unwrap_or(0);
        self.log_size(task, LogStream::Stdout) + self.log_size(task, LogStream::Stderr) + output
    }

    /// Removes the logs and output of tasks that were deleted.
    fn forget_files(&self, task: &str) {
        let _ = std::fs::remove_dir_all(self.dir.join("logs").join(task));
        let _ = std::fs::remove_file(self.output_path(task));
    }

    /// Removes files under `logs/` and `outputs/` of tasks the book does not know: left by
    /// a task deleted while its last chunks were on their way, or by a failed change.
    fn remove_orphans(&self, known: &dyn Fn(&str) -> bool) {
        let names = |sub: &str| -> Vec<String> {
            std::fs::read_dir(self.dir.join(sub))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        };
        for task in names("logs") {
            if !known(&task) {
                let _ = std::fs::remove_dir_all(self.dir.join("logs").join(&task));
            }
        }
        for name in names("outputs") {
            let task = name.strip_suffix(".tar").unwrap_or(&name);
            if !known(task) {
                let _ = std::fs::remove_file(self.dir.join("outputs").join(&name));
            }
        }
    }

    /// What `cloudos ps -a` shows about what is kept.
    pub fn retention_info(&self, book: &Book) -> RetentionInfo {
        let r = &self.retention;
        RetentionInfo {
            keep_finished_secs: r.keep_finished.as_secs(),
            max_finished: u64::try_from(r.max_finished).unwrap_or(u64::MAX),
            files_budget_bytes: r.files_budget,
            files_bytes: book.tasks().map(|t| self.file_bytes(&t.id)).sum(),
            log_cap_bytes: r.log_cap,
        }
    }
}

/// The line that ends a log the master stopped keeping.
pub fn truncation_marker(cap: u64) -> String {
    format!(
        "\n[cloudos: this task's log reached the master's limit of {}; later output was dropped]\n",
        cloudos_cluster::units::format_bytes(cap)
    )
}

/// Writes `effects`' store changes in one transaction.
fn save(state: &MasterState, effects: &Effects) -> Result<(), StoreError> {
    if !effects.writes_store() {
        return Ok(());
    }
    state.store.write_workloads(&WorkloadWrite {
        save_tasks: &effects.save_tasks,
        delete_tasks: &effects.delete_tasks,
        save_services: &effects.save_services,
        delete_services: &effects.delete_services,
        save_volumes: &effects.save_volumes,
        delete_volumes: &effects.delete_volumes,
    })
}

/// Makes one change to the book and records it: `change` runs on the book, its store
/// writes are committed in one transaction, and only then do files go and messages leave.
/// If `change` or the store fails, the book is put back as it was and the error returned,
/// so memory never runs ahead of the store (a restart would forget what agents were told).
/// Blocking (store writes): call off the async workers.
pub fn commit<T, E>(
    state: &MasterState,
    change: impl FnOnce(&mut Book) -> Result<(T, Effects), E>,
) -> Result<T, E>
where
    E: From<StoreError>,
{
    let (value, effects) = {
        let mut book = state.workloads.book();
        let before = book.clone();
        let outcome = change(&mut book).and_then(|(value, effects)| {
            save(state, &effects)?;
            Ok((value, effects))
        });
        let done = match outcome {
            Ok(done) => done,
            Err(e) => {
                *book = before;
                return Err(e);
            }
        };
        // Under the book's lock, so tables leave in the order of the changes; a change
        // with nothing to record (most dispatch passes) changes no table.
        if done.1.writes_store() {
            route_services(state, book.service_table());
        }
        done
    };
    for id in &effects.delete_tasks {
        state.workloads.forget_files(id);
    }
    // After the table: a replica that is stopped has left every node's rotation first.
    send_all(&state.roster, with_secrets(state, effects.messages));
    Ok(value)
}

/// [`commit`] for changes nobody waits on (the dispatch loop, a node's reports). A store
/// that does not answer (etcd electing its leader, a member cut off: several masters) is
/// asked again a few times over about two seconds: a node says an exit once, and nothing
/// else would record it while this master leads. A failure after that is logged and the
/// book stays as it was, to be tried again (the next pass, the node's next hello).
fn commit_logged(state: &MasterState, what: &str, change: impl Fn(&mut Book) -> Effects) {
    let result = asking_again(|| commit(state, |book| Ok(((), change(book)))));
    if let Err(e) = result {
        log::error!("cannot record {what}, left undone: {e}");
    }
}

/// `attempt` until it does not fail for a store that does not answer, at most
/// [`COMMIT_ATTEMPTS`] times.
fn asking_again<T>(attempt: impl Fn() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let mut pause = std::time::Duration::from_millis(250);
    let mut left = COMMIT_ATTEMPTS;
    loop {
        left -= 1;
        match attempt() {
            Err(StoreError::Unavailable { .. }) if left > 0 => {
                std::thread::sleep(pause);
                pause *= 2;
            }
            done => return done,
        }
    }
}

/// How many times [`commit_logged`] asks a store that does not answer.
const COMMIT_ATTEMPTS: u32 = 4;

/// One retention sweep: deletes the finished tasks [`retention::doomed`] picks (records in
/// one transaction, then their files) and files no task owns. Returns the deleted ids.
pub fn sweep(state: &MasterState, now: OffsetDateTime) -> Result<Vec<String>, StoreError> {
    let workloads = &state.workloads;
    let doomed = commit(state, |book| {
        let sizes: HashMap<String, u64> = book
            .tasks()
            .map(|t| (t.id.clone(), workloads.file_bytes(&t.id)))
            .collect();
        let files = |id: &str| sizes.get(id).copied().unwrap_or(0);
        let total = sizes.values().sum();
        let doomed = retention::doomed(book.tasks(), &files, total, &workloads.retention, now);
        let effects = book.forget_finished(&doomed);
        Ok::<_, StoreError>((doomed, effects))
    })?;
    let book = workloads.book();
    workloads.remove_orphans(&|task| book.task(task).is_some());
    let named = |digest: &str| {
        book.tasks()
            .any(|t| t.spec.input.as_deref() == Some(digest))
    };
    let gone = inputs::remove_unnamed(&workloads.dir, &named, std::time::SystemTime::now());
    if gone > 0 {
        log::info!("retention: deleted {gone} input archives no task names");
    }
    Ok(doomed)
}

/// The retention sweep, every [`Retention::sweep_every`].
pub async fn sweep_loop(state: Arc<MasterState>) {
    let mut tick = tokio::time::interval(state.workloads.retention.sweep_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let s = Arc::clone(&state);
        match tokio::task::spawn_blocking(move || sweep(&s, OffsetDateTime::now_utc())).await {
            Ok(Ok(gone)) if !gone.is_empty() => {
                log::info!("retention: deleted {} finished tasks", gone.len());
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => log::error!("retention sweep failed: {e}"),
            Err(e) => log::error!("retention sweep failed: {e}"),
        }
    }
}

/// Sends every connected node `table` when it is not what they were sent last. A node
/// that is not connected gets the table with its next welcome.
fn route_services(state: &MasterState, table: ServiceTable) {
    let mut routed = state
        .workloads
        .routed
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if *routed == table {
        return;
    }
    for node in state.roster.connected() {
        state
            .roster
            .send(&node, MasterMessage::Services(table.clone()));
    }
    *routed = table;
}

/// Assignments with the values of the secrets their spec names, and the cluster's
/// credentials for their image's registry, opened now: the book and the store never hold
/// them in the clear. A secret that cannot be read is left out (its
/// name only is logged), and the node fails the run saying which.
fn with_secrets(
    state: &MasterState,
    mut messages: Vec<(String, MasterMessage)>,
) -> Vec<(String, MasterMessage)> {
    for (node, message) in &mut messages {
        let MasterMessage::Assign(a) = message else {
            continue;
        };
        let registry = cloudos_cluster::registry::registry_of(&a.spec.image);
        a.registry_auth = crate::registries::credentials_for(state, registry);
        let names: Vec<String> = a
            .spec
            .secret_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        for name in names {
            let opened = state
                .store
                .get_secret(&name)
                .map_err(|e| e.to_string())
                .and_then(|r| r.ok_or_else(|| "it no longer exists".to_owned()))
                .and_then(|r| state.sealer.open(&r).map_err(|e| e.to_string()));
            match opened {
                Ok(value) => a
                    .secrets
                    .push(cloudos_cluster::secret::RunSecret { name, value }),
                Err(why) => {
                    log::error!("run {} on {node} goes without secret {name}: {why}", a.run)
                }
            }
        }
    }
    messages
}

fn send_all(roster: &Roster, messages: Vec<(String, MasterMessage)>) {
    for (node, message) in messages {
        if !roster.send(&node, message) {
            log::debug!("node {node} is not connected; its next hello catches it up");
        }
    }
}

/// The nodes workloads can go to, as the scheduler needs them.
fn node_facts(roster: &Roster) -> Vec<NodeFacts> {
    let mut facts = Vec::new();
    roster.each(|n, telemetry| {
        if n.role.is_user() {
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
            cordoned: n.unschedulable,
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
    loop {
        tick.tick().await;
        let nodes = node_facts(&state.roster);
        // How long each NotReady node has been silent (`None`: ready), owned so the pass
        // can run off the async workers. The grace runs from its last sign of life, not
        // from when it was judged NotReady: a node silent for `not_ready_after` already
        // had that time to come back.
        let silences = state.roster.silences(Instant::now());
        let not_ready_for: HashMap<String, Option<Duration>> = nodes
            .iter()
            .map(|n| {
                let silent = silences.get(&n.name).copied().unwrap_or_default();
                (n.name.clone(), (!n.ready).then_some(silent))
            })
            .collect();
        let alive = move |name: &str, replica: bool| -> bool {
            let grace = if replica {
                REPLICA_LOST_AFTER
            } else {
                TASK_LOST_AFTER
            };
            match not_ready_for.get(name) {
                Some(None) => true,
                Some(Some(down)) => *down < grace,
                None => false,
            }
        };
        let s = Arc::clone(&state);
        let pass = move || {
            commit_logged(&s, "a dispatch pass", |book| {
                let wall = OffsetDateTime::now_utc();
                let mut effects = book.nodes_lost(&alive, wall);
                effects.merge(book.deadlines(wall));
                effects.merge(book.reconcile_services(wall));
                effects.merge(book.schedule(s.workloads.scheduler(), &nodes, wall));
                for (node, message) in &effects.messages {
                    if let MasterMessage::Assign(a) = message {
                        log::info!("run {} assigned to {node} ({})", a.run, a.spec.image);
                    }
                }
                effects
            })
        };
        if let Err(e) = tokio::task::spawn_blocking(pass).await {
            log::error!("applying workload changes failed: {e}");
        }
    }
}

/// A new connection's hello: reconcile runs, tell the node which log bytes the master has.
pub fn on_hello(state: &MasterState, node: &str, runs: &[cloudos_cluster::workload::RunReport]) {
    let now = OffsetDateTime::now_utc();
    let result: Result<_, StoreError> = asking_again(|| {
        commit(state, |book| {
            let effects = book.hello(node, runs, now);
            Ok((book.active_runs_on(node), effects))
        })
    });
    let active = match result {
        Ok(active) => active,
        Err(e) => {
            log::error!("cannot record the hello of {node}, left undone: {e}");
            return;
        }
    };
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
    send_all(&state.roster, offsets);
}

/// The runs a node's heartbeat lists: those the master has moved on from are stopped.
pub fn on_heartbeat_runs(state: &MasterState, node: &str, runs: &[String]) {
    if runs.is_empty() {
        return;
    }
    let stale = state.workloads.book().stale_runs(node, runs);
    for run in stale {
        log::info!("{node} still runs {run}, which the master moved on from: stopping it");
        state.roster.send(node, MasterMessage::Stop { run });
    }
}

/// A run report from a node.
pub fn on_report(state: &MasterState, node: &str, report: &cloudos_cluster::workload::RunReport) {
    let what = format!("the report of {node} on {}", report.run);
    commit_logged(state, &what, |book| {
        book.report(node, report, OffsetDateTime::now_utc())
    });
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

/// Makes the uploaded archive `tmp` (`bytes` long) the `/output` of `run`'s task,
/// atomically, and records its size in the store.
pub fn store_output(
    state: &MasterState,
    run: &str,
    tmp: &Path,
    bytes: u64,
) -> Result<u64, OutputError> {
    std::fs::File::open(tmp)?.sync_all()?;
    std::fs::rename(tmp, state.workloads.output_path(book::task_of_run(run)))?;
    commit(state, |book| {
        Ok::<_, OutputError>((bytes, book.output_stored(run, bytes)))
    })
}

/// Why an uploaded output was not kept.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write the output: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}
