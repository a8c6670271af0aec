//! Node health: turns silence into NotReady, logs every Ready/NotReady transition, writes
//! transitions to the store at once and the rest of the live state (last seen, telemetry)
//! every `flush_interval`, in one batch off the async workers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudos_cluster::store::{NodeRecord, NodeState};

use super::registry::Transition;
use super::state::MasterState;

/// Logs transitions and writes them to the store (in the background).
pub fn apply(state: &Arc<MasterState>, transitions: Vec<Transition>) {
    if transitions.is_empty() {
        return;
    }
    for t in &transitions {
        match t.to {
            NodeState::Ready => log::info!("node {} is Ready ({})", t.name, t.why),
            NodeState::NotReady => log::warn!("node {} is NotReady ({})", t.name, t.why),
            NodeState::Cordoned => log::info!("node {} is Cordoned", t.name),
        }
    }
    let records = transitions.into_iter().map(|t| t.record).collect();
    let state = Arc::clone(state);
    tokio::task::spawn_blocking(move || persist(&state, records));
}

/// Writes records of nodes that are still stored (a removed node is not brought back).
fn persist(state: &MasterState, records: Vec<NodeRecord>) {
    if let Err(e) = state.store.update_nodes(&records) {
        log::error!("cannot save the state of {} nodes: {e}", records.len());
    }
}

/// Writes the live state of every node that changed since the last flush.
pub async fn flush(state: &Arc<MasterState>) {
    let dirty = state.registry.take_dirty();
    if dirty.is_empty() {
        return;
    }
    let s = Arc::clone(state);
    if let Err(e) = tokio::task::spawn_blocking(move || persist(&s, dirty)).await {
        log::error!("saving live node state failed: {e}");
    }
}

/// Sweeps for silent nodes a few times per heartbeat interval and flushes periodically.
pub async fn run(state: Arc<MasterState>) {
    let period = (state.config.heartbeat_interval / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_flush = Instant::now();
    loop {
        tick.tick().await;
        let transitions = state
            .registry
            .sweep(Instant::now(), state.config.not_ready_after);
        apply(&state, transitions);
        if last_flush.elapsed() >= state.config.flush_interval {
            last_flush = Instant::now();
            flush(&state).await;
        }
    }
}
