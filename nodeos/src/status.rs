//! `nodeos status`: what PID 1 knows about the node, served as JSON on a
//! Unix socket under /run and printed as a table by the client.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::clock::state::ClockState;
use crate::hardware::Inventory;
use crate::net::state::NetState;
use crate::supervisor::ServiceStatus;

pub const CONTROL_SOCKET: &str = "/run/cloudos/control.sock";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub kernel: String,
    pub arch: String,
    pub hostname: String,
    pub role: String,
    pub data: String,
    pub uptime_secs: f64,
    pub ready: bool,
    pub rss_kb: Option<u64>,
    pub services: Vec<ServiceStatus>,
    pub network: Option<NetState>,
    /// Which driver runs each NIC and disk controller.
    #[serde(default)]
    pub hardware: Inventory,
    /// What the clock service knows (none before it first polled).
    #[serde(default)]
    pub clock: Option<ClockState>,
    pub warnings: Vec<String>,
    /// The hardware watchdog PID 1 keeps (none on a host).
    #[serde(default)]
    pub watchdog: Option<crate::watchdog::WatchdogStatus>,
}

impl StatusReport {
    pub fn gather(
        hostname: &str,
        role: &str,
        data: &str,
        ready: bool,
        services: Vec<ServiceStatus>,
        mut warnings: Vec<String>,
    ) -> StatusReport {
        let clock = ClockState::read();
        warnings.extend(clock.as_ref().and_then(ClockState::warning));
        StatusReport {
            version: cloudos_release::version().to_string(),
            kernel: crate::kmod::kernel_release(),
            arch: std::env::consts::ARCH.into(),
            hostname: hostname.into(),
            role: role.into(),
            data: data.into(),
            uptime_secs: crate::logging::uptime(),
            ready,
            rss_kb: own_rss_kb(),
            services,
            network: NetState::read(),
            hardware: Inventory::read(),
            clock,
            warnings,
            watchdog: crate::watchdog::status(),
        }
    }

    /// The table `nodeos status` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "CloudOS nodeos {} ({}) on Linux {}\nhost {}  role {}  up {:.0}s  {}\nstate on {}\n",
            self.version,
            self.arch,
            self.kernel,
            self.hostname,
            self.role,
            self.uptime_secs,
            if self.ready { "READY" } else { "NOT READY" },
            self.data
        ));
        if let Some(watchdog) = &self.watchdog {
            out.push_str(&format!("{}\n", watchdog.line()));
        }
        out.push_str("\nSERVICE    STATE     PID     RESTARTS  LAST EXIT\n");
        for s in &self.services {
            out.push_str(&format!(
                "{:<10} {:<9} {:<7} {:<9} {}\n",
                s.name,
                format!("{:?}", s.state).to_lowercase(),
                s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                s.restarts,
                s.last_exit.as_deref().unwrap_or("-")
            ));
        }
        if let Some(net) = &self.network {
            out.push_str("\nLINK       CARRIER  METHOD  ADDRESS             DRIVER\n");
            for l in &net.links {
                out.push_str(&format!(
                    "{:<10} {:<8} {:<7} {:<19} {}\n",
                    l.name,
                    if l.carrier { "up" } else { "down" },
                    l.method,
                    l.address.as_deref().unwrap_or("-"),
                    self.hardware.nic_driver(&l.name).unwrap_or("-")
                ));
                for a in &l.ipv6 {
                    out.push_str(&format!("{:<19} {:<7} {}\n", "", a.method, a.address));
                }
            }
            let gw = net
                .default_gateway
                .map(|g| g.to_string())
                .unwrap_or_else(|| "none".into());
            let dns: Vec<String> = net
                .dns
                .iter()
                .map(|d| d.to_string())
                .chain(net.dns6.iter().map(|d| d.to_string()))
                .collect();
            out.push_str(&format!(
                "gateway {gw}  dns {}\n",
                if dns.is_empty() {
                    "none".into()
                } else {
                    dns.join(",")
                }
            ));
        }
        if let Some(gw6) = self.network.as_ref().and_then(|n| n.ipv6_gateway) {
            out.push_str(&format!("ipv6 gateway {gw6}\n"));
        }
        if !self.hardware.disks.is_empty() {
            out.push_str("\nDISK       SIZE     CONTROLLER    LABELS\n");
            for d in &self.hardware.disks {
                out.push_str(&format!(
                    "{:<10} {:<8} {:<13} {}\n",
                    d.name,
                    cloudos_cluster::units::format_bytes(d.size_bytes),
                    d.controller.as_deref().unwrap_or("-"),
                    if d.labels.is_empty() {
                        "-".to_string()
                    } else {
                        d.labels.join(",")
                    }
                ));
            }
        }
        if let Some(clock) = &self.clock {
            out.push_str(&format!("{}\n", clock.render()));
        }
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        out
    }
}

/// Resident memory of this process, from /proc/self/status.
pub fn own_rss_kb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

type Provider = Arc<dyn Fn() -> StatusReport + Send + Sync>;

/// Serves one request per connection: `status` or `logs N`.
pub async fn serve(path: &'static str, provider: Provider) {
    if let Some(dir) = std::path::Path::new(path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::remove_file(path);
    let listener = match tokio::net::UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) => {
            log::error!("cannot listen on {path}: {e}; `nodeos status` will not work");
            return;
        }
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let provider = provider.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read);
            if tokio::time::timeout(
                std::time::Duration::from_secs(5),
                reader.read_line(&mut line),
            )
            .await
            .is_err()
            {
                return;
            }
            // Gathering reads sysfs and /proc and may wait briefly for disk
            // labels: off the runtime's worker threads, which PID 1 needs.
            let request = line.trim().to_owned();
            let Ok(answer) = tokio::task::spawn_blocking(move || answer(&request, &provider)).await
            else {
                return;
            };
            let _ = write.write_all(answer.as_bytes()).await;
        });
    }
}

fn answer(request: &str, provider: &Provider) -> String {
    let mut words = request.split_whitespace();
    match (words.next(), words.next()) {
        (Some("status"), None) => serde_json::to_string(&provider()).unwrap_or_default(),
        (Some("logs"), n) => {
            let n = n.and_then(|n| n.parse().ok()).unwrap_or(200);
            serde_json::to_string(&crate::logging::recent(n)).unwrap_or_default()
        }
        _ => serde_json::json!({ "error": format!("unknown request {request:?}; use status or logs N") }).to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StatusQueryError {
    #[error("cannot reach nodeos at {path}: {source} (is nodeos running on this machine?)")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("talking to nodeos: {0}")]
    Io(#[from] std::io::Error),
    #[error("nodeos sent an answer we cannot read: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Sends one request and returns the answer text.
pub fn request(path: &str, request: &str) -> Result<String, StatusQueryError> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|source| {
        StatusQueryError::Connect {
            path: path.into(),
            source,
        }
    })?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

pub fn fetch_status(path: &str) -> Result<StatusReport, StatusQueryError> {
    Ok(serde_json::from_str(&request(path, "status")?)?)
}

pub fn fetch_logs(path: &str, lines: usize) -> Result<Vec<String>, StatusQueryError> {
    Ok(serde_json::from_str(&request(
        path,
        &format!("logs {lines}"),
    )?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::ServiceState;

    #[tokio::test(flavor = "current_thread")]
    async fn client_and_server_agree() {
        let path: &'static str = Box::leak(
            std::env::temp_dir()
                .join(format!("nodeos-status-{}.sock", std::process::id()))
                .to_string_lossy()
                .into_owned()
                .into_boxed_str(),
        );
        let provider: Provider = Arc::new(|| {
            StatusReport::gather(
                "node-a",
                "compute",
                "memory",
                true,
                vec![ServiceStatus {
                    name: "net".into(),
                    state: ServiceState::Ready,
                    pid: Some(42),
                    restarts: 2,
                    last_exit: Some("exited with status 101".into()),
                }],
                vec!["kernel command line: ignoring cloudos.x: unknown key".into()],
            )
        });
        tokio::spawn(serve(path, provider));
        for _ in 0..100 {
            if std::path::Path::new(path).exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let report = tokio::task::spawn_blocking(move || fetch_status(path))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(report.hostname, "node-a");
        let table = report.render();
        assert!(table.contains("READY"), "{table}");
        assert!(
            table.contains("net        ready     42      2         exited with status 101"),
            "{table}"
        );
        assert!(
            table.contains("warning: kernel command line: ignoring cloudos.x"),
            "{table}"
        );
        let bad = tokio::task::spawn_blocking(move || request(path, "reboot"))
            .await
            .unwrap()
            .unwrap();
        assert!(bad.contains("unknown request"));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn an_absent_node_is_a_clear_error() {
        let err = fetch_status("/nonexistent/control.sock").unwrap_err();
        assert!(err
            .to_string()
            .contains("cannot reach nodeos at /nonexistent/control.sock"));
    }
}
