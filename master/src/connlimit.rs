//! How many connections the master holds at once, per source and in all. A connection
//! takes a [`Permit`] before anything is read from it and keeps it for as long as its socket
//! is open (an upgraded WebSocket included); over a cap, the socket is closed at once.
//!
//! Two pools, so that people without a certificate cannot crowd out those with one: every
//! connection starts in the `unverified` pool (TLS handshake, then anonymous requests such
//! as joins), and one whose client certificate the CA signed moves to the `verified` pool.
//! The per-source cap of each pool sits well below its total, so a handful of attacking
//! addresses cannot take every slot. This module only counts; `server` decides when a
//! connection moves and for how long it may idle.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// Connections of one pool: in all, and from one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub total: usize,
    pub per_source: usize,
}

/// Handshakes and certificate-less connections (joins, the OpenAPI document, downloads).
pub const UNVERIFIED: Caps = Caps {
    total: 1024,
    per_source: 32,
};

/// Nodes and admins whose certificate the cluster CA signed. Both pools full stay well
/// under the open-files limit `services::limits` gives the master.
pub const VERIFIED: Caps = Caps {
    total: 8192,
    per_source: 256,
};

/// What counts as one source: an IPv4 address, or an IPv6 /64 (one host usually has a whole
/// /64 to pick addresses from). IPv4-mapped IPv6 addresses count as their IPv4 address.
pub fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// One pool of connection slots.
#[derive(Debug)]
pub struct Pool {
    caps: Caps,
    counts: Mutex<Counts>,
}

impl Pool {
    pub fn new(caps: Caps) -> Arc<Pool> {
        Arc::new(Pool {
            caps,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// A slot for a connection from `ip`; `None` when the pool or the source is full.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let key = source(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let from_source = counts.by_source.get(&key).copied().unwrap_or(0);
        if counts.total >= self.caps.total || from_source >= self.caps.per_source {
            return None;
        }
        counts.total += 1;
        counts.by_source.insert(key, from_source + 1);
        Some(Permit {
            pool: Arc::clone(self),
            key,
        })
    }

    /// Connections held now: in all, and from `ip`'s source.
    pub fn held(&self, ip: IpAddr) -> (usize, usize) {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let from = counts.by_source.get(&source(ip)).copied().unwrap_or(0);
        (counts.total, from)
    }

    fn release(&self, key: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_source.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                counts.by_source.remove(&key);
            }
        }
    }
}

/// A held slot, given back when dropped.
#[derive(Debug)]
pub struct Permit {
    pool: Arc<Pool>,
    key: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.pool.release(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_source_gets_its_share_and_the_rest_stay_open_for_others() {
        let pool = Pool::new(Caps {
            total: 5,
            per_source: 2,
        });
        let a1 = pool.try_acquire(ip("10.0.0.1")).expect("first");
        let _a2 = pool.try_acquire(ip("10.0.0.1")).expect("second");
        assert!(
            pool.try_acquire(ip("10.0.0.1")).is_none(),
            "over per source"
        );
        let _b = pool.try_acquire(ip("10.0.0.2")).expect("other source");
        drop(a1);
        let _again = pool.try_acquire(ip("10.0.0.1")).expect("slot given back");
        assert_eq!(pool.held(ip("10.0.0.1")), (3, 2));
    }

    #[test]
    fn the_total_caps_every_source_together() {
        let pool = Pool::new(Caps {
            total: 3,
            per_source: 2,
        });
        let held: Vec<_> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .iter()
            .map(|s| pool.try_acquire(ip(s)).expect("under the total"))
            .collect();
        assert!(pool.try_acquire(ip("10.0.0.4")).is_none());
        drop(held);
        assert_eq!(pool.held(ip("10.0.0.1")), (0, 0));
    }

    #[test]
    fn an_ipv6_host_is_one_source_whatever_address_of_its_64_it_picks() {
        let pool = Pool::new(Caps {
            total: 10,
            per_source: 2,
        });
        let _one = pool.try_acquire(ip("2001:db8::1")).expect("first");
        let _two = pool.try_acquire(ip("2001:db8::ffff:1234")).expect("second");
        assert!(pool.try_acquire(ip("2001:db8::9")).is_none());
        assert!(
            pool.try_acquire(ip("2001:db8:0:1::1")).is_some(),
            "next /64"
        );
        assert_eq!(source(ip("::ffff:10.0.0.7")), ip("10.0.0.7"));
    }
}
