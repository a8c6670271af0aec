//! WireGuard's messages for the node's device, built and read without a kernel: the check
//! of a [`Mesh`] before anything is sent, the change that makes the device hold it, the
//! question that dumps the device, and the dump read back.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use ipnet::Ipv4Net;
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardMessage, WireguardPeer, WireguardPeerAttribute, WireguardPeerFlags,
};

use super::key::{decode, encode, KEY_LEN};
use super::{Device, Mesh, MeshPeer, PeerState, MESH_LINK};
use crate::NetError;

/// A peer as the kernel takes it: its key decoded, its subnets as networks, each once.
#[derive(Debug)]
pub struct Checked<'a> {
    pub key: [u8; KEY_LEN],
    pub peer: &'a MeshPeer,
    pub allowed: Vec<Ipv4Net>,
}

/// The mesh's peers, checked: what the kernel would refuse, or take and misapply, is said
/// before anything is sent.
pub fn check<'a>(mesh: &'a Mesh<'_>) -> Result<Vec<Checked<'a>>, NetError> {
    let bad = |why: String| Err(NetError::BadMesh(why));
    if mesh.port == 0 {
        return bad("port 0 would be a random port, which no peer could know".into());
    }
    if mesh.address.is_unspecified() {
        return bad("the node's address on the mesh is 0.0.0.0".into());
    }
    let own = mesh.key.public_bytes();
    let mut keys = BTreeSet::new();
    // Which peer each subnet is routed to, for the error that names both.
    let mut routed: BTreeMap<Ipv4Net, &str> = BTreeMap::new();
    let mut out = Vec::new();
    for peer in &mesh.peers {
        let name = peer.public_key.as_str();
        let key = decode(name).map_err(|why| NetError::BadMesh(format!("peer {name:?}: {why}")))?;
        if key == own {
            // WireGuard would quietly ignore it.
            return bad(format!("peer {name} is this node's own key"));
        }
        if !keys.insert(key) {
            return bad(format!("peer {name} is listed twice"));
        }
        if let Some(endpoint) = peer.endpoint.filter(|e| e.port() == 0) {
            return bad(format!("peer {name}: endpoint {endpoint} has port 0"));
        }
        let mut allowed = Vec::new();
        for net in peer.allowed.iter().map(Ipv4Net::trunc) {
            if net.contains(&mesh.address) {
                // Its route would take the node's own subnet off the bridge.
                return bad(format!(
                    "peer {name}: {net} holds the node's own address {}",
                    mesh.address
                ));
            }
            match routed.insert(net, name) {
                None => allowed.push(net),
                Some(other) if other == name => {}
                // WireGuard would quietly move it to the last peer named.
                Some(other) => return bad(format!("{net} is given to peers {other} and {name}")),
            }
        }
        out.push(Checked { key, peer, allowed });
    }
    Ok(out)
}

/// The change that makes the device hold `mesh`: key, port, and the peers by difference
/// with the keys of the peers it has now (`present`): each of `peers` added or updated with
/// its subnets replaced, each present one not listed removed.
pub fn set(mesh: &Mesh<'_>, peers: &[Checked<'_>], present: &[[u8; KEY_LEN]]) -> WireguardMessage {
    let listed: BTreeSet<_> = peers.iter().map(|p| p.key).collect();
    let update = peers.iter().map(|p| {
        let mut attributes = vec![
            WireguardPeerAttribute::PublicKey(p.key),
            WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
            // Always sent: 0 turns off what an earlier mesh turned on.
            WireguardPeerAttribute::PersistentKeepalive(p.peer.keepalive.unwrap_or(0)),
            WireguardPeerAttribute::AllowedIps(p.allowed.iter().map(allowed_ip).collect()),
        ];
        // None keeps what WireGuard learnt from the peer's handshakes.
        if let Some(endpoint) = p.peer.endpoint {
            attributes.push(WireguardPeerAttribute::Endpoint(endpoint));
        }
        WireguardPeer(attributes)
    });
    let remove = present.iter().filter(|k| !listed.contains(*k)).map(|k| {
        WireguardPeer(vec![
            WireguardPeerAttribute::PublicKey(*k),
            WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
        ])
    });
    WireguardMessage {
        cmd: WireguardCmd::SetDevice,
        attributes: vec![
            WireguardAttribute::IfName(MESH_LINK.into()),
            WireguardAttribute::PrivateKey(mesh.key.private_bytes()),
            WireguardAttribute::ListenPort(mesh.port),
            WireguardAttribute::Peers(update.chain(remove).collect()),
        ],
    }
}

fn allowed_ip(net: &Ipv4Net) -> WireguardAllowedIp {
    WireguardAllowedIp(vec![
        WireguardAllowedIpAttr::Family(WireguardAddressFamily::Ipv4),
        WireguardAllowedIpAttr::IpAddr(IpAddr::V4(net.network())),
        WireguardAllowedIpAttr::Cidr(net.prefix_len()),
    ])
}

/// The question that dumps the device.
pub fn get() -> WireguardMessage {
    WireguardMessage {
        cmd: WireguardCmd::GetDevice,
        attributes: vec![WireguardAttribute::IfName(MESH_LINK.into())],
    }
}

/// The device as a dump shows it, keys still bytes.
#[derive(Debug, Default)]
pub struct Read {
    pub public_key: Option<[u8; KEY_LEN]>,
    pub port: u16,
    pub peers: Vec<ReadPeer>,
}

#[derive(Debug)]
pub struct ReadPeer {
    pub public_key: [u8; KEY_LEN],
    pub state: PeerState,
}

impl Read {
    /// As the crate shows it.
    pub fn shown(self) -> Device {
        Device {
            public_key: self.public_key.map(|k| encode(&k)),
            port: self.port,
            peers: self.peers.into_iter().map(|p| p.state).collect(),
        }
    }
}

/// The device from its dump's messages. A device with many peers takes several messages,
/// and a peer with many subnets may go on in the next one: named again, with the rest of
/// its subnets.
pub fn read(messages: Vec<WireguardMessage>) -> Read {
    let mut device = Read::default();
    for attribute in messages.into_iter().flat_map(|m| m.attributes) {
        match attribute {
            WireguardAttribute::PublicKey(key) => device.public_key = Some(key),
            WireguardAttribute::ListenPort(port) => device.port = port,
            WireguardAttribute::Peers(peers) => {
                for peer in peers {
                    let Some(peer) = read_peer(peer) else {
                        continue;
                    };
                    match device.peers.last_mut() {
                        Some(last) if last.public_key == peer.public_key => {
                            last.state.peer.allowed.extend(peer.state.peer.allowed)
                        }
                        _ => device.peers.push(peer),
                    }
                }
            }
            _ => {}
        }
    }
    device
}

fn read_peer(peer: WireguardPeer) -> Option<ReadPeer> {
    let mut public_key = None;
    let mut state = PeerState {
        peer: MeshPeer {
            public_key: String::new(),
            endpoint: None,
            allowed: Vec::new(),
            keepalive: None,
        },
        last_handshake: None,
        received: 0,
        sent: 0,
    };
    for attribute in peer.0 {
        match attribute {
            WireguardPeerAttribute::PublicKey(key) => public_key = Some(key),
            WireguardPeerAttribute::Endpoint(endpoint) => state.peer.endpoint = Some(endpoint),
            WireguardPeerAttribute::PersistentKeepalive(seconds) => {
                state.peer.keepalive = (seconds != 0).then_some(seconds)
            }
            WireguardPeerAttribute::AllowedIps(ips) => state
                .peer
                .allowed
                .extend(ips.iter().filter_map(read_allowed)),
            // Zero: no handshake yet.
            WireguardPeerAttribute::LastHandshake(t) if t.seconds > 0 || t.nano_seconds > 0 => {
                state.last_handshake = Some(
                    SystemTime::UNIX_EPOCH + Duration::new(t.seconds as u64, t.nano_seconds as u32),
                )
            }
            WireguardPeerAttribute::RxBytes(n) => state.received = n,
            WireguardPeerAttribute::TxBytes(n) => state.sent = n,
            _ => {}
        }
    }
    let public_key = public_key?;
    state.peer.public_key = encode(&public_key);
    Some(ReadPeer { public_key, state })
}

/// An IPv4 subnet; None for IPv6 (never the mesh's).
fn read_allowed(ip: &WireguardAllowedIp) -> Option<Ipv4Net> {
    let address = ip.iter().find_map(|a| match a {
        WireguardAllowedIpAttr::IpAddr(IpAddr::V4(address)) => Some(*address),
        _ => None,
    })?;
    let prefix = ip.iter().find_map(|a| match a {
        WireguardAllowedIpAttr::Cidr(prefix) => Some(*prefix),
        _ => None,
    })?;
    Ipv4Net::new(address, prefix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::{MeshKey, MESH_PORT};
    use netlink_packet_core::{Emitable, NlaBuffer, Parseable};
    use netlink_packet_wireguard::WireguardTimeSpec;
    use std::net::Ipv4Addr;

    fn peer(key: &MeshKey, allowed: &[&str]) -> MeshPeer {
        MeshPeer {
            public_key: key.public(),
            endpoint: Some("192.0.2.2:51820".parse().unwrap()),
            allowed: allowed.iter().map(|a| a.parse().unwrap()).collect(),
            keepalive: None,
        }
    }

    fn mesh(key: &MeshKey, peers: Vec<MeshPeer>) -> Mesh<'_> {
        Mesh {
            key,
            port: MESH_PORT,
            address: Ipv4Addr::new(10, 250, 0, 1),
            peers,
        }
    }

    fn peers_of(message: &WireguardMessage) -> &[WireguardPeer] {
        message
            .attributes
            .iter()
            .find_map(|a| match a {
                WireguardAttribute::Peers(p) => Some(p.as_slice()),
                _ => None,
            })
            .unwrap()
    }

    fn endpoint_of(peer: &WireguardPeer) -> Option<std::net::SocketAddr> {
        peer.iter().find_map(|a| match a {
            WireguardPeerAttribute::Endpoint(e) => Some(*e),
            _ => None,
        })
    }

    fn flags_of(peer: &WireguardPeer) -> WireguardPeerFlags {
        peer.iter()
            .find_map(|a| match a {
                WireguardPeerAttribute::Flags(f) => Some(*f),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn a_change_sets_key_port_and_peers_and_removes_the_unlisted_by_key() {
        let (own, b, c, gone) = (
            MeshKey::generate(),
            MeshKey::generate(),
            MeshKey::generate(),
            MeshKey::generate(),
        );
        let mut behind_nat = peer(&c, &["10.250.2.7/24"]);
        behind_nat.endpoint = None;
        behind_nat.keepalive = Some(25);
        let mesh = mesh(
            &own,
            vec![
                peer(&b, &["10.250.1.0/24", "10.250.5.0/24", "10.250.1.0/24"]),
                behind_nat,
            ],
        );
        let checked = check(&mesh).unwrap();
        assert_eq!(
            checked[0].allowed,
            [
                "10.250.1.0/24".parse().unwrap(),
                "10.250.5.0/24".parse().unwrap()
            ],
            "each subnet once"
        );
        assert_eq!(
            checked[1].allowed,
            ["10.250.2.0/24".parse::<Ipv4Net>().unwrap()],
            "subnets are networks"
        );
        let present = [b.public_bytes(), gone.public_bytes()];
        let message = set(&mesh, &checked, &present);
        assert_eq!(message.cmd, WireguardCmd::SetDevice);
        assert!(message
            .attributes
            .contains(&WireguardAttribute::IfName("cloudos-wg".into())));
        assert!(message
            .attributes
            .contains(&WireguardAttribute::PrivateKey(own.private_bytes())));
        assert!(message
            .attributes
            .contains(&WireguardAttribute::ListenPort(51820)));
        assert!(
            !message
                .attributes
                .iter()
                .any(|a| matches!(a, WireguardAttribute::Flags(_))),
            "peers are not all dropped and made again"
        );
        let peers = peers_of(&message);
        assert_eq!(peers.len(), 3);
        assert_eq!(
            peers[0][0],
            WireguardPeerAttribute::PublicKey(b.public_bytes())
        );
        assert_eq!(flags_of(&peers[0]), WireguardPeerFlags::ReplaceAllowedIps);
        assert_eq!(
            endpoint_of(&peers[0]),
            Some("192.0.2.2:51820".parse().unwrap())
        );
        assert!(peers[0].contains(&WireguardPeerAttribute::PersistentKeepalive(0)));
        assert_eq!(endpoint_of(&peers[1]), None, "learnt from its handshakes");
        assert!(peers[1].contains(&WireguardPeerAttribute::PersistentKeepalive(25)));
        assert_eq!(
            peers[2].0,
            [
                WireguardPeerAttribute::PublicKey(gone.public_bytes()),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe)
            ]
        );
    }

    #[test]
    fn the_change_goes_out_as_the_kernel_reads_it() {
        let (own, b) = (MeshKey::generate(), MeshKey::generate());
        let mesh = mesh(&own, vec![peer(&b, &["10.250.1.0/24"])]);
        let message = set(&mesh, &check(&mesh).unwrap(), &[]);
        // Every attribute, emitted and parsed again, is what was built.
        for attribute in &message.attributes {
            let mut bytes = vec![0; attribute.buffer_len()];
            attribute.emit(&mut bytes);
            let parsed = WireguardAttribute::parse(&NlaBuffer::new(&bytes)).unwrap();
            assert_eq!(&parsed, attribute);
        }
        let mut bytes = vec![0; message.attributes[3].buffer_len()];
        message.attributes[3].emit(&mut bytes);
        let allowed = [10u8, 250, 1, 0];
        assert!(
            bytes.windows(4).any(|w| w == allowed),
            "the subnet's address in network order"
        );
    }

    #[test]
    fn meshes_the_kernel_would_refuse_or_misapply_are_refused_first() {
        let (own, b, c) = (
            MeshKey::generate(),
            MeshKey::generate(),
            MeshKey::generate(),
        );
        let refused = |peers: Vec<MeshPeer>| match check(&mesh(&own, peers)) {
            Err(NetError::BadMesh(why)) => why,
            other => panic!("{other:?}"),
        };
        let mut bad_key = peer(&b, &[]);
        bad_key.public_key = "AAAA".into();
        assert!(refused(vec![bad_key]).contains("3 bytes, not 32"));
        assert!(refused(vec![peer(&own, &[])]).contains("own key"));
        assert!(refused(vec![peer(&b, &[]), peer(&b, &[])]).contains("listed twice"));
        let why = refused(vec![
            peer(&b, &["10.250.1.0/24"]),
            peer(&c, &["10.250.1.9/24"]),
        ]);
        assert!(why.contains("10.250.1.0/24 is given to peers"), "{why}");
        let why = refused(vec![peer(&b, &["10.250.0.0/16"])]);
        assert!(
            why.contains("holds the node's own address 10.250.0.1"),
            "{why}"
        );
        let mut port_zero = peer(&b, &[]);
        port_zero.endpoint = Some("192.0.2.2:0".parse().unwrap());
        assert!(refused(vec![port_zero]).contains("port 0"));
        let mut no_port = mesh(&own, vec![]);
        no_port.port = 0;
        assert!(check(&no_port).is_err());
        assert!(
            check(&mesh(&own, vec![])).unwrap().is_empty(),
            "no peers is a mesh"
        );
    }

    #[test]
    fn a_dump_over_several_messages_is_one_device() {
        let (own, b, c) = (
            MeshKey::generate(),
            MeshKey::generate(),
            MeshKey::generate(),
        );
        let net = |n: &str| n.parse::<Ipv4Net>().unwrap();
        let allowed = |n: &str| allowed_ip(&net(n));
        let six = WireguardAllowedIp(vec![
            WireguardAllowedIpAttr::Family(WireguardAddressFamily::Ipv6),
            WireguardAllowedIpAttr::IpAddr("fd00::".parse().unwrap()),
            WireguardAllowedIpAttr::Cidr(64),
        ]);
        let first = WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![
                WireguardAttribute::IfName(MESH_LINK.into()),
                WireguardAttribute::PublicKey(own.public_bytes()),
                WireguardAttribute::ListenPort(51820),
                WireguardAttribute::Peers(vec![WireguardPeer(vec![
                    WireguardPeerAttribute::PublicKey(b.public_bytes()),
                    WireguardPeerAttribute::Endpoint("192.0.2.2:51820".parse().unwrap()),
                    WireguardPeerAttribute::PersistentKeepalive(0),
                    WireguardPeerAttribute::LastHandshake(WireguardTimeSpec {
                        seconds: 1_700_000_000,
                        nano_seconds: 5,
                    }),
                    WireguardPeerAttribute::RxBytes(92),
                    WireguardPeerAttribute::TxBytes(148),
                    WireguardPeerAttribute::AllowedIps(vec![allowed("10.250.1.0/24"), six]),
                ])]),
            ],
        };
        // The kernel names the peer again to go on with its subnets.
        let second = WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::Peers(vec![
                WireguardPeer(vec![
                    WireguardPeerAttribute::PublicKey(b.public_bytes()),
                    WireguardPeerAttribute::AllowedIps(vec![allowed("10.250.5.0/24")]),
                ]),
                WireguardPeer(vec![
                    WireguardPeerAttribute::PublicKey(c.public_bytes()),
                    WireguardPeerAttribute::PersistentKeepalive(25),
                    WireguardPeerAttribute::LastHandshake(WireguardTimeSpec::default()),
                ]),
            ])],
        };
        let device = read(vec![first, second]).shown();
        assert_eq!(device.public_key, Some(own.public()));
        assert_eq!(device.port, 51820);
        assert_eq!(device.peers.len(), 2);
        let (pb, pc) = (&device.peers[0], &device.peers[1]);
        assert_eq!(pb.peer.public_key, b.public());
        assert_eq!(
            pb.peer.allowed,
            [net("10.250.1.0/24"), net("10.250.5.0/24")]
        );
        assert_eq!(pb.peer.keepalive, None);
        assert_eq!((pb.received, pb.sent), (92, 148));
        assert_eq!(
            pb.last_handshake,
            Some(SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5))
        );
        assert_eq!(pc.peer.keepalive, Some(25));
        assert_eq!(pc.peer.endpoint, None);
        assert_eq!(pc.last_handshake, None, "never");
        assert_eq!(read(vec![]).shown().public_key, None);
    }
}
