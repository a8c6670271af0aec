//! Browsing for masters with mdns-sd: one short-lived daemon per call, its
//! results turned into [`DiscoveredMaster`]s. Knows nothing of advertising or of
//! what the caller does with a master once found.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use mdns_sd::{RecvTimeoutError, ResolvedService, ServiceDaemon, ServiceEvent};

use crate::txt::{parse_txt, prefix_matches, MasterTxt, TXT_VERSION};
use crate::DiscoveryError;

/// The DNS-SD service type every CloudOS master advertises.
pub const SERVICE_TYPE: &str = "_cloudos._tcp.local.";

/// How long to wait for the mdns-sd daemon thread to end after a browse.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// mdns-sd only uses interfaces that are operationally up, and looks again every
/// 5 s by default; a browse is short, so look every second.
const IP_CHECK_SECS: u32 = 1;

/// A master found on the LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredMaster {
    /// DNS-SD instance name, without the service type.
    pub instance: String,
    /// Host name from the SRV record, e.g. `master-1.local`.
    pub host: String,
    /// IPv4 addresses first, then IPv6 (AAAA records, asked over IPv6 too); each group
    /// sorted. IPv6 link-local addresses come without their interface: callers dial the
    /// others.
    pub addresses: Vec<IpAddr>,
    /// API port, from the SRV record.
    pub port: u16,
    pub cluster: String,
    /// Lowercase hex, at least 16 characters of the CA pin.
    pub pin_prefix: String,
    pub version: Option<String>,
}

impl DiscoveredMaster {
    /// The addresses another machine can dial, in [`DiscoveredMaster::addresses`] order:
    /// IPv6 link-local ones (fe80::/10) are left out, since dialling them needs the
    /// interface they were seen on, which is not kept.
    pub fn dialable(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addresses
            .iter()
            .copied()
            .filter(|ip| !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()))
    }
}

/// An instance of `_cloudos._tcp` that was found but not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedMaster {
    pub instance: String,
    pub reason: String,
}

/// Everything one browse saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrowseReport {
    /// Sorted by instance name.
    pub masters: Vec<DiscoveredMaster>,
    pub skipped: Vec<SkippedMaster>,
}

/// Browses for `timeout` and returns the masters that answered. Blocks the
/// calling thread for the whole timeout (use a blocking task from async code);
/// 3 seconds is enough on a quiet LAN, since mdns-sd queries at once and again
/// after 1 second. Unusable instances are logged and left out.
pub fn browse(timeout: Duration) -> Result<Vec<DiscoveredMaster>, DiscoveryError> {
    let report = browse_report(timeout)?;
    for skipped in &report.skipped {
        log::warn!(
            "ignoring mdns service {:?}: {}",
            skipped.instance,
            skipped.reason
        );
    }
    Ok(report.masters)
}

/// Like [`browse`], and also says which instances were skipped and why.
pub fn browse_report(timeout: Duration) -> Result<BrowseReport, DiscoveryError> {
    browse_until(timeout, |_| false)
}

/// The masters whose CA pin prefix matches `full_pin`, returning as soon as
/// one has answered instead of waiting out `timeout`: a node that knows its
/// cluster's pin needs one master, and a join should not wait seconds for a
/// browse to end. Empty if none answered within `timeout`.
pub fn browse_for_pin(
    full_pin: &str,
    timeout: Duration,
) -> Result<Vec<DiscoveredMaster>, DiscoveryError> {
    let report = browse_until(timeout, |master| {
        prefix_matches(&master.pin_prefix, full_pin)
    })?;
    Ok(matching_pin(&report.masters, full_pin))
}

/// Browses until `timeout`, or until a usable master satisfies `enough`.
fn browse_until(
    timeout: Duration,
    enough: impl Fn(&DiscoveredMaster) -> bool,
) -> Result<BrowseReport, DiscoveryError> {
    let daemon = ServiceDaemon::new()?;
    if let Err(err) = daemon.set_ip_check_interval(IP_CHECK_SECS) {
        log::debug!("mdns set_ip_check_interval: {err}");
    }
    let found = collect(&daemon, timeout, |service| {
        to_master(service).is_ok_and(|m| enough(&m))
    });
    shut_down(&daemon);
    let mut report = BrowseReport::default();
    for service in found?.into_values() {
        match to_master(&service) {
            Ok(master) => report.masters.push(master),
            Err(skipped) => report.skipped.push(skipped),
        }
    }
    Ok(report)
}

/// The masters whose advertised pin prefix is the start of `full_pin`
/// (`sha256:<64 hex>`, hex compared case-insensitively). A malformed `full_pin`
/// matches none.
pub fn matching_pin(masters: &[DiscoveredMaster], full_pin: &str) -> Vec<DiscoveredMaster> {
    masters
        .iter()
        .filter(|m| prefix_matches(&m.pin_prefix, full_pin))
        .cloned()
        .collect()
}

/// Resolved services by full name, as they stand when the timeout ends or
/// when one satisfies `enough`.
fn collect(
    daemon: &ServiceDaemon,
    timeout: Duration,
    enough: impl Fn(&ResolvedService) -> bool,
) -> Result<BTreeMap<String, Box<ResolvedService>>, DiscoveryError> {
    let events = daemon.browse(SERVICE_TYPE)?;
    let deadline = Instant::now() + timeout;
    let mut found = BTreeMap::new();
    loop {
        match events.recv_deadline(deadline) {
            Ok(ServiceEvent::ServiceResolved(service)) => {
                let done = enough(&service);
                found.insert(service.fullname.clone(), service);
                if done {
                    break;
                }
            }
            Ok(ServiceEvent::ServiceRemoved(_, fullname)) => {
                found.remove(&fullname);
            }
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => break,
            Err(RecvTimeoutError::Disconnected) => {
                log::warn!("mdns browser stopped early; returning what it found so far");
                break;
            }
        }
    }
    if let Err(err) = daemon.stop_browse(SERVICE_TYPE) {
        log::debug!("mdns stop_browse: {err}");
    }
    Ok(found)
}

fn shut_down(daemon: &ServiceDaemon) {
    match daemon.shutdown() {
        Ok(status) => {
            if let Err(err) = status.recv_timeout(SHUTDOWN_WAIT) {
                log::debug!("mdns daemon shutdown not confirmed: {err}");
            }
        }
        Err(err) => log::debug!("mdns daemon shutdown: {err}"),
    }
}

fn to_master(service: &ResolvedService) -> Result<DiscoveredMaster, SkippedMaster> {
    let txt = parse_txt(
        service
            .txt_properties
            .iter()
            .map(|property| (property.key(), property.val())),
    );
    let addresses = service.addresses.iter().map(|a| a.to_ip_addr()).collect();
    master_from_parts(
        &service.fullname,
        &service.host,
        addresses,
        service.port,
        txt,
    )
}

/// Turns what mDNS resolved into a master, or says why it cannot be one.
fn master_from_parts(
    fullname: &str,
    host: &str,
    mut addresses: Vec<IpAddr>,
    srv_port: u16,
    txt: MasterTxt,
) -> Result<DiscoveredMaster, SkippedMaster> {
    let instance = instance_name(fullname);
    let skip = |reason: String| SkippedMaster {
        instance: instance.clone(),
        reason,
    };
    let key_notes = || {
        txt.skipped
            .iter()
            .map(|s| format!("; txt key {:?}: {}", s.key, s.reason))
            .collect::<String>()
    };

    if let Some(version) = txt.txtvers.as_deref().filter(|v| *v != TXT_VERSION) {
        return Err(skip(format!(
            "txt record version {version:?} is newer than this node understands ({TXT_VERSION}); upgrade nodeos"
        )));
    }
    let Some(cluster) = txt.cluster.clone() else {
        return Err(skip(format!(
            "txt record has no usable cluster{}",
            key_notes()
        )));
    };
    let Some(pin_prefix) = txt.pin_prefix.clone() else {
        return Err(skip(format!("txt record has no usable pin{}", key_notes())));
    };
    if srv_port == 0 {
        return Err(skip("srv record has port 0".to_owned()));
    }
    addresses.sort_by_key(|a| (a.is_ipv6(), *a));
    addresses.dedup();
    if addresses.is_empty() {
        return Err(skip(format!("no address resolved for host {host:?}")));
    }
    if let Some(port) = txt.port.filter(|p| *p != srv_port) {
        log::warn!("mdns service {instance:?}: txt port {port} disagrees with srv port {srv_port}; using {srv_port}");
    }
    for skipped in &txt.skipped {
        log::debug!(
            "mdns service {instance:?}: txt key {:?}: {}",
            skipped.key,
            skipped.reason
        );
    }
    Ok(DiscoveredMaster {
        instance,
        host: host.strip_suffix('.').unwrap_or(host).to_owned(),
        addresses,
        port: srv_port,
        cluster,
        pin_prefix,
        version: txt.version,
    })
}

/// `name._cloudos._tcp.local.` to `name`; anything else is kept whole.
fn instance_name(fullname: &str) -> String {
    let suffix_len = SERVICE_TYPE.len() + 1;
    let split = fullname.len().checked_sub(suffix_len);
    match split.and_then(|at| Some((fullname.get(..at)?, fullname.get(at..)?))) {
        Some((name, suffix))
            if suffix.starts_with('.') && suffix[1..].eq_ignore_ascii_case(SERVICE_TYPE) =>
        {
            name.to_owned()
        }
        _ => fullname.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txt::SkippedKey;

    const PIN: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn txt() -> MasterTxt {
        MasterTxt {
            txtvers: Some("1".into()),
            cluster: Some("prod".into()),
            pin_prefix: Some("0123456789abcdef".into()),
            port: Some(6443),
            version: Some("0.1.0".into()),
            skipped: vec![],
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn master(instance: &str, pin_prefix: &str) -> DiscoveredMaster {
        DiscoveredMaster {
            instance: instance.into(),
            host: "m.local".into(),
            addresses: vec![ip("10.0.0.1")],
            port: 6443,
            cluster: "prod".into(),
            pin_prefix: pin_prefix.into(),
            version: None,
        }
    }

    #[test]
    fn instance_names() {
        let cases = [
            ("master 1._cloudos._tcp.local.", "master 1"),
            ("M._CLOUDOS._TCP.LOCAL.", "M"),
            ("x._http._tcp.local.", "x._http._tcp.local."),
            ("_cloudos._tcp.local.", "_cloudos._tcp.local."),
            ("", ""),
            ("é._cloudos._tcp.local.", "é"),
        ];
        for (fullname, want) in cases {
            assert_eq!(instance_name(fullname), want, "{fullname:?}");
        }
    }

    #[test]
    fn a_good_record_becomes_a_master_with_ipv4_first() {
        let addresses = vec![
            ip("fe80::1"),
            ip("10.0.0.9"),
            ip("10.0.0.2"),
            ip("10.0.0.2"),
        ];
        let got = master_from_parts(
            "m1._cloudos._tcp.local.",
            "m1.local.",
            addresses,
            6443,
            txt(),
        );
        assert_eq!(
            got,
            Ok(DiscoveredMaster {
                instance: "m1".into(),
                host: "m1.local".into(),
                addresses: vec![ip("10.0.0.2"), ip("10.0.0.9"), ip("fe80::1")],
                port: 6443,
                cluster: "prod".into(),
                pin_prefix: "0123456789abcdef".into(),
                version: Some("0.1.0".into()),
            })
        );
    }

    #[test]
    fn unusable_records_are_skipped_with_reasons() {
        let addrs = || vec![ip("10.0.0.1")];
        let name = "m._cloudos._tcp.local.";
        let cases: Vec<(&str, Result<DiscoveredMaster, SkippedMaster>, &str)> = vec![
            (
                "newer txtvers",
                master_from_parts(
                    name,
                    "m.local.",
                    addrs(),
                    6443,
                    MasterTxt {
                        txtvers: Some("2".into()),
                        ..txt()
                    },
                ),
                "txt record version \"2\" is newer",
            ),
            (
                "no cluster",
                master_from_parts(
                    name,
                    "m.local.",
                    addrs(),
                    6443,
                    MasterTxt {
                        cluster: None,
                        skipped: vec![SkippedKey {
                            key: "cluster".into(),
                            reason: "no value".into(),
                        }],
                        ..txt()
                    },
                ),
                "no usable cluster; txt key \"cluster\": no value",
            ),
            (
                "no pin",
                master_from_parts(
                    name,
                    "m.local.",
                    addrs(),
                    6443,
                    MasterTxt {
                        pin_prefix: None,
                        ..txt()
                    },
                ),
                "no usable pin",
            ),
            (
                "no address",
                master_from_parts(name, "m.local.", vec![], 6443, txt()),
                "no address resolved",
            ),
            (
                "port 0",
                master_from_parts(name, "m.local.", addrs(), 0, txt()),
                "port 0",
            ),
        ];
        for (case, got, want) in cases {
            match got {
                Err(skipped) => {
                    assert_eq!(skipped.instance, "m", "{case}");
                    assert!(
                        skipped.reason.contains(want),
                        "{case}: {:?}",
                        skipped.reason
                    );
                }
                Ok(master) => panic!("{case}: unexpectedly usable: {master:?}"),
            }
        }
    }

    #[test]
    fn missing_optional_keys_and_port_mismatch_are_tolerated() {
        let sparse = MasterTxt {
            txtvers: None,
            port: Some(1),
            version: None,
            ..txt()
        };
        let got = master_from_parts(
            "m._cloudos._tcp.local.",
            "m.local",
            vec![ip("10.0.0.1")],
            6443,
            sparse,
        )
        .expect("usable");
        assert_eq!(got.port, 6443);
        assert_eq!(got.version, None);
        assert_eq!(got.host, "m.local");
    }

    #[test]
    fn link_local_addresses_are_not_dialable() {
        let m = DiscoveredMaster {
            addresses: vec![ip("10.0.0.5"), ip("fd77::2"), ip("fe80::2"), ip("febf::1")],
            ..master("m", "0123456789abcdef")
        };
        let dialable: Vec<IpAddr> = m.dialable().collect();
        assert_eq!(dialable, [ip("10.0.0.5"), ip("fd77::2")]);
    }

    #[test]
    fn matching_pin_table() {
        let masters = vec![
            master("a", "0123456789abcdef"),
            master("b", "0123456789ABCDEF"),
            master("c", "fedcba9876543210"),
            master(
                "d",
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            ),
            master("e", "0123"),
        ];
        let names = |pin: &str| -> Vec<String> {
            matching_pin(&masters, pin)
                .into_iter()
                .map(|m| m.instance)
                .collect()
        };
        assert_eq!(names(PIN), ["a", "b", "d"]);
        assert_eq!(names(&PIN.to_ascii_uppercase()), ["a", "b", "d"]);
        assert!(names("sha256:ffff").is_empty());
        assert!(names("0123456789abcdef").is_empty());
        assert!(names("").is_empty());
        assert!(matching_pin(&[], PIN).is_empty());
    }
}
