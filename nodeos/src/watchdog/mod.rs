//! The hardware watchdog, kept by PID 1: armed once the drivers are loaded (with the
//! `cloudos.watchdog` timeout), fed from PID 1's own event loop, stopped on an orderly
//! shutdown, and described in `status`.
//!
//! Where the feeding happens is the point of it (docs/design.md, the watchdog decision):
//! a task on PID 1's single-threaded runtime, the thread that also reaps, answers the
//! control socket, hears the shutdown signals and runs the supervisor. If that thread is
//! stuck, feeding stops and the machine resets; a thread of its own would go on feeding
//! a PID 1 that no longer does anything. (An async deadlock that leaves the runtime
//! turning is not caught: the reaper and the status socket still work then.)
//!
//! Owns the device while armed and the `cloudos.fault=hang:pid1:N` hook that tests it;
//! must not decide anything about the shutdown itself (`init::shutdown` calls
//! [`disarm`]).

pub mod device;

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::settings::Watchdog;
use device::Device;

/// What `status` says about the watchdog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchdogStatus {
    pub armed: bool,
    /// `/dev/watchdog0`, when the machine has one.
    pub device: Option<String>,
    /// What the driver calls itself (`i6300ESB timer`).
    pub identity: Option<String>,
    /// The timeout the device runs with.
    pub timeout_secs: Option<u32>,
    /// Why it is not armed, or what differs from the setting.
    pub note: Option<String>,
}

impl WatchdogStatus {
    /// One line of `nodeos status`.
    pub fn line(&self) -> String {
        let device = match (&self.device, &self.identity) {
            (Some(d), Some(i)) if !i.is_empty() => format!("{d} ({i})"),
            (Some(d), _) => d.clone(),
            (None, _) => "none".into(),
        };
        let mut line = match (self.armed, self.timeout_secs) {
            (true, Some(t)) => format!("watchdog armed: {device}, timeout {t}s"),
            _ => format!("watchdog not armed: {device}"),
        };
        if let Some(note) = &self.note {
            line.push_str(&format!(" ({note})"));
        }
        line
    }

    fn not_armed(device: Option<String>, note: &str) -> WatchdogStatus {
        WatchdogStatus {
            armed: false,
            device,
            identity: None,
            timeout_secs: None,
            note: Some(note.into()),
        }
    }
}

struct State {
    device: Option<Device>,
    status: WatchdogStatus,
}

/// PID 1's one watchdog; `None` until [`arm`] ran (and on a host, where systemd keeps it).
static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Feeds at a third of the timeout: two feeds can be late before the machine resets.
pub fn feed_interval(timeout_secs: u32) -> Duration {
    Duration::from_millis(u64::from(timeout_secs.max(1)) * 1000 / 3)
}

/// Arms the machine's watchdog as the setting says and returns how often to feed it, or
/// `None` when nothing is armed (off, no device, or it failed: logged).
pub fn arm(setting: Watchdog) -> Option<Duration> {
    let (device, status) = open(setting);
    let interval = device.as_ref().and(status.timeout_secs).map(feed_interval);
    match (&device, interval) {
        (Some(_), Some(every)) => {
            log::info!("{}; fed every {:.1}s", status.line(), every.as_secs_f64())
        }
        _ => log::info!("{}", status.line()),
    }
    if let Ok(mut state) = STATE.lock() {
        *state = Some(State { device, status });
    }
    interval
}

fn open(setting: Watchdog) -> (Option<Device>, WatchdogStatus) {
    let found = Device::find();
    let name = found.as_ref().map(|p| p.display().to_string());
    let Watchdog::Seconds(secs) = setting else {
        return (
            None,
            WatchdogStatus::not_armed(name, "cloudos.watchdog=off"),
        );
    };
    let Some(path) = found else {
        return (None, WatchdogStatus::not_armed(None, "no watchdog device"));
    };
    let device = match Device::open(&path) {
        Ok(device) => device,
        Err(e) => {
            log::warn!("{e}");
            return (None, WatchdogStatus::not_armed(name, "cannot open it"));
        }
    };
    let timeout = match device.set_timeout(secs) {
        Ok(timeout) => timeout,
        // Open and so running, with a timeout we do not know: stop it rather than guess.
        Err(e) => {
            log::warn!("{e}; stopping it");
            if let Err((_, e)) = device.stop() {
                log::error!(
                    "cannot stop {} either ({e}); the machine will reset",
                    path.display()
                );
            }
            return (
                None,
                WatchdogStatus::not_armed(name, "its timeout is unknown"),
            );
        }
    };
    let note = match (timeout.refused, timeout.accepted == timeout.asked) {
        (true, _) => Some(format!(
            "it refused cloudos.watchdog={}s and keeps its own",
            timeout.asked
        )),
        (false, false) => Some(format!("cloudos.watchdog={}s, rounded", timeout.asked)),
        (false, true) => None,
    };
    let status = WatchdogStatus {
        armed: true,
        device: name,
        identity: Some(device.identity.clone()),
        timeout_secs: Some(timeout.accepted.max(1)),
        note,
    };
    (Some(device), status)
}

/// Feeds the armed watchdog every `interval` until [`disarm`]. Runs on PID 1's runtime
/// (see the module comment): when that thread is stuck, nothing feeds.
pub async fn feed(interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        let Ok(state) = STATE.lock() else { return };
        let Some(device) = state.as_ref().and_then(|s| s.device.as_ref()) else {
            return;
        };
        match device.feed() {
            Ok(()) => failing = false,
            // Said once per run of failures: the log must not fill up every few seconds.
            Err(e) if !failing => {
                failing = true;
                log::error!("cannot feed {}: {e}", device.path().display());
            }
            Err(_) => {}
        }
    }
}

/// Stops the watchdog for an orderly shutdown, so that syncing and unmounting, however
/// long they take, do not end in a reset. One that cannot be stopped is fed on.
pub fn disarm() {
    let Ok(mut guard) = STATE.lock() else { return };
    let Some(state) = guard.as_mut() else { return };
    let Some(device) = state.device.take() else {
        return;
    };
    match device.stop() {
        Ok(()) => {
            state.status.armed = false;
            state.status.note = Some("stopped for the shutdown".into());
            log::info!("stopped for the shutdown");
        }
        Err((device, e)) => {
            log::warn!(
                "{} cannot be stopped ({e}); feeding it until the end",
                device.path().display()
            );
            state.device = Some(device);
        }
    }
}

/// What `status` shows; `None` where PID 1 keeps no watchdog (a host, a tool).
pub fn status() -> Option<WatchdogStatus> {
    STATE
        .lock()
        .ok()?
        .as_ref()
        .map(|state| state.status.clone())
}

/// Said when PID 1 stops for good (init's last resort): nothing feeds the watchdog any
/// more, so an armed one resets the machine, which is what a hung PID 1 should get.
pub fn note_stopping() {
    if let Some(WatchdogStatus {
        armed: true,
        timeout_secs: Some(t),
        ..
    }) = status()
    {
        log::error!("the hardware watchdog is no longer fed: it resets the machine within {t}s");
    }
}

/// `cloudos.fault=hang:pid1:N`: `after` the node is ready, PID 1's event loop blocks for
/// good, as a PID 1 stuck in a system call or a loop would: no reaping, no status, no
/// signals, no feeding. With a watchdog armed the machine resets.
pub async fn hang_on_purpose(after: Duration) {
    tokio::time::sleep(after).await;
    log::error!(
        "hanging on purpose (cloudos.fault=hang:pid1): PID 1 stops reaping, answering and \
         feeding the watchdog"
    );
    loop {
        // Blocking the runtime's only thread is the point.
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fed_at_a_third_of_the_timeout() {
        assert_eq!(feed_interval(60), Duration::from_secs(20));
        assert_eq!(feed_interval(1), Duration::from_millis(333));
        assert_eq!(feed_interval(0), Duration::from_millis(333));
        assert_eq!(feed_interval(15), Duration::from_secs(5));
    }

    #[test]
    fn status_lines_say_armed_device_and_timeout() {
        let armed = WatchdogStatus {
            armed: true,
            device: Some("/dev/watchdog0".into()),
            identity: Some("i6300ESB timer".into()),
            timeout_secs: Some(60),
            note: None,
        };
        assert_eq!(
            armed.line(),
            "watchdog armed: /dev/watchdog0 (i6300ESB timer), timeout 60s"
        );
        let off = WatchdogStatus::not_armed(Some("/dev/watchdog0".into()), "cloudos.watchdog=off");
        assert_eq!(
            off.line(),
            "watchdog not armed: /dev/watchdog0 (cloudos.watchdog=off)"
        );
        let none = WatchdogStatus::not_armed(None, "no watchdog device");
        assert_eq!(none.line(), "watchdog not armed: none (no watchdog device)");
    }

    #[test]
    fn off_arms_nothing_even_with_a_device() {
        let (device, status) = open(Watchdog::Off);
        assert!(device.is_none());
        assert!(!status.armed);
        assert_eq!(status.note.as_deref(), Some("cloudos.watchdog=off"));
    }
}
