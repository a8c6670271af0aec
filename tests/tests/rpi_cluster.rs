//! A Raspberry Pi joins a cluster. The SD card image boots on QEMU's
//! `raspi3b` from its own kernel, device tree and initramfs; its network is a
//! USB Ethernet device (QEMU `usb-net`; a real Pi 3B's Ethernet is on USB too);
//! and it has no real-time clock, so the board starts in 1970, as a real Pi
//! does. The card's `cmdline.txt` names the role, the token and the master, as
//! a user would write it. The master is a `nodeos master` process on the
//! bridge, whose clock is the host's, with an arm64 busybox in a registry.
//!
//! The Pi must not trust 1970: it raises its clock to the build's time, takes
//! the master's time over TLS checked against the token's CA pin, joins,
//! stays in step with the master by SNTP, and runs a task.
//!
//! One guest. Needs root (namespaces, taps), `scripts/build.sh` (aarch64) and
//! `cargo build -p nodeos -p cloudos-cli` (the host-side master and CLI).

use std::time::Duration;

use cloudos_testkit::require;
use cloudos_tests::admin::Admin;
use cloudos_tests::guest::{boot_timeout, re};
use cloudos_tests::lab::HostMaster;
use cloudos_tests::registry::{arm64_busybox, Image, Registry};
use cloudos_tests::rpi::{self, PiBoot};
use cloudos_tests::{artifacts, scaled, TestNet};

const REGISTRY: &str = "10.77.0.1:5000";
const MASTER: &str = "10.77.0.1:9443";
/// QEMU's SD cards are a power of two in size.
const CARD_SIZE: u64 = 1 << 30;

#[test]
fn a_raspberry_pi_without_a_clock_joins_a_master_and_runs_a_task() {
    let _guests = cloudos_tests::guests::reserve(1);
    require!(cloudos_testkit::root("namespaces and taps"));
    let net = TestNet::new().expect("test network");
    net.start_dhcp_server(600).expect("dnsmasq");
    let dir = tempfile::tempdir().expect("temp dir");
    let in_net = |program: &str| net.command(program);
    let registry = Registry::start(&in_net, REGISTRY).unwrap_or_else(|e| panic!("{e}"));
    let busybox = Image::busybox(
        "arm64",
        &arm64_busybox().unwrap_or_else(|e| panic!("{e}")),
        &[],
    )
    .expect("arm64 image");
    registry
        .push(&in_net, "lab/busybox", "1", &busybox)
        .unwrap_or_else(|e| panic!("{e}"));

    let master = HostMaster::start(
        &net,
        &dir.path().join("master"),
        // The appliance master serves time; a host master does when told to.
        &["--insecure-registry", REGISTRY, "--serve-time"],
    );
    let admin = Admin::login(&net, &dir.path().join("admin"), &master, MASTER);
    let token = admin
        .ok(&["token", "create", "--role", "compute"])
        .trim()
        .to_owned();

    let image = artifacts::rpi_image().unwrap_or_else(|e| panic!("{e}"));
    let card = artifacts::sd_card_from_image(&image, dir.path(), CARD_SIZE)
        .unwrap_or_else(|e| panic!("{e}"));
    let table = rpi::read_mbr(&card).unwrap_or_else(|e| panic!("{e}"));
    let mut pi = PiBoot::from_card(&card, &table[0], dir.path());
    // What a user adds to cmdline.txt.
    pi.append = format!(
        "{} cloudos.role=compute cloudos.hostname=pi-1 cloudos.token={token} \
         cloudos.master={MASTER} cloudos.insecure_registries={REGISTRY}",
        pi.append
    );
    let vm = pi
        .vm(&card)
        .network(net.vm_network_with_mac("52:54:00:c5:00:01").expect("tap"))
        .nic_model("usb-net")
        .spawn()
        .expect("starting QEMU");
    let console = vm.serial();
    let from_start = console.clone();

    // 1970 is not believed: the clock starts no earlier than the build.
    from_start
        .clone()
        .wait_for(re(r"clock: .* was before .*; set to "), boot_timeout())
        .unwrap_or_else(|e| panic!("the clock was not raised from 1970: {e:?}"));
    // The lease comes over the USB Ethernet device (the kernel names it usb0).
    from_start
        .clone()
        .wait_for(re(r"usb0: dhcp lease 10\.77\.0\.\d+/24"), boot_timeout())
        .unwrap_or_else(|e| {
            panic!(
                "no DHCP lease over USB Ethernet: {e:?}\n{}",
                console.tail(30)
            )
        });
    console
        .wait_for("joined cluster lab", boot_timeout())
        .unwrap_or_else(|e| panic!("the Pi did not join: {e:?}\n{}", console.tail(40)));
    admin.wait_for_state("pi-1", "ready", scaled(Duration::from_secs(120)));
    let info: serde_json::Value =
        serde_json::from_str(&admin.ok(&["node", "show", "pi-1", "-o", "json"])).expect("JSON");
    assert_eq!(info["arch"], "aarch64", "{info}");

    // A task runs on the Pi.
    let id = admin
        .ok(&[
            "run",
            &format!("{REGISTRY}/lab/busybox:1"),
            "--",
            "uname",
            "-m",
        ])
        .trim()
        .to_owned();
    let task = admin.wait_task(
        &id,
        &["succeeded", "failed"],
        scaled(Duration::from_secs(300)),
    );
    assert_eq!(task["state"], "succeeded", "{task}");
    assert_eq!(task["node"], "pi-1", "{task}");
    assert_eq!(admin.ok(&["logs", &id]).trim(), "aarch64");

    // Its clock is the master's: the node says it is synced, and the skew the
    // master measures from its heartbeats is under a second.
    console.skip_to_end();
    console.send_line("status").expect("typing on the console");
    console
        .wait_for(re(r"clock synced to "), scaled(Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("status does not say the clock is synced: {e:?}"));
    let (source, skew) = admin.wait(
        "the master's measure of the Pi's synced clock",
        scaled(Duration::from_secs(60)),
        || {
            let info: serde_json::Value =
                serde_json::from_str(&admin.ok(&["node", "show", "pi-1", "-o", "json"])).ok()?;
            let t = &info["telemetry"];
            if !t["clock"]["synced"].as_bool().unwrap_or(false) {
                return None;
            }
            let source = t["clock"]["source"].as_str().unwrap_or_default().to_owned();
            Some((source, t["clock_skew_secs"].as_f64()?))
        },
    );
    assert_eq!(source, "10.77.0.1:123 (master)", "the Pi's time server");
    assert!(skew.abs() < 1.0, "the Pi is {skew:+.3}s from its master");
    console
        .send_line("poweroff")
        .expect("typing on the console");
    console
        .wait_for(
            "shutdown: powering off now",
            scaled(Duration::from_secs(60)),
        )
        .expect("no orderly poweroff");
    // raspi3b halts but QEMU does not exit (FACTS): stop it.
    vm.stop().expect("stopping QEMU");
}
