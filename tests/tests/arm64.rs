//! The ARM64 builds, booted for real: the UEFI live ISO on QEMU's `virt`
//! machine (AAVMF) on a LAN with a real DHCP server, and the Raspberry Pi SD
//! card image, first read from the host (partitions, boot files, data file
//! system) and then booted on QEMU's `raspi3b` from the files on its own boot
//! partition, with the card grown to 1 GiB so nodeos grows the data
//! partition into it. Each test runs one VM at most; run with
//! `--test-threads=2` at most. Needs root (namespaces, taps) and
//! `scripts/build.sh --arch aarch64` first.

use std::path::Path;
use std::time::{Duration, Instant};

use cloudos_tests::checks::{
    answer, assert_no_panic, blank_disk, config_disk, start_the_wizard_here, ENTER,
};
use cloudos_tests::guest::{
    answers_ping, boot_timeout, leased_address, line_timeout, power_button_off, re,
};
use cloudos_tests::lab;
use cloudos_tests::rpi::{self, MbrPartition, PiBoot, MBR_FAT32_LBA, MBR_LINUX};
use cloudos_tests::{
    artifacts, Arch, BootSource, Firmware, Machine, SerialMode, TestNet, Vm, VmBuilder,
};

const MIB: u64 = 1024 * 1024;

/// The SD card the Pi image is written to in the boot test: bigger than the
/// image, and a power of two as QEMU requires.
const CARD_SIZE: u64 = 1 << 30;

/// The Pi boards the image carries a device tree for (Pi 3 and Pi 4 families).
const PI_DTBS: [&str; 8] = [
    "bcm2837-rpi-3-b.dtb",
    "bcm2837-rpi-3-b-plus.dtb",
    "bcm2837-rpi-3-a-plus.dtb",
    "bcm2837-rpi-cm3-io3.dtb",
    "bcm2837-rpi-zero-2-w.dtb",
    "bcm2711-rpi-4-b.dtb",
    "bcm2711-rpi-400.dtb",
    "bcm2711-rpi-cm4-io.dtb",
];

/// The VideoCore firmware: bootcode.bin, then start/fixup for Pi <= 3 and start4/fixup4 for Pi 4.
const PI_FIRMWARE: [&str; 5] = [
    "bootcode.bin",
    "start.elf",
    "fixup.dat",
    "start4.elf",
    "fixup4.dat",
];

const READY: &str = r"nodeos ready in \d+\.\d+s: host cloudos-[0-9a-f]{6}, role none";

/// QEMU's raspi3b emulates no Ethernet (a real Pi 3B's is on USB) and has no
/// DMI, so nodeos has no MAC to name the host after and keeps plain `cloudos`.
const READY_WITHOUT_NIC: &str =
    r"nodeos ready in \d+\.\d+s: host cloudos(-[0-9a-f]{6})?, role none";

/// The ARM64 ISO as a SCSI CD on `virt` with AAVMF: GRUB boots it, nodeos
/// gets ready, leases an address from the bridge's DHCP server, answers
/// pings, and powers off cleanly on the ACPI power button.
#[test]
fn arm64_iso_boots_on_uefi_and_gets_a_dhcp_lease() {
    let _guests = cloudos_tests::guests::reserve(1);
    let started = Instant::now();
    let net = TestNet::new().expect("test network");
    net.start_dhcp_server(120).expect("dnsmasq on the bridge");
    let iso = artifacts::iso(Arch::Aarch64).unwrap_or_else(|e| panic!("{e}"));
    let vm = VmBuilder::new(Arch::Aarch64)
        .boot(BootSource::Cdrom(iso))
        .firmware(Firmware::Uefi)
        .network(net.vm_network().expect("tap"))
        .spawn()
        .expect("starting QEMU");
    let console = vm.serial();

    console
        .wait_for("Booting `CloudOS'", boot_timeout())
        .expect("GRUB did not boot the default entry");
    console
        .wait_for(re(READY), boot_timeout())
        .expect("nodeos did not report ready");
    let ready_at = started.elapsed();
    let address = leased_address(&vm, line_timeout());
    console
        .wait_for("default route via 10.77.0.1 dev eth0", line_timeout())
        .expect("no default route");
    assert!(
        answers_ping(&net, &address, line_timeout()),
        "the guest does not answer on {address}"
    );

    power_button_off(
        &vm,
        line_timeout(),
        &[
            ("power button pressed", "the ACPI power button was not seen"),
            ("powering off now", "no orderly shutdown"),
        ],
    );
    eprintln!(
        "arm64 ISO: ready after {:.1}s, powered off after {:.1}s",
        ready_at.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// The same ISO written to a USB stick (xhci + usb-storage, the only disk),
/// with a data disk whose config.toml names the host: the stick's drivers are
/// coldplugged, the data disk is mounted and its settings apply.
#[test]
fn arm64_iso_boots_as_a_usb_stick_with_a_data_disk() {
    let _guests = cloudos_tests::guests::reserve(1);
    let iso = artifacts::iso(Arch::Aarch64).unwrap_or_else(|e| panic!("{e}"));
    let stick = artifacts::usb_stick_from_iso(&iso, Some(64 << 20)).expect("stick image");
    let data = artifacts::data_disk("hostname = \"arm-a\"\n", 32).expect("data disk");
    let vm = VmBuilder::new(Arch::Aarch64)
        .boot(BootSource::UsbStick(stick.to_path_buf()))
        .firmware(Firmware::Uefi)
        .disk(data.to_path_buf())
        .spawn()
        .expect("starting QEMU");
    let console = vm.serial();
    console
        .wait_for("Booting `CloudOS'", boot_timeout())
        .expect("GRUB did not boot from the stick");
    console
        .wait_for("state is kept on /dev/vda (CLOUDOS-DATA)", boot_timeout())
        .expect("the data disk was not mounted");
    console
        .wait_for(re(r"nodeos ready in \d+\.\d+s: host arm-a"), boot_timeout())
        .expect("nodeos did not report ready with the configured name");
    // The stick is only needed by GRUB: its driver is loaded by init when the stick
    // shows up early, else by the devices service's coldplug after ready (a race of USB
    // enumeration: seen both ways), so the whole console counts.
    let deadline = std::time::Instant::now() + line_timeout();
    while !console.contents().contains("usb_storage") {
        assert!(
            std::time::Instant::now() < deadline,
            "the USB storage driver was never loaded: {}",
            console.tail(40)
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_no_panic(&vm);
}

/// The ARM64 ISO installs to disk as the x86_64 one does: an answer file on a disk
/// labelled CLOUDOS-CFG, the ordered install onto a blank virtio disk, the restart; then
/// the disk boots alone on AAVMF, GRUB starts slot A, and nodeos comes up as the master
/// the answers name, on the installed data partition, and confirms the slot.
#[test]
fn arm64_iso_installs_to_a_disk_that_boots_alone_on_uefi() {
    let _guests = cloudos_tests::guests::reserve(1);
    const MAC: &str = "52:54:00:c1:07:01";
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let target = blank_disk(dir.path(), "target.img", 8 << 30);
    let cfg = config_disk(
        dir.path(),
        "mode = \"master\"\nhostname = \"arm-master\"\ncluster = \"lab\"\n\
         disk = \"/dev/vda\"\nwipe = true\n",
    );
    let net = TestNet::new().expect("test network");
    net.start_dhcp_server(600).expect("dnsmasq on the bridge");
    let iso = artifacts::iso(Arch::Aarch64).unwrap_or_else(|e| panic!("{e}"));
    let vm = VmBuilder::new(Arch::Aarch64)
        .name("arm64-install-live")
        .boot(BootSource::Cdrom(iso))
        .firmware(Firmware::Uefi)
        .disk(target.clone())
        .disk(cfg)
        .network(net.vm_network_with_mac(MAC).expect("tap"))
        .spawn()
        .expect("starting QEMU");
    vm.serial()
        .wait_for("install complete: /dev/vda", boot_timeout())
        .unwrap_or_else(|e| panic!("the install did not complete: {e}"));
    let installed_at = started.elapsed();
    vm.wait_exit(line_timeout())
        .expect("QEMU did not exit on the reboot (-no-reboot)");
    assert_no_panic(&vm);
    drop(vm);

    let vm = VmBuilder::new(Arch::Aarch64)
        .name("arm64-install-disk")
        .boot(BootSource::Disk(target))
        .firmware(Firmware::Uefi)
        .network(net.vm_network_with_mac(MAC).expect("tap"))
        .spawn()
        .expect("starting QEMU");
    let from_start = vm.serial().clone();
    vm.serial()
        .wait_for("Booting `CloudOS (slot a)'", boot_timeout())
        .expect("GRUB on the installed disk did not boot slot A");
    vm.serial()
        .wait_for(
            re(r"nodeos ready in \d+\.\d+s: host arm-master, role master"),
            boot_timeout(),
        )
        .expect("the installed master did not come up");
    from_start
        .wait_for("state is kept on /dev/vda3 (CLOUDOS-DATA)", line_timeout())
        .expect("the installed data partition was not used");
    from_start
        .wait_for("slot a confirmed good", line_timeout())
        .expect("nodeos did not confirm slot A");
    lab::power_off(&vm);
    assert_no_panic(&vm);
    eprintln!(
        "arm64 install: complete after {:.1}s, test took {:.1}s",
        installed_at.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// The card's two partitions: the FAT boot partition and the ext4 data partition.
fn card_partitions(card: &Path) -> (MbrPartition, MbrPartition) {
    let table = rpi::read_mbr(card).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(table.len(), 2, "expected two partitions: {table:?}");
    (table[0], table[1])
}

/// The `key=value` and `key value` lines of config.txt, without comments.
fn config_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The SD card image as the Pi's boot ROM and firmware read it: an MBR with
/// a bootable FAT32 partition at 4 MiB holding the firmware, the Pi 3 and 4
/// device trees, the kernel and initramfs of this build and the two
/// settings files; then a 64 MiB ext4 data partition labelled CLOUDOS-DATA.
#[test]
fn rpi_image_has_the_partitions_and_boot_files_the_pi_needs() {
    let started = Instant::now();
    let card = artifacts::rpi_image().unwrap_or_else(|e| panic!("{e}"));
    let (boot, data) = card_partitions(&card);

    assert_eq!(boot.number, 1);
    assert_eq!(boot.kind, MBR_FAT32_LBA, "partition 1 is not FAT32 (LBA)");
    assert!(boot.bootable, "partition 1 is not marked bootable");
    assert_eq!(
        boot.offset(),
        4 * MIB,
        "partition 1 does not start at 4 MiB"
    );
    assert_eq!(boot.size(), 256 * MIB, "partition 1 is not 256 MiB");
    assert_eq!(data.number, 2);
    assert_eq!(data.kind, MBR_LINUX, "partition 2 is not a Linux partition");
    assert!(
        data.offset() >= boot.end(),
        "partition 2 overlaps partition 1"
    );
    assert_eq!(data.size(), 64 * MIB, "partition 2 is not 64 MiB");
    let image_len = std::fs::metadata(&card).expect("stat the image").len();
    assert!(data.end() <= image_len, "partition 2 ends past the image");

    assert_eq!(
        rpi::fat_label(&card, &boot).unwrap_or_else(|e| panic!("{e}")),
        "CLOUDOS-PI"
    );
    let files = rpi::fat_files(&card, &boot).unwrap_or_else(|e| panic!("{e}"));
    let wanted = PI_FIRMWARE
        .iter()
        .chain(PI_DTBS.iter())
        .chain(["vmlinuz", "initramfs.img", "config.txt", "cmdline.txt"].iter());
    for name in wanted {
        assert!(
            files.iter().any(|f| f == name),
            "{name} missing from the boot partition: {files:?}"
        );
    }
    for dtb in PI_DTBS {
        let blob = rpi::fat_read(&card, &boot, dtb).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            blob.starts_with(&[0xd0, 0x0d, 0xfe, 0xed]),
            "{dtb} is not a flattened device tree"
        );
    }
    // The card carries this build's kernel and userland, not a stale one.
    for (name, built) in [
        ("vmlinuz", artifacts::kernel(Arch::Aarch64)),
        ("initramfs.img", artifacts::initramfs(Arch::Aarch64)),
    ] {
        let built = built.unwrap_or_else(|e| panic!("{e}"));
        let on_card = rpi::fat_read(&card, &boot, name).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            on_card == std::fs::read(&built).expect("reading the build output"),
            "{name} on the card differs from {}",
            built.display()
        );
    }

    let config = rpi::fat_read(&card, &boot, "config.txt").unwrap_or_else(|e| panic!("{e}"));
    let config = String::from_utf8(config).expect("config.txt is text");
    let lines = config_lines(&config);
    for line in [
        "arm_64bit=1",
        "enable_uart=1",
        "upstream_kernel=1",
        "kernel=vmlinuz",
        "initramfs initramfs.img followkernel",
    ] {
        assert!(
            lines.contains(&line),
            "config.txt lacks {line:?}:\n{config}"
        );
    }

    let cmdline = rpi::fat_read(&card, &boot, "cmdline.txt").unwrap_or_else(|e| panic!("{e}"));
    let cmdline = String::from_utf8(cmdline).expect("cmdline.txt is text");
    // The firmware passes the first line on; the last console= becomes /dev/console.
    assert_eq!(cmdline.lines().count(), 1, "cmdline.txt is not one line");
    let consoles: Vec<&str> = cmdline
        .split_whitespace()
        .filter(|w| w.starts_with("console="))
        .collect();
    assert_eq!(
        consoles.last(),
        Some(&"console=ttyS1,115200"),
        "the serial console (mini UART) is not the last console= in {cmdline:?}"
    );

    let fs = rpi::read_ext4_superblock(&card, &data).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fs.label, "CLOUDOS-DATA");
    assert_eq!(
        fs.size(),
        data.size(),
        "the data file system does not fill its partition: {fs:?}"
    );
    eprintln!(
        "rpi image checks took {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// `poweroff` typed at the maintenance console: an orderly shutdown syncs and unmounts,
/// so the card holds what was written; the board then halts and QEMU is stopped by hand.
fn power_off_from_the_console(vm: Vm) {
    let console = vm.serial();
    std::thread::sleep(Duration::from_secs(1));
    console
        .send_line("poweroff")
        .expect("typing on the console");
    console
        .wait_for("powering off now", line_timeout())
        .expect("no orderly shutdown from the console");
    vm.stop().expect("stopping QEMU");
    assert_no_panic(&vm);
}

/// Boots `pi` with its card on a console socket (the wizard is driven through it).
fn start(pi: &PiBoot, card: &Path) -> Vm {
    pi.vm(card)
        .serial(SerialMode::Socket)
        .spawn()
        .expect("starting QEMU")
}

/// The card image written to a 1 GiB card, booted on a Raspberry Pi 3B three times:
///
/// 1. nodeos finds the data partition on the SD card and grows it, and its file system,
///    to the end of the card; the card has no settings yet, so the wizard asks what the
///    node should be. "Not now" gives the console back to the maintenance console, whose
///    `poweroff` shuts down in order.
/// 2. The wizard again: master, a host name, a static network (raspi3b emulates no
///    Ethernet), a cluster name, no disk step; confirmed, the settings are written to
///    the card and the Pi restarts.
/// 3. The card boots as that master and asks nothing.
#[test]
fn rpi_image_boots_on_raspi3b_grows_its_data_partition_and_is_set_up_by_the_wizard() {
    let _guests = cloudos_tests::guests::reserve(1);
    let started = Instant::now();
    let image = artifacts::rpi_image().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let card = artifacts::sd_card_from_image(&image, dir.path(), CARD_SIZE)
        .unwrap_or_else(|e| panic!("{e}"));
    let (boot, data) = card_partitions(&card);
    assert!(
        data.end() < CARD_SIZE,
        "the data partition already fills the card"
    );
    let pi = PiBoot::from_card(&card, &boot, dir.path());
    assert!(
        pi.append
            .contains(Machine::RaspberryPi3B.serial_console(Arch::Aarch64)),
        "cmdline.txt does not name the Pi's serial console: {:?}",
        pi.append
    );

    // 1. First boot: growth, then the wizard, declined.
    let vm = start(&pi, &card);
    let console = vm.serial();
    // A second cursor from the start: the growth may be logged before or after ready.
    let from_start = console.clone();
    let ready = console
        .wait_for(re(READY_WITHOUT_NIC), boot_timeout())
        .expect("nodeos did not report ready");
    let ready_at = started.elapsed();
    eprintln!("raspi3b: {}", ready.line);

    let grown = from_start
        .wait_for(
            re(r"grew the data partition /dev/mmcblk0p2 from (\d+) MiB to (\d+) MiB"),
            line_timeout(),
        )
        .expect("nodeos did not grow the data partition");
    from_start
        .wait_for(
            "state is kept on /dev/mmcblk0p2 (CLOUDOS-DATA)",
            line_timeout(),
        )
        .expect("the SD card's data partition was not mounted");
    let number = |i: usize| -> u64 {
        grown
            .group(i)
            .and_then(|n| n.parse().ok())
            .expect("a MiB count")
    };
    let (from, to) = (number(1), number(2));
    assert_eq!(from, data.size() / MIB, "{}", grown.line);
    assert_eq!(to, (CARD_SIZE - data.offset()) / MIB, "{}", grown.line);

    console
        .wait_for("setup: this node has no settings yet", line_timeout())
        .expect("an unconfigured card did not start the wizard");
    start_the_wizard_here(&vm);
    answer(&vm, "Not now (keep running unconfigured", b"");
    // The third item. Tab moves down as the arrow does, in one byte: on a loaded host the
    // emulated Pi can read an arrow's escape sequence in two pieces, ESC alone as Escape
    // and "[B" as text (seen in a full run: the menu stayed where it was).
    for key in [b"\t".as_slice(), b"\t", ENTER] {
        vm.serial().send(key).expect("typing on the console");
        std::thread::sleep(Duration::from_millis(300));
    }
    console
        .wait_for("CloudOS console ready", line_timeout())
        .expect("the maintenance console did not come back after the wizard");
    power_off_from_the_console(vm);

    let (boot_after, data_after) = card_partitions(&card);
    assert_eq!(boot_after, boot, "the boot partition changed");
    assert_eq!(
        data_after.start_sector, data.start_sector,
        "the data partition moved"
    );
    assert_eq!(
        data_after.end(),
        CARD_SIZE,
        "the data partition does not end at the end of the card: {data_after:?}"
    );
    let fs = rpi::read_ext4_superblock(&card, &data_after).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fs.label, "CLOUDOS-DATA");
    assert!(
        fs.size() <= data_after.size() && fs.size() * 100 >= data_after.size() * 95,
        "the file system ({} bytes) does not fill its grown partition ({} bytes)",
        fs.size(),
        data_after.size()
    );

    // 2. The wizard sets the card up as a master.
    let vm = start(&pi, &card);
    vm.serial()
        .wait_for("setup: this node has no settings yet", boot_timeout())
        .expect("the card, still without settings, did not start the wizard");
    start_the_wizard_here(&vm);
    answer(&vm, "What do you want to do?", ENTER);
    answer(&vm, "Host name of this node", b"pi-master\r");
    answer(&vm, "Network", b"");
    // Tab moves down as the arrow does, in one byte: on a loaded host the emulated Pi can
    // read an arrow's escape sequence in two pieces, ESC alone as Escape and "[B" as text
    // (seen once in a full run: DHCP was chosen instead).
    vm.serial().send(b"\t").expect("typing on the console");
    std::thread::sleep(Duration::from_millis(300));
    vm.serial().send(ENTER).expect("typing on the console");
    answer(&vm, "Address with prefix length", b"10.9.0.5/24\r");
    answer(&vm, "Gateway (empty for none)", b"10.9.0.1\r");
    answer(&vm, "DNS servers", b"10.9.0.1\r");
    answer(&vm, "Cluster name", b"pi-lab\r");
    // The second item: the master only (the emulated Pi runs no agent beside it).
    answer(&vm, "What runs on this machine?", b"");
    vm.serial().send(b"\t").expect("typing on the console");
    std::thread::sleep(Duration::from_millis(300));
    vm.serial().send(ENTER).expect("typing on the console");
    vm.serial()
        .wait_for(
            "About to set up CloudOS on this SD card (/dev/mmcblk0)",
            line_timeout(),
        )
        .expect("no summary");
    vm.serial()
        .wait_for("master of a new cluster \"pi-lab\"", line_timeout())
        .expect("the summary does not name the role");
    assert!(
        !vm.serial().contents().contains("runs workloads too"),
        "the second item (the master only) was not taken"
    );
    answer(
        &vm,
        "Write these settings to this SD card (/dev/mmcblk0) and restart?",
        b"y\r",
    );
    vm.serial()
        .wait_for(
            "install complete: settings written to /dev/mmcblk0",
            line_timeout(),
        )
        .unwrap_or_else(|e| panic!("the settings were not written: {e}"));
    // -no-reboot: the restart ends QEMU; the next start is the Pi coming back.
    vm.wait_exit(line_timeout())
        .expect("the Pi did not restart after the setup");
    assert_no_panic(&vm);
    drop(vm);

    // 3. The card boots as the master it was set up as, and asks nothing.
    let vm = start(&pi, &card);
    let from_start = vm.serial().clone();
    let ready = vm
        .serial()
        .wait_for(
            re(r"nodeos ready in \d+\.\d+s: host pi-master, role master"),
            boot_timeout(),
        )
        .expect("the card set up as a master did not come up as one");
    eprintln!("raspi3b after setup: {}", ready.line);
    from_start
        .wait_for("CloudOS console ready", line_timeout())
        .expect("a configured card gave its console to no one");
    let console = vm.serial();
    assert!(
        !from_start
            .contents()
            .contains("setup: this node has no settings yet"),
        "the wizard ran again on a configured card"
    );
    std::thread::sleep(Duration::from_secs(1));
    console.send_line("status").expect("typing on the console");
    console
        .wait_for(
            re(r"host pi-master\s+role master\s+up \d+s\s+READY"),
            line_timeout(),
        )
        .expect("status does not show the master set up by the wizard");
    power_off_from_the_console(vm);
    eprintln!(
        "raspi3b: ready after {:.1}s, test took {:.1}s",
        ready_at.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
