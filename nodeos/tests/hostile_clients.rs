//! The master (and an agent) against hostile clients, in-process over real TLS on loopback:
//! floods of idle connections, slow clients, uploads to someone else's run, oversized
//! uploads, answers that would echo what the attacker sent. The people who must still get
//! through (the admin, a registered node) connect from 127.0.0.1; attackers from
//! 127.0.0.2 and up.

use cloudos_master::testing as common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudos_cluster::api::{
    AgentHello, AgentMessage, Capacity, ErrorBody, ErrorCode, Heartbeat, MasterMessage, Telemetry,
    TokenCreateRequest,
};
use cloudos_cluster::client::{self, ApiClient, JoinedIdentity, MAX_TRANSFER_BYTES};
use cloudos_cluster::workload::{TaskCreateRequest, WorkloadSpec};
use cloudos_cluster::{tls, Role, Token};
use cloudos_master::connlimit;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

use common::TestMaster;

const HEARTBEAT: Duration = Duration::from_secs(1);
const NOT_READY_AFTER: Duration = Duration::from_secs(5);
/// What the people who must get through are promised under attack.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------- set-up

struct Cluster {
    dir: PathBuf,
    master: TestMaster,
    admin: ApiClient,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.master.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn cluster(name: &str) -> Cluster {
    // The master and the attackers' sockets live in this one process.
    nodeos::services::limits::raise_open_files(nodeos::services::limits::OPEN_FILES);
    let dir = common::temp_dir(name);
    let listen = "127.0.0.1:0".parse().expect("addr");
    let master = TestMaster::start(
        common::config(&dir.join("master"), listen, HEARTBEAT, NOT_READY_AFTER),
        2,
    );
    let admin = joined(
        &master,
        master.admin_token.as_ref().expect("token"),
        "alice",
    )
    .await;
    let admin = ApiClient::from_identity(&admin).expect("admin client");
    Cluster { dir, master, admin }
}

async fn joined(master: &TestMaster, token: &Token, name: &str) -> JoinedIdentity {
    client::join(
        &master.addr.to_string(),
        token,
        name,
        "x86_64",
        &BTreeMap::new(),
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("join {name}: {e}"))
}

/// A compute node `name`: its identity and client.
async fn node(c: &Cluster, name: &str) -> (JoinedIdentity, ApiClient) {
    let created = c
        .admin
        .create_token(&TokenCreateRequest {
            role: Role::Compute,
            ttl: Some("1h".into()),
            uses: None,
            description: "hostile test".into(),
            labels: Default::default(),
        })
        .await
        .expect("token");
    let token: Token = created.token.parse().expect("token parses");
    let id = joined(&c.master, &token, name).await;
    let api = ApiClient::from_identity(&id).expect("node client");
    (id, api)
}

fn src(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

async fn tcp_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// Whether the server has closed `tcp` (end of stream or reset) within `wait`.
async fn closed_within(tcp: &mut TcpStream, wait: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(wait, tcp.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// One request on a fresh connection of `api`: status and body.
async fn request(api: &ApiClient, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let tls = api.connect().await.expect("connect");
    let (status, _, body) = common::http_request(tls, method, path, body).await;
    (status, body)
}

fn heartbeat(seq: u64) -> Heartbeat {
    Heartbeat {
        usage: Default::default(),
        seq,
        sent_at: time::OffsetDateTime::now_utc(),
        telemetry: Telemetry {
            arch: "x86_64".into(),
            capacity: Capacity {
                cpu_millicores: 4000,
                memory_bytes: 8 << 30,
            },
            ..Telemetry::default()
        },
        runs: Vec::new(),
    }
}

// ---------------------------------------------------------------- connection floods

/// Eight attacking addresses open 300 connections each (2400, more than PID 1's old limit
/// of 1024 open files) and leave them idle. The admin's `status` and a node's heartbeat are
/// still answered within 2 s, and the master holds no more of the attackers' connections
/// than their per-source share.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_idle_connections_does_not_lock_out_the_admin_or_the_nodes() {
    let c = cluster("flood").await;
    let (_, n1) = node(&c, "n1").await;
    let beat = serde_json::to_vec(&heartbeat(1)).expect("json");
    let (status, body) = request(&n1, "POST", "/v1/heartbeat", beat.clone()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    const SOURCES: u8 = 8;
    const PER_SOURCE: usize = 300;
    let mut attack = Vec::new();
    for n in 2..2 + SOURCES {
        for _ in 0..PER_SOURCE {
            match tcp_from(src(n), c.master.addr).await {
                Ok(tcp) => attack.push(tcp),
                Err(e) => panic!("connect from {}: {e}", src(n)),
            }
        }
    }
    assert!(attack.len() > 1024);

    let started = Instant::now();
    let status = c.admin.status().await.expect("the admin's status");
    assert!(started.elapsed() < ANSWER_WITHIN, "{:?}", started.elapsed());
    assert_eq!(status.cluster_name, "lab");
    let started = Instant::now();
    let (code, body) = request(&n1, "POST", "/v1/heartbeat", beat).await;
    assert!(started.elapsed() < ANSWER_WITHIN, "{:?}", started.elapsed());
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));

    // The master closed every connection beyond the attackers' share at once.
    let mut held = 0;
    for tcp in &mut attack {
        if !closed_within(tcp, Duration::from_millis(5)).await {
            held += 1;
        }
    }
    let share = usize::from(SOURCES) * connlimit::UNVERIFIED.per_source;
    assert!(
        held <= share,
        "{held} attacking connections held, share {share}"
    );
    assert!(held > 0, "the attackers' share is served, not refused");
}

/// Slow clients cannot hold a connection: one that never starts TLS is dropped after the
/// handshake timeout, one that stops in the middle of its request headers after the header
/// timeout, one that sends nothing after TLS after the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_are_dropped() {
    let c = cluster("slow").await;
    let addr = c.master.addr;
    let pinned = Arc::new(tls::client_config_pinned(c.master.pin).expect("pinned config"));
    let tls_from = |n: u8| {
        let pinned = Arc::clone(&pinned);
        async move {
            let tcp = tcp_from(src(n), addr).await.expect("connect");
            TlsConnector::from(pinned)
                .connect(ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()), tcp)
                .await
                .expect("TLS handshake")
        }
    };
    let started = Instant::now();
    let mut no_tls = tcp_from(src(20), addr).await.expect("connect");
    let mut no_request = tls_from(21).await;
    let mut half_headers = tls_from(22).await;
    half_headers
        .write_all(b"GET /v1/openapi.json HTTP/1.1\r\nHost: master\r\n")
        .await
        .expect("half a request");

    let read_end = |r: std::io::Result<usize>| matches!(r, Ok(0) | Err(_));
    let mut byte = [0u8; 1];
    let limit = Duration::from_secs(45);
    let r = tokio::time::timeout(limit, half_headers.read(&mut byte)).await;
    assert!(r.is_ok_and(read_end), "half headers never dropped");
    let headers_dropped = started.elapsed();
    let r = tokio::time::timeout(limit, no_tls.read(&mut byte)).await;
    assert!(r.is_ok_and(read_end), "no TLS never dropped");
    let r = tokio::time::timeout(limit, no_request.read(&mut byte)).await;
    assert!(r.is_ok_and(read_end), "silence after TLS never dropped");
    let silent_dropped = started.elapsed();
    assert!(
        headers_dropped < Duration::from_secs(20),
        "{headers_dropped:?}"
    );
    assert!(
        silent_dropped < Duration::from_secs(40),
        "{silent_dropped:?}"
    );
}

// ---------------------------------------------------------------- output uploads

type Ws = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// Opens the agent connection of a node and says hello.
async fn agent_connection(api: &ApiClient, addr: SocketAddr) -> Ws {
    let tls = api.connect().await.expect("connect");
    let url = format!("wss://127.0.0.1:{}/v1/agent/connect", addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("websocket upgrade");
    let hello = AgentMessage::Hello(AgentHello {
        address: "127.0.0.1".into(),
        arch: "x86_64".into(),
        labels: BTreeMap::new(),
        nodeos_version: "0.1.0".into(),
        runs: Vec::new(),
        boot: None,
        mesh: None,
    });
    let text = serde_json::to_string(&hello).expect("json");
    ws.send(Message::text(text)).await.expect("hello");
    ws
}

/// Heartbeats on `ws` until the master assigns a run; its id.
async fn assigned_run(ws: &mut Ws) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seq = 0;
    loop {
        assert!(Instant::now() < deadline, "no run assigned");
        seq += 1;
        let text = serde_json::to_string(&AgentMessage::Heartbeat(heartbeat(seq))).expect("json");
        ws.send(Message::text(text)).await.expect("heartbeat");
        let wait = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
        while let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(Duration::from_millis(50), ws.next()).await
        {
            if let Ok(MasterMessage::Assign(a)) = serde_json::from_str(text.as_str()) {
                return a.run;
            }
        }
        if let Ok(Some(Ok(Message::Text(text)))) = wait {
            if let Ok(MasterMessage::Assign(a)) = serde_json::from_str(text.as_str()) {
                return a.run;
            }
        }
    }
}

/// The master's `/output` archives: every file under `outputs/` of its data directory.
fn stored_outputs(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.parent().and_then(|p| p.file_name()) == Some("outputs".as_ref()) {
                found.push(path);
            }
        }
    }
    found
}

/// Starts `POST /v1/runs/<run>/output` declaring `declared` bytes and sends `send` of them;
/// the answer's status and how long it took, with the sender still holding the rest.
async fn upload_start(api: &ApiClient, run: &str, declared: u64, send: usize) -> (u16, Duration) {
    let tls = api.connect().await.expect("connect");
    let (mut reader, mut writer) = tokio::io::split(tls);
    let head = format!(
        "POST /v1/runs/{run}/output HTTP/1.1\r\nHost: master\r\n\
         Content-Type: application/x-tar\r\nContent-Length: {declared}\r\n\r\n"
    );
    let started = Instant::now();
    writer.write_all(head.as_bytes()).await.expect("head");
    let _ = writer.write_all(&vec![0u8; send]).await;
    let status = read_status(&mut reader).await;
    drop(writer);
    (status, started.elapsed())
}

async fn read_status(reader: &mut (impl tokio::io::AsyncRead + Unpin)) -> u16 {
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .expect("read");
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text}"))
}

/// Node n2 uploads to the run the master gave n1: refused before its body is read (the
/// answer comes while 200 MiB are still unsent), and nothing is stored. Then n1, the owner,
/// is refused a body over the cap, declared or not, and its small upload is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_to_someone_elses_run_or_over_the_cap_are_refused_unread() {
    let c = cluster("upload").await;
    let (_, n1) = node(&c, "n1").await;
    let (_, n2) = node(&c, "n2").await;
    let mut ws = agent_connection(&n1, c.master.addr).await;
    // An image at a port nothing listens on: the platform lookup fails at once, locally.
    let spec: WorkloadSpec =
        serde_json::from_value(serde_json::json!({"image": "127.0.0.1:1/none:1"})).expect("spec");
    c.admin
        .create_task(&TaskCreateRequest {
            timeout_secs: None,
            request_id: None,
            spec,
            retries: 0,
        })
        .await
        .expect("task");
    let run = assigned_run(&mut ws).await;

    // The attacker: another node's certificate, a run it does not own.
    let (status, took) = upload_start(&n2, &run, 200 << 20, 64 << 10).await;
    assert_eq!(status, 403);
    assert!(took < ANSWER_WITHIN, "{took:?}");
    assert!(
        stored_outputs(&c.dir).is_empty(),
        "{:?}",
        stored_outputs(&c.dir)
    );

    // The owner, declaring more than the cap: refused before the body.
    let over = MAX_TRANSFER_BYTES as u64 + 1;
    let (status, took) = upload_start(&n1, &run, over, 64 << 10).await;
    assert_eq!(status, 413);
    assert!(took < ANSWER_WITHIN, "{took:?}");

    // The owner, chunked, without a length: cut off once past the cap, nothing kept.
    let tls = n1.connect().await.expect("connect");
    let (mut reader, mut writer) = tokio::io::split(tls);
    let head = format!(
        "POST /v1/runs/{run}/output HTTP/1.1\r\nHost: master\r\n\
         Content-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    writer.write_all(head.as_bytes()).await.expect("head");
    let sender = tokio::spawn(async move {
        let chunk = vec![7u8; 1 << 20];
        let mut sent = 0usize;
        while sent <= MAX_TRANSFER_BYTES + (16 << 20) {
            let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            if writer.write_all(&frame).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let status = read_status(&mut reader).await;
    assert_eq!(status, 413);
    let sent = sender.await.expect("sender");
    assert!(sent <= MAX_TRANSFER_BYTES + (16 << 20), "{sent}");
    assert!(
        stored_outputs(&c.dir).is_empty(),
        "{:?}",
        stored_outputs(&c.dir)
    );

    // What the owner may send is kept.
    let path = format!("/v1/runs/{run}/output");
    let (status, body) = request(&n1, "POST", &path, b"a small archive".to_vec()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(stored_outputs(&c.dir).len(), 1);
}

/// A task's input files go only to the node its run is assigned to: another node's
/// certificate, and an admin's, are refused them; a task naming an input the master does
/// not have, and a service with one, are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tasks_input_goes_only_to_the_node_running_it() {
    let c = cluster("input").await;
    let (_, n1) = node(&c, "n1").await;
    let (_, n2) = node(&c, "n2").await;
    let mut ws = agent_connection(&n1, c.master.addr).await;
    let archive = b"the bytes of an input archive".to_vec();
    let info = c.admin.upload_input(archive.clone()).await.expect("upload");
    assert!(info.digest.starts_with("sha256:"), "{info:?}");
    let spec = |input: &str| -> WorkloadSpec {
        serde_json::from_value(serde_json::json!({"image": "127.0.0.1:1/none:1", "input": input}))
            .expect("spec")
    };
    let task = |spec: WorkloadSpec| TaskCreateRequest {
        timeout_secs: None,
        request_id: None,
        spec,
        retries: 0,
    };
    let unknown = format!("sha256:{}", "0".repeat(64));
    let refused = c
        .admin
        .create_task(&task(spec(&unknown)))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("no input"), "{refused}");
    let service = cloudos_cluster::workload::ServiceCreateRequest {
        name: "svc".into(),
        replicas: 1,
        spec: spec(&info.digest),
        request_id: None,
    };
    let refused = c.admin.create_service(&service).await.unwrap_err();
    assert!(
        refused.to_string().contains("--input is for tasks"),
        "{refused}"
    );
    c.admin
        .create_task(&task(spec(&info.digest)))
        .await
        .expect("task");
    let run = assigned_run(&mut ws).await;
    let path = format!("/v1/runs/{run}/input");

    let (status, body) = request(&n2, "GET", &path, Vec::new()).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    let (status, _) = request(&c.admin, "GET", &path, Vec::new()).await;
    assert_eq!(status, 403);
    let (status, body) = request(&n1, "GET", &path, Vec::new()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, archive);
}

// ---------------------------------------------------------------- echoed text

/// An anonymous joiner sends a token id of 60 000 characters; an admin asks for a token
/// whose id carries terminal escapes. The answers quote neither in full nor raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_do_not_echo_what_the_attacker_sent() {
    let c = cluster("echo").await;
    let pinned = Arc::new(tls::client_config_pinned(c.master.pin).expect("pinned config"));
    let tcp = tcp_from(src(30), c.master.addr).await.expect("connect");
    let tls = TlsConnector::from(pinned)
        .connect(ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()), tcp)
        .await
        .expect("TLS");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http");
    tokio::spawn(conn);
    let body = serde_json::json!({
        "token_id": "a".repeat(60_000),
        "token_secret": "b",
        "csr_pem": "",
        "node_name": "x",
        "arch": "x86_64",
    });
    let join = hyper::Request::post("/v1/join")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let response = sender.send_request(join).await.expect("response");
    // Refused as a bad or unknown id, either way quoting it.
    assert!(
        matches!(response.status().as_u16(), 400 | 401),
        "{}",
        response.status()
    );
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert!(body.len() < 2048, "{} bytes answered", body.len());
    let error: ErrorBody = serde_json::from_slice(&body).expect("error body");
    assert!(
        error.message.contains("more characters"),
        "{}",
        error.message
    );

    let (status, body) = request(
        &c.admin,
        "DELETE",
        "/v1/tokens/%1b%5b2J%1b%5d0;owned%07",
        Vec::new(),
    )
    .await;
    let error: ErrorBody = serde_json::from_slice(&body).expect("error body");
    assert!(status >= 400, "{status}");
    assert!(!error.message.contains('\u{1b}'), "{:?}", error.message);
    assert!(!error.message.contains('\u{7}'), "{:?}", error.message);
}

// ---------------------------------------------------------------- the agent

/// A 403 that is not a revocation (here: the stored certificate has the wrong role, as a
/// proxy or a changed rule could also cause) must not make the agent forget who it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_that_is_not_a_revocation_keeps_the_agents_identity() {
    let c = cluster("keep-identity").await;
    let token = c
        .admin
        .create_token(&TokenCreateRequest {
            role: Role::Admin,
            ttl: Some("1h".into()),
            uses: None,
            description: "second admin".into(),
            labels: Default::default(),
        })
        .await
        .expect("token");
    let token: Token = token.token.parse().expect("token");
    let bob = joined(&c.master, &token, "bob").await;
    // What the master answers this certificate on the agents' endpoint: a plain 403.
    let bob_api = ApiClient::from_identity(&bob).expect("client");
    let (status, body) = request(&bob_api, "GET", "/v1/agent/connect", Vec::new()).await;
    let error: ErrorBody = serde_json::from_slice(&body).expect("error body");
    assert_eq!(
        (status, error.code),
        (403, ErrorCode::Forbidden),
        "{}",
        error.message
    );
    let data = c.dir.join("node");
    cloudos_agent::IdentityStore::new(&data)
        .save(&cloudos_agent::StoredIdentity {
            node_name: "bob".into(),
            joined: bob,
        })
        .expect("identity saved");
    let config = cloudos_agent::AgentConfig {
        volume_host_paths: Vec::new(),
        data_dir: data.clone(),
        token: None,
        master: Some(c.master.addr.to_string()),
        name: "bob".into(),
        labels: BTreeMap::new(),
        discover_timeout: Duration::from_secs(1),
        retry: cloudos_agent::Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(300),
        },
        metrics_listen: None,
        insecure_registries: Vec::new(),
        container_node_ports: Vec::new(),
        resolv_conf: None,
        mesh_endpoint: None,
        after_join: None,
        set_clock: None,
        clock_report: None,
        install_release: None,
        system_report: None,
        switch_slot: None,
        reboot: None,
        healthy: None,
    };
    let agent = tokio::spawn(cloudos_agent::run(config));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!agent.is_finished(), "{:?}", agent.await);
    agent.abort();
    let kept = cloudos_agent::IdentityStore::new(&data)
        .load()
        .expect("readable");
    assert!(kept.is_some(), "the identity was deleted");
}
