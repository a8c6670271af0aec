//! Installing to disk from the live ISO (`nodeos install-disk`, issue 5): an unattended
//! install from an answer file on a second disk labelled `CLOUDOS-CFG`, then the
//! installed disk booting alone on SeaBIOS and on OVMF with its state; and an answer
//! file with a typo, refused with the key named and nothing written.
//!
//! At most one VM runs at a time per test; run with `--test-threads=1` on a 2-core host
//! where others run guests too. Needs root (network namespace, taps), mtools and
//! dosfstools on the host, and `scripts/build.sh --arch x86_64` with the disk template
//! (image/disk.sh) built before the ISO, so the ISO carries /install/disk-template.img.gz.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use cloudos_tests::checks::{
    answer, assert_no_panic, blank_disk, config_disk, first_bytes, install_timeout, install_vm,
    start_the_wizard_here, step, DOWN, ENTER,
};
use cloudos_tests::guest::{boot_timeout, re};
use cloudos_tests::lab::{self, Admin};
use cloudos_tests::{artifacts, scaled, Arch, BootSource, Firmware, TestNet, Vm, VmBuilder};

const GIB: u64 = 1 << 30;
const MAC: &str = "52:54:00:c1:05:01";

fn boot_disk(name: &str, disk: &Path, firmware: Firmware, net: &TestNet) -> Vm {
    VmBuilder::new(Arch::X86_64)
        .name(name)
        .memory_mb(768)
        .boot(BootSource::Disk(disk.to_path_buf()))
        .firmware(firmware)
        .network(net.vm_network_with_mac(MAC).expect("tap"))
        .spawn()
        .expect("starting QEMU")
}

const MASTER_ANSWERS: &str = "mode = \"master\"\nhostname = \"disk-master\"\ncluster = \"lab\"\n\
                              disk = \"/dev/vda\"\nwipe = true\n";

/// The whole unattended path: ISO + blank disk + answer file on CLOUDOS-CFG → install →
/// reboot (QEMU exits: -no-reboot) → the disk alone boots as the configured master on
/// SeaBIOS (admin token shown, an admin logs in) and on OVMF (state kept: the same
/// cluster, no new admin token).
#[test]
fn unattended_master_install_then_boots_from_disk_alone() {
    let _guests = cloudos_tests::guests::reserve(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let target = blank_disk(dir.path(), "target.img", 8 * GIB);
    let cfg = config_disk(dir.path(), MASTER_ANSWERS);
    let net = TestNet::new().expect("test network");
    net.start_dhcp_server(600).expect("dnsmasq");

    // 1. The live ISO installs by itself and reboots.
    let started = Instant::now();
    let vm = install_vm("install-master-live", &target, &cfg, Some((&net, MAC)));
    let console = vm.serial();
    console
        .wait_for(
            "install: unattended, answer file from LABEL=CLOUDOS-CFG:/install.toml",
            boot_timeout(),
        )
        .expect("the live system did not start the unattended install");
    console
        .wait_for("install complete: /dev/vda", install_timeout())
        .unwrap_or_else(|e| panic!("the install did not complete: {e}"));
    let installed = started.elapsed();
    console
        .wait_for("rebooting into the installed system", step())
        .expect("no reboot after the install");
    let exit = vm
        .wait_exit(step())
        .expect("QEMU did not exit on the reboot (-no-reboot)");
    assert!(exit.success(), "QEMU exited with {exit}");
    assert_no_panic(&vm);
    drop(vm);
    eprintln!(
        "installed in {:.1}s from QEMU's start",
        installed.as_secs_f64()
    );
    let mbr = first_bytes(&target, 1024);
    assert_eq!(
        &mbr[510..512],
        &[0x55, 0xAA],
        "no MBR on the installed disk"
    );
    assert_eq!(&mbr[512..520], b"EFI PART", "no GPT on the installed disk");

    // 2. The disk alone, SeaBIOS: the configured master, with its state on vda3.
    let admin_config = tempfile::tempdir().expect("temp dir");
    let admin = Admin::new(
        &net,
        artifacts::cloudos_cli(Arch::X86_64).unwrap_or_else(|e| panic!("{e}")),
        admin_config.path().to_path_buf(),
    );
    let started = Instant::now();
    let vm = boot_disk("install-master-disk-bios", &target, Firmware::Bios, &net);
    let console = vm.serial();
    let from_start = console.clone();
    console
        .wait_for("Booting `CloudOS (slot a)'", boot_timeout())
        .expect("GRUB on the installed disk did not boot slot A");
    console
        .wait_for(
            re(r"nodeos ready in \d+\.\d+s: host disk-master, role master"),
            boot_timeout(),
        )
        .expect("the installed master did not come up");
    let bios_ready = started.elapsed();
    from_start
        .wait_for("state is kept on /dev/vda3 (CLOUDOS-DATA)", step())
        .expect("the installed data partition was not used");
    let admin_token = lab::first_capture(
        &vm,
        r"admin token: (cloudos1_\S+)",
        "no admin token shown on the installed master's first boot",
        step(),
    );
    let address = lab::first_capture(
        &vm,
        r"eth0: dhcp lease (10\.77\.0\.\d+)/24",
        "the installed master got no address",
        step(),
    );
    lab::first_capture(&vm, r"(master listening on)", "master API not up", step());
    admin.log_in(&admin_token, &format!("{address}:9443"));
    let status: serde_json::Value =
        serde_json::from_str(&admin.ok(&["status", "-o", "json"])).expect("status JSON");
    assert_eq!(status["cluster_name"], "lab", "{status}");
    assert!(
        !vm.serial().contents().contains("install: unattended"),
        "the installed system started the installer again"
    );
    lab::power_off(&vm);
    assert_no_panic(&vm);
    drop(vm);

    // 3. The same disk on OVMF: the state survived, so no new admin token.
    let started = Instant::now();
    let vm = boot_disk("install-master-disk-uefi", &target, Firmware::Uefi, &net);
    let console = vm.serial();
    let from_start = console.clone();
    console
        .wait_for(
            re(r"nodeos ready in \d+\.\d+s: host disk-master, role master"),
            boot_timeout(),
        )
        .expect("the installed master did not come up on UEFI");
    let uefi_ready = started.elapsed();
    from_start
        .wait_for("state is kept on /dev/vda3 (CLOUDOS-DATA)", step())
        .expect("the installed data partition was not used on UEFI");
    lab::first_capture(&vm, r"(master listening on)", "master API not up", step());
    let status: serde_json::Value =
        serde_json::from_str(&admin.ok(&["status", "-o", "json"])).expect("status JSON");
    assert_eq!(status["cluster_name"], "lab", "{status}");
    assert!(
        !vm.serial().contents().contains("admin token:"),
        "a new admin token after a reboot: the master's state was not kept"
    );
    lab::power_off(&vm);
    assert_no_panic(&vm);
    eprintln!(
        "installed disk: SeaBIOS ready in {:.1}s, OVMF ready in {:.1}s",
        bios_ready.as_secs_f64(),
        uefi_ready.as_secs_f64()
    );
}

/// An answer file with a typo stops the install with the key named, the live system
/// stays up, and the target disk is untouched.
#[test]
fn an_answer_file_with_a_typo_is_refused_and_nothing_is_written() {
    let _guests = cloudos_tests::guests::reserve(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let target = blank_disk(dir.path(), "target.img", 8 * GIB);
    let cfg = config_disk(dir.path(), &MASTER_ANSWERS.replace("hostname", "hostnmae"));
    let vm = install_vm("install-typo-live", &target, &cfg, None);
    let failed = vm
        .serial()
        .wait_for(re(r"install failed: .*"), boot_timeout())
        .unwrap_or_else(|e| panic!("no `install failed`: {e}"));
    assert!(
        failed.line.contains("hostnmae"),
        "the failure does not name the key: {}",
        failed.line
    );
    // The live system is still there.
    std::thread::sleep(Duration::from_secs(2));
    assert!(vm.is_running(), "the live system went away");
    assert_no_panic(&vm);
    vm.stop().expect("stopping QEMU");
    drop(vm);
    assert!(
        first_bytes(&target, 1 << 20).iter().all(|&b| b == 0),
        "the target disk was written to"
    );
}

/// Whether `disk` carries anything firmware or Linux would take for a partitioned disk:
/// an MBR signature, or a GPT header at LBA 1 or at the last LBA.
fn looks_partitioned(disk: &Path) -> bool {
    use std::io::{Seek, SeekFrom};
    let head = first_bytes(disk, 1024);
    let mut file = fs::File::open(disk).expect("opening the disk");
    let mut last = vec![0u8; 512];
    file.seek(SeekFrom::End(-512))
        .and_then(|_| file.read_exact(&mut last))
        .expect("reading the last sector");
    head[510..512] == [0x55, 0xAA] || &head[512..520] == b"EFI PART" || &last[..8] == b"EFI PART"
}

/// A power cut in the middle of writing: QEMU killed (SIGKILL) when the system
/// partitions are half written. The disk then has no partition table at all, so it does
/// not boot (no GRUB on SeaBIOS); the install run again on the same disk succeeds and
/// the disk boots.
#[test]
fn an_install_cut_off_midway_leaves_a_blank_looking_disk_and_can_be_rerun() {
    let _guests = cloudos_tests::guests::reserve(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let target = blank_disk(dir.path(), "target.img", 8 * GIB);
    let cfg = config_disk(dir.path(), MASTER_ANSWERS);
    let net = TestNet::new().expect("test network");
    net.start_dhcp_server(600).expect("dnsmasq");

    // 1. Cut off at half way.
    let vm = install_vm("install-cut-live", &target, &cfg, Some((&net, MAC)));
    vm.serial()
        .wait_for("install: system partitions 50% written", boot_timeout())
        .unwrap_or_else(|e| panic!("the install did not get half way: {e}"));
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &vm.pid().to_string()])
        .status()
        .expect("running kill");
    assert!(killed.success(), "kill -KILL {} failed", vm.pid());
    let _ = vm.stop();
    assert!(
        !vm.serial().contents().contains("install complete"),
        "the install finished before QEMU was killed"
    );
    drop(vm);
    assert!(
        !looks_partitioned(&target),
        "a half-written disk carries a partition table"
    );

    // 2. It does not boot: SeaBIOS finds no boot sector, so GRUB never starts.
    let vm = boot_disk("install-cut-disk-bios", &target, Firmware::Bios, &net);
    let found = vm.serial().wait_for_any(
        &["GRUB", "Booting `CloudOS", "nodeos ready"],
        scaled(Duration::from_secs(30)),
    );
    assert!(
        found.is_err(),
        "the half-written disk booted: {}",
        vm.serial().tail(20)
    );
    vm.stop().expect("stopping QEMU");
    drop(vm);

    // 3. The install again, on the same disk: it completes, and the disk boots.
    let vm = install_vm("install-cut-rerun", &target, &cfg, Some((&net, MAC)));
    vm.serial()
        .wait_for("install complete: /dev/vda", install_timeout())
        .unwrap_or_else(|e| panic!("the second install did not complete: {e}"));
    vm.wait_exit(step())
        .expect("QEMU did not exit on the reboot (-no-reboot)");
    assert_no_panic(&vm);
    drop(vm);
    assert!(
        looks_partitioned(&target),
        "no partition table after the install"
    );
    let vm = boot_disk("install-cut-rerun-bios", &target, Firmware::Bios, &net);
    vm.serial()
        .wait_for(
            re(r"nodeos ready in \d+\.\d+s: host disk-master, role master"),
            boot_timeout(),
        )
        .expect("the reinstalled disk did not boot");
    lab::power_off(&vm);
    assert_no_panic(&vm);
}

/// The console installer, driven through the serial line with arrow keys, Enter and typed
/// text: "Install CloudOS" in the ISO's GRUB menu, then master, a host name, DHCP, the
/// blank disk, a cluster name, the default "master and workloads" and the confirmation;
/// the disk then boots alone as that master (whose own machine joins its cluster as a
/// node), once on SeaBIOS and once on OVMF, with its state.
#[test]
fn the_wizard_installs_a_master_driven_from_the_serial_console() {
    let _guests = cloudos_tests::guests::reserve(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let target = blank_disk(dir.path(), "target.img", 8 * GIB);
    let net = TestNet::new().expect("test network");
    net.start_dhcp_server(600).expect("dnsmasq");
    let iso = artifacts::iso(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let vm = VmBuilder::new(Arch::X86_64)
        .name("install-wizard-live")
        .memory_mb(768)
        .boot(BootSource::Cdrom(iso))
        .disk(target.clone())
        .network(net.vm_network_with_mac(MAC).expect("tap"))
        .serial(cloudos_tests::SerialMode::Socket)
        .spawn()
        .expect("starting QEMU");

    // GRUB: the second entry. A key press also stops the menu's countdown.
    vm.serial()
        .wait_for("Install CloudOS", boot_timeout())
        .expect("no GRUB menu");
    vm.serial().send(DOWN).expect("typing on the console");
    std::thread::sleep(Duration::from_millis(300));
    vm.serial().send(ENTER).expect("typing on the console");
    vm.serial()
        .wait_for(
            "install: starting the installer on the console",
            boot_timeout(),
        )
        .expect("the install entry did not start the wizard");
    start_the_wizard_here(&vm);

    answer(&vm, "What do you want to do?", ENTER);
    answer(&vm, "Host name of this node", b"wiz-master\r");
    answer(&vm, "Network", ENTER);
    answer(&vm, "Install to which disk?", ENTER);
    answer(&vm, "Cluster name", b"lab\r");
    // The default: the master's machine runs workloads too.
    answer(&vm, "What runs on this machine?", ENTER);
    answer(&vm, "Erase everything on /dev/vda", b"y\r");
    vm.serial()
        .wait_for("install complete: /dev/vda", install_timeout())
        .unwrap_or_else(|e| panic!("the install did not complete: {e}"));
    vm.wait_exit(step())
        .expect("QEMU did not exit on the reboot (-no-reboot)");
    assert_no_panic(&vm);
    drop(vm);

    // The disk alone: first on SeaBIOS, where the master creates its cluster and shows
    // its admin token once; then on OVMF, with that state kept (no second token).
    let vm = boot_disk("install-wizard-disk-bios", &target, Firmware::Bios, &net);
    let from_start = vm.serial().clone();
    vm.serial()
        .wait_for(
            re(r"nodeos ready in \d+\.\d+s: host wiz-master, role master"),
            boot_timeout(),
        )
        .expect("the master installed by the wizard did not come up on BIOS");
    from_start
        .wait_for("state is kept on /dev/vda3 (CLOUDOS-DATA)", step())
        .expect("the installed data partition was not used");
    lab::first_capture(
        &vm,
        r"(created cluster \S+)",
        "the installed master did not create its cluster",
        step(),
    );
    lab::first_capture(
        &vm,
        r"admin token: (cloudos1_\S+)",
        "the installed master showed no admin token at its first start",
        step(),
    );
    let pin = lab::first_capture(
        &vm,
        r"CA pin (sha256:[0-9a-f]{64})",
        "the installed master showed no CA pin",
        step(),
    );
    from_start
        .wait_for("joined cluster lab", step())
        .expect("the installed master's own node did not join its cluster");
    lab::power_off(&vm);
    assert_no_panic(&vm);
    drop(vm);

    let vm = boot_disk("install-wizard-disk-uefi", &target, Firmware::Uefi, &net);
    let from_start = vm.serial().clone();
    vm.serial()
        .wait_for(
            re(r"nodeos ready in \d+\.\d+s: host wiz-master, role master"),
            boot_timeout(),
        )
        .expect("the master installed by the wizard did not come up on UEFI");
    from_start
        .wait_for("state is kept on /dev/vda3 (CLOUDOS-DATA)", step())
        .expect("the installed data partition was not used on UEFI");
    // The same cluster: its CA (and so its pin) was kept, not created again.
    let pin_again = lab::first_capture(
        &vm,
        r"CA pin (sha256:[0-9a-f]{64})",
        "the master showed no CA pin on UEFI",
        step(),
    );
    assert_eq!(
        pin_again, pin,
        "the cluster's CA changed: its state was not kept"
    );
    assert!(
        !vm.serial().contents().contains("created cluster"),
        "the master created its cluster again on UEFI: its state was not kept"
    );
    lab::power_off(&vm);
    assert_no_panic(&vm);
}
