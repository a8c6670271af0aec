//! The leader keeps the list of masters current for the agents: every master's API
//! address, from the candidates of the masters' election (each master that runs is one),
//! sent to each agent after its welcome and to every agent when it changes.

use std::sync::Arc;
use std::time::Duration;

use cloudos_cluster::api::MasterMessage;

use super::forward::LeaderAddr;
use super::ELECTION;
use crate::state::MasterState;

/// How often the leader reads the list.
const EVERY: Duration = Duration::from_secs(2);

/// The message to send an agent now; `None` on a master on its own.
pub fn current(state: &MasterState) -> Option<MasterMessage> {
    let addresses = state.masters.read().ok()?.clone();
    (!addresses.is_empty()).then_some(MasterMessage::Masters { addresses })
}

/// Reads the masters every [`EVERY`] and tells every connected agent when they changed.
pub async fn keep(state: Arc<MasterState>) {
    let Some(etcd) = state.etcd.clone() else {
        return;
    };
    loop {
        let e = Arc::clone(&etcd);
        if let Ok(Ok(values)) = tokio::task::spawn_blocking(move || e.candidates(ELECTION)).await {
            let mut addresses: Vec<String> = values
                .iter()
                .filter_map(|v| LeaderAddr::from_value(v))
                .map(|l| l.addr)
                .collect();
            addresses.sort();
            addresses.dedup();
            let changed = state
                .masters
                .write()
                .map(|mut current| {
                    let changed = *current != addresses;
                    *current = addresses.clone();
                    changed
                })
                .unwrap_or(false);
            if changed {
                log::info!("the masters are at {}", addresses.join(", "));
                if let Some(message) = current(&state) {
                    for node in state.roster.connected() {
                        state.roster.send(&node, message.clone());
                    }
                }
            }
        }
        tokio::time::sleep(EVERY).await;
    }
}
