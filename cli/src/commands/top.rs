//! `cloudos top`: the busiest nodes and the busiest running tasks and replicas now, by
//! CPU, from the nodes' last heartbeats.

use cloudos_cluster::api::NodeInfo;
use cloudos_cluster::units::{format_bytes, format_cpu};
use cloudos_cluster::workload::{TaskInfo, TaskUsage, WorkloadList};
use serde::Serialize;

use super::Ctx;
use crate::format;
use crate::table::Table;

/// What `top` shows, also as JSON (`-o json`).
#[derive(Debug, Serialize)]
pub struct Top {
    pub nodes: Vec<NodeInfo>,
    pub tasks: Vec<TaskInfo>,
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let nodes = client.nodes().await?;
    let workloads = client.workloads().await?;
    ctx.print(&busiest(nodes, workloads), render)
}

/// Nodes and running tasks (replicas too), busiest CPU first.
pub fn busiest(mut nodes: Vec<NodeInfo>, workloads: WorkloadList) -> Top {
    let node_cpu = |n: &NodeInfo| n.telemetry.as_ref().map_or(0.0, |t| t.cpu_usage);
    nodes.sort_by(|a, b| {
        node_cpu(b)
            .total_cmp(&node_cpu(a))
            .then(a.name.cmp(&b.name))
    });
    let replicas = workloads.services.into_iter().flat_map(|s| s.instances);
    let mut tasks: Vec<TaskInfo> = workloads
        .tasks
        .into_iter()
        .chain(replicas)
        .filter(|t| t.usage.is_some())
        .collect();
    let cpu = |t: &TaskInfo| t.usage.map_or(0, |u| u.cpu_millicores);
    tasks.sort_by(|a, b| cpu(b).cmp(&cpu(a)).then(a.id.cmp(&b.id)));
    Top { nodes, tasks }
}

pub fn render(top: &Top) -> String {
    let mut nodes = Table::new(&["NODE", "CPU", "MEM", "LOAD", "STATE"]);
    for n in &top.nodes {
        let (cpu, mem, load) = match &n.telemetry {
            Some(t) => (
                format::percent(t.cpu_usage),
                format!(
                    "{}/{}",
                    format_bytes(t.mem_used_bytes),
                    format_bytes(t.mem_total_bytes)
                ),
                format!("{:.2}", t.load1),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        nodes.row(vec![
            n.name.clone(),
            cpu,
            mem,
            load,
            super::nodes::state(n.state).into(),
        ]);
    }
    let mut tasks = Table::new(&[
        "TASK", "NODE", "CPU", "MEM", "READ", "WRITTEN", "NET IN", "NET OUT",
    ]);
    for t in &top.tasks {
        let u: TaskUsage = t.usage.unwrap_or_default();
        tasks.row(vec![
            t.id.clone(),
            t.node.clone().unwrap_or_else(|| "-".into()),
            format_cpu(u.cpu_millicores),
            format_bytes(u.memory_bytes),
            format_bytes(u.io_read_bytes),
            format_bytes(u.io_write_bytes),
            format_bytes(u.net_rx_bytes),
            format_bytes(u.net_tx_bytes),
        ]);
    }
    let mut out = nodes.render();
    out.push('\n');
    if top.tasks.is_empty() {
        out.push_str("no task is running\n");
    } else {
        out.push_str(&tasks.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_cluster::workload::{ServiceInfo, TaskState, WorkloadSpec};
    use time::macros::datetime;

    fn running(id: &str, cpu: u64) -> TaskInfo {
        let mut t = TaskInfo::queued(
            id.into(),
            WorkloadSpec::new("r/i:1"),
            None,
            0,
            datetime!(2026-12-07 10:00 UTC),
        );
        t.state = TaskState::Running;
        t.node = Some("n1".into());
        t.usage = Some(TaskUsage {
            cpu_millicores: cpu,
            memory_bytes: 3 << 20,
            io_read_bytes: 0,
            io_write_bytes: 4096,
            net_rx_bytes: 5 << 20,
            net_tx_bytes: 0,
        });
        t
    }

    #[test]
    fn the_busiest_tasks_and_replicas_come_first() {
        let mut idle = running("t-idle", 0);
        idle.usage = None;
        let service = ServiceInfo {
            name: "web".into(),
            spec: WorkloadSpec::new("r/i:1"),
            address: None,
            replicas: 1,
            running: 1,
            instances: vec![running("web-r0", 300)],
            created_at: datetime!(2026-12-07 10:00 UTC),
            revision: 1,
            revisions: Vec::new(),
            policy: Default::default(),
            update: None,
        };
        let top = busiest(
            Vec::new(),
            WorkloadList {
                tasks: vec![running("t-a", 100), idle, running("t-b", 900)],
                services: vec![service],
                retention: None,
            },
        );
        let ids: Vec<&str> = top.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["t-b", "web-r0", "t-a"], "no usage: not running");
        let text = render(&top);
        let line = text.lines().find(|l| l.starts_with("t-b")).unwrap();
        assert!(
            line.contains("900m") && line.contains("3Mi") && line.contains("4Ki"),
            "{text}"
        );
        assert!(line.contains("5Mi"), "network in: {text}");
    }
}
