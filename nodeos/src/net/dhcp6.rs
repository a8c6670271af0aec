//! DHCPv6 on one link with mozim, when the router's advertisement says Managed (M): an
//! address (IA_NA) and name servers, applied with rtnetlink.
//!
//! It owns the DHCPv6 client of a link and the /128 it adds. It must not touch SLAAC
//! addresses or routes: the kernel makes those from the RA (see `ipv6`).

use std::net::Ipv6Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mozim::{DhcpV6Client, DhcpV6Config, DhcpV6Lease, DhcpV6Mode, DhcpV6State};
use rtnetlink::Handle;

use super::ipv6;
use super::links::Link;
use super::state::NetState;

/// How long one attempt waits for a server before starting over (and saying so).
const ATTEMPT_TIMEOUT_SECS: u32 = 30;
/// Pause after a failed attempt, and between looks for the link-local address.
const RETRY_PAUSE: Duration = Duration::from_secs(2);
const LINK_LOCAL_POLL: Duration = Duration::from_millis(250);

/// What a DHCPv6 lease asks us to configure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease6Plan {
    pub address: Ipv6Addr,
    pub preferred_secs: u32,
    pub valid_secs: u32,
    pub dns: Vec<Ipv6Addr>,
    pub search: Vec<String>,
}

impl Lease6Plan {
    /// `None` for a lease without an address (the server refused the IA_NA).
    pub fn from_lease(lease: &DhcpV6Lease) -> Option<Lease6Plan> {
        if lease.address.is_unspecified() {
            return None;
        }
        Some(Lease6Plan {
            address: lease.address,
            preferred_secs: lease.preferred_time_sec,
            valid_secs: lease.valid_time_sec,
            dns: lease.dns_srvs.clone(),
            search: lease.domain_list.clone(),
        })
    }
}

/// Runs DHCPv6 on `link` until the task is aborted (carrier lost, shutdown).
pub async fn run(handle: Handle, link: Link, state: Arc<Mutex<NetState>>) {
    let name = link.name.clone();
    loop {
        // DHCPv6 is sent from the link-local address, which exists once DAD has passed.
        let source = loop {
            match ipv6::link_local(&handle, link.index).await {
                Ok(Some(ip)) => break ip,
                Ok(None) => tokio::time::sleep(LINK_LOCAL_POLL).await,
                Err(e) => {
                    log::warn!("{name}: cannot read IPv6 addresses: {e}");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        };
        let mut config = DhcpV6Config::new(&name, DhcpV6Mode::NonTemporaryAddresses);
        config.set_iface_index(link.index);
        config.set_link_local_ip(source);
        // DUID-LL from the MAC: the same client after a reboot, so the same address.
        config.set_duid_by_iface_mac(&link.mac);
        config.set_timeout_sec(ATTEMPT_TIMEOUT_SECS);
        let mut client = match DhcpV6Client::init(config, None).await {
            Ok(c) => c,
            Err(e) => {
                log::warn!("{name}: cannot start DHCPv6: {e}");
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        let mut current: Option<Ipv6Addr> = None;
        loop {
            match client.run().await {
                Ok(DhcpV6State::Done(lease)) => {
                    let Some(plan) = Lease6Plan::from_lease(&lease) else {
                        log::warn!("{name}: the DHCPv6 server gave no address");
                        continue;
                    };
                    match apply(&handle, &link, &plan, current).await {
                        Ok(()) => {
                            if current == Some(plan.address) {
                                log::info!(
                                    "{name}: dhcp6 lease {} renewed for {}s",
                                    plan.address,
                                    plan.valid_secs
                                );
                            } else {
                                log_lease(&name, &plan);
                            }
                            current = Some(plan.address);
                            publish(&state);
                        }
                        Err(e) => {
                            log::error!("{name}: cannot apply dhcp6 lease {}: {e}", plan.address)
                        }
                    }
                }
                Ok(other) => log::debug!("{name}: dhcp6 {other}"),
                Err(e) => {
                    log::warn!("{name}: dhcp6: {e}; starting over");
                    if current.take().is_some() {
                        let _ = ipv6::remove_leased_addresses(&handle, link.index).await;
                        forget(&state);
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
    plan: &Lease6Plan,
    previous: Option<Ipv6Addr>,
) -> Result<(), super::links::LinkError> {
    if previous.is_some_and(|p| p != plan.address) {
        ipv6::remove_leased_addresses(handle, link.index).await?;
    }
    ipv6::add_leased_address(
        handle,
        link.index,
        plan.address,
        plan.preferred_secs,
        plan.valid_secs,
    )
    .await?;
    if !plan.dns.is_empty() {
        if let Err(e) = super::resolv::write_v6(&plan.dns, &plan.search) {
            log::warn!("cannot write {}: {e}", super::resolv::RESOLV_CONF);
        }
    }
    Ok(())
}

fn log_lease(name: &str, plan: &Lease6Plan) {
    let dns: Vec<String> = plan.dns.iter().map(|d| d.to_string()).collect();
    log::info!(
        "{name}: dhcp6 lease {}/128 dns {} for {}s",
        plan.address,
        if dns.is_empty() {
            "none".into()
        } else {
            dns.join(",")
        },
        plan.valid_secs
    );
}

fn publish(state: &Mutex<NetState>) {
    if let Ok(mut s) = state.lock() {
        s.dns6 = super::resolv::ipv6_servers();
        s.publish();
    }
}

/// The lease is gone: its name servers too.
pub fn forget(state: &Mutex<NetState>) {
    if let Err(e) = super::resolv::write_v6(&[], &[]) {
        log::warn!("cannot write {}: {e}", super::resolv::RESOLV_CONF);
    }
    if let Ok(mut s) = state.lock() {
        s.dns6 = super::resolv::ipv6_servers();
        s.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_gives_its_address_lifetimes_and_name_servers() {
        let mut lease = DhcpV6Lease::default();
        assert_eq!(Lease6Plan::from_lease(&lease), None, "no address, no plan");
        lease.address = "fd77::1:99".parse().expect("ip");
        lease.preferred_time_sec = 300;
        lease.valid_time_sec = 600;
        lease.dns_srvs = vec!["fd77::1".parse().expect("ip")];
        lease.domain_list = vec!["lan".into()];
        assert_eq!(
            Lease6Plan::from_lease(&lease),
            Some(Lease6Plan {
                address: "fd77::1:99".parse().expect("ip"),
                preferred_secs: 300,
                valid_secs: 600,
                dns: vec!["fd77::1".parse().expect("ip")],
                search: vec!["lan".into()],
            })
        );
    }
}
