//! A mixed-architecture cluster of real ISO boots on a private bridge: an x86_64
//! master VM that runs workloads too (`workloads = "on"`: its own machine joins as node
//! `master-1`, a cluster of one machine) and an ARM64 compute VM (qemu-system-aarch64
//! -M virt, UEFI) whose only settings are a role and a join token. The ARM64 node finds
//! the master by mDNS and joins; images are placed by architecture:
//!
//! - an arm64-only image runs on the ARM64 node (its `uname -m` says aarch64);
//! - an amd64-only image runs on the master's own machine (x86_64);
//! - an image with an index for amd64 and arm64 runs from the manifest of the node it is
//!   placed on;
//! - a riscv64-only image has no node to go to, and `cloudos ps` says why.
//!
//! The images are Debian's static busybox for each architecture, in a
//! `docker-registry` on the host side of the bridge. Needs root (namespaces,
//! taps) and `scripts/build.sh` (both architectures) first.

use std::path::Path;
use std::time::Duration;

use cloudos_testkit::require;
use cloudos_tests::guest::boot_timeout;
use cloudos_tests::lab::{self, power_off, Admin};
use cloudos_tests::registry::{arm64_busybox, host_busybox, Image, Registry};
use cloudos_tests::{artifacts, scaled, Arch, BootSource, Firmware, TestNet, Vm, VmBuilder};

const REGISTRY: &str = "10.77.0.1:5000";

fn boot(net: &TestNet, arch: Arch, name: &str, disk: &Path, mac: &str) -> Vm {
    let iso = artifacts::iso(arch).unwrap_or_else(|e| panic!("{e}"));
    let firmware = match arch {
        Arch::X86_64 => Firmware::Bios,
        // The ARM64 ISO is UEFI only.
        Arch::Aarch64 => Firmware::Uefi,
    };
    VmBuilder::new(arch)
        .name(name)
        .memory_mb(1024)
        .firmware(firmware)
        .boot(BootSource::Cdrom(iso))
        .disk(disk.to_path_buf())
        .network(net.vm_network_with_mac(mac).expect("tap"))
        .spawn()
        .expect("starting QEMU")
}

/// The first group of the first console line matching `pattern`.
fn first_capture(vm: &Vm, pattern: &str, what: &str) -> String {
    lab::first_capture(vm, pattern, what, boot_timeout())
}

/// Runs `image` with `uname -m` and returns the task once it has ended, with its logs.
fn run_uname(admin: &Admin, image: &str) -> (serde_json::Value, String) {
    let id = admin
        .ok(&["run", image, "--", "uname", "-m"])
        .trim()
        .to_owned();
    let task = admin.wait_task(
        &id,
        &["succeeded", "failed"],
        scaled(Duration::from_secs(240)),
    );
    (task, admin.ok(&["logs", &id]))
}

#[test]
fn an_arm64_node_joins_an_x86_master_and_runs_the_images_made_for_it() {
    let _guests = cloudos_tests::guests::reserve(2);
    require!(cloudos_testkit::root("namespaces and taps"));
    let net = TestNet::new().expect("test network");
    net.start_dhcp_server(600).expect("dnsmasq");
    let in_net = |program: &str| net.command(program);
    let registry = Registry::start(&in_net, REGISTRY).unwrap_or_else(|e| panic!("{e}"));
    let amd64 = Image::busybox("amd64", &host_busybox(), &[]).expect("amd64 image");
    let arm64 = Image::busybox(
        "arm64",
        &arm64_busybox().unwrap_or_else(|e| panic!("{e}")),
        &[],
    )
    .expect("arm64 image");
    let push = |repo: &str, image: &Image| {
        registry
            .push(&in_net, repo, "1", image)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    push("lab/amd64-only", &amd64);
    // Labelled for a machine no node is: its layers are never run.
    let riscv64 = Image::busybox("riscv64", &host_busybox(), &[]).expect("riscv64 image");
    push("lab/riscv64-only", &riscv64);
    push("lab/arm64-only", &arm64);
    registry
        .push_index(
            &in_net,
            "lab/busybox",
            "1",
            &[("amd64", &amd64), ("arm64", &arm64)],
        )
        .unwrap_or_else(|e| panic!("{e}"));

    let admin_config = tempfile::tempdir().expect("temp dir");
    let admin = Admin::new(
        &net,
        artifacts::cloudos_cli(Arch::X86_64).unwrap_or_else(|e| panic!("{e}")),
        admin_config.path().to_path_buf(),
    );

    // The x86_64 master.
    let master_disk = artifacts::data_disk(
        &format!(
            "role = \"master\"\nhostname = \"master-1\"\ncluster = \"lab\"\nworkloads = \"on\"\ninsecure_registries = \"{REGISTRY}\"\n{}",
            cloudos_tests::guest::TCG_NODE_TIMEOUT
        ),
        256,
    )
    .expect("disk");
    let master = boot(
        &net,
        Arch::X86_64,
        "master-1",
        &master_disk,
        "52:54:00:c3:00:01",
    );
    let admin_token = first_capture(
        &master,
        r"admin token: (cloudos1_\S+)",
        "no admin token shown",
    );
    let address = first_capture(
        &master,
        r"eth0: dhcp lease (10\.77\.0\.\d+)/24",
        "master got no address",
    );
    first_capture(&master, r"(master listening on)", "master API not up");
    admin.log_in(&admin_token, &format!("{address}:9443"));
    // The master's own machine is a node of its cluster, found at its LAN address (the
    // one the other nodes' mesh reaches), not at loopback.
    master
        .serial()
        .wait_for("joined cluster lab", boot_timeout())
        .expect("the master's own node did not join");
    admin.wait_for_state("master-1", "ready", scaled(Duration::from_secs(60)));
    let own: serde_json::Value =
        serde_json::from_str(&admin.ok(&["node", "show", "master-1", "-o", "json"])).expect("JSON");
    assert_eq!(own["address"], address.as_str(), "{own}");
    assert_eq!(own["arch"], "x86_64", "{own}");
    let token = admin
        .ok(&["token", "create", "--role", "compute"])
        .trim()
        .to_string();

    // The ARM64 compute node knows its role and token only: the master is found by mDNS.
    let node_disk = artifacts::data_disk(
        &format!(
            "role = \"compute\"\nhostname = \"arm-1\"\ntoken = \"{token}\"\ninsecure_registries = \"{REGISTRY}\"\n"
        ),
        256,
    )
    .expect("disk");
    let node = boot(
        &net,
        Arch::Aarch64,
        "arm-1",
        &node_disk,
        "52:54:00:c3:00:02",
    );
    node.serial()
        .wait_for("joined cluster lab", boot_timeout())
        .expect("the ARM64 node did not join");
    admin.wait_for_state("arm-1", "ready", scaled(Duration::from_secs(60)));
    let info: serde_json::Value =
        serde_json::from_str(&admin.ok(&["node", "show", "arm-1", "-o", "json"])).expect("JSON");
    assert_eq!(info["arch"], "aarch64", "{info}");

    // An arm64-only image runs on the ARM64 node.
    let (task, logs) = run_uname(&admin, &format!("{REGISTRY}/lab/arm64-only:1"));
    assert_eq!(task["state"], "succeeded", "{task}\n{logs}");
    assert_eq!(task["node"], "arm-1", "{task}");
    assert_eq!(logs.trim(), "aarch64", "{task}");

    // An amd64-only image runs on the master's own machine: one machine runs a task.
    let (task, logs) = run_uname(&admin, &format!("{REGISTRY}/lab/amd64-only:1"));
    assert_eq!(task["state"], "succeeded", "{task}\n{logs}");
    assert_eq!(task["node"], "master-1", "{task}");
    assert_eq!(logs.trim(), "x86_64", "{task}");

    // A multi-arch image runs from the manifest of the node it lands on.
    let (task, logs) = run_uname(&admin, &format!("{REGISTRY}/lab/busybox:1"));
    assert_eq!(task["state"], "succeeded", "{task}\n{logs}");
    let arch = match task["node"].as_str() {
        Some("arm-1") => "aarch64",
        Some("master-1") => "x86_64",
        other => panic!("ran on {other:?}: {task}"),
    };
    assert_eq!(logs.trim(), arch, "{task}");

    // A riscv64-only image has nowhere to go.
    let id = admin
        .ok(&[
            "run",
            &format!("{REGISTRY}/lab/riscv64-only:1"),
            "--",
            "true",
        ])
        .trim()
        .to_owned();
    let reason = admin.wait(
        "a reason for the queued task",
        scaled(Duration::from_secs(30)),
        || {
            let task = admin.task(&id);
            let reason = task["reason"].as_str().unwrap_or_default().to_owned();
            (task["state"] == "queued" && reason.contains("riscv64 only")).then_some(reason)
        },
    );
    assert!(
        reason.contains("aarch64") && reason.contains("x86_64"),
        "{reason}"
    );
    let table = admin.ok(&["ps"]);
    assert!(table.contains("image is riscv64 only"), "{table}");
    admin.ok(&["cancel", &id]);

    for (vm, name) in [(&node, "arm-1"), (&master, "master-1")] {
        let console = vm.serial().contents();
        assert!(
            !console.contains("Kernel panic") && !console.contains("panicked at"),
            "{name} panicked:\n{}",
            vm.serial().tail(40)
        );
    }
    power_off(&node);
    power_off(&master);
}
