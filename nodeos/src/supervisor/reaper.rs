//! Reaps every child of PID 1, supervised or orphaned, and hands the exit
//! status of a supervised child to whoever is waiting for it.
//!
//! Only this module calls `waitpid`. A supervised child is spawned through
//! [`Reaper::spawn`], which registers its watcher before the reaper can see
//! its exit. Exits nobody watches (orphans PID 1 inherited) are logged and
//! forgotten: once reaped, their pid may already belong to a new process, so
//! an old status kept for a late watcher could be handed to the wrong one.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::oneshot;

#[derive(Clone, Default)]
pub struct Reaper {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    watchers: HashMap<Pid, oneshot::Sender<WaitStatus>>,
}

impl Reaper {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawns `command` and returns the child with a receiver of its exit status. The
    /// reaper is held off until the watcher is in place, so the exit cannot be missed.
    pub fn spawn(
        &self,
        command: &mut Command,
    ) -> std::io::Result<(Child, oneshot::Receiver<WaitStatus>)> {
        let mut state = self.lock();
        let child = command.spawn()?;
        let pid = Pid::from_raw(child.id() as i32);
        Ok((child, watch_locked(&mut state, pid)))
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
        match self.lock().watchers.remove(&pid) {
            Some(tx) => {
                let _ = tx.send(status);
            }
            None => log::debug!("reaped orphan {pid}: {status:?}"),
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

/// The exit of the process that has `pid` now, a child that is alive (just spawned).
fn watch_locked(state: &mut State, pid: Pid) -> oneshot::Receiver<WaitStatus> {
    let (tx, rx) = oneshot::channel();
    state.watchers.insert(pid, tx);
    rx
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

    /// Reaps until `rx` has a status, for up to 10 s.
    async fn status_of(reaper: &Reaper, rx: &mut oneshot::Receiver<WaitStatus>) -> WaitStatus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            reaper.reap_all();
            if let Ok(status) = rx.try_recv() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "child never reaped");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn spawned_children_get_their_status() {
        let _serial = one_reaper_at_a_time().await;
        let reaper = Reaper::default();
        let (child, mut rx) = reaper
            .spawn(std::process::Command::new("sh").args(["-c", "exit 7"]))
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let status = status_of(&reaper, &mut rx).await;
        assert_eq!(status, WaitStatus::Exited(pid, 7));
        assert_eq!(describe(&status), "exited with status 7");
        drop(child);
    }

    /// An orphan exits and is reaped; the kernel hands its pid to the next service the
    /// supervisor starts. That service must not be told it exited with the orphan's status.
    // The reaper under test is what waits for the child (waitpid(-1)).
    #[allow(clippy::zombie_processes)]
    #[tokio::test(flavor = "current_thread")]
    async fn a_recycled_pid_never_gets_the_old_exit_status() {
        let _serial = one_reaper_at_a_time().await;
        let reaper = Reaper::default();
        let orphan = std::process::Command::new("sh")
            .args(["-c", "kill -SEGV $$"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(orphan.id() as i32);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while reaper.reap_all() == 0 {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // The pid is free now; a new child that got it is registered the way spawn does.
        let mut rx = watch_locked(&mut reaper.lock(), pid);
        reaper.reap_all();
        assert!(
            matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)),
            "the new process is alive; the old status must not be handed to it"
        );
        // Its own exit, when it comes, is what it gets.
        reaper.deliver(pid, WaitStatus::Exited(pid, 0));
        assert_eq!(rx.try_recv(), Ok(WaitStatus::Exited(pid, 0)));
    }
}
