//! The scheduler's vocabulary: what a node offers, what a request asks for, and the
//! bookkeeping that moves a request's resources onto a node. Owns request validation
//! (the master answers a failed one with a 400); knows nothing of filtering or scoring.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// One million millicores: a thousand cores is beyond any node we expect, so more is a typo.
pub const MAX_CPU_MILLIS: u64 = 1_000_000;
/// One PiB: beyond any machine's memory, so more is a unit mistake.
pub const MAX_MEMORY_BYTES: u64 = 1 << 50;

/// An amount of CPU and memory: a node's capacity, its allocation, or a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl Resources {
    pub fn new(cpu_millis: u64, memory_bytes: u64) -> Self {
        Resources {
            cpu_millis,
            memory_bytes,
        }
    }

    /// Saturating, so a bogus heartbeat cannot wrap an allocation around.
    pub fn saturating_add(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }

    /// Saturating, so releasing work twice (or after a restart) floors at zero.
    pub fn saturating_sub(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
        }
    }
}

/// The master's view of one compute node at the time of a decision.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    /// `uname -m` spelling: "x86_64" or "aarch64".
    pub arch: String,
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
    /// Cordoned by an admin: takes no new work, whatever it has free.
    #[serde(default)]
    pub cordoned: bool,
    /// What the node offers to workloads (from heartbeats).
    pub capacity: Resources,
    /// Sum of the requests of the work placed on it.
    pub allocated: Resources,
    /// Replicas per service name on this node, for spreading a service.
    pub groups: BTreeMap<String, u32>,
}

impl NodeView {
    /// What is left for new work; zero (not negative) when the node is overcommitted.
    pub fn free(&self) -> Resources {
        self.capacity.saturating_sub(self.allocated)
    }

    /// Records `req` as running here, as `Scheduler::schedule_queue` does for each
    /// placement; the master calls it after `Scheduler::place` to keep its view current.
    pub fn assign(&mut self, req: &Request) {
        self.allocated = self.allocated.saturating_add(req.resources);
        if let Some(group) = &req.group {
            // Only a placement allocates here, never the scan over nodes.
            *self.groups.entry(group.clone()).or_insert(0) += 1;
        }
    }

    /// Undoes `assign` when the work ends or is moved away.
    pub fn release(&mut self, req: &Request) {
        self.allocated = self.allocated.saturating_sub(req.resources);
        if let Some(group) = &req.group {
            if let Some(count) = self.groups.get_mut(group) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.groups.remove(group);
                }
            }
        }
    }
}

/// One task or service replica waiting for a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: String,
    /// Zero in a field means no reservation of that resource: the master applies its
    /// defaults before asking.
    pub resources: Resources,
    /// Empty: any architecture; else the image's architectures (`uname -m` spelling;
    /// "arm64" and "amd64" are understood too).
    pub archs: Vec<String>,
    /// All must match the node's labels.
    pub node_selector: BTreeMap<String, String>,
    /// A service's name: its replicas spread across nodes.
    pub group: Option<String>,
    /// Node names not to use (e.g. the node a lost task ran on).
    pub avoid: Vec<String>,
}

/// Why a request is refused before scheduling; the master maps each to a 400.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum InvalidRequest {
    #[error("request has an empty id")]
    EmptyId,
    #[error("cpu request of {millis}m is more than the {max}m any node can have; cpu is in millicores (1000m = 1 core)", max = MAX_CPU_MILLIS)]
    CpuTooLarge { millis: u64 },
    #[error(
        "memory request of {bytes} bytes is more than 1 PiB; memory is in bytes (64Mi = 67108864)"
    )]
    MemoryTooLarge { bytes: u64 },
    #[error("architecture {index} is empty; use the `uname -m` spelling, e.g. x86_64 or aarch64")]
    EmptyArch { index: usize },
    #[error("node selector has an empty label key")]
    EmptySelectorKey,
    #[error("group name is empty; leave it out for a task, or use the service's name")]
    EmptyGroup,
}

impl Request {
    /// A request with only an id and resources: any node, no group.
    pub fn new(id: impl Into<String>, resources: Resources) -> Self {
        Request {
            id: id.into(),
            resources,
            ..Request::default()
        }
    }

    /// Rejects input no node could ever satisfy or that is plainly a mistake, so the
    /// user hears about it now instead of watching the work wait forever.
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        if self.id.trim().is_empty() {
            return Err(InvalidRequest::EmptyId);
        }
        if self.resources.cpu_millis > MAX_CPU_MILLIS {
            return Err(InvalidRequest::CpuTooLarge {
                millis: self.resources.cpu_millis,
            });
        }
        if self.resources.memory_bytes > MAX_MEMORY_BYTES {
            return Err(InvalidRequest::MemoryTooLarge {
                bytes: self.resources.memory_bytes,
            });
        }
        if let Some(index) = self.archs.iter().position(|a| a.trim().is_empty()) {
            return Err(InvalidRequest::EmptyArch { index });
        }
        if self.node_selector.keys().any(|k| k.trim().is_empty()) {
            return Err(InvalidRequest::EmptySelectorKey);
        }
        if self.group.as_deref().is_some_and(|g| g.trim().is_empty()) {
            return Err(InvalidRequest::EmptyGroup);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_table() {
        let ok = Request::new("t1", Resources::new(500, 64 << 20));
        let cases: Vec<(&str, Request, Result<(), InvalidRequest>)> = vec![
            ("plain", ok.clone(), Ok(())),
            (
                "zero resources mean no reservation",
                Request::new("t", Resources::default()),
                Ok(()),
            ),
            (
                "limits are inclusive",
                Request::new("t", Resources::new(MAX_CPU_MILLIS, MAX_MEMORY_BYTES)),
                Ok(()),
            ),
            (
                "empty id",
                Request {
                    id: String::new(),
                    ..ok.clone()
                },
                Err(InvalidRequest::EmptyId),
            ),
            (
                "blank id",
                Request {
                    id: "  ".into(),
                    ..ok.clone()
                },
                Err(InvalidRequest::EmptyId),
            ),
            (
                "cpu",
                Request::new("t", Resources::new(MAX_CPU_MILLIS + 1, 0)),
                Err(InvalidRequest::CpuTooLarge {
                    millis: MAX_CPU_MILLIS + 1,
                }),
            ),
            (
                "memory",
                Request::new("t", Resources::new(0, MAX_MEMORY_BYTES + 1)),
                Err(InvalidRequest::MemoryTooLarge {
                    bytes: MAX_MEMORY_BYTES + 1,
                }),
            ),
            (
                "empty arch",
                Request {
                    archs: vec!["x86_64".into(), "".into()],
                    ..ok.clone()
                },
                Err(InvalidRequest::EmptyArch { index: 1 }),
            ),
            (
                "empty selector key",
                Request {
                    node_selector: [(String::new(), "a".into())].into(),
                    ..ok.clone()
                },
                Err(InvalidRequest::EmptySelectorKey),
            ),
            (
                "empty group",
                Request {
                    group: Some(String::new()),
                    ..ok.clone()
                },
                Err(InvalidRequest::EmptyGroup),
            ),
        ];
        for (name, req, want) in cases {
            assert_eq!(req.validate(), want, "{name}");
        }
    }

    #[test]
    fn validate_messages_are_lowercase_and_helpful() {
        let err = Request::new("t", Resources::new(2_000_000, 0))
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cpu request of 2000000m is more than the 1000000m any node can have; cpu is in millicores (1000m = 1 core)"
        );
        let err = Request::new("", Resources::default())
            .validate()
            .unwrap_err();
        assert_eq!(err.to_string(), "request has an empty id");
    }

    #[test]
    fn assign_and_release_keep_the_books() {
        let mut node = NodeView {
            capacity: Resources::new(1000, 1 << 30),
            ..NodeView::default()
        };
        let req = Request {
            group: Some("web".into()),
            ..Request::new("r", Resources::new(300, 1 << 20))
        };
        node.assign(&req);
        node.assign(&req);
        assert_eq!(node.allocated, Resources::new(600, 2 << 20));
        assert_eq!(node.groups["web"], 2);
        assert_eq!(node.free(), Resources::new(400, (1 << 30) - (2 << 20)));
        node.release(&req);
        node.release(&req);
        node.release(&req); // one too many floors at zero
        assert_eq!(node.allocated, Resources::default());
        assert!(node.groups.is_empty());
    }

    #[test]
    fn serde_round_trip() {
        let req = Request {
            archs: vec!["aarch64".into()],
            node_selector: [("zone".into(), "a".into())].into(),
            group: Some("web".into()),
            avoid: vec!["n1".into()],
            ..Request::new("r", Resources::new(1, 2))
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), req);
    }
}
