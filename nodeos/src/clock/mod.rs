//! The node's clock: set at boot when it is before the build's time or the time saved on
//! the data partition (`boot`), kept right by the `clock` service over SNTP (`service`),
//! saved to the data partition (`saved`), and published for `nodeos status` (`state`).
//! The system calls that change the clock and the hardware clock are in `system`; the
//! rules they follow are `cloudos_time::policy`'s.
//!
//! Owns the system clock and `/dev/rtc0`. It must not touch the network configuration
//! (the `net` service publishes the DHCP lease's servers) or the agent's identity (read
//! through `cloudos_agent`'s own reader).

pub mod boot;
pub mod first_contact;
pub mod saved;
pub mod service;
pub mod state;
pub mod system;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The build's time (see `build.rs`): the clock never stays before it.
pub fn build_time() -> SystemTime {
    let secs: u64 = env!("CLOUDOS_BUILD_TIME").parse().unwrap_or(0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A time for logs and status: RFC 3339 in UTC, to the second.
pub fn show(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_else(|e| -(e.duration().as_secs() as i64));
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{secs}"))
}

/// A signed offset in nanoseconds as seconds for people: `+0.004s`, `-788000000.2s`.
pub fn show_offset(nanos: i64) -> String {
    let secs = nanos as f64 / 1e9;
    if secs.abs() >= 10.0 {
        format!("{secs:+.1}s")
    } else {
        format!("{secs:+.3}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_time_is_a_real_time() {
        // Never the images' SOURCE_DATE_EPOCH=0: 2026-12-01 at the earliest.
        assert!(build_time() >= UNIX_EPOCH + Duration::from_secs(1_796_083_200));
        assert!(build_time() <= SystemTime::now() + Duration::from_secs(86_400));
    }

    #[test]
    fn times_and_offsets_read_well() {
        assert_eq!(
            show(UNIX_EPOCH + Duration::from_secs(978_307_200)),
            "2001-01-01T00:00:00Z"
        );
        assert_eq!(show_offset(4_000_000), "+0.004s");
        assert_eq!(show_offset(-788_000_000_200_000_000), "-788000000.2s");
    }
}
