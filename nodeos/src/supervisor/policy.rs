//! When to restart a service that exited: the supervisor's parameters for the shared
//! backoff (`cloudos_cluster::backoff`), which owns the arithmetic.

use std::time::Duration;

pub use cloudos_cluster::backoff::Backoff;

/// 0.5 s, 1 s, 2 s … 30 s between restarts of a service that keeps exiting.
pub const RESTART_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(30),
};

/// A service that ran this long before exiting counts as healthy again: its next restart
/// starts from the initial delay.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_wait_half_a_second_doubling_to_thirty() {
        let mut retry = RESTART_BACKOFF.start();
        let short = Duration::from_millis(10);
        let ms: Vec<u128> = (0..8)
            .map(|_| retry.after_exit(short, HEALTHY_AFTER).as_millis())
            .collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        assert_eq!(
            retry.after_exit(HEALTHY_AFTER, HEALTHY_AFTER),
            Duration::from_millis(500),
            "a minute up resets the delay"
        );
    }
}
