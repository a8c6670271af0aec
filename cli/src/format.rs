//! How numbers and times are shown to people: sizes in binary units, ages like `kubectl`,
//! CPU as a percentage.

use time::OffsetDateTime;

/// `512Mi`, `1.5Gi`, `800`: bytes in binary units, one decimal below 10.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["", "Ki", "Mi", "Gi", "Ti", "Pi"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}")
    } else if value < 10.0 {
        format!("{value:.1}{}", UNITS[unit])
    } else {
        format!("{value:.0}{}", UNITS[unit])
    }
}

/// `45s`, `12m`, `5h`, `3d`: the largest whole unit of the time since `then`.
pub fn age(then: OffsetDateTime, now: OffsetDateTime) -> String {
    duration_secs((now - then).whole_seconds().max(0) as u64)
}

/// `45s`, `12m`, `5h`, `3d` for a number of seconds.
pub fn duration_secs(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `37%` of a 0.0–1.0 fraction.
pub fn percent(fraction: f64) -> String {
    format!("{:.0}%", (fraction * 100.0).clamp(0.0, 100.0))
}

/// RFC 3339 to the second, or `-` when it cannot be formatted.
pub fn timestamp(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn sizes() {
        let cases = [
            (0, "0"),
            (1000, "1000"),
            (1536, "1.5Ki"),
            (512 << 20, "512Mi"),
            (3 << 30, "3.0Gi"),
            (40 << 40, "40Ti"),
        ];
        for (n, want) in cases {
            assert_eq!(bytes(n), want, "{n}");
        }
    }

    #[test]
    fn ages() {
        let now = datetime!(2026-03-01 10:00 UTC);
        let cases = [
            (datetime!(2026-03-01 09:59:15 UTC), "45s"),
            (datetime!(2026-03-01 09:48 UTC), "12m"),
            (datetime!(2026-03-01 05:00 UTC), "5h"),
            (datetime!(2026-02-26 10:00 UTC), "3d"),
            (datetime!(2026-03-01 10:05 UTC), "0s"),
        ];
        for (then, want) in cases {
            assert_eq!(age(then, now), want);
        }
    }

    #[test]
    fn timestamps_to_the_second() {
        assert_eq!(
            timestamp(datetime!(2026-03-01 10:00:05.123456 UTC)),
            "2026-03-01T10:00:05Z"
        );
    }

    #[test]
    fn percents() {
        assert_eq!(percent(0.374), "37%");
        assert_eq!(percent(1.7), "100%");
    }
}
