//! Node health: turns silence into NotReady, logs every Ready/NotReady transition, and
//! saves node state: transitions within a sweep period, the rest of the live state (last
//! seen, telemetry) every `flush_interval`, each time as one batch off the async workers,
//! so a storm of transitions (a master restart, a switch reboot) is a few transactions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudos_store::NodeState;

use super::roster::{Transition, Unsaved};
use super::state::MasterState;

/// Logs Ready/NotReady transitions; the health task saves them.
pub fn log_transitions(transitions: &[Transition]) {
    for t in transitions {
        match t.to {
            NodeState::Ready => log::info!("node {} is Ready ({})", t.name, t.why),
            NodeState::NotReady => log::warn!("node {} is NotReady ({})", t.name, t.why),
            NodeState::Cordoned => log::info!("node {} is Cordoned", t.name),
        }
    }
}

/// Writes what the store has not seen, in one transaction off the async workers. Nodes
/// removed meanwhile are not brought back (see `Store::update_nodes`).
pub async fn save(state: &Arc<MasterState>, which: Unsaved) {
    let records = state.roster.take_unsaved(which);
    if records.is_empty() {
        return;
    }
    let s = Arc::clone(state);
    let saved = tokio::task::spawn_blocking(move || s.store.update_nodes(&records)).await;
    match saved {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => log::error!("cannot save node state: {e}"),
        Err(e) => log::error!("saving node state failed: {e}"),
    }
}

/// A few times per heartbeat interval: silent nodes become NotReady, state changes are
/// saved; every `flush_interval` the rest of the live state is saved too.
pub async fn run(state: Arc<MasterState>) {
    let period = (state.config.heartbeat_interval / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_flush = Instant::now();
    loop {
        tick.tick().await;
        let transitions = state
            .roster
            .sweep(Instant::now(), state.config.not_ready_after);
        log_transitions(&transitions);
        let which = if last_flush.elapsed() >= state.config.flush_interval {
            last_flush = Instant::now();
            Unsaved::All
        } else {
            Unsaved::StateChanges
        };
        save(&state, which).await;
    }
}
