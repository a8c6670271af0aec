//! A bounded fuzz run of the master's JSON inputs: random and mutated bodies POSTed to
//! every JSON route of a real master (real TLS on loopback, an admin's and a node's
//! certificates, anonymous for the join routes). The master must never answer 5xx to a
//! bad body, never crash, and still serve its admin afterwards.
//!
//! `cargo test` runs a few hundred cases; `scripts/fuzz.sh` runs many more:
//! `CLOUDOS_FUZZ_CASES=3000 cargo test -p nodeos --test api_fuzz -- --nocapture`.

use cloudos_master::testing as common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudos_cluster::api::TokenCreateRequest;
use cloudos_cluster::client::{self, ApiClient, JoinedIdentity};
use cloudos_cluster::{pki, tls, Role, Token};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use tokio::net::TcpSocket;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

use common::TestMaster;

/// Cases when `CLOUDOS_FUZZ_CASES` is not set: enough to exercise every route.
const DEFAULT_CASES: u32 = 300;

/// Any JSON value, a few levels deep, with the strings attackers like.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,40}".prop_map(Value::String),
        prop_oneof![
            Just("../../etc/passwd"),
            Just("\u{1b}[2J\u{202e}"),
            Just("18446744073709551615s"),
            Just("99999999w"),
            Just("cloudos1_x_y_sha256:00"),
            Just("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"),
            Just("localhost"),
            Just("admin"),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
        (1usize..70_000).prop_map(|n| Value::String("a".repeat(n))),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid body for each route (`[METHOD ]PATH`), to mutate one field at a time.
fn templates() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/v1/tokens",
            json!({"role": "compute", "ttl": "1h", "uses": 1, "description": "d"}),
        ),
        (
            "/v1/tasks",
            json!({"spec": {"image": "busybox", "command": ["true"],
                    "health": {"probe": {"http": {"port": 80, "path": "/healthz"}}, "interval_secs": 5}},
                   "retries": 0, "request_id": "run-0123456789", "timeout_secs": 60}),
        ),
        (
            "/v1/services",
            json!({"name": "web", "replicas": 1, "spec": {"image": "busybox"}, "request_id": "deploy-0123456789"}),
        ),
        ("/v1/services/web/scale", json!({"replicas": 2})),
        (
            "PUT /v1/services/web",
            json!({"spec": {"image": "busybox:2"}, "replicas": 2,
                   "policy": {"max_surge": 1, "max_unavailable": 0, "monitor_secs": 5},
                   "request_id": "deploy-0123456789"}),
        ),
        ("/v1/services/web/rollback", json!({"to": 1})),
        (
            "/v1/nodes/n1/labels",
            json!({"set": {"zone": "a"}, "remove": [], "approve_reported": false}),
        ),
        ("/v1/renew", json!({"csr_pem": "x"})),
        (
            "/v1/join",
            json!({"token_id": "abc", "token_secret": "s", "csr_pem": "x", "node_name": "n9", "arch": "x86_64", "labels": {}}),
        ),
        (
            "/v1/join/check",
            json!({"token_id": "abc", "token_secret": "s"}),
        ),
        (
            "/v1/heartbeat",
            json!({"seq": 1, "sent_at": "2026-01-01T00:00:00Z", "telemetry": {}, "runs": []}),
        ),
    ]
}

/// One body: a template with one field replaced or removed, any JSON, or raw bytes.
fn body() -> impl Strategy<Value = (usize, Vec<u8>)> {
    let count = templates().len();
    (
        0..count,
        0u8..4,
        any_json(),
        prop::collection::vec(any::<u8>(), 0..200),
        any::<prop::sample::Index>(),
    )
        .prop_map(move |(route, how, value, bytes, pick)| {
            let mut template = templates()[route].1.clone();
            let body = match how {
                0 | 1 => {
                    if let Some(object) = template.as_object_mut() {
                        let keys: Vec<String> = object.keys().cloned().collect();
                        let key = &keys[pick.index(keys.len())];
                        if how == 0 {
                            object.insert(key.clone(), value);
                        } else {
                            object.remove(key);
                        }
                    }
                    serde_json::to_vec(&template).unwrap_or_default()
                }
                2 => serde_json::to_vec(&value).unwrap_or_default(),
                _ => bytes,
            };
            (route, body)
        })
}

async fn post(
    config: &Arc<ClientConfig>,
    from: IpAddr,
    addr: SocketAddr,
    path: &str,
    body: Vec<u8>,
) -> u16 {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind source");
    let tcp = socket.connect(addr).await.expect("connect");
    let tls = TlsConnector::from(Arc::clone(config))
        .connect(ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()), tcp)
        .await
        .expect("TLS handshake");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http handshake");
    tokio::spawn(conn);
    // A template's path may name its method first (`PUT /v1/…`); POST otherwise.
    let (method, path) = path.split_once(' ').unwrap_or(("POST", path));
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let response = sender.send_request(request).await.expect("an answer");
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

fn mtls(id: &JoinedIdentity) -> Arc<ClientConfig> {
    let ca = pki::cert_from_pem(&id.ca_pem, "ca").expect("ca");
    let chain = pki::certs_from_pem(&id.cert_pem, "cert").expect("cert");
    let key = pki::key_from_pem(&id.key_pem, "key").expect("key");
    Arc::new(tls::client_config_mtls(&ca, chain, key).expect("mtls"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_json_bodies_never_make_the_master_fail_or_fall() {
    let cases: u32 = std::env::var("CLOUDOS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let dir = common::temp_dir("api-fuzz");
    let listen = "127.0.0.1:0".parse().expect("addr");
    let config = common::config(&dir, listen, Duration::from_secs(2), Duration::from_secs(6));
    let mut m = TestMaster::start(config, 2);
    let master = m.addr.to_string();
    let admin_token = m.admin_token.clone().expect("bootstrap token");
    let admin = client::join(
        &master,
        &admin_token,
        "fuzzer",
        "x86_64",
        &BTreeMap::new(),
        Some(Role::Admin),
    )
    .await
    .expect("admin joins");
    let api = ApiClient::from_identity(&admin).expect("admin client");
    let created = api
        .create_token(&TokenCreateRequest {
            role: Role::Compute,
            ttl: Some("1h".into()),
            uses: None,
            description: "fuzz".into(),
            labels: Default::default(),
        })
        .await
        .expect("token");
    let token: Token = created.token.parse().expect("token parses");
    let node = client::join(&master, &token, "n1", "x86_64", &BTreeMap::new(), None)
        .await
        .expect("node joins");
    let (admin_tls, node_tls) = (mtls(&admin), mtls(&node));
    let anonymous = Arc::new(tls::client_config_pinned(m.pin).expect("pinned"));

    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    let strategy = body();
    let mut statuses: BTreeMap<u16, u32> = BTreeMap::new();
    let started = Instant::now();
    for case in 0..cases {
        let (route, bytes) = strategy.new_tree(&mut runner).expect("a case").current();
        let path = templates()[route].0;
        // Join routes are anonymous and rate limited per address: spread them out.
        let (config, from) = match path {
            "/v1/join" | "/v1/join/check" => (
                &anonymous,
                IpAddr::V4(Ipv4Addr::new(
                    127,
                    1,
                    (case / 250) as u8,
                    (case % 250 + 1) as u8,
                )),
            ),
            "/v1/heartbeat" => (&node_tls, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
            _ => (&admin_tls, IpAddr::V4(Ipv4Addr::LOCALHOST)),
        };
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
        let status = post(config, from, m.addr, path, bytes).await;
        assert!(status < 500, "POST {path} answered {status} to {shown}");
        *statuses.entry(status).or_default() += 1;
    }
    let elapsed = started.elapsed();
    // Still the master it was.
    let status = api
        .status()
        .await
        .expect("the master still serves its admin");
    assert_eq!(status.cluster_name, "lab");
    println!(
        "api fuzz: {cases} bodies in {:.1} s, 0 server errors; statuses {statuses:?}",
        elapsed.as_secs_f64()
    );
    m.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
