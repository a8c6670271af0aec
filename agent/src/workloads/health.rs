//! A running container's health check (`cloudos_cluster::health`): the node probes the
//! container's own address from outside, or runs the check's command inside it (through
//! the runtime, as the container's own user), reports each change of its health to the master
//! (which takes a replica out of its service's rotation while it is not healthy), and on
//! *unhealthy* has the container stopped, after a moment for that rotation change to
//! reach the nodes. The run then ends as an exit does: a replica starts again, a task
//! fails.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudos_cluster::health::{Health, HealthCheck, Probe, Verdict};
use cloudos_cluster::workload::{NetworkMode, RunState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::Shared;

/// Between the report of *unhealthy* and the stop: the master sends the new service table
/// to every node before anything else, so a second covers it with room to spare.
const UNHEALTHY_GRACE: Duration = Duration::from_secs(1);
/// The first probe comes this soon after the start (or after the interval, if shorter):
/// a check should not make a healthy replica wait a whole interval to serve.
const FIRST_PROBE: Duration = Duration::from_secs(1);
/// Enough of an HTTP answer to read its status line.
const STATUS_LINE_MAX: usize = 256;

/// One container's check, as [`watch`] runs it.
pub(super) struct Watch {
    pub run: String,
    pub restarts: u32,
    pub address: Option<Ipv4Addr>,
    pub network: NetworkMode,
    pub check: HealthCheck,
}

/// Probes until `done` is set (the container ended); sets `kill` once the check says
/// *unhealthy* (and returns).
pub(super) async fn watch(
    shared: Arc<Shared>,
    w: Watch,
    kill: watch::Sender<bool>,
    mut done: watch::Receiver<bool>,
) {
    let target = target(w.network, w.address);
    if target.is_none() && !matches!(w.check.probe, Probe::Cmd { .. }) {
        return;
    }
    let started = Instant::now();
    let interval = Duration::from_secs(u64::from(w.check.interval_secs));
    let timeout = Duration::from_secs(u64::from(w.check.timeout_secs));
    let mut verdict = Verdict::new(&w.check);
    let mut next = FIRST_PROBE.min(interval);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = done.wait_for(|d| *d) => return,
        }
        next = interval;
        let result = match (&w.check.probe, target) {
            (Probe::Cmd { command }, _) => run_command(&shared, &w.run, command, timeout).await,
            (probe_kind, Some(ip)) => probe(probe_kind, ip, timeout).await,
            (_, None) => return,
        };
        let since_start = started.elapsed().as_secs();
        let Some(health) = verdict.probed(result.is_ok(), since_start) else {
            continue;
        };
        match (&result, health) {
            (Err(why), Health::Unhealthy) => log::warn!(
                "run {}: unhealthy after {} failed probes ({}: {why}); stopping it",
                w.run,
                w.check.retries,
                w.check.probe
            ),
            _ => log::info!("run {}: {health}", w.run),
        }
        let health_reason = match (&result, health) {
            (Err(why), Health::Unhealthy) => Some(why.clone()),
            _ => None,
        };
        let state = RunState::Running {
            health_reason,
            restarts: w.restarts,
            address: w.address,
            health: Some(health),
        };
        shared.report(&w.run, state).await;
        if health == Health::Unhealthy {
            tokio::select! {
                _ = tokio::time::sleep(UNHEALTHY_GRACE) => {}
                _ = done.wait_for(|d| *d) => return,
            }
            let _ = kill.send(true);
            return;
        }
    }
}

/// Where the probes go: the container's bridge address, or loopback for one that shares
/// the node's network. A container without either is never probed over the network (the
/// spec's check refuses `--network none` for those; a command needs no address).
fn target(network: NetworkMode, address: Option<Ipv4Addr>) -> Option<IpAddr> {
    match (network, address) {
        (NetworkMode::Bridge, Some(address)) => Some(IpAddr::V4(address)),
        (NetworkMode::Host, _) => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        _ => None,
    }
}

/// `sh -c command` inside the run's container within `timeout`; why it failed otherwise
/// (its exit code and the start of its output).
async fn run_command(
    shared: &Arc<Shared>,
    run: &str,
    command: &str,
    timeout: Duration,
) -> Result<(), String> {
    let (id, argv) = (
        run.to_owned(),
        vec!["/bin/sh".to_owned(), "-c".to_owned(), command.to_owned()],
    );
    let report = super::run::blocking(shared, move |rt| rt.exec(&id, &argv, timeout))
        .await
        .map_err(|e| e.to_string())?;
    if report.success() {
        return Ok(());
    }
    let said = report.output.trim();
    let said: String = said.chars().take(200).collect();
    let how = match (report.timed_out, report.exit_code) {
        (true, _) => format!("still running after {}s", timeout.as_secs()),
        (false, Some(code)) => format!("exit code {code}"),
        (false, None) => format!("killed by signal {}", report.signal.unwrap_or_default()),
    };
    Err(if said.is_empty() {
        how
    } else {
        format!("{how}: {said}")
    })
}

/// One probe within `timeout`; why it failed otherwise.
pub(super) async fn probe(probe: &Probe, ip: IpAddr, timeout: Duration) -> Result<(), String> {
    let attempt = async {
        match probe {
            Probe::Tcp { port } => connect(ip, *port).await.map(drop),
            Probe::Http { port, path } => http_get(ip, *port, path).await,
            Probe::Cmd { .. } => Err("a command is run in the container, not probed".into()),
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {}s", timeout.as_secs())),
    }
}

async fn connect(ip: IpAddr, port: u16) -> Result<TcpStream, String> {
    TcpStream::connect(SocketAddr::new(ip, port))
        .await
        .map_err(|e| format!("connect to port {port}: {e}"))
}

/// `GET path`: passes on a 2xx or 3xx status. Only the status line is read.
async fn http_get(ip: IpAddr, port: u16, path: &str) -> Result<(), String> {
    let mut stream = connect(ip, port).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: cloudos-health\r\n\
         Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send the request: {e}"))?;
    let mut answer = Vec::with_capacity(STATUS_LINE_MAX);
    let mut buf = [0u8; STATUS_LINE_MAX];
    while !answer.contains(&b'\n') && answer.len() < STATUS_LINE_MAX {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read the answer: {e}"))?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&answer);
    let line = line.lines().next().unwrap_or_default();
    match status_of(line) {
        Some(code) if (200..400).contains(&code) => Ok(()),
        Some(code) => Err(format!("GET {path} answered {code}")),
        None => Err(format!("GET {path} got no HTTP answer")),
    }
}

/// The status code of `HTTP/1.1 200 OK`.
fn status_of(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server on loopback that answers every connection with `answer` (or nothing).
    async fn server(answer: Option<&'static str>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = conn.read(&mut buf).await;
                match answer {
                    Some(text) => {
                        let _ = conn.write_all(text.as_bytes()).await;
                    }
                    // Holds the connection open without a word.
                    None => tokio::time::sleep(Duration::from_secs(10)).await,
                }
            }
        });
        port
    }

    #[tokio::test]
    async fn probes_pass_on_2xx_and_3xx_and_fail_with_a_reason() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let second = Duration::from_secs(1);
        let http = |port, path: &str| Probe::Http {
            port,
            path: path.into(),
        };
        let ok = server(Some("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")).await;
        assert_eq!(probe(&http(ok, "/healthz"), lo, second).await, Ok(()));
        let moved = server(Some("HTTP/1.0 302 Found\r\n\r\n")).await;
        assert_eq!(probe(&http(moved, "/"), lo, second).await, Ok(()));
        let sick = server(Some("HTTP/1.1 503 Service Unavailable\r\n\r\n")).await;
        let err = probe(&http(sick, "/healthz"), lo, second)
            .await
            .unwrap_err();
        assert_eq!(err, "GET /healthz answered 503");
        let garbage = server(Some("SSH-2.0-OpenSSH\r\n")).await;
        let err = probe(&http(garbage, "/"), lo, second).await.unwrap_err();
        assert!(err.contains("no HTTP answer"), "{err}");
        let silent = server(None).await;
        let err = probe(&http(silent, "/"), lo, second).await.unwrap_err();
        assert!(err.contains("within 1s"), "{err}");
        assert_eq!(
            probe(&Probe::Tcp { port: silent }, lo, second).await,
            Ok(())
        );
        // Nothing listens there (the listener is dropped at once).
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let err = probe(&Probe::Tcp { port }, lo, second).await.unwrap_err();
        assert!(err.contains("refused"), "{err}");
    }

    #[test]
    fn the_target_is_the_container_s_address_or_loopback() {
        let address: Ipv4Addr = "10.250.0.5".parse().unwrap();
        assert_eq!(
            target(NetworkMode::Bridge, Some(address)),
            Some(IpAddr::V4(address))
        );
        assert_eq!(
            target(NetworkMode::Host, None),
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        assert_eq!(target(NetworkMode::None, None), None);
        assert_eq!(target(NetworkMode::Bridge, None), None);
    }
}
