//! A node's side of an upgrade the master asked for (`MasterMessage::Upgrade`): fetch the
//! bundle over this node's certificate, hand it to the OS to check and install, and say
//! where it is in every heartbeat until the node reboots.
//!
//! The agent does not read the bundle: checking signatures and writing boot slots is the
//! OS's (`nodeos::upgrade`, through [`super::InstallRelease`]); the agent only carries.
//! One upgrade at a time: a second request while one runs is ignored (and said so).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cloudos_cluster::api::{UpgradeReport, UpgradeState};
use cloudos_cluster::client::ApiClient;
use cloudos_release::policy::{self, Intent};

use super::telemetry::{arch, nodeos_version};
use super::{InstallRelease, SwitchSlot};

pub struct Upgrader {
    install: Option<InstallRelease>,
    switch: Option<SwitchSlot>,
    dir: PathBuf,
    state: Mutex<Option<UpgradeReport>>,
    /// The client of the current session (a renewal replaces it).
    api: Mutex<Option<ApiClient>>,
}

impl Upgrader {
    pub fn new(
        install: Option<InstallRelease>,
        switch: Option<SwitchSlot>,
        data_dir: &Path,
    ) -> Upgrader {
        Upgrader {
            install,
            switch,
            dir: data_dir.join("agent").join("upgrade"),
            state: Mutex::new(None),
            api: Mutex::new(None),
        }
    }

    pub fn set_api(&self, api: ApiClient) {
        if let Ok(mut current) = self.api.lock() {
            *current = Some(api);
        }
    }

    /// The upgrade this agent runs or ran since it started.
    pub fn report(&self) -> Option<UpgradeReport> {
        self.state.lock().ok().and_then(|s| s.clone())
    }

    fn set(&self, id: &str, version: &str, state: UpgradeState, reason: Option<String>) {
        if let Some(reason) = &reason {
            log::warn!("upgrade to {version}: {reason}");
        } else {
            log::info!("upgrade to {version}: {state:?}");
        }
        if let Ok(mut s) = self.state.lock() {
            *s = Some(UpgradeReport {
                id: id.to_owned(),
                version: version.to_owned(),
                from: nodeos_version(),
                state,
                reason,
            });
        }
    }

    fn busy(&self) -> bool {
        matches!(
            self.report().map(|r| r.state),
            Some(UpgradeState::Downloading | UpgradeState::Installing | UpgradeState::Rebooting)
        )
    }

    /// Starts the upgrade in the background.
    pub fn start(self: &Arc<Self>, id: String, version: String, allow_downgrade: bool) {
        if self.busy() {
            log::warn!("the master asked for an upgrade to {version} while one runs; ignored");
            return;
        }
        let Some(install) = self.install.clone() else {
            self.set(
                &id,
                &version,
                UpgradeState::Failed,
                Some(
                    "this node cannot install releases (a live boot, or not CloudOS on a disk)"
                        .into(),
                ),
            );
            return;
        };
        let Some(api) = self.api.lock().ok().and_then(|a| a.clone()) else {
            return;
        };
        self.set(&id, &version, UpgradeState::Downloading, None);
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let outcome = me.run(&api, &id, &version, allow_downgrade, install).await;
            match outcome {
                Ok(()) => me.set(&id, &version, UpgradeState::Rebooting, None),
                Err(reason) => me.set(&id, &version, UpgradeState::Failed, Some(reason)),
            }
        });
    }

    /// Switches to the other slot in the background (`cloudos node rollback`); reported
    /// like an upgrade to the version that slot holds.
    pub fn roll_back(self: &Arc<Self>, id: String) {
        let other = "the other slot's system";
        if self.busy() {
            log::warn!("the master asked for a rollback while an upgrade runs; ignored");
            return;
        }
        let Some(switch) = self.switch.clone() else {
            self.set(
                &id,
                other,
                UpgradeState::Failed,
                Some(
                    "this node has no other system slot (a live boot, or not CloudOS on a disk)"
                        .into(),
                ),
            );
            return;
        };
        self.set(&id, other, UpgradeState::Installing, None);
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let order = id.clone();
            let outcome = tokio::task::spawn_blocking(move || switch(&order))
                .await
                .map_err(|e| format!("the switch stopped: {e}"))
                .and_then(|r| r);
            match outcome {
                Ok(version) => me.set(&id, &version, UpgradeState::Rebooting, None),
                Err(reason) => me.set(&id, other, UpgradeState::Failed, Some(reason)),
            }
        });
    }

    async fn run(
        &self,
        api: &ApiClient,
        id: &str,
        version: &str,
        allow_downgrade: bool,
        install: InstallRelease,
    ) -> Result<(), String> {
        // The same or an older version is refused before a byte is downloaded; the install
        // checks the signed manifest by the same rule again.
        if let Ok(wanted) = cloudos_release::Version::parse(version) {
            let intent = if allow_downgrade {
                Intent::Force
            } else {
                Intent::Upgrade
            };
            policy::check_version(&wanted, cloudos_release::version(), intent)
                .map_err(|e| format!("release refused: {e}"))?;
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let file = self.dir.join("bundle");
        // Streamed to the data partition, never whole in memory.
        let downloaded = match std::fs::File::create(&file) {
            Ok(out) => {
                let mut out = std::io::BufWriter::new(out);
                api.release_bundle_to(version, arch(), &mut out).await
            }
            Err(e) => return Err(format!("cannot keep the download: {e}")),
        };
        if let Err(e) = downloaded {
            let _ = std::fs::remove_file(&file);
            return Err(format!("cannot download the release: {e}"));
        }
        self.set(id, version, UpgradeState::Installing, None);
        let path = file.clone();
        let order = id.to_owned();
        let result = tokio::task::spawn_blocking(move || install(&path, allow_downgrade, &order))
            .await
            .map_err(|e| format!("the install stopped: {e}"))
            .and_then(|r| r);
        let _ = std::fs::remove_file(&file);
        result
    }
}
