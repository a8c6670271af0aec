//! The agent's retry delays (the arithmetic is `cloudos_cluster::backoff`'s): the agent
//! never busy-loops on a master that is gone.

use std::time::Duration;

pub use cloudos_cluster::backoff::Backoff;

/// 1 s, 2 s, 4 s … 30 s between attempts to join or to reach the master: a restarted
/// master sees its agents back within seconds, a dead one costs each agent a connection
/// attempt every half minute.
pub const RETRY_BACKOFF: Backoff = Backoff {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(30),
};

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
    fn retries_wait_a_second_doubling_to_thirty() {
        let mut retry = RETRY_BACKOFF.start();
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
