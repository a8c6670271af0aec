//! The master's etcd member, run as a child process the master supervises: started with
//! the flags of [`Member::args`], its output relayed into the master's log line by line,
//! restarted when it exits (waiting longer after each quick exit), and ended with the
//! master: when the [`MemberProcess`] is dropped, and by the kernel if the master dies
//! (`PR_SET_PDEATHSIG`), so no member outlives its master.
//!
//! The same code runs under PID 1, under systemd (the curl line) and in the tests.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use cloudos_store::etcd::member::Member;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How to run etcd: the program and the arguments that come before the member's own.
/// On the appliance etcd is started through the glibc loader it ships with
/// (`ld-linux… --library-path DIR etcd`); on a host with glibc, or in the tests, the
/// binary is run directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdProgram {
    pub program: PathBuf,
    pub leading_args: Vec<OsString>,
}

impl EtcdProgram {
    /// The etcd binary at `path`, run directly.
    pub fn direct(path: impl Into<PathBuf>) -> Self {
        EtcdProgram {
            program: path.into(),
            leading_args: Vec::new(),
        }
    }
}

/// A member that ran at least this long before exiting is restarted at once.
const STEADY: Duration = Duration::from_secs(30);
/// The longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The running member; dropping it stops the member.
pub struct MemberProcess {
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts `member` with `program` and keeps it running.
pub fn supervise(program: EtcdProgram, member: Member) -> MemberProcess {
    let (stop, stopped) = tokio::sync::oneshot::channel();
    tokio::spawn(keep_running(program, member, stopped));
    MemberProcess { _stop: stop }
}

async fn keep_running(
    program: EtcdProgram,
    member: Member,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let started = tokio::time::Instant::now();
        let mut child = match start(&program, &member) {
            Ok(child) => child,
            Err(e) => {
                log::error!(
                    "cannot start etcd ({}): {e}; trying again in {}s",
                    program.program.display(),
                    backoff.as_secs_f32()
                );
                tokio::select! {
                    _ = &mut stopped => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        log::info!(
            "etcd member {} started (pid {}), clients at {}",
            member.name,
            child.id().unwrap_or_default(),
            member.client_url
        );
        tokio::select! {
            _ = &mut stopped => {
                stop(&mut child).await;
                return;
            }
            status = child.wait() => {
                let ran = started.elapsed();
                if ran >= STEADY {
                    backoff = Duration::from_millis(200);
                }
                log::warn!(
                    "etcd member {} exited ({}) after {}s; restarting in {}s",
                    member.name,
                    status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                    ran.as_secs(),
                    backoff.as_secs_f32()
                );
            }
        }
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn start(program: &EtcdProgram, member: &Member) -> std::io::Result<Child> {
    std::fs::create_dir_all(&member.data_dir)?;
    cloudos_cluster::files::create_private_dir(&member.data_dir)?;
    let mut command = Command::new(&program.program);
    command
        .args(&program.leading_args)
        .args(member.args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe and changes only the child.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let name = member.name.clone();
    if let Some(out) = child.stdout.take() {
        tokio::spawn(relay(BufReader::new(out), name.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(relay(BufReader::new(err), name));
    }
    Ok(child)
}

/// etcd's log lines (JSON, one per line) into the master's log, as they are: etcd runs at
/// `warn`, so each one is worth a warning.
async fn relay(reader: BufReader<impl tokio::io::AsyncRead + Unpin>, member: String) {
    let mut lines = reader.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        log::warn!("etcd {member}: {line}");
    }
}

/// SIGTERM, then SIGKILL after a grace: etcd flushes and leaves cleanly on SIGTERM.
async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}
