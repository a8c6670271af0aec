//! The scheduler's vocabulary: what a node offers, what a request asks for, and the
//! bookkeeping that moves a request's resources and host ports onto a node. Owns request validation
//! (the master answers a failed one with a 400); knows nothing of filtering or scoring.

use std::collections::BTreeMap;
use std::fmt;

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

/// The transport protocol of a published port: a TCP and a UDP port of the same number
/// are different ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    Tcp,
    Udp,
}

impl PortProtocol {
    /// The lowercase name, as in `8080/tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        }
    }
}

impl fmt::Display for PortProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A port on the node's own addresses that a container publishes (the `8080` of
/// `--publish 8080:80/tcp`); only one piece of work on a node can hold it. Shown as
/// `8080/tcp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HostPort {
    pub protocol: PortProtocol,
    pub port: u16,
}

impl HostPort {
    pub fn tcp(port: u16) -> Self {
        HostPort {
            protocol: PortProtocol::Tcp,
            port,
        }
    }

    pub fn udp(port: u16) -> Self {
        HostPort {
            protocol: PortProtocol::Udp,
            port,
        }
    }

    /// Reads back what `Display` writes ("8080/tcp"); nothing else.
    fn parse(s: &str) -> Option<HostPort> {
        let (port, protocol) = s.split_once('/')?;
        let protocol = match protocol {
            "tcp" => PortProtocol::Tcp,
            "udp" => PortProtocol::Udp,
            _ => return None,
        };
        Some(HostPort {
            protocol,
            port: port.parse().ok()?,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

/// `NodeView::ports` as a map keyed by "8080/tcp": JSON map keys must be strings, so the
/// derived form of a `HostPort` key would fail to serialize.
mod port_counts {
    use std::collections::BTreeMap;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::HostPort;

    pub fn serialize<S: Serializer>(
        ports: &BTreeMap<HostPort, u32>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(ports.iter().map(|(port, n)| (port.to_string(), n)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<HostPort, u32>, D::Error> {
        BTreeMap::<String, u32>::deserialize(d)?
            .into_iter()
            .map(|(key, n)| match HostPort::parse(&key) {
                Some(port) => Ok((port, n)),
                None => Err(D::Error::custom(format!(
                    "host port {key:?} is not PORT/tcp or PORT/udp"
                ))),
            })
            .collect()
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
    /// Host ports held by the work placed on it, with how many pieces of work hold each
    /// (one, unless the books were built from a view that already overlapped), so that
    /// `release` gives back exactly what `assign` took.
    #[serde(default, with = "port_counts")]
    pub ports: BTreeMap<HostPort, u32>,
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
        for port in &req.ports {
            *self.ports.entry(*port).or_insert(0) += 1;
        }
    }

    /// True when work placed here holds `port`.
    pub fn port_taken(&self, port: &HostPort) -> bool {
        self.ports.get(port).is_some_and(|&n| n > 0)
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
        for port in &req.ports {
            if let Some(count) = self.ports.get_mut(port) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.ports.remove(port);
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
    /// Host ports the work publishes (`--publish 8080:80/tcp` publishes 8080/tcp): only a
    /// node where none of them is taken can take it.
    #[serde(default)]
    pub ports: Vec<HostPort>,
    /// Only this node may take it (it holds the work's volumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
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
    #[error("published port {index} has host port 0; use a host port from 1 to 65535, e.g. --publish 8080:80/tcp")]
    ZeroHostPort { index: usize },
    #[error("host port {port} is published twice; publish it once, or use another host port for the second")]
    DuplicateHostPort { port: HostPort },
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
        if let Some(index) = self.ports.iter().position(|p| p.port == 0) {
            return Err(InvalidRequest::ZeroHostPort { index });
        }
        // Quadratic, but a request publishes a handful of ports at most.
        for (i, port) in self.ports.iter().enumerate() {
            if self.ports[..i].contains(port) {
                return Err(InvalidRequest::DuplicateHostPort { port: *port });
            }
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
            (
                "ports",
                Request {
                    ports: vec![HostPort::tcp(8080), HostPort::udp(8080), HostPort::tcp(1)],
                    ..ok.clone()
                },
                Ok(()),
            ),
            (
                "host port 0",
                Request {
                    ports: vec![HostPort::tcp(8080), HostPort::udp(0)],
                    ..ok.clone()
                },
                Err(InvalidRequest::ZeroHostPort { index: 1 }),
            ),
            (
                "host port twice",
                Request {
                    ports: vec![HostPort::tcp(8080), HostPort::udp(53), HostPort::tcp(8080)],
                    ..ok.clone()
                },
                Err(InvalidRequest::DuplicateHostPort {
                    port: HostPort::tcp(8080),
                }),
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
        let err = InvalidRequest::ZeroHostPort { index: 0 };
        assert_eq!(
            err.to_string(),
            "published port 0 has host port 0; use a host port from 1 to 65535, e.g. --publish 8080:80/tcp"
        );
        let err = InvalidRequest::DuplicateHostPort {
            port: HostPort::udp(53),
        };
        assert_eq!(
            err.to_string(),
            "host port 53/udp is published twice; publish it once, or use another host port for the second"
        );
    }

    #[test]
    fn host_port_display() {
        assert_eq!(HostPort::tcp(8080).to_string(), "8080/tcp");
        assert_eq!(HostPort::udp(53).to_string(), "53/udp");
        for port in [HostPort::tcp(65535), HostPort::udp(1)] {
            assert_eq!(HostPort::parse(&port.to_string()), Some(port));
        }
        for bad in [
            "8080",
            "8080/sctp",
            "tcp/8080",
            "65536/tcp",
            "/tcp",
            "8080/TCP",
        ] {
            assert_eq!(HostPort::parse(bad), None, "{bad}");
        }
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
    fn assign_and_release_keep_the_ports() {
        let mut node = NodeView::default();
        let web = Request {
            ports: vec![HostPort::tcp(8080), HostPort::udp(8080)],
            ..Request::new("web", Resources::default())
        };
        let dns = Request {
            ports: vec![HostPort::udp(53)],
            ..Request::new("dns", Resources::default())
        };
        node.assign(&web);
        node.assign(&dns);
        assert!(node.port_taken(&HostPort::tcp(8080)));
        assert!(node.port_taken(&HostPort::udp(8080)));
        assert!(!node.port_taken(&HostPort::tcp(53)));
        // A view that already overlapped (two holders) is released one holder at a time.
        node.assign(&dns);
        assert_eq!(node.ports[&HostPort::udp(53)], 2);
        node.release(&dns);
        assert!(node.port_taken(&HostPort::udp(53)));
        node.release(&web);
        node.release(&dns);
        node.release(&dns); // one too many leaves nothing behind
        assert!(node.ports.is_empty());
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

        let with_ports = Request {
            ports: vec![HostPort::tcp(8080), HostPort::udp(53)],
            ..req.clone()
        };
        let json = serde_json::to_string(&with_ports).unwrap();
        assert!(
            json.contains(
                r#""ports":[{"protocol":"tcp","port":8080},{"protocol":"udp","port":53}]"#
            ),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), with_ports);
    }

    #[test]
    fn ports_default_when_absent() {
        let req: Request = serde_json::from_str(
            r#"{"id":"r","resources":{"cpu_millis":1,"memory_bytes":2},"archs":[],"node_selector":{},"group":null,"avoid":[]}"#,
        )
        .unwrap();
        assert!(req.ports.is_empty());
        let node: NodeView = serde_json::from_str(
            r#"{"name":"a","arch":"x86_64","labels":{},"ready":true,"capacity":{"cpu_millis":1,"memory_bytes":2},"allocated":{"cpu_millis":0,"memory_bytes":0},"groups":{}}"#,
        )
        .unwrap();
        assert!(node.ports.is_empty());
    }

    #[test]
    fn node_ports_serialize_as_a_map_by_name() {
        let mut node = NodeView::default();
        node.ports.insert(HostPort::tcp(8080), 1);
        node.ports.insert(HostPort::udp(53), 2);
        let json = serde_json::to_string(&node).unwrap();
        assert!(
            json.contains(r#""ports":{"8080/tcp":1,"53/udp":2}"#),
            "{json}"
        );
        let back: NodeView = serde_json::from_str(&json).unwrap();
        assert_eq!(back.ports, node.ports);
        let bad = json.replace("53/udp", "53/sctp");
        let err = serde_json::from_str::<NodeView>(&bad).unwrap_err();
        assert!(err.to_string().contains("53/sctp"), "{err}");
    }
}
