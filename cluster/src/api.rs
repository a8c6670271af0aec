//! The JSON types spoken between the master, the agent and the `cloudos` CLI over HTTPS.
//!
//! Timestamps are RFC 3339 strings; sizes are bytes; CPU is in millicores (1000 = one core).
//! Every error response has an [`ErrorBody`]; [`ErrorCode::http_status`] is the one place that
//! maps errors to HTTP statuses, and the `From` impls map this crate's errors to codes.
//!
//! Join flow: the node connects with `tls::client_config_pinned(token.pin())`, so the secret
//! below only ever travels to the master whose CA matches the token. The secret itself is
//! sent (not a proof derived from it) because the master keeps only a salted hash and could
//! not check a proof keyed by the secret.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::identity::Role;
use crate::pki::{CertSerial, PkiError};
use crate::token::{TokenError, TokenId, TokenRecord};
use crate::workload::{LogChunk, RunAssignment, RunReport, SpecError};

/// The path prefix of this version of the API.
pub const API_PREFIX: &str = "/v1";

/// The request paths, in one place for server and clients.
pub mod paths {
    /// `POST` [`super::JoinRequest`] → [`super::JoinResponse`]; no client certificate.
    pub const JOIN: &str = "/v1/join";
    /// `POST` [`super::TokenCheckRequest`] → [`super::TokenCheckResponse`]; no client
    /// certificate. Checks a join token as a join would, without using it up: the
    /// installer asks before it writes a disk.
    pub const JOIN_CHECK: &str = "/v1/join/check";
    /// `POST` [`super::RenewRequest`] → [`super::JoinResponse`]; node certificate.
    pub const RENEW: &str = "/v1/renew";
    /// A master joins the masters (a master token, no client certificate).
    pub const MASTER_JOIN: &str = "/v1/masters/join";
    /// `DELETE <MASTERS>/<name>`: an admin removes a master from the masters.
    pub const MASTERS: &str = "/v1/masters";
    /// `POST` [`super::Heartbeat`]; node certificate. A fallback for agents that cannot
    /// hold [`AGENT_CONNECT`] open; the connection is the normal way.
    pub const HEARTBEAT: &str = "/v1/heartbeat";
    /// `GET` with a WebSocket upgrade; node certificate. The agent's one long-lived
    /// connection: it sends [`super::AgentMessage`]s and receives [`super::MasterMessage`]s,
    /// each a JSON text frame. The master never dials a node.
    pub const AGENT_CONNECT: &str = "/v1/agent/connect";
    /// `GET` → [`super::ClusterStatus`]; admin certificate.
    pub const STATUS: &str = "/v1/status";
    /// `GET` → the OpenAPI 3 document of this API; no certificate needed.
    pub const OPENAPI: &str = "/v1/openapi.json";
    /// `GET` → [`super::TimeResponse`]; no certificate needed. A joining node whose clock
    /// is wrong takes the time from here over a connection checked against its token's pin
    /// (`client::master_time`).
    pub const TIME: &str = "/v1/time";
    /// `GET` → `Vec<`[`super::NodeInfo`]`>`; admin certificate. `GET /v1/nodes/<name>` →
    /// [`super::NodeInfo`]; `DELETE /v1/nodes/<name>` evicts the node and revokes its
    /// certificate.
    pub const NODES: &str = "/v1/nodes";
    /// `GET` → `Vec<`[`super::UserInfo`]`>`, `POST` [`super::UserAddRequest`] →
    /// [`super::TokenCreateResponse`] (the new user's one-use login token); admin.
    /// `DELETE /v1/users/<name>` removes the user and revokes every certificate of theirs;
    /// `PUT /v1/users/<name>` [`super::UserRoleRequest`] changes their role.
    pub const USERS: &str = "/v1/users";
    /// `GET` → `Vec<`[`super::ApiKeyInfo`]`>`, `POST` [`super::ApiKeyCreateRequest`] →
    /// [`super::ApiKeyCreateResponse`]; admin. `DELETE /v1/apikeys/<id>` revokes a key.
    pub const API_KEYS: &str = "/v1/apikeys";
    /// `GET ?since=&user=&limit=` → `Vec<`[`super::AuditEntry`]`>`; admin.
    pub const AUDIT: &str = "/v1/audit";
    /// `PUT` [`super::PasswordRequest`] → [`super::UserInfo`]: the caller's own dashboard
    /// password; a user's certificate.
    pub const PASSWORD: &str = "/v1/password";
    /// `POST` → [`super::DashboardLink`]: a one-time dashboard login; any user.
    pub const DASHBOARD_LINK: &str = "/v1/dashboard/link";
    /// `GET` → `Vec<`[`super::TokenInfo`]`>`, `POST` [`super::TokenCreateRequest`] →
    /// [`super::TokenCreateResponse`]; admin certificate. `DELETE /v1/tokens/<id>` revokes.
    pub const TOKENS: &str = "/v1/tokens";
    /// `GET` → `Vec<`[`crate::workload::TaskInfo`]`>`, `POST`
    /// [`crate::workload::TaskCreateRequest`] → [`crate::workload::TaskInfo`]; admin
    /// certificate. Under `/v1/tasks/<id>`: `GET` the task, `POST …/cancel`,
    /// `GET …/logs[?follow=true]` (newline-delimited [`crate::workload::LogLine`]s) and
    /// `GET …/output` (a tar archive of what the task wrote to `/output`).
    pub const TASKS: &str = "/v1/tasks";
    /// `GET` → `Vec<`[`crate::workload::ServiceInfo`]`>`, `POST`
    /// [`crate::workload::ServiceCreateRequest`]; admin certificate. `GET`/`DELETE
    /// /v1/services/<name>`, `POST /v1/services/<name>/scale` [`crate::workload::ScaleRequest`].
    pub const SERVICES: &str = "/v1/services";
    /// `GET` → [`crate::workload::WorkloadList`]: what `cloudos ps` shows.
    pub const WORKLOADS: &str = "/v1/workloads";
    /// `GET` → [`crate::volume::VolumeList`]; `DELETE /v1/volumes/<name>` removes one;
    /// admin certificate.
    pub const VOLUMES: &str = "/v1/volumes";
    /// `GET` → [`crate::secret::SecretList`], `POST` [`crate::secret::SecretCreateRequest`]
    /// → [`crate::secret::SecretInfo`]; `DELETE /v1/secrets/<name>`; admin certificate. No
    /// answer ever holds a value.
    pub const SECRETS: &str = "/v1/secrets";
    /// `GET` → [`crate::registry::RegistryList`], `POST` [`crate::registry::RegistryLogin`]
    /// → [`crate::registry::RegistryInfo`]; `DELETE /v1/registries/<registry>`; admin
    /// certificate. No answer ever holds a password or token.
    pub const REGISTRIES: &str = "/v1/registries";
    /// `POST` a tar archive (at most [`crate::workload::MAX_INPUT_BYTES`]) →
    /// [`crate::workload::InputInfo`]: a task's input files (`cloudos run --input`); admin
    /// certificate. Its node fetches it with `GET /v1/runs/<run>/input`.
    pub const INPUTS: &str = "/v1/inputs";
    /// `POST /v1/runs/<run>/output`: a node uploads the tar of a finished run's `/output`;
    /// node certificate, and only for runs assigned to that node.
    pub const RUNS: &str = "/v1/runs";
    /// Node operations, under `/v1/nodes/<name>/`; admin certificate (see
    /// [`crate::nodeops`]). `POST …/cordon` and `POST …/uncordon` → [`super::NodeInfo`].
    pub const NODE_CORDON: &str = "cordon";
    pub const NODE_UNCORDON: &str = "uncordon";
    /// `POST …/drain` [`crate::nodeops::DrainRequest`] starts draining the node (or finds
    /// the drain under way) → [`crate::nodeops::DrainStatus`]; `GET …/drain` → its progress.
    pub const NODE_DRAIN: &str = "drain";
    /// `POST …/reboot` → [`crate::nodeops::RebootStarted`]: the master asks the node, over
    /// its agent's own connection, to reboot.
    pub const NODE_REBOOT: &str = "reboot";
    /// `GET` → [`super::ReleaseList`]; `POST` a signed update bundle (admin certificate);
    /// `GET /v1/releases/<version>/<arch>` the bundle itself (any cluster certificate).
    pub const RELEASES: &str = "/v1/releases";
    /// `POST` [`super::BackupRequest`] → an encrypted backup of the master's state (an age
    /// file), with a [`super::BackupSummary`] in the [`super::BACKUP_SUMMARY_HEADER`]
    /// header; admin certificate.
    pub const BACKUP: &str = "/v1/backup";
    /// `GET` → [`crate::rollout::UpgradeStatus`]; `POST` [`crate::rollout::RolloutRequest`]
    /// → [`crate::rollout::Rollout`] starts a rolling upgrade; `POST …/resume`
    /// [`crate::rollout::RolloutResume`] and `POST …/abort` → the rollout. Admin certificate.
    pub const ROLLOUT: &str = "/v1/rollout";
    /// `POST /v1/nodes/<name>/rollback` → [`crate::rollout::RollbackStarted`]: the node
    /// switches to its other system slot and reboots into it.
    pub const NODE_ROLLBACK: &str = "rollback";
}

/// `POST /v1/backup`: the passphrase the backup is encrypted to. `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRequest {
    pub passphrase: String,
}

impl fmt::Debug for BackupRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BackupRequest { passphrase: <redacted> }")
    }
}

/// The response header of `POST /v1/backup` that says what the backup holds (JSON
/// [`BackupSummary`]): the CLI cannot look inside the encrypted file.
pub const BACKUP_SUMMARY_HEADER: &str = "x-cloudos-backup";

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    pub cluster: String,
    pub ca_pin: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub schema_version: u32,
    /// Records per store table.
    pub records: BTreeMap<String, usize>,
    /// Files (task logs and outputs, releases) and their bytes.
    pub files: u64,
    pub file_bytes: u64,
}

/// A node asks to join with a token and a CSR for its own key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token_id: TokenId,
    /// The token's secret; see the module comment for why it is sent as is.
    pub token_secret: String,
    /// PEM CSR from `pki::NodeKey::csr_pem`; only its public key is used.
    pub csr_pem: String,
    pub node_name: String,
    /// `x86_64` or `aarch64` (as `uname -m`).
    pub arch: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinRequest")
            .field("token_id", &self.token_id)
            .field("token_secret", &"<redacted>")
            .field("node_name", &self.node_name)
            .field("arch", &self.arch)
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

/// A master asks to join the masters ([`paths::MASTER_JOIN`]) with a master token and a
/// CSR for its own etcd key; it tells where the other masters reach it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterJoinRequest {
    pub token_id: TokenId,
    pub token_secret: String,
    /// The joining master's name (its etcd member's and its serving certificate's).
    pub name: String,
    /// The address the other masters reach it at: its etcd member listens there on
    /// [`ETCD_CLIENT_PORT`] and [`ETCD_PEER_PORT`], its API on `api_port`.
    pub address: std::net::IpAddr,
    pub api_port: u16,
    /// PEM CSR for its etcd certificate; only its public key is used.
    pub etcd_csr_pem: String,
}

impl fmt::Debug for MasterJoinRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterJoinRequest")
            .field("token_id", &self.token_id)
            .field("token_secret", &"<redacted>")
            .field("name", &self.name)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// etcd's client port on every master.
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// etcd's peer port on every master.
pub const ETCD_PEER_PORT: u16 = 2380;

/// What a joining master needs to take its place: the etcd cluster to join, its etcd
/// certificate, and the cluster CA's certificate to check the other masters by. The CA's
/// key is not in it: the new master reads it from etcd once it is a member, over etcd's
/// own mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterJoinResponse {
    pub cluster_name: String,
    pub ca_pem: String,
    pub etcd_ca_pem: String,
    /// The joining master's etcd certificate, from the etcd CA.
    pub etcd_cert_pem: String,
    /// The members' client URLs, the new one's included.
    pub endpoints: Vec<String>,
    /// The members by name and peer URL, the new one's included.
    pub initial_cluster: Vec<(String, String)>,
    /// `true`: the new member joins a running etcd cluster; `false`: it and the master
    /// it joined start one together (the second master of a cluster).
    pub existing: bool,
}

/// A join token to check ([`paths::JOIN_CHECK`]), sent like a join's.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCheckRequest {
    pub token_id: TokenId,
    pub token_secret: String,
}

impl fmt::Debug for TokenCheckRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCheckRequest")
            .field("token_id", &self.token_id)
            .field("token_secret", &"<redacted>")
            .finish()
    }
}

/// The master's answer when a join with the token would be admitted now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCheckResponse {
    pub cluster_name: String,
    /// The role a join with this token gets.
    pub role: Role,
}

/// The master's answer to a join or a renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The node's certificate (leaf only).
    pub cert_pem: String,
    /// The cluster CA: from now on the node's only trust anchor.
    pub ca_pem: String,
    pub cluster_name: String,
    /// The role the token granted.
    pub role: Role,
    /// When to renew: two thirds into the certificate's lifetime.
    #[serde(with = "time::serde::rfc3339")]
    pub renew_after: OffsetDateTime,
}

/// `GET /v1/time`: the master's clock when it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeResponse {
    #[serde(with = "time::serde::rfc3339")]
    pub now: OffsetDateTime,
}

/// A node renews its certificate over mTLS with a fresh CSR (a new key is recommended).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewRequest {
    pub csr_pem: String,
}

/// Capacity a node offers to workloads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub cpu_millicores: u64,
    pub memory_bytes: u64,
}

impl Capacity {
    /// The most a node is believed to have: 4096 cores and 64 TiB, more than any machine
    /// we run on. A node's own claim cannot be checked; bounding it keeps a rogue agent
    /// that reports `u64::MAX` from overflowing the scheduler's sums or taking all work.
    pub const MAX: Capacity = Capacity {
        cpu_millicores: 4_096_000,
        memory_bytes: 64 << 40,
    };

    /// This capacity within [`Capacity::MAX`].
    pub fn bounded(self) -> Capacity {
        Capacity {
            cpu_millicores: self.cpu_millicores.min(Capacity::MAX.cpu_millicores),
            memory_bytes: self.memory_bytes.min(Capacity::MAX.memory_bytes),
        }
    }
}

/// A node's measurements, sent with each heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    /// Busy fraction of all CPUs since the previous heartbeat, 0.0 to 1.0.
    pub cpu_usage: f64,
    pub mem_total_bytes: u64,
    pub mem_used_bytes: u64,
    /// Of the data partition.
    pub disk_total_bytes: u64,
    pub disk_used_bytes: u64,
    /// Counters since boot, summed over physical interfaces.
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub uptime_secs: u64,
    pub arch: String,
    /// `uname -r`.
    pub kernel: String,
    pub nodeos_version: String,
    pub capacity: Capacity,
    /// The node's clock as its clock service sees it (nodes under PID 1 say; hosts do not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockReport>,
    /// The node's clock minus the master's, in seconds, set by the master from each
    /// heartbeat's `sent_at` (one network delay included); whatever a node puts here is
    /// replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_secs: Option<f64>,
    /// Bytes used by each named volume here that has a size limit (its project quota's
    /// count, decision 64), by name; volumes without a limit are not counted.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub volumes: std::collections::BTreeMap<String, u64>,
    /// The installed system: the slot it booted and its last upgrade (nodes under PID 1 on
    /// an installed disk say; live boots and hosts do not).
    /// Boxed: rarely there, and it would make every heartbeat message larger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<Box<SystemReport>>,
}

/// A node's installed system, sent with each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemReport {
    /// `a` or `b`: the system slot this boot came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// Whether GRUB counts this slot as good (nodeos confirmed it healthy).
    #[serde(default)]
    pub confirmed: bool,
    /// The last upgrade this node attempted, while it runs and after it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeReport>,
}

/// Where an upgrade of one node is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeReport {
    /// The request this reports on (the master's answer to `cloudos node upgrade`).
    #[serde(default)]
    pub id: String,
    /// The version it goes (or went) to.
    pub version: String,
    /// The version it came from.
    pub from: String,
    pub state: UpgradeState,
    /// Why it failed, in words a person can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpgradeState {
    /// Fetching the bundle from the master.
    Downloading,
    /// Checking it and writing the inactive slot.
    Installing,
    /// Written; the node reboots into it.
    Rebooting,
    /// The new slot booted and is confirmed good.
    Done,
    /// Refused or broke before the reboot: the node runs what it ran.
    Failed,
    /// The new slot did not become healthy: the node went back to the old one.
    FellBack,
}

impl UpgradeState {
    /// In words, as the CLI and the master's messages say it.
    pub fn describe(self) -> &'static str {
        match self {
            UpgradeState::Downloading => "downloading the release",
            UpgradeState::Installing => "checking it and writing the other slot",
            UpgradeState::Rebooting => "rebooting into it",
            UpgradeState::Done => "done",
            UpgradeState::Failed => "failed",
            UpgradeState::FellBack => "fell back to the old system",
        }
    }
}

impl UpgradeReport {
    /// `0.1.0 -> 0.2.0: done`.
    pub fn summary(&self) -> String {
        format!(
            "{} -> {}: {}",
            self.from,
            self.version,
            self.state.describe()
        )
    }
}

/// A node's clock, as its clock service sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClockReport {
    /// A time server answered at the last poll and the clock follows it.
    pub synced: bool,
    /// The server it follows and where it came from: `10.0.0.2:123 (master)`.
    #[serde(default)]
    pub source: Option<String>,
    /// Its last offset from that server, in seconds (positive: the clock was behind).
    #[serde(default)]
    pub offset_secs: Option<f64>,
}

/// The periodic message from agent to master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Counts up from 1 on each connection; echoed in [`MasterMessage::HeartbeatAck`].
    #[serde(default)]
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub sent_at: OffsetDateTime,
    pub telemetry: Telemetry,
    /// The runs the node is running: the master stops any it has moved on from (a node
    /// that was cut off and came back on the same connection never says hello again).
    #[serde(default)]
    pub runs: Vec<String>,
    /// What each of those runs uses, by run, where its cgroup could be read.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub usage: std::collections::BTreeMap<String, crate::workload::TaskUsage>,
}

/// Agent → master on [`paths::AGENT_CONNECT`]. Externally tagged JSON:
/// `{"hello":{…}}`, `{"heartbeat":{…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentMessage {
    /// First frame after the upgrade: what the node is now (it may have moved or changed).
    Hello(AgentHello),
    /// Every `heartbeat_interval_secs` (from [`MasterMessage::Welcome`]).
    Heartbeat(Heartbeat),
    /// A run changed state.
    Run(RunReport),
    /// Output of a run's container.
    Log(LogChunk),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentHello {
    /// The address the node is reachable at on its LAN (for people; the master never dials).
    pub address: String,
    pub arch: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub nodeos_version: String,
    /// Every run the node has that is not over, and the final state of those that ended
    /// while it was disconnected: the master reconciles its assignments with this.
    #[serde(default)]
    pub runs: Vec<RunReport>,
    /// This boot of the node (older agents say nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<crate::nodeops::NodeBoot>,
    /// The node's end of the mesh; absent from a node that takes no part (older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<crate::mesh::MeshHello>,
}

/// Master → agent on [`paths::AGENT_CONNECT`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MasterMessage {
    /// Answer to [`AgentMessage::Hello`].
    Welcome {
        cluster_name: String,
        heartbeat_interval_secs: u64,
        /// The node's container subnet (`10.250.3.0/24`); absent from an older master.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subnet: Option<String>,
        /// The cluster's container range (`10.250.0.0/16`), which the node never sends on
        /// but to its own subnet and its peers'; absent from an older master.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range: Option<String>,
    },
    /// The node's mesh peers, all of them (the node drops any it has that are not listed):
    /// after its welcome, and whenever a node comes, goes or moves.
    Mesh { peers: Vec<crate::mesh::MeshPeer> },
    /// Every service's address, published ports and running replicas, all of them: after
    /// the node's welcome, and whenever a service or a replica comes or goes.
    Services(crate::routing::ServiceTable),
    /// Every master's API address (`host:port`), when the cluster has several: after the
    /// welcome and whenever a master comes or goes. An agent whose master stops answering
    /// moves to another.
    Masters { addresses: Vec<String> },
    /// Answer to each heartbeat, echoing its `seq`: lets agents (and the load benchmark)
    /// measure how long the master took.
    HeartbeatAck { seq: u64 },
    /// The node was removed (`cloudos node remove`): its certificate is revoked and the
    /// agent must stop and forget its identity.
    Evicted { reason: String },
    /// Run this on the node.
    /// Boxed: an assignment is far larger than the other messages.
    Assign(Box<RunAssignment>),
    /// Stop this run (cancelled, scaled down, moved elsewhere while the node was away).
    Stop { run: String },
    /// Delete named volume `name` and its data (`cloudos volume rm`); the master sends it
    /// only when no task or replica that uses it is active.
    RemoveVolume { name: String },
    /// Named volume `name` may now hold `size_limit` bytes (`None`: no limit), at once if
    /// the node has it (`cloudos volume resize`).
    SetVolumeLimit {
        name: String,
        size_limit: Option<u64>,
    },
    /// Log bytes of `run` the master already holds: resend from these offsets.
    LogOffsets {
        run: String,
        stdout: u64,
        stderr: u64,
    },
    /// Install release `version` (`cloudos node upgrade`): download it from the master over
    /// this node's certificate, check it, write it into the inactive slot, reboot. The node
    /// reports where it is in its telemetry ([`SystemReport::upgrade`]).
    Upgrade {
        /// Names this request in the node's reports.
        id: String,
        version: String,
        /// Also an older version, or the same one again.
        #[serde(default)]
        allow_downgrade: bool,
    },
    /// Reboot the machine in an orderly way (`cloudos node reboot`); sent only to a node
    /// whose hello said it can ([`crate::nodeops::NodeBoot::rebootable`]).
    Reboot { reason: String },
    /// Switch to the other system slot and reboot into it (`cloudos node rollback`). The
    /// node reports it as an upgrade to the system in that slot, under `id`.
    Rollback { id: String },
}

/// `cloudos status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub cluster_name: String,
    /// `sha256:<hex>` of the cluster CA's public key.
    pub ca_pin: String,
    pub master_name: String,
    pub master_version: String,
    pub api_address: String,
    pub uptime_secs: u64,
    pub nodes_total: usize,
    pub nodes_ready: usize,
    /// Every master's API address, when the cluster has several (the CLI keeps them, to
    /// turn to another when its master stops answering).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masters: Vec<String>,
    /// The masters' etcd members, when the cluster has several masters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub etcd: Vec<EtcdMemberStatus>,
}

/// One etcd member as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdMemberStatus {
    /// The master it belongs to (empty for a member added but never started).
    pub name: String,
    pub client_url: String,
    /// Whether it accepted a connection just now.
    pub answering: bool,
}

/// Whether the master considers a node usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Heartbeats arrive; work may be scheduled.
    Ready,
    /// Heartbeats stopped; work is moved away.
    NotReady,
    /// Never set since cordoning became its own flag ([`NodeInfo::unschedulable`]); a
    /// record stored with it reads as NotReady and cordoned.
    Cordoned,
}

/// A node as the CLI shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub role: Role,
    pub address: String,
    pub arch: String,
    /// Labels an admin set (token or `cloudos node label`): what selectors match.
    pub labels: BTreeMap<String, String>,
    /// Labels the node reports of itself: shown, never matched.
    #[serde(default)]
    pub reported_labels: BTreeMap<String, String>,
    pub state: NodeState,
    #[serde(with = "time::serde::rfc3339")]
    pub joined_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    pub telemetry: Option<Telemetry>,
    /// Cordoned (`cloudos node cordon`): no new work is placed on it, what runs there keeps
    /// running. Apart from `state`, which is the node's health.
    #[serde(default)]
    pub unschedulable: bool,
    /// The node's current boot, as its agent said at its last hello.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<crate::nodeops::NodeBoot>,
    /// The subnet its containers take their addresses from (`10.250.3.0/24`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
}

/// `cloudos node label`: `POST /v1/nodes/<name>/labels`, admin certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLabelRequest {
    /// Labels to set (selectors match them).
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Label keys to remove.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Copy every label the node reports into its labels first.
    #[serde(default)]
    pub approve_reported: bool,
}

/// A user on record, as `cloudos user list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    /// What the user may do (admin, operator or viewer).
    pub role: Role,
    pub address: String,
    pub cert_serial: CertSerial,
    pub pending_serial: Option<CertSerial>,
    pub token_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub joined_at: OffsetDateTime,
}

/// `cloudos user add NAME --role ROLE`: a login token only `NAME` can log in with, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAddRequest {
    pub name: String,
    pub role: Role,
    /// How long the login token stays valid (`24h` when not given).
    pub ttl: Option<String>,
}

/// `cloudos user role NAME ROLE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRoleRequest {
    pub role: Role,
}

/// `cloudos user password`: the caller's own dashboard password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordRequest {
    pub password: String,
}

impl fmt::Debug for PasswordRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordRequest { password: <redacted> }")
    }
}

/// `cloudos dashboard`: a one-time login link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DashboardLink {
    /// `/ui/link/<token>`, on the master that answered.
    pub path: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// `cloudos apikey create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyCreateRequest {
    /// What the key is for, such as `ci-deploy` (shown in lists and the audit log).
    pub name: String,
    /// Admin, operator or viewer.
    pub role: Role,
    /// A TTL such as `30d`; keys must expire (at most a year).
    pub ttl: String,
}

/// The only time an API key is shown.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyCreateResponse {
    /// The bearer token: `Authorization: Bearer <key>`.
    pub key: String,
    pub info: ApiKeyInfo,
}

impl fmt::Debug for ApiKeyCreateResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyCreateResponse")
            .field("key", &"<redacted>")
            .field("info", &self.info)
            .finish()
    }
}

/// An API key as `cloudos apikey list` shows it: no secret, no hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The user who made it.
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub revoked: bool,
}

/// One point of a node's metric history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Busy fraction of all its CPUs, 0.0 to 1.0.
    pub cpu_usage: f64,
    /// The same in cores.
    pub cpu_cores: f64,
    pub mem_used_bytes: u64,
    pub mem_total_bytes: u64,
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
    pub net_rx_bytes_per_sec: f64,
    pub net_tx_bytes_per_sec: f64,
    pub load1: f64,
}

/// `GET /v1/nodes/<name>/history?since=…`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeHistory {
    pub node: String,
    /// Seconds between points: 60 within the last day, 3600 beyond.
    pub resolution_secs: u32,
    pub points: Vec<HistoryPoint>,
}

/// One change made through the API, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Increasing: later entries have larger ids.
    pub id: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The user (`alice`), API key (`key:ci-deploy`), or `anonymous` (joins).
    pub who: String,
    /// The caller's role, when it had one.
    pub role: Option<Role>,
    /// The caller's address.
    pub from: String,
    /// `POST /v1/tasks`.
    pub method: String,
    pub path: String,
    /// The HTTP status of the answer: the result.
    pub status: u16,
}

/// `cloudos token create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreateRequest {
    pub role: Role,
    /// A TTL such as `24h` (see `token::parse_ttl`); `None`: never expires.
    pub ttl: Option<String>,
    /// `None`: unlimited uses.
    pub uses: Option<u32>,
    #[serde(default)]
    pub description: String,
    /// Labels given to every node that joins with the token (the ones selectors match).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The only time the full token is shown.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreateResponse {
    /// The full token string to copy to the new node.
    pub token: String,
    pub info: TokenInfo,
}

impl fmt::Debug for TokenCreateResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCreateResponse")
            .field("token", &"<redacted>")
            .field("info", &self.info)
            .finish()
    }
}

/// A token as `cloudos token list` shows it: no secret, no hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: TokenId,
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    pub uses_left: Option<u32>,
    pub revoked: bool,
    pub description: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl From<&TokenRecord> for TokenInfo {
    fn from(r: &TokenRecord) -> Self {
        TokenInfo {
            id: r.id.clone(),
            role: r.role,
            created_at: r.created_at,
            expires_at: r.expires_at,
            uses_left: r.uses_left,
            revoked: r.revoked,
            description: r.description.clone(),
            labels: r.labels.clone(),
        }
    }
}

/// Machine-readable error kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed (bad JSON, bad CSR, bad name, bad TTL).
    BadRequest,
    /// No valid credentials: missing client certificate, unknown token, wrong secret.
    Unauthenticated,
    /// Valid credentials that do not allow this: role mismatch, revoked certificate.
    Forbidden,
    /// The token expired, was used up or revoked.
    TokenInvalid,
    NotFound,
    /// The thing exists already (a second `master init`, a node name in use).
    Conflict,
    /// The master failed; the message says why.
    Internal,
    /// The request body is larger than the master accepts.
    PayloadTooLarge,
    /// Too many failed attempts from this address; retry after the `Retry-After` seconds.
    TooManyRequests,
    /// The certificate is revoked or its node was removed: it will never work again. Only
    /// this code makes an agent forget its identity; any other refusal may pass.
    Revoked,
    /// The cluster cannot answer this now (its masters have no quorum, or are choosing a
    /// leader); try again in a moment.
    Unavailable,
}

impl ErrorCode {
    /// The HTTP status for this code: the one place errors meet HTTP.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::TokenInvalid => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::Internal => 500,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::Revoked => 403,
            ErrorCode::Unavailable => 503,
        }
    }
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// For people: what went wrong and what to do.
    pub message: String,
}

/// Characters of an error message sent at most: messages may quote what a client sent.
pub const MAX_ERROR_MESSAGE: usize = 1024;

impl ErrorBody {
    /// An answer whose message is bounded and has its control characters escaped: error
    /// messages quote names, ids and paths that the caller chose.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: crate::util::excerpt(&message.into(), MAX_ERROR_MESSAGE),
        }
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<&TokenError> for ErrorBody {
    fn from(e: &TokenError) -> Self {
        let code = match e {
            TokenError::UnknownId { .. } | TokenError::WrongSecret { .. } => {
                ErrorCode::Unauthenticated
            }
            TokenError::Expired { .. } | TokenError::UsedUp { .. } | TokenError::Revoked { .. } => {
                ErrorCode::TokenInvalid
            }
            TokenError::RoleMismatch { .. } => ErrorCode::Forbidden,
            TokenError::Random(_) => ErrorCode::Internal,
            _ => ErrorCode::BadRequest,
        };
        ErrorBody::new(code, e.to_string())
    }
}

impl From<&PkiError> for ErrorBody {
    fn from(e: &PkiError) -> Self {
        let code = match e {
            PkiError::Csr { .. }
            | PkiError::Identity(_)
            | PkiError::DnsName { .. }
            | PkiError::Lifetime { .. } => ErrorCode::BadRequest,
            PkiError::NotANodeCertificate { .. } | PkiError::AmbiguousIdentity { .. } => {
                ErrorCode::Unauthenticated
            }
            PkiError::Revoked { .. } => ErrorCode::Revoked,
            _ => ErrorCode::Internal,
        };
        ErrorBody::new(code, e.to_string())
    }
}

impl From<&SpecError> for ErrorBody {
    fn from(e: &SpecError) -> Self {
        ErrorBody::new(ErrorCode::BadRequest, e.to_string())
    }
}

/// `POST /v1/nodes/<name>/upgrade` (`cloudos node upgrade`): install a kept release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeUpgradeRequest {
    pub version: String,
    /// Also an older version, or the same one again.
    #[serde(default)]
    pub allow_downgrade: bool,
    /// Try a release the node already failed to come up with (it fell back, or refused it).
    #[serde(default)]
    pub retry_failed: bool,
}

/// The master's answer to [`NodeUpgradeRequest`]: the node was told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeUpgradeStarted {
    pub node: String,
    pub version: String,
    /// The node's reports on this request carry it ([`UpgradeReport::id`]).
    pub id: String,
}

/// A signed update bundle the master keeps (`cloudos release list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseInfo {
    pub version: String,
    /// `x86_64` or `aarch64`.
    pub arch: String,
    /// The bundle's size in bytes.
    pub size: u64,
    /// The id of the release key that signed it.
    pub key: String,
    pub file: String,
}

/// `GET /v1/releases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseList {
    pub releases: Vec<ReleaseInfo>,
    /// The version the master runs.
    pub running: String,
    /// The master trusts the public development key: anyone can sign what it accepts.
    pub development_key: bool,
}

/// How long an agent hears nothing from its master before it calls the connection dead
/// and connects again (to another master, when it knows several): three missed answers
/// and some slack, for a master that lost power and sends no FIN. A master that starts
/// leading gives its nodes this long, and its own `not_ready_after`, to connect before
/// their silence counts (`master::health`).
pub fn agent_silence_limit(heartbeat_interval: std::time::Duration) -> std::time::Duration {
    heartbeat_interval * 3 + std::time::Duration::from_secs(5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-03-01 10:00 UTC);

    #[test]
    fn join_request_json_and_debug() {
        let req = JoinRequest {
            token_id: "abcdef".parse().expect("id"),
            token_secret: "s3cr3tsecretvalue".into(),
            csr_pem: "csr".into(),
            node_name: "n1".into(),
            arch: "x86_64".into(),
            labels: BTreeMap::new(),
        };
        let json = serde_json::to_value(&req).expect("json");
        assert_eq!(json["token_id"], "abcdef");
        let back: JoinRequest = serde_json::from_value(json).expect("back");
        assert_eq!(back, req);
        assert!(!format!("{req:?}").contains("s3cr3t"));
        // Labels may be left out.
        let min = r#"{"token_id":"abcdef","token_secret":"x","csr_pem":"c","node_name":"n","arch":"aarch64"}"#;
        assert!(serde_json::from_str::<JoinRequest>(min).is_ok());
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let resp = JoinResponse {
            cert_pem: "c".into(),
            ca_pem: "ca".into(),
            cluster_name: "lab".into(),
            role: Role::Compute,
            renew_after: NOW,
        };
        let json = serde_json::to_value(&resp).expect("json");
        assert_eq!(json["renew_after"], "2026-03-01T10:00:00Z");
        assert_eq!(json["role"], "compute");
    }

    #[test]
    fn errors_map_to_codes_and_statuses() {
        let cases: Vec<(ErrorBody, ErrorCode, u16)> = vec![
            (
                (&TokenError::UnknownId { id: "x".into() }).into(),
                ErrorCode::Unauthenticated,
                401,
            ),
            (
                (&TokenError::WrongSecret { id: "x".into() }).into(),
                ErrorCode::Unauthenticated,
                401,
            ),
            (
                (&TokenError::Expired {
                    id: "x".into(),
                    expired_at: NOW,
                })
                    .into(),
                ErrorCode::TokenInvalid,
                403,
            ),
            (
                (&TokenError::UsedUp { id: "x".into() }).into(),
                ErrorCode::TokenInvalid,
                403,
            ),
            (
                (&TokenError::RoleMismatch {
                    id: "x".into(),
                    actual: Role::Compute,
                    wanted: Role::Admin,
                })
                    .into(),
                ErrorCode::Forbidden,
                403,
            ),
            ((&TokenError::Empty).into(), ErrorCode::BadRequest, 400),
            (
                (&PkiError::Csr { why: "x".into() }).into(),
                ErrorCode::BadRequest,
                400,
            ),
            ((&PkiError::KeyMismatch).into(), ErrorCode::Internal, 500),
        ];
        for (body, code, status) in cases {
            assert_eq!(body.code, code, "{body}");
            assert_eq!(body.code.http_status(), status, "{body}");
        }
        let json =
            serde_json::to_string(&ErrorBody::new(ErrorCode::TokenInvalid, "m")).expect("json");
        assert_eq!(json, r#"{"code":"token_invalid","message":"m"}"#);
    }

    #[test]
    fn token_create_response_hides_the_token_in_debug() {
        let resp = TokenCreateResponse {
            token: "cloudos1_secretstuff".into(),
            info: TokenInfo {
                id: "abcdef".parse().expect("id"),
                role: Role::Compute,
                created_at: NOW,
                expires_at: None,
                uses_left: Some(1),
                revoked: false,
                description: String::new(),
                labels: Default::default(),
            },
        };
        assert!(!format!("{resp:?}").contains("secretstuff"));
    }
}
