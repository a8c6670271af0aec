//! A master lost and restored from its backup on a new disk (issue 19), with real images:
//! a master installed from the ISO with an answer file (static address on the test bridge)
//! and a compute node installed the same way, joined with a one-use token, running a task
//! and a service; the admin makes a backup with `cloudos backup create`. Both machines go
//! down, the master's disk is replaced by a blank one, and the ISO installs a new master
//! with `mode = "restore"` from the config disk that carries the backup and its passphrase
//! file. Booted, the new master serves the same CA on the same address without making an
//! admin token; the admin's old `cloudos` login works; the task and the service are there;
//! the compute node, booted from its own disk whose settings no longer hold the token,
//! reconnects with its certificate, is Ready, runs a new task and its service replica again.
//!
//! Two guests at most (the master and the compute node); run with `--test-threads=1` under
//! the shared QEMU lock. Needs root (namespaces, taps), mtools and dosfstools, busybox and
//! `docker-registry` for the test image, and `scripts/build.sh --arch x86_64`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cloudos_tests::checks::{
    assert_no_panic, blank_disk, config_disk, install_timeout, install_vm, step,
};
use cloudos_tests::guest::{boot_timeout, re};
use cloudos_tests::lab::{self, busybox_registry, Admin};
use cloudos_tests::{artifacts, Arch, BootSource, TestNet, Vm, VmBuilder};

const GIB: u64 = 1 << 30;
const MASTER_MAC: &str = "52:54:00:c1:19:21";
const NODE_MAC: &str = "52:54:00:c1:19:22";
/// The master's static address: outside dnsmasq's .100-.199, so no lease takes it.
const MASTER_CIDR: &str = "10.77.0.50/24";
const MASTER: &str = "10.77.0.50:9443";
const REGISTRY: &str = "10.77.0.1:5000";
const BUSYBOX: &str = "10.77.0.1:5000/lab/busybox:1";
const NODE: &str = "rs-node";
const PASSPHRASE: &str = "correct horse battery staple";

/// The master's answers; `role` is the lines that make it a new cluster or a restore.
fn master_answers(role: &str) -> String {
    format!(
        "{role}hostname = \"rs-master\"\ndisk = \"/dev/vda\"\nwipe = true\n\
         insecure_registries = [\"{REGISTRY}\"]\n\n[network]\nmode = \"static\"\n\
         address = \"{MASTER_CIDR}\"\ngateway = \"10.77.0.1\"\n"
    )
}

/// An installed disk alone.
fn disk_vm(name: &str, disk: &Path, mac: &str, net: &TestNet) -> Vm {
    VmBuilder::new(Arch::X86_64)
        .name(name)
        .memory_mb(768)
        .boot(BootSource::Disk(disk.to_path_buf()))
        .network(net.vm_network_with_mac(mac).expect("tap"))
        .spawn()
        .expect("starting QEMU")
}

/// Installs from the ISO with `answers` (and `files` copied beside them on the config
/// disk, in `dir`) onto a new blank disk `dir/target.img`; returns the disk and what the
/// installer printed.
fn install(
    dir: &Path,
    name: &str,
    mac: &str,
    answers: &str,
    files: &[&Path],
    net: &TestNet,
) -> (PathBuf, String) {
    std::fs::create_dir_all(dir).expect("dir");
    let target = blank_disk(dir, "target.img", 4 * GIB);
    let cfg = config_disk(dir, answers);
    for file in files {
        let name = file.file_name().and_then(|n| n.to_str()).expect("a name");
        let out = Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&cfg)
            .arg(file)
            .arg(format!("::/{name}"))
            .output()
            .expect("mcopy");
        assert!(
            out.status.success(),
            "mcopy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let vm = install_vm(name, &target, &cfg, Some((net, mac)));
    vm.serial()
        .wait_for("install complete: /dev/vda", install_timeout())
        .unwrap_or_else(|e| panic!("the {name} install did not complete: {e}"));
    vm.wait_exit(step())
        .expect("QEMU did not exit on the reboot (-no-reboot)");
    assert_no_panic(&vm);
    (target, vm.serial().contents())
}

/// Boots an installed master and waits until its API is up.
fn boot_master(name: &str, disk: &Path, net: &TestNet) -> Vm {
    let vm = disk_vm(name, disk, MASTER_MAC, net);
    vm.serial()
        .wait_for(
            re(r"nodeos ready in \d+\.\d+s: host rs-master, role master"),
            boot_timeout(),
        )
        .expect("the installed master did not come up");
    lab::first_capture(&vm, r"(master listening on)", "master API not up", step());
    vm
}

/// Boots the installed compute node and waits until the master lists it Ready.
fn boot_node(disk: &Path, net: &TestNet, admin: &Admin) -> Vm {
    let vm = disk_vm("restore-node", disk, NODE_MAC, net);
    vm.serial()
        .wait_for(
            re(r"nodeos ready in \d+\.\d+s: host rs-node, role compute"),
            boot_timeout(),
        )
        .expect("the installed compute node did not come up");
    admin.wait_for_state(NODE, "ready", step());
    vm
}

/// When the master says the node joined: a node that joined again would have a new one.
fn joined_at(admin: &Admin) -> serde_json::Value {
    let node: serde_json::Value =
        serde_json::from_str(&admin.ok(&["node", "show", NODE, "-o", "json"])).expect("JSON");
    node["joined_at"].clone()
}

fn running_replicas(admin: &Admin, service: &str) -> Vec<String> {
    admin.service(service)["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["state"] == "running")
        .filter_map(|r| r["node"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_master_restored_on_a_new_disk_takes_over_and_its_node_comes_back_without_its_token() {
    let _guests = cloudos_tests::guests::reserve(2);
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let net = TestNet::new().expect("test network");
    net.start_dhcp_server(600).expect("dnsmasq");
    let _registry = busybox_registry(&net, REGISTRY);
    let admin = Admin::new(
        &net,
        artifacts::cloudos_cli(Arch::X86_64).unwrap_or_else(|e| panic!("{e}")),
        dir.path().join("admin"),
    );

    // 1. The first master, installed with a static address; the admin logs in.
    let (old_disk, _) = install(
        &dir.path().join("m1"),
        "restore-install-m1",
        MASTER_MAC,
        &master_answers("mode = \"master\"\ncluster = \"lab\"\n"),
        &[],
        &net,
    );
    let master = boot_master("restore-master-1", &old_disk, &net);
    let admin_token = lab::first_capture(
        &master,
        r"admin token: (cloudos1_\S+)",
        "no admin token on the first master's first boot",
        step(),
    );
    admin.log_in(&admin_token, MASTER);
    let pin = admin.status()["ca_pin"].clone();
    assert!(
        pin.as_str().is_some_and(|p| !p.is_empty()),
        "no CA pin: {pin}"
    );

    // 2. The compute node, installed while the master runs, joins with a one-use token:
    //    its settings forget it once it has joined.
    let token = admin.token("compute", &["--uses", "1"]);
    let node_answers = format!(
        "mode = \"compute\"\nhostname = \"{NODE}\"\ndisk = \"/dev/vda\"\nwipe = true\n\
         token = \"{token}\"\nmaster = \"{MASTER}\"\ninsecure_registries = [\"{REGISTRY}\"]\n"
    );
    let (node_disk, _) = install(
        &dir.path().join("node"),
        "restore-install-node",
        NODE_MAC,
        &node_answers,
        &[],
        &net,
    );
    let node = boot_node(&node_disk, &net, &admin);
    node.serial()
        .wait_for("joined: the join token is no longer kept in", step())
        .expect("the node kept its join token after joining");
    let joined = joined_at(&admin);

    // 3. A task and a service on it, then the backup.
    let before = admin.run_task(&[BUSYBOX, "--", "sh", "-c", "echo before the backup"]);
    let task = admin.wait_task(&before, &["succeeded"], Duration::from_secs(180));
    assert_eq!(task["node"], NODE, "{task}");
    admin.ok(&[
        "deploy",
        "web",
        "--replicas",
        "1",
        BUSYBOX,
        "--",
        "sleep",
        "100000",
    ]);
    admin.wait("the service's replica", Duration::from_secs(120), || {
        (running_replicas(&admin, "web") == [NODE]).then_some(())
    });
    let pass = dir.path().join("lab.pass");
    std::fs::write(&pass, format!("{PASSPHRASE}\n")).expect("passphrase file");
    let backup = dir.path().join("lab.age");
    let said = admin.ok(&[
        "backup",
        "create",
        backup.to_str().expect("utf-8"),
        "--passphrase-file",
        pass.to_str().expect("utf-8"),
    ]);
    assert!(said.contains("backup of cluster lab"), "{said}");

    // 4. Both go down; the master's disk is lost. A blank disk, and the ISO with the
    //    restore answers, the backup and its passphrase on the config disk.
    lab::power_off(&node);
    lab::power_off(&master);
    assert_no_panic(&master);
    drop((node, master));
    std::fs::remove_file(&old_disk).expect("the old master's disk is destroyed");
    let restore_started = Instant::now();
    let (new_disk, installer) = install(
        &dir.path().join("m2"),
        "restore-install-m2",
        MASTER_MAC,
        &master_answers(
            "mode = \"restore\"\nbackup = \"LABEL=CLOUDOS-CFG:/lab.age\"\n\
             passphrase_file = \"LABEL=CLOUDOS-CFG:/lab.pass\"\n",
        ),
        &[&backup, &pass],
        &net,
    );
    assert!(
        installer.contains("install: restoring cluster \"lab\" from LABEL=CLOUDOS-CFG:/lab.age"),
        "the installer did not restore the backup"
    );
    assert!(
        !installer.contains(PASSPHRASE),
        "the passphrase reached the console"
    );

    // 5. The new master: same CA, same address, the admin's old login, no new admin token.
    let master = boot_master("restore-master-2", &new_disk, &net);
    assert_eq!(
        admin.status()["ca_pin"],
        pin,
        "another CA after the restore"
    );
    let restored_in = restore_started.elapsed();
    assert!(
        !master.serial().contents().contains("admin token:"),
        "the restored master made a new admin token: it started a new cluster"
    );
    let task = admin.task(&before);
    assert_eq!(task["state"], "succeeded", "{task}");
    assert_eq!(admin.ok(&["logs", &before]), "before the backup\n");
    let web = admin.service("web");
    assert_eq!(web["replicas"], 1, "{web}");
    assert!(
        !master.serial().contents().contains("ignoring the name"),
        "the restored master's settings name another cluster"
    );

    // 6. The compute node boots from its own disk, token-less, and comes back by its
    //    certificate: Ready, and a new task runs on it. Its service replica was lost while
    //    it was down and is queued again; avoiding the node it was lost on is only a
    //    preference, so with one node it runs there again.
    let node = boot_node(&node_disk, &net, &admin);
    assert!(
        !node.serial().contents().contains("joined: the join token"),
        "the node joined again instead of reconnecting"
    );
    assert_eq!(joined_at(&admin), joined, "the node joined again");
    let after = admin.run_task(&[BUSYBOX, "--", "sh", "-c", "echo after the restore"]);
    let task = admin.wait_task(&after, &["succeeded"], Duration::from_secs(120));
    assert_eq!(task["node"], NODE, "{task}");
    assert_eq!(admin.ok(&["logs", &after]), "after the restore\n");
    admin.wait(
        "the service's replica back on its node",
        Duration::from_secs(120),
        || (running_replicas(&admin, "web") == [NODE]).then_some(()),
    );
    lab::power_off(&node);
    lab::power_off(&master);
    assert_no_panic(&node);
    assert_no_panic(&master);
    eprintln!(
        "restore: new master installed from the backup and serving in {:.0}s; whole test {:.0}s",
        restored_in.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
