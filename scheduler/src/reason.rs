//! Why work waits: `NoFit` counts the nodes that turned a request down by reason and
//! words it for a person reading `cloudos ps`. Built only when no node fits, so it may
//! allocate. Sizes and CPU are worded by `cloudos-units`, as everywhere else.

use std::collections::BTreeMap;
use std::fmt;

use cloudos_units::{format_bytes, format_cpu};
use serde::{Deserialize, Serialize};

use crate::filter::{canonical_arch, miss, Miss};
use crate::types::{HostPort, NodeView, Request};

/// No node can take a request, and how many nodes declined for which reason; each node
/// is counted once, under the first filter it fails. `Display` is the sentence shown to
/// the user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoFit {
    /// Nodes considered.
    pub nodes: usize,
    pub not_ready: usize,
    /// Cordoned by an admin (`cloudos node cordon`).
    #[serde(default)]
    pub cordoned: usize,
    pub avoided: usize,
    /// Node architecture → nodes of it that the image does not support.
    pub arch: BTreeMap<String, usize>,
    /// The image's architectures, for the message.
    pub wanted_archs: Vec<String>,
    /// "key=value" the request selects → nodes without that label value.
    pub selector: BTreeMap<String, usize>,
    /// Host port the request publishes ("8080/tcp") → nodes where work already holds it;
    /// a node is counted under the first of the request's ports it has taken.
    #[serde(default)]
    pub ports: BTreeMap<String, usize>,
    pub cpu: Option<Shortfall>,
    pub memory: Option<Shortfall>,
}

/// Nodes short of one resource, with what the request needs and the most any of them has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortfall {
    pub nodes: usize,
    pub need: u64,
    pub most_free: u64,
}

impl Shortfall {
    fn add(slot: &mut Option<Shortfall>, free: u64, need: u64) {
        let s = slot.get_or_insert(Shortfall {
            nodes: 0,
            need,
            most_free: 0,
        });
        s.nodes += 1;
        s.most_free = s.most_free.max(free);
    }
}

impl NoFit {
    /// Runs the filters over every node again, this time keeping the reasons. Only
    /// called once the placement scan found nothing, so the common path stays lean.
    pub fn collect(nodes: &[NodeView], req: &Request) -> NoFit {
        let mut nf = NoFit {
            nodes: nodes.len(),
            ..NoFit::default()
        };
        // Keyed by borrowed strings while counting: a String per declining node would
        // make this pass cost ten times the placement scan on a large cluster.
        let mut archs: Vec<(&str, usize)> = Vec::new();
        let mut labels: Vec<((&str, &str), usize)> = Vec::new();
        let mut ports: Vec<(HostPort, usize)> = Vec::new();
        for node in nodes {
            match miss(node, req) {
                None => {}
                // Not a candidate at all: the reason is the pinned node's.
                Some(Miss::Elsewhere) => nf.nodes -= 1,
                Some(Miss::NotReady) => nf.not_ready += 1,
                Some(Miss::Cordoned) => nf.cordoned += 1,
                Some(Miss::Avoided) => nf.avoided += 1,
                Some(Miss::Arch) => bump(&mut archs, canonical_arch(&node.arch)),
                Some(Miss::Selector { key, wanted, .. }) => bump(&mut labels, (key, wanted)),
                Some(Miss::Port(port)) => bump(&mut ports, port),
                Some(Miss::Cpu { free, need }) => Shortfall::add(&mut nf.cpu, free, need),
                Some(Miss::Memory { free, need }) => Shortfall::add(&mut nf.memory, free, need),
            }
        }
        nf.arch = archs
            .into_iter()
            .map(|(arch, n)| (arch.to_string(), n))
            .collect();
        nf.selector = labels
            .into_iter()
            .map(|((k, v), n)| (format!("{k}={v}"), n))
            .collect();
        nf.ports = ports
            .into_iter()
            .map(|(port, n)| (port.to_string(), n))
            .collect();
        if !nf.arch.is_empty() {
            nf.wanted_archs = req
                .archs
                .iter()
                .map(|a| canonical_arch(a).to_string())
                .collect();
        }
        nf
    }

    /// True when there is no ready node at all: then the cluster, not the request, is
    /// what needs attention.
    pub fn no_ready_node(&self) -> bool {
        self.not_ready == self.nodes
    }

    /// One phrase per reason, with its node count, most common first.
    fn phrases(&self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        if self.not_ready > 0 {
            out.push((
                self.not_ready,
                format!("{} not ready", is_are(self.not_ready)),
            ));
        }
        if self.cordoned > 0 {
            out.push((self.cordoned, format!("{} cordoned", is_are(self.cordoned))));
        }
        if self.avoided > 0 {
            out.push((
                self.avoided,
                format!("{} on the request's avoid list", is_are(self.avoided)),
            ));
        }
        let wanted = self.wanted_archs.join(", ");
        for (arch, &n) in &self.arch {
            out.push((n, format!("{} {arch} (image is {wanted} only)", is_are(n))));
        }
        for (label, &n) in &self.selector {
            out.push((n, format!("{} label {label}", lack(n))));
        }
        for (port, &n) in &self.ports {
            out.push((n, format!("{} host port {port} taken", has_have(n))));
        }
        let shortfalls = [
            ("cpu", self.cpu, format_cpu as fn(u64) -> String),
            ("memory", self.memory, format_bytes),
        ];
        for (resource, shortfall, size) in shortfalls {
            if let Some(s) = shortfall {
                let (need, free) = (size(s.need), size(s.most_free));
                out.push((
                    s.nodes,
                    format!(
                        "{} {resource} (need {need}, most free {free})",
                        lack(s.nodes)
                    ),
                ));
            }
        }
        // Stable: equal counts keep the filter order above.
        out.sort_by_key(|p| std::cmp::Reverse(p.0));
        out
    }
}

/// Counts one more under `key`; a linear search, as there are only a few architectures,
/// selector labels and host ports per request.
fn bump<K: PartialEq>(counts: &mut Vec<(K, usize)>, key: K) {
    match counts.iter_mut().find(|(k, _)| *k == key) {
        Some((_, n)) => *n += 1,
        None => counts.push((key, 1)),
    }
}

fn is_are(n: usize) -> String {
    if n == 1 {
        "1 is".to_string()
    } else {
        format!("{n} are")
    }
}

fn has_have(n: usize) -> String {
    if n == 1 {
        "1 has".to_string()
    } else {
        format!("{n} have")
    }
}

fn lack(n: usize) -> String {
    if n == 1 {
        "1 lacks".to_string()
    } else {
        format!("{n} lack")
    }
}

impl fmt::Display for NoFit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.no_ready_node() {
            return f.write_str("no ready compute node");
        }
        let phrases: Vec<String> = self.phrases().into_iter().map(|(_, p)| p).collect();
        write!(f, "no node fits: {}", phrases.join(", "))
    }
}

impl std::error::Error for NoFit {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, req, GI, MI};

    /// The sentence for a request over a set of nodes, table by table.
    #[test]
    fn reason_texts() {
        let x86 = |name: &str| node(name, "x86_64", 4000, 8 * GI);
        let arm = |name: &str| node(name, "aarch64", 4000, 8 * GI);
        let cases: Vec<(&str, Vec<NodeView>, Request, &str)> = vec![
            ("no nodes", vec![], req("r", 1, 1), "no ready compute node"),
            ("none ready", vec![x86("a").not_ready(), x86("b").not_ready()], req("r", 1, 1), "no ready compute node"),
            (
                "the brief's example",
                vec![x86("a").alloc(0, 8 * GI - 32 * MI), x86("b").alloc(0, 8 * GI - 16 * MI), arm("c")],
                req("r", 100, 64 * MI).archs(&["x86_64"]),
                "no node fits: 2 lack memory (need 64Mi, most free 32Mi), 1 is aarch64 (image is x86_64 only)",
            ),
            (
                "arm64-only image on x86 nodes",
                vec![x86("a"), x86("b")],
                req("r", 1, 1).archs(&["arm64"]),
                "no node fits: 2 are x86_64 (image is aarch64 only)",
            ),
            (
                "cpu",
                vec![x86("a").alloc(3750, 0)],
                req("r", 500, 0),
                "no node fits: 1 lacks cpu (need 500m, most free 250m)",
            ),
            (
                "selector and not ready",
                vec![x86("a").not_ready(), x86("b").label("zone", "b"), x86("c")],
                req("r", 1, 1).select("zone", "a"),
                "no node fits: 2 lack label zone=a, 1 is not ready",
            ),
            (
                "the only node is cordoned",
                vec![x86("a").cordoned()],
                req("r", 1, 1),
                "no node fits: 1 is cordoned",
            ),
            (
                "cordoned and full",
                vec![x86("a").cordoned(), x86("b").alloc(4000, 0), x86("c").cordoned()],
                req("r", 500, 1),
                "no node fits: 2 are cordoned, 1 lacks cpu (need 500m, most free 0)",
            ),
            (
                "avoided, ties in filter order",
                vec![x86("a"), x86("b").not_ready()],
                req("r", 1, 1).avoid("a"),
                "no node fits: 1 is not ready, 1 is on the request's avoid list",
            ),
            (
                "the only node has the port taken",
                vec![x86("a").port(8080)],
                req("r", 1, 1).port(8080),
                "no node fits: 1 has host port 8080/tcp taken",
            ),
            (
                "ports, full and not ready",
                vec![x86("a").port(8080), x86("b").port(8080), x86("c").alloc(4000, 0), x86("d").not_ready()],
                req("r", 500, 1).port(8080),
                "no node fits: 2 have host port 8080/tcp taken, 1 is not ready, 1 lacks cpu (need 500m, most free 0)",
            ),
            (
                "each node under the first of the request's ports it has taken",
                vec![x86("a").port(8080).udp_port(53), x86("b").udp_port(53), x86("c").udp_port(53)],
                req("r", 1, 1).port(8080).udp_port(53),
                "no node fits: 2 have host port 53/udp taken, 1 has host port 8080/tcp taken",
            ),
            (
                "a port taken counts over a lack of cpu on the same node",
                vec![x86("a").port(8080).alloc(4000, 0)],
                req("r", 500, 1).port(8080),
                "no node fits: 1 has host port 8080/tcp taken",
            ),
            (
                "ports tie after labels and before cpu",
                vec![x86("a").label("zone", "a").port(8080), x86("b").label("zone", "a").alloc(4000, 0).port(9090), x86("c")],
                req("r", 500, 1).port(8080).select("zone", "a"),
                "no node fits: 1 lacks label zone=a, 1 has host port 8080/tcp taken, 1 lacks cpu (need 500m, most free 0)",
            ),
        ];
        for (name, nodes, req, want) in cases {
            assert_eq!(NoFit::collect(&nodes, &req).to_string(), want, "{name}");
        }
    }

    #[test]
    fn counts_are_kept_for_the_api() {
        let nodes = [
            node("a", "x86_64", 1000, GI),
            node("b", "x86_64", 1000, 2 * GI),
        ];
        let nf = NoFit::collect(&nodes, &req("r", 0, 4 * GI));
        assert_eq!(
            nf.memory,
            Some(Shortfall {
                nodes: 2,
                need: 4 * GI,
                most_free: 2 * GI
            })
        );
        assert_eq!(nf.nodes, 2);
        let json = serde_json::to_string(&nf).unwrap();
        assert_eq!(serde_json::from_str::<NoFit>(&json).unwrap(), nf);

        let nodes = [
            node("a", "x86_64", 1000, GI).port(8080),
            node("b", "x86_64", 1000, GI).port(8080).udp_port(53),
            node("c", "x86_64", 1000, GI).udp_port(53),
        ];
        let nf = NoFit::collect(&nodes, &req("r", 0, 0).port(8080).udp_port(53));
        assert_eq!(
            nf.ports,
            [("8080/tcp".to_string(), 2), ("53/udp".to_string(), 1)].into()
        );
        let json = serde_json::to_string(&nf).unwrap();
        assert_eq!(serde_json::from_str::<NoFit>(&json).unwrap(), nf);
    }

    /// A reason stored before ports were counted still reads back.
    #[test]
    fn ports_default_when_absent() {
        let nf: NoFit = serde_json::from_str(
            r#"{"nodes":1,"not_ready":0,"avoided":0,"arch":{},"wanted_archs":[],"selector":{},"cpu":null,"memory":null}"#,
        )
        .unwrap();
        assert!(nf.ports.is_empty());
    }
}
