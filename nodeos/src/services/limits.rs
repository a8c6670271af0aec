//! Resource limits a service sets for itself at start. PID 1 hands every child the kernel's
//! open-files limit of 1024 (hard 4096), which about a thousand idle connections exhaust:
//! the master and the agent raise theirs. On a systemd host the unit's `LimitNOFILE=` does
//! the same before the process starts.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Open files the master and the agent want: the master's two connection pools full (see
/// `master::connlimit`) with plenty of room for its store, logs and outputs.
pub const OPEN_FILES: u64 = 65_536;

/// The (soft, hard) limits to try in turn, given the current ones: `wanted` for both (needs
/// CAP_SYS_RESOURCE when above the hard limit), else as much as the hard limit allows.
/// Empty when the soft limit is high enough already: never lowers.
fn open_files_targets(current: (u64, u64), wanted: u64) -> Vec<(u64, u64)> {
    let (soft, hard) = current;
    if soft >= wanted {
        return Vec::new();
    }
    let mut targets = Vec::new();
    if hard < wanted {
        targets.push((wanted, wanted));
    }
    if hard > soft {
        targets.push((wanted.min(hard), hard));
    }
    targets
}

/// Raises this process's open-files limit towards `wanted`; returns the soft limit now in
/// force. A failure is logged: the service still runs, with fewer connections.
pub fn raise_open_files(wanted: u64) -> u64 {
    let current = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(current) => current,
        Err(e) => {
            log::warn!("cannot read the open-files limit: {e}");
            return 0;
        }
    };
    let mut last_error = None;
    for (soft, hard) in open_files_targets(current, wanted) {
        match setrlimit(Resource::RLIMIT_NOFILE, soft, hard) {
            Ok(()) => return soft,
            Err(e) => last_error = Some(e),
        }
    }
    if let Some(e) = last_error {
        log::warn!(
            "cannot raise the open-files limit from {} towards {wanted}: {e}; fewer connections fit",
            current.0
        );
    }
    current.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        // PID 1's children start at the kernel's 1024/4096.
        assert_eq!(
            open_files_targets((1024, 4096), OPEN_FILES),
            [(OPEN_FILES, OPEN_FILES), (4096, 4096)]
        );
        // systemd's LimitNOFILE=1048576 is more already: kept.
        assert_eq!(open_files_targets((1 << 20, 1 << 20), OPEN_FILES), []);
        assert_eq!(
            open_files_targets((1024, 1 << 20), OPEN_FILES),
            [(OPEN_FILES, 1 << 20)]
        );
        assert_eq!(
            open_files_targets((1024, 1024), OPEN_FILES),
            [(OPEN_FILES, OPEN_FILES)]
        );
    }

    #[test]
    fn a_service_starting_at_pid_1s_limit_gets_what_it_asks_for() {
        let original = getrlimit(Resource::RLIMIT_NOFILE).expect("limit");
        // What PID 1 hands down (lowering the soft limit is always allowed).
        setrlimit(Resource::RLIMIT_NOFILE, 1024.min(original.1), original.1).expect("lower");
        let now = raise_open_files(OPEN_FILES);
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("limit");
        let _ = setrlimit(
            Resource::RLIMIT_NOFILE,
            original.0.max(soft),
            original.1.max(hard),
        );
        assert_eq!(soft, now);
        // All the way when the hard limit could be raised, else up to the hard limit.
        assert!(
            soft == OPEN_FILES || soft == OPEN_FILES.min(original.1),
            "{soft} (hard was {})",
            original.1
        );
        assert!(soft > 1024, "{soft}");
    }
}
