//! Exponential backoff between retries: the agent never busy-loops on a master that is gone.

use std::time::Duration;

/// Delays of `initial`, doubling up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// 1 s, 2 s, 4 s … 30 s: a restarted master sees its agents back within seconds, a dead
    /// one costs each agent a connection attempt every half minute.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// A fresh sequence of delays.
    pub fn start(self) -> Retry {
        Retry {
            policy: self,
            next: self.initial,
        }
    }
}

/// The state of one sequence of retries.
#[derive(Debug, Clone)]
pub struct Retry {
    policy: Backoff,
    next: Duration,
}

impl Retry {
    /// The delay to wait now; the following one is twice as long, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next.min(self.policy.max);
        self.next = (delay * 2).min(self.policy.max);
        delay
    }

    /// Back to the initial delay, after a success.
    pub fn reset(&mut self) {
        self.next = self.policy.initial;
    }
}

/// `5s`, `1.5s`, `250ms`: how the log lines show a delay.
pub fn show(d: Duration) -> String {
    if d.as_millis() % 1000 == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_and_resets() {
        let mut retry = Backoff::default().start();
        let secs: Vec<u64> = (0..7).map(|_| retry.next_delay().as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
        retry.reset();
        assert_eq!(retry.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn shows_delays() {
        assert_eq!(show(Duration::from_secs(5)), "5s");
        assert_eq!(show(Duration::from_millis(250)), "250ms");
        assert_eq!(show(Duration::from_millis(1500)), "1.5s");
    }
}
