//! The master's Prometheus metrics (`GET /metrics`, admin certificate): API requests by
//! route and status, join attempts by outcome, how long a heartbeat takes to handle, and
//! each node's resources as its last heartbeat reported them. Counters are updated where
//! things happen; node gauges are filled from the roster at scrape time, so a removed
//! node disappears from the next scrape.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use cloudos_cluster::api::NodeInfo;
use cloudos_cluster::workload::{TaskInfo, TaskUsage};
use cloudos_store::NodeState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    task: String,
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// A task gauge: name (after `cloudos_`), help, and its value from a task's usage.
type TaskGauge = (&'static str, &'static str, fn(&TaskUsage) -> u64);

/// The gauges of each running task.
const TASK_GAUGES: [TaskGauge; 6] = [
    (
        "task_cpu_millicores",
        "CPU a running task (or replica) used over its node's last heartbeat interval",
        |u| u.cpu_millicores,
    ),
    (
        "task_memory_bytes",
        "Memory a running task (or replica) uses",
        |u| u.memory_bytes,
    ),
    (
        "task_io_read_bytes",
        "Bytes a running task's current run has read from block devices",
        |u| u.io_read_bytes,
    ),
    (
        "task_io_written_bytes",
        "Bytes a running task's current run has written to block devices",
        |u| u.io_write_bytes,
    ),
    (
        "task_network_received_bytes",
        "Bytes a running task's current run has received on its bridge link",
        |u| u.net_rx_bytes,
    ),
    (
        "task_network_sent_bytes",
        "Bytes a running task's current run has sent on its bridge link",
        |u| u.net_tx_bytes,
    ),
];

pub struct MasterMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    joins: Family<OutcomeLabels, Counter>,
    heartbeat: Histogram,
    nodes: Family<StateLabels, Gauge>,
    cpu: Family<NodeLabels, FloatGauge>,
    memory_used: Family<NodeLabels, Gauge>,
    memory_total: Family<NodeLabels, Gauge>,
    disk_used: Family<NodeLabels, Gauge>,
    disk_total: Family<NodeLabels, Gauge>,
    load1: Family<NodeLabels, FloatGauge>,
    /// One family per [`TASK_GAUGES`] row, in its order.
    tasks: Vec<Family<TaskLabels, Gauge>>,
    /// Scrapes refill the node gauges; one at a time keeps them consistent.
    scrape: Mutex<()>,
}

impl Default for MasterMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cloudos");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "API requests by method, route and status",
            requests.clone(),
        );
        let joins = Family::<OutcomeLabels, Counter>::default();
        registry.register("join_attempts", "Join attempts by outcome", joins.clone());
        // 50 µs to ~0.8 s.
        let heartbeat = Histogram::new(exponential_buckets(0.000_05, 2.0, 15));
        registry.register(
            "heartbeat_handling_seconds",
            "Time the master takes to record a heartbeat and acknowledge it",
            heartbeat.clone(),
        );
        let nodes = Family::<StateLabels, Gauge>::default();
        registry.register("nodes", "Nodes by state", nodes.clone());
        let cpu = Family::<NodeLabels, FloatGauge>::default();
        registry.register(
            "node_cpu_usage_ratio",
            "Busy fraction of a node's CPUs",
            cpu.clone(),
        );
        let memory_used = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "node_memory_used_bytes",
            "Memory in use on a node",
            memory_used.clone(),
        );
        let memory_total = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "node_memory_total_bytes",
            "A node's memory",
            memory_total.clone(),
        );
        let disk_used = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "node_disk_used_bytes",
            "Used space on a node's data partition",
            disk_used.clone(),
        );
        let disk_total = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "node_disk_total_bytes",
            "Size of a node's data partition",
            disk_total.clone(),
        );
        let load1 = Family::<NodeLabels, FloatGauge>::default();
        registry.register(
            "node_load1",
            "A node's one-minute load average",
            load1.clone(),
        );
        let tasks = TASK_GAUGES
            .iter()
            .map(|(name, help, _)| {
                let family = Family::<TaskLabels, Gauge>::default();
                registry.register(*name, *help, family.clone());
                family
            })
            .collect();
        MasterMetrics {
            registry,
            tasks,
            requests,
            joins,
            heartbeat,
            nodes,
            cpu,
            memory_used,
            memory_total,
            disk_used,
            disk_total,
            load1,
            scrape: Mutex::new(()),
        }
    }
}

/// Byte counts (and millicores) in an i64 gauge; nothing real comes near the limit.
fn bytes(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl MasterMetrics {
    /// `route` is the matched path pattern (`/v1/nodes/{name}`), never the raw path, so
    /// node names and token ids do not become label values.
    pub fn request(&self, method: &str, route: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    /// `outcome`: `joined`, or the error code of a refusal (`token_invalid`, …).
    pub fn join(&self, outcome: &str) {
        self.joins
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn heartbeat_handled(&self, took: Duration) {
        self.heartbeat.observe(took.as_secs_f64());
    }

    /// The text exposition of everything, with node gauges from `nodes` and task gauges
    /// from the running `tasks` that have a usage.
    pub fn render(&self, nodes: &[NodeInfo], tasks: &[TaskInfo]) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        for family in [
            &self.memory_used,
            &self.memory_total,
            &self.disk_used,
            &self.disk_total,
        ] {
            family.clear();
        }
        for family in &self.tasks {
            family.clear();
        }
        for task in tasks {
            let (Some(usage), Some(node)) = (task.usage, &task.node) else {
                continue;
            };
            let labels = TaskLabels {
                task: task.id.clone(),
                node: node.clone(),
            };
            for (family, (_, _, value)) in self.tasks.iter().zip(TASK_GAUGES) {
                family.get_or_create(&labels).set(bytes(value(&usage)));
            }
        }
        self.cpu.clear();
        self.load1.clear();
        self.nodes.clear();
        for state in ["ready", "not_ready", "cordoned"] {
            self.nodes
                .get_or_create(&StateLabels {
                    state: state.to_owned(),
                })
                .set(0);
        }
        for node in nodes {
            let state = match node.state {
                NodeState::Ready => "ready",
                NodeState::NotReady => "not_ready",
                NodeState::Cordoned => "cordoned",
            };
            self.nodes
                .get_or_create(&StateLabels {
                    state: state.to_owned(),
                })
                .inc();
            let Some(t) = &node.telemetry else { continue };
            let labels = NodeLabels {
                node: node.name.clone(),
            };
            self.cpu.get_or_create(&labels).set(t.cpu_usage);
            self.load1.get_or_create(&labels).set(t.load1);
            self.memory_used
                .get_or_create(&labels)
                .set(bytes(t.mem_used_bytes));
            self.memory_total
                .get_or_create(&labels)
                .set(bytes(t.mem_total_bytes));
            self.disk_used
                .get_or_create(&labels)
                .set(bytes(t.disk_used_bytes));
            self.disk_total
                .get_or_create(&labels)
                .set(bytes(t.disk_total_bytes));
        }
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            log::error!("cannot encode metrics: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_cluster::workload::{TaskState, WorkloadSpec};

    #[test]
    fn running_tasks_have_their_usage_and_others_none() {
        let now = time::OffsetDateTime::now_utc();
        let mut task = TaskInfo::queued("t-1".into(), WorkloadSpec::new("r/i:1"), None, 0, now);
        task.state = TaskState::Running;
        task.node = Some("n1".into());
        task.usage = Some(TaskUsage {
            cpu_millicores: 250,
            memory_bytes: 4096,
            io_read_bytes: 1,
            io_write_bytes: 2,
            net_rx_bytes: 3,
            net_tx_bytes: 4,
        });
        let mut idle = task.clone();
        idle.id = "t-2".into();
        idle.usage = None;
        let metrics = MasterMetrics::default();
        let text = metrics.render(&[], &[task, idle]);
        for line in [
            r#"cloudos_task_cpu_millicores{task="t-1",node="n1"} 250"#,
            r#"cloudos_task_memory_bytes{task="t-1",node="n1"} 4096"#,
            r#"cloudos_task_io_read_bytes{task="t-1",node="n1"} 1"#,
            r#"cloudos_task_io_written_bytes{task="t-1",node="n1"} 2"#,
            r#"cloudos_task_network_received_bytes{task="t-1",node="n1"} 3"#,
            r#"cloudos_task_network_sent_bytes{task="t-1",node="n1"} 4"#,
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        assert!(!text.contains("t-2"), "{text}");
        // The next scrape has only what runs then.
        assert!(!metrics.render(&[], &[]).contains("t-1"));
    }
}
