//! Workloads as the API speaks them (docs/design.md decision 10): what a person asks to run
//! (a [`WorkloadSpec`], as a task or as a service's replicas), the quantities in it
//! (`500m` CPU, `64Mi` memory) and the records the master keeps and shows.
//!
//! A *run* is one attempt of a task or one incarnation of a service replica on one node:
//! the unit the master assigns to an agent. Tasks retry in new runs; replicas move in new
//! runs. Validation lives here so that the CLI refuses bad input before sending it and the
//! master refuses it again with the same words.

use std::collections::BTreeMap;
use std::fmt;

use cloudos_units::{format_bytes, format_cpu};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use crate::publish::{PortMapping, Protocol, PublishError};

/// Largest CPU request: 1000 cores.
pub const MAX_CPU_MILLIS: u64 = 1_000_000;
/// Largest memory request: 16 TiB.
pub const MAX_MEMORY_BYTES: u64 = 16 << 40;
/// Smallest memory limit a container can start under.
pub const MIN_MEMORY_BYTES: u64 = 4 << 20;
pub const MAX_PIDS: u64 = 4_194_304;
pub const MAX_REPLICAS: u32 = 1000;
pub const MAX_RETRIES: u32 = 100;
/// What a task asks for when it says nothing: a tenth of a core and 64 MiB.
pub const DEFAULT_CPU_MILLIS: u64 = 100;
pub const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("invalid CPU quantity {0:?}: use millicores such as 500m or cores such as 2 or 0.5")]
    Cpu(String),
    #[error("invalid memory quantity {0:?}: use bytes with a unit such as 64Mi, 1Gi or 512M")]
    Memory(String),
    #[error("{what} {value} is out of range: {range}")]
    OutOfRange {
        what: &'static str,
        value: String,
        range: String,
    },
    #[error("no image given: name one such as registry.example:5000/busybox:1")]
    NoImage,
    #[error("invalid image reference {0:?}")]
    Image(String),
    #[error(
        "invalid environment variable {0:?}: use KEY=VALUE with a KEY of letters, digits and _"
    )]
    Env(String),
    #[error("invalid label selector {0:?}: use key=value")]
    Selector(String),
    #[error("invalid user {0:?}: use UID or UID:GID (numbers)")]
    User(String),
    #[error("invalid working directory {0:?}: it must be an absolute path")]
    Workdir(String),
    #[error("invalid service name {0:?}: use 1-40 lowercase letters, digits and '-', starting with a letter")]
    ServiceName(String),
    #[error("request id {0:?} is not 8 to 64 letters, digits, `-` or `_`")]
    RequestId(String),
    #[error("invalid health check: {0}")]
    Health(String),
    #[error("invalid update policy: {0}")]
    Update(String),
    #[error("{0}")]
    Volume(String),
    #[error("{0}")]
    Secret(String),
    #[error("invalid input {0:?}: expected sha256: and 64 hex digits (cloudos run --input uploads the files and names them)")]
    Input(String),
    #[error(transparent)]
    Publish(#[from] crate::publish::PublishError),
    #[error("published ports need the bridge network (--network bridge): with {0} the container has no address of its own to forward to")]
    PublishNeedsBridge(&'static str),
    #[error("host port {0} is published twice; each host port leads to one container port")]
    PublishedTwice(String),
}

/// Parses `500m` (millicores), `2` or `0.5` (cores) into millicores.
pub fn parse_cpu(text: &str) -> Result<u64, SpecError> {
    let bad = || SpecError::Cpu(text.to_owned());
    let t = text.trim();
    let millis = if let Some(m) = t.strip_suffix('m') {
        m.parse::<u64>().map_err(|_| bad())?
    } else {
        let cores: f64 = t.parse().map_err(|_| bad())?;
        if !cores.is_finite() || cores < 0.0 {
            return Err(bad());
        }
        (cores * 1000.0).round() as u64
    };
    if millis == 0 || millis > MAX_CPU_MILLIS {
        return Err(SpecError::OutOfRange {
            what: "CPU",
            value: text.to_owned(),
            range: format!("1m to {}", format_cpu(MAX_CPU_MILLIS)),
        });
    }
    Ok(millis)
}

/// Parses a byte count with an optional unit: `64Mi`, `1Gi`, `512M`, `1000000`; `None`
/// when it is not one (or overflows).
pub fn parse_byte_count(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor: u64 = match unit {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// Parses `64Mi`, `1Gi`, `512M`, `1000000` (bytes) into bytes.
pub fn parse_memory(text: &str) -> Result<u64, SpecError> {
    let bytes = parse_byte_count(text).ok_or_else(|| SpecError::Memory(text.to_owned()))?;
    if !(MIN_MEMORY_BYTES..=MAX_MEMORY_BYTES).contains(&bytes) {
        return Err(SpecError::OutOfRange {
            what: "memory",
            value: text.to_owned(),
            range: format!(
                "{} to {}",
                format_bytes(MIN_MEMORY_BYTES),
                format_bytes(MAX_MEMORY_BYTES)
            ),
        });
    }
    Ok(bytes)
}

/// What a workload may use; also what the scheduler reserves for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRequest {
    pub cpu_millicores: u64,
    pub memory_bytes: u64,
    /// `None`: the node runtime's default limit (4096 processes, so that a
    /// fork bomb stays in its container).
    #[serde(default)]
    pub pids: Option<u64>,
}

impl Default for ResourceRequest {
    fn default() -> Self {
        ResourceRequest {
            cpu_millicores: DEFAULT_CPU_MILLIS,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            pids: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// The node's own network: for what truly needs it (a node agent, a host-wide proxy).
    Host,
    /// Loopback only.
    None,
    /// A namespace of its own on the node's bridge, with an address from the node's subnet,
    /// outbound NAT and published ports (decision 55). The default: two replicas on one
    /// node then never fight over a port, and a container sees only its own network.
    #[default]
    Bridge,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Host => "host",
            NetworkMode::None => "none",
            NetworkMode::Bridge => "bridge",
        }
    }
}

impl std::str::FromStr for NetworkMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "bridge" => Ok(NetworkMode::Bridge),
            "host" => Ok(NetworkMode::Host),
            "none" => Ok(NetworkMode::None),
            other => Err(format!("network {other:?}: use bridge, host or none")),
        }
    }
}

/// What to run: the same for a task and for each replica of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    /// A registry reference such as `10.88.0.1:5000/busybox:1`.
    pub image: String,
    /// Replaces the image's `Cmd` (its `Entrypoint` stays) when not empty.
    #[serde(default)]
    pub command: Vec<String>,
    /// Replaces the image's `Entrypoint` when given.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub workdir: Option<String>,
    /// `UID` or `UID:GID`; the image's user when absent.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub resources: ResourceRequest,
    /// Labels a node must carry.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub network: NetworkMode,
    /// Host ports forwarded to the container (bridge network only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<PortMapping>,
    #[serde(default)]
    pub readonly_root: bool,
    /// The architectures the image is published for (OCI names: `amd64`, `arm64`), as the
    /// master read them from the registry when the work was created; empty when unknown
    /// (any node may try). Set by the master: what a client sends here is replaced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// What the node probes to know the container works (`crate::health`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::HealthCheck>,
    /// Named volumes and host paths mounted in the container (`crate::volume`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::volume::VolumeMount>,
    /// The secrets it reads, by name, as files in `/run/secrets` (`crate::secret`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Environment variables whose values are secrets, by variable: the secret's name,
    /// never its value (`--env KEY=secret:NAME`, for programs that read only their
    /// environment). The node puts the value in the container's environment at its start.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// Files copied into the container's `/input` before it starts (tasks only): the
    /// `sha256:…` digest of a tar archive uploaded to the master (`cloudos run --input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
}

/// What a non-admin sees in place of an environment variable's value.
pub const HIDDEN_VALUE: &str = "<hidden>";

impl WorkloadSpec {
    /// Hides the values of the environment (names stay): specs are shown back with their
    /// values only to admins, since people put credentials there. Secret references
    /// (`secret_env`) name a secret, never its value, and stay.
    pub fn hide_env(&mut self) {
        self.env
            .values_mut()
            .for_each(|v| *v = HIDDEN_VALUE.to_owned());
    }

    /// `image` with its own command and the default resources.
    pub fn new(image: impl Into<String>) -> Self {
        WorkloadSpec {
            image: image.into(),
            command: Vec::new(),
            entrypoint: None,
            env: BTreeMap::new(),
            workdir: None,
            user: None,
            resources: ResourceRequest::default(),
            node_selector: BTreeMap::new(),
            network: NetworkMode::Bridge,
            publish: Vec::new(),
            readonly_root: false,
            platforms: Vec::new(),
            health: None,
            volumes: Vec::new(),
            secrets: Vec::new(),
            secret_env: BTreeMap::new(),
            input: None,
        }
    }

    /// Every secret it reads, as a file or in its environment, each once.
    pub fn secret_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .secrets
            .iter()
            .chain(self.secret_env.values())
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Sorts `KEY=VALUE` pairs into plain values and secret references (`secret:NAME`).
    pub fn set_env(&mut self, pairs: impl IntoIterator<Item = (String, String)>) {
        for (key, value) in pairs {
            match crate::secret::env_reference(&value) {
                Some(name) => {
                    self.secret_env.insert(key, name.to_owned());
                }
                None => {
                    self.env.insert(key, value);
                }
            }
        }
    }

    /// The environment as `set_env` takes it: plain values and `secret:NAME` references.
    pub fn env_pairs(&self) -> BTreeMap<String, String> {
        let mut pairs = self.env.clone();
        for (key, name) in &self.secret_env {
            pairs.insert(key.clone(), format!("{}{name}", crate::secret::ENV_PREFIX));
        }
        pairs
    }

    /// The named volumes it mounts, each once.
    pub fn volume_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .volumes
            .iter()
            .filter_map(crate::volume::VolumeMount::volume)
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Checks everything that does not need the image or a node.
    pub fn validate(&self) -> Result<(), SpecError> {
        let image = self.image.trim();
        if image.is_empty() {
            return Err(SpecError::NoImage);
        }
        if image.contains(char::is_whitespace) || image.starts_with(['/', ':', '@']) {
            return Err(SpecError::Image(self.image.clone()));
        }
        let r = &self.resources;
        if r.cpu_millicores == 0 || r.cpu_millicores > MAX_CPU_MILLIS {
            return Err(SpecError::OutOfRange {
                what: "CPU",
                value: format_cpu(r.cpu_millicores),
                range: format!("1m to {}", format_cpu(MAX_CPU_MILLIS)),
            });
        }
        if !(MIN_MEMORY_BYTES..=MAX_MEMORY_BYTES).contains(&r.memory_bytes) {
            return Err(SpecError::OutOfRange {
                what: "memory",
                value: format_bytes(r.memory_bytes),
                range: format!(
                    "{} to {}",
                    format_bytes(MIN_MEMORY_BYTES),
                    format_bytes(MAX_MEMORY_BYTES)
                ),
            });
        }
        if let Some(p) = r.pids {
            if p == 0 || p > MAX_PIDS {
                return Err(SpecError::OutOfRange {
                    what: "pids",
                    value: p.to_string(),
                    range: format!("1 to {MAX_PIDS}"),
                });
            }
        }
        for key in self.env.keys() {
            if !is_env_key(key) {
                return Err(SpecError::Env(key.clone()));
            }
        }
        if let Some(user) = &self.user {
            parse_user(user)?;
        }
        if let Some(dir) = &self.workdir {
            if !dir.starts_with('/') {
                return Err(SpecError::Workdir(dir.clone()));
            }
        }
        crate::volume::validate_mounts(&self.volumes)?;
        crate::secret::validate_refs(&self.secrets)?;
        crate::secret::validate_env_refs(&self.secret_env, &self.env)?;
        if self.secret_names().len() > crate::secret::MAX_SECRETS {
            return Err(SpecError::Secret(format!(
                "{} secrets: a container reads at most {}",
                self.secret_names().len(),
                crate::secret::MAX_SECRETS
            )));
        }
        if let Some(check) = &self.health {
            check.validate(self.network)?;
        }
        if let Some(digest) = &self.input {
            validate_input_digest(digest)?;
        }
        self.validate_publish()
    }

    fn validate_publish(&self) -> Result<(), SpecError> {
        if self.publish.is_empty() {
            return Ok(());
        }
        if self.network != NetworkMode::Bridge {
            return Err(SpecError::PublishNeedsBridge(self.network.as_str()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.publish {
            if !seen.insert((p.host, p.protocol)) {
                return Err(SpecError::PublishedTwice(format!(
                    "{}/{}",
                    p.host, p.protocol
                )));
            }
        }
        Ok(())
    }
}

/// Where a task finds its input files.
pub const INPUT_DIR: &str = "/input";
/// Largest input archive: it travels whole to the node.
pub const MAX_INPUT_BYTES: u64 = 64 << 20;

/// An input's digest: `sha256:` and 64 lower-case hex digits.
pub fn validate_input_digest(digest: &str) -> Result<(), SpecError> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(SpecError::Input(digest.chars().take(80).collect()))
    }
}

/// `POST /v1/inputs`: the archive the master keeps, by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputInfo {
    pub digest: String,
    pub bytes: u64,
}

/// Whether `key` may name an environment variable: letters, digits and `_`, not starting
/// with a digit.
pub fn is_env_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `KEY=VALUE` from the command line.
pub fn parse_env(text: &str) -> Result<(String, String), SpecError> {
    match text.split_once('=') {
        Some((k, v)) if is_env_key(k) => Ok((k.to_owned(), v.to_owned())),
        _ => Err(SpecError::Env(text.to_owned())),
    }
}

/// Longest label key or value.
pub const MAX_LABEL_LEN: usize = 63;

/// Whether `text` may be a label key or value: 1 to [`MAX_LABEL_LEN`] letters, digits, `.`,
/// `-`, `_` and `/`. One rule for the node settings, the installer and the API.
pub fn is_label_text(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_LABEL_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/'))
}

/// `key=value` from the command line.
pub fn parse_selector(text: &str) -> Result<(String, String), SpecError> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(SpecError::Selector(text.to_owned())),
    }
}

/// `UID` or `UID:GID` → `(uid, gid)`; the gid defaults to the uid.
pub fn parse_user(text: &str) -> Result<(u32, u32), SpecError> {
    let bad = || SpecError::User(text.to_owned());
    match text.split_once(':') {
        Some((u, g)) => Ok((u.parse().map_err(|_| bad())?, g.parse().map_err(|_| bad())?)),
        None => {
            let uid = text.parse().map_err(|_| bad())?;
            Ok((uid, uid))
        }
    }
}

pub fn validate_service_name(name: &str) -> Result<(), SpecError> {
    let ok = (1..=40).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(SpecError::ServiceName(name.to_owned()))
    }
}

/// A create request's id, which the CLI makes once per command and sends again with each
/// retry: the master makes at most one task or service per id, so an answer lost in a
/// crash (or a timeout) costs nothing but the retry.
pub fn validate_request_id(id: &str) -> Result<(), SpecError> {
    let ok = (8..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(SpecError::RequestId(id.chars().take(80).collect()))
    }
}

/// A fresh request id: 128 random bits in hex.
pub fn new_request_id() -> Result<String, crate::util::RandomError> {
    Ok(crate::util::to_hex(&crate::util::random_bytes::<16>()?))
}

/// `cloudos run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCreateRequest {
    pub spec: WorkloadSpec,
    /// New runs after the first when a run is lost (its node died) or fails to start.
    #[serde(default)]
    pub retries: u32,
    /// Makes the create idempotent ([`validate_request_id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The task's deadline: seconds it may run, counted from its first start (the queue
    /// and the image pull do not count); past it the task is stopped and fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

/// The longest deadline a task may be given: a year, which is "never" in practice and
/// keeps every sum of times far from overflowing.
pub const MAX_TIMEOUT_SECS: u64 = 365 * 86_400;

/// A task's `timeout_secs`: 1 s to [`MAX_TIMEOUT_SECS`].
pub fn validate_timeout(secs: u64) -> Result<(), SpecError> {
    if (1..=MAX_TIMEOUT_SECS).contains(&secs) {
        Ok(())
    } else {
        Err(SpecError::OutOfRange {
            what: "timeout",
            value: format!("{secs}s"),
            range: format!("1s to {}d", MAX_TIMEOUT_SECS / 86_400),
        })
    }
}

/// Where a task (or a replica) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for a node; `reason` says why none fits.
    Queued,
    /// Assigned; the node is fetching the image.
    Pulling,
    Running,
    /// Exited with code 0.
    Succeeded,
    /// Exited otherwise, was killed, or could not start.
    Failed,
    /// Its node went away with it and no retry is left.
    Lost,
    Cancelled,
}

impl TaskState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Lost | TaskState::Cancelled
        )
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskState::Queued => "queued",
            TaskState::Pulling => "pulling",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Lost => "lost",
            TaskState::Cancelled => "cancelled",
        })
    }
}

/// Image download progress of a run, for the CLI's progress bar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullProgress {
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// What a run uses of its node, from its container's cgroup: CPU over the last heartbeat
/// interval, memory now, block I/O since it started; and from its link on the node's
/// bridge, the bytes it received and sent since it started (bridge network only: on the
/// host network its traffic is the node's). The agent measures it for each heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskUsage {
    pub cpu_millicores: u64,
    pub memory_bytes: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    #[serde(default)]
    pub net_rx_bytes: u64,
    #[serde(default)]
    pub net_tx_bytes: u64,
}

/// A task, or one replica of a service, as the master keeps and shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// `t-` and 10 hex digits for tasks; `<service>-<n>` for replicas.
    pub id: String,
    pub spec: WorkloadSpec,
    /// The service this is a replica of.
    #[serde(default)]
    pub service: Option<String>,
    pub state: TaskState,
    pub node: Option<String>,
    /// Why it waits, failed or was lost, in words.
    #[serde(default)]
    pub reason: Option<String>,
    /// The current run (`<id>.<attempt>`), the unit assigned to a node.
    pub run: Option<String>,
    pub attempts: u32,
    pub retries: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    #[serde(default)]
    pub oom_killed: bool,
    #[serde(default)]
    pub pull: Option<PullProgress>,
    /// Bytes of the `/output` archive the master holds, once collected.
    #[serde(default)]
    pub output_bytes: Option<u64>,
    /// Replicas: restarts of the container on its node.
    #[serde(default)]
    pub restarts: u32,
    /// The container's address on its node's bridge while it runs (`bridge` network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
    /// The id of the request that made this task, kept with it: a retry of that request
    /// gets this task back instead of a second one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Its deadline (`--timeout`), in seconds from its first start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// While queued: its place in the queue, 1 for the next to be placed. Set on what the
    /// API shows, never stored (it changes with every placement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u32>,
    /// While it runs: what it uses, as its node's last heartbeat said. Shown, never
    /// stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TaskUsage>,
    /// While it runs with a health check: what the check says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::Health>,
    /// Why its check last judged it unhealthy (the probe's error, a command's exit code
    /// and output), while that stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_reason: Option<String>,
    /// Replicas: the revision of their service they run (`crate::revision`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
    /// Replicas an update replaces: when it took this one out of its service's rotation;
    /// it is stopped a moment later.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub leaving_since: Option<OffsetDateTime>,
}

impl TaskInfo {
    /// A new task (or replica) waiting for the scheduler.
    pub fn queued(
        id: String,
        spec: WorkloadSpec,
        service: Option<String>,
        retries: u32,
        now: OffsetDateTime,
    ) -> Self {
        TaskInfo {
            health_reason: None,
            id,
            spec,
            service,
            state: TaskState::Queued,
            node: None,
            reason: Some("waiting for the scheduler".into()),
            run: None,
            attempts: 0,
            retries,
            created_at: now,
            started_at: None,
            finished_at: None,
            exit_code: None,
            signal: None,
            oom_killed: false,
            pull: None,
            output_bytes: None,
            restarts: 0,
            address: None,
            request_id: None,
            timeout_secs: None,
            queue_position: None,
            usage: None,
            health: None,
            revision: None,
            leaving_since: None,
        }
    }
}

/// `cloudos deploy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCreateRequest {
    pub name: String,
    pub spec: WorkloadSpec,
    pub replicas: u32,
    /// Makes the create idempotent ([`validate_request_id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// `cloudos scale`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleRequest {
    pub replicas: u32,
}

/// A service as the master keeps it; its replicas are [`TaskInfo`]s with `service` set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub name: String,
    pub spec: WorkloadSpec,
    pub replicas: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The service's virtual address, from the master's service range; absent from a
    /// service an older master made (given one when the master loads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
    /// The id of the request that made it: its retry gets this service back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The revision `spec` is (0 in a record from before revisions: it is 1).
    #[serde(default)]
    pub revision: u32,
    /// The revisions kept, oldest first, the current one included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<crate::revision::Revision>,
    #[serde(default)]
    pub policy: crate::revision::UpdatePolicy,
    /// The update under way, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<crate::revision::Update>,
    /// The index the next new replica gets: an index is never used twice, so the late
    /// reports of a removed replica's run are never taken for a new replica's.
    #[serde(default)]
    pub next_index: u32,
}

/// `cloudos ps` for a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub name: String,
    pub spec: WorkloadSpec,
    /// Its virtual address: `NAME.svc.cloudos` in containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
    pub replicas: u32,
    pub running: u32,
    pub instances: Vec<TaskInfo>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The revision `spec` is.
    #[serde(default)]
    pub revision: u32,
    /// The revisions kept, oldest first (`cloudos history`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<crate::revision::Revision>,
    #[serde(default)]
    pub policy: crate::revision::UpdatePolicy,
    /// The update under way, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<crate::revision::Update>,
}

/// Answers that carry specs, whose environment values a non-admin must not see (see
/// [`WorkloadSpec::hide_env`]).
pub trait HideEnv {
    fn hide_env(&mut self);
}

impl HideEnv for TaskInfo {
    fn hide_env(&mut self) {
        self.spec.hide_env();
    }
}

impl HideEnv for ServiceInfo {
    /// In the spec, every replica and every revision kept.
    fn hide_env(&mut self) {
        self.spec.hide_env();
        self.instances.iter_mut().for_each(HideEnv::hide_env);
        self.revisions.iter_mut().for_each(|r| r.spec.hide_env());
    }
}

impl HideEnv for WorkloadList {
    fn hide_env(&mut self) {
        self.tasks.hide_env();
        self.services.hide_env();
    }
}

impl<T: HideEnv> HideEnv for Vec<T> {
    fn hide_env(&mut self) {
        self.iter_mut().for_each(T::hide_env);
    }
}

/// `cloudos ps`: tasks and services.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadList {
    pub tasks: Vec<TaskInfo>,
    pub services: Vec<ServiceInfo>,
    /// What the master keeps of finished work (absent from older masters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionInfo>,
}

/// The master's retention of finished tasks, as `cloudos ps -a` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionInfo {
    /// Finished tasks are deleted this long after they ended.
    pub keep_finished_secs: u64,
    /// At most this many finished tasks are kept, the oldest deleted first.
    pub max_finished: u64,
    /// Logs and outputs of all tasks together are kept within this, oldest first.
    pub files_budget_bytes: u64,
    /// What they take now.
    pub files_bytes: u64,
    /// A task's log beyond this is dropped (its head is kept).
    pub log_cap_bytes: u64,
}

/// Which of a container's output streams a log chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn file_name(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// One line of `GET /v1/tasks/<id>/logs` (newline-delimited JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub stream: LogStream,
    /// Text as the container wrote it (invalid UTF-8 replaced).
    pub data: String,
}

/// A run assigned to a node (master → agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAssignment {
    pub run: String,
    pub spec: WorkloadSpec,
    /// Replicas restart on their node (with backoff) when they exit; tasks never do.
    pub restart: bool,
    /// The values of the secrets the spec names, filled in by the master as it sends the
    /// assignment (never stored with it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<crate::secret::RunSecret>,
    /// The cluster's credentials for the image's registry, when it has some; filled in
    /// like `secrets`. The node's own `registries.toml` wins over them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_auth: Option<crate::registry::RegistryAuth>,
    /// The size limits of the spec's named volumes that have one, by name: the node sets
    /// them as it mounts the volumes (a limit changed while the node was away takes
    /// effect here).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub volume_limits: std::collections::BTreeMap<String, u64>,
}

/// What a run is doing on its node (agent → master).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RunState {
    Pulling {
        #[serde(default)]
        progress: PullProgress,
    },
    Running {
        #[serde(default)]
        restarts: u32,
        /// The container's address on its node's bridge (`bridge` network only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<std::net::Ipv4Addr>,
        /// What its health check says (none without one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        health: Option<crate::health::Health>,
        /// With *unhealthy*: why (the probe's error, a command's exit code and output).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        health_reason: Option<String>,
    },
    /// The container exited (tasks: final; replicas: about to restart).
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
        oom_killed: bool,
        /// Bytes of `/output` uploaded to the master, when there was any.
        output_bytes: Option<u64>,
    },
    /// It could not run: image not found, wrong architecture, command missing, ….
    Failed { reason: String },
    /// Stopped because the master asked.
    Stopped,
}

impl RunState {
    /// Whether the run is over on the node (nothing left to report after it).
    pub fn is_final(&self, restart: bool) -> bool {
        match self {
            RunState::Pulling { .. } | RunState::Running { .. } => false,
            RunState::Exited { .. } => !restart,
            RunState::Failed { .. } | RunState::Stopped => true,
        }
    }
}

/// A run's state report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    pub run: String,
    #[serde(flatten)]
    pub state: RunState,
}

/// Log bytes of a run (agent → master); `offset` is where `data` starts in the stream, so
/// the master appends each byte once even when the agent resends after a reconnect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    pub run: String,
    pub stream: LogStream,
    pub offset: u64,
    pub data: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_references_in_the_environment_keep_only_the_name() {
        let mut spec = WorkloadSpec::new("busybox");
        spec.set_env([
            ("A".to_owned(), "1".to_owned()),
            ("DB_PASSWORD".to_owned(), "secret:db".to_owned()),
        ]);
        spec.secrets = vec!["db".into(), "tls.key".into()];
        assert_eq!(spec.env, BTreeMap::from([("A".into(), "1".into())]));
        assert_eq!(spec.secret_env["DB_PASSWORD"], "db");
        assert_eq!(spec.secret_names(), vec!["db", "tls.key"]);
        assert_eq!(spec.env_pairs()["DB_PASSWORD"], "secret:db");
        assert!(spec.validate().is_ok());

        let mut both = spec.clone();
        both.env.insert("DB_PASSWORD".into(), "plain".into());
        assert!(both.validate().unwrap_err().to_string().contains("both"));
        let mut bad = spec.clone();
        bad.secret_env.insert("K".into(), "../etc".into());
        assert!(bad.validate().is_err());
        let mut key = spec;
        key.secret_env.insert("1K".into(), "db".into());
        assert!(key.validate().is_err());
    }

    #[test]
    fn cpu_quantities() {
        for (text, want) in [
            ("500m", 500),
            ("2", 2000),
            ("0.5", 500),
            ("1m", 1),
            (" 250m ", 250),
        ] {
            assert_eq!(parse_cpu(text), Ok(want), "{text}");
        }
        for bad in ["", "m", "-1", "abc", "1.5m", "0", "0m", "2000000m", "nan"] {
            assert!(parse_cpu(bad).is_err(), "{bad} accepted");
        }
        assert!(parse_cpu("0")
            .unwrap_err()
            .to_string()
            .contains("out of range"));
    }

    #[test]
    fn memory_quantities() {
        for (text, want) in [
            ("64Mi", 64 << 20),
            ("1Gi", 1 << 30),
            ("512M", 512_000_000),
            ("8388608", 8 << 20),
        ] {
            assert_eq!(parse_memory(text), Ok(want), "{text}");
        }
        for bad in [
            "",
            "Mi",
            "-64Mi",
            "64MB",
            "64mi",
            "1Ki",
            "99999999Ti",
            "1.5Gi",
        ] {
            assert!(parse_memory(bad).is_err(), "{bad} accepted");
        }
    }

    fn spec() -> WorkloadSpec {
        WorkloadSpec {
            command: vec!["true".into()],
            ..WorkloadSpec::new("10.0.0.1:5000/busybox:1")
        }
    }

    #[test]
    fn specs_are_checked() {
        assert_eq!(spec().validate(), Ok(()));
        let mut s = spec();
        s.image = " ".into();
        assert_eq!(s.validate(), Err(SpecError::NoImage));
        let mut s = spec();
        s.resources.memory_bytes = 1;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("memory 1B is out of range"));
        let mut s = spec();
        s.resources.pids = Some(0);
        assert!(s.validate().is_err());
        let mut s = spec();
        s.env.insert("1BAD".into(), "x".into());
        assert_eq!(s.validate(), Err(SpecError::Env("1BAD".into())));
        let mut s = spec();
        s.user = Some("root".into());
        assert_eq!(s.validate(), Err(SpecError::User("root".into())));
        let mut s = spec();
        s.workdir = Some("tmp".into());
        assert!(s.validate().is_err());
    }

    #[test]
    fn published_ports_need_the_bridge_and_differ() {
        let port = |t: &str| t.parse::<PortMapping>().expect(t);
        let mut s = spec();
        s.publish = vec![port("8080:80")];
        s.network = NetworkMode::Host;
        assert_eq!(s.validate(), Err(SpecError::PublishNeedsBridge("host")));
        s.network = NetworkMode::None;
        assert_eq!(s.validate(), Err(SpecError::PublishNeedsBridge("none")));
        s.network = NetworkMode::Bridge;
        assert_eq!(s.validate(), Ok(()));
        // The same number over tcp and udp are two ports.
        s.publish.push(port("8080:81/udp"));
        assert_eq!(s.validate(), Ok(()));
        s.publish.push(port("8080:82"));
        assert_eq!(
            s.validate(),
            Err(SpecError::PublishedTwice("8080/tcp".into()))
        );
        for mode in ["bridge", "host", "none"] {
            assert_eq!(
                mode.parse::<NetworkMode>().map(NetworkMode::as_str),
                Ok(mode)
            );
        }
        assert!("overlay".parse::<NetworkMode>().is_err());
    }

    #[test]
    fn command_line_pieces() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env("=x").is_err());
        assert_eq!(
            parse_selector("disk=ssd"),
            Ok(("disk".into(), "ssd".into()))
        );
        assert!(parse_selector("ssd").is_err());
        assert_eq!(parse_user("1000"), Ok((1000, 1000)));
        assert_eq!(parse_user("1000:50"), Ok((1000, 50)));
        assert!(validate_service_name("web-1").is_ok());
        assert!(validate_service_name("Web").is_err());
        assert!(validate_service_name("1web").is_err());
    }

    #[test]
    fn run_reports_are_tagged_json() {
        let r = RunReport {
            run: "t-1.1".into(),
            state: RunState::Exited {
                code: Some(3),
                signal: None,
                oom_killed: false,
                output_bytes: None,
            },
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""state":"exited""#), "{text}");
        assert_eq!(serde_json::from_str::<RunReport>(&text).unwrap(), r);
    }
}
