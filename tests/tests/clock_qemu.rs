//! Wrong clocks at first contact, with real ISO boots on a private bridge: a master VM with
//! the host's time, and compute VMs whose hardware clock starts in 2001 and in 2040
//! (`-rtc base=`). Each knows only its role and a join token; it finds the master by mDNS,
//! takes the master's time over a connection checked against the token's CA pin (the
//! normal certificate check cannot pass at its own time), joins, and then keeps the
//! master's time over SNTP. What is checked is what a user would look at: the node's
//! `status` on its console (synced to the master, the offset), `cloudos node list` and
//! `cloudos node show` from the admin's laptop (Ready, the master's measure of the node's
//! clock), and the node's log. At most two VMs run at once: the compute nodes take turns.
//! Needs root (namespaces, taps) and `scripts/build.sh` first.

use std::path::Path;
use std::time::{Duration, Instant};

use cloudos_tests::guest::{boot_timeout, line_timeout, re};
use cloudos_tests::lab::{self, power_off, Admin};
use cloudos_tests::{artifacts, scaled, Arch, BootSource, TestNet, Vm, VmBuilder};

/// Boots the ISO with a data disk, a fixed MAC and, when given, a hardware clock starting
/// at `rtc_base` instead of the host's time.
fn boot(net: &TestNet, name: &str, mac: u8, disk: &Path, rtc_base: Option<&str>) -> Vm {
    let iso = artifacts::iso(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let mut vm = VmBuilder::new(Arch::X86_64)
        .name(name)
        .memory_mb(768)
        .boot(BootSource::Cdrom(iso))
        .disk(disk.to_path_buf())
        .network(
            net.vm_network_with_mac(&format!("52:54:00:c1:0c:{mac:02x}"))
                .expect("tap"),
        );
    if let Some(base) = rtc_base {
        vm = vm.extra_args(["-rtc".to_owned(), format!("base={base}")]);
    }
    vm.spawn().expect("starting QEMU")
}

fn compute_config(name: &str, token: &str) -> String {
    format!("role = \"compute\"\nhostname = \"{name}\"\ntoken = \"{token}\"\n")
}

/// The node's `status` on its console until its clock line says it follows the master;
/// the master offset it shows, in seconds.
fn status_says_synced_to_the_master(vm: &Vm, master_ip: &str) -> f64 {
    let console = vm.serial();
    let synced = regex::Regex::new(&format!(
        r"clock synced to {}:123 \(master\) offset [+-]\d+\.\d+s  master offset ([+-]\d+\.\d+)s",
        regex::escape(master_ip)
    ))
    .expect("regex");
    let deadline = Instant::now() + scaled(Duration::from_secs(120));
    loop {
        console.skip_to_end();
        console.send_line("status").expect("typing on the console");
        let line = console
            .wait_for(re(r"(clock (?:not synced|synced to).*)"), line_timeout())
            .expect("status has no clock line");
        let line = line.group(1).unwrap_or_default();
        if let Some(found) = synced.captures(line) {
            return found[1].parse().expect("an offset");
        }
        assert!(
            Instant::now() < deadline,
            "status never said the clock follows the master:\n{}",
            console.tail(40)
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// `cloudos node show` until the master has the node's clock report and skew; (synced,
/// source, skew in seconds).
fn node_show_clock(admin: &Admin, node: &str) -> (bool, String, f64) {
    let deadline = Instant::now() + scaled(Duration::from_secs(60));
    loop {
        let json: serde_json::Value =
            serde_json::from_str(&admin.ok(&["node", "show", node, "-o", "json"]))
                .expect("node show is JSON");
        let t = &json["telemetry"];
        let synced = t["clock"]["synced"].as_bool().unwrap_or(false);
        if let (true, Some(skew)) = (synced, t["clock_skew_secs"].as_f64()) {
            let source = t["clock"]["source"].as_str().unwrap_or_default().to_owned();
            return (synced, source, skew);
        }
        assert!(
            Instant::now() < deadline,
            "the master never had {node}'s clock: {json}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// One compute node whose hardware clock starts at `rtc_base`: it joins and ends within a
/// second of the master. `floor` says whether the boot should have raised the clock to the
/// build's time first (a clock behind it). The node is left running, with its disk.
fn wrong_clock_joins(
    net: &TestNet,
    admin: &Admin,
    master_ip: &str,
    token: &str,
    (name, mac, rtc_base, floor): (&str, u8, &str, bool),
) -> (Vm, tempfile::TempPath) {
    let started = Instant::now();
    let disk = artifacts::data_disk(&compute_config(name, token), 64).expect("disk");
    let node = boot(net, name, mac, &disk, Some(rtc_base));
    let year = &rtc_base[..4];
    let console = node.serial();
    if floor {
        console
            .wait_for(
                re(&format!(
                    r"clock: {year}-\S+ was before the build's time; set to 20\d\d-"
                )),
                boot_timeout(),
            )
            .expect("the boot did not raise the clock to the build's time");
    }
    console
        .wait_for(
            re(r"clock: set to the master's time 20\d\d-\S+ \([+-]\d+\.\d+s\), read over TLS checked against the CA pin"),
            boot_timeout(),
        )
        .expect("the node did not take the master's time over TLS");
    console
        .wait_for("joined cluster lab", boot_timeout())
        .unwrap_or_else(|e| panic!("{name} did not join: {e}"));
    admin.wait_for_state(name, "ready", scaled(Duration::from_secs(60)));

    let offset = status_says_synced_to_the_master(&node, master_ip);
    assert!(
        offset.abs() < 1.0,
        "{name} ends {offset}s from the master's clock"
    );
    let (synced, source, skew) = node_show_clock(admin, name);
    assert!(synced, "{name}: node show says not synced");
    assert_eq!(source, format!("{master_ip}:123 (master)"));
    assert!(
        skew.abs() < 1.0,
        "the master measures {name}'s clock {skew}s off"
    );
    let shown = admin.ok(&["node", "show", name]);
    assert!(
        shown.contains("synced to") && shown.contains("from the master's"),
        "{shown}"
    );
    assert!(
        !console.contents().contains("drifting"),
        "{name} warned of a drift:\n{}",
        console.tail(40)
    );
    eprintln!(
        "{name} (clock from {rtc_base}): joined and within {offset:+.3}s of the master (skew {skew:+.3}s) in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    (node, disk)
}

/// The synced time outlives a poweroff on a machine whose hardware clock is wrong again at
/// the next boot (a fresh QEMU from 2001, as a board without one): it starts from the time
/// saved on its data partition at the orderly poweroff, late enough that its stored
/// certificate works at once.
fn the_time_outlives_a_poweroff(
    node: Vm,
    disk: &Path,
    master_ip: &str,
    boot_again: impl Fn(&Path, &str) -> Vm,
) {
    let started = Instant::now();
    power_off(&node);
    drop(node);

    let node = boot_again(disk, "2001-01-01T00:00:00");
    let console = node.serial();
    console
        .wait_for(
            re(r"clock: 2001-\S+ was before the time saved at the last run; set to 20\d\d-"),
            boot_timeout(),
        )
        .expect("the saved time was not restored");
    console
        .wait_for("connected to master", boot_timeout())
        .expect("node-2001 did not reconnect from its saved time");
    let offset = status_says_synced_to_the_master(&node, master_ip);
    assert!(offset.abs() < 1.0, "after a cold boot from 2001: {offset}s");
    eprintln!(
        "node-2001: came back from a poweroff on its saved time in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    power_off(&node);
}

#[test]
fn compute_nodes_with_clocks_in_2001_and_2040_join_and_keep_the_masters_time() {
    let _guests = cloudos_tests::guests::reserve(2);
    let net = TestNet::new().expect("test network");
    net.start_dhcp_server(600).expect("dnsmasq");
    let admin_config = tempfile::tempdir().expect("temp dir");
    let admin = Admin::new(
        &net,
        artifacts::cloudos_cli(Arch::X86_64).unwrap_or_else(|e| panic!("{e}")),
        admin_config.path().to_path_buf(),
    );

    let master_disk = artifacts::data_disk(
        &format!(
            "role = \"master\"\nhostname = \"master-1\"\ncluster = \"lab\"\n{}",
            cloudos_tests::guest::TCG_NODE_TIMEOUT
        ),
        64,
    )
    .expect("disk");
    let master = boot(&net, "master-1", 1, &master_disk, None);
    let admin_token = lab::first_capture(
        &master,
        r"admin token: (cloudos1_\S+)",
        "no admin token shown",
        boot_timeout(),
    );
    let master_ip = lab::first_capture(
        &master,
        r"eth0: dhcp lease (10\.77\.0\.\d+)/24",
        "master got no address",
        boot_timeout(),
    );
    lab::first_capture(
        &master,
        r"(serving time \(SNTP\) on UDP port 123)",
        "the master does not serve time",
        boot_timeout(),
    );
    lab::first_capture(
        &master,
        r"(master listening on)",
        "master API not up",
        boot_timeout(),
    );
    admin.ok(&[
        "login",
        "--token",
        &admin_token,
        "--master",
        &format!("{master_ip}:9443"),
    ]);
    let token = admin
        .ok(&["token", "create", "--role", "compute", "--uses", "2"])
        .trim()
        .to_string();

    // 2001: before the build, so the boot raises the clock to the build's time first;
    // still before the master's certificates, so the join needs the master's time.
    let (node, disk) = wrong_clock_joins(
        &net,
        &admin,
        &master_ip,
        &token,
        ("node-2001", 2, "2001-01-01T00:00:00", true),
    );
    the_time_outlives_a_poweroff(node, &disk, &master_ip, |disk, base| {
        boot(&net, "node-2001", 2, disk, Some(base))
    });
    // 2040: after the master's CA expires; only the master's time lets it join.
    let (node, _disk) = wrong_clock_joins(
        &net,
        &admin,
        &master_ip,
        &token,
        ("node-2040", 3, "2040-01-01T00:00:00", false),
    );
    power_off(&node);
    let table = admin.ok(&["node", "list"]);
    assert!(
        table.contains("node-2001") && table.contains("node-2040"),
        "{table}"
    );
    power_off(&master);
}
