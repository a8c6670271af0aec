//! Reaps every child of PID 1, supervised or orphaned, and hands the exit
//! status of a supervised child to whoever is waiting for it.
//!
//! Only this module calls `waitpid`. It is driven by SIGCHLD on a
//! current-thread runtime: a spawn and its `watch` happen without an await
//! between them, so no exit can be reaped before it is watched for.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// Exits nobody was watching for (orphans that PID 1 inherited) that we keep,
/// in case a watcher asks late; older ones are forgotten.
const UNCLAIMED_KEPT: usize = 64;

#[derive(Clone, Default)]
pub struct Reaper {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    watchers: HashMap<Pid, oneshot::Sender<WaitStatus>>,
    unclaimed: VecDeque<(Pid, WaitStatus)>,
}

impl Reaper {
    /// The exit status of `pid`, once it exits.
    pub fn watch(&self, pid: Pid) -> oneshot::Receiver<WaitStatus> {
        let (tx, rx) = oneshot::channel();
        let Ok(mut state) = self.state.lock() else {
            return rx;
        };
        if let Some(i) = state.unclaimed.iter().position(|(p, _)| *p == pid) {
            if let Some((_, status)) = state.unclaimed.remove(i) {
                let _ = tx.send(status);
            }
        } else {
            state.watchers.insert(pid, tx);
        }
        rx
    }

    /// Reaps every child that has exited; returns how many.
    pub fn reap_all(&self) -> usize {
        let mut reaped = 0;
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return reaped,
                Ok(status) => {
                    let Some(pid) = status.pid() else { continue };
                    // Stopped/continued children are not exits.
                    if !matches!(status, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
                        continue;
                    }
                    reaped += 1;
                    self.deliver(pid, status);
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("waitpid failed: {e}");
                    return reaped;
                }
            }
        }
    }

    fn deliver(&self, pid: Pid, status: WaitStatus) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        match state.watchers.remove(&pid) {
            Some(tx) => {
                let _ = tx.send(status);
            }
            None => {
                log::debug!("reaped orphan {pid}: {status:?}");
                if state.unclaimed.len() == UNCLAIMED_KEPT {
                    state.unclaimed.pop_front();
                }
                state.unclaimed.push_back((pid, status));
            }
        }
    }

    /// Runs forever: reaps on every SIGCHLD.
    pub async fn run(self) {
        let mut sigchld = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
        {
            Ok(s) => s,
            Err(e) => {
                // Without SIGCHLD we still reap, on a timer.
                log::error!("cannot watch SIGCHLD ({e}); reaping every 100 ms instead");
                loop {
                    self.reap_all();
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        };
        loop {
            self.reap_all();
            // A timeout too, in case signals coalesced while we were reaping.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), sigchld.recv()).await;
        }
    }
}

/// "exited with status 3" / "killed by SIGSEGV".
pub fn describe(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, signal, core) => {
            format!(
                "killed by {signal}{}",
                if *core { " (core dumped)" } else { "" }
            )
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    /// waitpid(-1) reaps any child of the test process: tests that spawn
    /// children take this lock so one test's reaper cannot steal another's exit.
    pub(crate) async fn one_reaper_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
        static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        LOCK.lock().await
    }

    // The reaper under test is what waits for the child (waitpid(-1)).
    #[allow(clippy::zombie_processes)]
    #[tokio::test(flavor = "current_thread")]
    async fn watched_children_get_their_status() {
        let _serial = one_reaper_at_a_time().await;
        let reaper = Reaper::default();
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let rx = reaper.watch(pid);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut rx = rx;
        loop {
            reaper.reap_all();
            if let Ok(status) = rx.try_recv() {
                assert_eq!(status, WaitStatus::Exited(pid, 7));
                assert_eq!(describe(&status), "exited with status 7");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "child never reaped");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    // The reaper under test is what waits for the child (waitpid(-1)).
    #[allow(clippy::zombie_processes)]
    #[tokio::test(flavor = "current_thread")]
    async fn an_exit_reaped_before_watch_is_kept() {
        let _serial = one_reaper_at_a_time().await;
        let reaper = Reaper::default();
        let child = std::process::Command::new("sh")
            .args(["-c", "kill -SEGV $$"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while reaper.reap_all() == 0 {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let status = reaper.watch(pid).await.unwrap();
        assert!(describe(&status).starts_with("killed by SIGSEGV"));
    }
}
