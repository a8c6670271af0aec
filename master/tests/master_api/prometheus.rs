//! The master's `/metrics` read by Prometheus's own tools: `promtool check metrics` on the
//! text format, and a real Prometheus server scraping over TLS with an API key, which
//! asks for OpenMetrics and must see every counter as a counter.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};

use super::*;

/// A process ended when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port on loopback (bound and let go: Prometheus binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `GET path` from Prometheus's plain-HTTP API on loopback, parsed as JSON.
fn prometheus_api(port: u16, path: &str) -> Option<serde_json::Value> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (_, body) = answer.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_every_counter_of_the_master_as_a_counter() {
    let f = fixture("prometheus").await;
    let (m, a) = (&f.m, &f.a);
    // Some traffic, so the counters have samples.
    let token = compute_token(m, a).await;
    let _ = join(m, src(2), &token, "n1").await;
    let _ = nodes(m, a).await;

    // promtool on the text format (what a scraper that does not ask for OpenMetrics gets).
    let reply = call(a, m.addr, "GET", "/metrics", None).await;
    assert_eq!(reply.status, 200);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/deps.sh installs it)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(reply.body.as_bytes())
        .expect("feed promtool");
    let checked = promtool.wait_with_output().expect("promtool ends");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr),
        reply.body
    );

    // A Prometheus server scraping with a viewer's API key, checking the master's
    // certificate against the cluster CA.
    let key = people::api_key(m, a, "prometheus", Role::Viewer).await;
    let ca = f.dir.join("prometheus-ca.pem");
    std::fs::write(&ca, &f.admin.response.ca_pem).expect("write the CA");
    let port = free_port();
    let config = f.dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: cloudos\n    scheme: https\n\
             \x20   authorization:\n      type: Bearer\n      credentials: {key}\n\
             \x20   tls_config:\n      ca_file: {}\n      server_name: master-1\n\
             \x20   static_configs:\n      - targets: ['{}']\n",
            ca.display(),
            m.addr
        ),
    )
    .expect("write the config");
    let _prometheus = Running(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                f.dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's prometheus package; scripts/deps.sh installs it)"),
    );

    // The target is up, then its metadata types each cloudos family.
    let mut last = serde_json::Value::Null;
    let mut types = std::collections::BTreeMap::new();
    // Up to a minute: Prometheus starts its TSDB and scrapes every second.
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(targets) = prometheus_api(port, "/api/v1/targets") else {
            continue;
        };
        last = targets.clone();
        let up = targets["data"]["activeTargets"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["health"] == "up"));
        if !up {
            continue;
        }
        let meta = prometheus_api(
            port,
            "/api/v1/targets/metadata?match_target=%7Bjob%3D%22cloudos%22%7D",
        )
        .unwrap_or_default();
        types = meta["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                Some((
                    e["metric"].as_str()?.to_owned(),
                    e["type"].as_str()?.to_owned(),
                ))
            })
            .collect();
        if types.contains_key("cloudos_api_requests") {
            break;
        }
    }
    assert_eq!(
        types.get("cloudos_api_requests").map(String::as_str),
        Some("counter"),
        "Prometheus's metadata: {types:?}; targets: {last}"
    );
    assert_eq!(
        types.get("cloudos_join_attempts").map(String::as_str),
        Some("counter"),
        "{types:?}"
    );
    let untyped: Vec<_> = types
        .iter()
        .filter(|(name, kind)| {
            name.starts_with("cloudos_") && (*kind == "unknown" || *kind == "untyped")
        })
        .collect();
    assert!(
        untyped.is_empty(),
        "families Prometheus could not type: {untyped:?}"
    );
    // And the samples are there, by their counter name.
    let query =
        prometheus_api(port, "/api/v1/query?query=cloudos_api_requests_total").unwrap_or_default();
    assert!(
        query["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "{query}"
    );
}
