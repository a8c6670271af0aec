//! The time saved on the data partition, for machines without a hardware clock: written
//! by the `clock` service every ten minutes and by PID 1 at an orderly shutdown, read by
//! PID 1 at boot. Written atomically, so a power cut leaves the old time or the new one.

use std::path::Path;
use std::time::SystemTime;

use cloudos_time::policy;

/// Under the data partition (a tmpfs on a live boot without one, where it is lost with
/// the rest of the state).
pub const SAVED_FILE: &str = "/var/lib/cloudos/clock/saved-time";

/// The saved time, if there is a readable one.
pub fn load(path: &Path) -> Option<SystemTime> {
    policy::parse_saved(&std::fs::read_to_string(path).ok()?)
}

/// Saves `time`. A later time already saved is replaced too: the clock only goes back when
/// a server or the master corrected a clock that was ahead, and a floor kept from then
/// would push every later boot ahead again.
pub fn save(path: &Path, time: SystemTime) -> std::io::Result<()> {
    cloudos_cluster::files::write_atomic(path, policy::format_saved(time).as_bytes())
}

/// Saves the time now; logs a failure (it only costs a better floor at the next boot).
pub fn save_now() {
    if let Err(e) = save(Path::new(SAVED_FILE), SystemTime::now()) {
        log::warn!("clock: cannot save the time to {SAVED_FILE}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn saves_and_loads_and_garbage_sets_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clock/saved-time");
        assert_eq!(load(&path), None);
        let t = |s| UNIX_EPOCH + Duration::from_secs(s);
        save(&path, t(1_796_531_282)).unwrap();
        assert_eq!(load(&path), Some(t(1_796_531_282)));
        save(&path, t(1_796_531_882)).unwrap();
        assert_eq!(load(&path), Some(t(1_796_531_882)));
        // A damaged file sets nothing.
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(load(&path), None);
    }
}
