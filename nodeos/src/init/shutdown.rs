//! Orderly shutdown: stop the services, end every other process, sync,
//! unmount, then reboot(2).

use std::time::{Duration, Instant};

use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::supervisor::{Reaper, Supervisor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownKind {
    Poweroff,
    Reboot,
}

impl std::fmt::Display for ShutdownKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ShutdownKind::Poweroff => "powering off",
            ShutdownKind::Reboot => "rebooting",
        })
    }
}

/// Asks PID 1 for an orderly shutdown of `kind`, by the signal it listens for
/// (`init::wait_for_shutdown_signal`): SIGINT reboots, SIGTERM powers off.
pub fn ask_pid1(kind: ShutdownKind) -> nix::Result<()> {
    let signal = match kind {
        ShutdownKind::Poweroff => Signal::SIGTERM,
        ShutdownKind::Reboot => Signal::SIGINT,
    };
    kill(Pid::from_raw(1), signal)
}

/// How long processes outside the supervisor get after SIGTERM.
const TERM_GRACE: Duration = Duration::from_secs(3);

pub async fn shutdown(kind: ShutdownKind, supervisor: &mut Supervisor, reaper: &Reaper) -> ! {
    log::info!("{kind}; stopping services");
    supervisor.shutdown().await;

    let others = other_processes();
    if others > 0 {
        log::info!("sending SIGTERM to {others} remaining processes");
        let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
        let deadline = Instant::now() + TERM_GRACE;
        while other_processes() > 0 && Instant::now() < deadline {
            reaper.reap_all();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if other_processes() > 0 {
            log::warn!("sending SIGKILL to {} processes", other_processes());
            let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        reaper.reap_all();
    }

    // For machines without a hardware clock: the next boot starts from here.
    crate::clock::saved::save_now();
    // From here PID 1 blocks in sync and umount, which take as long as the disks do.
    crate::watchdog::disarm();
    log::info!("syncing and unmounting file systems");
    nix::unistd::sync();
    super::mounts::unmount_all();
    nix::unistd::sync();
    log::info!("{kind} now");
    let mode = match kind {
        ShutdownKind::Poweroff => RebootMode::RB_POWER_OFF,
        ShutdownKind::Reboot => RebootMode::RB_AUTOBOOT,
    };
    let err = reboot(mode);
    // Only reached if the kernel refused: stay up rather than panic the kernel.
    log::error!("reboot(2) failed: {err:?}; halting here");
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// User-space processes other than PID 1: kernel threads have an empty
/// cmdline, and so do zombies, which we reap anyway.
fn other_processes() -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| *pid != 1)
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty()))
        .count()
}
