//! The waiting queue: places queued requests first come, first served, and records each
//! placement (resources, group count, host ports) on its node so later decisions in the
//! same pass see it. Owns nothing
//! between calls; the master keeps the queue and calls again when nodes or work change.

use serde::{Deserialize, Serialize};

use crate::place::Scheduler;
use crate::reason::NoFit;
use crate::types::{NodeView, Request};

/// What one pass over the queue did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueOutcome {
    /// (request id, node name), in queue order.
    pub placed: Vec<(String, String)>,
    /// (request id, why), in queue order; the same requests stay in the queue.
    pub waiting: Vec<(String, NoFit)>,
}

impl Scheduler {
    /// Goes over `queue` in order: each request that fits is placed and its resources
    /// (and group count and host ports) added to its node; the rest stay in `queue`, in order, with
    /// their reasons. A request that does not fit does not block those behind it, so a
    /// big request cannot starve small ones; the master decides if it wants otherwise.
    pub fn schedule_queue(&self, nodes: &mut [NodeView], queue: &mut Vec<Request>) -> QueueOutcome {
        let mut out = QueueOutcome::default();
        let pending = std::mem::take(queue);
        for req in pending {
            match self.place(nodes, &req) {
                Ok(i) => {
                    nodes[i].assign(&req);
                    out.placed.push((req.id, nodes[i].name.clone()));
                }
                Err(why) => {
                    out.waiting.push((req.id.clone(), why));
                    queue.push(req);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Binpack;
    use crate::testutil::{node, req, GI};

    fn ids(queue: &[Request]) -> Vec<&str> {
        queue.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn replicas_spread_over_distinct_nodes() {
        let mut nodes = vec![
            node("a", "x86_64", 8000, 16 * GI),
            node("b", "x86_64", 2000, 4 * GI).alloc(1000, 2 * GI),
            node("c", "x86_64", 4000, 8 * GI),
        ];
        let mut queue: Vec<Request> = (0..3)
            .map(|i| req(&format!("web-{i}"), 100, GI).group("web"))
            .collect();
        let out = Scheduler::default().schedule_queue(&mut nodes, &mut queue);
        let mut used: Vec<&str> = out.placed.iter().map(|(_, n)| n.as_str()).collect();
        used.sort();
        assert_eq!(used, ["a", "b", "c"]);
        assert!(queue.is_empty() && out.waiting.is_empty());
        assert!(nodes.iter().all(|n| n.groups["web"] == 1));
        // A fourth replica goes to the least loaded node again.
        let mut more = vec![req("web-3", 100, GI).group("web")];
        let out = Scheduler::default().schedule_queue(&mut nodes, &mut more);
        assert_eq!(out.placed, [("web-3".to_string(), "a".to_string())]);
    }

    #[test]
    fn placements_are_seen_by_later_decisions() {
        let mut nodes = vec![node("a", "x86_64", 1000, GI)];
        let mut queue = vec![req("1", 600, 0), req("2", 600, 0), req("3", 400, 0)];
        let out = Scheduler::new(Box::new(Binpack)).schedule_queue(&mut nodes, &mut queue);
        assert_eq!(
            out.placed,
            [("1".into(), "a".into()), ("3".into(), "a".into())]
        );
        assert_eq!(ids(&queue), ["2"]);
        assert_eq!(out.waiting[0].0, "2");
        // The reason is as of its turn in the queue, before "3" took the rest.
        assert_eq!(
            out.waiting[0].1.to_string(),
            "no node fits: 1 lacks cpu (need 600m, most free 400m)"
        );
        assert_eq!(nodes[0].allocated.cpu_millis, 1000);
    }

    #[test]
    fn waiting_work_is_placed_when_capacity_appears() {
        let s = Scheduler::default();
        let mut nodes = vec![node("a", "x86_64", 1000, GI).not_ready()];
        let mut queue = vec![
            req("big", 2000, GI),
            req("small", 100, GI / 4),
            req("arm", 100, 1).archs(&["aarch64"]),
        ];
        let out = s.schedule_queue(&mut nodes, &mut queue);
        assert!(out.placed.is_empty());
        assert_eq!(ids(&queue), ["big", "small", "arm"]);
        assert!(out
            .waiting
            .iter()
            .all(|(_, why)| why.to_string() == "no ready compute node"));

        nodes[0].ready = true;
        let out = s.schedule_queue(&mut nodes, &mut queue);
        assert_eq!(out.placed, [("small".into(), "a".into())]);
        assert_eq!(ids(&queue), ["big", "arm"]);
        assert_eq!(
            out.waiting[1].1.to_string(),
            "no node fits: 1 is x86_64 (image is aarch64 only)"
        );

        nodes.push(node("b", "aarch64", 4000, 4 * GI));
        let out = s.schedule_queue(&mut nodes, &mut queue);
        assert_eq!(
            out.placed,
            [("big".into(), "b".into()), ("arm".into(), "b".into())]
        );
        assert!(queue.is_empty() && out.waiting.is_empty());
    }

    #[test]
    fn host_ports_placed_earlier_in_the_pass_are_taken() {
        // Binpack would put both on the fuller node if ports did not count.
        let s = Scheduler::new(Box::new(Binpack));
        let mut nodes = vec![
            node("a", "x86_64", 4000, 8 * GI).alloc(1000, GI),
            node("b", "x86_64", 4000, 8 * GI),
        ];
        let mut queue = vec![
            req("web-0", 100, GI).port(8080),
            req("web-1", 100, GI).port(8080),
            req("dns", 100, GI).udp_port(8080),
        ];
        let out = s.schedule_queue(&mut nodes, &mut queue);
        assert_eq!(
            out.placed,
            [
                ("web-0".into(), "a".into()),
                ("web-1".into(), "b".into()),
                // Same number, other protocol: no clash, so the fullest node again.
                ("dns".into(), "a".into()),
            ]
        );
        assert!(queue.is_empty() && out.waiting.is_empty());

        // One node: the second waits, and says why; releasing the first frees the port.
        let mut one = vec![node("a", "x86_64", 4000, 8 * GI)];
        let mut queue = vec![
            req("web-0", 100, GI).port(8080),
            req("web-1", 100, GI).port(8080),
        ];
        let out = s.schedule_queue(&mut one, &mut queue);
        assert_eq!(out.placed, [("web-0".into(), "a".into())]);
        assert_eq!(ids(&queue), ["web-1"]);
        assert_eq!(
            out.waiting[0].1.to_string(),
            "no node fits: 1 has host port 8080/tcp taken"
        );
        one[0].release(&req("web-0", 100, GI).port(8080));
        let out = s.schedule_queue(&mut one, &mut queue);
        assert_eq!(out.placed, [("web-1".into(), "a".into())]);
    }

    #[test]
    fn same_input_same_outcome() {
        let make = || -> (Vec<NodeView>, Vec<Request>) {
            let nodes = (0..10)
                .map(|i| node(&format!("n{i}"), "x86_64", 2000, 2 * GI))
                .collect();
            let queue = (0..40)
                .map(|i| req(&format!("t{i}"), 300 + (i % 4) * 100, GI / 2).group("g"))
                .collect();
            (nodes, queue)
        };
        let s = Scheduler::default();
        let (mut n1, mut q1) = make();
        let (mut n2, mut q2) = make();
        assert_eq!(
            s.schedule_queue(&mut n1, &mut q1),
            s.schedule_queue(&mut n2, &mut q2)
        );
        assert_eq!(q1, q2);
    }
}
