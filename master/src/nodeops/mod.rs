//! Node operations (issue 19): cordon and uncordon ([`cordon`]), drain ([`drain`]) and
//! reboot ([`reboot`]). Library functions the HTTP handlers (`routes::nodeops`) and the
//! rolling upgrade call; no HTTP here, and nothing of the book's rules (a drain's moves
//! are `workloads::book::drain`). Owns the drains under way ([`Drains`]), so that the API
//! can show their progress. Never dials a node: the reboot travels on the agent's own
//! connection.

pub mod cordon;
pub mod drain;
pub mod reboot;

use std::collections::HashMap;
use std::sync::Mutex;

use cloudos_cluster::nodeops::DrainStatus;
use cloudos_store::{NodeState, StoreError};

pub use cordon::set_cordon;
pub use drain::{drain, DrainOptions};
pub use reboot::reboot;

/// Why a node operation was refused or failed. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum NodeOpError {
    #[error("no node named {0}; list nodes with `cloudos node list`")]
    NoNode(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("node {node} is {state:?}: its agent has no connection to the master, so it cannot be asked to reboot; wait until it is Ready, or restart the machine by hand")]
    NotConnected { node: String, state: NodeState },
    #[error("node {node} runs nodeos as a service on a host (installed with install.sh): CloudOS does not reboot a machine it does not own; reboot it with the host's own tools (`systemctl reboot`) and it comes back as {node}")]
    HostInstall { node: String },
    #[error("node {node} did not report its boot (its nodeos is older than node reboots); upgrade it, or restart it by hand")]
    NoBootReport { node: String },
    #[error("the reboot could not be sent to node {node}: its connection's queue is full or just closed; try again")]
    NotSent { node: String },
    #[error("draining node {node} failed: {reason}; the node stays cordoned (`cloudos node uncordon {node}` to use it again)")]
    DrainFailed { node: String, reason: String },
    #[error("a master task failed: {0}")]
    Task(String),
}

/// The drains under way or ended, by node: what `GET /v1/nodes/<name>/drain` shows. In
/// memory: a master restart forgets them (the cordon stays, in the store; the moves under
/// way are undone by the count rule, see `workloads::book::drain`).
#[derive(Default)]
pub struct Drains {
    by_node: Mutex<HashMap<String, DrainStatus>>,
}

impl Drains {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, DrainStatus>> {
        self.by_node.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `status` as the node's drain unless one is under way, which is returned
    /// then (and `status` dropped).
    pub fn begin(&self, status: DrainStatus) -> Option<DrainStatus> {
        let mut all = self.lock();
        if let Some(running) = all.get(&status.node).filter(|s| !s.is_over()) {
            return Some(running.clone());
        }
        all.insert(status.node.clone(), status);
        None
    }

    pub fn update(&self, status: &DrainStatus) {
        self.lock().insert(status.node.clone(), status.clone());
    }

    pub fn get(&self, node: &str) -> Option<DrainStatus> {
        self.lock().get(node).cloned()
    }

    /// Forgets the drain of a removed node.
    pub fn forget(&self, node: &str) {
        self.lock().remove(node);
    }
}
