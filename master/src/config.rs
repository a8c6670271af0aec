//! What a master is told, and the defaults. Owns no behaviour; the `nodeos master` flags and
//! the boot settings are mapped onto it by `nodeos` (its `roles` module).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cloudos_cluster::pki::NODE_CERT_LIFETIME;

use super::workloads::retention::Retention;
use cloudos_cluster::client::DEFAULT_API_PORT;

/// The cluster name when none is given.
pub const DEFAULT_CLUSTER_NAME: &str = "cloudos";
/// How often agents send a heartbeat (with their telemetry), unless told otherwise.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// Silence before a node on its agent connection is NotReady, unless told otherwise: the
/// master pings every connection four times within it (decision 67), so a node whose
/// link or power went is known within this, and its replicas run elsewhere about half a
/// second later.
pub const DEFAULT_NOT_READY_AFTER: Duration = Duration::from_secs(2);
/// Missed heartbeats before a node that only posts heartbeats (no agent connection, so
/// no pings) is NotReady.
pub const MISSED_HEARTBEATS: u32 = 3;
/// Pings per `not_ready_after`.
const PINGS_PER_LIMIT: u32 = 4;
/// The data partition.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cloudos";

/// Everything a master needs to know, from flags, boot settings or a test.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub cluster_name: String,
    /// This master's name: serving certificate DNS name, mDNS host, status.
    pub node_name: String,
    pub heartbeat_interval: Duration,
    pub not_ready_after: Duration,
    pub cert_lifetime: Duration,
    pub mdns: bool,
    /// How often live state (last seen, telemetry) is written to the store.
    pub flush_interval: Duration,
    /// How often each node's metric history gets a point (a minute; tests go faster).
    pub history_interval: Duration,
    /// The scheduler's policy: `spread` or `binpack`.
    pub scheduler: String,
    /// Where the binaries for `install.sh` are (see `master::downloads`).
    pub downloads_dir: PathBuf,
    /// Registries reached over plain HTTP when reading image architectures.
    pub insecure_registries: Vec<String>,
    /// Extra names and addresses in the serving certificate.
    pub tls_san: Vec<String>,
    /// Addresses a node may name as its mesh endpoint although its connection comes from
    /// elsewhere (the setting `mesh_endpoint_ranges`; decision 56).
    pub mesh_endpoint_ranges: Vec<ipnet::IpNet>,
    /// What is kept of finished tasks, and of each task's log.
    pub retention: Retention,
    /// Scheduled backups, when asked for (see `backup::schedule`).
    pub backups: Option<super::backup::Schedule>,
    /// How this master upgrades itself (an installed appliance, or a curl-line host);
    /// `None`: it does not, and a rollout leaves it out.
    pub self_upgrade: Option<super::rollout::SelfUpgrade>,
    /// Where the nodes' container subnets come from (the setting `container_range`).
    pub container_range: cloudos_cluster::subnets::ClusterRange,
    /// Where services' virtual addresses come from (the setting `service_range`).
    pub service_range: cloudos_cluster::subnets::ClusterRange,
    /// A master that runs workloads whose own node has not joined yet: where to write a
    /// one-use token for that node's agent (`bootstrap::own_node_token`). `None`: no token.
    pub own_node_token: Option<PathBuf>,
    /// Set for a master among several, on etcd (see `ha`); `None` keeps the state in the
    /// embedded store of a master on its own.
    pub ha: Option<super::ha::HaConfig>,
}

impl MasterConfig {
    /// How often the master pings each agent connection: a few times within
    /// `not_ready_after`, never more often than every 100 ms.
    pub fn ping_interval(&self) -> Duration {
        (self.not_ready_after / PINGS_PER_LIMIT).max(Duration::from_millis(100))
    }

    /// How long a master that starts leading (a master's start, a new leader after a
    /// failover) lets nodes connect before their silence counts: an agent whose master
    /// stalled or died notices after [`agent_silence_limit`] and connects again, and
    /// until then its work must not be given up as lost.
    ///
    /// [`agent_silence_limit`]: cloudos_cluster::api::agent_silence_limit
    pub fn takeover_grace(&self) -> Duration {
        cloudos_cluster::api::agent_silence_limit(self.heartbeat_interval) + self.not_ready_after
    }

    /// The silence after which a node that only posts heartbeats is NotReady.
    pub fn not_ready_without_connection(&self) -> Duration {
        (self.heartbeat_interval * MISSED_HEARTBEATS).max(self.not_ready_after)
    }

    /// Defaults for a master named `node_name` keeping its state in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>, node_name: impl Into<String>) -> Self {
        let data_dir = data_dir.into();
        MasterConfig {
            downloads_dir: data_dir.join("downloads"),
            insecure_registries: Vec::new(),
            tls_san: Vec::new(),
            mesh_endpoint_ranges: Vec::new(),
            data_dir,
            listen: SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, DEFAULT_API_PORT)),
            cluster_name: DEFAULT_CLUSTER_NAME.to_owned(),
            node_name: node_name.into(),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            not_ready_after: DEFAULT_NOT_READY_AFTER,
            cert_lifetime: Duration::from_secs(NODE_CERT_LIFETIME.whole_seconds().unsigned_abs()),
            mdns: true,
            flush_interval: Duration::from_secs(60),
            history_interval: crate::history::FINE_EVERY,
            scheduler: "spread".to_owned(),
            retention: Retention::default(),
            backups: None,
            self_upgrade: None,
            container_range: cloudos_cluster::subnets::ClusterRange::default(),
            service_range: cloudos_cluster::subnets::ClusterRange::services_default(),
            own_node_token: None,
            ha: None,
        }
    }
}
