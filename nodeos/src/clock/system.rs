//! The system calls that move the clock: step (`clock_settime`), slew (`adjtimex`'s
//! single-shot offset, as `adjtime(3)`), and the hardware clock (`RTC_SET_TIME` on
//! `/dev/rtc0`) where there is one. Each returns an error to log; none panics.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::time::TimeSpec;
use nix::time::{clock_settime, ClockId};

/// The hardware clock, when the machine has one (a Raspberry Pi has none).
const RTC: &str = "/dev/rtc0";
/// `ADJ_OFFSET_SINGLESHOT` (linux/timex.h): slew by `offset` µs at the kernel's fixed
/// 500 ppm, like adjtime(3). Not in libc's glibc module for every target, so here.
const ADJ_OFFSET_SINGLESHOT: libc::c_uint = 0x8001;
/// The most adjtime(3) takes at once (the kernel clamps to ±0.5 s).
const MAX_SLEW_MICROS: i64 = 500_000;

#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    #[error("cannot set the clock: {0}")]
    Set(nix::Error),
    #[error("cannot slew the clock: {0}")]
    Slew(std::io::Error),
    #[error("the time {0:?} is out of range")]
    Range(SystemTime),
    #[error("cannot write the hardware clock {RTC}: {0}")]
    Rtc(String),
}

/// Sets the clock to `time`.
pub fn set(time: SystemTime) -> Result<(), ClockError> {
    let since = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| ClockError::Range(time))?;
    clock_settime(ClockId::CLOCK_REALTIME, TimeSpec::from_duration(since)).map_err(ClockError::Set)
}

/// Steps the clock by `nanos` (positive: forward) from now.
pub fn step(nanos: i64) -> Result<SystemTime, ClockError> {
    let now = SystemTime::now();
    let by = Duration::from_nanos(nanos.unsigned_abs());
    let target = if nanos >= 0 {
        now.checked_add(by)
    } else {
        now.checked_sub(by)
    }
    .ok_or(ClockError::Range(now))?;
    set(target)?;
    Ok(target)
}

/// Slews the clock by `nanos`: the kernel runs it slightly fast or slow until the offset
/// is gone. A new slew replaces the one in progress.
pub fn slew(nanos: i64) -> Result<(), ClockError> {
    let micros = (nanos / 1000).clamp(-MAX_SLEW_MICROS, MAX_SLEW_MICROS);
    // SAFETY: timex is plain data; zeroed is a valid value of it.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    tx.modes = ADJ_OFFSET_SINGLESHOT;
    tx.offset = micros as libc::c_long;
    // SAFETY: a valid pointer to a timex that lives across the call.
    let rc = unsafe { libc::adjtimex(&mut tx) };
    if rc < 0 {
        return Err(ClockError::Slew(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// `struct rtc_time` (linux/rtc.h): the fields of `struct tm`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RtcTime {
    tm_sec: libc::c_int,
    tm_min: libc::c_int,
    tm_hour: libc::c_int,
    tm_mday: libc::c_int,
    tm_mon: libc::c_int,
    tm_year: libc::c_int,
    tm_wday: libc::c_int,
    tm_yday: libc::c_int,
    tm_isdst: libc::c_int,
}

nix::ioctl_write_ptr!(rtc_set_time, b'p', 0x0a, RtcTime);

impl RtcTime {
    /// `time` in UTC, as the hardware clock keeps it (Linux's convention; GRUB's and the
    /// kernel's reading of it agree).
    pub fn from_system(time: SystemTime) -> Option<RtcTime> {
        let secs = time.duration_since(UNIX_EPOCH).ok()?.as_secs();
        let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).ok()?).ok()?;
        Some(RtcTime {
            tm_sec: i32::from(t.second()),
            tm_min: i32::from(t.minute()),
            tm_hour: i32::from(t.hour()),
            tm_mday: i32::from(t.day()),
            tm_mon: i32::from(u8::from(t.month())) - 1,
            tm_year: t.year() - 1900,
            tm_wday: i32::from(t.weekday().number_days_from_sunday()),
            tm_yday: i32::from(t.ordinal()) - 1,
            tm_isdst: 0,
        })
    }
}

/// Writes the system time to the hardware clock; `Ok(false)` when there is none.
pub fn write_rtc() -> Result<bool, ClockError> {
    let file = match std::fs::File::options().write(true).open(RTC) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(ClockError::Rtc(e.to_string())),
    };
    let tm = RtcTime::from_system(SystemTime::now())
        .ok_or_else(|| ClockError::Rtc("the time is out of range".into()))?;
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor of the RTC and a pointer to a live rtc_time.
    unsafe { rtc_set_time(file.as_raw_fd(), &tm) }.map_err(|e| ClockError::Rtc(e.to_string()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hardware_clock_gets_struct_tm_fields() {
        // 2026-12-06T04:29:53Z, a Sunday, day 340 of the year.
        let tm = RtcTime::from_system(UNIX_EPOCH + Duration::from_secs(1_796_531_393)).unwrap();
        assert_eq!(
            (tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec),
            (126, 11, 6, 4, 29, 53)
        );
        assert_eq!((tm.tm_wday, tm.tm_yday), (0, 339));
    }
}
