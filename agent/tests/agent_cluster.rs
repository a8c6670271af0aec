//! The agent against a real master, in-process: the master on its own runtime and thread
//! (so stopping it drops every connection it held), agents as tasks of the test's runtime,
//! everything over real TLS on loopback. The admin side uses the same `cluster::client` the
//! CLI uses.

use cloudos_master::testing as common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudos_agent::{self as agent, AgentConfig, AgentError, Backoff, Outcome};
use cloudos_cluster::api::NodeState;
use cloudos_cluster::api::{NodeInfo, TokenCreateRequest};
use cloudos_cluster::client::{self, ApiClient, ClientError};
use cloudos_cluster::{CaPin, Role, Token};

use common::TestMaster;

const HEARTBEAT: Duration = Duration::from_secs(1);
const NOT_READY_AFTER: Duration = Duration::from_secs(3);
const WAIT: Duration = Duration::from_secs(20);

fn start_master(dir: &Path, listen: SocketAddr, cert_lifetime: Duration) -> TestMaster {
    let mut config = common::config(dir, listen, HEARTBEAT, NOT_READY_AFTER);
    config.cert_lifetime = cert_lifetime;
    TestMaster::start(config, 1)
}

/// Logs in as an admin with the bootstrap token, as `cloudos login` does.
async fn admin(master: &TestMaster) -> ApiClient {
    let token = master.admin_token.as_ref().expect("bootstrap token");
    let id = client::join(
        &master.addr.to_string(),
        token,
        "admin-1",
        "x86_64",
        &BTreeMap::new(),
        Some(Role::Admin),
    )
    .await
    .expect("admin login");
    ApiClient::from_identity(&id).expect("admin client")
}

async fn compute_token(api: &ApiClient) -> Token {
    let created = api
        .create_token(&TokenCreateRequest {
            role: Role::Compute,
            ttl: Some("1h".into()),
            uses: None,
            description: "agent test".into(),
            labels: [("zone".to_string(), "a".to_string())].into(),
        })
        .await
        .expect("token");
    created.token.parse().expect("token parses")
}

fn agent_config(data_dir: &Path, master: SocketAddr, token: Option<Token>) -> AgentConfig {
    AgentConfig {
        volume_host_paths: Vec::new(),
        data_dir: data_dir.to_owned(),
        token,
        master: Some(master.to_string()),
        name: "n1".into(),
        labels: [("zone".to_string(), "a".to_string())].into(),
        discover_timeout: Duration::from_secs(1),
        retry: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
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
    }
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET /metrics` from the node, parsed by a real Prometheus parser.
async fn scrape(port: u16) -> prometheus_parse::Scrape {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("metrics port");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.expect("answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("the exposition parses")
}

fn value(scrape: &prometheus_parse::Scrape, name: &str) -> f64 {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name)
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or_else(|| panic!("no {name}"))
}

type AgentTask = tokio::task::JoinHandle<Result<Outcome, AgentError>>;

fn spawn_agent(config: AgentConfig) -> AgentTask {
    tokio::spawn(agent::run(config))
}

/// Polls the node list until `name` is in `state` (and, for Ready, has telemetry).
async fn wait_node(api: &ApiClient, name: &str, state: NodeState) -> NodeInfo {
    wait_node_where(api, name, &format!("{state:?}"), |n| {
        n.state == state && (state != NodeState::Ready || n.telemetry.is_some())
    })
    .await
}

/// Polls the node list until `name` satisfies `ok`.
async fn wait_node_where(
    api: &ApiClient,
    name: &str,
    what: &str,
    ok: impl Fn(&NodeInfo) -> bool,
) -> NodeInfo {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(nodes) = api.nodes().await {
            if let Some(n) = nodes.into_iter().find(|n| n.name == name && ok(n)) {
                return n;
            }
        }
        assert!(Instant::now() < deadline, "{name} never became {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A master, an admin client and an agent `n1` that is Ready in the node list.
struct Joined {
    dir: PathBuf,
    master: TestMaster,
    api: ApiClient,
    data: PathBuf,
    task: AgentTask,
}

async fn joined(name: &str, cert_lifetime: Duration) -> Joined {
    let dir = common::temp_dir(name);
    let master = start_master(
        &dir.join("master"),
        "127.0.0.1:0".parse().expect("addr"),
        cert_lifetime,
    );
    let api = admin(&master).await;
    let token = compute_token(&api).await;
    let data = dir.join("node");
    let task = spawn_agent(agent_config(&data, master.addr, Some(token)));
    wait_node(&api, "n1", NodeState::Ready).await;
    Joined {
        dir,
        master,
        api,
        data,
        task,
    }
}

fn key_mode(data_dir: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(data_dir.join("agent/node.key"))
        .expect("key file")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_survives_a_master_restart_and_rejoins_without_the_token() {
    let dir = common::temp_dir("restart");
    let mut master = start_master(
        &dir.join("master"),
        "127.0.0.1:0".parse().expect("addr"),
        Duration::from_secs(3600),
    );
    let api = admin(&master).await;
    let token = compute_token(&api).await;
    let data = dir.join("node");
    let metrics_port = free_port();
    // Whoever keeps the token (the installer's config.toml under PID 1) is told once the
    // join is done and the identity saved, never before.
    let joined_calls = Arc::new(AtomicUsize::new(0));
    let identity_saved_first = Arc::new(AtomicBool::new(false));
    let mut config = agent_config(&data, master.addr, Some(token));
    config.metrics_listen = Some(([127, 0, 0, 1], metrics_port).into());
    config.after_join = Some({
        let (calls, saved_first, data) = (
            joined_calls.clone(),
            identity_saved_first.clone(),
            data.clone(),
        );
        Arc::new(move || {
            let saved = cloudos_agent::IdentityStore::new(&data)
                .load()
                .ok()
                .flatten()
                .is_some();
            saved_first.store(saved, Ordering::SeqCst);
            calls.fetch_add(1, Ordering::SeqCst);
        })
    });
    // A host's health check hears of each heartbeat the master acknowledged.
    let acknowledged = Arc::new(AtomicUsize::new(0));
    config.healthy = Some({
        let acknowledged = acknowledged.clone();
        Arc::new(move || {
            acknowledged.fetch_add(1, Ordering::SeqCst);
        })
    });
    let task = spawn_agent(config);

    let node = wait_node(&api, "n1", NodeState::Ready).await;
    // Joined: the token's keeper was told once, after the identity was saved.
    assert_eq!(joined_calls.load(Ordering::SeqCst), 1);
    assert!(identity_saved_first.load(Ordering::SeqCst));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while acknowledged.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no acknowledged heartbeat reached the healthy hook"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The node's own metrics: connected, its resources, acknowledged heartbeats.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let m = scrape(metrics_port).await;
        if value(&m, "cloudos_node_heartbeats_total") >= 1.0 || std::time::Instant::now() > deadline
        {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(value(&metrics, "cloudos_node_connected"), 1.0);
    assert!(value(&metrics, "cloudos_node_heartbeats_total") >= 1.0);
    assert!(value(&metrics, "cloudos_node_memory_total_bytes") > 0.0);
    assert_eq!(node.role, Role::Compute);
    assert_eq!(node.labels.get("zone").map(String::as_str), Some("a"));
    let t = node.telemetry.expect("telemetry");
    assert!(
        t.capacity.cpu_millicores >= 1000 && t.mem_total_bytes > 0,
        "{t:?}"
    );
    assert_eq!(t.nodeos_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(key_mode(&data), 0o600);
    let identity = std::fs::read_to_string(data.join("agent/identity.json")).expect("identity");
    assert!(identity.contains("\"cluster_name\": \"lab\""), "{identity}");

    // The master goes away: the agent keeps retrying (and does not end).
    let addr = master.addr;
    master.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !task.is_finished(),
        "the agent must not stop while the master is down"
    );

    // Back on the same address with the same state: the agent reconnects on its own.
    let master = start_master(&dir.join("master"), addr, Duration::from_secs(3600));
    let api = admin_again(&master, &api).await;
    // The restarted master may remember the node as Ready: wait for a fresh heartbeat.
    let restarted = std::time::SystemTime::now();
    wait_node_where(&api, "n1", "seen after the restart", |n| {
        n.state == NodeState::Ready && std::time::SystemTime::from(n.last_seen) > restarted
    })
    .await;

    // The agent stops (a reboot): NotReady. It starts again with no token: Ready again.
    task.abort();
    let _ = task.await;
    wait_node(&api, "n1", NodeState::NotReady).await;
    let task = spawn_agent(agent_config(&data, master.addr, None));
    wait_node(&api, "n1", NodeState::Ready).await;
    let computes = api
        .nodes()
        .await
        .expect("nodes")
        .into_iter()
        .filter(|n| n.role == Role::Compute)
        .count();
    assert_eq!(computes, 1, "the restarted agent is the same node");
    task.abort();
    drop(master);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The admin's credentials outlive a master restart; the bootstrap token is gone then.
async fn admin_again(master: &TestMaster, before: &ApiClient) -> ApiClient {
    assert!(
        master.admin_token.is_none(),
        "an admin joined: no new bootstrap token"
    );
    let deadline = Instant::now() + WAIT;
    while before.status().await.is_err() {
        assert!(Instant::now() < deadline, "master did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    before.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renews_its_certificate_and_stays_connected() {
    // With the 5-minute clock-skew allowance, a 160 s lifetime is due for renewal about
    // 7 s after it is issued.
    let Joined {
        dir,
        master,
        api,
        data,
        task,
    } = joined("renew", Duration::from_secs(160)).await;
    let first_cert = std::fs::read_to_string(data.join("agent/node.crt")).expect("cert");
    let first_key = std::fs::read_to_string(data.join("agent/node.key")).expect("key");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let cert = std::fs::read_to_string(data.join("agent/node.crt")).unwrap_or_default();
        if !cert.is_empty() && cert != first_cert {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the certificate was never renewed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let key = std::fs::read_to_string(data.join("agent/node.key")).expect("key");
    assert_ne!(key, first_key, "renewal makes a new key");
    assert_eq!(key_mode(&data), 0o600);
    // Reconnected with the new certificate: heartbeats keep it Ready past NOT_READY_AFTER.
    tokio::time::sleep(NOT_READY_AFTER + HEARTBEAT).await;
    wait_node(&api, "n1", NodeState::Ready).await;
    assert!(!task.is_finished());
    task.abort();
    drop(master);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_cluster_is_refused_and_nothing_is_written() {
    let dir = common::temp_dir("pin");
    let master = start_master(
        &dir.join("master"),
        "127.0.0.1:0".parse().expect("addr"),
        Duration::from_secs(3600),
    );
    let other = CaPin::from_hex(&"ab".repeat(32)).expect("pin");
    assert_ne!(other, master.pin);
    let token = Token::generate(other).expect("token");
    let data = dir.join("node");
    let result = tokio::time::timeout(
        WAIT,
        agent::run(agent_config(&data, master.addr, Some(token))),
    )
    .await
    .expect("the agent gives up at once");
    match result {
        Err(AgentError::JoinRefused(e @ ClientError::PinMismatch { .. })) => {
            let msg = format!("{}", AgentError::JoinRefused(e));
            assert!(
                msg.contains("CA pin mismatch: this is not the master your token was made for"),
                "{msg}"
            );
        }
        other => panic!("expected a pin mismatch, got {other:?}"),
    }
    assert!(!data.join("agent").exists(), "nothing written");
    drop(master);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_agent_forgets_its_identity_and_stops() {
    let Joined {
        dir,
        master,
        api,
        data,
        task,
    } = joined("evict", Duration::from_secs(3600)).await;

    api.remove_node("n1").await.expect("remove");
    let outcome = tokio::time::timeout(WAIT, task)
        .await
        .expect("the agent stops")
        .expect("no panic")
        .expect("no error");
    assert!(matches!(outcome, Outcome::Evicted { .. }), "{outcome:?}");
    assert!(!data.join("agent").exists(), "identity deleted");

    // Without an identity and a token it cannot come back.
    let err = agent::run(agent_config(&data, master.addr, None))
        .await
        .expect_err("no token");
    assert!(err.to_string().contains("no join token"), "{err}");
    drop(master);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The modes of what master and agent write (issue 16, item 14).
#[path = "agent_cluster/modes.rs"]
mod modes;
