//! The agent-facing side: validates specs, spawns one shim per container,
//! and answers status/wait/kill/delete/recover from the files the shims keep
//! under `<root>/<id>/`. It holds no state in memory, so any number of
//! `Runtime`s (or an agent restarted from scratch) see the same containers.
//! It never clones container processes itself (see the shim).

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cgroup;
use crate::error::RuntimeError;
use crate::exec::ExecReport;
use crate::process::{self, KILL_REQUEST_SIGNAL};
use crate::spec::{validate_id, ContainerSpec};
use crate::state::{self, ContainerRecord, ExitStatus, Layout, LogPaths, ShimRecord, StartReport};

/// How to run the shim: nodeos passes `/proc/self/exe` and `["shim"]` and
/// calls [`crate::shim_main`] with the arguments after them; the crate's own
/// `cloudos-shim` binary takes the same arguments with an empty prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShimCommand {
    pub program: PathBuf,
    pub args_prefix: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerStatus {
    /// The container's process runs. `pid` is in the host's pid namespace;
    /// it is 0 for the moment between the shim's spawn and its start report.
    Running {
        pid: i32,
    },
    Exited(ExitStatus),
}

/// What [`Runtime::recover`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoverReport {
    /// Shim alive: kept, still running.
    pub running: Vec<String>,
    /// Exited normally before; nothing to do but report.
    pub exited: Vec<String>,
    /// Shim gone without recording an exit: leftovers removed, exit recorded as lost.
    pub lost: Vec<String>,
}

pub struct Runtime {
    root: PathBuf,
    shim: ShimCommand,
    start_timeout: Duration,
}

/// How long `delete` lets a killed container and its shim wind down before
/// killing the shim and cleaning up after it.
const DELETE_GRACE: Duration = Duration::from_secs(10);

impl Runtime {
    /// Opens (creating if needed) the runtime's state directory.
    pub fn open(root: impl Into<PathBuf>, shim: ShimCommand) -> Result<Self, RuntimeError> {
        let root = root.into();
        fs::create_dir_all(&root)
            .map_err(|e| RuntimeError::io("create the runtime root", &root, e))?;
        let root = fs::canonicalize(&root)
            .map_err(|e| RuntimeError::io("resolve the runtime root", &root, e))?;
        // The root appears in overlayfs options, which use ',' and ':' as separators.
        if root.to_string_lossy().contains([',', ':']) {
            return Err(RuntimeError::io(
                "use as the runtime root",
                &root,
                std::io::Error::other("the path contains ',' or ':', which overlayfs cannot take"),
            ));
        }
        // Before any container starts (see cgroup::ensure_parent).
        cgroup::ensure_parent().map_err(|(dir, e)| {
            RuntimeError::io("create the containers' parent cgroup", &dir, e)
        })?;
        Ok(Runtime {
            root,
            shim,
            start_timeout: Duration::from_secs(60),
        })
    }

    /// How long [`Runtime::start`] waits for the shim's report (default 60 s).
    pub fn with_start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn layout(&self, id: &str) -> Result<Layout, RuntimeError> {
        validate_id(id)?;
        Ok(Layout::new(&self.root, id))
    }

    /// The layout of an existing container, or NotFound.
    fn existing(&self, id: &str) -> Result<Layout, RuntimeError> {
        let layout = self.layout(id)?;
        if !layout.dir.is_dir() {
            return Err(RuntimeError::NotFound { id: id.to_string() });
        }
        Ok(layout)
    }

    /// Blocking. Returns once the container's process runs, or with the
    /// reason it could not start; nothing is left behind on failure.
    pub fn start(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        spec.validate()?;
        let id = spec.id.as_str();
        if let Some(missing) = spec.layers.iter().find(|l| !l.is_dir()) {
            return Err(RuntimeError::LayerMissing {
                id: id.to_string(),
                path: missing.clone(),
            });
        }
        if let Some(out) = spec.output_dir.as_ref().filter(|o| !o.is_dir()) {
            return Err(RuntimeError::InvalidSpec {
                id: id.to_string(),
                why: format!(
                    "output_dir {} is not a directory; create it first",
                    out.display()
                ),
            });
        }
        if let Some(b) = spec.binds.iter().find(|b| !b.source.is_dir()) {
            return Err(RuntimeError::InvalidSpec {
                id: id.to_string(),
                why: format!(
                    "{} (bound on {}) is not a directory",
                    b.source.display(),
                    b.target
                ),
            });
        }
        let layout = self.layout(id)?;
        match fs::create_dir(&layout.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(RuntimeError::AlreadyExists { id: id.to_string() })
            }
            Err(e) => return Err(RuntimeError::io("create", &layout.dir, e)),
        }
        let result = self.spawn_and_await(spec, &layout);
        if result.is_err() {
            // The shim cleaned up after itself (or was killed and its
            // leftovers removed): drop the directory too.
            let _ = self.remove_dir(id, &layout);
        }
        result
    }

    /// Starts the shim with `args` (after its own prefix), its stdout piped for the
    /// report, `stderr` where its complaints go, and nothing of our environment but
    /// where container cgroups go.
    fn spawn_shim(&self, args: &[&OsStr], stderr: Stdio) -> Result<Child, RuntimeError> {
        Command::new(&self.shim.program)
            .args(&self.shim.args_prefix)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .env_clear()
            .env(cgroup::PARENT_ENV, cgroup::parent())
            .spawn()
            .map_err(|source| RuntimeError::ShimSpawn {
                program: self.shim.program.clone(),
                source,
            })
    }

    fn spawn_and_await(&self, spec: &ContainerSpec, layout: &Layout) -> Result<(), RuntimeError> {
        let id = spec.id.as_str();
        state::write_json(&layout.spec(), spec)?;
        let shim_log = File::create(layout.shim_log())
            .map_err(|e| RuntimeError::io("create", layout.shim_log(), e))?;
        let mut child = self.spawn_shim(
            &["run".as_ref(), self.root.as_os_str(), id.as_ref()],
            shim_log.into(),
        )?;
        // Record the shim now (it records itself too): should this process die
        // before the report, recover() still finds and judges the shim.
        let rec = process::record_of(child.id() as i32);
        if let Some(rec) = &rec {
            state::write_json(&layout.shim(), rec)?;
        }
        let Some(stdout) = child.stdout.take() else {
            return Err(RuntimeError::StartFailed {
                id: id.to_string(),
                message: "the shim's stdout was not captured".into(),
            });
        };
        let report = read_report(&stdout, self.start_timeout);
        drop(stdout);
        let report = match report {
            Some(r) => r,
            None => {
                // Hung or died without a word: kill it and what it made.
                if let Some(rec) = &rec {
                    process::kill_hard(rec);
                    process::wait_exit(rec, Some(Duration::from_secs(5)));
                }
                let _ = child.try_wait();
                self.clean_leftovers(id);
                let message = fs::read_to_string(layout.shim_log()).unwrap_or_default();
                return Err(if message.is_empty() {
                    RuntimeError::StartTimeout {
                        id: id.to_string(),
                        waited: self.start_timeout,
                    }
                } else {
                    RuntimeError::StartFailed {
                        id: id.to_string(),
                        message: format!("the shim died: {}", message.trim()),
                    }
                });
            }
        };
        let mut err = |e| -> Result<(), RuntimeError> {
            // The shim exits right after a failure report; reap it.
            let _ = child.wait();
            Err(e)
        };
        let id_s = id.to_string();
        match report {
            StartReport::Started { .. } => Ok(()),
            StartReport::InvalidSpec { why } => err(RuntimeError::InvalidSpec { id: id_s, why }),
            StartReport::LayerMissing { path } => {
                err(RuntimeError::LayerMissing { id: id_s, path })
            }
            StartReport::CommandNotFound { command } => {
                err(RuntimeError::CommandNotFound { id: id_s, command })
            }
            StartReport::Cgroup { message } => err(RuntimeError::Cgroup { id: id_s, message }),
            StartReport::Failed { message } => err(RuntimeError::StartFailed { id: id_s, message }),
        }
    }

    fn shim_record(&self, id: &str, layout: &Layout) -> Result<Option<ShimRecord>, RuntimeError> {
        state::read_json(id, &layout.shim())
    }

    pub fn status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let layout = self.existing(id)?;
        let shim = self.shim_record(id, &layout)?;
        if let Some(rec) = &shim {
            if process::is_alive(rec) {
                let pid = state::read_json::<ContainerRecord>(id, &layout.container())?
                    .map(|c| c.pid)
                    .unwrap_or(0);
                if layout.exit().exists() {
                    // Exited; the shim is tearing down.
                    return self.exit_of(id, &layout);
                }
                return Ok(ContainerStatus::Running { pid });
            }
            process::reap_if_child(rec);
        }
        self.exit_of(id, &layout)
    }

    /// The recorded exit, or a lost one when the shim died without recording.
    fn exit_of(&self, id: &str, layout: &Layout) -> Result<ContainerStatus, RuntimeError> {
        Ok(ContainerStatus::Exited(
            state::read_json::<ExitStatus>(id, &layout.exit())?
                .unwrap_or_else(ExitStatus::lost_now),
        ))
    }

    /// Blocks until the container has exited and its shim has torn it down.
    pub fn wait(&self, id: &str, timeout: Option<Duration>) -> Result<ExitStatus, RuntimeError> {
        let layout = self.existing(id)?;
        let deadline = timeout.map(|t| Instant::now() + t);
        // The shim records itself first thing; a concurrent start may not have got there yet.
        let rec = loop {
            if let Some(rec) = self.shim_record(id, &layout)? {
                break Some(rec);
            }
            if layout.exit().exists() || !layout.dir.exists() {
                break None;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(RuntimeError::WaitTimeout {
                    id: id.to_string(),
                    waited: timeout.unwrap_or_default(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if let Some(rec) = rec {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if !process::wait_exit(&rec, left) {
                return Err(RuntimeError::WaitTimeout {
                    id: id.to_string(),
                    waited: timeout.unwrap_or_default(),
                });
            }
            process::reap_if_child(&rec);
        }
        match self.exit_of(id, &layout)? {
            ContainerStatus::Exited(e) => Ok(e),
            ContainerStatus::Running { .. } => Err(RuntimeError::WaitTimeout {
                id: id.to_string(),
                waited: timeout.unwrap_or_default(),
            }),
        }
    }

    /// Sends `signal` to the container's process. No error if it already exited.
    pub fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        let layout = self.existing(id)?;
        if !(1..=64).contains(&signal) {
            return Err(RuntimeError::InvalidSignal {
                id: id.to_string(),
                signal,
            });
        }
        if layout.exit().exists() {
            return Ok(());
        }
        let Some(rec) = self.shim_record(id, &layout)? else {
            return Ok(());
        };
        // Until the shim has written container.json it has not yet taken
        // over the kill-request signal, whose default action would kill the
        // shim itself: wait for a concurrent start to get there.
        let deadline = Instant::now() + self.start_timeout;
        while !layout.container().exists() && process::is_alive(&rec) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // The shim is the container's parent and forwards the signal: only it
        // knows for sure the pid was not reaped and reused.
        match process::queue_signal(&rec, KILL_REQUEST_SIGNAL, signal) {
            Ok(_) => Ok(()),
            Err(e) => Err(RuntimeError::io("signal the shim of", &layout.dir, e)),
        }
    }

    /// Kills the container if it still runs and removes everything it had:
    /// processes, cgroup, mounts, state and logs.
    pub fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        let layout = self.existing(id)?;
        if let Some(rec) = self.shim_record(id, &layout)? {
            if process::is_alive(&rec) {
                let _ = process::queue_signal(&rec, KILL_REQUEST_SIGNAL, libc::SIGKILL);
                if !process::wait_exit(&rec, Some(DELETE_GRACE)) {
                    process::kill_hard(&rec);
                    process::wait_exit(&rec, Some(Duration::from_secs(5)));
                }
            }
            process::reap_if_child(&rec);
        }
        self.clean_leftovers(id);
        self.remove_dir(id, &layout)
    }

    /// Removes what a dead shim may have left: processes and cgroups.
    /// Mounts need nothing: they live in the shim's own mount namespace.
    fn clean_leftovers(&self, id: &str) {
        cgroup::kill_and_remove(id, Duration::from_secs(5));
    }

    /// Removes `<root>/<id>`, but never through a mount point: deleting
    /// through a bind mount would delete the host's files.
    fn remove_dir(&self, id: &str, layout: &Layout) -> Result<(), RuntimeError> {
        // Normally there are none: the shim mounts in its own namespace.
        let mounts = mounts_under(&layout.dir);
        if !mounts.is_empty() {
            for m in &mounts {
                let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
            }
            if let Some(m) = mounts_under(&layout.dir).into_iter().next() {
                return Err(RuntimeError::StillMounted {
                    id: id.to_string(),
                    path: m,
                });
            }
        }
        match fs::remove_dir_all(&layout.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::io("remove", &layout.dir, e)),
        }
    }

    /// Ids of all containers under the root, sorted.
    pub fn list(&self) -> Result<Vec<String>, RuntimeError> {
        let entries =
            fs::read_dir(&self.root).map_err(|e| RuntimeError::io("list", &self.root, e))?;
        let mut ids: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| validate_id(n).is_ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Blocking. Runs `argv` inside running container `id`, as its own process runs
    /// (namespaces, cgroup, user, capabilities, seccomp: see `crate::exec`), killed once
    /// it has run for `timeout`; how it ended. An error means it could not be started.
    pub fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecReport, RuntimeError> {
        let layout = self.existing(id)?;
        let failed = |message: String| RuntimeError::ExecFailed {
            id: id.to_string(),
            message,
        };
        if argv.is_empty() || argv[0].is_empty() {
            return Err(failed("no command given".into()));
        }
        // The helper's own complaints go with the shim's.
        let log = fs::OpenOptions::new()
            .append(true)
            .open(layout.shim_log())
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let millis = timeout.as_millis().to_string();
        let mut args: Vec<&OsStr> = vec!["exec".as_ref(), self.root.as_os_str(), id.as_ref()];
        args.push(millis.as_ref());
        args.extend(argv.iter().map(OsStr::new));
        let mut child = self.spawn_shim(&args, log)?;
        let answer: Option<serde_json::Value> = child
            .stdout
            .take()
            .and_then(|out| read_report(&out, timeout + self.start_timeout));
        if answer.is_none() {
            let _ = child.kill();
        }
        let _ = child.wait();
        let answer = answer.ok_or_else(|| failed("the helper did not report".into()))?;
        if let Some(error) = answer.get("error").and_then(|e| e.as_str()) {
            return Err(failed(error.to_owned()));
        }
        serde_json::from_value(answer).map_err(|e| failed(format!("unreadable report: {e}")))
    }

    pub fn log_paths(&self, id: &str) -> LogPaths {
        Layout::new(&self.root, id).logs()
    }

    /// After an agent restart: keeps containers whose shim is alive; for the
    /// others kills leftover processes, removes cgroups and records a lost
    /// exit when none was recorded.
    pub fn recover(&self) -> Result<RecoverReport, RuntimeError> {
        let mut report = RecoverReport::default();
        for id in self.list()? {
            let layout = Layout::new(&self.root, &id);
            let rec = self.shim_record(&id, &layout).unwrap_or(None);
            if rec.as_ref().is_some_and(process::is_alive) {
                report.running.push(id);
                continue;
            }
            if let Some(rec) = &rec {
                process::reap_if_child(rec);
            }
            self.clean_leftovers(&id);
            let recorded = matches!(
                state::read_json::<ExitStatus>(&id, &layout.exit()),
                Ok(Some(_))
            );
            if recorded {
                report.exited.push(id);
            } else {
                state::write_json(&layout.exit(), &ExitStatus::lost_now())?;
                report.lost.push(id);
            }
        }
        Ok(report)
    }
}

/// Reads the shim's report: everything up to EOF, within `timeout`.
fn read_report<T: serde::de::DeserializeOwned>(fd: &impl AsRawFd, timeout: Duration) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return None;
        }
        if n == 0 {
            continue;
        }
        // SAFETY: reading into a local buffer of the given length.
        let got = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match got {
            0 => break,
            n if n > 0 => data.extend_from_slice(&buf[..n as usize]),
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return None,
        }
        if data.len() > 1 << 20 {
            return None;
        }
    }
    let line = data.split(|b| *b == b'\n').find(|l| !l.is_empty())?;
    serde_json::from_slice(line).ok()
}

/// Mount points at or below `dir` in this process's mount namespace.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|m| PathBuf::from(cgroup::unescape_mount_path(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    // Deepest first, so nested mounts are unmounted before their parents.
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found
}
