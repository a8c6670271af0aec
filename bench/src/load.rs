//! Control-plane scale: one `nodeos master` process, and this process as N agents. Each
//! agent joins through the API with one multi-use token (its own key, CSR and certificate),
//! opens its own mTLS WebSocket, says Hello, then sends a heartbeat every second and times
//! the master's HeartbeatAck. Everything runs in a private namespace on its loopback.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use cloudos_cluster::api::{
    paths, AgentHello, AgentMessage, Capacity, Heartbeat, MasterMessage, Telemetry,
    TokenCreateRequest,
};
use cloudos_cluster::client::{self, ApiClient};
use cloudos_cluster::{Role, Token};
use cloudos_tests::TestNet;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::procs::{cpu_seconds, enter_netns, memory_kib, start_master};

const ADDR: &str = "127.0.0.1:9443";
/// Heartbeats before the window, so connection setup and first-beat work are not measured.
const WARMUP: Duration = Duration::from_secs(5);
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

pub struct LoadResult {
    pub agents: usize,
    pub join_time: Duration,
    pub connected: usize,
    /// Ready and total nodes in the master's status near the end of the window.
    pub ready: (usize, usize),
    pub window: Duration,
    pub rtts: Vec<Duration>,
    pub lost: usize,
    pub master_cpu: f64,
    pub master_rss_kib: u64,
    pub master_hwm_kib: u64,
    pub generator_cpu: f64,
}

pub fn run(nodeos: &Path, agents: usize, window: Duration) -> anyhow::Result<LoadResult> {
    let net = TestNet::new()?;
    let dir = tempfile::Builder::new()
        .prefix("cloudos-bench-load-")
        .tempdir()?;
    let (master, token) = start_master(
        net.name(),
        nodeos,
        dir.path(),
        &["--listen", ADDR, "--heartbeat-interval", "1s", "--no-mdns"],
    )?;
    let pid = master.pid();
    let ns = net.name().to_owned();
    let result = std::thread::spawn(move || -> anyhow::Result<LoadResult> {
        enter_netns(&ns)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(generate(token, agents, window, pid))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the load generator panicked"))?;
    let log = std::fs::read_to_string(&master.err).unwrap_or_default();
    let not_ready: Vec<&str> = log.lines().filter(|l| l.contains("is NotReady")).collect();
    if !not_ready.is_empty() {
        eprintln!(
            "{} NotReady transitions in the master's log, the first: {:?}",
            not_ready.len(),
            &not_ready[..not_ready.len().min(5)]
        );
    }
    if result.is_err() {
        eprintln!(
            "master log:\n{}",
            std::fs::read_to_string(&master.err).unwrap_or_default()
        );
    }
    result
}

async fn generate(
    admin_token: Token,
    agents: usize,
    window: Duration,
    master_pid: u32,
) -> anyhow::Result<LoadResult> {
    let no_labels = BTreeMap::new();
    let admin = client::join(
        ADDR,
        &admin_token,
        "bench-admin",
        "x86_64",
        &no_labels,
        Some(Role::Admin),
    )
    .await?;
    let api = ApiClient::from_identity(&admin)?;
    let token: Token = api
        .create_token(&TokenCreateRequest {
            role: Role::Compute,
            ttl: Some("2h".into()),
            uses: None,
            description: "load generator".into(),
            labels: Default::default(),
        })
        .await?
        .token
        .parse()?;

    eprintln!("joining {agents} agents…");
    let started = Instant::now();
    let token = Arc::new(token);
    let clients: Vec<ApiClient> = futures::stream::iter(0..agents)
        .map(|i| {
            let token = Arc::clone(&token);
            async move {
                let labels = BTreeMap::new();
                let id = client::join(
                    ADDR,
                    &token,
                    &format!("load-{i}"),
                    "x86_64",
                    &labels,
                    Some(Role::Compute),
                )
                .await?;
                anyhow::Ok(ApiClient::from_identity(&id)?)
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let join_time = started.elapsed();
    eprintln!("joined in {join_time:?}; connecting…");

    let sockets: Vec<Ws> = futures::stream::iter(clients.iter().enumerate())
        .map(|(i, api)| connect(api, source_address(i)))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let connected = sockets.len();
    eprintln!(
        "{connected} WebSockets up; beating for {:?} + {window:?}",
        WARMUP
    );

    let t0 = tokio::time::Instant::now() + Duration::from_millis(500);
    let (measure_from, end) = (t0 + WARMUP, t0 + WARMUP + window);
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            // Spread the agents over the second, as real ones drift apart.
            let first = t0 + Duration::from_micros(i as u64 * 1_000_000 / agents as u64);
            tokio::spawn(beat(ws, first, measure_from, end))
        })
        .collect();

    tokio::time::sleep_until(measure_from).await;
    let (master_cpu0, self_cpu0) = (cpu_seconds(Some(master_pid)), cpu_seconds(None));
    tokio::time::sleep_until(end - Duration::from_secs(1)).await;
    let ready = api
        .status()
        .await
        .map(|s| (s.nodes_ready, s.nodes_total))
        .unwrap_or_default();
    tokio::time::sleep_until(end).await;
    let (master_cpu1, self_cpu1) = (cpu_seconds(Some(master_pid)), cpu_seconds(None));
    let (master_rss_kib, master_hwm_kib) = memory_kib(master_pid);

    let mut rtts = Vec::new();
    let mut lost = 0;
    for task in tasks {
        let (r, l) = task.await?;
        rtts.extend(r);
        lost += l;
    }
    if rtts.is_empty() {
        bail!("no heartbeat was answered");
    }
    let secs = window.as_secs_f64();
    Ok(LoadResult {
        agents,
        join_time,
        connected,
        ready,
        window,
        rtts,
        lost,
        master_cpu: (master_cpu1 - master_cpu0) / secs * 100.0,
        master_rss_kib,
        master_hwm_kib,
        generator_cpu: (self_cpu1 - self_cpu0) / secs * 100.0,
    })
}

/// Agents per loopback source address: under the master's cap of certified connections
/// from one source (256), as real agents come from many hosts.
const AGENTS_PER_SOURCE: usize = 200;

/// The loopback address agent `i` connects from: 127.0.1.x, 127.0.2.x, … (all of 127/8 is
/// this machine).
fn source_address(i: usize) -> std::net::IpAddr {
    let n = i / AGENTS_PER_SOURCE;
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(
        127,
        0,
        1 + (n / 250) as u8,
        1 + (n % 250) as u8,
    ))
}

/// An agent's WebSocket, Hello answered by Welcome.
async fn connect(api: &ApiClient, from: std::net::IpAddr) -> anyhow::Result<Ws> {
    let stream = api.connect_from(from).await?;
    let url = format!("wss://{}{}", api.address(), paths::AGENT_CONNECT);
    // Small buffers, as a real agent's, so memory is spent where the master spends it.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    let hello = AgentMessage::Hello(AgentHello {
        address: "127.0.0.1".into(),
        arch: "x86_64".into(),
        labels: BTreeMap::new(),
        nodeos_version: "0.1.0".into(),
        runs: Vec::new(),
        boot: None,
        mesh: None,
    });
    ws.send(Message::text(serde_json::to_string(&hello)?))
        .await?;
    match tokio::time::timeout(ACK_TIMEOUT, next_message(&mut ws)).await {
        Ok(Some(MasterMessage::Welcome { .. })) => Ok(ws),
        other => bail!("no Welcome after Hello: {other:?}"),
    }
}

async fn next_message(ws: &mut Ws) -> Option<MasterMessage> {
    while let Some(frame) = ws.next().await {
        match frame.ok()? {
            Message::Text(text) => return serde_json::from_str(text.as_str()).ok(),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
    None
}

/// Telemetry of the size a real agent sends.
fn telemetry() -> Telemetry {
    Telemetry {
        cpu_usage: 0.12,
        mem_total_bytes: 8 << 30,
        mem_used_bytes: 3 << 30,
        disk_total_bytes: 100 << 30,
        disk_used_bytes: 20 << 30,
        net_rx_bytes: 123_456_789,
        net_tx_bytes: 98_765_432,
        load1: 0.5,
        load5: 0.4,
        load15: 0.3,
        uptime_secs: 86_400,
        arch: "x86_64".into(),
        kernel: "6.1.0-28-amd64".into(),
        nodeos_version: "0.1.0".into(),
        capacity: Capacity {
            cpu_millicores: 4000,
            memory_bytes: 8 << 30,
        },
        clock: None,
        clock_skew_secs: None,
        volumes: Default::default(),
        system: None,
    }
}

/// Heartbeats once a second from `first` until `end`; the round trips of those sent at or
/// after `measure_from`, and how many of those got no answer.
async fn beat(
    mut ws: Ws,
    first: tokio::time::Instant,
    measure_from: tokio::time::Instant,
    end: tokio::time::Instant,
) -> (Vec<Duration>, usize) {
    let mut rtts = Vec::new();
    let mut lost = 0;
    let mut at = first;
    let mut seq = 0;
    while at < end {
        tokio::time::sleep_until(at).await;
        seq += 1;
        let measured = at >= measure_from;
        let sent = Instant::now();
        let message = AgentMessage::Heartbeat(Heartbeat {
            usage: Default::default(),
            seq,
            sent_at: time::OffsetDateTime::now_utc(),
            telemetry: telemetry(),
            runs: Vec::new(),
        });
        let text = serde_json::to_string(&message).unwrap_or_default();
        let acked = async {
            ws.send(Message::text(text)).await.ok()?;
            loop {
                match next_message(&mut ws).await? {
                    MasterMessage::HeartbeatAck { seq: s } if s == seq => return Some(()),
                    _ => continue,
                }
            }
        };
        match tokio::time::timeout(ACK_TIMEOUT, acked).await {
            Ok(Some(())) if measured => rtts.push(sent.elapsed()),
            Ok(Some(())) => {}
            Ok(None) => {
                if measured {
                    lost += 1;
                }
                break;
            }
            Err(_) if measured => lost += 1,
            Err(_) => {}
        }
        at += Duration::from_secs(1);
    }
    let _ = ws.close(None).await;
    (rtts, lost)
}
