//! `cloudos node upgrade NAME --to VERSION`: one node installs a kept release, and the
//! command follows it through download, install, reboot and back, as the node reports it.

use std::time::{Duration, Instant};

use cloudos_cluster::api::{NodeInfo, NodeState, NodeUpgradeRequest, SystemReport, UpgradeState};

use super::Ctx;

/// How often the node is asked while the command waits.
const POLL: Duration = Duration::from_secs(2);

/// `cloudos node rollback NAME`: the node switches to its other slot and reboots; waits
/// until it is back Ready on that slot with it confirmed, or says why not.
pub async fn rollback(ctx: &Ctx, name: &str, wait: Option<Duration>) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let told = client.rollback_node(name).await?;
    eprintln!(
        "node {name}: told to switch to its other slot ({})",
        told.id
    );
    let Some(timeout) = wait else {
        return Ok(());
    };
    let node = follow(&client, name, &told.id, None, timeout).await?;
    let version = node.telemetry.map(|t| t.nodeos_version).unwrap_or_default();
    println!("node {name} rolled back: it runs {version}");
    Ok(())
}

pub async fn node(
    ctx: &Ctx,
    name: &str,
    version: &str,
    allow_downgrade: bool,
    retry_failed: bool,
    wait: Option<Duration>,
) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let request = NodeUpgradeRequest {
        version: version.to_owned(),
        allow_downgrade,
        retry_failed,
    };
    let told = client.upgrade_node(name, &request).await?;
    eprintln!("node {name}: told to upgrade to {version} ({})", told.id);
    let Some(timeout) = wait else {
        return Ok(());
    };
    follow(&client, name, &told.id, Some(version), timeout).await?;
    println!("node {name} runs {version}");
    Ok(())
}

/// Polls the node until request `id` ended, printing each new step; the node at the end.
async fn follow(
    client: &cloudos_cluster::client::ApiClient,
    name: &str,
    id: &str,
    version: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<NodeInfo> {
    let started = Instant::now();
    let mut last = String::new();
    let goal = version.unwrap_or("its other slot");
    loop {
        // A node that reboots is away for a while: only a lasting failure to ask counts.
        let node = match client.node(name).await {
            Ok(node) => Some(node),
            Err(e) if e.is_retryable() => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(node) = node {
            let (line, end) = progress(&node, id, version);
            if line != last {
                eprintln!("node {name}: {line} ({}s)", started.elapsed().as_secs());
                last = line;
            }
            match end {
                Some(Ok(())) => return Ok(node),
                Some(Err(reason)) => {
                    anyhow::bail!("node {name} did not go to {goal}: {reason}")
                }
                None => {}
            }
        }
        if started.elapsed() > timeout {
            anyhow::bail!(
                "node {name} is not on {goal} after {}s (last: {last}); see `cloudos node show {name}`",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Where the node is on request `id`, and whether it ended (and how): done once it is
/// Ready on a confirmed slot and, when `version` is given, runs it. Reports on earlier
/// requests (an upgrade to the same version last week) say nothing about this one.
pub fn progress(
    node: &NodeInfo,
    id: &str,
    version: Option<&str>,
) -> (String, Option<Result<(), String>>) {
    let Some(t) = &node.telemetry else {
        return ("no report yet".into(), None);
    };
    if node.state != NodeState::Ready {
        return ("away (rebooting?)".into(), None);
    }
    let upgrade = t.system.as_ref().and_then(|s| s.upgrade.as_ref());
    match upgrade {
        Some(u) if u.id == id => match u.state {
            UpgradeState::Done if version.is_none_or(|v| t.nodeos_version == v) => {
                ("back, running it, slot confirmed".into(), Some(Ok(())))
            }
            UpgradeState::Failed | UpgradeState::FellBack => {
                let reason = u.reason.clone().unwrap_or_else(|| "no reason given".into());
                (format!("{:?}", u.state).to_lowercase(), Some(Err(reason)))
            }
            state => (state.describe().into(), None),
        },
        _ => ("waiting for the node to start".into(), None),
    }
}

/// `cloudos node show`'s lines for the installed system.
pub fn system_lines(system: &SystemReport) -> Vec<(&'static str, String)> {
    let mut lines = Vec::new();
    if let Some(slot) = &system.slot {
        let how = if system.confirmed {
            "confirmed good"
        } else {
            "on trial"
        };
        lines.push(("slot", format!("{slot} ({how})")));
    }
    if let Some(u) = &system.upgrade {
        let mut line = u.summary();
        if let Some(reason) = &u.reason {
            line.push_str(&format!(" ({reason})"));
        }
        lines.push(("upgrade", line));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_cluster::api::{Telemetry, UpgradeReport};

    fn node(
        state: NodeState,
        version: &str,
        upgrade: Option<(UpgradeState, Option<&str>)>,
    ) -> NodeInfo {
        let now = time::OffsetDateTime::now_utc();
        NodeInfo {
            name: "n1".into(),
            role: cloudos_cluster::Role::Compute,
            address: "10.0.0.2".into(),
            arch: "x86_64".into(),
            labels: Default::default(),
            reported_labels: Default::default(),
            state,
            unschedulable: false,
            boot: None,
            subnet: None,
            joined_at: now,
            last_seen: now,
            telemetry: Some(Telemetry {
                nodeos_version: version.into(),
                system: Some(Box::new(SystemReport {
                    slot: Some("b".into()),
                    confirmed: true,
                    upgrade: upgrade.map(|(state, reason)| UpgradeReport {
                        id: "u-1".into(),
                        version: "0.2.0".into(),
                        from: "0.1.0".into(),
                        state,
                        reason: reason.map(str::to_owned),
                    }),
                })),
                ..Telemetry::default()
            }),
        }
    }

    #[test]
    fn the_wait_ends_only_when_the_node_runs_the_version_or_says_why_not() {
        let (_, end) = progress(&node(NodeState::Ready, "0.1.0", None), "u-1", Some("0.2.0"));
        assert_eq!(end, None);
        let (line, end) = progress(
            &node(
                NodeState::Ready,
                "0.1.0",
                Some((UpgradeState::Downloading, None)),
            ),
            "u-1",
            Some("0.2.0"),
        );
        assert_eq!((line.as_str(), end), ("downloading the release", None));
        let (_, end) = progress(
            &node(
                NodeState::NotReady,
                "0.1.0",
                Some((UpgradeState::Rebooting, None)),
            ),
            "u-1",
            Some("0.2.0"),
        );
        assert_eq!(end, None);
        let (_, end) = progress(
            &node(NodeState::Ready, "0.2.0", Some((UpgradeState::Done, None))),
            "u-1",
            Some("0.2.0"),
        );
        assert_eq!(end, Some(Ok(())));
        let (_, end) = progress(
            &node(
                NodeState::Ready,
                "0.1.0",
                Some((UpgradeState::FellBack, Some("agent not ready"))),
            ),
            "u-1",
            Some("0.2.0"),
        );
        assert_eq!(end, Some(Err("agent not ready".into())));
    }

    #[test]
    fn a_report_on_an_earlier_request_does_not_end_the_wait() {
        let n = node(NodeState::Ready, "0.2.0", Some((UpgradeState::Done, None)));
        assert_eq!(progress(&n, "u-2", Some("0.2.0")).1, None);
    }

    #[test]
    fn node_show_says_which_slot_and_how_the_upgrade_went() {
        let n = node(
            NodeState::Ready,
            "0.1.0",
            Some((UpgradeState::FellBack, Some("agent not ready"))),
        );
        let system = n.telemetry.unwrap().system.unwrap();
        let lines = system_lines(&system);
        assert_eq!(lines[0], ("slot", "b (confirmed good)".to_owned()));
        assert_eq!(
            lines[1],
            (
                "upgrade",
                "0.1.0 -> 0.2.0: fell back to the old system (agent not ready)".to_owned()
            )
        );
    }
}
