//! Rolling upgrades (`cloudos upgrade`): the compute nodes one batch at a time (cordon,
//! drain, upgrade, back Ready on the version with the slot confirmed, uncordon, every
//! service up), then the master itself. A failed node halts the rollout.
//!
//! - [`plan`]: the rules, pure: which nodes, in what order, what refuses a start, what
//!   goes next, what phase.
//! - [`run`]: the task that drives a rollout by those rules, one node's steps at a time.
//!
//! This module owns the rollout's record: in memory ([`Rollouts`]) and in the store's
//! `meta` table under `rollout`, written at every step, so that a rollout survives a
//! restart of the master, its own upgrade included (the master writes its step before it
//! reboots into the new slot, and reads how that went when it is back). One rollout at a
//! time; the record of the last one stays until the next starts.

pub mod plan;
mod run;

use std::path::Path;
use std::sync::{Arc, Mutex};

use cloudos_cluster::api::{SystemReport, UpgradeReport};
use cloudos_cluster::rollout::{NodeSystem, Rollout, RolloutPhase, RolloutRequest, UpgradeStatus};
use cloudos_store::{StoreError, Table};
use time::OffsetDateTime;

use crate::state::MasterState;

const STORE_KEY: &str = "rollout";

/// Why a rollout was refused. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("{0:?} is not a version (MAJOR.MINOR.PATCH[-PRE])")]
    BadVersion(String),
    #[error("--max-unavailable must be at least 1")]
    NoneAvailable,
    #[error("no compute node has all the labels asked for; see `cloudos node list`")]
    NoNodes,
    #[error("every node already runs {0}")]
    NothingToDo(String),
    #[error("the rollout is refused, nothing was started: {0}")]
    Refused(String),
    #[error("a rollout to {version} is under way (`cloudos upgrade status`); wait for it, or `cloudos upgrade abort`")]
    Busy { version: String },
    #[error("no rollout to {0}; start one with `cloudos upgrade --to VERSION`")]
    Nothing(&'static str),
    #[error("the rollout to {version} is {phase}: only a failed or aborted rollout resumes")]
    NotResumable { version: String, phase: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How the master upgrades itself: the same hooks an agent has (`nodeos` sets them when it
/// runs on an installed disk, or installed on a host by the curl line). `install` checks
/// the bundle, writes the other slot (or puts the new binary in place) and asks for the
/// reboot (or the unit's restart); `report` says which slot this boot is (`host`), whether
/// it is confirmed, and how the last upgrade went.
#[derive(Clone)]
pub struct SelfUpgrade {
    pub install: InstallSelf,
    pub report: ReportSelf,
}

/// See [`SelfUpgrade::install`]: the bundle, whether a downgrade is allowed, the request id.
pub type InstallSelf = Arc<dyn Fn(&Path, bool, &str) -> Result<(), String> + Send + Sync>;

/// See [`SelfUpgrade::report`].
pub type ReportSelf = Arc<dyn Fn() -> Option<SystemReport> + Send + Sync>;

impl std::fmt::Debug for SelfUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SelfUpgrade")
    }
}

/// The current (or last) rollout, and whether a task drives it.
#[derive(Default)]
pub struct Rollouts {
    current: Mutex<Option<Rollout>>,
    /// Set while a [`run`] task drives the rollout.
    driving: Mutex<bool>,
}

impl Rollouts {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Rollout>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self) -> Option<Rollout> {
        self.lock().clone()
    }

    /// Claims the driver's seat; `false` if a task already drives.
    fn claim(&self) -> bool {
        let mut driving = self.driving.lock().unwrap_or_else(|e| e.into_inner());
        !std::mem::replace(&mut *driving, true)
    }

    fn release(&self) {
        *self.driving.lock().unwrap_or_else(|e| e.into_inner()) = false;
    }
}

/// Loads the last rollout at start; one that was running goes on (its nodes under way
/// pick up where they were).
pub fn load(state: &Arc<MasterState>) -> Result<(), StoreError> {
    let Some(bytes) = state.store.get_raw(Table::Meta, STORE_KEY)? else {
        return Ok(());
    };
    let rollout: Rollout = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("the stored rollout is unreadable ({e}); it is forgotten");
            return Ok(());
        }
    };
    let active = rollout.phase.is_active();
    *state.rollout.lock() = Some(rollout);
    if active {
        log::info!("a rollout was under way when the master stopped; it goes on");
        run::spawn(Arc::clone(state));
    }
    Ok(())
}

/// Applies `f` to the current rollout and stores the result (memory only changes once the
/// store has it).
fn change<T>(
    state: &MasterState,
    f: impl FnOnce(&mut Rollout) -> T,
) -> Result<Option<T>, StoreError> {
    let mut current = state.rollout.lock();
    let Some(rollout) = current.as_ref() else {
        return Ok(None);
    };
    let mut next = rollout.clone();
    let out = f(&mut next);
    save(state, &next)?;
    *current = Some(next);
    Ok(Some(out))
}

fn save(state: &MasterState, rollout: &Rollout) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(rollout).map_err(|source| StoreError::Encode {
        table: Table::Meta,
        key: STORE_KEY.into(),
        source,
    })?;
    state.store.put_raw(Table::Meta, STORE_KEY, &bytes)
}

/// The master as a rollout sees it.
fn master_self(state: &MasterState) -> plan::MasterSelf {
    plan::MasterSelf {
        name: state.config.node_name.clone(),
        arch: master_arch().to_owned(),
        version: cloudos_release::version().to_string(),
        can_upgrade: state.config.self_upgrade.is_some(),
    }
}

/// The architecture of this master's releases.
fn master_arch() -> &'static str {
    cloudos_release::Arch::running().map_or(std::env::consts::ARCH, |a| a.as_str())
}

/// Starts a rollout (`POST /v1/rollout`).
pub fn start(
    state: &Arc<MasterState>,
    request: RolloutRequest,
    by: &str,
) -> Result<Rollout, RolloutError> {
    if let Some(r) = state.rollout.get().filter(|r| r.phase.is_active()) {
        return Err(RolloutError::Busy {
            version: r.request.version,
        });
    }
    let nodes = plan::choose(
        &request,
        &state.roster.list(),
        &master_self(state),
        &|arch| state.releases.path(&request.version, arch).is_ok(),
    )?;
    let rollout = Rollout {
        id: format!("r-{}", OffsetDateTime::now_utc().unix_timestamp()),
        request,
        phase: RolloutPhase::Running,
        nodes,
        reason: None,
        by: by.to_owned(),
        started_at: OffsetDateTime::now_utc(),
        finished_at: None,
    };
    {
        let mut current = state.rollout.lock();
        if current.as_ref().is_some_and(|r| r.phase.is_active()) {
            return Err(RolloutError::Busy {
                version: rollout.request.version,
            });
        }
        save(state, &rollout)?;
        *current = Some(rollout.clone());
    }
    log::info!(
        "{by} started a rollout to {} ({} nodes, {} at a time)",
        rollout.request.version,
        rollout.nodes.len(),
        rollout.request.max_unavailable
    );
    run::spawn(Arc::clone(state));
    Ok(rollout)
}

/// `POST /v1/rollout/resume`.
pub fn resume(
    state: &Arc<MasterState>,
    retry_failed: bool,
    by: &str,
) -> Result<Rollout, RolloutError> {
    let resumed = change(state, |r| {
        if !matches!(r.phase, RolloutPhase::Failed | RolloutPhase::Aborted) {
            return Err(RolloutError::NotResumable {
                version: r.request.version.clone(),
                phase: r.phase.as_str().into(),
            });
        }
        plan::resume(r, retry_failed);
        Ok(r.clone())
    })?
    .ok_or(RolloutError::Nothing("resume"))??;
    log::info!(
        "{by} resumed the rollout to {}{}",
        resumed.request.version,
        if retry_failed {
            " (failed nodes tried again)"
        } else {
            ""
        }
    );
    run::spawn(Arc::clone(state));
    Ok(resumed)
}

/// `POST /v1/rollout/abort`: no node starts; nodes under way finish.
pub fn abort(state: &Arc<MasterState>, by: &str) -> Result<Rollout, RolloutError> {
    let rollout = change(state, |r| {
        if r.phase == RolloutPhase::Running {
            r.phase = RolloutPhase::Aborting;
            r.reason = Some(format!("aborted by {by}"));
        }
        r.clone()
    })?
    .ok_or(RolloutError::Nothing("abort"))?;
    if rollout.phase == RolloutPhase::Aborting {
        log::info!("{by} aborted the rollout to {}", rollout.request.version);
        // A rollout whose driver is gone (nothing under way) settles here.
        run::spawn(Arc::clone(state));
    }
    Ok(rollout)
}

/// `GET /v1/rollout`: the rollout and every node's system, the master first.
pub fn status(state: &MasterState) -> UpgradeStatus {
    let mut nodes = vec![master_system(state)];
    for node in state.roster.list() {
        let telemetry = node.telemetry.as_ref();
        let system = telemetry.and_then(|t| t.system.as_deref());
        nodes.push(node_system(
            &node.name,
            "compute",
            match node.state {
                cloudos_cluster::api::NodeState::Ready => "ready",
                _ => "not_ready",
            },
            telemetry.map(|t| t.nodeos_version.clone()),
            system,
        ));
    }
    UpgradeStatus {
        rollout: state.rollout.get(),
        nodes,
    }
}

fn master_system(state: &MasterState) -> NodeSystem {
    let report = state
        .config
        .self_upgrade
        .as_ref()
        .and_then(|hooks| (hooks.report)());
    node_system(
        &state.config.node_name,
        "master",
        "ready",
        Some(cloudos_release::version().to_string()),
        report.as_ref(),
    )
}

fn node_system(
    name: &str,
    role: &str,
    state: &str,
    version: Option<String>,
    system: Option<&SystemReport>,
) -> NodeSystem {
    let upgrade = system.and_then(|s| s.upgrade.as_ref());
    NodeSystem {
        name: name.to_owned(),
        role: role.to_owned(),
        state: state.to_owned(),
        version,
        slot: system.and_then(|s| s.slot.clone()),
        confirmed: system.is_some_and(|s| s.confirmed),
        upgrade: upgrade.map(UpgradeReport::summary),
        reason: upgrade.and_then(|u| u.reason.clone()),
    }
}
