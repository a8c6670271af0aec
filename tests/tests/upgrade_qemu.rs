//! Rolling upgrades of installed machines (issue 19). A master and a compute node are
//! installed from the live ISO with answer files onto their own disks (slot A); a second
//! compute node runs as a process on the bridge's host side and holds one replica of a
//! two-replica service. The test builds a second release of the same code under another
//! version (`scripts/build.sh --bundle-only`: a version stamp and a new initramfs, no
//! compile), the admin adds it and runs `cloudos upgrade --to V --nodes pool=vm`: the VM
//! compute node is drained (its replica starts elsewhere first), downloads the bundle over
//! its certificate, writes slot B, reboots into it, comes back on the new version with slot
//! B confirmed and is uncordoned; then the master upgrades itself the same way, last. The
//! service is sampled all along and never has no replica running. The node then refuses
//! the same and an older version by itself, and `cloudos node rollback` takes it back to
//! slot A. Then a bad release (its agent crashes at every start, baked in with
//! `--image-cmdline cloudos.fault=…`): the node writes slot B, boots it, finds its
//! services not ready in time, goes back to slot A by itself and says why; the rollout
//! stops there with that reason (the master is not touched), and a second rollout to that
//! release is refused unless `--retry-failed`.
//!
//! Two guests at once; run under the shared QEMU lock. Needs root (namespaces, taps),
//! mtools and dosfstools, the debug `nodeos` and `cloudos` (`cargo build -p nodeos -p
//! cloudos-cli`) and `scripts/build.sh --arch x86_64`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cloudos_tests::checks::{
    assert_no_kernel_panic, assert_no_panic, blank_disk, config_disk, install_timeout, install_vm,
    step,
};
use cloudos_tests::guest::{boot_timeout, re};
use cloudos_tests::lab::{self, debug_binary, Admin, HostMaster};
use cloudos_tests::{artifacts, scaled, Arch, BootSource, TestNet, Vm, VmBuilder};

const GIB: u64 = 1 << 30;
const MAC: &str = "52:54:00:c1:19:01";
const MASTER_MAC: &str = "52:54:00:c1:19:02";
const NODE: &str = "up-node";
const MASTER: &str = "up-master";
const HOST_NODE: &str = "host-node";
const REGISTRY: &str = "10.77.0.1:5000";
const BUSYBOX: &str = "10.77.0.1:5000/lab/busybox:1";
const NEXT: &str = "0.1.1-upgrade.test";
const BAD: &str = "0.1.2-bad.test";

/// The installed disk alone; a guest reboot resets the machine (an upgrade reboots).
fn node_vm(name: &str, target: &Path, net: &TestNet, mac: &str) -> Vm {
    VmBuilder::new(Arch::X86_64)
        .name(name)
        .memory_mb(768)
        .boot(BootSource::Disk(target.to_path_buf()))
        .network(net.vm_network_with_mac(mac).expect("tap"))
        .extra_args([
            // Later than the builder's -no-reboot, so it wins: a reboot is a reset.
            "-action".to_owned(),
            "reboot=reset".to_owned(),
        ])
        .spawn()
        .expect("starting QEMU")
}

/// A release of this build's nodeos stamped `version`, its initramfs (with `image_cmdline`
/// baked in, if any) and the signed bundle, in `dir`.
fn build_release(dir: &Path, version: &str, image_cmdline: Option<&str>) -> PathBuf {
    let started = Instant::now();
    let mut cmd = Command::new(artifacts::workspace_root().join("scripts/build.sh"));
    cmd.args(["--arch", "x86_64", "--version", version, "--bundle-only"])
        .arg(dir);
    if let Some(line) = image_cmdline {
        cmd.args(["--image-cmdline", line]);
    }
    let output = cmd.output().expect("running scripts/build.sh");
    assert!(
        output.status.success(),
        "building release {version} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!(
        "release {version} built in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    dir.join(format!("cloudos-{version}-x86_64.bundle"))
}

/// The version node `name` runs, from its first heartbeat's telemetry. A node is Ready on
/// its hello, and its first heartbeat follows a moment later: until then it has none.
fn reported_version(admin: &Admin, name: &str) -> String {
    let deadline = Instant::now() + step();
    loop {
        let node = node_json(admin, name);
        if let Some(version) = node["telemetry"]["nodeos_version"].as_str() {
            return version.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{name} sent no telemetry within {:?} of being Ready: {node}",
            step()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The node as the admin sees it, as JSON.
fn node_json(admin: &Admin, name: &str) -> serde_json::Value {
    serde_json::from_str(&admin.ok(&["node", "show", name, "-o", "json"])).expect("node JSON")
}

/// Installs the compute node from the ISO with an answer file (joining the master at
/// `master`), boots the installed disk (slot A, confirmed) and waits until the node is Ready.
/// Returns the running machine and the version it runs.
fn install_and_join(dir: &Path, net: &TestNet, admin: &Admin, master: &str) -> (Vm, String) {
    let token = admin.token("compute", &[]);
    let target = blank_disk(dir, "target.img", 4 * GIB);
    let answers = format!(
        "mode = \"compute\"\nhostname = \"{NODE}\"\ndisk = \"/dev/vda\"\nwipe = true\n\
         token = \"{token}\"\nmaster = \"{master}\"\ninsecure_registries = [\"{REGISTRY}\"]\n"
    );
    let cfg = config_disk(dir, &answers);
    let vm = install_vm("upgrade-install", &target, &cfg, Some((net, MAC)));
    vm.serial()
        .wait_for("install complete: /dev/vda", install_timeout())
        .unwrap_or_else(|e| panic!("the install did not complete: {e}"));
    vm.wait_exit(step())
        .expect("QEMU did not exit on the reboot (-no-reboot)");
    assert_no_panic(&vm);
    drop(vm);

    let vm = node_vm("upgrade-node", &target, net, MAC);
    let console = vm.serial();
    console
        .wait_for("Booting `CloudOS (slot a)'", boot_timeout())
        .expect("GRUB did not boot slot A");
    console
        .wait_for(
            re(r"nodeos ready in \d+\.\d+s: host up-node, role compute"),
            boot_timeout(),
        )
        .expect("the installed node did not come up");
    console
        .wait_for("slot a confirmed good", step())
        .expect("slot A was not confirmed");
    admin.wait_for_state(NODE, "ready", step());
    let first = reported_version(admin, NODE);
    (vm, first)
}

/// The master installed on its own disk (slot A), logged in to by the admin. Returns the
/// running machine, its address and the version it runs.
fn install_master(dir: &Path, net: &TestNet, admin: &Admin) -> (Vm, String, String) {
    let target = blank_disk(dir, "master.img", 4 * GIB);
    let answers = format!(
        "mode = \"master\"\nhostname = \"{MASTER}\"\ncluster = \"lab\"\ndisk = \"/dev/vda\"\n\
         wipe = true\ninsecure_registries = [\"{REGISTRY}\"]\n"
    );
    let cfg_dir = dir.join("master-cfg");
    std::fs::create_dir_all(&cfg_dir).expect("mkdir");
    let cfg = config_disk(&cfg_dir, &answers);
    let vm = install_vm(
        "upgrade-master-install",
        &target,
        &cfg,
        Some((net, MASTER_MAC)),
    );
    vm.serial()
        .wait_for("install complete: /dev/vda", install_timeout())
        .unwrap_or_else(|e| panic!("the master install did not complete: {e}"));
    vm.wait_exit(step())
        .expect("QEMU did not exit on the reboot (-no-reboot)");
    assert_no_panic(&vm);
    drop(vm);
    let vm = node_vm("upgrade-master", &target, net, MASTER_MAC);
    vm.serial()
        .wait_for(
            re(r"nodeos ready in \d+\.\d+s: host up-master, role master"),
            boot_timeout(),
        )
        .expect("the installed master did not come up");
    let token = lab::first_capture(
        &vm,
        r"admin token: (cloudos1_\S+)",
        "no admin token on the installed master's first boot",
        step(),
    );
    let address = lab::first_capture(
        &vm,
        r"eth0: dhcp lease (10\.77\.0\.\d+)/24",
        "the installed master got no address",
        step(),
    );
    lab::first_capture(&vm, r"(master listening on)", "master API not up", step());
    vm.serial()
        .wait_for("slot a confirmed good", step())
        .expect("the master's slot A was not confirmed");
    let master = format!("{address}:9443");
    admin.log_in(&token, &master);
    let status: serde_json::Value =
        serde_json::from_str(&admin.ok(&["upgrade", "status", "-o", "json"])).expect("JSON");
    let version = status["nodes"][0]["version"]
        .as_str()
        .expect("the master's version")
        .to_owned();
    (vm, master, version)
}

/// A compute node as a process on the bridge's host side (its own data directory,
/// containers in this machine's cgroups): it keeps a service replica while the VM node
/// upgrades, and is left out of the rollout by its labels.
fn host_agent(net: &TestNet, dir: &Path, token: &str, master: &str) {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", net.name()))
        .arg("--")
        .arg(debug_binary("nodeos"))
        .args(["agent", "--data-dir"])
        .arg(dir)
        .args([
            "--name",
            HOST_NODE,
            "--token",
            token,
            "--master",
            master,
            "--insecure-registry",
            REGISTRY,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.with_extension("log")).expect("agent log"));
    net.spawn(cmd).expect("starting the host agent");
}

/// Running replicas of `web` as the master sees them; `None` while it does not answer.
fn running_replicas(admin: &Admin) -> Option<u64> {
    let out = admin.run(&["ps", "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == "web")?["running"]
        .as_u64()
}

fn upgrade_status(admin: &Admin) -> serde_json::Value {
    serde_json::from_str(&admin.ok(&["upgrade", "status", "-o", "json"])).expect("status JSON")
}

/// `name`'s row of `cloudos upgrade status`.
fn system_of(status: &serde_json::Value, name: &str) -> serde_json::Value {
    status["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

#[test]
fn a_rolling_upgrade_moves_compute_nodes_then_the_master_and_halts_on_a_bad_release() {
    let _guests = cloudos_tests::guests::reserve(2);
    let dir = tempfile::tempdir().expect("temp dir");
    let net = TestNet::new().expect("test network");
    net.start_dhcp_server(600).expect("dnsmasq");
    let _registry = lab::busybox_registry(&net, REGISTRY);
    let admin = Admin::new(&net, debug_binary("cloudos"), dir.path().join("admin"));

    // The next release is built while the machines install; the bad one while the first
    // rollout runs (it is needed only after it).
    let (next_dir, bad_dir) = (dir.path().join("next"), dir.path().join("bad"));
    let builder = std::thread::spawn(move || build_release(&next_dir, NEXT, None));

    // 1. The master and a compute node install from the ISO onto their disks; a second
    //    compute node runs on the bridge's host side.
    let (master_vm, master, first) = install_master(dir.path(), &net, &admin);
    let master_console = master_vm.serial();
    let (vm, node_first) = install_and_join(dir.path(), &net, &admin, &master);
    assert_eq!(node_first, first);
    assert_ne!(first, NEXT);
    let console = vm.serial();
    let token = admin.token("compute", &[]);
    host_agent(&net, &dir.path().join("host-node"), &token, &master);
    admin.wait_for_state(HOST_NODE, "ready", step());
    admin.ok(&["node", "label", NODE, "pool=vm"]);

    // 2. A service of two replicas, one on each compute node.
    admin.ok(&[
        "deploy",
        "web",
        "--replicas",
        "2",
        BUSYBOX,
        "--",
        "sleep",
        "100000",
    ]);
    admin.wait("both replicas of web running", step(), || {
        (running_replicas(&admin) == Some(2)).then_some(())
    });

    // 3. The releases are kept on the master.
    let bundle = builder.join().expect("the release build");
    let bad_builder = std::thread::spawn(move || {
        build_release(&bad_dir, BAD, Some("cloudos.fault=crash:agent:100000"))
    });
    admin.ok(&["release", "add", bundle.to_str().expect("utf-8")]);
    // Nobody uploads the release the master runs: it offers it, and what it serves is
    // the very bundle the build signed, put together from its slot and its own binary.
    let (offered_version, _) = admin.offered_release("x86_64", step());
    assert_eq!(offered_version, first);
    let offered = dir.path().join("offered.bundle");
    admin.ok(&[
        "release",
        "get",
        &first,
        offered.to_str().expect("utf-8"),
        "--arch",
        "x86_64",
    ]);
    let current = artifacts::out_dir().join(format!("cloudos-{first}-x86_64.bundle"));
    assert!(
        std::fs::read(&offered).expect("the offered bundle")
            == std::fs::read(&current).expect("the build's bundle"),
        "the master's own release differs from the build's {}",
        current.display()
    );

    // 4. The rolling upgrade: the VM compute node (selected by its label), then the
    //    master. The service is sampled all along, whenever the master answers.
    let timeout = format!("{}s", scaled(Duration::from_secs(1200)).as_secs());
    let node_timeout = format!("{}s", scaled(Duration::from_secs(600)).as_secs());
    let rollout_args = |version: &'static str| {
        vec![
            "upgrade".to_owned(),
            "--to".to_owned(),
            version.to_owned(),
            "--nodes".to_owned(),
            "pool=vm".to_owned(),
            "--timeout".to_owned(),
            timeout.clone(),
            "--node-timeout".to_owned(),
            node_timeout.clone(),
        ]
    };
    let args = rollout_args(NEXT);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let (rolled, samples) = std::thread::scope(|s| {
        let rollout = s.spawn(|| admin.run(&args));
        let mut samples: Vec<(Instant, Option<u64>)> = Vec::new();
        while !rollout.is_finished() {
            samples.push((Instant::now(), running_replicas(&admin)));
            std::thread::sleep(Duration::from_millis(500));
        }
        (rollout.join().expect("the rollout thread"), samples)
    });
    let rollout_time = started.elapsed();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&rolled.stdout),
        String::from_utf8_lossy(&rolled.stderr)
    );
    assert!(rolled.status.success(), "the rollout failed:\n{said}");
    assert!(
        said.contains(&format!("node {NODE}: ")),
        "no progress shown:\n{said}"
    );
    assert!(said.contains("rebooting into its new slot?"), "{said}");
    let seen: Vec<u64> = samples.iter().filter_map(|(_, n)| *n).collect();
    assert!(seen.len() >= 10, "too few samples of the service: {seen:?}");
    assert!(
        seen.iter().all(|n| *n >= 1),
        "the service had no replica running during the rollout: {seen:?}"
    );
    let short = samples
        .windows(2)
        .filter(|w| matches!(w[0].1, Some(n) if n < 2))
        .map(|w| w[1].0 - w[0].0)
        .sum::<Duration>();
    let unanswered = samples.iter().filter(|(_, n)| n.is_none()).count();
    // `scripts/bench-upgrade.sh` takes this table from the test's output.
    println!("BENCH-TABLE-BEGIN");
    println!("| rolling upgrade, QEMU TCG: one installed compute node, then the installed master; `web` has 2 replicas (the other compute node is a host process) | value |");
    println!("|---|---|");
    println!(
        "| `cloudos upgrade --to V` → both on V, slots confirmed | {:.0} s |",
        rollout_time.as_secs_f64()
    );
    println!(
        "| time `web` had fewer than 2 replicas running / share of the rollout | {:.1} s / {:.1} % |",
        short.as_secs_f64(),
        100.0 * short.as_secs_f64() / rollout_time.as_secs_f64().max(0.001)
    );
    println!(
        "| fewest replicas running in any sample ({} samples; {unanswered} while the master rebooted) | {} |",
        seen.len(),
        seen.iter().min().copied().unwrap_or(0)
    );
    println!("BENCH-TABLE-END");
    console
        .wait_for("Booting `CloudOS (slot b)'", step())
        .expect("the compute node did not boot slot B");
    master_console
        .wait_for("Booting `CloudOS (slot b)'", step())
        .expect("the master did not boot slot B");
    master_console
        .wait_for("slot b confirmed good", step())
        .expect("the master's slot B was not confirmed");
    let status = upgrade_status(&admin);
    assert_eq!(status["rollout"]["phase"], "done", "{status}");
    let steps: Vec<(String, String)> = status["rollout"]["nodes"]
        .as_array()
        .expect("the rollout's nodes")
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or("").to_owned(),
                n["step"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            (NODE.to_owned(), "done".to_owned()),
            (MASTER.to_owned(), "done".to_owned())
        ],
        "the compute node first, the master last: {status}"
    );
    for name in [MASTER, NODE] {
        let system = system_of(&status, name);
        assert_eq!(system["version"], NEXT, "{status}");
        assert_eq!(system["slot"], "b", "{status}");
        assert_eq!(system["confirmed"], true, "{status}");
    }
    let left = system_of(&status, HOST_NODE);
    assert_eq!(
        left["version"],
        first.as_str(),
        "the host node was not selected: {status}"
    );
    let nodes = status["rollout"]["nodes"].as_array().expect("nodes");
    assert!(nodes.iter().all(|n| n["name"] != HOST_NODE), "{status}");
    admin.wait_for_state(NODE, "ready", step());
    let web = admin.service("web");
    assert_eq!(web["running"], 2, "{web}");
    let id = admin.run_task(&[BUSYBOX, "--", "echo", "upgraded"]);
    let task = admin.wait_task(&id, &["succeeded"], step());
    assert_eq!(task["exit_code"], 0, "{task}");
    let node = node_json(&admin, NODE);
    assert_eq!(node["unschedulable"], false, "left cordoned: {node}");

    // 5. The node refuses the same version and the older one by itself, and stays.
    let boots = |text: &str| text.matches("Booting `CloudOS").count();
    let booted_before = boots(&console.contents());
    for (version, says) in [
        (NEXT, "already running"),
        (first.as_str(), "older than the running"),
    ] {
        // The master's restart may still have the node's agent reconnecting (the node shows
        // Ready from its last heartbeat): the master then refuses for that, and it is asked
        // again, as a person would.
        let refused = admin.wait("the node's own refusal", step(), || {
            let out = admin.run(&[
                "node",
                "upgrade",
                NODE,
                "--to",
                version,
                "--timeout",
                &timeout,
            ]);
            let text = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                !out.status.success(),
                "upgrade to {version} went through: {text}"
            );
            (!text.contains("is not connected")).then_some(text)
        });
        assert!(refused.contains(says), "upgrade to {version}: {refused}");
    }
    assert_eq!(
        boots(&console.contents()),
        booted_before,
        "a refusal rebooted the node"
    );
    let again = admin.fails(&["upgrade", "--to", NEXT, "--nodes", "pool=vm"]);
    assert!(again.contains("every node already runs"), "{again}");

    // 6. Rollback: the node goes back to slot A and the release it was installed with.
    let back = admin.ok(&["node", "rollback", NODE, "--timeout", &timeout]);
    assert!(
        back.contains(&format!("rolled back: it runs {first}")),
        "{back}"
    );
    let node = node_json(&admin, NODE);
    assert_eq!(node["telemetry"]["system"]["slot"], "a", "{node}");
    assert_eq!(node["telemetry"]["system"]["confirmed"], true, "{node}");

    // 7. A bad release: the compute node writes slot B, boots it, its agent never comes
    //    up, it goes back to slot A by itself, and the rollout stops there: the master is
    //    not touched.
    let bad_bundle = bad_builder.join().expect("the bad release build");
    admin.ok(&["release", "add", bad_bundle.to_str().expect("utf-8")]);
    let master_boots = boots(&master_console.contents());
    let args = rollout_args(BAD);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let failed = admin.fails(&args);
    assert!(failed.contains("fell back"), "{failed}");
    assert!(failed.contains("not ready after"), "{failed}");
    let status = upgrade_status(&admin);
    assert_eq!(status["rollout"]["phase"], "failed", "{status}");
    let reason = status["rollout"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(NODE) && reason.contains("went back to slot a"),
        "{status}"
    );
    let master_step = status["rollout"]["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["master"] == true))
        .expect("the master in the rollout");
    assert_eq!(master_step["step"], "waiting", "{status}");
    assert_eq!(
        boots(&master_console.contents()),
        master_boots,
        "the master rebooted"
    );
    let system = system_of(&status, NODE);
    assert_eq!(system["version"], first.as_str(), "{status}");
    assert_eq!(system["slot"], "a", "{status}");
    assert!(
        system["upgrade"]
            .as_str()
            .unwrap_or_default()
            .contains("fell back"),
        "{status}"
    );

    // 8. The same release again is refused until the admin says --retry-failed.
    let again = admin.fails(&args);
    assert!(again.contains("already failed"), "{again}");
    assert!(again.contains("--retry-failed"), "{again}");

    // The host node's shims outlive its agent by design: the replicas go first.
    admin.ok(&["delete", "web"]);
    admin.wait("no replicas left on the host node", step(), || {
        lab::containers(&dir.path().join("host-node"))
            .is_empty()
            .then_some(())
    });
    lab::power_off(&vm);
    lab::power_off(&master_vm);
    // The bad release's agent panicked on purpose (cloudos.fault); the kernel never did.
    assert_no_kernel_panic(&vm);
    assert_no_panic(&master_vm);
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2
    }
}

/// `scripts/bench-upgrade.sh`: one installed compute node, timed through a plain
/// `cloudos node reboot` and through `cloudos node upgrade` (download, check, write the
/// other slot, reboot, Ready on the new version), alternating, `CLOUDOS_BENCH_RUNS` times
/// each (default 3). The upgrades go between this build's version and `NEXT` and back
/// (`--allow-downgrade`), so every run writes a whole slot. Prints a Markdown table.
#[test]
#[ignore = "benchmark: scripts/bench-upgrade.sh"]
fn upgrade_bench() {
    let _guests = cloudos_tests::guests::reserve(2);
    let runs = cloudos_tests::bench::runs(3);
    let dir = tempfile::tempdir().expect("temp dir");
    let net = TestNet::new().expect("test network");
    net.start_dhcp_server(600).expect("dnsmasq");
    let master = HostMaster::start(&net, &dir.path().join("master"), &[]);
    let admin = Admin::new(&net, debug_binary("cloudos"), dir.path().join("admin"));
    admin.log_in(&master.admin_token(), &master.addr);
    let next_dir = dir.path().join("next");
    let builder = {
        let next_dir = next_dir.clone();
        std::thread::spawn(move || build_release(&next_dir, NEXT, None))
    };
    let (vm, first) = install_and_join(dir.path(), &net, &admin, &master.addr);
    let bundle = builder.join().expect("the release build");
    admin.ok(&["release", "add", bundle.to_str().expect("utf-8")]);
    // A host-process master has no slot to offer its own release from: it is uploaded.
    let current = artifacts::out_dir().join(format!("cloudos-{first}-x86_64.bundle"));
    admin.ok(&["release", "add", current.to_str().expect("utf-8")]);
    let timeout = format!("{}s", scaled(Duration::from_secs(600)).as_secs());

    let (mut reboots, mut upgrades) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let started = Instant::now();
        admin.ok(&["node", "reboot", NODE, "--timeout", &timeout]);
        reboots.push(started.elapsed());
        let to = if run % 2 == 0 { NEXT } else { first.as_str() };
        let mut args = vec!["node", "upgrade", NODE, "--to", to, "--timeout", &timeout];
        if to == first {
            args.push("--allow-downgrade");
        }
        let started = Instant::now();
        admin.ok(&args);
        upgrades.push(started.elapsed());
        eprintln!(
            "run {}: reboot {:.1} s, upgrade to {to} {:.1} s",
            run + 1,
            reboots[run].as_secs_f64(),
            upgrades[run].as_secs_f64()
        );
    }
    lab::power_off(&vm);
    let size = |p: PathBuf| std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
    let written = size(next_dir.join("vmlinuz")) + size(next_dir.join("initramfs.img"));
    let downloaded = size(bundle);
    let (reboot, upgrade) = (median(reboots), median(upgrades));
    println!("BENCH-TABLE-BEGIN");
    println!("| x86_64 compute node installed on disk, QEMU TCG, {runs} runs each | median |");
    println!("|---|---|");
    println!(
        "| `cloudos node reboot` → Ready again | {:.1} s |",
        reboot.as_secs_f64()
    );
    println!(
        "| `cloudos node upgrade` → Ready on the new version (download, check, write, reboot) | {:.1} s |",
        upgrade.as_secs_f64()
    );
    println!(
        "| upgrade − reboot / ratio | {:.1} s / {:.2} |",
        (upgrade.saturating_sub(reboot)).as_secs_f64(),
        upgrade.as_secs_f64() / reboot.as_secs_f64().max(0.001)
    );
    println!(
        "| bytes downloaded (the bundle) / written to the slot (kernel + initramfs) | {:.1} MiB / {:.1} MiB |",
        downloaded as f64 / 1048576.0,
        written as f64 / 1048576.0
    );
    println!("BENCH-TABLE-END");
}
