//! A command run inside a running container (a health check's `--health-cmd`), as
//! `runc exec` does: the same namespaces, cgroup, user, capabilities, seccomp filter and
//! environment as the container's own process, never more.
//!
//! libcontainer's tenant builder does the joining, from the container's state and OCI
//! config, which live on the shim's private tmpfs: only the shim's mount namespace sees
//! them. So [`crate::Runtime::exec`] runs a short-lived helper (`shim exec`), a fresh
//! single-threaded process that enters that namespace first (`setns` of a mount namespace
//! needs one thread), starts the command, waits for it within its time, and prints one
//! JSON [`ExecReport`] line.

use std::fs::File;
use std::io::Read as _;
use std::path::Path;
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::process;
use crate::seccomp::{self, ConfinedExecutor};
use crate::state::{self, Layout, ShimRecord};

/// The most of a command's output (stdout and stderr together) kept for its report.
pub const OUTPUT_MAX: usize = 4096;

/// How a command run in a container ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecReport {
    /// Its exit code, when it exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The signal that ended it (SIGKILL after its time ran out).
    #[serde(default)]
    pub signal: Option<i32>,
    #[serde(default)]
    pub timed_out: bool,
    /// The start of what it wrote, stdout and stderr together, at most [`OUTPUT_MAX`].
    #[serde(default)]
    pub output: String,
}

impl ExecReport {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// The helper: `exec <root> <id> <timeout-ms> <argv…>`; prints an `ExecReport` or an
/// `{"error": …}` line, and exits 0 unless its arguments are wrong.
pub(crate) fn exec_main(root: &Path, id: &str, timeout_ms: &str, argv: &[&str]) -> i32 {
    let Ok(ms) = timeout_ms.parse::<u64>() else {
        eprintln!("shim exec: timeout {timeout_ms:?} is not milliseconds");
        return 2;
    };
    if argv.is_empty() {
        eprintln!("shim exec: no command");
        return 2;
    }
    let argv: Vec<String> = argv.iter().map(|a| (*a).to_owned()).collect();
    let line = match exec_in(root, id, Duration::from_millis(ms), argv) {
        Ok(report) => serde_json::to_string(&report),
        Err(error) => serde_json::to_string(&serde_json::json!({ "error": error })),
    };
    println!("{}", line.unwrap_or_default());
    0
}

fn exec_in(
    root: &Path,
    id: &str,
    timeout: Duration,
    argv: Vec<String>,
) -> Result<ExecReport, String> {
    crate::spec::validate_id(id).map_err(|e| e.to_string())?;
    let layout = Layout::new(root, id);
    let shim: ShimRecord = state::read_json(id, &layout.shim())
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("container {id} has no shim"))?;
    if !process::is_alive(&shim) {
        return Err(format!("container {id} is not running"));
    }
    let namespace = File::open(format!("/proc/{}/ns/mnt", shim.pid))
        .map_err(|e| format!("cannot open the shim's mount namespace: {e}"))?;
    setns(&namespace, CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("cannot enter the shim's mount namespace: {e}"))?;
    // The container's own process user and working directory: libcontainer's tenant
    // takes root and `/` unless told, which would give the command more than the
    // container has.
    let config = layout.bundle().join("config.json");
    let init = libcontainer::oci_spec::runtime::Spec::load(&config)
        .map_err(|e| format!("cannot read {}: {e}", config.display()))?;
    let process = init
        .process()
        .as_ref()
        .ok_or_else(|| format!("{} has no process", config.display()))?;
    let user = process.user();
    let filters = seccomp::compile_native().map_err(|e| e.to_string())?;
    let (out_r, out_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("cannot make a pipe: {e}"))?;
    let err_w = out_w
        .try_clone()
        .map_err(|e| format!("cannot make a pipe: {e}"))?;
    let started = ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_root_path(layout.libcontainer_root())
        .map_err(|e| e.to_string())?
        .with_executor(ConfinedExecutor::new(filters))
        .with_stdout(out_w)
        .with_stderr(err_w)
        .as_tenant()
        .with_user(Some(user.uid()))
        .with_group(Some(user.gid()))
        .with_additional_gids(user.additional_gids().clone().unwrap_or_default())
        .with_cwd(Some(process.cwd().clone()))
        .with_container_args(argv)
        .with_detach(true)
        .build()
        .map_err(|e| format!("cannot start the command in container {id}: {e}"))?;
    // The builder is gone with its ends of the pipe: EOF comes when the command's do.
    let pid = Pid::from_raw(started.as_raw());
    Ok(wait(pid, File::from(out_r), timeout))
}

/// Waits for `pid` until `timeout` (then kills it), reading its output meanwhile.
fn wait(pid: Pid, mut output: File, timeout: Duration) -> ExecReport {
    let _ = nix::fcntl::fcntl(&output, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    let deadline = Instant::now() + timeout;
    let mut report = ExecReport::default();
    let mut kept = Vec::new();
    // What is there to read now, kept up to the cap (the rest is read and dropped, so a
    // chatty command never blocks on a full pipe).
    let mut drain = |kept: &mut Vec<u8>| {
        let mut buf = [0u8; 1024];
        while let Ok(n) = output.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = OUTPUT_MAX.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
    };
    loop {
        drain(&mut kept);
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => {
                report.exit_code = Some(code);
                break;
            }
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                report.signal = Some(signal as i32);
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
        if Instant::now() >= deadline {
            report.timed_out = true;
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            report.signal = Some(Signal::SIGKILL as i32);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drain(&mut kept);
    report.output = String::from_utf8_lossy(&kept).into_owned();
    report
}
