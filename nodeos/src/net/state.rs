//! What the network service configured, published for `nodeos status` as a
//! small JSON file under /run (the service and PID 1 are separate processes).

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "/run/cloudos/net.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetState {
    pub links: Vec<LinkState>,
    pub default_gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// Time servers from the DHCP lease (option 42), for the clock service.
    #[serde(default)]
    pub ntp: Vec<Ipv4Addr>,
    /// The IPv6 default router (from a router advertisement) and DHCPv6 name servers.
    #[serde(default)]
    pub ipv6_gateway: Option<Ipv6Addr>,
    /// IPv6 name servers: DHCPv6's, then the routers' (RDNSS).
    #[serde(default)]
    pub dns6: Vec<Ipv6Addr>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkState {
    pub name: String,
    pub mac: String,
    pub carrier: bool,
    /// `10.0.2.15/24`, once configured.
    pub address: Option<String>,
    /// dhcp, static or none.
    pub method: String,
    /// Seconds of the current DHCP lease.
    pub lease_secs: Option<u32>,
    /// Usable IPv6 addresses, global ones first (see `net::ipv6`).
    #[serde(default)]
    pub ipv6: Vec<super::ipv6::Ipv6State>,
}

impl NetState {
    pub fn link_mut(&mut self, name: &str) -> &mut LinkState {
        if let Some(i) = self.links.iter().position(|l| l.name == name) {
            return &mut self.links[i];
        }
        self.links.push(LinkState {
            name: name.to_string(),
            ..LinkState::default()
        });
        self.links.sort_by(|a, b| a.name.cmp(&b.name));
        let i = self.links.iter().position(|l| l.name == name).unwrap_or(0);
        &mut self.links[i]
    }

    pub fn publish(&self) {
        match serde_json::to_vec_pretty(self) {
            Ok(bytes) => {
                if let Err(e) = cloudos_cluster::files::write_atomic(STATE_FILE, &bytes) {
                    log::warn!("cannot write {STATE_FILE}: {e}");
                }
            }
            Err(e) => log::warn!("cannot encode the network state: {e}"),
        }
    }

    pub fn read() -> Option<NetState> {
        let bytes = std::fs::read(STATE_FILE).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}
