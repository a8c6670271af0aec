//! Exponential backoff: how long to wait before trying again after consecutive failures.
//! One implementation for every retry loop of a node (the supervisor restarting services,
//! the agent reconnecting to its master, the agent restarting service replicas); each
//! caller keeps its own parameters next to the reason for them. Pure arithmetic on
//! `Duration`s: no clock, no sleeping, so it is table-tested here.

use std::time::Duration;

/// Delays of `initial`, doubling after each consecutive failure, never above `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub initial: Duration,
    /// The delay never grows past this.
    pub max: Duration,
}

impl Backoff {
    /// The delay after `failures` consecutive failures (1 for the first): `initial`,
    /// doubling each time, capped at `max`. Never overflows, whatever the count.
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// A fresh sequence of retries.
    pub fn start(self) -> Retry {
        Retry {
            policy: self,
            failures: 0,
        }
    }
}

/// The state of one sequence of retries: how many failures in a row so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    policy: Backoff,
    failures: u32,
}

impl Retry {
    /// Counts one more failure and returns the delay to wait now; the next one is twice
    /// as long, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.policy.delay(self.failures)
    }

    /// Back to the initial delay, after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// For work that runs until it exits (a service, a container): it exited after
    /// running `ran_for`. A run of at least `healthy_after` counts as a success before
    /// this failure, so the delay starts from `initial` again; a shorter one doubles it.
    pub fn after_exit(&mut self, ran_for: Duration, healthy_after: Duration) -> Duration {
        if ran_for >= healthy_after {
            self.reset();
        }
        self.next_delay()
    }

    /// Consecutive failures so far (0 after a reset).
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn backoff(initial: u64, max: u64) -> Backoff {
        Backoff {
            initial: ms(initial),
            max: ms(max),
        }
    }

    #[test]
    fn delays_double_and_cap() {
        let cases: &[(Backoff, u32, u64)] = &[
            (backoff(500, 30_000), 0, 500),
            (backoff(500, 30_000), 1, 500),
            (backoff(500, 30_000), 2, 1000),
            (backoff(500, 30_000), 3, 2000),
            (backoff(500, 30_000), 6, 16_000),
            (backoff(500, 30_000), 7, 30_000),
            (backoff(500, 30_000), 40, 30_000),
            (backoff(500, 30_000), u32::MAX, 30_000),
            (backoff(1000, 30_000), 5, 16_000),
            (backoff(1000, 30_000), 6, 30_000),
            // An initial delay above the maximum is capped from the start.
            (backoff(5000, 1000), 1, 1000),
            (backoff(0, 1000), 9, 0),
        ];
        for &(b, failures, want) in cases {
            assert_eq!(b.delay(failures), ms(want), "{b:?} after {failures}");
        }
        let huge = Backoff {
            initial: Duration::MAX / 2,
            max: Duration::MAX,
        };
        assert_eq!(huge.delay(3), Duration::MAX, "overflow caps, never panics");
    }

    #[test]
    fn a_retry_doubles_up_to_the_maximum_and_resets() {
        let mut retry = backoff(1000, 30_000).start();
        let secs: Vec<u64> = (0..7).map(|_| retry.next_delay().as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(retry.failures(), 7);
        retry.reset();
        assert_eq!(retry.failures(), 0);
        assert_eq!(retry.next_delay(), ms(1000));
    }

    #[test]
    fn a_long_run_before_an_exit_starts_the_delays_over() {
        let healthy = ms(60_000);
        let mut retry = backoff(500, 30_000).start();
        let short = ms(10);
        assert_eq!(retry.after_exit(short, healthy), ms(500));
        assert_eq!(retry.after_exit(short, healthy), ms(1000));
        assert_eq!(retry.after_exit(ms(59_999), healthy), ms(2000));
        assert_eq!(retry.failures(), 3);
        // Ran long enough: this exit is a first failure again.
        assert_eq!(retry.after_exit(healthy, healthy), ms(500));
        assert_eq!(retry.failures(), 1);
        assert_eq!(retry.after_exit(Duration::ZERO, healthy), ms(1000));
    }

    #[test]
    fn the_count_saturates() {
        let mut retry = backoff(1, 10).start();
        retry.failures = u32::MAX;
        assert_eq!(retry.next_delay(), ms(10));
        assert_eq!(retry.failures(), u32::MAX);
    }
}
