//! The installed-disk template (`image/disk.sh`, `out/x86_64/disk-template.img`):
//! its fixed layout, byte-identical rebuilds, and boots from the disk alone
//! once slot A holds the kernel and initramfs, on SeaBIOS and on OVMF, with
//! GRUB's boot counter in `/boot/grub/grubenv` and the fall-back to the
//! other slot when the active one never comes up.
//!
//! Each test boots one VM at a time; run with `--test-threads=2` at most.
//! Needs `scripts/build.sh --arch x86_64` and `image/disk.sh` first, mtools
//! and grub-editenv on the host, and root for the rebuild test.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cloudos_tests::checks::assert_no_panic;
use cloudos_tests::guest::{
    assert_powered_off, expect_lines, line_timeout, poweroff_from_console, re, wait_poweroff_exit,
};
use cloudos_tests::{artifacts, scaled, Arch, BootSource, Firmware, VmBuilder};

const SECTOR: u64 = 512;

/// The layout image/disk.sh makes (and the installer's partition plan uses).
const BIOS_START: u64 = 2048;
const BIOS_END: u64 = 4095;
const ESP_START: u64 = 4096;
const ESP_END: u64 = 528_383;
const DATA_START: u64 = 528_384;
const DATA_END: u64 = 659_455;
const TOTAL_SECTORS: u64 = 661_504;

const ESP_OFFSET: u64 = ESP_START * SECTOR;

const TYPE_BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
const TYPE_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const TYPE_LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// Firmware, GRUB and the kernel under TCG: ready comes ~12 s (SeaBIOS) to
/// ~20 s (OVMF) after QEMU starts on an idle host, far later on a loaded one.
fn boot_timeout() -> Duration {
    scaled(Duration::from_secs(240))
}

const READY: &str = r"nodeos ready in \d+\.\d+s: host \S+, role none";

/// The template as image/disk.sh left it; never booted or changed by a test.
fn template() -> PathBuf {
    let path = artifacts::out_dir()
        .join("x86_64")
        .join("disk-template.img");
    assert!(
        path.is_file(),
        "{} not found: run image/disk.sh (after scripts/build.sh --arch x86_64)",
        path.display()
    );
    path
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let what = format!("{cmd:?}");
    let out = cmd
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!("{what}: {e} (mtools and grub-common installed? scripts/deps.sh)")
        });
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A copy of the template in `dir`, sparse like the original.
fn copy_template(dir: &Path) -> PathBuf {
    let disk = dir.join("disk.img");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(template())
        .arg(&disk));
    disk
}

/// The ESP of `disk` as an mtools image spec.
fn esp(disk: &Path) -> String {
    format!("{}@@{ESP_OFFSET}", disk.display())
}

/// Copies a host file onto the ESP (overwriting).
fn put(disk: &Path, from: &Path, to: &str) {
    run(Command::new("mcopy")
        .args(["-o", "-i", &esp(disk)])
        .arg(from)
        .arg(format!("::{to}")));
}

/// Fills slot `slot` (a or b) with a kernel and an initramfs.
fn fill_slot(disk: &Path, slot: &str, kernel: &Path, initrd: &Path) {
    put(disk, kernel, &format!("/slot-{slot}/vmlinuz"));
    put(disk, initrd, &format!("/slot-{slot}/initramfs.img"));
}

/// GRUB's environment block on the ESP, as `grub-editenv list` reads it.
fn grubenv(disk: &Path, scratch: &Path) -> BTreeMap<String, String> {
    let copy = scratch.join("grubenv.read");
    let _ = fs::remove_file(&copy);
    run(Command::new("mcopy")
        .args(["-o", "-i", &esp(disk), "::/boot/grub/grubenv"])
        .arg(&copy));
    let bytes = fs::read(&copy).expect("reading the grubenv copy");
    assert_eq!(
        bytes.len(),
        1024,
        "grubenv is no longer one 1 KiB block: GRUB's save_env would fail"
    );
    assert!(
        bytes.starts_with(b"# GRUB Environment Block\n"),
        "not a GRUB environment block"
    );
    let listing = run(Command::new("grub-editenv").arg(&copy).arg("list"));
    String::from_utf8_lossy(&listing)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Rewrites grubenv on the ESP with `vars` (as an installer or upgrade would).
fn set_grubenv(disk: &Path, scratch: &Path, vars: &[(&str, &str)]) {
    let copy = scratch.join("grubenv.write");
    let _ = fs::remove_file(&copy);
    run(Command::new("mcopy")
        .args(["-o", "-i", &esp(disk), "::/boot/grub/grubenv"])
        .arg(&copy));
    let mut cmd = Command::new("grub-editenv");
    cmd.arg(&copy).arg("set");
    for (k, v) in vars {
        cmd.arg(format!("{k}={v}"));
    }
    run(&mut cmd);
    put(disk, &copy, "/boot/grub/grubenv");
}

fn env_value<'a>(env: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    env.get(key).map(String::as_str).unwrap_or("")
}

/// Boots `disk` on `firmware` until nodeos is ready, checks that GRUB booted
/// `slot` (and only it) and that the data partition is in use, then powers
/// off from the console. Returns the time to ready.
fn boot_slot(disk: &Path, firmware: Firmware, slot: &str, name: &str) -> Duration {
    let started = Instant::now();
    let vm = VmBuilder::new(Arch::X86_64)
        .name(name)
        .boot(BootSource::Disk(disk.to_path_buf()))
        .firmware(firmware)
        .spawn()
        .expect("starting QEMU");
    let console = vm.serial();
    let from_start = console.clone();
    console
        .wait_for(format!("Booting `CloudOS (slot {slot})'"), boot_timeout())
        .expect("GRUB did not boot the active slot's entry");
    console
        .wait_for(
            format!("CloudOS: booting /slot-{slot}/vmlinuz cloudos.slot={slot}"),
            line_timeout(),
        )
        .expect("GRUB did not load the slot's kernel with cloudos.slot");
    let ready = console
        .wait_for(re(READY), boot_timeout())
        .expect("nodeos did not report ready");
    let ready_at = started.elapsed();
    eprintln!(
        "{name}: {} ({:.1}s after QEMU started)",
        ready.line,
        ready_at.as_secs_f64()
    );
    from_start
        .wait_for("state is kept on /dev/vda3 (CLOUDOS-DATA)", line_timeout())
        .expect("the disk's data partition was not used");
    // After ready nodeos confirms the slot, or says why it cannot (a slot
    // booted by GRUB's fallback entry is not the active one).
    console
        .wait_for(
            re(&format!(
                "slot {slot} confirmed good|cannot confirm slot {slot}"
            )),
            line_timeout(),
        )
        .expect("nodeos said nothing about confirming the slot");
    let log = console.contents();
    let other = if slot == "a" { "b" } else { "a" };
    assert!(
        !log.contains(&format!("cloudos.slot={other}")),
        "slot {other} was booted too:\n{}",
        console.tail(60)
    );

    console.skip_to_end();
    poweroff_from_console(&vm, line_timeout());
    assert_powered_off(&vm, line_timeout());
    assert_no_panic(&vm);
    ready_at
}

/// A GUID as written on disk (first three fields little-endian), in text form.
fn guid(b: &[u8]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10..16]
            .iter()
            .map(|x| format!("{x:02X}"))
            .collect::<String>()
    )
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

fn read_at(file: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = fs::File::open(file).expect("opening the image");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).expect("read");
    buf
}

/// The template has the fixed layout the installer relies on (GPT, LBAs,
/// types, names, labels, GRUB in the MBR and p1, BOOTX64.EFI, grub.cfg, the
/// initial grubenv, empty slots), is sparse, and two builds of it are the
/// same bytes as the one in out/.
#[test]
fn template_has_the_fixed_layout_and_builds_reproducibly() {
    let image = template();
    let meta = fs::metadata(&image).expect("stat");
    assert_eq!(meta.len(), TOTAL_SECTORS * SECTOR, "image size");
    {
        use std::os::unix::fs::MetadataExt;
        assert!(
            meta.blocks() * 512 < 32 << 20,
            "the image is not sparse: {} bytes allocated",
            meta.blocks() * 512
        );
    }

    // LBA 0: GRUB's boot.img and a protective MBR.
    let mbr = read_at(&image, 0, 512);
    assert_eq!(&mbr[510..], &[0x55, 0xAA], "no MBR signature");
    assert_eq!(mbr[446 + 4], 0xEE, "no protective MBR entry");
    assert!(
        mbr[..440].windows(4).any(|w| w == b"GRUB"),
        "no GRUB boot code in the MBR"
    );
    // p1: core.img (diskboot.img starts with `push %dx; push %si`).
    let core = read_at(&image, BIOS_START * SECTOR, 512);
    assert_eq!(
        &core[..2],
        &[0x52, 0x56],
        "no GRUB core.img at LBA {BIOS_START}"
    );

    // The GPT, primary and backup.
    let header = read_at(&image, SECTOR, 512);
    assert_eq!(&header[..8], b"EFI PART", "no primary GPT header");
    assert_eq!(
        guid(&header[56..72]),
        "C10D0500-0000-4000-8000-00000000D15C",
        "disk GUID"
    );
    let backup = read_at(&image, (TOTAL_SECTORS - 1) * SECTOR, 512);
    assert_eq!(
        &backup[..8],
        b"EFI PART",
        "no backup GPT header at the last LBA"
    );
    let entries = read_at(&image, 2 * SECTOR, 4 * 128);
    let expected = [
        ("bios", TYPE_BIOS_BOOT, BIOS_START, BIOS_END),
        ("esp", TYPE_ESP, ESP_START, ESP_END),
        ("cloudos-data", TYPE_LINUX, DATA_START, DATA_END),
    ];
    for (i, (name, kind, first, last)) in expected.iter().enumerate() {
        let e = &entries[i * 128..(i + 1) * 128];
        let label: String = char::decode_utf16(
            e[56..128]
                .chunks(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&c| c != 0),
        )
        .map(|c| c.unwrap_or('?'))
        .collect();
        assert_eq!(
            (
                label.as_str(),
                guid(&e[0..16]).as_str(),
                le64(&e[32..]),
                le64(&e[40..])
            ),
            (*name, *kind, *first, *last),
            "partition {}",
            i + 1
        );
    }
    assert!(
        entries[3 * 128..].iter().all(|&b| b == 0),
        "a fourth partition"
    );

    // p2: FAT32 labelled CLOUDOS-ESP (label in the FAT32 boot sector at 0x47).
    let boot = read_at(&image, ESP_OFFSET, 512);
    assert_eq!(&boot[0x52..0x5A], b"FAT32   ", "the ESP is not FAT32");
    assert_eq!(&boot[0x47..0x52], b"CLOUDOS-ESP", "ESP label");
    let listing = String::from_utf8_lossy(&run(Command::new("mdir").args([
        "-/",
        "-b",
        "-i",
        &esp(&image),
        "::/",
    ])))
    .into_owned();
    for want in [
        "::/EFI/BOOT/BOOTX64.EFI",
        "::/boot/grub/grub.cfg",
        "::/boot/grub/grubenv",
        "::/boot/grub/i386-pc/normal.mod",
        "::/boot/grub/x86_64-efi/normal.mod",
        "::/slot-a/",
        "::/slot-b/",
    ] {
        assert!(
            listing.lines().any(|l| l == want),
            "{want} missing from the ESP:\n{listing}"
        );
    }
    assert!(
        !listing
            .lines()
            .any(|l| l.starts_with("::/slot-") && !l.ends_with('/')),
        "the template's slots are not empty:\n{listing}"
    );
    let scratch = tempfile::tempdir().expect("temp dir");
    let env = grubenv(&image, scratch.path());
    assert_eq!(
        env,
        BTreeMap::from([
            ("cloudos_good".to_string(), "0".to_string()),
            ("cloudos_slot".to_string(), "a".to_string()),
            ("cloudos_tries".to_string(), "3".to_string()),
        ]),
        "the template's grubenv"
    );

    // p3: ext4 labelled CLOUDOS-DATA with 4 KiB blocks.
    let sb = read_at(&image, DATA_START * SECTOR + 1024, 1024);
    assert_eq!(
        u16::from_le_bytes([sb[0x38], sb[0x39]]),
        0xEF53,
        "p3 is not ext4"
    );
    assert_eq!(&sb[0x78..0x78 + 12], b"CLOUDOS-DATA", "data label");
    assert_eq!(
        1024u32 << u32::from_le_bytes(sb[0x18..0x1C].try_into().unwrap()),
        4096,
        "block size"
    );

    // Two more builds, byte-identical to out/'s.
    let original = fs::read(&image).expect("reading the template");
    let script = artifacts::workspace_root().join("image/disk.sh");
    for n in 0..2 {
        let out = scratch.path().join(format!("rebuild-{n}.img"));
        run(Command::new(&script)
            .arg("--force")
            .arg("--output")
            .arg(&out));
        assert!(
            fs::read(&out).expect("reading the rebuild") == original,
            "rebuild {n} differs from {}",
            image.display()
        );
    }
}

/// The template with slot A filled boots from the disk alone on SeaBIOS and
/// then on OVMF (the same disk), GRUB passes cloudos.slot=a, nodeos keeps its
/// state on the disk's data partition. The first boot takes one of the slot's
/// tries (3 -> 2) in grubenv, written by GRUB itself (BIOS disk writes); once
/// ready, nodeos confirms the slot (cloudos_good=1), so the second boot
/// (UEFI) takes none.
#[test]
fn template_disk_boots_slot_a_on_bios_and_on_uefi() {
    let _guests = cloudos_tests::guests::reserve(1);
    let kernel = artifacts::kernel(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let initrd = artifacts::initramfs(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = copy_template(dir.path());
    fill_slot(&disk, "a", &kernel, &initrd);

    let bios = boot_slot(&disk, Firmware::Bios, "a", "disk-slot-a-bios");
    let env = grubenv(&disk, dir.path());
    assert_eq!(env_value(&env, "cloudos_slot"), "a", "{env:?}");
    assert_eq!(
        env_value(&env, "cloudos_tries"),
        "2",
        "GRUB did not count the first boot: {env:?}"
    );
    assert_eq!(
        env_value(&env, "cloudos_good"),
        "1",
        "nodeos did not confirm the slot it booted: {env:?}"
    );

    let uefi = boot_slot(&disk, Firmware::Uefi, "a", "disk-slot-a-uefi");
    let env = grubenv(&disk, dir.path());
    assert_eq!(env_value(&env, "cloudos_slot"), "a", "{env:?}");
    assert_eq!(
        env_value(&env, "cloudos_tries"),
        "2",
        "GRUB counted a boot of a confirmed slot: {env:?}"
    );
    eprintln!(
        "disk boots: SeaBIOS ready in {:.1}s, OVMF ready in {:.1}s",
        bios.as_secs_f64(),
        uefi.as_secs_f64()
    );
}

/// Slot A holds a kernel that cannot boot and is on its last try; slot B
/// holds the real one. First boot (OVMF): GRUB takes the last try, fails to
/// load A's kernel and falls back to B's menu entry without changing the
/// active slot (cloudos_tries=0). Second boot (SeaBIOS): A is out of tries,
/// so GRUB makes B, the last good slot, active for good (cloudos_slot=b,
/// cloudos_good=1) and boots it.
#[test]
fn an_unconfirmed_slot_falls_back_to_the_other_after_its_tries() {
    let _guests = cloudos_tests::guests::reserve(1);
    let kernel = artifacts::kernel(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let initrd = artifacts::initramfs(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = copy_template(dir.path());
    let garbage = dir.path().join("garbage");
    fs::write(&garbage, b"not a kernel\n".repeat(8192)).expect("writing garbage");
    fill_slot(&disk, "a", &garbage, &garbage);
    fill_slot(&disk, "b", &kernel, &initrd);
    set_grubenv(
        &disk,
        dir.path(),
        &[
            ("cloudos_slot", "a"),
            ("cloudos_tries", "1"),
            ("cloudos_good", "0"),
        ],
    );

    // Boot 1: the last try of slot A fails in GRUB; entry 1 (slot B) boots.
    let started = Instant::now();
    let vm = VmBuilder::new(Arch::X86_64)
        .name("disk-fallback-entry-uefi")
        .boot(BootSource::Disk(disk.clone()))
        .firmware(Firmware::Uefi)
        .spawn()
        .expect("starting QEMU");
    let console = vm.serial();
    console
        .wait_for("Booting `CloudOS (slot a)'", boot_timeout())
        .expect("GRUB did not try the active slot");
    expect_lines(
        console,
        line_timeout(),
        &[
            (
                "Falling back to `CloudOS (slot b, the other slot)'",
                "GRUB did not fall back to the other slot's entry",
            ),
            (
                "CloudOS: booting /slot-b/vmlinuz cloudos.slot=b",
                "GRUB did not load slot b's kernel",
            ),
        ],
    );
    console
        .wait_for(re(READY), boot_timeout())
        .expect("nodeos (slot b) did not report ready");
    let first = started.elapsed();
    poweroff_from_console(&vm, line_timeout());
    wait_poweroff_exit(&vm, line_timeout());
    assert_no_panic(&vm);
    drop(vm);
    let env = grubenv(&disk, dir.path());
    assert_eq!(
        (
            env_value(&env, "cloudos_slot"),
            env_value(&env, "cloudos_tries")
        ),
        ("a", "0"),
        "after the failed last try: {env:?}"
    );

    // Boot 2: out of tries: back to slot B for good.
    let second = boot_slot(&disk, Firmware::Bios, "b", "disk-fallback-slot-b-bios");
    let env = grubenv(&disk, dir.path());
    assert_eq!(env_value(&env, "cloudos_slot"), "b", "{env:?}");
    assert_eq!(env_value(&env, "cloudos_good"), "1", "{env:?}");
    eprintln!(
        "fallback: entry fall-back ready in {:.1}s, slot switch ready in {:.1}s",
        first.as_secs_f64(),
        second.as_secs_f64()
    );
}
