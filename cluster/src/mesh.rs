//! The WireGuard mesh between nodes as the wire speaks it (decision 56): what a node says
//! of its end in its hello (its public key and port), and the peers the master tells each
//! node to have. Which peers each node gets is the master's plan (`cloudos-master`'s
//! `mesh`); setting them up is the node's (`cloudos-containernet`'s `mesh`).

use serde::{Deserialize, Serialize};

/// A node's end of the mesh, in its hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshHello {
    /// The node's WireGuard public key, base64 (44 characters), as `wg` shows it.
    pub public_key: String,
    /// The UDP port it listens on.
    pub port: u16,
    /// Where the others reach the node's mesh when that is not its own address and port
    /// (a cloud VM's public address in front of its private one, a router's port forward):
    /// the admin's setting `mesh_endpoint`, `ip:port`. The node then counts as reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<std::net::SocketAddr>,
}

/// One peer of a node's mesh.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MeshPeer {
    /// The peer node's name, for logs.
    pub node: String,
    pub public_key: String,
    /// `ip:port` to send to; absent when the peer is behind NAT (it reaches this node, and
    /// WireGuard learns where it is from its handshakes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The container subnets reached through this peer: its own, and those it relays for.
    pub allowed: Vec<String>,
    /// Seconds between keepalives, when a NAT on the way must keep the path open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<u16>,
}

/// Why a node's mesh key is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the mesh public key {0:?} is not 32 bytes in base64")]
pub struct BadKey(pub String);

/// Checks a WireGuard public key as a node sends it: 32 bytes, base64 with padding.
pub fn check_key(key: &str) -> Result<(), BadKey> {
    use base64::Engine;
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(bytes) if bytes.len() == 32 => Ok(()),
        _ => Err(BadKey(key.chars().take(60).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_32_bytes_of_base64() {
        assert!(check_key("HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=").is_ok());
        for bad in [
            "",
            "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8yk=",
            "not base64 at all!",
            "AAAA",
        ] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn peers_speak_compact_json() {
        let peer = MeshPeer {
            node: "n1".into(),
            public_key: "k".into(),
            endpoint: None,
            allowed: vec!["10.250.1.0/24".into()],
            keepalive: None,
        };
        let json = serde_json::to_string(&peer).expect("json");
        assert_eq!(
            json,
            r#"{"node":"n1","public_key":"k","allowed":["10.250.1.0/24"]}"#
        );
    }
}
