//! Upgrading an installed compute node to a second release (issue 19): the node is
//! installed from the live ISO with an answer file and joins a `nodeos master` on the
//! test bridge; the test builds a second release of the same code under another version
//! (`scripts/build.sh --bundle-only`: a version stamp and a new initramfs, no compile), the
//! admin adds it to the master and runs `cloudos node upgrade`. The node downloads it over
//! its certificate, checks it, writes slot B, reboots into it and comes back on the new
//! version with slot B confirmed. Asking again for the same version, or for the older
//! release without `--allow-downgrade`, is refused by the node with its reason, and it
//! stays where it is. Then a bad release (its agent crashes at every start, baked in with
//! `--image-cmdline cloudos.fault=…`): the node writes slot A, reboots into it, finds its
//! services not ready in time, goes back to slot B by itself and reports why; the master
//! then refuses to send that release to the node again unless told `--retry-failed`.
//!
//! One guest at a time; run with `--test-threads=1` under the shared QEMU lock. Needs root
//! (namespaces, taps), mtools and dosfstools, the debug `nodeos` and `cloudos`
//! (`cargo build -p nodeos -p cloudos-cli`) and `scripts/build.sh --arch x86_64`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cloudos_tests::checks::{
    assert_no_kernel_panic, assert_no_panic, blank_disk, config_disk, install_timeout, step,
};
use cloudos_tests::guest::{boot_timeout, re};
use cloudos_tests::lab::{self, debug_binary, Admin, HostMaster};
use cloudos_tests::{artifacts, scaled, Arch, BootSource, TestNet, Vm, VmBuilder};

const GIB: u64 = 1 << 30;
const MAC: &str = "52:54:00:c1:19:01";
const NODE: &str = "up-node";
const NEXT: &str = "0.1.1-upgrade.test";
const BAD: &str = "0.1.2-bad.test";

/// The live ISO on a CD, the target disk and the answer file; QEMU exits on the reboot.
fn install_vm(target: &Path, cfg: &Path, net: &TestNet) -> Vm {
    let iso = artifacts::iso(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    VmBuilder::new(Arch::X86_64)
        .name("upgrade-install")
        .memory_mb(768)
        .boot(BootSource::Cdrom(iso))
        .disk(target.to_path_buf())
        .disk(cfg.to_path_buf())
        .network(net.vm_network_with_mac(MAC).expect("tap"))
        .spawn()
        .expect("starting QEMU")
}

/// The installed disk alone; a guest reboot resets the machine (an upgrade reboots).
fn node_vm(target: &Path, net: &TestNet) -> Vm {
    VmBuilder::new(Arch::X86_64)
        .name("upgrade-node")
        .memory_mb(768)
        .boot(BootSource::Disk(target.to_path_buf()))
        .network(net.vm_network_with_mac(MAC).expect("tap"))
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
         token = \"{token}\"\nmaster = \"{master}\"\n"
    );
    let cfg = config_disk(dir, &answers);
    let vm = install_vm(&target, &cfg, net);
    vm.serial()
        .wait_for("install complete: /dev/vda", install_timeout())
        .unwrap_or_else(|e| panic!("the install did not complete: {e}"));
    vm.wait_exit(step())
        .expect("QEMU did not exit on the reboot (-no-reboot)");
    assert_no_panic(&vm);
    drop(vm);

    let vm = node_vm(&target, net);
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
    let first = node_json(admin, NODE)["telemetry"]["nodeos_version"]
        .as_str()
        .expect("a version")
        .to_owned();
    (vm, first)
}

#[test]
fn a_compute_node_upgrades_refuses_the_same_or_older_and_falls_back_from_a_bad_release() {
    let dir = tempfile::tempdir().expect("temp dir");
    let net = TestNet::new().expect("test network");
    net.start_dhcp_server(600).expect("dnsmasq");
    let master = HostMaster::start(&net, &dir.path().join("master"), &[]);
    let admin = Admin::new(&net, debug_binary("cloudos"), dir.path().join("admin"));
    admin.log_in(&master.admin_token(), &master.addr);

    // The next release and a bad one are built while the node installs.
    let (next_dir, bad_dir) = (dir.path().join("next"), dir.path().join("bad"));
    let builder = std::thread::spawn(move || {
        (
            build_release(&next_dir, NEXT, None),
            build_release(&bad_dir, BAD, Some("cloudos.fault=crash:agent:100000")),
        )
    });

    // 1-2. The compute node installs from the ISO and joins, on slot A.
    let (vm, first) = install_and_join(dir.path(), &net, &admin, &master.addr);
    let console = vm.serial();
    assert_ne!(first, NEXT);

    // 3. The admin keeps both releases on the master and upgrades the node.
    let (bundle, bad_bundle) = builder.join().expect("the release builds");
    admin.ok(&["release", "add", bundle.to_str().expect("utf-8")]);
    admin.ok(&["release", "add", bad_bundle.to_str().expect("utf-8")]);
    let current = artifacts::out_dir().join(format!("cloudos-{first}-x86_64.bundle"));
    admin.ok(&["release", "add", current.to_str().expect("utf-8")]);
    let started = Instant::now();
    let timeout = format!("{}s", scaled(Duration::from_secs(600)).as_secs());
    admin.ok(&["node", "upgrade", NODE, "--to", NEXT, "--timeout", &timeout]);
    let upgrade_time = started.elapsed();
    console
        .wait_for("Booting `CloudOS (slot b)'", step())
        .expect("GRUB did not boot slot B after the upgrade");
    console
        .wait_for("slot b confirmed good", step())
        .expect("slot B was not confirmed");
    let after = node_json(&admin, NODE);
    let t = &after["telemetry"];
    assert_eq!(t["nodeos_version"], NEXT, "{after}");
    assert_eq!(t["system"]["slot"], "b", "{after}");
    assert_eq!(t["system"]["confirmed"], true, "{after}");
    assert_eq!(t["system"]["upgrade"]["state"], "done", "{after}");
    assert_eq!(t["system"]["upgrade"]["from"], first.as_str(), "{after}");
    eprintln!(
        "node upgraded {first} -> {NEXT} in {:.0}s (download, write, reboot, ready)",
        upgrade_time.as_secs_f64()
    );

    // 4. The same version again, and the older one without --allow-downgrade: the node
    //    says why not, writes nothing and does not reboot.
    let boots = |text: &str| text.matches("Booting `CloudOS").count();
    let booted_before = boots(&console.contents());
    for (version, says) in [
        (NEXT, "already running"),
        (first.as_str(), "older than the running"),
    ] {
        let refused = admin.fails(&[
            "node",
            "upgrade",
            NODE,
            "--to",
            version,
            "--timeout",
            &timeout,
        ]);
        assert!(refused.contains(says), "upgrade to {version}: {refused}");
    }
    let still = node_json(&admin, NODE);
    assert_eq!(still["telemetry"]["nodeos_version"], NEXT, "{still}");
    assert_eq!(still["telemetry"]["system"]["slot"], "b", "{still}");
    assert_eq!(still["telemetry"]["system"]["confirmed"], true, "{still}");
    assert_eq!(
        boots(&console.contents()),
        booted_before,
        "a refused upgrade rebooted the node"
    );

    // 5. The bad release: slot A is written (slot B is confirmed, so A is no longer the last
    //    good system), the node boots it, its agent never comes up, and after the ready
    //    timeout it goes back to slot B and says why.
    let refused = admin.fails(&["node", "upgrade", NODE, "--to", BAD, "--timeout", &timeout]);
    assert!(refused.contains("not ready after"), "{refused}");
    assert!(refused.contains("went back to slot b"), "{refused}");
    let text = console.contents();
    let tail = &text[text
        .rfind("Booting `CloudOS (slot a)'")
        .expect("slot A was tried")..];
    assert!(
        tail.contains("is on trial and agent not ready"),
        "no give-up on slot A"
    );
    assert!(
        tail.contains("Booting `CloudOS (slot b)'"),
        "GRUB did not go back to slot B"
    );
    let back = node_json(&admin, NODE);
    let t = &back["telemetry"];
    assert_eq!(t["nodeos_version"], NEXT, "{back}");
    assert_eq!(t["system"]["slot"], "b", "{back}");
    assert_eq!(t["system"]["upgrade"]["state"], "fell_back", "{back}");
    assert_eq!(t["system"]["upgrade"]["version"], BAD, "{back}");

    // 6. The master does not send the node into that release again unless told to.
    let again = admin.fails(&["node", "upgrade", NODE, "--to", BAD, "--no-wait"]);
    assert!(again.contains("already failed"), "{again}");
    assert!(again.contains("--retry-failed"), "{again}");
    lab::power_off(&vm);
    // The bad release's agent panicked on purpose (cloudos.fault); the kernel never did.
    assert_no_kernel_panic(&vm);
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
    let runs: usize = std::env::var("CLOUDOS_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
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
