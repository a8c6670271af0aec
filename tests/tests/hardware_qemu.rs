//! The x86_64 ISO on the device models QEMU emulates beyond its defaults: the
//! network cards and disk controllers of real machines and hypervisors
//! (issue 18). Each VM carries several devices to share one boot:
//!
//! - one VM with six network cards on one bridge with a real DHCP server:
//!   every card gets a lease, and `status` names the driver that runs it;
//! - two VMs with four disk controllers each, one disk behind each: the data
//!   disk on the first is mounted as the node's state, and `status` lists
//!   every disk with its size, its controller's driver and the label read from
//!   it through that driver.
//!
//! Each test runs one VM; run with `--test-threads=2` at most. Needs root
//! (namespaces, taps) and `mkfs.ext4`.

use std::process::Command;
use std::time::Duration;

use cloudos_tests::checks::assert_no_panic;
use cloudos_tests::guest::{line_timeout, power_button_off, re};
use cloudos_tests::{artifacts, scaled, Arch, BootSource, DiskController, TestNet, VmBuilder};
use cloudos_tests::{Firmware, Vm};

fn boot_timeout() -> Duration {
    scaled(Duration::from_secs(240))
}

/// Types `status` on the console until its output has a line matching each
/// of `rows` (devices behind slow controllers appear after `ready`; a user
/// would look again), and returns the last output. Fails after a while with
/// what status said.
fn status_until(vm: &Vm, rows: &[regex::Regex]) -> String {
    let console = vm.serial();
    let deadline = std::time::Instant::now() + line_timeout();
    loop {
        console.skip_to_end();
        console.send_line("status").expect("typing on the console");
        console
            .wait_for(re(r"^gateway "), line_timeout())
            .expect("status did not print its link table");
        // The disk table follows at once.
        std::thread::sleep(Duration::from_millis(500));
        let table = console.tail(60);
        let missing: Vec<&regex::Regex> = rows.iter().filter(|r| !r.is_match(&table)).collect();
        if missing.is_empty() {
            return table;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never showed {missing:?}:\n{table}"
        );
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// [`status_until`] shows `rows`; then the power button powers the VM off in order,
/// without a panic.
fn shows_then_powers_off(vm: &Vm, rows: &[regex::Regex]) {
    status_until(vm, rows);
    power_button_off(
        vm,
        line_timeout(),
        &[("shutdown: powering off now", "no orderly shutdown")],
    );
    assert_no_panic(vm);
}

/// Waits until the console, from its start, shows a line matching `pattern`
/// (lines of a boot come in no fixed order: a cursor could pass one).
fn seen(console: &cloudos_tests::Console, pattern: &str, what: &str) {
    let pattern = regex::Regex::new(pattern).expect("regex");
    let deadline = std::time::Instant::now() + boot_timeout();
    while !pattern.is_match(&console.contents()) {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}:\n{}",
            console.tail(40)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The cards and the driver Debian's kernel runs each with. QEMU's rtl8139 is
/// a C+ capable chip, which `8139cp` and `8139too` both claim.
const NICS: &[(&str, &str)] = &[
    ("rtl8139", "8139(cp|too)"),
    ("vmxnet3", "vmxnet3"),
    ("pcnet", "pcnet32"),
    ("i82559er", "e100"),
    ("tulip", "tulip"),
    ("ne2k_pci", "ne2k-pci"),
];

/// Six cards of six families in one machine, each its own tap on the bridge:
/// each leases an address from the real DHCP server, and `status` shows the
/// lease next to the driver that bound the card.
#[test]
fn iso_brings_up_six_families_of_network_cards() {
    let _guests = cloudos_tests::guests::reserve(1);
    let net = TestNet::new().expect("test network");
    net.start_dhcp_server(600).expect("dnsmasq on the bridge");
    let iso = artifacts::iso(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let mut builder = VmBuilder::new(Arch::X86_64)
        .boot(BootSource::Cdrom(iso))
        .firmware(Firmware::Bios)
        .memory_mb(768)
        .network(net.vm_network().expect("tap"))
        .nic_model(NICS[0].0);
    for (model, _) in &NICS[1..] {
        builder = builder.extra_nic(net.vm_network().expect("tap"), model);
    }
    let vm = builder.spawn().expect("starting QEMU");
    let console = vm.serial();
    console
        .wait_for(
            re(r"nodeos ready in \d+\.\d+s: host cloudos-[0-9a-f]{6}"),
            boot_timeout(),
        )
        .expect("nodeos did not report ready");
    // Every card leases (eth0..eth5, in PCI order), in whatever order the
    // DHCP exchanges finish.
    for i in 0..NICS.len() {
        seen(
            console,
            &format!(r"eth{i}: dhcp lease 10\.77\.0\.\d+/24"),
            &format!("eth{i} got no lease"),
        );
    }
    let rows: Vec<regex::Regex> = NICS
        .iter()
        .map(|(_, driver)| {
            regex::Regex::new(&format!(
                r"(?m)^eth\d\s+up\s+dhcp\s+10\.77\.0\.\d+/24\s+{driver}\s*$"
            ))
            .expect("regex")
        })
        .collect();
    shows_then_powers_off(&vm, &rows);
}

/// A 32 MiB disk image holding an ext4 file system labelled `label` (and, for
/// the data disk, the node's config).
fn labelled_disk(label: &str, config: Option<&str>) -> tempfile::TempPath {
    let image = tempfile::Builder::new()
        .prefix("cloudos-hw-")
        .suffix(".img")
        .tempfile()
        .expect("temp file")
        .into_temp_path();
    let root = tempfile::tempdir().expect("temp dir");
    if let Some(config) = config {
        std::fs::write(root.path().join("config.toml"), config).expect("config");
    }
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", label, "-d"])
        .arg(root.path())
        .arg(&*image)
        .arg("32M")
        .output()
        .expect("running mkfs.ext4");
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

/// Boots the ISO with one disk behind each controller, the first disk the
/// data disk, and checks what a user would: the node keeps its state on the
/// first disk, and `status` lists each disk with the driver of its controller
/// and the label read through it.
fn disks_behind(controllers: &[(DiskController, &str, &str)], host: &str) {
    let iso = artifacts::iso(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let config = format!("hostname = \"{host}\"\n");
    let disks: Vec<tempfile::TempPath> = controllers
        .iter()
        .enumerate()
        .map(|(i, (_, _, label))| labelled_disk(label, (i == 0).then_some(config.as_str())))
        .collect();
    let mut builder = VmBuilder::new(Arch::X86_64)
        .boot(BootSource::Cdrom(iso))
        .firmware(Firmware::Bios)
        .memory_mb(768);
    for ((controller, _, _), disk) in controllers.iter().zip(&disks) {
        builder = builder.disk_behind(disk.to_path_buf(), *controller);
    }
    let vm = builder.spawn().expect("starting QEMU");
    let console = vm.serial();
    console
        .wait_for(re(r"nodeos ready in \d+\.\d+s"), boot_timeout())
        .expect("nodeos did not report ready");
    // A live boot does not wait for slow controllers: the data disk is found
    // before `ready` or once the storage drivers have probed, after it.
    seen(
        console,
        r"state is kept on /dev/(sd[a-z]|nvme0n1|mmcblk0) \(CLOUDOS-DATA\)",
        "the data disk was not mounted",
    );
    seen(
        console,
        &format!("host name {host}"),
        "the data disk's config was not used",
    );
    let rows: Vec<regex::Regex> = controllers
        .iter()
        .map(|(_, driver, label)| {
            regex::Regex::new(&format!(
                r"(?m)^(sd[a-z]|nvme0n1|mmcblk0)\s+32Mi\s+{driver}\s+{label}\s*$"
            ))
            .expect("regex")
        })
        .collect();
    shows_then_powers_off(&vm, &rows);
}

/// The server RAID/SAS adapters QEMU has: MegaRAID SAS 1078 and 2108 and the
/// LSI 53C895A. QEMU's LSI SAS1068 (`mptsas1068`) is left out: Debian's
/// `mptsas` brings the emulated HBA up ("LSISAS1068 A0") but is never told of
/// a disk behind it (40 s of guest time), so it cannot prove the driver.
#[test]
fn iso_uses_disks_behind_server_raid_and_sas_adapters() {
    let _guests = cloudos_tests::guests::reserve(1);
    disks_behind(
        &[
            (
                DiskController::Scsi("megasas"),
                "megaraid_sas",
                "CLOUDOS-DATA",
            ),
            (
                DiskController::Scsi("megasas-gen2"),
                "megaraid_sas",
                "T-MEGASAS2",
            ),
            (DiskController::Scsi("lsi53c895a"), "sym53c8xx", "T-LSI"),
        ],
        "raid-node",
    );
}

/// VMware's paravirtual SCSI, an SD card in a PCI SD host controller, NVMe
/// and SATA.
#[test]
fn iso_uses_disks_behind_pvscsi_sd_nvme_and_sata() {
    let _guests = cloudos_tests::guests::reserve(1);
    disks_behind(
        &[
            (DiskController::Scsi("pvscsi"), "vmw_pvscsi", "CLOUDOS-DATA"),
            (DiskController::SdhciPci, "sdhci-pci", "T-SDCARD"),
            (DiskController::Nvme, "nvme", "T-NVME"),
            (DiskController::Ahci, "ahci", "T-SATA"),
        ],
        "pvscsi-node",
    );
}
