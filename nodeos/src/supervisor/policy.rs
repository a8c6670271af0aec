//! When to restart a service that exited: pure arithmetic, table-tested.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first restart.
    pub initial: Duration,
    /// The delay never grows past this.
    pub max: Duration,
    /// A service that ran this long before exiting counts as healthy again:
    /// its next restart starts from `initial`.
    pub healthy_after: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// Consecutive failures after an exit, given the count before it and how
    /// long the service ran.
    pub fn failures_after_exit(&self, failures_before: u32, ran_for: Duration) -> u32 {
        if ran_for >= self.healthy_after {
            1
        } else {
            failures_before.saturating_add(1)
        }
    }

    /// Delay before the restart that follows `failures` consecutive failures
    /// (1 for the first): initial, doubling each time, capped at max.
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_cap() {
        let b = Backoff::default();
        let table = [
            (1, 500),
            (2, 1000),
            (3, 2000),
            (4, 4000),
            (6, 16000),
            (7, 30000),
            (40, 30000),
            (u32::MAX, 30000),
        ];
        for (failures, ms) in table {
            assert_eq!(
                b.delay(failures),
                Duration::from_millis(ms),
                "failures={failures}"
            );
        }
    }

    #[test]
    fn a_long_run_resets_the_count() {
        let b = Backoff::default();
        assert_eq!(b.failures_after_exit(0, Duration::from_millis(10)), 1);
        assert_eq!(b.failures_after_exit(5, Duration::from_secs(1)), 6);
        assert_eq!(b.failures_after_exit(5, Duration::from_secs(60)), 1);
        assert_eq!(b.failures_after_exit(u32::MAX, Duration::ZERO), u32::MAX);
    }
}
