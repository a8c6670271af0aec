//! One decision: filter every node, score the survivors with the policy, take the best.
//! Owns the tie-break (node name) that makes decisions repeatable; does not change the
//! nodes it is shown (`queue` does the bookkeeping).

use crate::filter::miss;
use crate::policy::{Policy, Spread};
use crate::reason::NoFit;
use crate::types::{NodeView, Request};

/// Places requests on nodes with one policy. Holds no cluster state: every call gets the
/// master's current view.
pub struct Scheduler {
    policy: Box<dyn Policy>,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler::new(Box::new(Spread))
    }
}

impl Scheduler {
    pub fn new(policy: Box<dyn Policy>) -> Self {
        Scheduler { policy }
    }

    pub fn policy(&self) -> &dyn Policy {
        self.policy.as_ref()
    }

    /// The index in `nodes` of the best node for `req`, or why none fits. A single pass
    /// that allocates nothing; the reasons are gathered by a second pass only on failure.
    // NoFit is large next to an index, but it is the rare path and the master's interface
    // returns it by value; boxing would cost every caller a deref for nothing.
    #[allow(clippy::result_large_err)]
    ///
    /// The avoid list is a preference: when only avoided nodes fit (the node a lost run was
    /// on is the only one, and it is back), one of them is taken rather than none, so a
    /// one-node cluster's lost replica runs again once its node returns.
    pub fn place(&self, nodes: &[NodeView], req: &Request) -> Result<usize, NoFit> {
        if let Some(i) = self.best(nodes, req) {
            return Ok(i);
        }
        if req.avoid.is_empty() {
            return Err(NoFit::collect(nodes, req));
        }
        let anywhere = Request {
            avoid: Vec::new(),
            ..req.clone()
        };
        self.best(nodes, &anywhere)
            .ok_or_else(|| NoFit::collect(nodes, req))
    }

    fn best(&self, nodes: &[NodeView], req: &Request) -> Option<usize> {
        let mut best: Option<(usize, i64)> = None;
        for (i, node) in nodes.iter().enumerate() {
            if miss(node, req).is_some() {
                continue;
            }
            let score = self.policy.score(node, req);
            let better = match best {
                None => true,
                Some((b, best_score)) => {
                    score > best_score || (score == best_score && node.name < nodes[b].name)
                }
            };
            if better {
                best = Some((i, score));
            }
        }
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::check;
    use crate::policy::Binpack;
    use crate::testutil::{node, req, GI};

    fn cluster() -> Vec<NodeView> {
        vec![
            node("a", "x86_64", 4000, 8 * GI).alloc(3000, 6 * GI),
            node("b", "x86_64", 4000, 8 * GI).alloc(1000, 2 * GI),
            node("c", "x86_64", 4000, 8 * GI),
            node("d", "aarch64", 4000, 8 * GI),
        ]
    }

    fn chosen(s: &Scheduler, nodes: &[NodeView], r: &Request) -> String {
        nodes[s.place(nodes, r).unwrap()].name.clone()
    }

    #[test]
    fn spread_vs_binpack() {
        let nodes = cluster();
        let spread = Scheduler::new(Box::new(Spread));
        let binpack = Scheduler::new(Box::new(Binpack));
        let cases = [
            // Emptiest: c and d tie at zero load; c sorts first.
            (&spread, req("r", 500, GI), "c"),
            (&spread, req("r", 500, GI).archs(&["aarch64"]), "d"),
            (&binpack, req("r", 500, GI), "a"),
            // a cannot take 2Gi of cpu more than it has; the next fullest can.
            (&binpack, req("r", 1500, GI), "b"),
            (&binpack, req("r", 500, GI).avoid("a"), "b"),
        ];
        for (s, r, want) in cases {
            assert_eq!(chosen(s, &nodes, &r), want, "{} {:?}", s.policy().name(), r);
        }
    }

    #[test]
    fn an_avoided_node_is_taken_only_when_no_other_fits() {
        let spread = Scheduler::default();
        let one = vec![node("a", "x86_64", 4000, 8 * GI)];
        assert_eq!(chosen(&spread, &one, &req("r", 500, GI).avoid("a")), "a");
        // Another node that fits wins over the avoided one, however full it is.
        let two = vec![
            node("a", "x86_64", 4000, 8 * GI),
            node("b", "x86_64", 4000, 8 * GI).alloc(3000, 6 * GI),
        ];
        assert_eq!(chosen(&spread, &two, &req("r", 500, GI).avoid("a")), "b");
        // An avoided node that does not fit for another reason is still no place.
        let full = vec![node("a", "x86_64", 1000, GI).alloc(1000, GI)];
        let err = spread
            .place(&full, &req("r", 500, GI).avoid("a"))
            .unwrap_err();
        assert!(err.to_string().contains("avoid list"), "{err}");
    }

    /// Work pinned to a node (its volumes are there) goes nowhere else, even to an emptier
    /// node, and back to that node even when it avoids it; the reason is that node's.
    #[test]
    fn pinned_work_goes_to_its_node_only() {
        let spread = Scheduler::default();
        let nodes = vec![
            node("a", "x86_64", 4000, 8 * GI).alloc(3000, 6 * GI),
            node("b", "x86_64", 4000, 8 * GI),
        ];
        let pinned = Request {
            pinned: Some("a".into()),
            ..req("r", 500, GI).avoid("a")
        };
        assert_eq!(chosen(&spread, &nodes, &pinned), "a");
        let mut down = nodes.clone();
        down[0].ready = false;
        let err = spread.place(&down, &pinned).unwrap_err();
        assert_eq!(err.nodes, 1, "{err:?}");
        assert_eq!(err.not_ready, 1, "{err:?}");
        let gone = Request {
            pinned: Some("c".into()),
            ..req("r", 500, GI)
        };
        assert!(spread.place(&nodes, &gone).is_err());
    }

    #[test]
    fn arm64_only_image_only_on_aarch64() {
        let nodes = cluster();
        let s = Scheduler::default();
        for arch in ["arm64", "aarch64"] {
            assert_eq!(chosen(&s, &nodes, &req("r", 100, GI).archs(&[arch])), "d");
        }
        let x86_only = &nodes[..3];
        let err = s
            .place(x86_only, &req("r", 100, GI).archs(&["arm64"]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no node fits: 3 are x86_64 (image is aarch64 only)"
        );
    }

    #[test]
    fn deterministic_whatever_the_node_order() {
        let mut nodes: Vec<NodeView> = (0..20)
            .map(|i| node(&format!("n{i:02}"), "x86_64", 1000, GI))
            .collect();
        let s = Scheduler::default();
        let first = chosen(&s, &nodes, &req("r", 100, 1));
        assert_eq!(first, "n00");
        nodes.reverse();
        assert_eq!(chosen(&s, &nodes, &req("r", 100, 1)), first);
        nodes.rotate_left(7);
        assert_eq!(chosen(&s, &nodes, &req("r", 100, 1)), first);
    }

    #[test]
    fn none_fit_gives_the_reasons() {
        let nodes = cluster();
        let err = Scheduler::default()
            .place(&nodes, &req("r", 8000, GI))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no node fits: 4 lack cpu (need 8, most free 4)"
        );
    }

    /// `place` and `check` must agree: the chosen node passes the filters, and a no-fit
    /// answer means every node fails them, counted once each.
    #[test]
    fn place_agrees_with_check() {
        let mut nodes = Vec::new();
        for i in 0..24u64 {
            let arch = if i % 3 == 0 { "aarch64" } else { "x86_64" };
            let n = node(
                &format!("n{i:02}"),
                arch,
                1000 * (1 + i % 4),
                GI * (1 + i % 5),
            );
            let n = n
                .label("zone", ["a", "b"][(i % 2) as usize])
                .alloc(100 * (i % 7), GI / 8 * (i % 3));
            let n = if i % 13 == 0 { n.cordoned() } else { n };
            let n = match i % 6 {
                1 => n.port(8080),
                2 => n.port(8080).udp_port(53),
                4 => n.udp_port(8080),
                _ => n,
            };
            nodes.push(if i % 11 == 0 { n.not_ready() } else { n });
        }
        let s = Scheduler::default();
        let mut ports_counted = false;
        for j in 0..60u64 {
            let mut r = req(&format!("r{j}"), 500 * (j % 9), GI / 2 * (j % 11));
            if j % 4 == 0 {
                r = r.archs(&["arm64"]);
            }
            if j % 5 == 0 {
                r = r.select("zone", "b");
            }
            if j % 3 == 0 {
                r = r.port(8080);
            }
            if j % 7 == 0 {
                r = r.udp_port(53);
            }
            match s.place(&nodes, &r) {
                Ok(i) => assert_eq!(check(&nodes[i], &r), Ok(()), "{j}"),
                Err(nf) => {
                    assert!(nodes.iter().all(|n| check(n, &r).is_err()), "{j}");
                    let counted = nf.not_ready
                        + nf.cordoned
                        + nf.avoided
                        + nf.arch.values().sum::<usize>()
                        + nf.selector.values().sum::<usize>()
                        + nf.ports.values().sum::<usize>()
                        + nf.cpu.map_or(0, |c| c.nodes)
                        + nf.memory.map_or(0, |m| m.nodes);
                    assert_eq!(counted, nodes.len(), "{j}: {nf}");
                    ports_counted |= !nf.ports.is_empty();
                }
            }
        }
        assert!(ports_counted, "no request was turned down for a host port");
    }
}
