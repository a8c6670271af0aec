//! The node's side of workloads: runs the master assigns arrive on the agent's connection,
//! are pulled, started through the container runtime (one shim per container, see the
//! `cloudos-runtime` crate), watched, and reported back with their logs and `/output`.
//!
//! The executor outlives connections: runs keep going while the master is unreachable, their
//! reports wait in the outbox, and the next hello tells the master what each run is doing.
//! Owns `<data>/images` (the content store), `<data>/containers` (the runtime's state),
//! `<data>/outputs/<run>` (each run's `/output`) and, through `network`, the node's bridge.

mod credentials;
mod dns;
mod gc;
mod health;
mod image;
mod input;
mod logs;
mod network;
mod output;
mod run;
mod secrets;
mod spec;
mod usage;
mod volumes;

pub use volumes::usage as volume_usage;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cloudos_cluster::api::{AgentMessage, MasterMessage};
use cloudos_cluster::client::ApiClient;
use cloudos_cluster::units::format_bytes;
use cloudos_cluster::workload::{RunAssignment, RunReport, RunState, TaskUsage};
use cloudos_oci::PullConfig;
use cloudos_runtime::{Runtime, ShimCommand};
use tokio::sync::{mpsc, watch};

/// Messages waiting for the connection; when full, runs wait before reporting more.
const OUTBOX: usize = 1024;
/// How long an ended run's final state is kept for hellos after it was reported.
const KEEP_ENDED: Duration = Duration::from_secs(600);

/// What the executor needs to know about the node.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    pub data_dir: PathBuf,
    /// How the runtime starts a container's shim (`nodeos shim …`).
    pub shim: ShimCommand,
    /// Registries (`host:port`) reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Ports of this node its bridge containers may open.
    pub container_node_ports: Vec<cloudos_cluster::publish::NodePort>,
    /// Directories of this node containers may mount, by prefix.
    pub volume_host_paths: Vec<String>,
    /// The node's resolvers, for the containers' DNS (`None`: `/etc/resolv.conf`).
    pub resolv_conf: Option<PathBuf>,
    /// Where other nodes reach this node's mesh, when not at its own address.
    pub mesh_endpoint: Option<std::net::SocketAddr>,
}

struct RunEntry {
    image: String,
    /// The named volumes it mounts: not deleted while it runs.
    volumes: Vec<String>,
    restart: bool,
    state: RunState,
    /// Set to true to stop the run.
    stop: watch::Sender<bool>,
    /// Where the master's copy of the logs ends: `(stdout, stderr)`.
    log_from: watch::Sender<(u64, u64)>,
    ended_at: Option<Instant>,
}

pub(crate) struct Shared {
    config: ExecutorConfig,
    runs: Mutex<HashMap<String, RunEntry>>,
    outbox: mpsc::Sender<AgentMessage>,
    images: Result<cloudos_oci::ImageStore, String>,
    runtime: Result<Runtime, String>,
    pull: PullConfig,
    /// The client of the current connection's identity, for uploads.
    api: Mutex<Option<ApiClient>>,
    /// When each image was last used by a run, for the image gc.
    image_last_used: Mutex<HashMap<String, Instant>>,
    /// The node's bridge, its subnet and each bridge run's address and ports.
    network: network::Network,
    /// Each run's last cgroup reading, for the heartbeats' usage.
    usage: Mutex<usage::Sampler>,
    /// Volumes the master removed while a run here still mounted them (it was stopping):
    /// deleted when the last such run ends.
    doomed_volumes: Mutex<std::collections::BTreeSet<String>>,
}

/// Clone-able handle on the node's runs.
#[derive(Clone)]
pub struct Executor {
    shared: Arc<Shared>,
}

impl Executor {
    /// The executor and the outbox the connection drains. Containers left by an earlier
    /// agent are recovered (kept if their shim lives, cleaned up otherwise).
    pub fn new(config: ExecutorConfig) -> (Executor, mpsc::Receiver<AgentMessage>) {
        let (outbox, rx) = mpsc::channel(OUTBOX);
        let images = cloudos_oci::ImageStore::open(config.data_dir.join("images"))
            .map_err(|e| format!("the image store cannot be opened: {e}"));
        if let Ok(store) = &images {
            if let Err(e) = store.clean_tmp() {
                log::warn!("cannot clean the image store's leftovers: {e}");
            }
        }
        // No run is under way yet: the secrets an earlier agent left mounted go.
        secrets::unmount_all(&config.data_dir);
        input::remove_all(&config.data_dir);
        let runtime = Runtime::open(config.data_dir.join("containers"), config.shim.clone())
            .map_err(|e| format!("the container runtime cannot start: {e}"));
        match &runtime {
            Ok(rt) => match rt.recover() {
                Ok(report) => {
                    if !report.lost.is_empty() || !report.running.is_empty() {
                        log::info!(
                            "containers of an earlier agent: {} still running, {} cleaned up",
                            report.running.len(),
                            report.lost.len()
                        );
                    }
                    // Their runs are unknown to this agent now: the master re-assigns
                    // what it still wants, so nothing of theirs should linger.
                    for id in report
                        .running
                        .iter()
                        .chain(&report.exited)
                        .chain(&report.lost)
                    {
                        if let Err(e) = rt.delete(id) {
                            log::warn!("cannot remove container {id}: {e}");
                        }
                    }
                }
                Err(e) => log::warn!("cannot recover earlier containers: {e}"),
            },
            Err(e) => log::warn!("{e}"),
        }
        let pull = PullConfig {
            plain_http_registries: config.insecure_registries.clone(),
            ..PullConfig::default()
        };
        let network = network::Network::new(
            &config.data_dir,
            &config.container_node_ports,
            config.resolv_conf.clone(),
            config.mesh_endpoint,
        );
        let shared = Shared {
            network,
            config,
            runs: Mutex::new(HashMap::new()),
            outbox,
            images,
            runtime,
            pull,
            api: Mutex::new(None),
            image_last_used: Mutex::new(HashMap::new()),
            usage: Mutex::new(usage::Sampler::default()),
            doomed_volumes: Mutex::new(std::collections::BTreeSet::new()),
        };
        let shared = Arc::new(shared);
        tokio::spawn(gc::run(Arc::clone(&shared)));
        (Executor { shared }, rx)
    }

    /// The client uploads go through (the connection sets it on each connect).
    pub fn set_api(&self, api: ApiClient) {
        *self.shared.api.lock().unwrap_or_else(|e| e.into_inner()) = Some(api);
    }

    /// The node's container subnet and the cluster's container range, from the master's
    /// welcome.
    pub async fn set_subnet(&self, subnet: Option<&str>, range: Option<&str>) {
        self.shared.network.set_subnet(subnet, range).await;
    }

    /// The master's address, closed to the node's containers.
    pub async fn set_master(&self, master: std::net::Ipv4Addr) {
        self.shared.network.set_master(master).await;
    }

    /// The node's end of the mesh, for the hello.
    pub fn mesh_hello(&self) -> Option<cloudos_cluster::mesh::MeshHello> {
        self.shared.network.mesh_hello()
    }

    /// The node's mesh peers, from the master.
    pub async fn set_mesh(&self, peers: Vec<cloudos_cluster::mesh::MeshPeer>) {
        self.shared.network.set_mesh(peers).await;
    }

    /// The services' table from the master: the node's DNS and its NAT table follow it.
    pub async fn set_services(&self, table: cloudos_cluster::routing::ServiceTable) {
        self.shared.network.set_services(table).await;
    }

    /// Every run the node knows, for the hello.
    pub fn runs(&self) -> Vec<RunReport> {
        let mut runs = self.shared.lock_runs();
        runs.retain(|_, e| e.ended_at.is_none_or(|at| at.elapsed() < KEEP_ENDED));
        runs.iter()
            .map(|(run, e)| RunReport {
                run: run.clone(),
                state: e.state.clone(),
            })
            .collect()
    }

    /// `(containers, container cgroups)` on this node, for the metrics that show a leak:
    /// state directories under the runtime's root, and cgroups under the runtime's parent
    /// cgroup (v2, or v1's memory hierarchy).
    pub fn footprint(&self) -> (usize, usize) {
        let dirs = |path: &std::path::Path| {
            std::fs::read_dir(path)
                .map(|d| d.flatten().filter(|e| e.path().is_dir()).count())
                .unwrap_or(0)
        };
        let containers = dirs(&self.shared.config.data_dir.join("containers"));
        let parent = cloudos_runtime::cgroup::parent();
        let cgroups = ["/sys/fs/cgroup", "/sys/fs/cgroup/memory"]
            .iter()
            .map(|root| std::path::Path::new(root).join(parent))
            .find(|p| p.is_dir())
            .map(|p| dirs(&p))
            .unwrap_or(0);
        (containers, cgroups)
    }

    /// What each of `runs` uses now, from its container's cgroup, for a heartbeat.
    pub fn usage(&self, runs: &[String]) -> std::collections::BTreeMap<String, TaskUsage> {
        let mut sampler = self.shared.usage.lock().unwrap_or_else(|e| e.into_inner());
        let links = usage::link_traffic();
        // What the node's end of a run's veth pair receives, the container sent.
        let bridge_traffic = |run: &str| {
            let (rx, tx) = links.get(&cloudos_containernet::attach::node_link_name(run))?;
            Some((*tx, *rx))
        };
        sampler.sample(
            runs,
            Instant::now(),
            |run| cloudos_runtime::cgroup::usage(&cloudos_runtime::cgroup::dirs(run)),
            bridge_traffic,
        )
    }

    /// The runs that are not over, for heartbeats.
    pub fn active_runs(&self) -> Vec<String> {
        let runs = self.shared.lock_runs();
        let mut active: Vec<String> = runs
            .iter()
            .filter(|(_, e)| e.ended_at.is_none())
            .map(|(run, _)| run.clone())
            .collect();
        active.sort();
        active
    }

    /// A message from the master about workloads.
    pub fn handle(&self, message: MasterMessage) {
        match message {
            MasterMessage::Assign(assignment) => self.assign(*assignment),
            MasterMessage::Stop { run } => {
                if let Some(entry) = self.shared.lock_runs().get(&run) {
                    log::info!("stopping run {run} as the master asks");
                    let _ = entry.stop.send(true);
                }
            }
            MasterMessage::LogOffsets {
                run,
                stdout,
                stderr,
            } => {
                if let Some(entry) = self.shared.lock_runs().get(&run) {
                    let _ = entry.log_from.send((stdout, stderr));
                }
            }
            MasterMessage::RemoveVolume { name } => self.remove_volume(&name),
            MasterMessage::SetVolumeLimit { name, size_limit } => {
                match volumes::set_limit(&self.shared.config.data_dir, &name, size_limit) {
                    Ok(true) => log::info!(
                        "volume {name}: size limit now {}",
                        size_limit.map_or("none".to_owned(), format_bytes)
                    ),
                    Ok(false) => {}
                    Err(e) => log::warn!("{e}"),
                }
            }
            _ => {}
        }
    }

    /// Deletes a named volume the master forgot; while a run here still mounts it (one
    /// the master stopped and forgot, still stopping), once that run ends.
    fn remove_volume(&self, name: &str) {
        let in_use = self.shared.mounting(name);
        if !in_use.is_empty() {
            log::info!(
                "volume {name} is deleted once {} ends (stopping)",
                in_use.join(", ")
            );
            self.shared.doomed().insert(name.to_owned());
            return;
        }
        self.shared.delete_volume(name);
    }

    fn assign(&self, assignment: RunAssignment) {
        let mut runs = self.shared.lock_runs();
        if let Some(existing) = runs.get(&assignment.run) {
            if existing.ended_at.is_none() {
                // Assigned again after a reconnect: it runs already.
                return;
            }
        }
        let (stop, stop_rx) = watch::channel(false);
        let (log_from, log_rx) = watch::channel((0, 0));
        runs.insert(
            assignment.run.clone(),
            RunEntry {
                image: assignment.spec.image.clone(),
                volumes: assignment
                    .spec
                    .volume_names()
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
                restart: assignment.restart,
                state: RunState::Pulling {
                    progress: Default::default(),
                },
                stop,
                log_from,
                ended_at: None,
            },
        );
        drop(runs);
        log::info!("run {} assigned: {}", assignment.run, assignment.spec.image);
        let shared = Arc::clone(&self.shared);
        tokio::spawn(run::run(shared, assignment, stop_rx, log_rx));
    }
}

impl Shared {
    fn lock_runs(&self) -> MutexGuard<'_, HashMap<String, RunEntry>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Images of runs that are not over, and when each image was last used.
    fn image_use(&self) -> (std::collections::BTreeSet<String>, HashMap<String, Instant>) {
        let in_use = self
            .lock_runs()
            .values()
            .filter(|e| e.ended_at.is_none())
            .map(|e| e.image.clone())
            .collect();
        let last = self
            .image_last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (in_use, last)
    }

    fn api(&self) -> Option<ApiClient> {
        self.api.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn doomed(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        self.doomed_volumes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The runs here that have not ended and mount volume `name`.
    fn mounting(&self, name: &str) -> Vec<String> {
        self.lock_runs()
            .iter()
            .filter(|(_, e)| e.ended_at.is_none() && e.volumes.iter().any(|v| v == name))
            .map(|(run, _)| run.clone())
            .collect()
    }

    fn delete_volume(&self, name: &str) {
        match volumes::remove(&self.config.data_dir, name) {
            Ok(true) => log::info!("volume {name} deleted as the master asked"),
            Ok(false) => log::info!("volume {name} was not here"),
            Err(e) => log::warn!("{e}"),
        }
    }

    /// Deletes the volumes waiting for their last run to end that no run mounts now.
    fn delete_freed_volumes(&self) {
        let doomed: Vec<String> = self.doomed().iter().cloned().collect();
        for name in doomed {
            if self.mounting(&name).is_empty() {
                self.doomed().remove(&name);
                self.delete_volume(&name);
            }
        }
    }

    /// Records and reports a run's new state.
    async fn report(&self, run: &str, state: RunState) {
        let mut ended = false;
        {
            let mut runs = self.lock_runs();
            if let Some(entry) = runs.get_mut(run) {
                if state.is_final(entry.restart) {
                    ended = true;
                    entry.ended_at = Some(Instant::now());
                    self.image_last_used
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(entry.image.clone(), Instant::now());
                }
                entry.state = state.clone();
            }
        }
        if ended {
            self.delete_freed_volumes();
        }
        let report = RunReport {
            run: run.to_owned(),
            state,
        };
        // Closed only when the agent stops.
        let _ = self.outbox.send(AgentMessage::Run(report)).await;
    }
}
