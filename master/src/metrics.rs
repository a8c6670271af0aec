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
struct StateLabels {
    state: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

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
        MasterMetrics {
            registry,
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

/// Byte counts in an i64 gauge; nothing real comes near the limit.
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

    /// The text exposition of everything, with node gauges from `nodes`.
    pub fn render(&self, nodes: &[NodeInfo]) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        for family in [
            &self.memory_used,
            &self.memory_total,
            &self.disk_used,
            &self.disk_total,
        ] {
            family.clear();
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
