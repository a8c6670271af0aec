//! Processes a test starts on the host (a master, an agent): each tied to the test process,
//! its stdout and stderr in files, stopped when dropped; and [`Logs`], the list of those
//! files that a failing test shows.
//!
//! Owns starting, watching and stopping host processes; what they are (masters, agents)
//! is the [`crate::lab`]'s business.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::nodes::spawn_tied;

/// How long a process gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A process of the test, its stdout and stderr in files. Stopped (SIGTERM, then SIGKILL)
/// when dropped.
#[derive(Debug)]
pub struct Proc {
    what: String,
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

impl Proc {
    /// Starts `cmd` with no stdin and its stdout and stderr written to `out` and `err`,
    /// tied to the test process (see [`spawn_tied`]). Panics, naming `what`, if it cannot.
    pub fn start(what: &str, mut cmd: Command, out: PathBuf, err: PathBuf) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(File::create(&out).expect("stdout file"))
            .stderr(File::create(&err).expect("stderr file"));
        let child = spawn_tied(cmd).unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Proc {
            what: what.to_owned(),
            child: Some(child),
            out,
            err,
        }
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The name it was started under (`master-1`, `n1`).
    pub fn what(&self) -> &str {
        &self.what
    }

    /// What it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// What it wrote to stderr so far (its log).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Sends `signal` and waits (up to 5 s, then SIGKILL) for the process to exit.
    pub fn stop_with(&mut self, signal: libc::c_int) -> Option<ExitStatus> {
        let status = stop(self.child.as_mut()?, signal, STOP_GRACE);
        self.child = None;
        status
    }

    /// Sends `signal` and does not wait: SIGSTOP and SIGCONT pause and resume it (a machine
    /// that stalls).
    pub fn signal(&self, signal: libc::c_int) {
        if let Some(child) = &self.child {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill takes a pid and a signal number and touches no memory.
                unsafe { libc::kill(pid, signal) };
            }
        }
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = wait_child(self.child.as_mut()?, timeout);
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop_with(libc::SIGTERM);
    }
}

/// Sends `signal` to `child` unless it has exited, waits up to `grace`, then SIGKILLs it.
/// Always reaps it; its exit status if known.
pub(crate) fn stop(child: &mut Child, signal: libc::c_int, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    // SAFETY: kill(2) on our own unreaped child: the PID cannot have been reused.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    wait_child(child, grace).or_else(|| {
        let _ = child.kill();
        child.wait().ok()
    })
}

/// Polls `child` every 20 ms for up to `timeout`; its exit status if it exited.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Err(_) => return None,
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The output files of a test's processes, by label, for failure messages: a restarted
/// process gets new files, and the old run's output stays in the list.
#[derive(Debug, Default)]
pub struct Logs {
    files: Mutex<Vec<(String, PathBuf)>>,
}

impl Logs {
    /// Starts `cmd` as `what` with its output in `<dir>/<what>.<run>.{out,err}`, where `run`
    /// counts the starts of `what`, and lists both files.
    pub fn start(&self, what: &str, cmd: Command, dir: &std::path::Path) -> Proc {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let run = files
            .iter()
            .filter(|(w, _)| w.starts_with(&format!("{what} run ")))
            .count()
            / 2
            + 1;
        let out = dir.join(format!("{what}.{run}.out"));
        let err = dir.join(format!("{what}.{run}.err"));
        let proc = Proc::start(what, cmd, out.clone(), err.clone());
        files.push((format!("{what} run {run} stdout"), out));
        files.push((format!("{what} run {run} stderr"), err));
        proc
    }

    /// Every listed file that is not empty, each under a `----- label` line.
    pub fn dump(&self) -> String {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::new();
        for (what, path) in files.iter() {
            let body = std::fs::read_to_string(path).unwrap_or_default();
            if !body.trim().is_empty() {
                text.push_str(&format!("\n----- {what}\n{}", body.trim_end()));
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_process_gets_new_files_and_the_dump_keeps_both_runs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let logs = Logs::default();
        for word in ["first", "second"] {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", &format!("echo {word}; echo {word}-err >&2")]);
            let mut proc = logs.start("svc", cmd, dir.path());
            let status = proc.wait_exit(Duration::from_secs(10)).expect("exits");
            assert!(status.success());
            assert_eq!(proc.stdout(), format!("{word}\n"));
            assert_eq!(proc.stderr(), format!("{word}-err\n"));
        }
        assert!(dir.path().join("svc.2.out").is_file());
        assert_eq!(
            logs.dump(),
            "\n----- svc run 1 stdout\nfirst\n----- svc run 1 stderr\nfirst-err\
             \n----- svc run 2 stdout\nsecond\n----- svc run 2 stderr\nsecond-err"
        );
    }

    #[test]
    fn stop_ends_a_process_that_ignores_sigterm() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "trap '' TERM; echo up; while :; do sleep 0.05; done"]);
        let mut proc = Proc::start(
            "stubborn",
            cmd,
            dir.path().join("out"),
            dir.path().join("err"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while proc.stdout().is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        assert!(proc.running());
        let child = proc.child.as_mut().expect("running");
        let status = stop(child, libc::SIGTERM, Duration::from_millis(200)).expect("status");
        proc.child = None;
        assert!(!status.success(), "{status}");
        assert!(!proc.running());
    }
}
