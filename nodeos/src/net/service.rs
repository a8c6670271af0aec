//! The network service's main loop: configure, then follow link events.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::{Handle, MulticastGroup};
use tokio::task::JoinHandle;

use super::links::{self, Link};
use super::state::NetState;
use super::{dhcp, resolv};
use crate::settings::{NetMode, NetSettings};

pub async fn run(settings: &NetSettings, hostname: &str) -> anyhow::Result<()> {
    let (connection, handle, mut events) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Link])?;
    tokio::spawn(connection);
    let mut net = Network {
        handle,
        settings: settings.clone(),
        hostname: hostname.to_string(),
        state: Arc::new(Mutex::new(NetState::default())),
        known: HashMap::new(),
        dhcp: HashMap::new(),
        multicast_route_on: None,
    };
    for link in links::list(&net.handle).await? {
        net.on_link(link).await;
    }
    if let Ok(s) = net.state.lock() {
        s.publish();
    }
    crate::supervisor::ready::report();
    while let Some((message, _)) = events.next().await {
        match message.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(msg)) => {
                if let Some(link) = Link::from_message(&msg) {
                    net.on_link(link).await;
                }
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(msg)) => {
                if let Some(link) = Link::from_message(&msg) {
                    net.on_removed(&link);
                }
            }
            _ => {}
        }
    }
    anyhow::bail!("the kernel closed the rtnetlink event socket")
}

struct Network {
    handle: Handle,
    settings: NetSettings,
    hostname: String,
    state: Arc<Mutex<NetState>>,
    /// Links by index, as last seen.
    known: HashMap<u32, Link>,
    dhcp: HashMap<u32, JoinHandle<()>>,
    /// mDNS needs a multicast route even without a default route.
    multicast_route_on: Option<u32>,
}

impl Network {
    async fn on_link(&mut self, link: Link) {
        if link.loopback {
            if !link.up {
                if let Err(e) = links::set_up(&self.handle, link.index).await {
                    log::error!("cannot bring up {}: {e}", link.name);
                }
            }
            return;
        }
        if !link.ethernet {
            return;
        }
        let previous = self.known.insert(link.index, link.clone());
        if previous.is_none() {
            self.on_new(&link).await;
        }
        let had_carrier = previous.as_ref().is_some_and(|p| p.carrier);
        if link.carrier != had_carrier || previous.is_none() {
            self.set_state(&link);
            if link.carrier {
                if previous.is_some() {
                    log::info!("{}: link up", link.name);
                }
                self.on_carrier(&link).await;
            } else if previous.is_some() {
                log::warn!("{}: link down (no carrier)", link.name);
                self.on_carrier_lost(&link).await;
            }
        }
    }

    async fn on_new(&mut self, link: &Link) {
        log::info!("{}: found ethernet link {}", link.name, link.mac_string());
        if self.settings.mode == NetMode::Off {
            return;
        }
        if !link.up {
            if let Err(e) = links::set_up(&self.handle, link.index).await {
                log::error!("cannot bring up {}: {e}", link.name);
            }
        }
        if self.settings.mode == NetMode::Static && self.is_static_link(link) {
            self.apply_static(link).await;
        }
        if self.multicast_route_on.is_none() {
            match links::add_route(
                &self.handle,
                link.index,
                Ipv4Addr::new(224, 0, 0, 0),
                4,
                None,
            )
            .await
            {
                Ok(()) => self.multicast_route_on = Some(link.index),
                Err(e) => log::debug!("{}: no multicast route yet: {e}", link.name),
            }
        }
    }

    fn is_static_link(&self, link: &Link) -> bool {
        match &self.settings.iface {
            Some(name) => *name == link.name,
            // The first Ethernet link: the lowest index seen so far.
            None => self.known.keys().min() == Some(&link.index),
        }
    }

    async fn apply_static(&mut self, link: &Link) {
        let Some(cidr) = self.settings.address else {
            return;
        };
        let result = async {
            links::add_address(&self.handle, link.index, cidr.address, cidr.prefix).await?;
            if let Some(gw) = self.settings.gateway {
                links::add_route(&self.handle, link.index, Ipv4Addr::UNSPECIFIED, 0, Some(gw))
                    .await?;
            }
            Ok::<(), links::LinkError>(())
        }
        .await;
        match result {
            Ok(()) => {
                let gw = self
                    .settings
                    .gateway
                    .map(|g| g.to_string())
                    .unwrap_or_else(|| "none".into());
                log::info!("{}: static address {cidr} gateway {gw}", link.name);
                if let Some(g) = self.settings.gateway {
                    log::info!("default route via {g} dev {}", link.name);
                }
                if !self.settings.dns.is_empty() {
                    if let Err(e) = resolv::write(&self.settings.dns, &[]) {
                        log::warn!("cannot write {}: {e}", resolv::RESOLV_CONF);
                    }
                }
                if let Ok(mut s) = self.state.lock() {
                    let l = s.link_mut(&link.name);
                    l.address = Some(cidr.to_string());
                    l.method = "static".into();
                    s.default_gateway = self.settings.gateway;
                    s.dns = self.settings.dns.clone();
                    s.publish();
                }
            }
            Err(e) => log::error!("{}: cannot apply static address {cidr}: {e}", link.name),
        }
    }

    async fn on_carrier(&mut self, link: &Link) {
        if self.settings.mode != NetMode::Dhcp || self.dhcp.contains_key(&link.index) {
            return;
        }
        let task = tokio::spawn(dhcp::run(
            self.handle.clone(),
            link.clone(),
            self.hostname.clone(),
            self.state.clone(),
            None,
        ));
        self.dhcp.insert(link.index, task);
    }

    async fn on_carrier_lost(&mut self, link: &Link) {
        if let Some(task) = self.dhcp.remove(&link.index) {
            task.abort();
            // The lease may be gone by the time the cable is back, and the
            // node may be plugged into another network: start clean.
            match links::remove_addresses(&self.handle, link.index, None).await {
                Ok(()) => log::info!("{}: address released until the link is back", link.name),
                Err(e) => log::warn!("{}: cannot remove addresses: {e}", link.name),
            }
            dhcp::forget(&self.state, &link.name);
        }
    }

    fn on_removed(&mut self, link: &Link) {
        if let Some(task) = self.dhcp.remove(&link.index) {
            task.abort();
        }
        if self.known.remove(&link.index).is_some() {
            log::warn!("{}: link removed", link.name);
            if let Ok(mut s) = self.state.lock() {
                s.links.retain(|l| l.name != link.name);
                s.publish();
            }
        }
    }

    fn set_state(&self, link: &Link) {
        if let Ok(mut s) = self.state.lock() {
            let l = s.link_mut(&link.name);
            l.mac = link.mac_string();
            l.carrier = link.carrier;
            if l.method.is_empty() {
                l.method = match self.settings.mode {
                    NetMode::Dhcp => "dhcp",
                    NetMode::Static => "static",
                    NetMode::Off => "none",
                }
                .into();
            }
            s.publish();
        }
    }
}
