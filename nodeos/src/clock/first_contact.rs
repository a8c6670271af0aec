//! The agent's [`SetClock`] hook under PID 1: the master's time, read at first contact over
//! a connection checked against the token's CA pin (`cloudos_agent`'s `clock` module),
//! sets the clock when it is off by a step or more. Never to a time before the build's:
//! a stolen serving key of the cluster, long expired, must not take the node back to the
//! days it was valid.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cloudos_agent::SetClock;
use cloudos_time::policy;

use super::{saved, show, show_offset, system};

pub fn hook() -> SetClock {
    Arc::new(|offset: time::Duration| {
        let nanos = i64::try_from(offset.whole_nanoseconds()).unwrap_or(i64::MAX);
        if nanos.unsigned_abs() < policy::STEP_THRESHOLD.as_nanos() as u64 {
            // Close enough: the clock service slews the rest.
            return;
        }
        let now = SystemTime::now();
        let by = Duration::from_nanos(nanos.unsigned_abs());
        let Some(target) = (if nanos >= 0 {
            now.checked_add(by)
        } else {
            now.checked_sub(by)
        }) else {
            return;
        };
        if target < super::build_time() {
            log::warn!(
                "clock: the master says it is {}, before this build's time {}; not taking it",
                show(target),
                show(super::build_time())
            );
            return;
        }
        match system::set(target) {
            Ok(()) => {
                log::info!(
                    "clock: set to the master's time {} ({}), read over TLS checked against the CA pin",
                    show(target),
                    show_offset(nanos)
                );
                if let Err(e) = system::write_rtc() {
                    log::warn!("clock: {e}");
                }
                saved::save_now();
            }
            Err(e) => log::warn!("clock: cannot take the master's time: {e}"),
        }
    })
}
