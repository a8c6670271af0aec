//! Rolling upgrades as the API speaks them (`cloudos upgrade`): the request, and the
//! rollout's record with each node's step. What the master does with them lives in
//! `cloudos-master`'s `rollout`; here are only the shapes that cross the wire (and that the
//! master keeps in its store, so that a rollout outlives a restart of the master, its own
//! upgrade included).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// How long a node may take from the upgrade message to Ready on the new version by
/// default: a download, a slot write and a reboot under emulation fit with room.
pub const DEFAULT_NODE_TIMEOUT_SECS: u64 = 900;

/// `POST /v1/rollout`: start upgrading the cluster to a kept release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRequest {
    pub version: String,
    /// Only the compute nodes with all these labels; empty: every compute node.
    #[serde(default)]
    pub nodes: BTreeMap<String, String>,
    /// How many compute nodes may be away (drained, rebooting) at once.
    #[serde(default = "one")]
    pub max_unavailable: u32,
    /// Also an older version, or the same one again.
    #[serde(default)]
    pub allow_downgrade: bool,
    /// Send nodes into a release they already fell back from.
    #[serde(default)]
    pub retry_failed: bool,
    /// How long a drain lets tasks finish (and replicas find room elsewhere).
    #[serde(default = "drain_timeout")]
    pub drain_timeout_secs: u64,
    /// How long one node may take from the upgrade message to Ready on the version.
    #[serde(default = "node_timeout")]
    pub node_timeout_secs: u64,
    /// Leave the master as it is (upgrade only compute nodes).
    #[serde(default)]
    pub skip_master: bool,
}

fn one() -> u32 {
    1
}

fn drain_timeout() -> u64 {
    crate::nodeops::DEFAULT_DRAIN_TIMEOUT_SECS
}

fn node_timeout() -> u64 {
    DEFAULT_NODE_TIMEOUT_SECS
}

impl RolloutRequest {
    pub fn to(version: &str) -> RolloutRequest {
        RolloutRequest {
            version: version.to_owned(),
            nodes: BTreeMap::new(),
            max_unavailable: 1,
            allow_downgrade: false,
            retry_failed: false,
            drain_timeout_secs: drain_timeout(),
            node_timeout_secs: node_timeout(),
            skip_master: false,
        }
    }
}

/// `POST /v1/rollout/resume`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutResume {
    /// Send the nodes that failed this rollout into its release again.
    #[serde(default)]
    pub retry_failed: bool,
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutPhase {
    /// Nodes are being upgraded, one batch at a time.
    Running,
    /// `cloudos upgrade abort` was asked: no node starts; nodes under way finish.
    Aborting,
    /// Stopped by the admin; `cloudos upgrade resume` goes on.
    Aborted,
    /// A node failed (see its reason): the rollout stopped there; `resume` goes on.
    Failed,
    /// Every node runs the version (or was left out, with the reason).
    Done,
}

impl RolloutPhase {
    /// Whether the rollout still has a task working on it.
    pub fn is_active(self) -> bool {
        matches!(self, RolloutPhase::Running | RolloutPhase::Aborting)
    }

    /// As the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutPhase::Running => "running",
            RolloutPhase::Aborting => "aborting",
            RolloutPhase::Aborted => "aborted",
            RolloutPhase::Failed => "failed",
            RolloutPhase::Done => "done",
        }
    }
}

/// One node's step in a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStep {
    /// Not started.
    Waiting,
    /// Cordoned; its replicas are moving and its tasks finishing.
    Draining,
    /// Told to upgrade: downloading, writing its other slot, rebooting, coming back.
    Upgrading,
    /// Back on the version with its slot confirmed; waiting for every service to be up
    /// before it is uncordoned.
    Settling,
    /// Upgraded and uncordoned.
    Done,
    /// Already on the version: nothing to do.
    Skipped,
    /// Did not upgrade (see the reason): the rollout stops.
    Failed,
}

impl RolloutStep {
    /// Started and not over: the node is away from work (cordoned, draining, rebooting).
    pub fn is_under_way(self) -> bool {
        matches!(
            self,
            RolloutStep::Draining | RolloutStep::Upgrading | RolloutStep::Settling
        )
    }
}

/// One node in a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutNode {
    pub name: String,
    pub arch: String,
    /// The master itself, upgraded last.
    #[serde(default)]
    pub master: bool,
    pub step: RolloutStep,
    /// The version it ran when its step began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The upgrade request sent to it (its reports carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// What it is doing now, in words (`downloading the release`, `draining: 1 replica to
    /// move`), or why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

impl RolloutNode {
    pub fn new(name: &str, arch: &str, master: bool) -> RolloutNode {
        RolloutNode {
            name: name.to_owned(),
            arch: arch.to_owned(),
            master,
            step: RolloutStep::Waiting,
            from: None,
            request: None,
            detail: None,
            started_at: None,
            finished_at: None,
        }
    }

    /// Whether its step is over (for better or worse).
    pub fn is_settled(&self) -> bool {
        matches!(
            self.step,
            RolloutStep::Done | RolloutStep::Skipped | RolloutStep::Failed
        )
    }
}

/// A rolling upgrade: what `GET /v1/rollout` shows, and what the master keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    pub request: RolloutRequest,
    pub phase: RolloutPhase,
    /// Compute nodes in the order they go, then the master.
    pub nodes: Vec<RolloutNode>,
    /// Why it failed or stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The admin who started it.
    pub by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

impl Rollout {
    pub fn node(&self, name: &str) -> Option<&RolloutNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn node_mut(&mut self, name: &str) -> Option<&mut RolloutNode> {
        self.nodes.iter_mut().find(|n| n.name == name)
    }
}

/// `GET /v1/rollout`: the last rollout (if any) and where every node is now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpgradeStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Every node, the master first.
    pub nodes: Vec<NodeSystem>,
}

/// A node's installed system, as `cloudos upgrade status` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSystem {
    pub name: String,
    /// `master` or `compute`.
    pub role: String,
    /// `ready`, `not_ready`, …
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    #[serde(default)]
    pub confirmed: bool,
    /// Its last upgrade, in words (`0.1.0 -> 0.2.0: done`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<String>,
    /// Why its last upgrade failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/nodes/<name>/rollback` answers with the request the node reports on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackStarted {
    pub node: String,
    pub id: String,
}
