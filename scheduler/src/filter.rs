//! The filters: whether a node can take a request at all (ready, not cordoned, not avoided, right
//! architecture, matching labels, the request's host ports free, enough free CPU and memory).
//! Owns the order of the checks, which decides the one reason a node is counted under;
//! scoring lives in `policy`, wording in `reason`.

use cloudos_units::{format_bytes, format_cpu};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::types::{HostPort, NodeView, Request};

/// Why one node cannot take one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Error)]
pub enum Unfit {
    #[error("node is not ready")]
    NotReady,
    #[error("node is cordoned")]
    Cordoned,
    #[error("node is {node} (image is {} only)", .wanted.join(", "))]
    Arch { node: String, wanted: Vec<String> },
    #[error("node label {key} is {} (wanted {wanted})", .found.as_deref().unwrap_or("unset"))]
    Selector {
        key: String,
        wanted: String,
        found: Option<String>,
    },
    #[error("host port {port} is taken on the node")]
    Port { port: HostPort },
    #[error("node lacks cpu (need {}, free {})", format_cpu(*.need), format_cpu(*.free))]
    Cpu { free: u64, need: u64 },
    #[error("node lacks memory (need {}, free {})", format_bytes(*.need), format_bytes(*.free))]
    Memory { free: u64, need: u64 },
    #[error("node is on the request's avoid list")]
    Avoided,
    #[error("the work is pinned to another node (its volumes are there)")]
    Elsewhere,
}

/// `Unfit` without owned strings: the placement scan meets it on most nodes of a large
/// cluster, so it must not allocate; only `check` and the no-fit report turn it into words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Miss<'a> {
    Elsewhere,
    NotReady,
    Cordoned,
    Avoided,
    Arch,
    Selector {
        key: &'a str,
        wanted: &'a str,
        found: Option<&'a str>,
    },
    /// The first of the request's host ports that work on the node holds.
    Port(HostPort),
    Cpu {
        free: u64,
        need: u64,
    },
    Memory {
        free: u64,
        need: u64,
    },
}

/// The filters, for one node: `Ok` when the node can take the request.
pub fn check(node: &NodeView, req: &Request) -> Result<(), Unfit> {
    match miss(node, req) {
        None => Ok(()),
        Some(m) => Err(match m {
            Miss::Elsewhere => Unfit::Elsewhere,
            Miss::NotReady => Unfit::NotReady,
            Miss::Cordoned => Unfit::Cordoned,
            Miss::Avoided => Unfit::Avoided,
            Miss::Arch => Unfit::Arch {
                node: node.arch.clone(),
                wanted: req.archs.clone(),
            },
            Miss::Selector { key, wanted, found } => Unfit::Selector {
                key: key.to_string(),
                wanted: wanted.to_string(),
                found: found.map(str::to_string),
            },
            Miss::Port(port) => Unfit::Port { port },
            Miss::Cpu { free, need } => Unfit::Cpu { free, need },
            Miss::Memory { free, need } => Unfit::Memory { free, need },
        }),
    }
}

/// The first filter `node` fails, if any. The order puts the reasons a person can act on
/// least (not ready, cordoned, avoided, architecture) first, and cpu and memory last, so a
/// node is reported under the reason that would still hold if resources were freed: a host
/// port taken on the node comes before them, as freeing cpu or memory does not free it.
pub(crate) fn miss<'a>(node: &'a NodeView, req: &'a Request) -> Option<Miss<'a>> {
    // First: a node that may not take the work at all says nothing about it.
    if req.pinned.as_ref().is_some_and(|pin| *pin != node.name) {
        return Some(Miss::Elsewhere);
    }
    if !node.ready {
        return Some(Miss::NotReady);
    }
    if node.cordoned {
        return Some(Miss::Cordoned);
    }
    // A pinned request goes back to its node whatever happened there before.
    if req.pinned.is_none() && req.avoid.contains(&node.name) {
        return Some(Miss::Avoided);
    }
    if !arch_matches(&node.arch, &req.archs) {
        return Some(Miss::Arch);
    }
    for (key, wanted) in &req.node_selector {
        let found = node.labels.get(key).map(String::as_str);
        if found != Some(wanted.as_str()) {
            return Some(Miss::Selector { key, wanted, found });
        }
    }
    if let Some(&port) = req.ports.iter().find(|p| node.port_taken(p)) {
        return Some(Miss::Port(port));
    }
    let free = node.free();
    let need = req.resources;
    if need.cpu_millis > free.cpu_millis {
        return Some(Miss::Cpu {
            free: free.cpu_millis,
            need: need.cpu_millis,
        });
    }
    if need.memory_bytes > free.memory_bytes {
        return Some(Miss::Memory {
            free: free.memory_bytes,
            need: need.memory_bytes,
        });
    }
    None
}

fn arch_matches(node: &str, wanted: &[String]) -> bool {
    wanted.is_empty()
        || wanted
            .iter()
            .any(|w| canonical_arch(w) == canonical_arch(node))
}

/// Image indexes say "arm64"/"amd64" where `uname -m` says "aarch64"/"x86_64"; either
/// spelling reaching us must mean the same machine.
pub(crate) fn canonical_arch(arch: &str) -> &str {
    match arch {
        "arm64" | "aarch64" => "aarch64",
        "amd64" | "x86_64" | "x86-64" => "x86_64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, req, GI, MI};
    use crate::types::HostPort;

    #[test]
    fn filter_table() {
        let n = node("n1", "x86_64", 2000, 4 * GI)
            .label("zone", "a")
            .alloc(500, GI);
        let cases: Vec<(&str, NodeView, Request, Result<(), Unfit>)> = vec![
            ("fits", n.clone(), req("r", 1500, 3 * GI), Ok(())),
            (
                "not ready",
                n.clone().not_ready(),
                req("r", 1, 1),
                Err(Unfit::NotReady),
            ),
            (
                "cordoned",
                n.clone().cordoned(),
                req("r", 1, 1),
                Err(Unfit::Cordoned),
            ),
            (
                "not ready wins over cordoned",
                n.clone().cordoned().not_ready(),
                req("r", 1, 1),
                Err(Unfit::NotReady),
            ),
            (
                "avoided",
                n.clone(),
                req("r", 1, 1).avoid("n1"),
                Err(Unfit::Avoided),
            ),
            (
                "avoid other node",
                n.clone(),
                req("r", 1, 1).avoid("n2"),
                Ok(()),
            ),
            (
                "arch",
                n.clone(),
                req("r", 1, 1).archs(&["aarch64"]),
                Err(Unfit::Arch {
                    node: "x86_64".into(),
                    wanted: vec!["aarch64".into()],
                }),
            ),
            ("arch any", n.clone(), req("r", 1, 1).archs(&[]), Ok(())),
            (
                "arch amd64 alias",
                n.clone(),
                req("r", 1, 1).archs(&["arm64", "amd64"]),
                Ok(()),
            ),
            (
                "selector matches",
                n.clone(),
                req("r", 1, 1).select("zone", "a"),
                Ok(()),
            ),
            (
                "selector other value",
                n.clone(),
                req("r", 1, 1).select("zone", "b"),
                Err(Unfit::Selector {
                    key: "zone".into(),
                    wanted: "b".into(),
                    found: Some("a".into()),
                }),
            ),
            (
                "selector missing label",
                n.clone(),
                req("r", 1, 1).select("gpu", "true"),
                Err(Unfit::Selector {
                    key: "gpu".into(),
                    wanted: "true".into(),
                    found: None,
                }),
            ),
            ("cpu exactly fits", n.clone(), req("r", 1500, 0), Ok(())),
            (
                "cpu",
                n.clone(),
                req("r", 1501, 0),
                Err(Unfit::Cpu {
                    free: 1500,
                    need: 1501,
                }),
            ),
            (
                "memory",
                n.clone(),
                req("r", 0, 3 * GI + 1),
                Err(Unfit::Memory {
                    free: 3 * GI,
                    need: 3 * GI + 1,
                }),
            ),
            (
                "overcommitted node has zero free",
                n.clone().alloc(5000, 0),
                req("r", 1, 0),
                Err(Unfit::Cpu { free: 0, need: 1 }),
            ),
            (
                "not ready wins over arch",
                n.clone().not_ready(),
                req("r", 1, 1).archs(&["aarch64"]),
                Err(Unfit::NotReady),
            ),
            (
                "cpu is checked before memory",
                n.clone(),
                req("r", 9000, 9 * GI),
                Err(Unfit::Cpu {
                    free: 1500,
                    need: 9000,
                }),
            ),
            (
                "port free",
                n.clone().port(9090),
                req("r", 1, 1).port(8080),
                Ok(()),
            ),
            (
                "port taken",
                n.clone().port(8080),
                req("r", 1, 1).port(8080),
                Err(Unfit::Port {
                    port: HostPort::tcp(8080),
                }),
            ),
            (
                "same number, other protocol",
                n.clone().udp_port(8080),
                req("r", 1, 1).port(8080),
                Ok(()),
            ),
            (
                "udp port taken",
                n.clone().udp_port(53),
                req("r", 1, 1).port(53).udp_port(53),
                Err(Unfit::Port {
                    port: HostPort::udp(53),
                }),
            ),
            (
                "the first taken port of the request is named",
                n.clone().port(443).port(80),
                req("r", 1, 1).port(8080).port(443).port(80),
                Err(Unfit::Port {
                    port: HostPort::tcp(443),
                }),
            ),
            (
                "a released port (count 0) is free",
                {
                    let mut m = n.clone();
                    m.ports.insert(HostPort::tcp(8080), 0);
                    m
                },
                req("r", 1, 1).port(8080),
                Ok(()),
            ),
            (
                "port is checked before cpu",
                n.clone().port(8080),
                req("r", 9000, 9 * GI).port(8080),
                Err(Unfit::Port {
                    port: HostPort::tcp(8080),
                }),
            ),
            (
                "selector is checked before port",
                n.clone().port(8080),
                req("r", 1, 1).port(8080).select("zone", "b"),
                Err(Unfit::Selector {
                    key: "zone".into(),
                    wanted: "b".into(),
                    found: Some("a".into()),
                }),
            ),
            (
                "cordoned is checked before port",
                n.clone().port(8080).cordoned(),
                req("r", 1, 1).port(8080),
                Err(Unfit::Cordoned),
            ),
        ];
        for (name, node, req, want) in cases {
            assert_eq!(check(&node, &req), want, "{name}");
        }
    }

    #[test]
    fn unfit_messages() {
        let cases = [
            (Unfit::NotReady, "node is not ready"),
            (Unfit::Cordoned, "node is cordoned"),
            (Unfit::Avoided, "node is on the request's avoid list"),
            (
                Unfit::Arch {
                    node: "aarch64".into(),
                    wanted: vec!["x86_64".into()],
                },
                "node is aarch64 (image is x86_64 only)",
            ),
            (
                Unfit::Selector {
                    key: "zone".into(),
                    wanted: "b".into(),
                    found: None,
                },
                "node label zone is unset (wanted b)",
            ),
            (
                Unfit::Port {
                    port: HostPort::tcp(8080),
                },
                "host port 8080/tcp is taken on the node",
            ),
            (
                Unfit::Cpu {
                    free: 250,
                    need: 500,
                },
                "node lacks cpu (need 500m, free 250m)",
            ),
            (
                Unfit::Memory {
                    free: 32 * MI,
                    need: 64 * MI,
                },
                "node lacks memory (need 64Mi, free 32Mi)",
            ),
        ];
        for (unfit, want) in cases {
            assert_eq!(unfit.to_string(), want);
        }
    }
}
