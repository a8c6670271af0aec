//! Real mDNS between two network namespaces: the advertiser (libmdns) in one, the
//! browser (mdns-sd) in the other. Needs root: skipped without it, or failed under
//! `CLOUDOS_STRICT=1` (scripts/test.sh).

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use cloudos_discovery::{
    browse, browse_report, matching_pin, pin_prefix, Advertiser, DiscoveredMaster, MasterAd,
    SERVICE_TYPE,
};
use cloudos_testkit::require;
use mdns_sd::{ServiceDaemon, ServiceEvent};
use support::{Lan, ADDR_A};

const PIN: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const OTHER_PIN: &str = "sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";

fn ad(instance: &str) -> MasterAd {
    MasterAd {
        instance: instance.to_owned(),
        cluster: "lab".to_owned(),
        pin_prefix: pin_prefix(PIN).expect("test pin"),
        port: 6443,
        version: "0.1.0-test".to_owned(),
    }
}

#[test]
fn a_browser_finds_the_advertised_master_with_its_txt_and_address() {
    require!(support::lan_host());
    support::init_log();
    let lan = Lan::new("find");

    let before = lan
        .in_ns(&lan.b, || browse(Duration::from_secs(1)))
        .expect("browse");
    assert_eq!(before, [], "nothing is advertised yet");

    let handle = lan
        .in_ns(&lan.a, || {
            Advertiser::new()
                .host("master-a")
                .addresses(vec![ADDR_A.into()])
                .start(&ad("cloudos lab master-a"))
        })
        .expect("advertise");
    assert_eq!(handle.instance(), "cloudos lab master-a");

    let report = lan
        .in_ns(&lan.b, || browse_report(Duration::from_secs(3)))
        .expect("browse");
    assert_eq!(report.skipped, []);
    assert_eq!(
        report.masters,
        [DiscoveredMaster {
            instance: "cloudos lab master-a".to_owned(),
            host: "master-a.local".to_owned(),
            addresses: vec![IpAddr::from(ADDR_A)],
            port: 6443,
            cluster: "lab".to_owned(),
            pin_prefix: "9f86d081884c7d65".to_owned(),
            version: Some("0.1.0-test".to_owned()),
        }]
    );
    assert_eq!(matching_pin(&report.masters, PIN), report.masters);
    assert_eq!(
        matching_pin(&report.masters, &PIN.to_ascii_uppercase()),
        report.masters
    );
    assert_eq!(matching_pin(&report.masters, OTHER_PIN), []);
    handle.stop();
}

#[test]
fn dropping_the_handle_withdraws_the_master_at_once() {
    require!(support::lan_host());
    support::init_log();
    let lan = Lan::new("bye");
    // No address list: libmdns answers with every non-loopback address.
    let handle = lan
        .in_ns(&lan.a, || {
            Advertiser::new().host("master-b").start(&ad("master-b"))
        })
        .expect("advertise");

    let (addresses, removed_after) = lan.in_ns(&lan.b, move || {
        let daemon = ServiceDaemon::new().expect("mdns-sd daemon");
        let events = daemon.browse(SERVICE_TYPE).expect("browse");
        let deadline = Instant::now() + Duration::from_secs(5);
        let resolved = loop {
            match events.recv_deadline(deadline) {
                Ok(ServiceEvent::ServiceResolved(service)) => break service,
                Ok(_) => {}
                Err(e) => panic!("master-b not resolved within 5 s: {e}"),
            }
        };
        let mut addresses: Vec<IpAddr> =
            resolved.addresses.iter().map(|a| a.to_ip_addr()).collect();
        addresses.sort_by_key(|a| (a.is_ipv6(), *a));

        let dropped = Instant::now();
        drop(handle);
        // The record TTL is 60 s: only a goodbye packet removes it this fast.
        let deadline = dropped + Duration::from_secs(5);
        let removed_after = loop {
            match events.recv_deadline(deadline) {
                Ok(ServiceEvent::ServiceRemoved(_, name)) if name.starts_with("master-b.") => {
                    break dropped.elapsed();
                }
                Ok(_) => {}
                Err(e) => panic!("master-b not withdrawn within 5 s of dropping the handle: {e}"),
            }
        };
        let _ = daemon.shutdown();
        (addresses, removed_after)
    });
    assert_eq!(
        addresses.first(),
        Some(&IpAddr::from(ADDR_A)),
        "ipv4 first: {addresses:?}"
    );
    assert!(
        addresses.iter().skip(1).all(IpAddr::is_ipv6),
        "{addresses:?}"
    );
    eprintln!("withdrawn {removed_after:?} after dropping the handle");
}

#[test]
fn advertising_without_a_network_is_an_error_not_a_panic() {
    require!(support::lan_host());
    let lan = Lan::new("nonet");
    support::run(std::process::Command::new("ip").args([
        "-n",
        &lan.a,
        "addr",
        "flush",
        "dev",
        support::LINK,
    ]));
    let started = lan.in_ns(&lan.a, || {
        Advertiser::new().host("master-c").start(&ad("master-c"))
    });
    match started {
        Err(err) => eprintln!("as expected: {err}"),
        Ok(handle) => panic!("advertised {:?} with no address", handle.instance()),
    }

    let bad = MasterAd {
        pin_prefix: "not hex".to_owned(),
        ..ad("master-c")
    };
    let err = Advertiser::new()
        .host("master-c")
        .start(&bad)
        .expect_err("bad pin prefix");
    assert!(
        err.to_string().starts_with("invalid ca pin prefix"),
        "{err}"
    );
}
