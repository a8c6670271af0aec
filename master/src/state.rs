//! What every request handler and background task of a master shares: the store, the CA,
//! the node roster, the revoked serials, the join rate limiter and the current TLS
//! configuration. Owns no behaviour beyond small accessors.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use cloudos_cluster::pki::CertSerial;
use cloudos_cluster::ClusterCa;
use cloudos_store::{PeopleStore, Store};
use tokio_rustls::rustls::ServerConfig;

use super::bootstrap::Cluster;
use super::config::MasterConfig;
use super::error::{ApiError, MasterError};
use super::ratelimit::FailureLimiter;
use super::roster::Roster;
use super::serving;

pub struct MasterState {
    pub config: MasterConfig,
    pub store: Arc<dyn Store>,
    pub ca: ClusterCa,
    pub cluster_name: String,
    pub roster: Roster,
    /// The users on record (see `credentials`).
    pub users: super::credentials::Users,
    /// The API keys on record (see `credentials`).
    pub api_keys: super::credentials::ApiKeys,
    /// Who changed what (see `audit`).
    pub audit: super::audit::AuditLog,
    /// The metric history's memory between samples (see `history`).
    pub history: super::history::Sampler,
    /// Browser sessions and one-time login links (see `dashboard::session`).
    pub sessions: super::dashboard::session::Sessions,
    /// Serials no longer accepted, mirrored from the store for the TLS accept path.
    revoked: RwLock<HashSet<CertSerial>>,
    pub join_limiter: FailureLimiter,
    /// Failed dashboard logins per address, apart from joins.
    pub login_limiter: FailureLimiter,
    /// Replaced when the serving certificate is reissued; new connections use the latest.
    tls: RwLock<Arc<ServerConfig>>,
    pub local_addr: SocketAddr,
    pub started: Instant,
    pub metrics: super::metrics::MasterMetrics,
    pub workloads: super::workloads::Workloads,
    /// Drains under way or ended, for their progress (see `nodeops`).
    pub drains: super::nodeops::Drains,
    /// Announces the mesh to every node after hellos, a burst at a time.
    pub mesh: super::mesh::Announcer,
    /// The binaries `install.sh` fetches, with their digests: read at the first request,
    /// not at start, so hashing the master's own binary never delays a boot.
    downloads: tokio::sync::OnceCell<super::downloads::Downloads>,
    /// The signed update bundles kept for the nodes.
    pub releases: super::releases::Releases,
    /// The current (or last) rolling upgrade.
    pub rollout: super::rollout::Rollouts,
    /// Seals and opens secrets with the cluster's key.
    pub sealer: super::secrets::Sealer,
    /// The etcd cluster, unfenced, on the leader of several masters (its members are
    /// managed through it); `None` on a master on its own.
    pub etcd: Option<Arc<cloudos_store::EtcdStore>>,
    /// Every master's API address, on a master among several (`ha::masters`).
    pub masters: RwLock<Vec<String>>,
}

impl MasterState {
    pub fn new(
        config: MasterConfig,
        store: Arc<dyn Store>,
        cluster: Cluster,
        local_addr: SocketAddr,
    ) -> Result<Self, MasterError> {
        let revoked = store
            .revoked_certs()?
            .into_iter()
            .map(|r| r.serial)
            .collect();
        let roster = Roster::new(store.list_nodes()?);
        let users = super::credentials::Users::new(store.list_users()?);
        let api_keys = super::credentials::ApiKeys::new(store.list_api_keys()?);
        let audit = super::audit::AuditLog::open(store.as_ref())?;
        let (containers, services) = (config.container_range, config.service_range);
        if containers.overlaps(&services) {
            return Err(MasterError::Ranges {
                containers,
                services,
            });
        }
        if let Err(e) = services.check_lan(&super::addresses::host_ipv4_networks()) {
            log::error!("service_range: {e}: services' addresses hide those machines");
        }
        let workloads = super::workloads::Workloads::open(
            store.as_ref(),
            config.data_dir.join("master").join("workloads"),
            &config.scheduler,
            &config.insecure_registries,
            config.retention,
            services.net(),
        )?;
        let ips = super::addresses::host_addresses();
        let (tls, _) =
            serving::server_config(&cluster.ca, &config.node_name, &ips, &config.tls_san)?;
        let releases = super::releases::Releases::new(
            &config.data_dir.join("master"),
            cloudos_release::trusted(),
        );
        Ok(MasterState {
            config,
            store,
            sealer: super::secrets::Sealer::new(&cluster.ca.key_pem()),
            ca: cluster.ca,
            cluster_name: cluster.name,
            roster,
            users,
            api_keys,
            audit,
            sessions: Default::default(),
            history: Default::default(),
            revoked: RwLock::new(revoked),
            join_limiter: FailureLimiter::for_joins(),
            login_limiter: FailureLimiter::for_joins(),
            tls: RwLock::new(Arc::new(tls)),
            local_addr,
            started: Instant::now(),
            metrics: super::metrics::MasterMetrics::default(),
            workloads,
            drains: super::nodeops::Drains::default(),
            mesh: super::mesh::Announcer::default(),
            downloads: tokio::sync::OnceCell::new(),
            releases,
            rollout: super::rollout::Rollouts::default(),
            etcd: None,
            masters: RwLock::new(Vec::new()),
        })
    }

    /// What `install.sh` may download (see `master::downloads`).
    pub async fn downloads(&self) -> &super::downloads::Downloads {
        use super::downloads::{own_name, own_path, Downloads};
        self.downloads
            .get_or_init(|| async {
                let dir = self.config.downloads_dir.clone();
                tokio::task::spawn_blocking(move || {
                    Downloads::scan(&dir, own_path().map(|path| (own_name(), path)))
                })
                .await
                .unwrap_or_default()
            })
            .await
    }

    pub fn is_revoked(&self, serial: &CertSerial) -> bool {
        self.revoked
            .read()
            .map(|set| set.contains(serial))
            .unwrap_or(true)
    }

    pub fn mark_revoked(&self, serial: CertSerial) {
        if let Ok(mut set) = self.revoked.write() {
            set.insert(serial);
        }
    }

    pub fn tls_config(&self) -> Option<Arc<ServerConfig>> {
        self.tls.read().ok().map(|c| Arc::clone(&c))
    }

    pub fn set_tls_config(&self, config: ServerConfig) {
        if let Ok(mut current) = self.tls.write() {
            *current = Arc::new(config);
        }
    }

    /// Runs blocking store work off the async workers.
    pub async fn blocking<T, F>(self: &Arc<Self>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&MasterState) -> Result<T, ApiError> + Send + 'static,
    {
        let state = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&state))
            .await
            .map_err(ApiError::task)?
    }
}
