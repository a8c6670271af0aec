//! Node operations as the API speaks them: a node's boot (for `cloudos node reboot` to see
//! it come back), a drain's request and its progress. What the master does with them lives
//! in `cloudos-master`'s `nodeops`; here are only the shapes that cross the wire.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One boot of a node, as its agent says in its hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeBoot {
    /// The kernel's `/proc/sys/kernel/random/boot_id`: new at every boot.
    pub id: String,
    /// The node reboots when the master asks: a CloudOS appliance, whose PID 1 is
    /// `nodeos`. A host install (`nodeos daemon` under systemd) says no: CloudOS does not
    /// reboot a machine it does not own.
    #[serde(default)]
    pub rebootable: bool,
}

/// How long a drain waits by default for tasks to finish (and for replicas to find room)
/// before it stops them (or gives up).
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 300;

/// `POST /v1/nodes/<name>/drain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRequest {
    /// How long tasks may run on (and replicas wait for room elsewhere) before the drain
    /// stops the tasks (handled as lost runs) and gives up on replicas that cannot move.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    DEFAULT_DRAIN_TIMEOUT_SECS
}

impl Default for DrainRequest {
    fn default() -> Self {
        DrainRequest {
            timeout_secs: DEFAULT_DRAIN_TIMEOUT_SECS,
        }
    }
}

/// Where a drain is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainPhase {
    /// Moving replicas, waiting for tasks.
    Draining,
    /// The node runs nothing; it stays cordoned.
    Drained,
    /// Given up (`reason` says why); the node stays cordoned and keeps what could not move.
    Failed,
}

/// One service replica moving off the node: its replacement starts elsewhere first, and
/// only once that runs is the replica on the node stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaMove {
    pub service: String,
    /// The replica on the drained node.
    pub replica: String,
    /// Its replacement.
    pub replacement: String,
    /// Where the replacement was placed, once it was.
    #[serde(default)]
    pub to: Option<String>,
    /// `true` once the replacement runs and the old replica is stopped.
    pub done: bool,
    /// Why the replacement waits (`no node fits: 1 is cordoned`), while it does.
    #[serde(default)]
    pub waiting: Option<String>,
}

/// A task the drain waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainTask {
    pub id: String,
    /// `running` while it runs on the node; `finished` when it ended there on its own;
    /// `stopped` when the timeout stopped it (then handled as a lost run: retried
    /// elsewhere if it has retries left, else `lost`).
    pub outcome: String,
}

/// `GET /v1/nodes/<name>/drain`: a drain and how far it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainStatus {
    pub node: String,
    pub phase: DrainPhase,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub timeout_secs: u64,
    pub moves: Vec<ReplicaMove>,
    pub tasks: Vec<DrainTask>,
    /// Runs the node itself still reports (stopping containers), once the master has none
    /// left on it.
    #[serde(default)]
    pub node_runs: Vec<String>,
    /// Why it failed.
    #[serde(default)]
    pub reason: Option<String>,
}

impl DrainStatus {
    /// A drain that has just begun.
    pub fn new(node: &str, timeout_secs: u64, now: OffsetDateTime) -> Self {
        DrainStatus {
            node: node.to_owned(),
            phase: DrainPhase::Draining,
            started_at: now,
            finished_at: None,
            timeout_secs,
            moves: Vec::new(),
            tasks: Vec::new(),
            node_runs: Vec::new(),
            reason: None,
        }
    }

    pub fn is_over(&self) -> bool {
        self.phase != DrainPhase::Draining
    }
}

/// `POST /v1/nodes/<name>/reboot`: the node was asked to reboot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebootStarted {
    pub node: String,
    /// The boot that is ending: the node is back once it reports another one.
    pub boot_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_request_may_leave_out_its_timeout() {
        let req: DrainRequest = serde_json::from_str("{}").expect("json");
        assert_eq!(req.timeout_secs, DEFAULT_DRAIN_TIMEOUT_SECS);
    }

    #[test]
    fn an_older_agents_boot_is_not_rebootable() {
        let boot: NodeBoot = serde_json::from_str(r#"{"id":"b1"}"#).expect("json");
        assert!(!boot.rebootable);
    }
}
