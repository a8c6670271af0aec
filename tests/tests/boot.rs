//! The foundation, booted for real: the ISO on SeaBIOS from a CD and on UEFI
//! from a USB stick, `nodeos` as PID 1 up to "ready", DHCP from a real server
//! on a private bridge, a pulled and replugged cable, the maintenance console,
//! a crashing service restarted with backoff, bad settings, and orderly
//! poweroff and reboot. Each test runs one VM; run with `--test-threads=2` at
//! most (two QEMU guests on two cores). Needs root (namespaces, taps).

use std::process::Command;
use std::time::Duration;

use cloudos_tests::checks::{assert_no_kernel_panic, assert_no_panic};
use cloudos_tests::guest::{
    answers_ping, expect_lines, leased_address, line_timeout, power_button_off, re,
};
use cloudos_tests::{
    artifacts, scaled, Arch, BootSource, Firmware, GuestNetwork, TestNet, VmBuilder,
};

/// Ready takes ~4 s of guest time on an idle host and ten times that on a
/// loaded one; firmware and GRUB add their own under TCG.
fn boot_timeout() -> Duration {
    scaled(Duration::from_secs(240))
}

/// The ISO from a CD on SeaBIOS, on a LAN with a real DHCP server: it comes
/// up ready, leases an address with gateway and DNS, answers pings, shows its
/// state on the console, renews its address after the cable is pulled and
/// put back, and powers off cleanly on the ACPI power button.
#[test]
fn iso_on_bios_gets_a_lease_survives_a_pulled_cable_and_powers_off() {
    let _guests = cloudos_tests::guests::reserve(1);
    let net = TestNet::new().expect("test network");
    net.start_dhcp_server(120).expect("dnsmasq on the bridge");
    let iso = artifacts::iso(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let vm = VmBuilder::new(Arch::X86_64)
        .boot(BootSource::Cdrom(iso))
        .firmware(Firmware::Bios)
        .network(net.vm_network().expect("tap"))
        .spawn()
        .expect("starting QEMU");
    let console = vm.serial();

    console
        .wait_for("Booting `CloudOS'", boot_timeout())
        .expect("GRUB did not boot the default entry");
    console
        .wait_for(
            re(r"nodeos ready in \d+\.\d+s: host cloudos-[0-9a-f]{6}, role none"),
            boot_timeout(),
        )
        .expect("nodeos did not report ready");
    let address = leased_address(&vm, line_timeout());
    console
        .wait_for("default route via 10.77.0.1 dev eth0", line_timeout())
        .expect("no default route");
    assert!(
        answers_ping(&net, &address, line_timeout()),
        "the guest does not answer on {address}"
    );

    // What an operator types on the console.
    console.skip_to_end();
    console.send_line("status").expect("typing on the console");
    console
        .wait_for("READY", line_timeout())
        .expect("status does not say READY");
    console
        .wait_for(re(r"eth0\s+up\s+dhcp\s+10\.77\.0\.\d+/24"), line_timeout())
        .expect("status lacks eth0's lease");
    console
        .wait_for("gateway 10.77.0.1  dns 10.77.0.1", line_timeout())
        .expect("status lacks gateway and DNS");

    // Pull the cable: the address goes; put it back: a lease comes back.
    vm.monitor("set_link n0 off").expect("monitor");
    console
        .wait_for("eth0: link down", line_timeout())
        .expect("carrier loss not noticed");
    console
        .wait_for(
            "eth0: address released until the link is back",
            line_timeout(),
        )
        .expect("address kept without carrier");
    vm.monitor("set_link n0 on").expect("monitor");
    console
        .wait_for("eth0: link up", line_timeout())
        .expect("carrier not noticed again");
    let renewed = leased_address(&vm, line_timeout());
    assert!(
        answers_ping(&net, &renewed, line_timeout()),
        "no answer on {renewed} after the cable came back"
    );

    power_button_off(
        &vm,
        line_timeout(),
        &[
            ("power button pressed", "power button not seen"),
            ("shutdown: powering off now", "no orderly shutdown"),
        ],
    );
}

/// The same ISO written to a USB stick boots on UEFI (q35 + OVMF), mounts a
/// data disk labelled CLOUDOS-DATA and takes its settings from the
/// config.toml on it; a bad key there is only a warning.
#[test]
fn iso_as_usb_stick_boots_on_uefi_with_a_data_disk() {
    let _guests = cloudos_tests::guests::reserve(1);
    let iso = artifacts::iso(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let stick = artifacts::usb_stick_from_iso(&iso, Some(64 << 20)).expect("stick image");
    let data = artifacts::data_disk("hostname = \"node-a\"\nnet = \"carrier-pigeon\"\n", 32)
        .expect("data disk");
    let vm = VmBuilder::new(Arch::X86_64)
        .boot(BootSource::UsbStick(stick.to_path_buf()))
        .firmware(Firmware::Uefi)
        .disk(data.to_path_buf())
        .spawn()
        .expect("starting QEMU");
    let console = vm.serial();
    expect_lines(
        console,
        boot_timeout(),
        &[
            ("Booting `CloudOS'", "GRUB (UEFI) did not boot"),
            (
                "state is kept on /dev/vda (CLOUDOS-DATA)",
                "the data disk was not mounted",
            ),
        ],
    );
    expect_lines(
        console,
        line_timeout(),
        &[
            (
                "settings: /var/lib/cloudos/config.toml: ignoring net",
                "no warning for the config file's bad key",
            ),
            ("host name node-a", "host name from config.toml not used"),
        ],
    );
    console
        .wait_for(
            re(r"nodeos ready in \d+\.\d+s: host node-a"),
            boot_timeout(),
        )
        .expect("nodeos did not report ready");
    // The stick's USB devices enumerate after xhci loads: usb_storage comes
    // from PID 1's coldplug or, as often, from the devices service.
    let deadline = std::time::Instant::now() + line_timeout();
    while !console.contents().contains("usb_storage") {
        assert!(
            std::time::Instant::now() < deadline,
            "the USB storage driver was not loaded:\n{}",
            console.tail(40)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Ctrl-Alt-Del is a reboot; QEMU runs with -no-reboot, so it exits.
    vm.monitor("sendkey ctrl-alt-delete").expect("monitor");
    console
        .wait_for("shutdown: rebooting now", line_timeout())
        .expect("ctrl-alt-del did not reboot");
    vm.wait_exit(line_timeout())
        .expect("QEMU still running after the reboot");
    assert_no_panic(&vm);
}

/// A data disk on a slow storage controller (QEMU's PIIX IDE: libata resets
/// each port, about 0.3 s under TCG). A live boot does not wait for it: it
/// gets ready on memory, looks again once the storage drivers have probed,
/// finds the disk and restarts its services on that disk's settings. A boot
/// of an installed disk (`cloudos.slot`) must have its data partition, so it
/// waits for the disks and starts on the disk's state at once.
#[test]
fn data_disk_on_a_slow_controller_is_used_by_live_and_installed_boots() {
    let _guests = cloudos_tests::guests::reserve(1);
    let kernel = artifacts::kernel(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let initrd = artifacts::initramfs(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let data = artifacts::data_disk("hostname = \"ide-node\"\n", 32).expect("data disk");
    // The kernel with the data disk on the PIIX's IDE.
    let boot_with_ide_disk = |append: &str| {
        VmBuilder::new(Arch::X86_64)
            .kernel(&kernel, &initrd, append)
            .extra_args([
                "-drive".to_string(),
                format!("if=none,id=ata0,format=raw,file={}", data.display()),
                "-device".to_string(),
                "ide-hd,drive=ata0,bus=ide.1".to_string(),
            ])
            .spawn()
            .expect("starting QEMU")
    };

    // The live boot: ready on memory first, then on the disk.
    let vm = boot_with_ide_disk("console=ttyS0,115200 panic=-1");
    let console = vm.serial();
    expect_lines(
        console,
        boot_timeout(),
        &[
            (
                re(r"state is kept on memory"),
                "the live boot waited for the IDE disk",
            ),
            (
                re(r"nodeos ready in \d+\.\d+s: host cloudos,"),
                "not ready on memory",
            ),
            (
                re(r"found the data partition /dev/sda once the storage drivers had probed"),
                "the IDE disk's data partition was not found after the boot",
            ),
            (
                re(r"state is kept on /dev/sda \(CLOUDOS-DATA\)"),
                "the data disk was not mounted",
            ),
            (
                re(r"host name ide-node"),
                "the disk's config.toml was not read",
            ),
            (
                re(r"nodeos ready in \d+\.\d+s: host ide-node,"),
                "the services did not come back on the disk's state",
            ),
        ],
    );
    console.send_line("status").expect("console");
    console
        .wait_for(re(r"/dev/sda \(CLOUDOS-DATA\)"), line_timeout())
        .expect("status does not show the data disk");
    power_button_off(
        &vm,
        line_timeout(),
        &[("shutdown: powering off now", "no orderly poweroff")],
    );
    drop(vm);

    // An installed disk's boot: the data partition at once, no second start.
    let vm = boot_with_ide_disk("console=ttyS0,115200 panic=-1 cloudos.slot=a");
    let console = vm.serial();
    expect_lines(
        console,
        boot_timeout(),
        &[
            (
                re(r"state is kept on /dev/sda \(CLOUDOS-DATA\)"),
                "the installed boot did not wait for its disk",
            ),
            (
                re(r"nodeos ready in \d+\.\d+s: host ide-node,"),
                "not ready on the disk's state",
            ),
        ],
    );
    let log = console.contents();
    assert!(
        !log.contains("state is kept on memory") && !log.contains("found the data partition"),
        "the installed boot started on memory:\n{}",
        console.tail(40)
    );
    power_button_off(
        &vm,
        line_timeout(),
        &[("shutdown: powering off now", "no orderly poweroff")],
    );
    drop(vm);

    // A data partition that is found late but does not mount (a file-system
    // feature this kernel lacks): one try, then the node stays on memory,
    // ready, instead of restarting its services again and again.
    set_unknown_ext4_feature(&data);
    let vm = boot_with_ide_disk("console=ttyS0,115200 panic=-1");
    let console = vm.serial();
    expect_lines(
        console,
        boot_timeout(),
        &[
            (
                re(r"found the data partition /dev/sda once the storage drivers had probed"),
                "the late look did not find the damaged partition",
            ),
            (
                re(r"cannot mount /dev/sda at /var/lib/cloudos"),
                "no mount error",
            ),
            (re(r"state is kept on memory"), "not back on memory"),
            (
                re(r"nodeos ready in \d+\.\d+s: host cloudos,"),
                "not ready again after the failed mount",
            ),
        ],
    );
    // The services stay up: no second restart on the same partition.
    std::thread::sleep(scaled(Duration::from_secs(3)));
    console.send_line("status").expect("console");
    console
        .wait_for(re(r"state on memory"), line_timeout())
        .expect("status after the failed adoption");
    let log = console.contents();
    assert_eq!(
        log.matches("found the data partition").count(),
        1,
        "the damaged partition was tried more than once:\n{}",
        console.tail(40)
    );
    power_button_off(
        &vm,
        line_timeout(),
        &[("shutdown: powering off now", "no orderly poweroff")],
    );
}

/// Sets an incompatible-feature bit no kernel knows in an ext4 image's
/// superblock: the label still reads, the mount is refused.
fn set_unknown_ext4_feature(image: &std::path::Path) {
    use std::io::{Read, Seek, SeekFrom, Write};
    const INCOMPAT: u64 = 1024 + 0x60;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .expect("opening the data disk");
    let mut flags = [0u8; 4];
    file.seek(SeekFrom::Start(INCOMPAT)).expect("seek");
    file.read_exact(&mut flags).expect("reading the superblock");
    let flags = u32::from_le_bytes(flags) | 0x8000_0000;
    file.seek(SeekFrom::Start(INCOMPAT)).expect("seek");
    file.write_all(&flags.to_le_bytes())
        .expect("writing the superblock");
}

/// A service that crashes on its first three starts is restarted with
/// growing delays and the node still gets ready; broken settings on the
/// command line are reported and ignored; a NIC hot-plugged after boot gets
/// its driver and is brought up.
#[test]
fn crashing_service_backs_off_and_bad_settings_only_warn() {
    let _guests = cloudos_tests::guests::reserve(1);
    let kernel = artifacts::kernel(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let initrd = artifacts::initramfs(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let append = "console=ttyS0,115200 panic=-1 cloudos.fault=crash:power:3 \
                  cloudos.net=carrier-pigeon cloudos.colour=blue cloudos.hostname=-bad_name-";
    let vm = VmBuilder::new(Arch::X86_64)
        .kernel(kernel, initrd, append)
        .network(GuestNetwork::User { hostfwd: vec![] })
        .spawn()
        .expect("starting QEMU");
    let console = vm.serial();

    let text = |pattern: &str| {
        console
            .wait_for(re(pattern), boot_timeout())
            .unwrap_or_else(|e| panic!("{e}"));
    };
    for (n, delay) in [(1, 500), (2, 1000), (3, 2000)] {
        text(&format!(
            r"service power .*after \d+\.\ds; restart #{n} in {delay} ms"
        ));
    }
    text(r"nodeos ready in \d+\.\d+s");
    // QEMU's user network with restrict=on leases an address but, being
    // restricted, offers no router or DNS; the node reports just that.
    let lease =
        regex::Regex::new(r"eth0: dhcp lease 10\.0\.2\.15/24 gateway none dns none for \d+s")
            .expect("regex");
    let deadline = std::time::Instant::now() + line_timeout();
    while !lease.is_match(&console.contents()) {
        assert!(
            std::time::Instant::now() < deadline,
            "no lease on the user network:\n{}",
            console.tail(40)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Settings are read before the services start: by now every warning is out.
    let log = console.contents();
    for key in ["cloudos.net", "cloudos.colour", "cloudos.hostname"] {
        assert!(
            log.lines()
                .any(|l| l.contains("settings:") && l.contains(key)),
            "no warning about {key}:\n{}",
            console.tail(60)
        );
    }
    console.send_line("status").expect("console");
    text(r"power\s+ready\s+\d+\s+3\s+");

    // Hot-plug a NIC of another kind: its driver is loaded from the uevent
    // and the network service takes the new link up.
    vm.monitor("netdev_add user,id=hot0,restrict=on")
        .expect("monitor");
    vm.monitor("device_add e1000,netdev=hot0,id=nic1")
        .expect("monitor");
    text(r"eth1: link up");
    let log = console.contents();
    for line in ["devices: loaded e1000 for", "eth1: found ethernet link"] {
        assert!(
            log.contains(line),
            "no {line:?} after the hot-plug:\n{}",
            console.tail(40)
        );
    }

    vm.monitor("system_powerdown").expect("monitor");
    text("shutdown: powering off now");
    vm.wait_exit(line_timeout())
        .expect("QEMU still running after poweroff");
    assert_no_kernel_panic(&vm);
}

/// Two builds of the initramfs from the same inputs are the same bytes, and
/// the same as the image `scripts/build.sh` made.
#[test]
fn initramfs_builds_are_byte_identical() {
    let image = artifacts::initramfs(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    // build.sh records what went into the image: epoch, init, kernel release,
    // mkinitramfs, module list, unpacked kernel marker, CA bundle.
    let recipe = std::fs::read_to_string(image.with_extension("img.recipe"))
        .expect("initramfs recipe from build.sh");
    let lines: Vec<&str> = recipe.lines().collect();
    let [epoch, init, release, mk, modules, kernel_marker, ca, ..] = lines[..] else {
        panic!("unexpected recipe:\n{recipe}")
    };
    let epoch = epoch.trim_start_matches("SOURCE_DATE_EPOCH=");
    let kernel_dir = std::path::Path::new(kernel_marker)
        .parent()
        .expect("kernel dir");
    let firmware = firmware_args(&lines[7..]);
    assert!(
        !firmware.is_empty(),
        "no --firmware in the recipe:\n{recipe}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let mut outputs = Vec::new();
    for n in 0..2 {
        let out = dir.path().join(format!("initramfs-{n}.img"));
        let status = Command::new(mk)
            .env("SOURCE_DATE_EPOCH", epoch)
            .args([
                "--init",
                init,
                "--kernel-release",
                release,
                "--modules",
                modules,
                "--ca-bundle",
                ca,
            ])
            .arg("--modules-root")
            .arg(kernel_dir)
            .args(&firmware)
            .arg("--output")
            .arg(&out)
            .status()
            .expect("running mkinitramfs");
        assert!(status.success(), "mkinitramfs failed");
        outputs.push(std::fs::read(&out).expect("reading the image"));
    }
    assert!(outputs[0] == outputs[1], "two builds differ");
    assert!(
        outputs[0] == std::fs::read(&image).expect("built image"),
        "differs from out/x86_64/initramfs.img"
    );
}

/// The `--firmware DIR` pairs at the head of `lines` (a recipe's lines after
/// the CA bundle; the inputs' stat lines follow).
fn firmware_args<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    lines
        .chunks(2)
        .take_while(|pair| pair.len() == 2 && pair[0] == "--firmware")
        .flatten()
        .copied()
        .collect()
}

/// The image holds exactly the firmware its modules name that the pinned
/// firmware packages have, byte for byte, and nothing else: unpacked with the
/// host's lz4 and cpio, each module unpacked with zstd and asked with modinfo.
#[test]
fn initramfs_carries_the_firmware_its_modules_name() {
    use cloudos_testkit::{program, require};
    use std::collections::BTreeSet;
    use std::path::Path;
    for tool in ["lz4", "cpio", "zstd", "modinfo"] {
        require!(program(tool, "scripts/deps.sh"));
    }
    let image = artifacts::initramfs(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let recipe = std::fs::read_to_string(image.with_extension("img.recipe"))
        .expect("initramfs recipe from build.sh");
    let lines: Vec<&str> = recipe.lines().collect();
    let pool: Vec<&Path> = firmware_args(&lines[7..])
        .chunks(2)
        .map(|pair| Path::new(pair[1]))
        .collect();
    assert!(!pool.is_empty(), "no firmware packages in the recipe");

    let root = tempfile::tempdir().expect("temp dir");
    let unpack = Command::new("sh")
        .arg("-c")
        .arg("lz4 -dc \"$1\" | cpio -id --quiet")
        .arg("sh")
        .arg(&image)
        .current_dir(root.path())
        .status()
        .expect("lz4 | cpio");
    assert!(unpack.success(), "unpacking the initramfs failed");

    let mut named = BTreeSet::new();
    let mut modules = 0;
    for entry in walk(&root.path().join("lib/modules")) {
        if !entry.to_string_lossy().ends_with(".ko.zst") {
            continue;
        }
        modules += 1;
        let ko = root.path().join("module.ko");
        let status = Command::new("zstd")
            .args(["-dqf", "-o"])
            .arg(&ko)
            .arg(&entry)
            .status()
            .expect("zstd");
        assert!(status.success(), "{} is not a zstd frame", entry.display());
        let out = Command::new("modinfo")
            .args(["-F", "firmware"])
            .arg(&ko)
            .output()
            .expect("modinfo");
        assert!(out.status.success(), "modinfo {}", entry.display());
        named.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned),
        );
    }
    assert!(modules > 100, "only {modules} modules in the image");

    let in_pool = |name: &String| {
        pool.iter()
            .map(|p| p.join("lib/firmware").join(name))
            .find(|p| p.is_file())
    };
    let expected: BTreeSet<String> = named
        .iter()
        .filter(|n| in_pool(n).is_some())
        .cloned()
        .collect();
    let fw_dir = root.path().join("lib/firmware");
    let shipped: BTreeSet<String> = walk(&fw_dir)
        .into_iter()
        .map(|p| {
            p.strip_prefix(&fw_dir)
                .expect("under lib/firmware")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        shipped, expected,
        "firmware in the image vs named by its modules"
    );
    // The most common on-board NIC of consumer PCs and the Intel E810's DDP package.
    for must in [
        "rtl_nic/rtl8168h-2.fw",
        "intel/ice/ddp/ice.pkg",
        "tigon/tg3_tso5.bin",
    ] {
        assert!(shipped.contains(must), "{must} missing from the image");
    }
    for name in &shipped {
        let source = in_pool(name).expect("in the pool");
        assert!(
            std::fs::read(fw_dir.join(name)).expect("shipped file")
                == std::fs::read(&source).expect("package file"),
            "{name} differs from {}",
            source.display()
        );
    }
}

/// Every regular file under `dir`, recursively.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => files.extend(walk(&path)),
            Ok(t) if t.is_file() => files.push(path),
            _ => {}
        }
    }
    files
}
