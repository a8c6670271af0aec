//! Failed join attempts per source address, as token buckets: a few failures are free,
//! then one attempt per refill period. Only failures take tokens, so a node that joins
//! right is never slowed down; an address whose bucket is empty is refused (429) before
//! its request is even looked at. Addresses count by source (`connlimit::source`: an IPv6
//! host is its /64), and a full table forgets the address closest to a full bucket, never
//! the ones being limited.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::connlimit::source;

/// Addresses tracked at most; when it is reached, the bucket nearest to full is forgotten.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

pub struct FailureLimiter {
    burst: u32,
    refill: Duration,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl FailureLimiter {
    pub fn new(burst: u32, refill: Duration) -> Self {
        FailureLimiter {
            burst: burst.max(1),
            refill: refill.max(Duration::from_millis(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Joins: 5 failures, then one attempt per 10 s.
    pub fn for_joins() -> Self {
        FailureLimiter::new(5, Duration::from_secs(10))
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> Bucket {
        let elapsed = now.saturating_duration_since(bucket.at);
        let earned = elapsed.as_nanos() / self.refill.as_nanos();
        let earned = u32::try_from(earned).unwrap_or(u32::MAX);
        if earned == 0 {
            return bucket;
        }
        let tokens = bucket.tokens.saturating_add(earned).min(self.burst);
        let at = if tokens == self.burst {
            now
        } else {
            bucket.at + self.refill * earned
        };
        Bucket { tokens, at }
    }

    /// `Err(retry_after)` when `ip` has no attempts left.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let ip = source(ip);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(bucket) = buckets.get(&ip).copied() else {
            return Ok(());
        };
        let bucket = self.refilled(bucket, now);
        buckets.insert(ip, bucket);
        if bucket.tokens > 0 {
            return Ok(());
        }
        Err((bucket.at + self.refill).saturating_duration_since(now))
    }

    /// Takes one attempt from `ip`.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        let ip = source(ip);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&ip) {
            let burst = self.burst;
            buckets.retain(|_, b| self.refilled(*b, now).tokens < burst);
            if buckets.len() >= MAX_TRACKED {
                // A flood from many addresses. Forgetting them all would hand every address
                // being limited a fresh burst; forget only the one with the most attempts
                // left (the oldest of those), which has the least to gain.
                let nearest_full = buckets
                    .iter()
                    .map(|(ip, b)| (*ip, self.refilled(*b, now)))
                    .max_by(|(_, a), (_, b)| a.tokens.cmp(&b.tokens).then(b.at.cmp(&a.at)))
                    .map(|(ip, _)| ip);
                if let Some(forget) = nearest_full {
                    buckets.remove(&forget);
                }
            }
        }
        let bucket = buckets.get(&ip).copied().unwrap_or(Bucket {
            tokens: self.burst,
            at: now,
        });
        let mut bucket = self.refilled(bucket, now);
        if bucket.tokens == self.burst {
            bucket.at = now;
        }
        bucket.tokens = bucket.tokens.saturating_sub(1);
        buckets.insert(ip, bucket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_then_one_per_period() {
        let l = FailureLimiter::for_joins();
        let ip: IpAddr = "10.0.0.7".parse().expect("ip");
        let other: IpAddr = "10.0.0.8".parse().expect("ip");
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(l.check(ip, t0), Ok(()));
            l.record_failure(ip, t0);
        }
        assert_eq!(l.check(ip, t0), Err(Duration::from_secs(10)));
        assert_eq!(
            l.check(ip, t0 + Duration::from_secs(4)),
            Err(Duration::from_secs(6))
        );
        assert_eq!(l.check(other, t0), Ok(()), "per address");
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(l.check(ip, t1), Ok(()));
        l.record_failure(ip, t1);
        assert_eq!(l.check(ip, t1), Err(Duration::from_secs(10)));
        // After a quiet minute the burst is back.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(l.check(ip, t2), Ok(()));
            l.record_failure(ip, t2);
        }
        assert!(l.check(ip, t2).is_err());
    }

    #[test]
    fn table_stays_bounded() {
        let l = FailureLimiter::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 5) {
            l.record_failure(IpAddr::from(i.to_be_bytes()), t0);
        }
        let len = l.buckets.lock().map(|b| b.len()).unwrap_or(0);
        assert!(len <= MAX_TRACKED, "{len}");
    }

    /// The attacker guesses tokens from one address until limited, then fails once from
    /// each of 10 000 other addresses to flush the table and get a fresh burst.
    #[test]
    fn a_flood_of_addresses_does_not_free_the_limited_one() {
        let l = FailureLimiter::for_joins();
        let attacker: IpAddr = "10.9.9.9".parse().expect("ip");
        let t0 = Instant::now();
        for _ in 0..5 {
            l.record_failure(attacker, t0);
        }
        assert!(l.check(attacker, t0).is_err());
        for i in 0..(MAX_TRACKED as u32 + 100) {
            l.record_failure(IpAddr::from((0x0b00_0000 + i).to_be_bytes()), t0);
        }
        assert!(
            l.check(attacker, t0).is_err(),
            "still limited after the flood"
        );
        let len = l.buckets.lock().map(|b| b.len()).unwrap_or(0);
        assert!(len <= MAX_TRACKED, "{len}");
    }

    /// An IPv6 attacker picks a new address of its /64 for every guess.
    #[test]
    fn a_new_ipv6_address_of_the_same_64_is_the_same_source() {
        let l = FailureLimiter::for_joins();
        let t0 = Instant::now();
        for i in 0..5u16 {
            let ip = IpAddr::from([0x2001, 0xdb8, 0, 7, 0, 0, 0, i + 1]);
            l.record_failure(ip, t0);
        }
        let fresh = IpAddr::from([0x2001, 0xdb8, 0, 7, 0xdead, 0, 0, 99]);
        assert!(l.check(fresh, t0).is_err());
    }
}
