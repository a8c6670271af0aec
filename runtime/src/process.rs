//! Process identity and signalling across processes that are not each
//! other's children: /proc start times against pid reuse, pidfds to wait for
//! a process that is not our child, and queued signals that carry a value.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::state::ShimRecord;

/// The real-time signal the runtime queues to a shim to ask it to signal its
/// container; the payload (`si_value`) is the signal to send. A raw number,
/// not SIGRTMIN+n: glibc and musl reserve different numbers below SIGRTMIN,
/// and the agent (musl) and a test shim (glibc) must agree.
pub const KILL_REQUEST_SIGNAL: i32 = 40;

/// `(state, start time)` from `/proc/<pid>/stat`.
pub fn stat(pid: i32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 22 overall is the start time; `state` was field 3.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

pub fn record_of(pid: i32) -> Option<ShimRecord> {
    stat(pid).map(|(_, start_time)| ShimRecord { pid, start_time })
}

/// The recorded process still runs (a zombie does not count).
pub fn is_alive(rec: &ShimRecord) -> bool {
    matches!(stat(rec.pid), Some((state, start)) if start == rec.start_time && state != 'Z' && state != 'X')
}

/// The recorded process exists, alive or as a zombie.
pub fn exists(rec: &ShimRecord) -> bool {
    matches!(stat(rec.pid), Some((_, start)) if start == rec.start_time)
}

/// Reaps the process if it is our child and has exited. A shim started by
/// this process stays our child; after an agent restart it is someone
/// else's (PID 1 reaps it), and then this does nothing.
pub fn reap_if_child(rec: &ShimRecord) {
    if matches!(stat(rec.pid), Some(('Z', start)) if start == rec.start_time) {
        // SAFETY: waitpid on one pid with WNOHANG has no memory effects; ECHILD
        // (not our child) is the expected failure and is ignored.
        unsafe {
            libc::waitpid(rec.pid, std::ptr::null_mut(), libc::WNOHANG);
        }
    }
}

/// A pidfd for the recorded process, checked against the start time after
/// opening, so it cannot refer to a recycled pid.
pub fn pidfd(rec: &ShimRecord) -> Option<OwnedFd> {
    // SAFETY: plain syscall; the result is a new fd we own, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, rec.pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd was just returned by pidfd_open and nobody else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if exists(rec) {
        Some(fd)
    } else {
        None
    }
}

/// Waits until the recorded process has exited (or is gone). `false` on timeout.
pub fn wait_exit(rec: &ShimRecord, timeout: Option<Duration>) -> bool {
    let Some(fd) = pidfd(rec) else {
        return true;
    };
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return !is_alive(rec);
                }
                left.as_millis().min(i32::MAX as u128) as i32
            }
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd that lives across the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms.max(-1)) };
        if n > 0 {
            return true;
        }
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // poll on a pidfd cannot really fail; fall back to a slow check.
            std::thread::sleep(Duration::from_millis(10));
            if !is_alive(rec) {
                return true;
            }
        }
    }
}

/// The kernel's siginfo for an SI_QUEUE signal on 64-bit Linux (x86_64 and
/// aarch64, the two targets): the libc crate keeps siginfo_t's union private.
#[repr(C)]
struct QueuedSigInfo {
    signo: i32,
    errno: i32,
    code: i32,
    _pad: i32,
    pid: i32,
    uid: u32,
    value: u64,
    _rest: [u8; 96],
}

const _: () = assert!(std::mem::size_of::<QueuedSigInfo>() == 128);

/// Queues `signal` carrying `value` to the recorded process through a pidfd
/// (no pid-reuse race). `Ok(false)` when the process is already gone.
pub fn queue_signal(rec: &ShimRecord, signal: i32, value: i32) -> std::io::Result<bool> {
    let Some(fd) = pidfd(rec) else {
        return Ok(false);
    };
    let info = QueuedSigInfo {
        signo: signal,
        errno: 0,
        code: libc::SI_QUEUE,
        _pad: 0,
        pid: std::process::id() as i32,
        // SAFETY: getuid cannot fail.
        uid: unsafe { libc::getuid() },
        value: value as u32 as u64,
        _rest: [0; 96],
    };
    // SAFETY: info is a correctly sized siginfo that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            &info as *const QueuedSigInfo,
            0,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// SIGKILL through a pidfd. Already gone is fine.
pub fn kill_hard(rec: &ShimRecord) {
    if let Some(fd) = pidfd(rec) {
        // SAFETY: plain syscall on an fd we own; a NULL info is allowed.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<u8>(),
                0,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive() {
        let me = record_of(std::process::id() as i32).unwrap();
        assert!(is_alive(&me));
        assert!(!is_alive(&ShimRecord {
            start_time: me.start_time + 1,
            ..me
        }));
    }

    #[test]
    fn wait_and_reap_a_child() {
        // Reaped through reap_if_child below, which is what is under test.
        #[allow(clippy::zombie_processes)]
        let child = std::process::Command::new("sleep")
            .arg("0.05")
            .spawn()
            .unwrap();
        let rec = record_of(child.id() as i32).unwrap();
        assert!(is_alive(&rec));
        assert!(wait_exit(&rec, Some(Duration::from_secs(5))));
        reap_if_child(&rec);
        assert!(!exists(&rec));
        assert!(!queue_signal(&rec, KILL_REQUEST_SIGNAL, 9).unwrap());
    }

    #[test]
    fn wait_times_out() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let rec = record_of(child.id() as i32).unwrap();
        assert!(!wait_exit(&rec, Some(Duration::from_millis(50))));
        kill_hard(&rec);
        child.wait().unwrap();
    }
}
