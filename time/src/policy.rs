//! The rules a node keeps its clock by, as pure functions of what it knows: no clock is
//! read or set here (`nodeos::clock` does that), so every rule has a table test.
//!
//! - At boot the clock never stays before the build's own time, nor before the time the
//!   node last saved on its data partition ([`boot_target`]).
//! - Servers are asked in a fixed order ([`sources`]): the `cloudos.ntp` setting, then the
//!   DHCP lease's (option 42), then the master.
//! - An offset of [`STEP_THRESHOLD`] or more steps the clock; a smaller one is slewed
//!   ([`adjustment`]), so time never jumps for a few milliseconds.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::NTP_PORT;

/// From this offset on the clock is stepped, below it slewed. Half a second: the kernel
/// slews at most 500 ppm, so larger offsets would take more than a quarter of an hour.
pub const STEP_THRESHOLD: Duration = Duration::from_millis(500);
/// A node whose clock is this far from its master's says so (status, log, its record on
/// the master).
pub const DRIFT_WARNING: Duration = Duration::from_secs(5);
/// How often the time is written to the data partition.
pub const SAVE_EVERY: Duration = Duration::from_secs(600);
/// Polls while no server has answered yet: quick, so a node that boots with a wrong clock
/// is right soon after its network is.
pub const FIRST_POLL: Duration = Duration::from_secs(2);
/// Polls once synchronised: from a minute, doubling up to about 17 minutes.
pub const MIN_POLL: Duration = Duration::from_secs(64);
pub const MAX_POLL: Duration = Duration::from_secs(1024);

/// Why the clock was set at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootReason {
    /// It was before the build's own time.
    BuildTime,
    /// It was before the time saved on the data partition at the last run.
    SavedTime,
}

impl fmt::Display for BootReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootReason::BuildTime => "the build's time",
            BootReason::SavedTime => "the time saved at the last run",
        })
    }
}

/// Where to set the clock at boot, if anywhere: the later of the build's time and the
/// saved time, when the clock is before it. A clock ahead of both is left alone (it may be
/// right; the SNTP client and the master tell).
pub fn boot_target(
    now: SystemTime,
    build: SystemTime,
    saved: Option<SystemTime>,
) -> Option<(SystemTime, BootReason)> {
    let (floor, reason) = match saved {
        Some(saved) if saved > build => (saved, BootReason::SavedTime),
        _ => (build, BootReason::BuildTime),
    };
    (now < floor).then_some((floor, reason))
}

/// The saved time's file format: Unix seconds and a newline.
pub fn format_saved(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!("{secs}\n")
}

/// The saved time, or `None` for a file that is not one (a torn or foreign file must not
/// set the clock).
pub fn parse_saved(text: &str) -> Option<SystemTime> {
    let secs: u64 = text.trim().parse().ok()?;
    // Nothing before 2000 or after 2200 was ever saved by a working node.
    (946_684_800..7_258_118_400)
        .contains(&secs)
        .then(|| UNIX_EPOCH + Duration::from_secs(secs))
}

/// Where a server came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SourceKind {
    /// `cloudos.ntp=`.
    Setting,
    /// Option 42 of a DHCP lease.
    Dhcp,
    /// The node's master, which serves time by default.
    Master,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::Setting => "cloudos.ntp",
            SourceKind::Dhcp => "dhcp",
            SourceKind::Master => "master",
        })
    }
}

/// One server to ask, as `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub server: String,
    pub kind: SourceKind,
}

/// The servers to ask, in order: the setting's, the DHCP lease's, then the master's (its
/// API address's host, on the SNTP port). A server named twice is asked once, under its
/// first source.
pub fn sources(setting: &[String], dhcp: &[Ipv4Addr], master_api: Option<&str>) -> Vec<Source> {
    let mut out: Vec<Source> = Vec::new();
    let mut add = |server: String, kind: SourceKind| {
        if !out.iter().any(|s| s.server == server) {
            out.push(Source { server, kind });
        }
    };
    for s in setting {
        add(with_port(s), SourceKind::Setting);
    }
    for ip in dhcp {
        add(format!("{ip}:{NTP_PORT}"), SourceKind::Dhcp);
    }
    if let Some(host) = master_api.and_then(host_of) {
        add(with_port(&host), SourceKind::Master);
    }
    out
}

/// `host` alone, from `host:port`, `[v6]:port`, `[v6]` or a bare address or name.
pub fn host_of(addr: &str) -> Option<String> {
    let addr = addr.trim();
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split_once(']').map(|(h, _)| format!("[{h}]"));
    }
    if addr.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some(format!("[{addr}]"));
    }
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    (!host.is_empty()).then(|| host.to_owned())
}

/// `server` with the SNTP port when it names none.
fn with_port(server: &str) -> String {
    let s = server.trim();
    let has_port = match s.strip_prefix('[') {
        Some(rest) => rest.contains("]:"),
        None => s.parse::<std::net::Ipv6Addr>().is_err() && s.contains(':'),
    };
    match (has_port, s.parse::<std::net::Ipv6Addr>().is_ok()) {
        (true, _) => s.to_owned(),
        (false, true) => format!("[{s}]:{NTP_PORT}"),
        (false, false) => format!("{s}:{NTP_PORT}"),
    }
}

/// What to do about a measured offset (positive: the clock is behind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adjustment {
    /// Set the clock to now + offset at once.
    Step(i64),
    /// Let the kernel run the clock slightly fast or slow until the offset is gone.
    Slew(i64),
}

pub fn adjustment(offset_nanos: i64) -> Adjustment {
    if offset_nanos.unsigned_abs() >= STEP_THRESHOLD.as_nanos() as u64 {
        Adjustment::Step(offset_nanos)
    } else {
        Adjustment::Slew(offset_nanos)
    }
}

/// Whether an offset from the master is worth a warning.
pub fn drifting(offset_nanos: i64) -> bool {
    offset_nanos.unsigned_abs() > DRIFT_WARNING.as_nanos() as u64
}

/// The wait before the next poll: [`FIRST_POLL`] until a server answered, then from
/// [`MIN_POLL`] doubling with each good answer in a row up to [`MAX_POLL`].
pub fn next_poll(good_in_a_row: u32) -> Duration {
    if good_in_a_row == 0 {
        return FIRST_POLL;
    }
    let doublings = (good_in_a_row - 1).min(4);
    (MIN_POLL * 2u32.pow(doublings)).min(MAX_POLL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn the_boot_floor_is_the_later_of_build_and_saved_time() {
        let build = t(1_796_000_000);
        let cases = [
            // (now, saved, expected)
            (
                "1970 with nothing saved",
                t(0),
                None,
                Some((build, BootReason::BuildTime)),
            ),
            (
                "2001, saved earlier than the build",
                t(978_307_200),
                Some(t(1_700_000_000)),
                Some((build, BootReason::BuildTime)),
            ),
            (
                "1970, saved after the build",
                t(0),
                Some(t(1_797_000_000)),
                Some((t(1_797_000_000), BootReason::SavedTime)),
            ),
            (
                "between build and saved",
                t(1_796_500_000),
                Some(t(1_797_000_000)),
                Some((t(1_797_000_000), BootReason::SavedTime)),
            ),
            (
                "after both: left alone",
                t(1_798_000_000),
                Some(t(1_797_000_000)),
                None,
            ),
            (
                "2040: left alone (the master tells)",
                t(2_208_988_800),
                None,
                None,
            ),
        ];
        for (what, now, saved, expected) in cases {
            assert_eq!(boot_target(now, build, saved), expected, "{what}");
        }
    }

    #[test]
    fn saved_time_round_trips_and_garbage_sets_nothing() {
        let now = t(1_796_531_282);
        assert_eq!(parse_saved(&format_saved(now)), Some(now));
        for bad in [
            "",
            "\n",
            "yesterday",
            "-5",
            "12",
            "99999999999999999999",
            "1796531282x",
        ] {
            assert_eq!(parse_saved(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn servers_are_asked_setting_first_then_dhcp_then_the_master() {
        let got = sources(
            &[
                "pool.example.org".into(),
                "10.0.0.9:1123".into(),
                "fd00::7".into(),
            ],
            &[Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 9)],
            Some("10.0.0.2:9443"),
        );
        let want = [
            ("pool.example.org:123", SourceKind::Setting),
            ("10.0.0.9:1123", SourceKind::Setting),
            ("[fd00::7]:123", SourceKind::Setting),
            ("10.0.0.1:123", SourceKind::Dhcp),
            ("10.0.0.9:123", SourceKind::Dhcp),
            ("10.0.0.2:123", SourceKind::Master),
        ];
        let got: Vec<(&str, SourceKind)> =
            got.iter().map(|s| (s.server.as_str(), s.kind)).collect();
        assert_eq!(got, want);
        // The same server from two places is asked once, under the first.
        let got = sources(&[], &[Ipv4Addr::new(10, 0, 0, 2)], Some("10.0.0.2:9443"));
        assert_eq!(
            got,
            [Source {
                server: "10.0.0.2:123".into(),
                kind: SourceKind::Dhcp
            }]
        );
        // By default (nothing set, no option 42): the master only; an IPv6 master too.
        let got = sources(&[], &[], Some("[fd00::2]:9443"));
        assert_eq!(
            got,
            [Source {
                server: "[fd00::2]:123".into(),
                kind: SourceKind::Master
            }]
        );
        assert_eq!(
            sources(&[], &[], Some("master-1:9443"))[0].server,
            "master-1:123"
        );
        assert!(sources(&[], &[], None).is_empty());
    }

    #[test]
    fn big_offsets_step_small_ones_slew() {
        assert_eq!(adjustment(3_000_000), Adjustment::Slew(3_000_000));
        assert_eq!(adjustment(-499_999_999), Adjustment::Slew(-499_999_999));
        assert_eq!(adjustment(500_000_000), Adjustment::Step(500_000_000));
        assert_eq!(
            adjustment(-800_000_000_000_000_000),
            Adjustment::Step(-800_000_000_000_000_000)
        );
        assert!(!drifting(5_000_000_000));
        assert!(drifting(-5_000_000_001));
    }

    #[test]
    fn polls_are_quick_until_synchronised_then_back_off() {
        let waits: Vec<u64> = (0..8).map(|n| next_poll(n).as_secs()).collect();
        assert_eq!(waits, [2, 64, 128, 256, 512, 1024, 1024, 1024]);
    }
}
