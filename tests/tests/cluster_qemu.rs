//! A cluster of real ISO boots on a private bridge: a master VM and compute
//! VMs whose only settings are a role and a join token (in the config.toml on
//! their data disk, the file the installer writes). The compute nodes find the
//! master by mDNS, join, and show Ready in `cloudos node list`, run from the
//! host side of the bridge as an admin's laptop would. At most two VMs run at
//! once (this host has two cores), so the compute nodes take turns. A compute node is
//! rebooted by `cloudos node reboot` and comes back Ready with a new boot.
//! Needs root (namespaces, taps) and `scripts/build.sh` first.

use std::path::Path;
use std::time::{Duration, Instant};

use cloudos_tests::guest::boot_timeout;
use cloudos_tests::lab::{self, power_off, Admin};
use cloudos_tests::{artifacts, scaled, Arch, BootSource, TestNet, Vm, VmBuilder};

/// Scrapes the node's own metrics endpoint from the admin's laptop, as
/// Prometheus would, and checks that it reports its master connection.
fn node_metrics_say_connected(admin: &Admin, node: &str) {
    let json: serde_json::Value =
        serde_json::from_str(&admin.ok(&["node", "show", node, "-o", "json"]))
            .expect("node show is JSON");
    let address = json["address"].as_str().expect("address").to_string();
    let url = format!("http://{address}:9101/metrics");
    let deadline = Instant::now() + scaled(Duration::from_secs(30));
    loop {
        let out = admin
            .net
            .command("curl")
            .args(["-sf", "--max-time", "5", &url])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        if text.lines().any(|l| l.trim() == "cloudos_node_connected 1") {
            assert!(text.contains("cloudos_node_memory_total_bytes"), "{text}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} does not say connected: {text}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Boots the ISO with a data disk. Each machine has its own fixed MAC
/// (`52:54:00:c1:00:<n>`), as a real one would across reboots.
fn boot(net: &TestNet, name: &str, disk: &Path) -> Vm {
    let n: u32 = name.bytes().map(u32::from).sum::<u32>() & 0xff;
    let iso = artifacts::iso(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    VmBuilder::new(Arch::X86_64)
        .name(name)
        .memory_mb(768)
        .boot(BootSource::Cdrom(iso))
        .disk(disk.to_path_buf())
        .network(
            net.vm_network_with_mac(&format!("52:54:00:c1:00:{n:02x}"))
                .expect("tap"),
        )
        .spawn()
        .expect("starting QEMU")
}

/// The first group of the first console line matching `pattern`.
fn first_capture(vm: &Vm, pattern: &str, what: &str) -> String {
    lab::first_capture(vm, pattern, what, boot_timeout())
}

fn compute_config(name: &str, token: Option<&str>) -> String {
    let mut config = format!("role = \"compute\"\nhostname = \"{name}\"\n");
    if let Some(token) = token {
        config.push_str(&format!("token = \"{token}\"\n"));
    }
    config
}

#[test]
fn compute_nodes_find_the_master_by_mdns_join_and_survive_restarts() {
    let _guests = cloudos_tests::guests::reserve(2);
    let net = TestNet::new().expect("test network");
    net.start_dhcp_server(600).expect("dnsmasq");
    let admin_config = tempfile::tempdir().expect("temp dir");
    let admin = Admin::new(
        &net,
        artifacts::cloudos_cli(Arch::X86_64).unwrap_or_else(|e| panic!("{e}")),
        admin_config.path().to_path_buf(),
    );

    // The master: first start creates the cluster and shows one admin token.
    let master_disk = artifacts::data_disk(
        &format!(
            "role = \"master\"\nhostname = \"master-1\"\ncluster = \"lab\"\n{}",
            cloudos_tests::guest::TCG_NODE_TIMEOUT
        ),
        // Room for the release it offers (kernel, initramfs, nodeos and the etcd pack:
        // about 58 MB) besides its state.
        160,
    )
    .expect("disk");
    let master = boot(&net, "master-1", &master_disk);
    // These lines come in an order that depends on DHCP timing.
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

    let endpoint = format!("{address}:9443");
    admin.ok(&["login", "--token", &admin_token, "--master", &endpoint]);
    let status = admin.ok(&["status", "-o", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(status["cluster_name"], "lab", "{status}");
    let pin = status["ca_pin"].as_str().expect("pin").to_string();
    // A live master offers the release it runs, put together from the ISO it booted:
    // the build's own bundle (the same size; the master checked every part's hash).
    let (version, size) = admin.offered_release("x86_64", Duration::from_secs(120));
    let built = artifacts::out_dir().join(format!("cloudos-{version}-x86_64.bundle"));
    let built_size = std::fs::metadata(&built).expect("the build's bundle").len();
    assert_eq!(
        size,
        built_size,
        "the offered release is not {}",
        built.display()
    );

    // A compute token that two nodes will use; it never appears on a console.
    let token = admin
        .ok(&["token", "create", "--role", "compute", "--uses", "2"])
        .trim()
        .to_string();
    let secret = token.split('_').nth(2).expect("token secret").to_string();

    // node-1 knows only its role and token: it finds the master by mDNS.
    let node1_disk =
        artifacts::data_disk(&compute_config("node-1", Some(&token)), 64).expect("disk");
    let node1 = boot(&net, "node-1", &node1_disk);
    node1
        .serial()
        .wait_for("joined cluster lab", boot_timeout())
        .expect("node-1 did not join");
    admin.wait_for_state("node-1", "ready", scaled(Duration::from_secs(60)));
    node_metrics_say_connected(&admin, "node-1");
    assert!(
        !node1.serial().contents().contains(&secret),
        "the join token's secret is on node-1's console"
    );
    assert!(
        !master.serial().contents().contains(&secret),
        "the join token's secret is on the master's console"
    );

    // Power off node-1: the master notices.
    power_off(&node1);
    drop(node1);
    admin.wait_for_state("node-1", "not_ready", scaled(Duration::from_secs(60)));

    // Restart the master on the same disk: CA, tokens and nodes survive, and
    // no second admin token is shown (the first one has been used).
    power_off(&master);
    drop(master);
    let master = boot(&net, "master-1", &master_disk);
    first_capture(
        &master,
        r"(master listening on)",
        "master did not come back",
    );
    let again = first_capture(
        &master,
        r"eth0: dhcp lease (10\.77\.0\.\d+)/24",
        "master got no address",
    );
    assert_eq!(
        again, address,
        "the DHCP server gave the master another address"
    );
    assert!(
        !master.serial().contents().contains("admin token:"),
        "a used admin token was replaced after restart"
    );
    let status: serde_json::Value = serde_json::from_str(&admin.ok(&["status", "-o", "json"]))
        .expect("status JSON after restart");
    assert_eq!(
        status["ca_pin"].as_str(),
        Some(pin.as_str()),
        "the CA changed across a restart"
    );
    assert!(
        admin.node_states().iter().any(|(n, _)| n == "node-1"),
        "node-1 forgotten by the restarted master"
    );
    let tokens = admin.ok(&["token", "list", "-o", "json"]);
    assert!(
        tokens.contains(token.split('_').nth(1).expect("id")),
        "token lost across a restart: {tokens}"
    );

    // node-1 boots again without a token: its identity on the data disk is enough.
    artifacts::rewrite_config(&node1_disk, &compute_config("node-1", None))
        .expect("editing node-1's config");
    let node1 = boot(&net, "node-1", &node1_disk);
    node1
        .serial()
        .wait_for("connected to master", boot_timeout())
        .expect("node-1 did not reconnect");
    admin.wait_for_state("node-1", "ready", scaled(Duration::from_secs(60)));

    // `cloudos node reboot`: the master asks node-1 over its agent's connection, node-1's
    // PID 1 goes down in order (QEMU runs with -no-reboot, so the machine's reset is
    // QEMU's exit, and the machine is started again on the same disk), and the command
    // returns once node-1 is back Ready with a new boot id.
    let node1 = std::thread::scope(|s| {
        let waiting = s.spawn(|| admin.run(&["node", "reboot", "node-1", "--timeout", "10m"]));
        node1
            .serial()
            .wait_for("rebooting now", scaled(Duration::from_secs(90)))
            .expect("node-1 did not go down for a reboot");
        node1
            .wait_exit(scaled(Duration::from_secs(60)))
            .expect("QEMU did not exit on the reboot (-no-reboot)");
        let console = node1.serial().contents();
        assert!(
            console.contains("rebooting as the master asks (asked by admin")
                && console.contains("rebooting; stopping services"),
            "no orderly reboot asked by the master on node-1's console:\n{}",
            node1.serial().tail(30)
        );
        drop(node1);
        let node1 = boot(&net, "node-1", &node1_disk);
        let said = waiting.join().expect("the reboot command");
        let out = String::from_utf8_lossy(&said.stdout).into_owned();
        assert!(
            said.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&said.stderr)
        );
        assert!(out.contains("node node-1 is down"), "{out}");
        assert!(
            out.contains("node node-1 is back and Ready (boot "),
            "{out}"
        );
        node1
    });
    node1
        .serial()
        .wait_for("connected to master", boot_timeout())
        .expect("node-1 came back without its connection");
    power_off(&node1);
    drop(node1);

    // node-2 uses the token's second use.
    let node2_disk =
        artifacts::data_disk(&compute_config("node-2", Some(&token)), 64).expect("disk");
    let node2 = boot(&net, "node-2", &node2_disk);
    node2
        .serial()
        .wait_for("joined cluster lab", boot_timeout())
        .expect("node-2 did not join");
    admin.wait_for_state("node-2", "ready", scaled(Duration::from_secs(60)));
    let table = admin.ok(&["node", "list"]);
    assert!(
        table.contains("node-1") && table.contains("node-2"),
        "{table}"
    );

    power_off(&node2);
    power_off(&master);
}
