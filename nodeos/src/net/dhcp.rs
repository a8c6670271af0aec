//! DHCPv4 on one link with mozim, applying each lease with rtnetlink.
//!
//! mozim speaks the protocol (discover, request, renew at T1, rebind at T2);
//! this module turns a lease into addresses, routes and name servers.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mozim::{DhcpV4Client, DhcpV4Config, DhcpV4Lease, DhcpV4State};
use rtnetlink::Handle;

use super::links::{self, Link};
use super::state::NetState;

/// How long one attempt waits for a server before starting over (and saying so).
const ATTEMPT_TIMEOUT_SECS: u32 = 30;
/// Pause after a failed attempt.
const RETRY_PAUSE: Duration = Duration::from_secs(2);

/// What a lease asks us to configure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasePlan {
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// (destination, prefix, gateway); the default route is 0.0.0.0/0.
    pub routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
    pub dns: Vec<Ipv4Addr>,
    pub search: Vec<String>,
    /// Time servers (option 42), for the clock service.
    pub ntp: Vec<Ipv4Addr>,
    pub lease_secs: u32,
}

impl LeasePlan {
    pub fn from_lease(lease: &DhcpV4Lease) -> LeasePlan {
        let prefix = u32::from(lease.subnet_mask).count_ones() as u8;
        // RFC 3442: with classless routes present, the router option is ignored.
        let routes = match &lease.classless_routes {
            Some(classless) if !classless.is_empty() => classless
                .iter()
                .map(|r| (r.destination, r.prefix_length, r.router))
                .collect(),
            _ => lease
                .gateways
                .iter()
                .flatten()
                .take(1)
                .map(|gw| (Ipv4Addr::UNSPECIFIED, 0, *gw))
                .collect(),
        };
        let mut search = lease.domain_search.clone().unwrap_or_default();
        if search.is_empty() {
            search.extend(lease.domain_name.clone());
        }
        LeasePlan {
            address: lease.yiaddr,
            prefix: if prefix == 0 { 32 } else { prefix },
            routes,
            dns: lease.dns_srvs.clone().unwrap_or_default(),
            search,
            ntp: lease.ntp_srvs.clone().unwrap_or_default(),
            lease_secs: lease.lease_time_sec,
        }
    }

    pub fn default_gateway(&self) -> Option<Ipv4Addr> {
        self.routes
            .iter()
            .find(|(_, prefix, _)| *prefix == 0)
            .map(|(_, _, gw)| *gw)
    }
}

/// Runs DHCP on `link` until the task is aborted (carrier lost, shutdown).
pub async fn run(
    handle: Handle,
    link: Link,
    hostname: String,
    state: Arc<Mutex<NetState>>,
    mut cached: Option<DhcpV4Lease>,
) {
    let name = link.name.clone();
    loop {
        let mut config = DhcpV4Config::new(&name);
        config.set_iface_index(link.index);
        if let Err(e) = config.set_iface_mac_raw(&link.mac) {
            log::error!("{name}: cannot use MAC {}: {e}", link.mac_string());
            return;
        }
        config.set_host_name(&hostname);
        config.use_mac_as_client_id();
        config.set_timeout_sec(ATTEMPT_TIMEOUT_SECS);
        let mut client = match DhcpV4Client::init(config, cached.take()).await {
            Ok(c) => c,
            Err(e) => {
                log::warn!("{name}: cannot start DHCP: {e}");
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        let mut current: Option<Ipv4Addr> = None;
        loop {
            match client.run().await {
                Ok(DhcpV4State::Done(lease)) => {
                    let plan = LeasePlan::from_lease(&lease);
                    match apply(&handle, &link, &plan, current).await {
                        Ok(()) => {
                            if current != Some(plan.address) {
                                log_lease(&name, &plan);
                            } else {
                                log::info!(
                                    "{name}: lease {} renewed for {}s",
                                    plan.address,
                                    plan.lease_secs
                                );
                            }
                            current = Some(plan.address);
                            publish(&state, &name, &plan);
                        }
                        Err(e) => log::error!("{name}: cannot apply lease {}: {e}", plan.address),
                    }
                }
                Ok(other) => log::debug!("{name}: dhcp {other}"),
                Err(e) => {
                    log::warn!("{name}: dhcp: {e}; starting over");
                    if current.take().is_some() {
                        let _ = links::remove_addresses(&handle, link.index, None).await;
                        forget(&state, &name);
                    }
                    break;
                }
            }
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

async fn apply(
    handle: &Handle,
    link: &Link,
    plan: &LeasePlan,
    previous: Option<Ipv4Addr>,
) -> Result<(), links::LinkError> {
    links::add_address(handle, link.index, plan.address, plan.prefix).await?;
    if previous.is_some_and(|p| p != plan.address) {
        links::remove_addresses(handle, link.index, Some(plan.address)).await?;
    }
    for (dest, prefix, gw) in &plan.routes {
        links::add_route(handle, link.index, *dest, *prefix, Some(*gw)).await?;
    }
    if !plan.dns.is_empty() {
        if let Err(e) = super::resolv::write(&plan.dns, &plan.search) {
            log::warn!("cannot write {}: {e}", super::resolv::RESOLV_CONF);
        }
    }
    Ok(())
}

fn log_lease(name: &str, plan: &LeasePlan) {
    let gateway = plan
        .default_gateway()
        .map(|g| g.to_string())
        .unwrap_or_else(|| "none".into());
    let dns: Vec<String> = plan.dns.iter().map(|d| d.to_string()).collect();
    log::info!(
        "{name}: dhcp lease {}/{} gateway {gateway} dns {} for {}s",
        plan.address,
        plan.prefix,
        if dns.is_empty() {
            "none".into()
        } else {
            dns.join(",")
        },
        plan.lease_secs
    );
    if let Some(gw) = plan.default_gateway() {
        log::info!("default route via {gw} dev {name}");
    }
}

fn publish(state: &Mutex<NetState>, name: &str, plan: &LeasePlan) {
    if let Ok(mut s) = state.lock() {
        let link = s.link_mut(name);
        link.address = Some(format!("{}/{}", plan.address, plan.prefix));
        link.method = "dhcp".into();
        link.lease_secs = Some(plan.lease_secs);
        if let Some(gw) = plan.default_gateway() {
            s.default_gateway = Some(gw);
        }
        if !plan.dns.is_empty() {
            s.dns = plan.dns.clone();
        }
        if !plan.ntp.is_empty() {
            s.ntp = plan.ntp.clone();
        }
        s.publish();
    }
}

pub fn forget(state: &Mutex<NetState>, name: &str) {
    if let Ok(mut s) = state.lock() {
        let link = s.link_mut(name);
        link.address = None;
        link.lease_secs = None;
        s.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> DhcpV4Lease {
        let mut lease = DhcpV4Lease::default();
        lease.yiaddr = Ipv4Addr::new(10, 0, 2, 15);
        lease.subnet_mask = Ipv4Addr::new(255, 255, 255, 0);
        lease.gateways = Some(vec![Ipv4Addr::new(10, 0, 2, 2), Ipv4Addr::new(10, 0, 2, 1)]);
        lease.dns_srvs = Some(vec![Ipv4Addr::new(10, 0, 2, 3)]);
        lease.ntp_srvs = Some(vec![Ipv4Addr::new(10, 0, 2, 4)]);
        lease.lease_time_sec = 86400;
        lease
    }

    #[test]
    fn router_option_gives_the_default_route() {
        let plan = LeasePlan::from_lease(&lease());
        assert_eq!(plan.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(plan.prefix, 24);
        assert_eq!(
            plan.routes,
            [(Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(10, 0, 2, 2))]
        );
        assert_eq!(plan.default_gateway(), Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(plan.dns, [Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!(plan.ntp, [Ipv4Addr::new(10, 0, 2, 4)], "option 42");
    }

    #[test]
    fn no_router_means_no_default_route() {
        let mut l = lease();
        l.gateways = None;
        l.domain_name = Some("lan".into());
        let plan = LeasePlan::from_lease(&l);
        assert!(plan.routes.is_empty());
        assert_eq!(plan.default_gateway(), None);
        assert_eq!(plan.search, ["lan"]);
    }
}
