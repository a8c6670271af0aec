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

/// A few times per ping: silent nodes become NotReady, state changes are saved; every
/// `flush_interval` the rest of the live state is saved too.
///
/// A master that was itself stopped (a stalled machine, a suspended VM) comes back to
/// find every node silent, though their answers wait unread in its sockets: after a
/// sweep comes far later than due, nodes get one `not_ready_after` to be heard before
/// silence counts again. A master that starts leading gives them its takeover grace.
pub async fn run(state: Arc<MasterState>) {
    let not_ready_after = state.config.not_ready_after;
    let period =
        (state.config.ping_interval() / 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_flush = Instant::now();
    let mut last_sweep = Instant::now();
    // Leading starts: nodes still connected to a master that stalled or died find this
    // one first (see `MasterConfig::takeover_grace`). A node heard since is judged as ever.
    let grace = state.config.takeover_grace();
    state.roster.grant_grace(Instant::now() + grace);
    log::info!(
        "nodes get {}s to connect to this master before their silence counts",
        grace.as_secs()
    );
    let mut quiet_until: Option<Instant> = None;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let late = now.saturating_duration_since(last_sweep);
        last_sweep = now;
        if late > period + not_ready_after / 2 {
            log::warn!(
                "the master did not run for {:.1}s; nodes get {}s to be heard before their silence counts",
                late.as_secs_f64(),
                not_ready_after.as_secs()
            );
            quiet_until = Some(now + not_ready_after);
        }
        let transitions = if quiet_until.is_some_and(|until| now < until) {
            Vec::new()
        } else {
            quiet_until = None;
            state.roster.sweep(
                now,
                not_ready_after,
                state.config.not_ready_without_connection(),
            )
        };
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
