//! Installing a compute node from the live ISO with the console wizard, driven over the
//! serial line as a person would drive it: "Install CloudOS" in GRUB, then arrow keys,
//! Enter and typed text. The master is a `nodeos master` process on its own host of the
//! test bridge, advertising itself by mDNS, which the wizard lists; the admin's `cloudos`
//! runs from the bridge's side as from a laptop.
//!
//! The machine is one QEMU process from start to end: its boot order is the virtio disk,
//! then the CD (a blank disk is skipped by the firmware), and a guest reboot resets the
//! machine rather than ending QEMU, so the install's own reboot lands on the installed
//! disk with the CD still in the drive, as on a real machine set to boot its disk first.
//!
//! One guest per test; run with `--test-threads=1` under the shared QEMU lock. Needs root
//! (namespaces, taps), the debug `nodeos` and `cloudos` (`cargo build -p nodeos -p
//! cloudos-cli`) and the x86_64 ISO built with its disk template (`scripts/build.sh`).

use std::path::Path;
use std::time::{Duration, Instant};

use cloudos_tests::checks::{
    answer, assert_no_panic, blank_disk, choose, choose_any, first_bytes, install_timeout,
    start_the_wizard_here, step, DOWN, ENTER,
};
use cloudos_tests::guest::{boot_timeout, re};
use cloudos_tests::lab::{self, debug_binary, Admin, HostMaster};
use cloudos_tests::{
    artifacts, scaled, Arch, BootSource, NetHost, SerialMode, TestNet, Vm, VmBuilder,
};

const GIB: u64 = 1 << 30;
const MAC: &str = "52:54:00:c1:06:01";

/// A `nodeos master` on host `10.77.0.<n>` of the bridge (its own namespace), with its
/// state and output in `dir`. It advertises itself by mDNS unless told `--no-mdns`.
/// Stopped when dropped; its log is printed if the test failed.
struct LanMaster {
    master: HostMaster,
    addr: String,
    // Last: the namespace goes once the process has been stopped.
    _host: NetHost,
}

impl LanMaster {
    fn start(net: &TestNet, n: u8, dir: &Path, extra: &[&str]) -> LanMaster {
        let host = NetHost::new(net, n).expect("a host on the test bridge");
        // Its nodes are TCG guests: NotReady after 6 s, not the default 2 s.
        let mut args = cloudos_tests::guest::TCG_NOT_READY_AFTER.to_vec();
        args.extend_from_slice(extra);
        let master = HostMaster::start_on(&host, dir, &args);
        LanMaster {
            addr: master.addr.clone(),
            master,
            _host: host,
        }
    }

    /// An admin of this master (config in `config`), logged in with its admin token.
    fn admin<'a>(&self, net: &'a TestNet, config: &Path) -> Admin<'a> {
        let admin = Admin::new(net, debug_binary("cloudos"), config.to_path_buf());
        admin.log_in(&self.master.admin_token(), &self.addr);
        admin
    }
}

impl Drop for LanMaster {
    fn drop(&mut self) {
        self.master.proc.stop_with(libc::SIGKILL);
        if std::thread::panicking() {
            let log = self.master.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "===== master at {} (last lines of its log) =====",
                self.addr
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// The cluster's CA pin as `cloudos status` shows it, without the `sha256:`.
fn ca_pin(admin: &Admin) -> String {
    let status: serde_json::Value =
        serde_json::from_str(&admin.ok(&["status", "-o", "json"])).expect("status JSON");
    let pin = status["ca_pin"].as_str().expect("a CA pin in status");
    pin.trim_start_matches("sha256:").to_owned()
}

/// A compute join token, as `cloudos token create` prints it.
fn compute_token(admin: &Admin) -> String {
    admin
        .ok(&["token", "create", "--role", "compute"])
        .trim()
        .to_owned()
}

/// The machine: the blank `target` as its first boot disk, the ISO in its CD drive as the
/// second, on the test bridge with a fixed MAC; a reboot resets it (QEMU keeps running).
fn machine(name: &str, target: &Path, net: &TestNet) -> Vm {
    let iso = artifacts::iso(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let iso = iso.to_string_lossy().replace(',', ",,");
    VmBuilder::new(Arch::X86_64)
        .name(name)
        .memory_mb(768)
        .boot(BootSource::Disk(target.to_path_buf()))
        .network(net.vm_network_with_mac(MAC).expect("tap"))
        .serial(SerialMode::Socket)
        .extra_args([
            "-drive".to_owned(),
            format!("if=none,id=cd0,media=cdrom,readonly=on,format=raw,file={iso}"),
            "-device".to_owned(),
            "ide-cd,drive=cd0,bootindex=1".to_owned(),
            // Later than the builder's -no-reboot, so it wins: a reboot is a reset.
            "-action".to_owned(),
            "reboot=reset".to_owned(),
        ])
        .spawn()
        .expect("starting QEMU")
}

/// GRUB's "Install CloudOS" entry (the second), chosen before the countdown ends.
fn start_installer(vm: &Vm) {
    vm.serial()
        .wait_for("Install CloudOS", boot_timeout())
        .expect("no GRUB menu from the CD (did the firmware skip the blank disk?)");
    vm.serial().send(DOWN).expect("typing on the console");
    std::thread::sleep(Duration::from_millis(300));
    vm.serial().send(ENTER).expect("typing on the console");
    vm.serial()
        .wait_for(
            "install: starting the installer on the console",
            boot_timeout(),
        )
        .expect("the install entry did not start the wizard");
    start_the_wizard_here(vm);
}

/// How the wizard's network question is answered.
enum NetworkAnswer<'a> {
    Dhcp,
    /// Static: each (address, gateway) is typed in turn; all but the last must be refused.
    Static(&'a [(&'a str, &'a str)]),
}

/// The wizard's steps up to its master list: compute node, `hostname`, the network, the
/// blank disk.
fn up_to_the_master_list(vm: &Vm, hostname: &str, network: NetworkAnswer) {
    choose(vm, "What do you want to do?", "Install as compute node");
    answer(
        vm,
        "Host name of this node",
        format!("{hostname}\r").as_bytes(),
    );
    match network {
        NetworkAnswer::Dhcp => {
            choose(vm, "Network", "DHCP");
            vm.serial()
                .wait_for("Checking the network...", step())
                .expect("the wizard did not check the network");
        }
        NetworkAnswer::Static(tries) => {
            for (i, (address, gateway)) in tries.iter().enumerate() {
                choose(vm, "Network", "Static");
                answer(
                    vm,
                    "Address with prefix length",
                    format!("{address}\r").as_bytes(),
                );
                answer(
                    vm,
                    "Gateway (empty for none)",
                    format!("{gateway}\r").as_bytes(),
                );
                answer(vm, "DNS servers", b"\r");
                vm.serial()
                    .wait_for("Checking the network...", step())
                    .expect("the wizard did not check the network");
                vm.serial()
                    .wait_for(
                        format!("static address {address} gateway {gateway} applied").as_str(),
                        step(),
                    )
                    .expect("the static address was not applied to the live system");
                if i + 1 < tries.len() {
                    let refused = vm
                        .serial()
                        .wait_for("the network does not work", step())
                        .unwrap_or_else(|e| panic!("gateway {gateway} was not refused: {e}"));
                    assert!(
                        refused
                            .line
                            .contains(&format!("the gateway {gateway} does not answer")),
                        "{}",
                        refused.line
                    );
                }
            }
        }
    }
    let disks = choose(vm, "Install to which disk?", "/dev/vda");
    assert!(
        disks.iter().any(|d| d.contains("  8Gi  ")),
        "the 8 GiB disk is not offered as such: {disks:?}"
    );
}

/// Picks the master at `addr` from the wizard's mDNS list, looking again (up to three
/// times) while it is not there yet; returns its line in the list.
fn pick_master_from_mdns(vm: &Vm, addr: &str) -> String {
    for _ in 0..3 {
        vm.serial()
            .wait_for("Looking for masters on the network...", step())
            .expect("the wizard did not look for masters");
        let (picked, items) = choose_any(
            vm,
            "Which master should this node join?",
            &[addr, "Look again"],
        );
        if picked == 0 {
            return items
                .into_iter()
                .find(|i| i.contains(addr))
                .expect("the picked item");
        }
        eprintln!("{addr} not in the wizard's list yet: {items:?}; looking again");
    }
    panic!("the wizard never listed the master at {addr} (mDNS)");
}

/// The live ISO on a machine with a blank disk; the wizard, driven over the serial line,
/// installs a compute node that joins the master picked from its mDNS list with a pasted
/// join token; the machine reboots into the installed disk, and the node joins by itself:
/// the master lists it Ready.
#[test]
fn the_wizard_installs_a_compute_node_that_joins_the_master_it_picked_by_mdns() {
    let _guests = cloudos_tests::guests::reserve(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let target = blank_disk(dir.path(), "target.img", 8 * GIB);
    let net = TestNet::new().expect("test network");
    net.start_dhcp_server(600).expect("dnsmasq");
    let master = LanMaster::start(
        &net,
        2,
        &dir.path().join("master"),
        &["--cluster-name", "lab", "--name", "master-1"],
    );
    let admin = master.admin(&net, &dir.path().join("admin"));
    let pin = ca_pin(&admin);
    let token = compute_token(&admin);
    let token_id = token.split('_').nth(1).expect("token id").to_owned();

    let started = Instant::now();
    let vm = machine("install-compute-wizard", &target, &net);
    start_installer(&vm);
    up_to_the_master_list(&vm, "wiz-node", NetworkAnswer::Dhcp);
    let listed = pick_master_from_mdns(&vm, &master.addr);
    assert!(
        listed.contains("cluster lab") && listed.contains(&pin[..16]),
        "the mDNS list does not show the master's cluster and CA pin: {listed:?}"
    );
    answer(&vm, "Join token", format!("{token}\r").as_bytes());
    vm.serial()
        .wait_for("Checking the token with the master...", step())
        .expect("the wizard did not check the token");
    vm.serial()
        .wait_for(
            format!("compute node joining {} with token {token_id}", master.addr).as_str(),
            step(),
        )
        .expect("the summary does not name the picked master and the token");
    answer(&vm, "Erase everything on /dev/vda (8Gi", b"y\r");
    vm.serial()
        .wait_for("install complete: /dev/vda", install_timeout())
        .unwrap_or_else(|e| panic!("the install did not complete: {e}"));
    let installed = started.elapsed();
    vm.serial()
        .wait_for("rebooting into the installed system", step())
        .expect("no reboot after the install");

    // The same machine, reset: the firmware now finds the installed disk first.
    let after_reboot = vm.serial().clone();
    vm.serial()
        .wait_for("Booting `CloudOS (slot a)'", boot_timeout())
        .expect("the machine did not boot slot A of the installed disk");
    vm.serial()
        .wait_for(
            re(r"nodeos ready in \d+\.\d+s: host wiz-node, role compute"),
            boot_timeout(),
        )
        .expect("the installed compute node did not come up");
    for (line, what) in [
        (
            "state is kept on /dev/vda3 (CLOUDOS-DATA)",
            "the installed data partition was not used",
        ),
        (
            "slot a confirmed good",
            "the installed slot was not confirmed",
        ),
        ("joined cluster lab", "the node did not join the master"),
        (
            "joined: the join token is no longer kept in /var/lib/cloudos/config.toml",
            "the join token stayed in the installed config.toml",
        ),
    ] {
        after_reboot
            .clone()
            .wait_for(line, boot_timeout())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    admin.wait_for_state("wiz-node", "ready", scaled(Duration::from_secs(90)));
    let ready = started.elapsed();
    // The installed system's own lease (the live system's came before the reboot).
    let lease = after_reboot
        .clone()
        .wait_for(re(r"eth0: dhcp lease (10\.77\.0\.\d+)/24"), step())
        .expect("the installed node got no address");
    let lease = lease.group(1).expect("the address").to_owned();
    let shown: serde_json::Value =
        serde_json::from_str(&admin.ok(&["node", "show", "wiz-node", "-o", "json"]))
            .expect("node show JSON");
    assert_eq!(
        shown["address"], lease,
        "the master lists wiz-node at another address than the machine's: {shown}"
    );
    assert!(
        !after_reboot
            .contents()
            .get(after_reboot.position()..)
            .unwrap_or_default()
            .contains("install: starting the installer"),
        "the installed system started the installer again"
    );
    assert!(
        !vm.serial()
            .contents()
            .contains("Booting `CloudOS (slot b)'"),
        "the installed disk fell back to slot B"
    );
    lab::power_off(&vm);
    assert_no_panic(&vm);
    eprintln!(
        "installed {:.1}s after QEMU's start; the node was Ready at {:.1}s",
        installed.as_secs_f64(),
        ready.as_secs_f64()
    );
}

/// On a LAN without DHCP, a static address typed in the wizard is applied at once (a
/// gateway that does not answer is refused first). A join token created on another
/// cluster's master is refused in the wizard, before the install, with the reason naming
/// both clusters' CA pins; the person then types the right token (checked by the master
/// over the static address), says no at the wipe and cancels: not a byte is written to
/// the disk, neither master gets a node, and the console is the maintenance console again.
#[test]
fn the_wizard_refuses_a_token_of_another_cluster_and_writes_nothing() {
    let _guests = cloudos_tests::guests::reserve(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let target = blank_disk(dir.path(), "target.img", 8 * GIB);
    let net = TestNet::new().expect("test network");
    let lab_master = LanMaster::start(
        &net,
        2,
        &dir.path().join("lab"),
        &["--cluster-name", "lab", "--name", "master-1"],
    );
    // Another cluster, elsewhere: not on this LAN's mDNS.
    let other = LanMaster::start(
        &net,
        3,
        &dir.path().join("other"),
        &["--cluster-name", "other", "--name", "master-9", "--no-mdns"],
    );
    let lab_admin = lab_master.admin(&net, &dir.path().join("lab-admin"));
    let other_admin = other.admin(&net, &dir.path().join("other-admin"));
    let (lab_pin, other_pin) = (ca_pin(&lab_admin), ca_pin(&other_admin));
    assert_ne!(lab_pin, other_pin, "two clusters, two CAs");
    let foreign = compute_token(&other_admin);
    let right = compute_token(&lab_admin);

    let vm = machine("install-compute-foreign-token", &target, &net);
    start_installer(&vm);
    // No DHCP server on this LAN: a static address, applied at once (a wrong gateway is
    // refused first), is what lets the wizard find and ask the master.
    up_to_the_master_list(
        &vm,
        "wiz-stray",
        NetworkAnswer::Static(&[
            ("10.77.0.50/24", "10.77.0.99"),
            ("10.77.0.50/24", "10.77.0.1"),
        ]),
    );
    pick_master_from_mdns(&vm, &lab_master.addr);
    answer(&vm, "Join token", format!("{foreign}\r").as_bytes());
    let refused = vm
        .serial()
        .wait_for("belongs to another cluster", step())
        .unwrap_or_else(|e| panic!("the foreign token was not refused: {e}"));
    for (part, what) in [
        (lab_master.addr.as_str(), "the picked master"),
        ("cluster lab", "the picked master's cluster"),
        (&lab_pin[..16], "the picked master's CA pin"),
        (&other_pin[..16], "the token's CA pin (the other cluster's)"),
    ] {
        assert!(
            refused.line.contains(part),
            "the refusal does not name {what} ({part}): {}",
            refused.line
        );
    }

    // The right token passes; then no at the wipe, and cancel.
    choose(&vm, "What now?", "Type the token again");
    answer(&vm, "Join token", format!("{right}\r").as_bytes());
    vm.serial()
        .wait_for(
            format!("compute node joining {} with token", lab_master.addr).as_str(),
            step(),
        )
        .expect("the right token did not reach the summary");
    answer(&vm, "Erase everything on /dev/vda", b"n\r");
    choose(&vm, "Nothing was written. What now?", "Cancel the install");
    vm.serial()
        .wait_for(
            "install: the install was cancelled; nothing was written",
            step(),
        )
        .expect("the wizard did not end with nothing written");
    // The console is the maintenance console again.
    vm.serial()
        .wait_for("CloudOS console ready", step())
        .expect("the maintenance console did not come back after the wizard");
    std::thread::sleep(Duration::from_secs(1));
    vm.serial()
        .send_line("status")
        .expect("typing on the console");
    vm.serial()
        .wait_for(re(r"host \S+\s+role none\s+up \d+s\s+READY"), step())
        .expect("the console does not answer status");
    assert!(vm.is_running(), "the live system went away");
    assert!(
        !vm.serial().contents().contains("install complete"),
        "an install ran"
    );
    assert_no_panic(&vm);
    vm.stop().expect("stopping QEMU");
    drop(vm);

    assert!(
        first_bytes(&target, 1 << 20).iter().all(|&b| b == 0),
        "the target disk's first MiB was written to"
    );
    for (admin, cluster) in [(&lab_admin, "lab"), (&other_admin, "other")] {
        let nodes = admin.node_states();
        assert!(
            nodes.is_empty(),
            "cluster {cluster} got a node from a cancelled install: {nodes:?}"
        );
    }
}
