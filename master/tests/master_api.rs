//! The master's API in-process: a real master (its own runtime, real TLS on loopback, a
//! redb store in a temp directory) and clients made of tokio-rustls + hyper and
//! tokio-tungstenite. Each scenario that makes failed joins uses its own source address
//! (127.0.0.N) so the join rate limit only bites where it is tested.

use cloudos_master::testing as common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cloudos_cluster::api::NodeState;
use cloudos_cluster::api::{
    AgentHello, AgentMessage, ClusterStatus, ErrorBody, ErrorCode, Heartbeat, JoinRequest,
    JoinResponse, MasterMessage, NodeInfo, Telemetry, TokenCreateResponse, TokenInfo,
};
use cloudos_cluster::pki::{self, identity_from_cert};
use cloudos_cluster::{tls, CaPin, NodeIdentity, NodeKey, Role, Token};
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

use common::TestMaster;

const HEARTBEAT: Duration = Duration::from_millis(200);
const NOT_READY_AFTER: Duration = Duration::from_millis(800);

// ---------------------------------------------------------------- the master

/// A master on 127.0.0.1 with fast heartbeats.
fn start_master(dir: &Path) -> TestMaster {
    let listen = "127.0.0.1:0".parse().expect("addr");
    TestMaster::start(common::config(dir, listen, HEARTBEAT, NOT_READY_AFTER), 2)
}

// ---------------------------------------------------------------- the clients

/// A client identity: TLS config plus the source address it connects from.
#[derive(Clone)]
struct Client {
    tls: Arc<ClientConfig>,
    from: IpAddr,
    /// An API key sent as `Authorization: Bearer`.
    bearer: Option<String>,
}

impl Client {
    /// This client, also sending `key` as a bearer token.
    fn with_key(&self, key: &str) -> Client {
        Client {
            bearer: Some(key.to_owned()),
            ..self.clone()
        }
    }
}

fn src(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

fn pinned(pin: CaPin, from: IpAddr) -> Client {
    Client {
        tls: Arc::new(tls::client_config_pinned(pin).expect("pinned config")),
        from,
        bearer: None,
    }
}

/// A node's or admin's certificate and key, from a join.
struct Credentials {
    response: JoinResponse,
    key: NodeKey,
}

impl Credentials {
    fn client(&self, from: IpAddr) -> Client {
        let ca = pki::cert_from_pem(&self.response.ca_pem, "ca").expect("ca");
        let chain = pki::certs_from_pem(&self.response.cert_pem, "cert").expect("cert");
        let config =
            tls::client_config_mtls(&ca, chain, self.key.private_key_der()).expect("mtls config");
        Client {
            tls: Arc::new(config),
            from,
            bearer: None,
        }
    }

    fn identity(&self) -> NodeIdentity {
        let der = pki::cert_from_pem(&self.response.cert_pem, "cert").expect("cert");
        identity_from_cert(&der).expect("identity")
    }
}

async fn tls_connect(client: &Client, addr: SocketAddr) -> TlsStream<TcpStream> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(client.from, 0))
        .expect("bind source");
    let tcp = socket.connect(addr).await.expect("connect");
    TlsConnector::from(Arc::clone(&client.tls))
        .connect(ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()), tcp)
        .await
        .expect("TLS handshake")
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

impl Reply {
    fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("status {}: {e}: {}", self.status, self.body))
    }

    fn error(&self) -> ErrorBody {
        self.json()
    }
}

async fn call(
    client: &Client,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Reply {
    let tls = tls_connect(client, addr).await;
    let authorization = client.bearer.as_ref().map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = authorization
        .as_deref()
        .map(|a| ("authorization", a))
        .into_iter()
        .collect();
    let (status, headers, bytes) = common::http_request_with(
        tls,
        method,
        path,
        &headers,
        body.unwrap_or_default().into_bytes(),
    )
    .await;
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn join_body(token: &str, name: &str, csr_name: &str, key: &NodeKey) -> String {
    let token: Token = token.parse().expect("token parses");
    let request = JoinRequest {
        token_id: token.id().clone(),
        token_secret: token.secret().to_owned(),
        csr_pem: key.csr_pem(csr_name).expect("csr"),
        node_name: name.to_owned(),
        arch: "x86_64".to_owned(),
        labels: Default::default(),
    };
    serde_json::to_string(&request).expect("json")
}

async fn try_join(
    m: &TestMaster,
    from: IpAddr,
    token: &str,
    name: &str,
) -> Result<Credentials, Reply> {
    let key = NodeKey::generate().expect("key");
    let body = join_body(token, name, name, &key);
    let reply = call(&pinned(m.pin, from), m.addr, "POST", "/v1/join", Some(body)).await;
    if reply.status != 200 {
        return Err(reply);
    }
    Ok(Credentials {
        response: reply.json(),
        key,
    })
}

async fn join(m: &TestMaster, from: IpAddr, token: &str, name: &str) -> Credentials {
    match try_join(m, from, token, name).await {
        Ok(c) => c,
        Err(reply) => panic!("join {name}: {} {}", reply.status, reply.body),
    }
}

async fn join_admin(m: &TestMaster) -> Credentials {
    let token = m
        .admin_token
        .as_ref()
        .expect("bootstrap token on first start")
        .to_string();
    join(m, src(1), &token, "alice").await
}

async fn create_token(
    m: &TestMaster,
    admin: &Client,
    body: serde_json::Value,
) -> TokenCreateResponse {
    let reply = call(admin, m.addr, "POST", "/v1/tokens", Some(body.to_string())).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

async fn compute_token(m: &TestMaster, admin: &Client) -> String {
    create_token(
        m,
        admin,
        serde_json::json!({"role": "compute", "ttl": "1h"}),
    )
    .await
    .token
}

async fn nodes(m: &TestMaster, admin: &Client) -> Vec<NodeInfo> {
    let reply = call(admin, m.addr, "GET", "/v1/nodes", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

async fn tokens(m: &TestMaster, admin: &Client) -> Vec<TokenInfo> {
    let reply = call(admin, m.addr, "GET", "/v1/tokens", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

async fn node_state(m: &TestMaster, admin: &Client, name: &str) -> Option<NodeState> {
    let reply = call(admin, m.addr, "GET", &format!("/v1/nodes/{name}"), None).await;
    (reply.status == 200).then(|| reply.json::<NodeInfo>().state)
}

/// Polls until the node is in `want`, or fails after a few seconds.
async fn wait_state(m: &TestMaster, admin: &Client, name: &str, want: NodeState) {
    for _ in 0..60 {
        if node_state(m, admin, name).await == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("node {name} never became {want:?}");
}

fn assert_error(reply: &Reply, status: u16, code: ErrorCode, says: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    let error = reply.error();
    assert_eq!(error.code, code, "{}", reply.body);
    assert!(
        error.message.contains(says),
        "{:?} lacks {says:?}",
        error.message
    );
}

// ---------------------------------------------------------------- WebSocket

type Ws = tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>;

async fn agent_connect(m: &TestMaster, node: &Client) -> Ws {
    let tls = tls_connect(node, m.addr).await;
    let url = format!("wss://127.0.0.1:{}/v1/agent/connect", m.addr.port());
    // Small buffers, as a real agent would use, so the load check measures the master.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, tls, Some(config))
        .await
        .expect("websocket upgrade");
    ws
}

async fn send(ws: &mut Ws, message: &AgentMessage) {
    let text = serde_json::to_string(message).expect("json");
    ws.send(Message::text(text)).await.expect("send");
}

/// The next message from the master but the service table, which comes after each
/// welcome and with each change of the services (`receive_any` sees it).
async fn receive(ws: &mut Ws) -> Option<MasterMessage> {
    loop {
        match receive_any(ws).await {
            Some(MasterMessage::Services(_)) => continue,
            other => return other,
        }
    }
}

async fn receive_any(ws: &mut Ws) -> Option<MasterMessage> {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5s");
        match next {
            Some(Ok(Message::Text(text))) => {
                return Some(serde_json::from_str(text.as_str()).expect("master message"))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            _ => return None,
        }
    }
}

fn hello() -> AgentMessage {
    AgentMessage::Hello(AgentHello {
        address: "192.0.2.10".to_owned(),
        arch: "x86_64".to_owned(),
        labels: Default::default(),
        nodeos_version: "0.1.0".to_owned(),
        runs: Vec::new(),
        boot: None,
        mesh: None,
    })
}

fn beat(seq: u64) -> AgentMessage {
    AgentMessage::Heartbeat(Heartbeat {
        usage: Default::default(),
        seq,
        sent_at: time::OffsetDateTime::now_utc(),
        telemetry: Telemetry {
            load1: 0.5,
            ..Telemetry::default()
        },
        runs: Vec::new(),
    })
}

// ---------------------------------------------------------------- fixture

/// A started master with its first admin joined; stops the master and removes its state
/// when dropped.
struct Fixture {
    m: TestMaster,
    dir: PathBuf,
    admin: Credentials,
    /// The admin's client.
    a: Client,
}

async fn fixture(name: &str) -> Fixture {
    let dir = common::temp_dir(name);
    let m = start_master(&dir);
    let admin = join_admin(&m).await;
    let a = admin.client(src(1));
    Fixture { m, dir, admin, a }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.m.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The body of a fallback heartbeat.
fn beat_body() -> String {
    serde_json::to_value(beat(1)).expect("json")["heartbeat"].to_string()
}

/// Joins `name` with a fresh compute token and opens its agent connection (hello done).
async fn connected_node(f: &Fixture, name: &str) -> (Credentials, Ws) {
    let token = compute_token(&f.m, &f.a).await;
    let node = join(&f.m, src(2), &token, name).await;
    let mut ws = agent_connect(&f.m, &node.client(src(2))).await;
    send(&mut ws, &hello()).await;
    let welcome = receive_any(&mut ws).await;
    assert!(
        matches!(
            &welcome,
            Some(MasterMessage::Welcome {
                cluster_name,
                heartbeat_interval_secs: 1,
                subnet: Some(_),
                range: Some(range),
            }) if cluster_name == "lab" && range == cloudos_cluster::subnets::DEFAULT_RANGE
        ),
        "{welcome:?}"
    );
    // Then the services it routes: none yet, from the default range.
    match receive_any(&mut ws).await {
        Some(MasterMessage::Services(table)) => {
            assert_eq!(table.range, cloudos_cluster::routing::DEFAULT_SERVICE_RANGE);
        }
        other => panic!("no service table after the welcome: {other:?}"),
    }
    (node, ws)
}

/// The container subnet a node's agent is welcomed with.
async fn welcomed_subnet(f: &Fixture, node: &Credentials) -> Option<String> {
    let mut ws = agent_connect(&f.m, &node.client(src(2))).await;
    send(&mut ws, &hello()).await;
    match receive(&mut ws).await {
        Some(MasterMessage::Welcome { subnet, .. }) => subnet,
        other => panic!("no welcome: {other:?}"),
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_gives_certificates_and_roles_decide_access() {
    let f = fixture("roles").await;
    let (m, a) = (&f.m, &f.a);
    assert_eq!(
        f.admin.identity(),
        NodeIdentity::new("alice", Role::Admin).expect("id")
    );
    assert_eq!(f.admin.response.cluster_name, "lab");

    let token = compute_token(m, a).await;
    let node = join(m, src(2), &token, "n1").await;
    assert_eq!(
        node.identity(),
        NodeIdentity::new("n1", Role::Compute).expect("id")
    );
    assert_eq!(node.response.role, Role::Compute);
    assert_eq!(
        CaPin::of_cert(
            pki::cert_from_pem(&node.response.ca_pem, "ca")
                .expect("ca")
                .as_ref()
        )
        .ok(),
        Some(m.pin)
    );
    let listed = nodes(m, a).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].state),
        ("n1", NodeState::NotReady)
    );

    let status: ClusterStatus = call(a, m.addr, "GET", "/v1/status", None).await.json();
    assert_eq!(
        (status.cluster_name.as_str(), status.nodes_total),
        ("lab", 1)
    );
    assert_eq!(status.ca_pin, m.pin.to_string());

    // A compute certificate is not an admin's; no certificate is nobody.
    let n = node.client(src(2));
    for (method, path) in [
        ("GET", "/v1/nodes"),
        ("GET", "/v1/tokens"),
        ("GET", "/v1/status"),
        // Issue 21's routes: a node may neither read nor make secrets, registry
        // credentials, volumes or updates.
        ("GET", "/v1/secrets"),
        ("POST", "/v1/secrets"),
        ("DELETE", "/v1/secrets/db"),
        ("GET", "/v1/volumes"),
        ("DELETE", "/v1/volumes/db"),
        ("PUT", "/v1/services/web"),
        ("POST", "/v1/services/web/rollback"),
        ("GET", "/v1/registries"),
        ("POST", "/v1/registries"),
        ("DELETE", "/v1/registries/10.0.0.1:5000"),
    ] {
        let reply = call(&n, m.addr, method, path, None).await;
        assert_error(&reply, 403, ErrorCode::Forbidden, "needs role");
    }
    let anonymous = pinned(m.pin, src(2));
    let reply = call(&anonymous, m.addr, "GET", "/v1/nodes", None).await;
    assert_error(
        &reply,
        401,
        ErrorCode::Unauthenticated,
        "client certificate",
    );
    let inner = beat_body();
    let reply = call(
        &anonymous,
        m.addr,
        "POST",
        "/v1/heartbeat",
        Some(inner.clone()),
    )
    .await;
    assert_error(
        &reply,
        401,
        ErrorCode::Unauthenticated,
        "client certificate",
    );
    // An admin certificate is not a node's.
    let reply = call(a, m.addr, "POST", "/v1/heartbeat", Some(inner.clone())).await;
    assert_error(&reply, 403, ErrorCode::Forbidden, "compute or master");
    // The node's own fallback heartbeat works and makes it Ready.
    let reply = call(&n, m.addr, "POST", "/v1/heartbeat", Some(inner)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json::<MasterMessage>(),
        MasterMessage::HeartbeatAck { seq: 1 }
    );
    assert_eq!(node_state(m, a, "n1").await, Some(NodeState::Ready));

    // Renewal keeps the identity.
    let key = NodeKey::generate().expect("key");
    let renew = serde_json::json!({"csr_pem": key.csr_pem("n1").expect("csr")}).to_string();
    let reply = call(&n, m.addr, "POST", "/v1/renew", Some(renew)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let renewed = Credentials {
        response: reply.json(),
        key,
    };
    assert_eq!(renewed.identity(), node.identity());

    // The OpenAPI document needs no certificate; unknown paths get an ErrorBody.
    let reply = call(&anonymous, m.addr, "GET", "/v1/openapi.json", None).await;
    assert_eq!(reply.status, 200);
    assert!(reply.json::<serde_json::Value>()["paths"]["/v1/join"].is_object());
    let reply = call(&anonymous, m.addr, "GET", "/v1/nope", None).await;
    assert_error(&reply, 404, ErrorCode::NotFound, "no endpoint /v1/nope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_and_change_nothing() {
    let f = fixture("tokens").await;
    let (m, a) = (&f.m, &f.a);
    let good: Token = compute_token(m, a).await.parse().expect("token");
    let once = create_token(m, a, serde_json::json!({"role": "compute", "uses": 1})).await;
    join(m, src(3), &once.token, "used").await;
    let short = create_token(m, a, serde_json::json!({"role": "compute", "ttl": "1s"})).await;
    let revoked = create_token(m, a, serde_json::json!({"role": "compute"})).await;
    let reply = call(
        a,
        m.addr,
        "DELETE",
        &format!("/v1/tokens/{}", revoked.info.id),
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.json::<TokenInfo>().revoked);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = tokens(m, a).await;

    let wrong_secret = format!(
        "cloudos1_{}_{}_{}",
        good.id(),
        "a".repeat(32),
        good.pin().to_hex()
    );
    let unknown = format!("cloudos1_zzzzzz_{}_{}", "a".repeat(32), good.pin().to_hex());
    let cases: Vec<(String, u16, ErrorCode, &str)> = vec![
        (
            wrong_secret,
            401,
            ErrorCode::Unauthenticated,
            "wrong secret",
        ),
        (
            unknown,
            401,
            ErrorCode::Unauthenticated,
            "no token with id zzzzzz",
        ),
        (short.token.clone(), 403, ErrorCode::TokenInvalid, "expired"),
        (
            revoked.token.clone(),
            403,
            ErrorCode::TokenInvalid,
            "revoked",
        ),
        (
            once.token.clone(),
            403,
            ErrorCode::TokenInvalid,
            "no uses left",
        ),
    ];
    for (i, (token, status, code, says)) in cases.into_iter().enumerate() {
        let from = src(10 + u8::try_from(i).expect("small"));
        let reply = try_join(m, from, &token, "n1")
            .await
            .err()
            .expect("refused");
        assert_error(&reply, status, code, says);
    }
    assert_eq!(tokens(m, a).await, before, "no token changed");
    let names: Vec<String> = nodes(m, a).await.into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["used"], "no node added");

    // The bootstrap token had one use.
    let again = m.admin_token.as_ref().expect("token").to_string();
    let reply = try_join(m, src(20), &again, "bob")
        .await
        .err()
        .expect("used up");
    assert_error(&reply, 403, ErrorCode::TokenInvalid, "no uses left");

    // A token's role decides the certificate: a compute token never gives an admin.
    let node = join(m, src(21), &good.to_string(), "n2").await;
    let reply = call(
        &node.client(src(21)),
        m.addr,
        "POST",
        "/v1/tokens",
        Some(r#"{"role":"admin"}"#.into()),
    )
    .await;
    assert_error(&reply, 403, ErrorCode::Forbidden, "needs role admin");
    // Bad token requests.
    let reply = call(
        a,
        m.addr,
        "POST",
        "/v1/tokens",
        Some(r#"{"role":"compute","ttl":"2x"}"#.into()),
    )
    .await;
    assert_error(&reply, 400, ErrorCode::BadRequest, "unknown unit");
    let reply = call(a, m.addr, "DELETE", "/v1/tokens/nosuch", None).await;
    assert_error(&reply, 404, ErrorCode::NotFound, "no token with id nosuch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_csrs_and_bodies_are_checked() {
    let f = fixture("names").await;
    let (m, a) = (&f.m, &f.a);
    let token = compute_token(m, a).await;
    let before = tokens(m, a).await;

    // A CSR that asks for another name gets the request's (validated) name.
    let key = NodeKey::generate().expect("key");
    let body = join_body(&token, "n1", "evil-master", &key);
    let reply = call(
        &pinned(m.pin, src(30)),
        m.addr,
        "POST",
        "/v1/join",
        Some(body),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let n1 = Credentials {
        response: reply.json(),
        key,
    };
    assert_eq!(
        n1.identity(),
        NodeIdentity::new("n1", Role::Compute).expect("id")
    );

    // Bad names, a duplicate name, a bad CSR, bad JSON, a huge body: refused, nothing used.
    let key = NodeKey::generate().expect("key");
    let csr = key.csr_pem("n2").expect("csr");
    let with = |name: &str, csr: &str| {
        let mut v: serde_json::Value =
            serde_json::from_str(&join_body(&token, "x", "x", &key)).expect("json");
        v["node_name"] = name.into();
        v["csr_pem"] = csr.into();
        v.to_string()
    };
    let huge = serde_json::json!({"token_id": "abcdef", "token_secret": "x".repeat(70 * 1024)})
        .to_string();
    let cases: Vec<(String, u16, ErrorCode, &str)> = vec![
        (
            with("Bad_Name", &csr),
            400,
            ErrorCode::BadRequest,
            "not a valid host name",
        ),
        (with("n1", &csr), 409, ErrorCode::Conflict, "already taken"),
        (
            with("n2", "junk"),
            400,
            ErrorCode::BadRequest,
            "certificate request is invalid",
        ),
        (
            "{not json".to_owned(),
            400,
            ErrorCode::BadRequest,
            "not a valid JoinRequest",
        ),
        (
            r#"{"token_id":"abcdef"}"#.to_owned(),
            400,
            ErrorCode::BadRequest,
            "missing field",
        ),
    ];
    for (i, (body, status, code, says)) in cases.into_iter().enumerate() {
        let from = src(40 + u8::try_from(i).expect("small"));
        let reply = call(&pinned(m.pin, from), m.addr, "POST", "/v1/join", Some(body)).await;
        assert_error(&reply, status, code, says);
    }
    let reply = call(
        &pinned(m.pin, src(50)),
        m.addr,
        "POST",
        "/v1/join",
        Some(huge.clone()),
    )
    .await;
    assert_error(
        &reply,
        413,
        ErrorCode::PayloadTooLarge,
        "larger than 65536 bytes",
    );
    let reply = call(a, m.addr, "POST", "/v1/tokens", Some(huge)).await;
    assert_error(&reply, 413, ErrorCode::PayloadTooLarge, "larger than");
    let after = tokens(m, a).await;
    let uses = |t: &[TokenInfo]| {
        t.iter()
            .map(|t| (t.id.clone(), t.uses_left))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        uses(&after),
        uses(&before),
        "only the n1 join used the (unlimited) token"
    );
    assert_eq!(nodes(m, a).await.len(), 1);

    // The same node joining again with its own certificate keeps its name.
    let key = NodeKey::generate().expect("key");
    let body = join_body(&token, "n1", "n1", &key);
    let reply = call(&n1.client(src(30)), m.addr, "POST", "/v1/join", Some(body)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // ... and its old certificate is revoked.
    let reply = call(
        &n1.client(src(30)),
        m.addr,
        "POST",
        "/v1/heartbeat",
        Some(beat_body()),
    )
    .await;
    assert_error(&reply, 403, ErrorCode::Revoked, "is revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_joins_are_rate_limited_per_address() {
    let f = fixture("ratelimit").await;
    let (m, a) = (&f.m, &f.a);
    let token: Token = compute_token(m, a).await.parse().expect("token");
    let wrong = format!(
        "cloudos1_{}_{}_{}",
        token.id(),
        "b".repeat(32),
        token.pin().to_hex()
    );
    let attacker = src(60);
    for _ in 0..5 {
        let reply = try_join(m, attacker, &wrong, "n1")
            .await
            .err()
            .expect("refused");
        assert_eq!(reply.status, 401, "{}", reply.body);
    }
    for t in [&wrong, &token.to_string()] {
        let reply = try_join(m, attacker, t, "n1").await.err().expect("limited");
        assert_error(
            &reply,
            429,
            ErrorCode::TooManyRequests,
            "too many failed attempts",
        );
        let retry: u64 = reply.headers["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((1..=10).contains(&retry), "{retry}");
    }
    // Other addresses are not affected.
    join(m, src(61), &token.to_string(), "n1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_make_nodes_ready_and_silence_not_ready() {
    let f = fixture("health").await;
    let (m, a) = (&f.m, &f.a);
    let (node, mut ws) = connected_node(&f, "n1").await;
    for seq in 1..=3 {
        send(&mut ws, &beat(seq)).await;
        assert_eq!(
            receive(&mut ws).await,
            Some(MasterMessage::HeartbeatAck { seq })
        );
    }
    wait_state(m, a, "n1", NodeState::Ready).await;
    let info: NodeInfo = call(a, m.addr, "GET", "/v1/nodes/n1", None).await.json();
    assert_eq!(info.address, "192.0.2.10");
    assert_eq!(info.telemetry.map(|t| t.load1), Some(0.5));

    // Silence: NotReady after not_ready_after; heartbeats again: Ready.
    tokio::time::sleep(NOT_READY_AFTER + Duration::from_millis(300)).await;
    wait_state(m, a, "n1", NodeState::NotReady).await;
    send(&mut ws, &beat(4)).await;
    assert_eq!(
        receive(&mut ws).await,
        Some(MasterMessage::HeartbeatAck { seq: 4 })
    );
    wait_state(m, a, "n1", NodeState::Ready).await;

    // A closed connection is NotReady at once.
    ws.close(None).await.expect("close");
    drop(ws);
    wait_state(m, a, "n1", NodeState::NotReady).await;

    // Junk on the connection closes it.
    let mut ws = agent_connect(m, &node.client(src(2))).await;
    send(&mut ws, &hello()).await;
    receive(&mut ws).await;
    ws.send(Message::text("{\"reboot\":{}}"))
        .await
        .expect("send");
    assert_eq!(receive(&mut ws).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_node_evicts_it_and_revokes_its_certificate() {
    let f = fixture("evict").await;
    let (m, a) = (&f.m, &f.a);
    let (node, mut ws) = connected_node(&f, "n1").await;
    let n = node.client(src(2));
    wait_state(m, a, "n1", NodeState::Ready).await;

    let reply = call(a, m.addr, "DELETE", "/v1/nodes/n1", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json::<NodeInfo>().name, "n1");
    match receive(&mut ws).await {
        Some(MasterMessage::Evicted { reason }) => assert!(reason.contains("alice"), "{reason}"),
        other => panic!("expected evicted, got {other:?}"),
    }
    assert_eq!(receive(&mut ws).await, None, "closed after eviction");
    assert!(nodes(m, a).await.is_empty());
    let reply = call(&n, m.addr, "POST", "/v1/heartbeat", Some(beat_body())).await;
    assert_error(&reply, 403, ErrorCode::Revoked, "is revoked");
    let reply = call(a, m.addr, "DELETE", "/v1/nodes/n1", None).await;
    assert_error(&reply, 404, ErrorCode::NotFound, "no node named n1");
    // The name is free again for a new join.
    join(m, src(3), &compute_token(m, a).await, "n1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_ca_tokens_and_nodes() {
    let dir = common::temp_dir("restart");
    let mut m = start_master(&dir);
    let pin = m.pin;
    let admin = join_admin(&m).await;
    let token = compute_token(&m, &admin.client(src(1))).await;
    join(&m, src(2), &token, "n1").await;
    m.stop();

    let mut m = start_master(&dir);
    assert_eq!(m.pin, pin, "same CA");
    assert_eq!(
        m.admin_token, None,
        "an admin joined: no new bootstrap token"
    );
    let a = admin.client(src(1));
    let names: Vec<String> = nodes(&m, &a).await.into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["n1"]);
    let ids: Vec<String> = tokens(&m, &a)
        .await
        .into_iter()
        .map(|t| t.id.to_string())
        .collect();
    let token: Token = token.parse().expect("token");
    assert!(ids.contains(&token.id().to_string()), "{ids:?}");
    join(&m, src(2), &token.to_string(), "n2").await;
    m.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_gets_no_http_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture("plain").await;
    let mut tcp = TcpStream::connect(f.m.addr).await.expect("connect");
    tcp.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(
        !buf.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
}

/// Resident memory of this process (master and clients together), in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A rough load check, not a benchmark: N agents (CLOUDOS_AGENTS, default 1000) on real TLS
/// WebSockets beating once a second; prints the heartbeat round trip p50/p99 and the RSS
/// growth (an upper bound for the master: the clients live in the same process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load check (a release build, minutes): scripts/bench-cluster.sh runs it; CLOUDOS_AGENTS=N for more agents"]
async fn many_agents_heartbeat_round_trip() {
    let n: usize = std::env::var("CLOUDOS_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let f = fixture("load").await;
    let token = compute_token(&f.m, &f.a).await;
    let m = &f.m;
    let joined: Vec<Credentials> = futures::stream::iter(0..n)
        .map(|i| {
            let token = token.clone();
            async move { join(m, src(100 + (i % 100) as u8), &token, &format!("load{i}")).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let before = rss_kib();
    let mut sockets = Vec::with_capacity(n);
    for (i, node) in joined.iter().enumerate() {
        // At most 200 agents per loopback source: the master caps certified connections
        // per source (256), and real agents come from many hosts.
        let n = i / 200;
        let from = IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            1 + (n / 250) as u8,
            1 + (n % 250) as u8,
        ));
        let mut ws = agent_connect(m, &node.client(from)).await;
        send(&mut ws, &hello()).await;
        receive(&mut ws).await;
        sockets.push(ws);
    }
    let connected = rss_kib();
    let rounds = 5;
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            tokio::spawn(async move {
                // Spread the agents over the second, as real ones drift apart.
                tokio::time::sleep(Duration::from_micros((i as u64 * 1_000_000) / n as u64)).await;
                let mut rtts = Vec::with_capacity(rounds);
                for seq in 1..=rounds as u64 {
                    let start = std::time::Instant::now();
                    send(&mut ws, &beat(seq)).await;
                    while let Some(reply) = receive(&mut ws).await {
                        if reply == (MasterMessage::HeartbeatAck { seq }) {
                            break;
                        }
                    }
                    rtts.push(start.elapsed());
                    tokio::time::sleep(Duration::from_secs(1).saturating_sub(start.elapsed()))
                        .await;
                }
                rtts
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("agent task"));
    }
    all.sort();
    let pct = |p: usize| all[(all.len() * p / 100).min(all.len() - 1)];
    println!(
        "{n} agents, {} heartbeats: round trip p50 {:?} p99 {:?}; RSS {} MiB before connecting, {} MiB connected (+{} KiB per agent, clients included)",
        all.len(),
        pct(50),
        pct(99),
        before / 1024,
        connected / 1024,
        connected.saturating_sub(before) / n as u64
    );
}

/// The value of the sample of `name` whose labels include all of `labels`.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_joins_and_heartbeats_for_admins_only() {
    let f = fixture("metrics").await;
    let (m, a) = (&f.m, &f.a);
    let token = compute_token(m, a).await;
    let _ = join(m, src(2), &token, "n1").await;
    let (node, mut ws) = connected_node(&f, "n2").await;
    send(&mut ws, &beat(1)).await;
    assert_eq!(
        receive(&mut ws).await,
        Some(MasterMessage::HeartbeatAck { seq: 1 })
    );
    wait_state(m, a, "n2", NodeState::Ready).await;
    let _ = nodes(m, a).await;

    // Nobody and nodes may not read them; an admin may.
    let anonymous = pinned(m.pin, src(3));
    assert_eq!(
        call(&anonymous, m.addr, "GET", "/metrics", None)
            .await
            .status,
        401
    );
    assert_eq!(
        call(&node.client(src(2)), m.addr, "GET", "/metrics", None)
            .await
            .status,
        403
    );
    let reply = call(a, m.addr, "GET", "/metrics", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/plain")),
        "{:?}",
        reply.headers
    );

    // A real parser reads it.
    let lines = reply.body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    let nodes_route = [("method", "GET"), ("route", "/v1/nodes"), ("status", "200")];
    assert!(
        sample(&scrape, "cloudos_api_requests_total", &nodes_route).is_some_and(|v| v >= 1.0),
        "{}",
        reply.body
    );
    assert!(sample(
        &scrape,
        "cloudos_join_attempts_total",
        &[("outcome", "joined")]
    )
    .is_some_and(|v| v >= 2.0));
    assert_eq!(
        sample(&scrape, "cloudos_nodes", &[("state", "ready")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&scrape, "cloudos_node_load1", &[("node", "n2")]),
        Some(0.5)
    );
    let beats = scrape.samples.iter().find_map(|s| match &s.value {
        prometheus_parse::Value::Histogram(buckets)
            if s.metric == "cloudos_heartbeat_handling_seconds" =>
        {
            buckets
                .iter()
                .map(|b| b.count)
                .fold(None, |max: Option<f64>, c| {
                    Some(max.map_or(c, |m| m.max(c)))
                })
        }
        _ => None,
    });
    assert!(
        beats.is_some_and(|n| n >= 1.0),
        "no heartbeat in the histogram:\n{}",
        reply.body
    );
    // Node names and token ids are never route labels.
    assert!(
        !reply.body.contains("route=\"/v1/nodes/n2\""),
        "{}",
        reply.body
    );
}

// ---------------------------------------------------------------- trust (issue 16)

/// A fresh key's renewal of `who`'s certificate, as the agent and the CLI make it.
async fn renew(m: &TestMaster, who: &Credentials, from: IpAddr) -> Result<Credentials, Reply> {
    let key = NodeKey::generate().expect("key");
    let name = who.identity().name;
    let body = serde_json::json!({"csr_pem": key.csr_pem(&name).expect("csr")}).to_string();
    let reply = call(&who.client(from), m.addr, "POST", "/v1/renew", Some(body)).await;
    if reply.status != 200 {
        return Err(reply);
    }
    Ok(Credentials {
        response: reply.json(),
        key,
    })
}

/// The attacker holds a compute token and asks for a certificate under a name that
/// clients trust for the master: its own name, a `--tls-san` name, `localhost`, an
/// address. Every such join is refused and uses nothing up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_cannot_take_a_name_clients_trust_for_the_master() {
    let dir = common::temp_dir("reserved-names");
    let mut config = common::config(
        &dir,
        "127.0.0.1:0".parse().expect("addr"),
        HEARTBEAT,
        NOT_READY_AFTER,
    );
    config.tls_san = vec!["api.example.org".into(), "203.0.113.7".into()];
    let mut m = TestMaster::start(config, 2);
    let admin = join_admin(&m).await;
    let a = admin.client(src(1));
    let token = create_token(
        &m,
        &a,
        serde_json::json!({"role": "compute", "ttl": "1h", "uses": 1}),
    )
    .await
    .token;
    for (i, name) in [
        "master-1",
        "api.example.org",
        "localhost",
        "x.localhost",
        "203.0.113.7",
        "10.0.0.5",
        "127.1",
    ]
    .into_iter()
    .enumerate()
    {
        // One source address each: the join rate limit is not what is tested here.
        let reply = try_join(&m, src(40 + i as u8), &token, name).await.err();
        let reply = reply.unwrap_or_else(|| panic!("{name} was admitted"));
        assert_eq!(reply.status, 400, "{name}: {}", reply.body);
        assert_eq!(reply.error().code, ErrorCode::BadRequest, "{name}");
    }
    assert!(nodes(&m, &a).await.is_empty());
    // The one use is still there for an honest name.
    join(&m, src(60), &token, "n1").await;
    m.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A master that runs workloads leaves its own node a one-use token in a root-only file.
/// That token joins under the master's name and no other: a copy taken to another machine
/// cannot mint a node of any other name, and once spent it admits nothing. The token list
/// shows what it is for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_masters_own_node_joins_under_its_name_only_with_its_own_token() {
    let dir = common::temp_dir("own-node");
    let mut config = common::config(
        &dir,
        "127.0.0.1:0".parse().expect("addr"),
        HEARTBEAT,
        NOT_READY_AFTER,
    );
    let file = cloudos_master::own_node_token_file(&dir);
    config.own_node_token = Some(file.clone());
    let mut m = TestMaster::start(config, 2);
    let admin = join_admin(&m).await;
    let a = admin.client(src(1));
    let token = std::fs::read_to_string(&file).expect("token file");
    let token = token.trim();
    for (i, name) in ["n1", "master-2", "localhost"].into_iter().enumerate() {
        let reply = try_join(&m, src(40 + i as u8), token, name).await.err();
        let reply = reply.unwrap_or_else(|| panic!("{name} was admitted"));
        assert!(matches!(reply.status, 400 | 403), "{name}: {}", reply.body);
    }
    assert!(nodes(&m, &a).await.is_empty());
    join(&m, src(50), token, "master-1").await;
    let listed = nodes(&m, &a).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "master-1");
    let reply = try_join(&m, src(51), token, "master-1").await.err();
    assert_eq!(reply.expect("a spent token").status, 403);
    m.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A node's renewed certificate works; once it is used, the one it replaced is refused
/// (a copy of the old key, taken from a backup or a stolen disk, is worth nothing). A
/// join again and a removal revoke every certificate the node held, pending ones included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_and_removed_node_certificates_stop_working() {
    let f = fixture("serials").await;
    let (m, a) = (&f.m, &f.a);
    let token = compute_token(m, a).await;
    let old = join(m, src(2), &token, "n1").await;
    let beat = |c: &Credentials| {
        let client = c.client(src(2));
        async move {
            call(&client, m.addr, "POST", "/v1/heartbeat", Some(beat_body()))
                .await
                .status
        }
    };
    assert_eq!(beat(&old).await, 200);

    // Renewed but not used yet: both work (a lost answer does not lock the node out).
    let new = renew(m, &old, src(2)).await.expect("renew");
    assert_eq!(
        beat(&old).await,
        200,
        "the old one works until the new one is used"
    );
    assert_eq!(beat(&new).await, 200);
    // The new one was used: the old one is refused from now on.
    let reply = call(
        &old.client(src(2)),
        m.addr,
        "POST",
        "/v1/heartbeat",
        Some(beat_body()),
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(beat(&new).await, 200);

    // A pending certificate that is never used, then the node removed: both refused.
    let pending = renew(m, &new, src(2)).await.expect("renew");
    let reply = call(a, m.addr, "DELETE", "/v1/nodes/n1", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    for c in [&new, &pending] {
        assert_eq!(beat(c).await, 403);
    }

    // A join again under the name revokes what the earlier node held.
    let first = join(m, src(2), &token, "n2").await;
    let spare = renew(m, &first, src(2)).await.expect("renew");
    let reply = call(a, m.addr, "DELETE", "/v1/nodes/n2", None).await;
    assert_eq!(reply.status, 200);
    let second = join(m, src(2), &token, "n2").await;
    assert_eq!(beat(&second).await, 200);
    assert_eq!(beat(&first).await, 403);
    assert_eq!(beat(&spare).await, 403);
}

/// A lost laptop: its admin certificate is revoked by another admin and from then on
/// refused on every route, while the others keep working. Users are listed; an admin
/// certificate the master has no record of (issued before records were kept, or by a
/// restored backup) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_admin_is_locked_out_and_admins_are_listed() {
    let f = fixture("admins").await;
    let (m, a) = (&f.m, &f.a);
    let token = create_token(m, a, serde_json::json!({"role": "admin", "ttl": "1h"}))
        .await
        .token;
    let laptop = join(m, src(3), &token, "bob-laptop").await;
    let bob = laptop.client(src(3));
    assert_eq!(
        call(&bob, m.addr, "GET", "/v1/status", None).await.status,
        200
    );

    let reply = call(a, m.addr, "GET", "/v1/users", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let admins: Vec<cloudos_cluster::api::UserInfo> = reply.json();
    let names: Vec<&str> = admins.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob-laptop"]);

    // A renewal of bob's certificate, never used: revoked with the rest.
    let renewed = renew(m, &laptop, src(3)).await.expect("renew");
    let reply = call(a, m.addr, "DELETE", "/v1/users/bob-laptop", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    for client in [&bob, &renewed.client(src(3))] {
        for (method, path) in [
            ("GET", "/v1/status"),
            ("GET", "/v1/nodes"),
            ("POST", "/v1/renew"),
        ] {
            let reply = call(client, m.addr, method, path, Some("{}".into())).await;
            assert_eq!(reply.status, 403, "{method} {path}: {}", reply.body);
        }
    }
    assert_eq!(call(a, m.addr, "GET", "/v1/status", None).await.status, 200);
    let reply = call(a, m.addr, "GET", "/v1/users", None).await;
    assert_eq!(reply.json::<Vec<cloudos_cluster::api::UserInfo>>().len(), 1);
}

/// A rogue node reports the labels other people's work selects on. Selectors match only
/// what an admin set (on the token or with `node label`); the claim is shown apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_a_node_claims_are_not_the_labels_selectors_match() {
    let f = fixture("labels").await;
    let (m, a) = (&f.m, &f.a);
    let token = create_token(
        m,
        a,
        serde_json::json!({"role": "compute", "ttl": "1h", "labels": {"zone": "a"}}),
    )
    .await
    .token;
    let key = NodeKey::generate().expect("key");
    let mut request: serde_json::Value =
        serde_json::from_str(&join_body(&token, "rogue", "rogue", &key)).expect("json");
    request["labels"] = serde_json::json!({"zone": "secure", "gpu": "true"});
    let reply = call(
        &pinned(m.pin, src(2)),
        m.addr,
        "POST",
        "/v1/join",
        Some(request.to_string()),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let rogue = Credentials {
        response: reply.json(),
        key,
    };
    let node: NodeInfo = call(a, m.addr, "GET", "/v1/nodes/rogue", None).await.json();
    assert_eq!(node.labels, [("zone".to_string(), "a".to_string())].into());
    assert_eq!(
        node.reported_labels.get("zone").map(String::as_str),
        Some("secure")
    );

    // An admin approves what the node reports, and removes a label.
    let body = serde_json::json!({"approve_reported": true, "remove": ["gpu"]}).to_string();
    let reply = call(a, m.addr, "POST", "/v1/nodes/rogue/labels", Some(body)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let node: NodeInfo = reply.json();
    assert_eq!(
        node.labels,
        [("zone".to_string(), "secure".to_string())].into()
    );
    // The node cannot label itself.
    let body = serde_json::json!({"set": {"zone": "secure"}}).to_string();
    let reply = call(
        &rogue.client(src(2)),
        m.addr,
        "POST",
        "/v1/nodes/rogue/labels",
        Some(body),
    )
    .await;
    assert_error(&reply, 403, ErrorCode::Forbidden, "needs role admin");
}

/// Deny by default, walked: every operation of the OpenAPI document, called with no
/// certificate, a compute node's and an admin's. Only the public ones answer an anonymous
/// caller; node routes refuse admins and admin routes refuse nodes, before any handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_callers_its_access_does_not_admit() {
    let f = fixture("route-walk").await;
    let (m, a) = (&f.m, &f.a);
    let token = compute_token(m, a).await;
    let node = join(m, src(2), &token, "walker").await;
    let n = node.client(src(2));
    let anonymous = pinned(m.pin, src(5));
    // A user of each role, by certificate and by API key.
    let mut callers: Vec<(String, Role, Client)> = vec![("admin".into(), Role::Admin, a.clone())];
    for (name, role) in [("olga", Role::Operator), ("vic", Role::Viewer)] {
        let login = people::user_login(m, a, name, role).await;
        let user = join(m, src(6), &login, name).await;
        callers.push((format!("{role} certificate"), role, user.client(src(6))));
    }
    for role in Role::USERS {
        let key = people::api_key(m, a, &format!("walk-{role}"), role).await;
        callers.push((format!("{role} key"), role, anonymous.with_key(&key)));
    }
    // A node that also sends an admin's key is still a node: its certificate decides.
    let admin_key = people::api_key(m, a, "stolen", Role::Admin).await;
    let node_with_key = n.with_key(&admin_key);
    let doc: serde_json::Value = call(&anonymous, m.addr, "GET", "/v1/openapi.json", None)
        .await
        .json();
    let mut walked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        // Placeholders get harmless values; no operation may need more than its access.
        let concrete = path
            .replace("{name}", "nobody")
            .replace("{id}", "nothing")
            .replace("{run}", "norun")
            .replace("{file}", "nofile")
            .replace("{version}", "0.0.0")
            .replace("{arch}", "x86_64")
            .replace("{registry}", "noregistry");
        for (method, op) in item.as_object().expect("item") {
            let auth = op["x-cloudos-auth"].as_str().expect("x-cloudos-auth");
            let method = method.to_ascii_uppercase();
            // Changes that would lock the walk out (removing every user) are harmless here:
            // `nobody` does not exist.
            let status = |c: &Client| {
                let (method, concrete) = (method.clone(), concrete.clone());
                let c = c.clone();
                async move {
                    call(&c, m.addr, &method, &concrete, Some("{}".to_owned()))
                        .await
                        .status
                }
            };
            let none = status(&anonymous).await;
            let compute = status(&n).await;
            let what = |who: &str, got: u16| format!("{method} {path} ({auth}): {who} got {got}");
            if auth.starts_with("none") {
                assert!(none != 401 && none != 403, "{}", what("anonymous", none));
                walked += 1;
                continue;
            }
            assert_eq!(none, 401, "{}", what("anonymous", none));
            let needed = [
                ("admin", Some(Role::Admin)),
                ("operator", Some(Role::Operator)),
                ("viewer", Some(Role::Viewer)),
            ]
            .into_iter()
            .find(|(word, _)| auth.starts_with(word))
            .and_then(|(_, role)| role);
            if let Some(needed) = needed {
                assert_eq!(compute, 403, "{}", what("compute", compute));
                let stolen = status(&node_with_key).await;
                assert_eq!(stolen, 403, "{}", what("compute + admin key", stolen));
                let certificate_only = auth.contains("own certificate");
                for (who, role, client) in &callers {
                    let got = status(client).await;
                    if certificate_only && client.bearer.is_some() {
                        assert_eq!(got, 403, "{}", what(who, got));
                    } else if role.grants(needed) {
                        assert!(got != 401 && got != 403, "{}", what(who, got));
                    } else {
                        assert_eq!(got, 403, "{}", what(who, got));
                    }
                }
            } else if auth.starts_with("node") {
                // Some node routes are for one node only (its own runs): never a 401.
                assert!(compute != 401, "{}", what("compute", compute));
                for (who, _, client) in &callers {
                    let got = status(client).await;
                    assert_eq!(got, 403, "{}", what(who, got));
                }
            } else {
                // Any certificate (renewal): nodes and users, never a key.
                assert!(
                    compute != 401 && compute != 403,
                    "{}",
                    what("compute", compute)
                );
                for (who, _, client) in &callers {
                    let got = status(client).await;
                    match client.bearer {
                        Some(_) => assert_eq!(got, 403, "{}", what(who, got)),
                        None => assert!(got != 401 && got != 403, "{}", what(who, got)),
                    }
                }
            }
            walked += 1;
        }
    }
    assert!(walked >= 60, "walked only {walked} operations");
}

/// A node's heartbeats become its metric history, served by range to users only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_become_a_nodes_metric_history() {
    let dir = common::temp_dir("history");
    let listen = "127.0.0.1:0".parse().expect("addr");
    let mut config = common::config(&dir, listen, HEARTBEAT, NOT_READY_AFTER);
    config.history_interval = Duration::from_secs(1);
    let mut m = TestMaster::start(config, 2);
    let admin = join_admin(&m).await;
    let a = admin.client(src(1));
    let token = compute_token(&m, &a).await;
    let node = join(&m, src(2), &token, "n1").await;
    let mut ws = agent_connect(&m, &node.client(src(2))).await;
    send(&mut ws, &hello()).await;
    // Heartbeats for a few seconds: a point a second.
    for seq in 1..=16 {
        send(&mut ws, &beat(seq)).await;
        let _ = receive_any(&mut ws).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let reply = call(&a, m.addr, "GET", "/v1/nodes/n1/history?since=1h", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let history: cloudos_cluster::api::NodeHistory = reply.json();
    assert_eq!(history.resolution_secs, 60);
    assert!(history.points.len() >= 2, "{history:?}");
    assert!(
        history.points.iter().all(|p| (p.load1 - 0.5).abs() < 1e-9),
        "{history:?}"
    );
    assert!(history.points.windows(2).all(|w| w[0].at < w[1].at));
    // A month asks for the hourly means: none yet, the hour is not over.
    let reply = call(&a, m.addr, "GET", "/v1/nodes/n1/history?since=30d", None).await;
    let month: cloudos_cluster::api::NodeHistory = reply.json();
    assert_eq!(month.resolution_secs, 3600);
    // Errors say what is wrong; a node's certificate reads nothing.
    let reply = call(&a, m.addr, "GET", "/v1/nodes/n1/history?since=soon", None).await;
    assert_error(&reply, 400, ErrorCode::BadRequest, "since");
    let reply = call(&a, m.addr, "GET", "/v1/nodes/nobody/history", None).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    let reply = call(
        &node.client(src(2)),
        m.addr,
        "GET",
        "/v1/nodes/n1/history",
        None,
    )
    .await;
    assert_eq!(reply.status, 403);
    m.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `/metrics` read by Prometheus's own tools.
#[path = "master_api/prometheus.rs"]
mod prometheus;

/// Users, roles, API keys and the audit log, attacked.
#[path = "master_api/people.rs"]
mod people;

/// Attacks on the master's state: a full disk, damaged records, overflowing TTLs, log floods.
#[path = "master_api/store.rs"]
mod store;

/// A master joining the masters, attacked.
#[path = "master_api/masters.rs"]
mod masters;

/// Signed update bundles: kept for admins, offered to nodes, refused from attackers.
#[path = "master_api/releases.rs"]
mod releases;

/// The attacker holds a node's certificate and opens its agent connection, says hello and
/// then nothing, to hold the slot forever. The master closes it once it has been silent
/// for five times the NotReady delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_connection_is_closed() {
    let f = fixture("silent-agent").await;
    let (_node, mut ws) = connected_node(&f, "quiet").await;
    let started = std::time::Instant::now();
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(15), ws.next()).await {
            Err(_) => break false,
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => break true,
            Ok(Some(Ok(_))) => continue,
        }
    };
    assert!(closed, "the silent connection stayed open");
    let waited = started.elapsed();
    assert!(
        waited >= NOT_READY_AFTER * 4 && waited < Duration::from_secs(15),
        "closed after {waited:?}"
    );
}

/// Cordon, drain and reboot: attacks with a node's certificate, the reboot's path, the
/// cordon across a restart.
#[path = "master_api/nodeops.rs"]
mod nodeops;

/// Rolling upgrades and rollbacks: only admins; refusals before anything starts; a node
/// that falls back halts the rollout.
#[path = "master_api/rollout.rs"]
mod rollout;

/// Each node gets its own /24 of the cluster's range at its first hello, and the same one
/// on every hello after, also after the master restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_keeps_its_own_container_subnet() {
    let mut f = fixture("subnets").await;
    let one = join(&f.m, src(2), &compute_token(&f.m, &f.a).await, "node-1").await;
    let two = join(&f.m, src(2), &compute_token(&f.m, &f.a).await, "node-2").await;
    let first = welcomed_subnet(&f, &one).await.expect("node-1's subnet");
    let second = welcomed_subnet(&f, &two).await.expect("node-2's subnet");
    assert_eq!(first, "10.250.0.0/24");
    assert_eq!(second, "10.250.1.0/24");
    assert_eq!(
        welcomed_subnet(&f, &one).await.as_deref(),
        Some(first.as_str())
    );
    f.m.stop();
    f.m = start_master(&f.dir);
    assert_eq!(
        welcomed_subnet(&f, &two).await.as_deref(),
        Some(second.as_str())
    );
    assert_eq!(
        welcomed_subnet(&f, &one).await.as_deref(),
        Some(first.as_str())
    );
}

/// The attacker holds a compute node's certificate and names a third party's address as
/// its mesh endpoint, so that every peer would send that machine WireGuard handshakes and
/// keepalives. The master ignores an endpoint that is not where the node's connection
/// comes from: its peers are told to wait for it (it is behind NAT as far as anyone can
/// tell), never to send to the third party. A node that names its own address is dialled
/// there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_point_the_mesh_at_a_third_party() {
    let f = fixture("mesh-reflection").await;
    let victim = "198.51.100.7:51820";
    let mesh_hello = |key: u8, address: IpAddr, endpoint: Option<&str>| {
        AgentMessage::Hello(AgentHello {
            address: address.to_string(),
            mesh: Some(cloudos_cluster::mesh::MeshHello {
                public_key: base64_key(key),
                port: 51820,
                endpoint: endpoint.map(|e| e.parse().expect("endpoint")),
            }),
            ..match hello() {
                AgentMessage::Hello(h) => h,
                _ => unreachable!(),
            }
        })
    };
    let attacker = join(&f.m, src(2), &compute_token(&f.m, &f.a).await, "attacker").await;
    let honest = join(&f.m, src(3), &compute_token(&f.m, &f.a).await, "honest").await;
    let mut a = agent_connect(&f.m, &attacker.client(src(2))).await;
    send(&mut a, &mesh_hello(1, src(9), Some(victim))).await;
    // The honest node says its own address, where its connection comes from, and names
    // it as its endpoint too: that is allowed.
    let own = SocketAddr::new(src(3), 51820).to_string();
    let mut h = agent_connect(&f.m, &honest.client(src(3))).await;
    send(&mut h, &mesh_hello(2, src(3), Some(&own))).await;

    // What each is told about the other, from the mesh plans they receive.
    let attacker_seen_by_honest = peer_in(&mut h, "attacker").await;
    assert_eq!(
        attacker_seen_by_honest.endpoint, None,
        "the honest node was told to send to {:?}",
        attacker_seen_by_honest.endpoint
    );
    let honest_seen_by_attacker = peer_in(&mut a, "honest").await;
    assert_eq!(
        honest_seen_by_attacker.endpoint.as_deref(),
        Some(own.as_str())
    );
}

/// The peer `name` in the first mesh plan `ws` receives that has it.
async fn peer_in(ws: &mut Ws, name: &str) -> cloudos_cluster::mesh::MeshPeer {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Some(MasterMessage::Mesh { peers }) = receive_any(ws).await {
            if let Some(peer) = peers.into_iter().find(|p| p.node == name) {
                return peer;
            }
        }
    }
    panic!("no mesh plan with {name}");
}

/// A WireGuard public key as nodes send it (32 bytes, base64): `[byte; 32]`, 1 or 2.
fn base64_key(byte: u8) -> String {
    match byte {
        1 => "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        _ => "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=",
    }
    .to_owned()
}
