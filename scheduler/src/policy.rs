//! Scoring policies: among the nodes that pass the filters, which one is best. Owns the
//! `Policy` trait and the built-in policies; a policy never sees a node that does not
//! fit, so it need not check capacity, and it must not allocate (it runs once per node
//! per decision).

use crate::types::{NodeView, Request};

/// Ranks a fitting node for a request: higher is better. Ties go to the node whose name
/// sorts first, so equal scores still give one answer.
pub trait Policy: Send + Sync {
    fn name(&self) -> &'static str;
    fn score(&self, node: &NodeView, req: &Request) -> i64;
}

/// The names `policy_by_name` knows, for the master's error message and help text.
pub const POLICY_NAMES: &[&str] = &["spread", "binpack"];

pub fn policy_by_name(name: &str) -> Option<Box<dyn Policy>> {
    match name {
        "spread" => Some(Box::new(Spread)),
        "binpack" => Some(Box::new(Binpack)),
        _ => None,
    }
}

/// The default: fewest replicas of the same service first, then the least loaded node.
/// Keeps a service's replicas on distinct nodes so one node's death takes only one, and
/// leaves headroom everywhere for work to grow.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spread;

/// Fills the fullest node that still fits, leaving whole nodes empty for big requests
/// (or to power down). Replica counts are ignored: packing is the point.
#[derive(Clone, Copy, Debug, Default)]
pub struct Binpack;

/// Load is the sum of the cpu and memory fractions, in millionths, so at most 2,000,000;
/// one more replica of the same service must outweigh any difference in load.
const GROUP_WEIGHT: i64 = 10_000_000;
const SCALE: f64 = 1_000_000.0;

impl Policy for Spread {
    fn name(&self) -> &'static str {
        "spread"
    }

    fn score(&self, node: &NodeView, req: &Request) -> i64 {
        let replicas = match &req.group {
            Some(group) => node.groups.get(group).copied().unwrap_or(0),
            None => 0,
        };
        -(i64::from(replicas) * GROUP_WEIGHT) - load_after(node, req)
    }
}

impl Policy for Binpack {
    fn name(&self) -> &'static str {
        "binpack"
    }

    fn score(&self, node: &NodeView, req: &Request) -> i64 {
        load_after(node, req)
    }
}

/// How full the node would be with the request on it, in millionths of cpu plus
/// millionths of memory. Measured after placing, so a request weighs more on a small
/// node than on a big one. Floating point because bytes times a million overflows u64,
/// and u128 division would dominate the scan.
fn load_after(node: &NodeView, req: &Request) -> i64 {
    let cpu = fraction(
        node.allocated
            .cpu_millis
            .saturating_add(req.resources.cpu_millis),
        node.capacity.cpu_millis,
    );
    let memory = fraction(
        node.allocated
            .memory_bytes
            .saturating_add(req.resources.memory_bytes),
        node.capacity.memory_bytes,
    );
    ((cpu + memory) * SCALE) as i64
}

/// A node without any of a resource is full of it once anything is asked for.
fn fraction(used: u64, capacity: u64) -> f64 {
    if capacity == 0 {
        return if used == 0 { 0.0 } else { 1.0 };
    }
    (used as f64 / capacity as f64).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, req, GI};

    #[test]
    fn names_round_trip() {
        for name in POLICY_NAMES {
            assert_eq!(policy_by_name(name).unwrap().name(), *name);
        }
        assert!(policy_by_name("random").is_none());
    }

    #[test]
    fn spread_prefers_less_load_and_fewer_replicas() {
        let r = req("r", 100, GI).group("web");
        let empty = node("a", "x86_64", 4000, 8 * GI);
        let half = empty.clone().alloc(2000, 4 * GI);
        assert!(Spread.score(&empty, &r) > Spread.score(&half, &r));
        // A nearly full node without a replica beats an empty one with a replica.
        let full = empty.clone().alloc(3800, 6 * GI);
        let with_replica = empty.clone().replicas("web", 1);
        assert!(Spread.score(&full, &r) > Spread.score(&with_replica, &r));
        // Replicas of other services do not count.
        assert_eq!(
            Spread.score(&empty.clone().replicas("db", 3), &r),
            Spread.score(&empty, &r)
        );
    }

    #[test]
    fn binpack_prefers_fuller_nodes() {
        let r = req("r", 100, GI);
        let empty = node("a", "x86_64", 4000, 8 * GI);
        let half = empty.clone().alloc(2000, 4 * GI);
        assert!(Binpack.score(&half, &r) > Binpack.score(&empty, &r));
        // The same request fills a small node more than a big one.
        let small = node("s", "x86_64", 1000, 2 * GI);
        assert!(Binpack.score(&small, &r) > Binpack.score(&empty, &r));
    }

    #[test]
    fn zero_capacity_does_not_divide_by_zero() {
        let n = node("z", "x86_64", 0, 0);
        assert_eq!(load_after(&n, &req("r", 0, 0)), 0);
        assert_eq!(load_after(&n, &req("r", 1, 1)), 2_000_000);
    }
}
