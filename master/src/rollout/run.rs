//! The task that drives a rollout: starts the nodes [`plan::next`] names, runs each one's
//! steps, and settles the rollout's phase when nothing is left under way. One task at a
//! time ([`super::Rollouts::claim`]); it ends when the rollout settles and is spawned again
//! by a resume, an abort, or the master's next start.
//!
//! A compute node: drain (`nodeops::drain`: cordon, replicas moved first, tasks finish),
//! the upgrade message, then its reports under that request until it is Ready on the
//! version with its slot confirmed (or says why not), then uncordon and wait until every
//! service that was whole before its drain is whole again. Uncordoning before that wait
//! lets a service that needs this node's room come back.
//!
//! The master: the request is stored first, then the slot written and PID 1 asked for the
//! reboot; the master that starts next reads how it went from its own report.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudos_cluster::api::{MasterMessage, NodeState, UpgradeState};
use cloudos_cluster::rollout::{Rollout, RolloutRequest, RolloutStep};
use time::OffsetDateTime;
use tokio::task::JoinSet;

use super::{change, plan};
use crate::nodeops::{self, DrainOptions};
use crate::state::MasterState;

/// How often a waiting step looks again.
const POLL: Duration = Duration::from_secs(1);
/// How long a master that asked PID 1 for its reboot waits for it before giving up.
const REBOOT_WAIT: Duration = Duration::from_secs(180);

/// Drives the current rollout unless a task already does.
pub fn spawn(state: Arc<MasterState>) {
    if !state.rollout.claim() {
        return;
    }
    tokio::spawn(async move {
        drive(&state).await;
        state.rollout.release();
    });
}

async fn drive(state: &Arc<MasterState>) {
    let mut tasks: JoinSet<()> = JoinSet::new();
    // After a restart, the nodes that were under way go on from their step.
    if let Some(r) = state.rollout.get() {
        for name in plan::under_way(&r) {
            let s = Arc::clone(state);
            tasks.spawn(async move { node_steps(&s, &name).await });
        }
    }
    loop {
        let starts = match change(state, |r| {
            let starts = plan::next(r);
            for name in &starts {
                if let Some(node) = r.node_mut(name) {
                    node.step = if node.master {
                        RolloutStep::Upgrading
                    } else {
                        RolloutStep::Draining
                    };
                    node.started_at = Some(OffsetDateTime::now_utc());
                    node.detail = None;
                }
            }
            starts
        }) {
            Ok(Some(starts)) => starts,
            Ok(None) => return,
            Err(e) => {
                log::error!("rollout: cannot record its progress: {e}; it stops here");
                return;
            }
        };
        for name in starts {
            let s = Arc::clone(state);
            tasks.spawn(async move { node_steps(&s, &name).await });
        }
        if tasks.is_empty() {
            let settled = change(state, |r| {
                if !plan::next(r).is_empty() || !plan::under_way(r).is_empty() {
                    return None;
                }
                r.phase = plan::settled_phase(r);
                r.finished_at = Some(OffsetDateTime::now_utc());
                Some(r.clone())
            });
            match settled {
                Ok(Some(Some(r))) => {
                    log::info!(
                        "rollout to {} ended: {:?}{}",
                        r.request.version,
                        r.phase,
                        r.reason.map(|why| format!(" ({why})")).unwrap_or_default()
                    );
                    return;
                }
                Ok(Some(None)) => continue,
                Ok(None) => return,
                Err(e) => {
                    log::error!("rollout: cannot record its end: {e}");
                    return;
                }
            }
        }
        tokio::select! {
            _ = tasks.join_next() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// One node's steps from where it is; records how it ended.
async fn node_steps(state: &Arc<MasterState>, name: &str) {
    let Some(rollout) = state.rollout.get() else {
        return;
    };
    let Some(master) = rollout.node(name).map(|n| n.master) else {
        return;
    };
    let outcome = if master {
        upgrade_master(state, &rollout).await
    } else {
        upgrade_compute(state, name, &rollout.request).await
    };
    let recorded = change(state, |r| {
        let version = r.request.version.clone();
        if let Some(node) = r.node_mut(name) {
            node.finished_at = Some(OffsetDateTime::now_utc());
            match &outcome {
                Ok(()) => {
                    node.step = RolloutStep::Done;
                    node.detail = Some(format!("runs {version}"));
                }
                Err(reason) => {
                    node.step = RolloutStep::Failed;
                    node.detail = Some(reason.clone());
                }
            }
        }
        if let Err(reason) = &outcome {
            r.reason = Some(format!("node {name}: {reason}"));
        }
    });
    if let Err(e) = recorded {
        log::error!("rollout: cannot record how node {name} went: {e}");
    }
    match outcome {
        Ok(()) => log::info!("rollout: node {name} runs {}", rollout.request.version),
        Err(reason) => log::warn!("rollout: node {name} failed: {reason}; the rollout stops"),
    }
}

/// Sets the node's step and words (stored; a failure to store is logged, the step goes on).
fn note(state: &MasterState, name: &str, step: Option<RolloutStep>, detail: Option<String>) {
    let changed = change(state, |r| {
        if let Some(node) = r.node_mut(name) {
            if let Some(step) = step {
                node.step = step;
            }
            node.detail = detail;
        }
    });
    if let Err(e) = changed {
        log::warn!("rollout: cannot record node {name}'s progress: {e}");
    }
}

fn step_of(state: &MasterState, name: &str) -> Option<(RolloutStep, Option<String>)> {
    let r = state.rollout.get()?;
    let node = r.node(name)?;
    Some((node.step, node.request.clone()))
}

async fn upgrade_compute(
    state: &Arc<MasterState>,
    name: &str,
    request: &RolloutRequest,
) -> Result<(), String> {
    // Services whole now are waited for before the next node goes.
    let whole: BTreeSet<String> = whole_services(state);
    let (mut step, mut id) = step_of(state, name).ok_or("it left the rollout")?;
    if step == RolloutStep::Draining {
        let options = DrainOptions::with_timeout(Duration::from_secs(request.drain_timeout_secs));
        let mut last = String::new();
        let mut progress = |status: &cloudos_cluster::nodeops::DrainStatus| {
            let moving = status.moves.iter().filter(|m| !m.done).count();
            let running = status
                .tasks
                .iter()
                .filter(|t| t.outcome == "running")
                .count();
            let words = format!("{moving} replica(s) to move, {running} task(s) running");
            if words != last {
                note(state, name, None, Some(words.clone()));
                last = words;
            }
        };
        nodeops::drain(state, name, options, &mut progress)
            .await
            .map_err(|e| e.to_string())?;
        step = RolloutStep::Upgrading;
        let from = state
            .roster
            .get(name)
            .and_then(|n| n.telemetry.map(|t| t.nodeos_version));
        let changed = change(state, |r| {
            if let Some(node) = r.node_mut(name) {
                node.step = step;
                node.from = from.or(node.from.take());
                node.detail = Some("telling it to upgrade".into());
            }
        });
        changed.map_err(|e| format!("the master cannot record the rollout: {e}"))?;
    }
    if step == RolloutStep::Upgrading {
        let request_id = match id.take() {
            Some(id) => id,
            None => send_upgrade(state, name, request)?,
        };
        wait_upgraded(state, name, &request_id, request).await?;
        note(
            state,
            name,
            Some(RolloutStep::Settling),
            Some("back on the version; uncordoning it and waiting for services".into()),
        );
        step = RolloutStep::Settling;
    }
    if step == RolloutStep::Settling {
        nodeops::set_cordon(state, name, false)
            .await
            .map_err(|e| e.to_string())?;
        wait_services(state, name, &whole, request).await?;
    }
    Ok(())
}

/// Records a new request id, then sends the upgrade.
fn send_upgrade(
    state: &MasterState,
    name: &str,
    request: &RolloutRequest,
) -> Result<String, String> {
    let id = crate::ids::request_id("u")?;
    let changed = change(state, |r| {
        if let Some(node) = r.node_mut(name) {
            node.request = Some(id.clone());
        }
    });
    changed.map_err(|e| format!("the master cannot record the rollout: {e}"))?;
    let message = MasterMessage::Upgrade {
        id: id.clone(),
        version: request.version.clone(),
        allow_downgrade: request.allow_downgrade,
    };
    if !state.roster.send(name, message) {
        return Err("it is not connected to the master, so it cannot be told to upgrade".into());
    }
    log::info!(
        "rollout: node {name} told to upgrade to {} ({id})",
        request.version
    );
    Ok(id)
}

/// Until the node runs the version on a confirmed slot (request `id` done), says why not,
/// or the node's time runs out.
async fn wait_upgraded(
    state: &MasterState,
    name: &str,
    id: &str,
    request: &RolloutRequest,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(request.node_timeout_secs);
    let mut last = String::new();
    loop {
        let node = state.roster.get(name).ok_or("the node was removed")?;
        let telemetry = node.telemetry.as_ref();
        let system = telemetry.and_then(|t| t.system.as_deref());
        let report = system
            .and_then(|s| s.upgrade.as_ref())
            .filter(|u| u.id == id);
        let words = match report {
            Some(u) if matches!(u.state, UpgradeState::Failed | UpgradeState::FellBack) => {
                let why = u.reason.clone().unwrap_or_else(|| "no reason given".into());
                return Err(format!("{}: {why}", u.state.describe()));
            }
            Some(u)
                if u.state == UpgradeState::Done
                    && node.state == NodeState::Ready
                    && system.is_some_and(|s| s.confirmed)
                    && telemetry.is_some_and(|t| t.nodeos_version == request.version) =>
            {
                return Ok(());
            }
            _ if node.state != NodeState::Ready => "away (rebooting)".to_owned(),
            Some(u) => u.state.describe().to_owned(),
            None => "waiting for the node to start".to_owned(),
        };
        if words != last {
            note(state, name, None, Some(words.clone()));
            last = words;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "not back on {} after {}s (last: {last})",
                request.version, request.node_timeout_secs
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The services with every replica running.
fn whole_services(state: &MasterState) -> BTreeSet<String> {
    state
        .workloads
        .book()
        .workloads()
        .services
        .into_iter()
        .filter(|s| s.running >= s.replicas)
        .map(|s| s.name)
        .collect()
}

/// Those of `among` that still exist and have fewer replicas running than asked (a service
/// deleted meanwhile is not waited for).
fn short_services(state: &MasterState, among: &BTreeSet<String>) -> Vec<String> {
    let book = state.workloads.book();
    among
        .iter()
        .filter_map(|name| book.service(name))
        .filter(|s| s.running < s.replicas)
        .map(|s| s.name)
        .collect()
}

async fn wait_services(
    state: &MasterState,
    name: &str,
    whole: &BTreeSet<String>,
    request: &RolloutRequest,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(request.node_timeout_secs);
    loop {
        let short = short_services(state, whole);
        if short.is_empty() {
            return Ok(());
        }
        let words = format!(
            "waiting for service(s) {} to have every replica running",
            short.join(", ")
        );
        if Instant::now() >= deadline {
            return Err(format!(
                "{words}: still short after {}s",
                request.node_timeout_secs
            ));
        }
        note(state, name, None, Some(words));
        tokio::time::sleep(POLL).await;
    }
}

/// The master's own step: write the other slot and reboot into it, or, after that reboot,
/// read how it went.
async fn upgrade_master(state: &Arc<MasterState>, rollout: &Rollout) -> Result<(), String> {
    let hooks = state.config.self_upgrade.clone().ok_or(
        "this master cannot upgrade itself (installed neither to a disk nor with the curl line)",
    )?;
    let me = rollout
        .nodes
        .iter()
        .find(|n| n.master)
        .ok_or("the master left the rollout")?;
    let version = rollout.request.version.clone();
    if let Some(id) = &me.request {
        return wait_self(state, &hooks, id, &rollout.request).await;
    }
    let id = crate::ids::request_id("u")?;
    let arch = super::master_arch();
    let bundle = state
        .releases
        .path(&version, arch)
        .map_err(|e| e.to_string())?;
    // Stored before the slot is written: the master that boots next must know.
    let changed = change(state, |r| {
        if let Some(node) = r.node_mut(&me.name) {
            node.request = Some(id.clone());
            node.detail = Some("writing its other slot".into());
        }
    });
    changed.map_err(|e| format!("the master cannot record the rollout: {e}"))?;
    log::info!("rollout: the master upgrades itself to {version} ({id})");
    let allow = rollout.request.allow_downgrade;
    let install = Arc::clone(&hooks.install);
    let order = id.clone();
    tokio::task::spawn_blocking(move || install(&bundle, allow, &order))
        .await
        .map_err(|e| format!("the install stopped: {e}"))??;
    note(
        state,
        &me.name,
        None,
        Some("rebooting into the new slot".into()),
    );
    tokio::time::sleep(REBOOT_WAIT).await;
    Err(format!(
        "its slot was written and a reboot asked for, but the master still runs {}s later",
        REBOOT_WAIT.as_secs()
    ))
}

/// After the master's reboot: its own report under request `id`.
async fn wait_self(
    state: &MasterState,
    hooks: &super::SelfUpgrade,
    id: &str,
    request: &RolloutRequest,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(request.node_timeout_secs);
    let name = state.config.node_name.clone();
    loop {
        let report = (hooks.report)();
        let upgrade = report.as_ref().and_then(|s| s.upgrade.as_ref());
        match upgrade {
            Some(u) if u.id == id => match u.state {
                UpgradeState::Failed | UpgradeState::FellBack => {
                    let why = u.reason.clone().unwrap_or_else(|| "no reason given".into());
                    return Err(format!("{}: {why}", u.state.describe()));
                }
                UpgradeState::Done
                    if cloudos_release::version().to_string() == request.version =>
                {
                    return Ok(());
                }
                state_now => note(state, &name, None, Some(state_now.describe().into())),
            },
            _ => {
                return Err(
                    "the master restarted before its new system was in place; resume the rollout to try again"
                        .into(),
                )
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "its new slot was not confirmed healthy in {}s",
                request.node_timeout_secs
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}
