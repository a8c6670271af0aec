//! Quantities as every CloudOS surface shows them to people: sizes in binary units and CPU
//! in cores or millicores, written the way a workload spec writes them (`64Mi`, `500m`), so
//! what the CLI, the installer, the scheduler's reasons and the API's errors print can be
//! typed back in. Owns only formatting; parsing a spec's quantities stays with the API types
//! (`cloudos_cluster::workload`), whose errors it shapes.

/// Binary units above bytes, each 1024 times the one before.
const UNITS: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

/// `512B`, `64Mi`, `1.5Gi`, `1.0Gi`: bytes in the largest binary unit that holds at least
/// one. An exact multiple prints whole; anything else prints one decimal, rounded down, so
/// the decimal always says "not exactly" (`1.0Gi` is a little over 1 GiB) and a size a byte
/// short of a limit never reads as the limit itself.
pub fn format_bytes(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut unit = 0;
    let mut size: u64 = 1024;
    while unit + 1 < UNITS.len() && bytes / 1024 >= size {
        size *= 1024;
        unit += 1;
    }
    let (whole, rest) = (bytes / size, bytes % size);
    if rest == 0 {
        format!("{whole}{}", UNITS[unit])
    } else {
        // u128: `rest * 10` overflows u64 for sizes in EiB.
        let tenth = (u128::from(rest) * 10 / u128::from(size)) as u64;
        format!("{whole}.{tenth}{}", UNITS[unit])
    }
}

/// `500m`, `1500m`, `2`: millicores, whole cores without the `m` (both read back as the
/// same request by the spec parser).
pub fn format_cpu(millis: u64) -> String {
    if millis % 1000 == 0 {
        format!("{}", millis / 1000)
    } else {
        format!("{millis}m")
    }
}

/// `45s`, `10m`, `1h30m`, `2d`: whole seconds in days, hours, minutes and seconds, the
/// zero parts left out, in the syntax durations are typed in (`--timeout 1h30m`).
pub fn format_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".to_owned();
    }
    let parts = [
        (secs / 86_400, "d"),
        (secs / 3_600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_typed() {
        let cases = [
            (0, "0s"),
            (45, "45s"),
            (600, "10m"),
            (5_400, "1h30m"),
            (90_061, "1d1h1m1s"),
            (2 * 86_400, "2d"),
        ];
        for (secs, shown) in cases {
            assert_eq!(format_duration(secs), shown);
        }
    }

    const KI: u64 = 1 << 10;
    const MI: u64 = 1 << 20;
    const GI: u64 = 1 << 30;
    const TI: u64 = 1 << 40;

    #[test]
    fn bytes_table() {
        let cases = [
            (0, "0B"),
            (1, "1B"),
            (1023, "1023B"),
            (KI, "1Ki"),
            (1536, "1.5Ki"),
            (1025, "1.0Ki"),
            (512 * KI, "512Ki"),
            (MI - 1, "1023.9Ki"),
            (64 * MI, "64Mi"),
            (512 * MI + 300 * KI, "512.2Mi"),
            (GI, "1Gi"),
            (GI + 1, "1.0Gi"),
            (3 * GI / 2, "1.5Gi"),
            (2 * GI - 1, "1.9Gi"),
            (3 * GI, "3Gi"),
            (20 * GI, "20Gi"),
            (8 * GI - 512, "7.9Gi"),
            (40 * TI, "40Ti"),
            (1_800_000_000_000, "1.6Ti"),
            (1 << 50, "1Pi"),
            (1 << 60, "1Ei"),
            (u64::MAX, "15.9Ei"),
        ];
        for (bytes, want) in cases {
            assert_eq!(format_bytes(bytes), want, "{bytes}");
        }
    }

    #[test]
    fn a_size_short_of_a_limit_never_prints_as_the_limit() {
        for limit in [4 * GI, 8 * GI, 16 * GI, 64 * MI, TI] {
            assert_ne!(format_bytes(limit - 1), format_bytes(limit), "{limit}");
        }
    }

    #[test]
    fn cpu_table() {
        let cases = [
            (1, "1m"),
            (500, "500m"),
            (1000, "1"),
            (1500, "1500m"),
            (2000, "2"),
            (1_000_000, "1000"),
        ];
        for (millis, want) in cases {
            assert_eq!(format_cpu(millis), want, "{millis}");
        }
    }
}
