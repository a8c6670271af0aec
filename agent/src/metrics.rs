//! The node's own Prometheus metrics, served over plain HTTP at `/metrics` (port 9101 by
//! default): the node's resources as the agent samples them for its heartbeats, whether it
//! is connected to its master, and the heartbeat round trip it sees. Read-only and free of
//! secrets, like node_exporter; the master's metrics, which describe the whole cluster,
//! need an admin certificate instead.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use cloudos_cluster::api::Telemetry;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The default listen address of the node's metrics.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9101";

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct NodeMetrics {
    registry: Registry,
    connected: Gauge,
    heartbeats: Counter,
    round_trip: Histogram,
    cpu: FloatGauge,
    load1: FloatGauge,
    memory_used: Gauge,
    memory_total: Gauge,
    disk_used: Gauge,
    disk_total: Gauge,
    net_rx: Gauge,
    net_tx: Gauge,
    uptime: Gauge,
    containers: Gauge,
    container_cgroups: Gauge,
}

fn gauge<T: Clone + prometheus_client::registry::Metric>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: T,
) -> T {
    registry.register(name, help, metric.clone());
    metric
}

impl Default for NodeMetrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("cloudos_node");
        NodeMetrics {
            connected: gauge(
                &mut r,
                "connected",
                "1 while the agent's connection to its master is up",
                Gauge::default(),
            ),
            heartbeats: gauge(
                &mut r,
                "heartbeats",
                "Heartbeats the master acknowledged",
                Counter::default(),
            ),
            round_trip: gauge(
                &mut r,
                "heartbeat_round_trip_seconds",
                "From sending a heartbeat to the master's acknowledgement",
                Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            ),
            cpu: gauge(
                &mut r,
                "cpu_usage_ratio",
                "Busy fraction of all CPUs",
                FloatGauge::default(),
            ),
            load1: gauge(
                &mut r,
                "load1",
                "One-minute load average",
                FloatGauge::default(),
            ),
            memory_used: gauge(
                &mut r,
                "memory_used_bytes",
                "Memory in use",
                Gauge::default(),
            ),
            memory_total: gauge(&mut r, "memory_total_bytes", "Memory", Gauge::default()),
            disk_used: gauge(
                &mut r,
                "disk_used_bytes",
                "Used space on the data partition",
                Gauge::default(),
            ),
            disk_total: gauge(
                &mut r,
                "disk_total_bytes",
                "Size of the data partition",
                Gauge::default(),
            ),
            net_rx: gauge(
                &mut r,
                "network_receive_bytes",
                "Bytes received since boot",
                Gauge::default(),
            ),
            net_tx: gauge(
                &mut r,
                "network_transmit_bytes",
                "Bytes sent since boot",
                Gauge::default(),
            ),
            uptime: gauge(
                &mut r,
                "uptime_seconds",
                "Seconds since boot",
                Gauge::default(),
            ),
            containers: gauge(
                &mut r,
                "containers",
                "Containers the runtime holds (running, or ended and not yet removed)",
                Gauge::default(),
            ),
            container_cgroups: gauge(
                &mut r,
                "container_cgroups",
                "Container cgroups under cloudos/ (equal to containers unless one leaked)",
                Gauge::default(),
            ),
            registry: r,
        }
    }
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl NodeMetrics {
    pub fn sampled(&self, t: &Telemetry) {
        self.cpu.set(t.cpu_usage);
        self.load1.set(t.load1);
        self.memory_used.set(int(t.mem_used_bytes));
        self.memory_total.set(int(t.mem_total_bytes));
        self.disk_used.set(int(t.disk_used_bytes));
        self.disk_total.set(int(t.disk_total_bytes));
        self.net_rx.set(int(t.net_rx_bytes));
        self.net_tx.set(int(t.net_tx_bytes));
        self.uptime.set(int(t.uptime_secs));
    }

    /// `(containers, container cgroups)` as the executor counts them.
    pub fn workloads(&self, (containers, cgroups): (usize, usize)) {
        self.containers.set(int(containers as u64));
        self.container_cgroups.set(int(cgroups as u64));
    }

    pub fn connected(&self, up: bool) {
        self.connected.set(i64::from(up));
    }

    pub fn acknowledged(&self, round_trip: Duration) {
        self.heartbeats.inc();
        self.round_trip.observe(round_trip.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            log::error!("cannot encode metrics: {e}");
        }
        out
    }
}

/// Serves `GET /metrics` on `listen` until the task is dropped. A port in use is logged,
/// not fatal: the agent's real job is the cluster connection.
pub async fn serve(metrics: Arc<NodeMetrics>, listen: SocketAddr) {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(e) => {
            log::warn!("cannot serve node metrics on {listen}: {e}");
            return;
        }
    };
    log::info!("node metrics on http://{listen}/metrics");
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let body = metrics.render();
            async move {
                let accept = headers
                    .get(axum::http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok());
                let (content_type, body) = cloudos_cluster::exposition::negotiate(accept, body);
                ([(axum::http::header::CONTENT_TYPE, content_type)], body)
            }
        }),
    );
    if let Err(e) = axum::serve(listener, router).await {
        log::warn!("node metrics server stopped: {e}");
    }
}
