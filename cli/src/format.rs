//! How times and fractions are shown to people: ages like `kubectl`, CPU use as a
//! percentage. Sizes and CPU quantities are `cloudos_cluster::units`, shared with the rest.

use time::OffsetDateTime;

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
/// What uses a volume or a secret, in a table's cell: `-` for nothing.
pub fn users(users: &[String]) -> String {
    if users.is_empty() {
        "-".to_owned()
    } else {
        users.join(", ")
    }
}

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
