//! PID 1's step at boot, once the data partition is mounted: a clock before the build's
//! time or the saved time is set to the later of the two (`policy::boot_target`), and the
//! hardware clock follows. A clock that is ahead is left to SNTP and the master.

use std::path::Path;
use std::time::SystemTime;

use cloudos_time::policy;

use super::{saved, show, system};

/// Sets the clock forward when it is behind the floor; logs what it did.
pub fn at_boot() {
    let now = SystemTime::now();
    let saved = saved::load(Path::new(saved::SAVED_FILE));
    let Some((target, reason)) = policy::boot_target(now, super::build_time(), saved) else {
        return;
    };
    match system::set(target) {
        Ok(()) => {
            log::info!(
                "clock: {} was before {reason}; set to {}",
                show(now),
                show(target)
            );
            match system::write_rtc() {
                Ok(_) => {}
                Err(e) => log::warn!("clock: {e}"),
            }
        }
        Err(e) => log::warn!(
            "clock: {} is before {reason} ({}): {e}",
            show(now),
            show(target)
        ),
    }
}
