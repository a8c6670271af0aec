//! `cloudos upgrade --to VERSION | status | resume | abort`: the rolling upgrade, and the
//! progress it shows while it waits (each node's step as the master records it). What is
//! printed is a pure function of what the master answers, tested without one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cloudos_cluster::client::ApiClient;
use cloudos_cluster::rollout::{
    Rollout, RolloutNode, RolloutPhase, RolloutRequest, RolloutResume, RolloutStep, UpgradeStatus,
};

use super::Ctx;
use crate::table::Table;

/// How often the command asks the master while it waits.
const POLL: Duration = Duration::from_secs(2);

/// `cloudos upgrade --to VERSION …`: starts the rollout and, unless `wait` is `None`,
/// follows it to its end.
pub async fn start(
    ctx: &Ctx,
    request: &RolloutRequest,
    wait: Option<Duration>,
) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let rollout = client.start_rollout(request).await?;
    eprintln!("{}", started_line(&rollout));
    finish(ctx, &client, rollout, wait).await
}

/// `cloudos upgrade resume [--retry-failed]`.
pub async fn resume(ctx: &Ctx, retry_failed: bool, wait: Option<Duration>) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let rollout = client
        .resume_rollout(&RolloutResume { retry_failed })
        .await?;
    eprintln!("rollout to {} resumed", rollout.request.version);
    finish(ctx, &client, rollout, wait).await
}

/// `cloudos upgrade abort`: no node starts; waits until those under way settled.
pub async fn abort(ctx: &Ctx, wait: Option<Duration>) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let rollout = client.abort_rollout().await?;
    eprintln!(
        "rollout to {}: no more nodes start; nodes under way finish",
        rollout.request.version
    );
    match wait {
        Some(timeout) => {
            let end = follow(&client, rollout, timeout).await?;
            ctx.print(&end, render_rollout)
        }
        None => ctx.print(&rollout, render_rollout),
    }
}

/// `cloudos upgrade status`.
pub async fn status(ctx: &Ctx) -> anyhow::Result<()> {
    let status = ctx.client().await?.upgrade_status().await?;
    ctx.print(&status, render_status)
}

async fn finish(
    ctx: &Ctx,
    client: &ApiClient,
    rollout: Rollout,
    wait: Option<Duration>,
) -> anyhow::Result<()> {
    let Some(timeout) = wait else {
        return ctx.print(&rollout, render_rollout);
    };
    let end = follow(client, rollout, timeout).await?;
    ctx.print(&end, render_rollout)?;
    match end.phase {
        RolloutPhase::Done => Ok(()),
        phase => anyhow::bail!(
            "the rollout to {} {}: {}; see `cloudos upgrade status`, then `cloudos upgrade resume`",
            end.request.version,
            phase.as_str(),
            end.reason.as_deref().unwrap_or("no reason recorded")
        ),
    }
}

/// Polls until the rollout settles, printing each node's new step or words. The master
/// may be away for a while (it upgrades itself last): only a lasting failure counts.
async fn follow(
    client: &ApiClient,
    mut rollout: Rollout,
    timeout: Duration,
) -> anyhow::Result<Rollout> {
    let started = Instant::now();
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    let mut away = false;
    loop {
        for (name, line) in progress_lines(&rollout) {
            if shown.get(&name) != Some(&line) {
                eprintln!("{line} ({}s)", started.elapsed().as_secs());
                shown.insert(name, line);
            }
        }
        if !rollout.phase.is_active() {
            return Ok(rollout);
        }
        if started.elapsed() > timeout {
            anyhow::bail!(
                "the rollout to {} is still {} after {}s; it goes on: follow it with `cloudos upgrade status`",
                rollout.request.version,
                rollout.phase.as_str(),
                timeout.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
        match client.upgrade_status().await {
            Ok(status) => {
                if away {
                    eprintln!("the master answers again");
                    away = false;
                }
                match status.rollout {
                    Some(r) if r.id == rollout.id => rollout = r,
                    _ => anyhow::bail!("the rollout was replaced by another one"),
                }
            }
            Err(e) if e.is_retryable() => {
                if !away {
                    eprintln!("the master does not answer (rebooting into its new slot?); waiting");
                    away = true;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn started_line(r: &Rollout) -> String {
    let todo = r
        .nodes
        .iter()
        .filter(|n| n.step == RolloutStep::Waiting)
        .count();
    format!(
        "rollout to {} started: {todo} node(s) to upgrade, {} at a time{}",
        r.request.version,
        r.request.max_unavailable,
        if r.nodes
            .iter()
            .any(|n| n.master && n.step == RolloutStep::Waiting)
        {
            ", the master last"
        } else {
            ""
        }
    )
}

/// One line per node that started: `node c1: draining: 1 replica(s) to move`.
pub fn progress_lines(r: &Rollout) -> Vec<(String, String)> {
    r.nodes
        .iter()
        .filter(|n| n.step != RolloutStep::Waiting)
        .map(|n| (n.name.clone(), format!("{}: {}", who(n), step_text(n))))
        .collect()
}

fn who(n: &RolloutNode) -> String {
    if n.master {
        format!("master {}", n.name)
    } else {
        format!("node {}", n.name)
    }
}

fn step_text(n: &RolloutNode) -> String {
    let step = step_word(n.step);
    match &n.detail {
        Some(detail) if n.step == RolloutStep::Done || n.step == RolloutStep::Skipped => {
            format!("{step} ({detail})")
        }
        Some(detail) => format!("{step}: {detail}"),
        None => step.to_owned(),
    }
}

fn step_word(step: RolloutStep) -> &'static str {
    match step {
        RolloutStep::Waiting => "waiting",
        RolloutStep::Draining => "draining",
        RolloutStep::Upgrading => "upgrading",
        RolloutStep::Settling => "settling",
        RolloutStep::Done => "done",
        RolloutStep::Skipped => "skipped",
        RolloutStep::Failed => "FAILED",
    }
}

pub fn render_rollout(r: &Rollout) -> String {
    let mut out = format!(
        "rollout {} to {}: {}{}\n",
        r.id,
        r.request.version,
        r.phase.as_str(),
        r.reason
            .as_deref()
            .map(|why| format!(" ({why})"))
            .unwrap_or_default()
    );
    let mut table = Table::new(&["NODE", "STEP", "FROM", "DETAIL"]);
    for n in &r.nodes {
        table.row(vec![
            if n.master {
                format!("{} (master)", n.name)
            } else {
                n.name.clone()
            },
            step_word(n.step).to_owned(),
            n.from.clone().unwrap_or_default(),
            n.detail.clone().unwrap_or_default(),
        ]);
    }
    out.push_str(&table.render());
    out
}

pub fn render_status(status: &UpgradeStatus) -> String {
    let mut table = Table::new(&["NODE", "ROLE", "STATE", "VERSION", "SLOT", "LAST UPGRADE"]);
    for n in &status.nodes {
        let slot = match &n.slot {
            Some(slot) if n.confirmed => format!("{slot} (confirmed)"),
            Some(slot) => format!("{slot} (on trial)"),
            None => "-".into(),
        };
        let mut last = n.upgrade.clone().unwrap_or_default();
        if let Some(reason) = &n.reason {
            last.push_str(&format!(" ({reason})"));
        }
        table.row(vec![
            n.name.clone(),
            n.role.clone(),
            n.state.clone(),
            n.version.clone().unwrap_or_else(|| "?".into()),
            slot,
            last,
        ]);
    }
    let mut out = table.render();
    match &status.rollout {
        Some(r) => {
            out.push('\n');
            out.push_str(&render_rollout(r));
        }
        None => out.push_str("\nno rollout yet; start one with `cloudos upgrade --to VERSION`\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_cluster::rollout::NodeSystem;

    fn rollout() -> Rollout {
        let mut c1 = RolloutNode::new("c1", "x86_64", false);
        c1.step = RolloutStep::Failed;
        c1.from = Some("0.1.0".into());
        c1.detail = Some("fell back to the old system: services not ready in 60s".into());
        let mut c2 = RolloutNode::new("c2", "x86_64", false);
        c2.step = RolloutStep::Draining;
        c2.detail = Some("1 replica(s) to move, 0 task(s) running".into());
        let m = RolloutNode::new("m1", "x86_64", true);
        Rollout {
            id: "r-1".into(),
            request: RolloutRequest::to("0.2.0"),
            phase: RolloutPhase::Failed,
            nodes: vec![c1, c2, m],
            reason: Some("node c1: fell back".into()),
            by: "alice".into(),
            started_at: time::OffsetDateTime::now_utc(),
            finished_at: None,
        }
    }

    #[test]
    fn progress_names_each_started_node_and_why_it_failed() {
        let lines = progress_lines(&rollout());
        assert_eq!(
            lines,
            [
                (
                    "c1".to_owned(),
                    "node c1: FAILED: fell back to the old system: services not ready in 60s"
                        .to_owned()
                ),
                (
                    "c2".to_owned(),
                    "node c2: draining: 1 replica(s) to move, 0 task(s) running".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn status_lists_versions_slots_and_the_failure() {
        let status = UpgradeStatus {
            rollout: Some(rollout()),
            nodes: vec![NodeSystem {
                name: "c1".into(),
                role: "compute".into(),
                state: "ready".into(),
                version: Some("0.1.0".into()),
                slot: Some("a".into()),
                confirmed: true,
                upgrade: Some("0.1.0 -> 0.2.0: fell back to the old system".into()),
                reason: Some("services not ready in 60s".into()),
            }],
        };
        let text = render_status(&status);
        assert!(text.contains("a (confirmed)"), "{text}");
        assert!(
            text.contains("fell back to the old system (services not ready in 60s)"),
            "{text}"
        );
        assert!(
            text.contains("rollout r-1 to 0.2.0: failed (node c1: fell back)"),
            "{text}"
        );
        assert!(text.contains("m1 (master)"), "{text}");
    }
}
