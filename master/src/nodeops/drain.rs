//! Drain: cordon a node, move every service replica off it (the replacement running
//! elsewhere before the replica on the node stops), let its tasks finish up to a timeout
//! and then stop them as lost runs, and return once the node runs nothing, as the master's
//! book and the node's own heartbeats both say. The book's side of a move is
//! `workloads::book::drain`; this module drives it, one pass per dispatch period, and
//! reports progress. The rolling upgrade calls [`drain`] as the API handler does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudos_cluster::nodeops::{DrainPhase, DrainStatus, DrainTask, ReplicaMove};
use cloudos_store::StoreError;
use time::OffsetDateTime;

use super::NodeOpError;
use crate::state::MasterState;
use crate::workloads::{self, book::DrainPass};

/// How a drain runs.
#[derive(Debug, Clone, Copy)]
pub struct DrainOptions {
    /// How long tasks may run on (and replicas wait for room elsewhere): then tasks are
    /// stopped and handled as lost runs, and replicas that found no room fail the drain.
    pub timeout: Duration,
    /// Between passes: the dispatch loop's period, which places the replacements.
    pub every: Duration,
}

impl DrainOptions {
    pub fn with_timeout(timeout: Duration) -> Self {
        DrainOptions {
            timeout,
            every: Duration::from_millis(250),
        }
    }
}

/// After the timeout, how long the node may still report runs (its containers stopping)
/// before the drain gives up on it.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Drains `node` and returns once it runs nothing (phase `Drained`); `progress` sees the
/// status after every pass. A failure (no room for a replica by the timeout, a replacement
/// that cannot start, the node uncordoned or removed meanwhile) undoes the moves under way,
/// leaves the node cordoned and is returned as [`NodeOpError::DrainFailed`] after
/// `progress` saw the failed status.
pub async fn drain(
    state: &Arc<MasterState>,
    node: &str,
    options: DrainOptions,
    progress: &mut (dyn FnMut(&DrainStatus) + Send),
) -> Result<DrainStatus, NodeOpError> {
    super::set_cordon(state, node, true).await?;
    log::info!(
        "draining node {node} (tasks may run {}s more)",
        options.timeout.as_secs()
    );
    let started = Instant::now();
    let mut status = DrainStatus::new(node, options.timeout.as_secs(), OffsetDateTime::now_utc());
    let mut moved: Vec<ReplicaMove> = Vec::new();
    let mut tasks: BTreeMap<String, &'static str> = BTreeMap::new();
    // When the book first had nothing left on the node.
    let mut empty_since: Option<Instant> = None;
    let stop_why = format!(
        "stopped by the drain of node {node} after its {}s timeout",
        options.timeout.as_secs()
    );
    loop {
        let timed_out = started.elapsed() >= options.timeout;
        let failure = match state.roster.get(node) {
            None => Some("the node was removed".to_owned()),
            Some(n) if !n.unschedulable => {
                Some("the node was uncordoned while it drained".to_owned())
            }
            Some(_) => None,
        };
        let pass = match failure {
            Some(reason) => Err(reason),
            None => pass(state, node, timed_out.then_some(stop_why.as_str())).await,
        };
        let pass = match pass {
            Ok(pass) => pass,
            Err(reason) => return fail(state, node, status, reason, progress).await,
        };
        for m in &pass.finished {
            log::info!(
                "drain of {node}: {} replaced by {} on {}",
                m.replica,
                m.replacement,
                m.to.as_deref().unwrap_or("?")
            );
        }
        moved.extend(pass.finished.iter().cloned());
        for (id, outcome) in tasks.iter_mut() {
            if *outcome == "running" && !pass.running.contains(id) {
                *outcome = "finished";
            }
        }
        tasks.extend(pass.running.iter().map(|id| (id.clone(), "running")));
        tasks.extend(pass.stopped.iter().map(|id| (id.clone(), "stopped")));
        status.moves = moved.iter().chain(&pass.pending).cloned().collect();
        status.tasks = tasks
            .iter()
            .map(|(id, outcome)| DrainTask {
                id: id.clone(),
                outcome: (*outcome).to_owned(),
            })
            .collect();

        if let Some((replica, why)) = pass.failed.first() {
            let reason = format!("cannot move replica {replica}: {why}");
            return fail(state, node, status, reason, progress).await;
        }
        if timed_out && !pass.pending.is_empty() {
            let stuck: Vec<String> = pass
                .pending
                .iter()
                .map(|m| {
                    let why = m
                        .waiting
                        .as_deref()
                        .unwrap_or("its replacement did not start");
                    format!(
                        "replica {} of service {} has nowhere to go ({why})",
                        m.replica, m.service
                    )
                })
                .collect();
            return fail(state, node, status, stuck.join("; "), progress).await;
        }
        if pass.done {
            let since = *empty_since.get_or_insert_with(Instant::now);
            // The master has nothing there; the node's own heartbeat after that must say so
            // too (its containers stopped). A node without a connection runs nothing the
            // master could wait for.
            let reported = state.roster.reported_runs(node);
            let node_runs = match reported {
                _ if !state.roster.is_connected(node) => Some(Vec::new()),
                Some((runs, at)) if at > since => Some(runs),
                _ => None,
            };
            status.node_runs = node_runs.clone().unwrap_or_default();
            if node_runs.as_ref().is_some_and(Vec::is_empty) {
                status.phase = DrainPhase::Drained;
                status.finished_at = Some(OffsetDateTime::now_utc());
                progress(&status);
                log::info!(
                    "node {node} drained: {} replicas moved, {} tasks waited for",
                    moved.len(),
                    status.tasks.len()
                );
                return Ok(status);
            }
            if started.elapsed() >= options.timeout + STOP_GRACE {
                let reason = format!(
                    "the node still reports runs {} {}s after the timeout",
                    status.node_runs.join(", "),
                    STOP_GRACE.as_secs()
                );
                return fail(state, node, status, reason, progress).await;
            }
        }
        progress(&status);
        tokio::time::sleep(options.every).await;
    }
}

/// One pass on the book, committed (store first, then messages).
async fn pass(
    state: &Arc<MasterState>,
    node: &str,
    stop_tasks: Option<&str>,
) -> Result<DrainPass, String> {
    let (s, node, stop) = (
        Arc::clone(state),
        node.to_owned(),
        stop_tasks.map(str::to_owned),
    );
    let done = tokio::task::spawn_blocking(move || {
        workloads::commit(&s, |book| {
            let now = OffsetDateTime::now_utc();
            Ok::<_, StoreError>(book.drain_pass(&node, stop.as_deref(), now))
        })
    })
    .await;
    match done {
        Ok(Ok(pass)) => Ok(pass),
        Ok(Err(e)) => Err(format!("the master cannot record the drain: {e}")),
        Err(e) => Err(format!("a master task failed: {e}")),
    }
}

/// Ends a drain that cannot go on: the moves under way are undone (the replicas stay),
/// the node stays cordoned, `progress` sees the failure.
async fn fail(
    state: &Arc<MasterState>,
    node: &str,
    mut status: DrainStatus,
    reason: String,
    progress: &mut (dyn FnMut(&DrainStatus) + Send),
) -> Result<DrainStatus, NodeOpError> {
    let (s, n) = (Arc::clone(state), node.to_owned());
    let undone = tokio::task::spawn_blocking(move || {
        workloads::commit(&s, |book| Ok::<_, StoreError>(((), book.abort_drain(&n))))
    })
    .await;
    if !matches!(undone, Ok(Ok(()))) {
        log::error!("drain of {node}: cannot undo its moves under way: {undone:?}");
    }
    status.moves.retain(|m| m.done);
    status.phase = DrainPhase::Failed;
    status.finished_at = Some(OffsetDateTime::now_utc());
    status.reason = Some(reason.clone());
    progress(&status);
    log::warn!("draining node {node} failed: {reason}");
    Err(NodeOpError::DrainFailed {
        node: node.to_owned(),
        reason,
    })
}
