//! `cloudos node cordon|uncordon|drain|reboot`: the node operations, and the progress they
//! show while they wait (which replicas moved where, which tasks the drain waits for; the
//! node going down and coming back). What is printed is a pure function of what the
//! master answers, tested without one.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::bail;
use cloudos_cluster::api::{NodeInfo, NodeState};
use cloudos_cluster::client::ApiClient;
use cloudos_cluster::nodeops::{DrainPhase, DrainRequest, DrainStatus};

use super::{nodes, Ctx, Output};

/// How often a waiting command asks the master again.
const POLL: Duration = Duration::from_millis(500);

/// `cloudos node cordon NAME` (`cordon`) or `uncordon NAME`.
pub async fn cordon(ctx: &Ctx, name: &str, cordon: bool) -> anyhow::Result<()> {
    let node = ctx.client().await?.cordon_node(name, cordon).await?;
    match ctx.output {
        Output::Json => ctx.print(&node, |_| String::new()),
        Output::Table if cordon => {
            println!("node {name} cordoned: no new work goes there; what runs there keeps running");
            Ok(())
        }
        Output::Table => {
            println!("node {name} uncordoned: it takes new work again");
            Ok(())
        }
    }
}

/// `cloudos node drain NAME [--timeout 5m]`: starts the drain and follows it until the node
/// runs nothing (or the drain fails, which is an error naming why).
pub async fn drain(ctx: &Ctx, name: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let request = DrainRequest {
        timeout_secs: timeout.as_secs(),
    };
    let mut status = client.drain_node(name, &request).await?;
    let mut shown = HashSet::new();
    let table = ctx.output == Output::Table;
    if table {
        println!(
            "draining node {name}: cordoned; tasks may run {} more",
            crate::format::duration_secs(status.timeout_secs)
        );
    }
    loop {
        if table {
            for line in drain_lines(&status) {
                if shown.insert(line.clone()) {
                    println!("{line}");
                }
            }
        }
        if status.is_over() {
            break;
        }
        tokio::time::sleep(POLL).await;
        status = client.drain_status(name).await?;
    }
    if !table {
        ctx.print(&status, |_| String::new())?;
    }
    match status.phase {
        DrainPhase::Failed => bail!(
            "draining node {name} failed: {}; the node stays cordoned (`cloudos node uncordon {name}` to use it again)",
            status.reason.as_deref().unwrap_or("no reason given")
        ),
        _ => {
            if table {
                println!("node {name} drained: it runs nothing and stays cordoned");
            }
            Ok(())
        }
    }
}

/// The progress lines of a drain's status; the caller prints each line once.
pub fn drain_lines(status: &DrainStatus) -> Vec<String> {
    let mut lines = Vec::new();
    for m in &status.moves {
        let to = m.to.as_deref().unwrap_or("?");
        if m.done {
            lines.push(format!(
                "moved {} of service {}: {} runs on {to}, {} stopped",
                m.replica, m.service, m.replacement, m.replica
            ));
        } else if let Some(why) = &m.waiting {
            lines.push(format!(
                "moving {} of service {}: {} waits ({why})",
                m.replica, m.service, m.replacement
            ));
        } else {
            lines.push(format!(
                "moving {} of service {}: {} starting on {to}",
                m.replica, m.service, m.replacement
            ));
        }
    }
    for t in &status.tasks {
        lines.push(match t.outcome.as_str() {
            "running" => format!("waiting for task {} to finish", t.id),
            "stopped" => format!(
                "task {} stopped at the timeout (retried elsewhere if it has retries left, else lost)",
                t.id
            ),
            _ => format!("task {} finished", t.id),
        });
    }
    if !status.node_runs.is_empty() {
        lines.push(format!(
            "waiting for the node to stop {}",
            status.node_runs.join(", ")
        ));
    }
    lines
}

/// `cloudos node reboot NAME [--no-wait] [--timeout 10m]`: asks the node to reboot and,
/// unless told not to, waits until it is back Ready with a new boot.
pub async fn reboot(ctx: &Ctx, name: &str, wait: bool, timeout: Duration) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let started = client.reboot_node(name).await?;
    println!("node {name} is rebooting");
    if !wait {
        return Ok(());
    }
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let node = node_now(&client, name).await;
        let (line, back) = reboot_progress(node.as_ref(), &started.boot_id);
        if line != last {
            println!("{line}");
            last = line;
        }
        if back {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "node {name} did not come back within {}; see `cloudos node show {name}`",
                crate::format::duration_secs(timeout.as_secs())
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The node as the master sees it; `None` while the master cannot be asked.
async fn node_now(client: &ApiClient, name: &str) -> Option<NodeInfo> {
    client.node(name).await.ok()
}

/// Where a reboot is, from the node as the master sees it and the boot that was ending:
/// the line to show and whether the node is back (Ready, with a new boot).
pub fn reboot_progress(node: Option<&NodeInfo>, old_boot: &str) -> (String, bool) {
    let Some(node) = node else {
        return ("waiting for the master to answer".to_owned(), false);
    };
    let name = &node.name;
    let new_boot = node
        .boot
        .as_ref()
        .map(|b| b.id.as_str())
        .filter(|id| *id != old_boot);
    match (node.state, new_boot) {
        (NodeState::Ready, Some(id)) => {
            (format!("node {name} is back and Ready (boot {id})"), true)
        }
        (_, Some(_)) => (
            format!("node {name} booted again; waiting until it is Ready"),
            false,
        ),
        (NodeState::Ready, None) => (format!("waiting for node {name} to go down"), false),
        (_, None) => (
            format!("node {name} is down; waiting for it to come back"),
            false,
        ),
    }
}

/// The STATE column and `state` field: the health, and `Cordoned` beside it.
pub fn state_text(n: &NodeInfo) -> String {
    let health = nodes::state(n.state);
    if n.unschedulable && n.state != NodeState::Cordoned {
        format!("{health},Cordoned")
    } else {
        health.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_cluster::nodeops::{DrainTask, NodeBoot, ReplicaMove};
    use cloudos_cluster::Role;
    use time::macros::datetime;
    use time::OffsetDateTime;

    const NOW: OffsetDateTime = datetime!(2026-03-01 10:00 UTC);

    fn node(state: NodeState, boot: &str) -> NodeInfo {
        NodeInfo {
            name: "n1".into(),
            role: Role::Compute,
            address: "10.0.0.3".into(),
            arch: "x86_64".into(),
            labels: Default::default(),
            reported_labels: Default::default(),
            state,
            joined_at: NOW,
            last_seen: NOW,
            telemetry: None,
            unschedulable: false,
            boot: Some(NodeBoot {
                id: boot.into(),
                rebootable: true,
            }),
            subnet: None,
        }
    }

    #[test]
    fn a_reboot_is_over_when_the_node_is_ready_with_a_new_boot() {
        let cases = [
            (None, "waiting for the master to answer", false),
            (
                Some(node(NodeState::Ready, "b1")),
                "waiting for node n1 to go down",
                false,
            ),
            (
                Some(node(NodeState::NotReady, "b1")),
                "node n1 is down; waiting for it to come back",
                false,
            ),
            (
                Some(node(NodeState::NotReady, "b2")),
                "node n1 booted again; waiting until it is Ready",
                false,
            ),
            (
                Some(node(NodeState::Ready, "b2")),
                "node n1 is back and Ready (boot b2)",
                true,
            ),
        ];
        for (n, line, back) in cases {
            assert_eq!(reboot_progress(n.as_ref(), "b1"), (line.to_owned(), back));
        }
    }

    #[test]
    fn drain_progress_says_what_moved_and_what_it_waits_for() {
        let mut status = DrainStatus::new("n1", 300, NOW);
        status.moves = vec![
            ReplicaMove {
                service: "web".into(),
                replica: "web-r0".into(),
                replacement: "web-r2".into(),
                to: Some("n2".into()),
                done: true,
                waiting: None,
            },
            ReplicaMove {
                service: "web".into(),
                replica: "web-r1".into(),
                replacement: "web-r3".into(),
                to: None,
                done: false,
                waiting: Some("no node fits: 1 is cordoned".into()),
            },
        ];
        status.tasks = vec![
            DrainTask {
                id: "t-1".into(),
                outcome: "running".into(),
            },
            DrainTask {
                id: "t-2".into(),
                outcome: "stopped".into(),
            },
        ];
        assert_eq!(
            drain_lines(&status),
            [
                "moved web-r0 of service web: web-r2 runs on n2, web-r0 stopped",
                "moving web-r1 of service web: web-r3 waits (no node fits: 1 is cordoned)",
                "waiting for task t-1 to finish",
                "task t-2 stopped at the timeout (retried elsewhere if it has retries left, else lost)",
            ]
        );
    }

    #[test]
    fn the_state_shows_health_and_cordon() {
        let mut n = node(NodeState::NotReady, "b1");
        assert_eq!(state_text(&n), "NotReady");
        n.unschedulable = true;
        assert_eq!(state_text(&n), "NotReady,Cordoned");
    }
}
