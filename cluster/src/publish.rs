//! Published ports (`--publish HOST:CONTAINER[/udp]`, issue 20): a port of the node's own
//! addresses that leads to a port of a container on the node's bridge. Parsed and checked
//! here, once, for the CLI, the master (which keeps two users of one host port off one
//! node) and the agent (which writes the forwarding rule).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The transport a published port forwards.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One published port. Serialized as its text (`8080:80/tcp`), as people write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortMapping {
    /// The port on every address of the node.
    pub host: u16,
    /// The port the container listens on.
    pub container: u16,
    pub protocol: Protocol,
}

/// Why a `--publish` value (or a node port) is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid port {text:?}: {why}; use {form}")]
pub struct PublishError {
    pub text: String,
    pub why: &'static str,
    /// What a good one looks like.
    pub form: &'static str,
}

const MAPPING_FORM: &str = "HOST:CONTAINER or HOST:CONTAINER/udp, such as 8080:80";
const NODE_PORT_FORM: &str = "PORT or PORT/udp, such as 9101";

impl FromStr for PortMapping {
    type Err = PublishError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why| PublishError {
            text: text.to_owned(),
            why,
            form: MAPPING_FORM,
        };
        let (ports, protocol) = match text.split_once('/') {
            None => (text, Protocol::Tcp),
            Some((ports, "tcp")) => (ports, Protocol::Tcp),
            Some((ports, "udp")) => (ports, Protocol::Udp),
            Some(_) => return Err(bad("the protocol is tcp or udp")),
        };
        let (host, container) = ports
            .split_once(':')
            .ok_or_else(|| bad("it names no host port"))?;
        let port = |p: &str| match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(bad("a port is a number from 1 to 65535")),
            Ok(p) => Ok(p),
        };
        Ok(PortMapping {
            host: port(host)?,
            container: port(container)?,
            protocol,
        })
    }
}

/// One port of a node: `PORT` (tcp) or `PORT/udp`, as in the node setting
/// `container_node_ports` (the node's own ports its bridge containers may open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodePort {
    pub port: u16,
    pub protocol: Protocol,
}

impl FromStr for NodePort {
    type Err = PublishError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why| PublishError {
            text: text.to_owned(),
            why,
            form: NODE_PORT_FORM,
        };
        let (port, protocol) = match text.split_once('/') {
            None => (text, Protocol::Tcp),
            Some((port, "tcp")) => (port, Protocol::Tcp),
            Some((port, "udp")) => (port, Protocol::Udp),
            Some(_) => return Err(bad("the protocol is tcp or udp")),
        };
        match port.parse::<u16>() {
            Ok(0) | Err(_) => Err(bad("a port is a number from 1 to 65535")),
            Ok(port) => Ok(NodePort { port, protocol }),
        }
    }
}

impl fmt::Display for NodePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.host, self.container, self.protocol)
    }
}

impl Serialize for NodePort {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for PortMapping {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortMapping {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_ports_parse_and_print_back() {
        for (text, host, container, protocol, shown) in [
            ("8080:80", 8080, 80, Protocol::Tcp, "8080:80/tcp"),
            ("8080:80/tcp", 8080, 80, Protocol::Tcp, "8080:80/tcp"),
            ("53:5353/udp", 53, 5353, Protocol::Udp, "53:5353/udp"),
            ("65535:1", 65535, 1, Protocol::Tcp, "65535:1/tcp"),
        ] {
            let p: PortMapping = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (p.host, p.container, p.protocol),
                (host, container, protocol)
            );
            assert_eq!(p.to_string(), shown);
            let json = serde_json::to_string(&p).expect("json");
            assert_eq!(json, format!("\"{shown}\""));
            assert_eq!(serde_json::from_str::<PortMapping>(&json).expect("back"), p);
        }
    }

    #[test]
    fn bad_published_ports_say_why() {
        for (text, why) in [
            ("8080", "it names no host port"),
            ("0:80", "a port is a number from 1 to 65535"),
            ("8080:70000", "a port is a number from 1 to 65535"),
            ("a:80", "a port is a number from 1 to 65535"),
            ("8080:80/sctp", "the protocol is tcp or udp"),
            ("8080:80/", "the protocol is tcp or udp"),
            (":80", "a port is a number from 1 to 65535"),
        ] {
            let e = text.parse::<PortMapping>().expect_err(text);
            assert_eq!(e.why, why, "{text}");
            assert!(e.to_string().contains("HOST:CONTAINER"), "{e}");
        }
        assert!(serde_json::from_str::<PortMapping>("\"1:0\"").is_err());
    }

    #[test]
    fn node_ports_are_a_port_and_a_protocol() {
        let port = |t: &str| t.parse::<NodePort>().map(|p| p.to_string());
        assert_eq!(port("9101"), Ok("9101/tcp".into()));
        assert_eq!(port("53/udp"), Ok("53/udp".into()));
        for bad in ["0", "x", "53/icmp", "70000", ""] {
            assert!(port(bad).is_err(), "{bad}");
        }
    }
}
