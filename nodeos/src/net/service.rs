//! The network service's main loop: configure, then follow link events.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, MulticastGroup};
use tokio::task::JoinHandle;

use super::ipv6::{self, Dhcp6Need, RaFlags};
use super::links::{self, Link};
use super::state::NetState;
use super::{dhcp, dhcp6, rdnss, resolv};
use crate::settings::{NetMode, NetSettings};

pub async fn run(settings: &NetSettings, hostname: &str) -> anyhow::Result<()> {
    let (connection, handle, mut events) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        // IPv6: RA flag changes and SLAAC/DHCPv6 addresses coming and going.
        MulticastGroup::Ipv6Ifinfo,
        MulticastGroup::Ipv6Ifaddr,
    ])?;
    tokio::spawn(connection);
    let mut net = Network {
        handle,
        settings: settings.clone(),
        hostname: hostname.to_string(),
        state: Arc::new(Mutex::new(NetState::default())),
        known: HashMap::new(),
        dhcp: HashMap::new(),
        dhcp6: HashMap::new(),
        rdnss: HashMap::new(),
        ipv6_routers: HashMap::new(),
        multicast_route_on: None,
    };
    for link in links::list(&net.handle).await? {
        net.on_link(link).await;
    }
    // After a restart of this service the kernel may have had its RAs already.
    for (index, flags) in ipv6::ra_flags_of_all(&net.handle).await.unwrap_or_default() {
        net.on_ra_flags(index, flags);
    }
    for index in net.known.keys().copied().collect::<Vec<_>>() {
        net.refresh_ipv6(index).await;
    }
    if let Ok(s) = net.state.lock() {
        s.publish();
    }
    crate::supervisor::ready::report();
    while let Some((message, _)) = events.next().await {
        match message.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(msg)) => {
                // RTNLGRP_IPV6_IFINFO sends AF_INET6 link messages (an RA changed the
                // flags); they lack what tells a NIC from a virtual link.
                let ipv6_info = msg.header.interface_family == AddressFamily::Inet6;
                if !ipv6_info {
                    if let Some(link) = Link::from_message(&msg) {
                        net.on_link(link).await;
                    }
                }
                if let Some(flags) = RaFlags::from_link_message(&msg) {
                    net.on_ra_flags(msg.header.index, flags);
                }
            }
            NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewAddress(msg) | RouteNetlinkMessage::DelAddress(msg),
            ) if msg.header.family == AddressFamily::Inet6 => {
                net.refresh_ipv6(msg.header.index).await;
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
    /// DHCPv6 clients, on links whose router said Managed.
    dhcp6: HashMap<u32, JoinHandle<()>>,
    /// Readers of each link's router advertisements for their name servers (RDNSS).
    rdnss: HashMap<u32, JoinHandle<()>>,
    /// The IPv6 default router of each link (the kernel's, from RAs), as last logged.
    ipv6_routers: HashMap<u32, std::net::Ipv6Addr>,
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
        // Before the link comes up, so the router solicitations sent then already count.
        if let Err(e) = ipv6::accept_router_advertisements(&link.name) {
            log::warn!("{}: cannot enable IPv6 autoconfiguration: {e}", link.name);
        }
        match rdnss::open(&link.name) {
            Ok(fd) => {
                let task = tokio::spawn(rdnss::run(link.name.clone(), fd, self.state.clone()));
                if let Some(old) = self.rdnss.insert(link.index, task) {
                    old.abort();
                }
            }
            Err(e) => log::warn!("{}: no DNS from router advertisements: {e}", link.name),
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
        if let Some(task) = self.dhcp6.remove(&link.index) {
            task.abort();
            if let Err(e) = ipv6::remove_leased_addresses(&self.handle, link.index).await {
                log::warn!("{}: cannot remove the DHCPv6 address: {e}", link.name);
            }
            dhcp6::forget(&self.state);
        }
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
        if let Some(task) = self.dhcp6.remove(&link.index) {
            task.abort();
        }
        self.ipv6_routers.remove(&link.index);
        if let Some(task) = self.rdnss.remove(&link.index) {
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

    /// What the router's advertisement says about DHCPv6 on a link: a client when Managed.
    fn on_ra_flags(&mut self, index: u32, flags: RaFlags) {
        let Some(link) = self.known.get(&index).cloned() else {
            return;
        };
        if self.settings.mode == NetMode::Off || !link.carrier {
            return;
        }
        match flags.dhcp6() {
            Dhcp6Need::Address if !self.dhcp6.contains_key(&index) => {
                log::info!("{}: the router says Managed: asking DHCPv6", link.name);
                let task = tokio::spawn(dhcp6::run(
                    self.handle.clone(),
                    link.clone(),
                    self.state.clone(),
                ));
                self.dhcp6.insert(index, task);
            }
            Dhcp6Need::OtherOnly => log::debug!(
                "{}: the router offers stateless DHCPv6, which nodeos does not ask",
                link.name
            ),
            _ => {}
        }
    }

    /// Reads a link's IPv6 addresses and default router again, after an address event.
    async fn refresh_ipv6(&mut self, index: u32) {
        let Some(link) = self.known.get(&index) else {
            return;
        };
        let name = link.name.clone();
        let entries = match ipv6::addresses(&self.handle, index).await {
            Ok(entries) => entries,
            Err(e) => {
                log::warn!("{name}: cannot read IPv6 addresses: {e}");
                return;
            }
        };
        let router = ipv6::default_router(&self.handle, index)
            .await
            .unwrap_or_default();
        let router_changed = match router {
            Some(r) => self.ipv6_routers.insert(index, r) != Some(r),
            None => self.ipv6_routers.remove(&index).is_some(),
        };
        if let (true, Some(r)) = (router_changed, router) {
            log::info!("IPv6 default route via {r} dev {name}");
        }
        // One gateway to show: the router of the first link that has one.
        let shown_router = self
            .ipv6_routers
            .iter()
            .min_by_key(|(i, _)| **i)
            .map(|(_, r)| *r);
        let shown: Vec<ipv6::Ipv6State> = entries.iter().map(|e| e.to_state()).collect();
        if let Ok(mut s) = self.state.lock() {
            let l = s.link_mut(&name);
            for entry in &shown {
                // DHCPv6 says its own lease; link-local addresses are not news.
                if entry.method == "slaac" && !l.ipv6.contains(entry) {
                    log::info!("{name}: slaac address {}", entry.address);
                }
            }
            let mut changed = l.ipv6 != shown;
            l.ipv6 = shown;
            changed |= s.ipv6_gateway != shown_router;
            s.ipv6_gateway = shown_router;
            if changed {
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
