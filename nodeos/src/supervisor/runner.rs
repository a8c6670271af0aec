//! Runs services: one task per service that starts its process once its
//! dependencies are ready, relays its log lines, notes when it reports ready
//! (a `READY=1` line on its stdout) and restarts it with backoff when it exits.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::reaper::{describe, Reaper};
use super::spec::{start_order, ServiceSpec, SpecError};
use super::{Backoff, HEALTHY_AFTER};

/// The line a service prints on its stdout once it is doing its job.
pub const READY_LINE: &str = "READY=1";

/// How long a service gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    /// Waiting for the services it depends on.
    Waiting,
    /// Started, not yet ready.
    Starting,
    Ready,
    /// Exited; restarts after a delay.
    Backoff,
    Stopping,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub state: ServiceState,
    pub pid: Option<i32>,
    pub restarts: u32,
    pub last_exit: Option<String>,
}

/// Builds the command for a service's `attempt`-th start (1 for the first).
pub type Launcher = Arc<dyn Fn(&ServiceSpec, u32) -> Command + Send + Sync>;

type Table = Arc<Mutex<BTreeMap<String, ServiceStatus>>>;

struct Running {
    name: &'static str,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

pub struct Supervisor {
    reaper: Reaper,
    launcher: Launcher,
    backoff: Backoff,
    table: Table,
    ready: BTreeMap<&'static str, watch::Receiver<bool>>,
    running: Vec<Running>,
}

impl Supervisor {
    pub fn new(reaper: Reaper, launcher: Launcher, backoff: Backoff) -> Supervisor {
        Supervisor {
            reaper,
            launcher,
            backoff,
            table: Table::default(),
            ready: BTreeMap::new(),
            running: Vec::new(),
        }
    }

    /// Starts supervising `specs`. Must run inside a current-thread runtime
    /// together with the reaper's task (see `reaper`).
    pub fn start(&mut self, specs: &[ServiceSpec]) -> Result<(), SpecError> {
        let order = start_order(specs)?;
        let mut ready_senders = BTreeMap::new();
        for spec in &order {
            let (tx, rx) = watch::channel(false);
            ready_senders.insert(spec.name, tx);
            self.ready.insert(spec.name, rx);
            self.set(spec.name, |s| s.state = ServiceState::Waiting);
        }
        for spec in order {
            let deps = spec
                .depends_on
                .iter()
                .filter_map(|d| self.ready.get(d).cloned())
                .collect();
            let (stop_tx, stop_rx) = watch::channel(false);
            let Some(ready_tx) = ready_senders.remove(spec.name) else {
                continue;
            };
            let worker = ServiceWorker {
                spec: spec.clone(),
                reaper: self.reaper.clone(),
                launcher: self.launcher.clone(),
                backoff: self.backoff,
                table: self.table.clone(),
                ready: ready_tx,
                stop: stop_rx,
            };
            let task = tokio::spawn(worker.run(deps));
            self.running.push(Running {
                name: spec.name,
                stop: stop_tx,
                task,
            });
        }
        Ok(())
    }

    pub fn statuses(&self) -> Vec<ServiceStatus> {
        self.table
            .lock()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    /// A cheap handle for readers of the status table (the control socket).
    pub fn status_reader(&self) -> impl Fn() -> Vec<ServiceStatus> + Send + Sync + 'static {
        let table = self.table.clone();
        move || {
            table
                .lock()
                .map(|t| t.values().cloned().collect())
                .unwrap_or_default()
        }
    }

    /// Resolves once every service is ready; on timeout, names those that
    /// are not. Owns what it needs, so it can run in its own task.
    pub fn all_ready(
        &self,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<(), Vec<String>>> + Send + 'static {
        let ready: Vec<(String, watch::Receiver<bool>)> = self
            .ready
            .iter()
            .map(|(name, rx)| (name.to_string(), rx.clone()))
            .collect();
        async move {
            let all = async {
                for (_, rx) in &ready {
                    let mut rx = rx.clone();
                    let _ = rx.wait_for(|ready| *ready).await;
                }
            };
            match tokio::time::timeout(timeout, all).await {
                Ok(()) => Ok(()),
                Err(_) => Err(ready
                    .iter()
                    .filter(|(_, rx)| !*rx.borrow())
                    .map(|(name, _)| name.clone())
                    .collect()),
            }
        }
    }

    /// Stops every service, the last started first.
    pub async fn shutdown(&mut self) {
        while let Some(running) = self.running.pop() {
            log::info!("stopping {}", running.name);
            let _ = running.stop.send(true);
            let _ = running.task.await;
        }
    }

    fn set(&self, name: &str, update: impl FnOnce(&mut ServiceStatus)) {
        update_table(&self.table, name, update);
    }
}

fn update_table(table: &Table, name: &str, update: impl FnOnce(&mut ServiceStatus)) {
    if let Ok(mut table) = table.lock() {
        let entry = table
            .entry(name.to_string())
            .or_insert_with(|| ServiceStatus {
                name: name.to_string(),
                state: ServiceState::Waiting,
                pid: None,
                restarts: 0,
                last_exit: None,
            });
        update(entry);
    }
}

struct ServiceWorker {
    spec: ServiceSpec,
    reaper: Reaper,
    launcher: Launcher,
    backoff: Backoff,
    table: Table,
    ready: watch::Sender<bool>,
    stop: watch::Receiver<bool>,
}

impl ServiceWorker {
    async fn run(mut self, deps: Vec<watch::Receiver<bool>>) {
        for mut dep in deps {
            let mut stop = self.stop.clone();
            tokio::select! {
                r = dep.wait_for(|ready| *ready) => if r.is_err() { return },
                _ = stop.wait_for(|stop| *stop) => return self.stopped(),
            }
        }
        let name = self.spec.name;
        let mut retry = self.backoff.start();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let exit = match self.start_once(attempt) {
                Ok((pid, exit)) => match self.wait_or_stop(pid, exit).await {
                    Some(status) => describe(&status),
                    None => return self.stopped(),
                },
                Err(e) => format!("could not start: {e}"),
            };
            let _ = self.ready.send(false);
            let delay = retry.after_exit(started.elapsed(), HEALTHY_AFTER);
            log::warn!(
                "service {name} {exit} after {:.1}s; restart #{attempt} in {} ms",
                started.elapsed().as_secs_f64(),
                delay.as_millis()
            );
            self.set(|s| {
                s.state = ServiceState::Backoff;
                s.pid = None;
                s.restarts = attempt;
                s.last_exit = Some(exit);
            });
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|stop| *stop) => return self.stopped(),
            }
        }
    }

    /// Spawns the process (through the reaper, which watches its exit from
    /// the start) and the tasks that read its pipes.
    fn start_once(&self, attempt: u32) -> std::io::Result<(Pid, oneshot::Receiver<WaitStatus>)> {
        let mut command = (self.launcher)(&self.spec, attempt);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (mut child, exit) = self.reaper.spawn(&mut command)?;
        let pid = Pid::from_raw(child.id() as i32);
        let name = self.spec.name;
        if let Some(stderr) = child.stderr.take() {
            spawn_line_reader(OwnedFd::from(stderr), move |line| {
                crate::logging::relay_service_line(name, line)
            });
        }
        if let Some(stdout) = child.stdout.take() {
            let ready = self.ready.clone();
            let table = self.table.clone();
            spawn_line_reader(OwnedFd::from(stdout), move |line| {
                if line.trim() == READY_LINE && !*ready.borrow() {
                    log::info!("service {name} is ready");
                    update_table(&table, name, |s| s.state = ServiceState::Ready);
                    let _ = ready.send(true);
                }
            });
        }
        self.set(|s| {
            s.state = ServiceState::Starting;
            s.pid = Some(pid.as_raw());
        });
        log::debug!("started service {name} (pid {pid}, attempt {attempt})");
        Ok((pid, exit))
    }

    /// The exit status, or None once the service was stopped on request.
    async fn wait_or_stop(
        &mut self,
        pid: Pid,
        mut exit: oneshot::Receiver<WaitStatus>,
    ) -> Option<WaitStatus> {
        tokio::select! {
            status = &mut exit => return status.ok(),
            _ = self.stop.wait_for(|stop| *stop) => {}
        }
        self.set(|s| s.state = ServiceState::Stopping);
        let _ = kill(pid, Signal::SIGTERM);
        if tokio::time::timeout(STOP_GRACE, &mut exit).await.is_err() {
            log::warn!(
                "service {} ignored SIGTERM for {}s; killing it",
                self.spec.name,
                STOP_GRACE.as_secs()
            );
            let _ = kill(pid, Signal::SIGKILL);
            let _ = tokio::time::timeout(STOP_GRACE, exit).await;
        }
        None
    }

    fn stopped(&self) {
        let _ = self.ready.send(false);
        self.set(|s| {
            s.state = ServiceState::Stopped;
            s.pid = None;
        });
    }

    fn set(&self, update: impl FnOnce(&mut ServiceStatus)) {
        update_table(&self.table, self.spec.name, update);
    }
}

/// Longest line relayed as one; longer ones are cut into pieces of this size.
const MAX_LINE: usize = 16 * 1024;

/// Reads a child's pipe line by line until it closes. Whatever the child writes (invalid
/// UTF-8, a line without end) is drained, so the child never blocks on a full pipe.
fn spawn_line_reader(fd: OwnedFd, mut on_line: impl FnMut(&str) + Send + 'static) {
    let pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        Ok(pipe) => pipe,
        Err(e) => {
            log::warn!("cannot read a service pipe: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe);
        while let Ok(Some(line)) = next_line(&mut reader, MAX_LINE).await {
            on_line(&line);
        }
    });
}

/// The next line (without its end), at most `max` bytes of it, invalid UTF-8 replaced;
/// `None` at the end of the stream.
async fn next_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok((!line.is_empty()).then(|| lossy(&line)));
        }
        let room = max - line.len();
        let window = &available[..available.len().min(room)];
        if let Some(end) = window.iter().position(|b| *b == b'\n') {
            line.extend_from_slice(&window[..end]);
            reader.consume(end + 1);
            return Ok(Some(lossy(&line)));
        }
        let taken = window.len();
        line.extend_from_slice(window);
        reader.consume(taken);
        if line.len() >= max {
            return Ok(Some(lossy(&line)));
        }
    }
}

fn lossy(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.strip_suffix('\r').unwrap_or(&text).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::reaper::tests::one_reaper_at_a_time;

    /// Services played by `sh`, so the test exercises real processes.
    fn shell_launcher(scripts: &'static [(&'static str, &'static str)]) -> Launcher {
        Arc::new(move |spec: &ServiceSpec, attempt: u32| {
            let script = scripts
                .iter()
                .find(|(n, _)| *n == spec.name)
                .map(|(_, s)| *s)
                .unwrap_or("exit 1");
            let mut c = Command::new("sh");
            c.args(["-c", script]).env("ATTEMPT", attempt.to_string());
            c
        })
    }

    fn fast_backoff() -> Backoff {
        Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn crashing_service_is_restarted_until_it_stays_up() {
        let _serial = one_reaper_at_a_time().await;
        let reaper = Reaper::default();
        tokio::spawn(reaper.clone().run());
        // Crashes on its first three starts, then reports ready and stays.
        let scripts: &'static [(&str, &str)] = &[
            (
                "flaky",
                "[ \"$ATTEMPT\" -le 3 ] && kill -SEGV $$; echo READY=1; exec sleep 30",
            ),
            ("dependent", "echo READY=1; exec sleep 30"),
        ];
        let mut sup = Supervisor::new(reaper, shell_launcher(scripts), fast_backoff());
        sup.start(&[
            ServiceSpec {
                name: "dependent",
                depends_on: &["flaky"],
            },
            ServiceSpec {
                name: "flaky",
                depends_on: &[],
            },
        ])
        .unwrap();
        sup.all_ready(Duration::from_secs(20))
            .await
            .expect("all ready");
        let statuses = sup.statuses();
        let flaky = statuses.iter().find(|s| s.name == "flaky").unwrap();
        assert_eq!(flaky.restarts, 3);
        assert_eq!(flaky.state, ServiceState::Ready);
        assert!(flaky.last_exit.as_deref().unwrap().contains("SIGSEGV"));
        let dependent = statuses.iter().find(|s| s.name == "dependent").unwrap();
        assert_eq!(dependent.restarts, 0, "started only after flaky was ready");
        sup.shutdown().await;
        assert!(sup
            .statuses()
            .iter()
            .all(|s| s.state == ServiceState::Stopped && s.pid.is_none()));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn shutdown_kills_a_service_that_ignores_sigterm() {
        let _serial = one_reaper_at_a_time().await;
        let reaper = Reaper::default();
        tokio::spawn(reaper.clone().run());
        let scripts: &'static [(&str, &str)] = &[(
            "stubborn",
            "trap '' TERM; echo READY=1; while :; do sleep 1; done",
        )];
        let mut sup = Supervisor::new(reaper, shell_launcher(scripts), fast_backoff());
        sup.start(&[ServiceSpec {
            name: "stubborn",
            depends_on: &[],
        }])
        .unwrap();
        sup.all_ready(Duration::from_secs(10)).await.expect("ready");
        let pid = sup.statuses()[0].pid.unwrap();
        let started = Instant::now();
        sup.shutdown().await;
        assert!(started.elapsed() >= STOP_GRACE);
        assert!(
            kill(Pid::from_raw(pid), None).is_err(),
            "process {pid} still exists"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_service_that_never_gets_ready_is_named() {
        let _serial = one_reaper_at_a_time().await;
        let reaper = Reaper::default();
        tokio::spawn(reaper.clone().run());
        let scripts: &'static [(&str, &str)] = &[
            ("ok", "echo READY=1; exec sleep 30"),
            ("mute", "exec sleep 30"),
        ];
        let mut sup = Supervisor::new(reaper, shell_launcher(scripts), fast_backoff());
        sup.start(&[
            ServiceSpec {
                name: "ok",
                depends_on: &[],
            },
            ServiceSpec {
                name: "mute",
                depends_on: &[],
            },
        ])
        .unwrap();
        let missing = sup.all_ready(Duration::from_millis(500)).await.unwrap_err();
        assert_eq!(missing, ["mute"]);
        sup.shutdown().await;
    }

    /// A service (or whatever it runs) writes bytes that are not UTF-8, then more than a
    /// pipe holds: the supervisor must keep draining, or the service blocks and never
    /// gets ready.
    #[tokio::test(flavor = "current_thread")]
    async fn a_service_writing_invalid_utf8_is_still_drained() {
        let _serial = one_reaper_at_a_time().await;
        let reaper = Reaper::default();
        tokio::spawn(reaper.clone().run());
        let scripts: &'static [(&str, &str)] = &[(
            "binary",
            "printf 'bad \\377\\376 bytes\\n'; head -c 300000 /dev/zero | tr '\\0' x; echo; \
             printf 'err \\377\\n' >&2; echo READY=1; exec sleep 30",
        )];
        let mut sup = Supervisor::new(reaper, shell_launcher(scripts), fast_backoff());
        sup.start(&[ServiceSpec {
            name: "binary",
            depends_on: &[],
        }])
        .unwrap();
        sup.all_ready(Duration::from_secs(10))
            .await
            .expect("ready after the garbage");
        sup.shutdown().await;
    }

    #[tokio::test]
    async fn lines_are_bounded_and_lossy() {
        let input: &[u8] = b"ok\r\nbad \xff\nabcdefghij\ntail";
        let mut reader = BufReader::with_capacity(3, input);
        let mut lines = Vec::new();
        while let Some(line) = next_line(&mut reader, 4).await.unwrap() {
            lines.push(line);
        }
        assert_eq!(
            lines,
            ["ok", "bad ", "\u{fffd}", "abcd", "efgh", "ij", "tail"]
        );
    }
}
