//! What the benchmark tests share (the ignored tests the `scripts/bench-*.sh` scripts run):
//! how many runs they were asked for, and the median of what they measured.

/// `CLOUDOS_BENCH_RUNS` (the scripts' `--runs N`), or `default`.
pub fn runs(default: usize) -> usize {
    std::env::var("CLOUDOS_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(default)
}

/// The median of `values` (the upper one of an even count); sorts them. Panics on none.
pub fn median<T: PartialOrd + Copy>(values: &mut [T]) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values[values.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_one_or_the_upper_middle_one() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4, 1, 3, 2]), 3);
        assert_eq!(
            median(&mut [
                std::time::Duration::from_millis(9),
                std::time::Duration::ZERO
            ]),
            std::time::Duration::from_millis(9)
        );
    }
}
