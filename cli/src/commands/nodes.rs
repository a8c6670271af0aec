//! `cloudos node list|show|label|remove` (cordon, drain and reboot are `nodeops`).

use cloudos_cluster::api::NodeState;
use cloudos_cluster::api::{NodeInfo, NodeLabelRequest, Telemetry};
use cloudos_cluster::units::format_bytes;
use time::OffsetDateTime;

use super::Ctx;
use crate::format;
use crate::table::{fields, Table};

pub async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let mut nodes = ctx.client().await?.nodes().await?;
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let now = OffsetDateTime::now_utc();
    ctx.print(&nodes, |n| render_list(n, now))
}

pub async fn show(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let node = ctx.client().await?.node(name).await?;
    let now = OffsetDateTime::now_utc();
    ctx.print(&node, |n| render_one(n, now))
}

pub async fn remove(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    ctx.client().await?.remove_node(name).await?;
    println!("node {name} removed; its certificates are revoked");
    Ok(())
}

/// `cloudos node label NAME [KEY=VALUE | KEY-]… [--approve-reported]`.
pub async fn label(
    ctx: &Ctx,
    name: &str,
    changes: &[String],
    approve_reported: bool,
) -> anyhow::Result<()> {
    let mut request = NodeLabelRequest {
        approve_reported,
        ..NodeLabelRequest::default()
    };
    for change in changes {
        match change.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                request.set.insert(k.to_owned(), v.to_owned());
            }
            _ => match change.strip_suffix('-') {
                Some(k) if !k.is_empty() => request.remove.push(k.to_owned()),
                _ => {
                    anyhow::bail!("label change {change:?}: use KEY=VALUE to set or KEY- to remove")
                }
            },
        }
    }
    let node = ctx.client().await?.label_node(name, &request).await?;
    let now = OffsetDateTime::now_utc();
    ctx.print(&node, |n| render_one(n, now))
}

fn joined_labels(labels: &std::collections::BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn state(s: NodeState) -> &'static str {
    match s {
        NodeState::Ready => "Ready",
        NodeState::NotReady => "NotReady",
        NodeState::Cordoned => "Cordoned",
    }
}

fn cpu(n: &NodeInfo) -> String {
    n.telemetry
        .as_ref()
        .map(|t| format::percent(t.cpu_usage))
        .unwrap_or_else(|| "-".into())
}

fn mem(n: &NodeInfo) -> String {
    n.telemetry
        .as_ref()
        .map(|t| {
            format!(
                "{}/{}",
                format_bytes(t.mem_used_bytes),
                format_bytes(t.mem_total_bytes)
            )
        })
        .unwrap_or_else(|| "-".into())
}

pub fn render_list(nodes: &Vec<NodeInfo>, now: OffsetDateTime) -> String {
    let mut table = Table::new(&[
        "NAME", "ROLE", "ADDRESS", "ARCH", "STATE", "CPU", "MEM", "AGE",
    ]);
    for n in nodes {
        table.row(vec![
            n.name.clone(),
            n.role.to_string(),
            n.address.clone(),
            n.arch.clone(),
            super::nodeops::state_text(n),
            cpu(n),
            mem(n),
            format::age(n.joined_at, now),
        ]);
    }
    table.render()
}

pub fn render_one(n: &NodeInfo, now: OffsetDateTime) -> String {
    let mut pairs = vec![
        ("name", n.name.clone()),
        ("role", n.role.to_string()),
        ("state", super::nodeops::state_text(n)),
        (
            "schedulable",
            if n.unschedulable {
                "no (cordoned: no new work goes there)".into()
            } else {
                "yes".into()
            },
        ),
        ("address", n.address.clone()),
        ("arch", n.arch.clone()),
        // The containers' subnet (`bridge` network).
        ("subnet", n.subnet.clone().unwrap_or_else(|| "-".into())),
        ("labels", joined_labels(&n.labels)),
        ("reported labels", joined_labels(&n.reported_labels)),
        (
            "boot",
            match &n.boot {
                Some(b) if b.rebootable => b.id.clone(),
                Some(b) => format!("{} (a host install: reboots by its own tools)", b.id),
                None => "-".into(),
            },
        ),
        (
            "joined",
            format!(
                "{} ({} ago)",
                format::timestamp(n.joined_at),
                format::age(n.joined_at, now)
            ),
        ),
        (
            "last seen",
            format!("{} ago", format::age(n.last_seen, now)),
        ),
    ];
    if let Some(t) = &n.telemetry {
        pairs.extend([
            (
                "cpu",
                format!(
                    "{} of {} cores",
                    format::percent(t.cpu_usage),
                    t.capacity.cpu_millicores as f64 / 1000.0
                ),
            ),
            (
                "memory",
                format!(
                    "{} used of {}",
                    format_bytes(t.mem_used_bytes),
                    format_bytes(t.mem_total_bytes)
                ),
            ),
            (
                "disk",
                format!(
                    "{} used of {}",
                    format_bytes(t.disk_used_bytes),
                    format_bytes(t.disk_total_bytes)
                ),
            ),
            (
                "network",
                format!(
                    "{} in, {} out",
                    format_bytes(t.net_rx_bytes),
                    format_bytes(t.net_tx_bytes)
                ),
            ),
            (
                "load",
                format!("{:.2} {:.2} {:.2}", t.load1, t.load5, t.load15),
            ),
            ("uptime", format::duration_secs(t.uptime_secs)),
            ("kernel", t.kernel.clone()),
            ("nodeos", t.nodeos_version.clone()),
        ]);
        if t.clock.is_some() || t.clock_skew_secs.is_some() {
            pairs.push(("clock", clock_line(t)));
        }
        if let Some(system) = &t.system {
            pairs.extend(super::upgrade::system_lines(system));
        }
    }
    fields(&pairs)
}

/// Whether the node's clock is synced, to what, and how far it is from the master's.
fn clock_line(t: &Telemetry) -> String {
    let mut parts = Vec::new();
    match &t.clock {
        Some(c) if c.synced => parts.push(format!(
            "synced to {}, offset {}",
            c.source.as_deref().unwrap_or("?"),
            c.offset_secs
                .map_or("?".to_owned(), |o| format!("{o:+.3}s"))
        )),
        Some(_) => parts.push("not synced".to_owned()),
        None => {}
    }
    if let Some(skew) = t.clock_skew_secs {
        let warn = if skew.abs() > cloudos_time::policy::DRIFT_WARNING.as_secs_f64() {
            " (drifting: check its time servers)"
        } else {
            ""
        };
        parts.push(format!("{skew:+.3}s from the master's{warn}"));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_cluster::api::Capacity;
    use cloudos_cluster::Role;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-03-01 10:00 UTC);

    fn node(name: &str, state: NodeState, telemetry: Option<Telemetry>) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            role: Role::Compute,
            address: "10.0.0.7".into(),
            arch: "x86_64".into(),
            labels: [("zone".to_string(), "a".to_string())].into(),
            reported_labels: Default::default(),
            state,
            joined_at: datetime!(2026-03-01 09:55 UTC),
            last_seen: datetime!(2026-03-01 09:59:58 UTC),
            telemetry,
            unschedulable: false,
            boot: None,
            subnet: None,
        }
    }

    fn telemetry() -> Telemetry {
        Telemetry {
            cpu_usage: 0.25,
            mem_total_bytes: 4 << 30,
            mem_used_bytes: 1 << 30,
            capacity: Capacity {
                cpu_millicores: 2000,
                memory_bytes: 4 << 30,
            },
            kernel: "6.1.0".into(),
            ..Telemetry::default()
        }
    }

    #[test]
    fn list_has_the_columns() {
        let nodes = vec![
            node("n1", NodeState::Ready, Some(telemetry())),
            node("n2", NodeState::NotReady, None),
        ];
        let want = [
            "NAME   ROLE      ADDRESS    ARCH     STATE      CPU   MEM       AGE",
            "n1     compute   10.0.0.7   x86_64   Ready      25%   1Gi/4Gi   5m",
            "n2     compute   10.0.0.7   x86_64   NotReady   -     -         5m",
        ];
        assert_eq!(
            render_list(&nodes, NOW),
            want.map(|l| format!("{l}\n")).concat()
        );
    }

    #[test]
    fn show_has_telemetry_and_labels() {
        let text = render_one(&node("n1", NodeState::Ready, Some(telemetry())), NOW);
        assert!(text.contains("\nlabels:           zone=a\n"), "{text}");
        assert!(text.contains("\nreported labels:  -\n"), "{text}");
        assert!(text.contains("\nsubnet:           -\n"), "{text}");
        assert!(
            text.contains("cpu:              25% of 2 cores\n"),
            "{text}"
        );
        assert!(text.contains("last seen:        2s ago\n"), "{text}");
        assert!(
            !text.contains("clock:"),
            "a node that says nothing of its clock: {text}"
        );
        let mut t = telemetry();
        t.clock = Some(cloudos_cluster::api::ClockReport {
            synced: true,
            source: Some("10.0.0.2:123 (master)".into()),
            offset_secs: Some(0.0021),
        });
        t.clock_skew_secs = Some(0.013);
        let text = render_one(&node("n1", NodeState::Ready, Some(t.clone())), NOW);
        assert!(
            text.contains("clock:            synced to 10.0.0.2:123 (master), offset +0.002s; +0.013s from the master's\n"),
            "{text}"
        );
        t.clock = None;
        t.clock_skew_secs = Some(-12.5);
        let text = render_one(&node("n1", NodeState::Ready, Some(t)), NOW);
        assert!(
            text.contains("-12.500s from the master's (drifting: check its time servers)"),
            "{text}"
        );
        let bare = render_one(&node("n2", NodeState::NotReady, None), NOW);
        assert!(
            !bare.contains("cpu:") && bare.contains("NotReady"),
            "{bare}"
        );
    }
}
