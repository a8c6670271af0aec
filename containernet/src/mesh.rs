//! The node's WireGuard mesh: one link, `cloudos-wg`, with the node's key pair, a UDP port,
//! and a peer for each other node it talks to directly; the routes to the peers' container
//! subnets lead into it. Containers on different nodes then reach each other by their own
//! addresses (the NAT table leaves the link out of its masquerade, nat::Rules::mesh_link),
//! encrypted between the nodes.
//!
//! Configured from Rust with no `wg` or `ip` binary: the link, its address and its routes
//! through rtnetlink; the device's key, port and peers through WireGuard's generic netlink
//! family. Everything happens in the calling thread's network namespace. Which nodes are
//! peers, and which subnets each carries, is the caller's.
//!
//! Submodules, one job each:
//! - `key`: the node's key pair, and the file it is kept in.
//! - `device`: WireGuard's messages for the device, built and read without a kernel.
//! - `genl`: a generic netlink socket to WireGuard's family, and the kernel's answers.
//! - `routes`: the link's routes, one per subnet of a peer.

mod device;
mod genl;
mod key;
mod routes;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::SystemTime;

use ipnet::Ipv4Net;
use rtnetlink::{Handle, LinkUnspec, LinkWireguard};

use super::bridge::{link_index, required_index};
use super::{ensure_only_address, netlink, set_link, NetError};

pub use key::MeshKey;

/// The mesh's link on every node.
pub const MESH_LINK: &str = "cloudos-wg";
/// The mesh's UDP port unless the node says otherwise (WireGuard's usual port).
pub const MESH_PORT: u16 = 51820;

/// Another node, as the mesh reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshPeer {
    /// Base64 public key.
    pub public_key: String,
    /// None: the peer is behind NAT; it reaches us and WireGuard learns its endpoint from
    /// its handshakes.
    pub endpoint: Option<SocketAddr>,
    /// Container subnets routed to this peer (its own, plus those it relays for).
    pub allowed: Vec<Ipv4Net>,
    /// Seconds between keepalives (Some(25) when either side is behind NAT).
    pub keepalive: Option<u16>,
}

/// What the node's mesh holds: applied whole by [`apply`]. Debug shows the public key only.
#[derive(Debug)]
pub struct Mesh<'a> {
    pub key: &'a MeshKey,
    pub port: u16,
    /// The node's bridge address (its subnet's gateway) put on the link as a /32, so
    /// traffic the node itself sends into the mesh leaves from an address inside its
    /// subnet (a receiving peer only accepts sources in the sender's allowed subnets).
    pub address: Ipv4Addr,
    pub peers: Vec<MeshPeer>,
}

/// The node's WireGuard device as the kernel has it ([`device`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Base64; None until the device has a private key.
    pub public_key: Option<String>,
    pub port: u16,
    pub peers: Vec<PeerState>,
}

/// A peer of the device, with what WireGuard knows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    /// The peer as set, except `endpoint`: the one in use, which WireGuard learns from the
    /// peer's handshakes where none was given. IPv6 subnets (never the mesh's) are left out.
    pub peer: MeshPeer,
    /// When the latest handshake with the peer completed; None: none yet.
    pub last_handshake: Option<SystemTime>,
    /// Bytes received from and sent to the peer, WireGuard's own packets included.
    pub received: u64,
    pub sent: u64,
}

/// Makes the link if missing, sets key and port, replaces the whole peer list, puts
/// `address/32` on it, brings it up, and makes the routes: every allowed subnet of every
/// peer via the link with `src address`; routes to subnets no longer listed are removed.
/// Idempotent. In the calling thread's namespace.
///
/// The peer list is replaced by difference, as `wg syncconf` does, not by dropping every
/// peer and adding them again (WGDEVICE_F_REPLACE_PEERS): peers no longer listed are
/// removed, each listed one is added or updated with its allowed subnets replaced
/// (WGPEER_F_REPLACE_ALLOWEDIPS), so a peer that stays keeps its session and applying the
/// same mesh again interrupts nothing. A peer listed without an endpoint keeps the one
/// WireGuard learnt.
///
/// A mesh that cannot be the node's (a key that is no key, a subnet given to two peers, a
/// subnet holding the node's own address) is refused before anything changes.
pub async fn apply(handle: &Handle, mesh: &Mesh<'_>) -> Result<(), NetError> {
    let peers = device::check(mesh)?;
    let index = match link_index(handle, MESH_LINK).await? {
        Some(index) => index,
        None => {
            match handle
                .link()
                .add(LinkWireguard::new(MESH_LINK).build())
                .execute()
                .await
            {
                Ok(()) => {}
                // The kernel names no link type it has no driver for (it tried to load
                // the module first).
                Err(rtnetlink::Error::NetlinkError(e))
                    if e.raw_code() == -(nix::errno::Errno::EOPNOTSUPP as i32) =>
                {
                    return Err(NetError::NoWireGuard {
                        what: "no link type wireguard".into(),
                    })
                }
                Err(e) => return Err(netlink(format!("adding the link {MESH_LINK}"))(e)),
            }
            required_index(handle, MESH_LINK).await?
        }
    };
    // Generic netlink is a short synchronous round trip or two; it runs inline.
    let mut genl = genl::Genl::wireguard()?;
    let present: Vec<_> = match read(&mut genl)? {
        Some(now) => now.peers.iter().map(|p| p.public_key).collect(),
        // Removed meanwhile.
        None => return Err(NetError::NoLink(MESH_LINK.into())),
    };
    genl.change(
        device::set(mesh, &peers, &present),
        &format!(
            "setting the key, port {} and {} peers of {MESH_LINK}",
            mesh.port,
            peers.len()
        ),
    )?;
    drop(genl);
    ensure_only_address(handle, index, MESH_LINK, &Ipv4Net::from(mesh.address)).await?;
    set_link(
        handle,
        LinkUnspec::new_with_index(index).up().build(),
        format!("bringing {MESH_LINK} up"),
    )
    .await?;
    let wanted = peers
        .iter()
        .flat_map(|p| p.allowed.iter().copied())
        .collect();
    routes::replace(handle, index, mesh.address, wanted).await
}

/// Removes the link (its routes go with it); a missing link is fine.
pub async fn remove(handle: &Handle) -> Result<(), NetError> {
    let Some(index) = link_index(handle, MESH_LINK).await? else {
        return Ok(());
    };
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(()),
        // Gone meanwhile.
        Err(rtnetlink::Error::NetlinkError(e))
            if e.raw_code() == -(nix::errno::Errno::ENODEV as i32) =>
        {
            Ok(())
        }
        Err(e) => Err(netlink(format!("removing {MESH_LINK}"))(e)),
    }
}

/// The node's WireGuard device as the kernel has it, read over generic netlink; None when
/// there is none (no link, or no WireGuard in the kernel). In the calling thread's
/// namespace.
pub fn device() -> Result<Option<Device>, NetError> {
    let mut genl = match genl::Genl::wireguard() {
        Ok(genl) => genl,
        Err(NetError::NoWireGuard { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(read(&mut genl)?.map(device::Read::shown))
}

/// The device's dump; None when there is no such link.
fn read(genl: &mut genl::Genl) -> Result<Option<device::Read>, NetError> {
    match genl.dump(device::get(), &format!("reading the device {MESH_LINK}")) {
        Ok(messages) => Ok(Some(device::read(messages))),
        Err(NetError::WireGuardRefused {
            errno: nix::errno::Errno::ENODEV,
            ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}
