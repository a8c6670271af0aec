//! What the install tests do and check the way a person would: keys typed on the
//! installer's console (menus picked by what they say, not by position), a blank target
//! disk and its first bytes, a config stick with an answer file, and a console free of
//! kernel panics.
//!
//! The wizard is dialoguer on the live system's serial console: a menu is drawn once as
//! a prompt line and one line per item, the active one marked `>`; arrow keys move, Enter
//! picks. Nothing here knows the wizard's order of questions: the tests say it.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{artifacts, scaled, Arch, BootSource, TestNet, Vm, VmBuilder};

pub const UP: &[u8] = b"\x1b[A";
pub const DOWN: &[u8] = b"\x1b[B";
pub const ENTER: &[u8] = b"\r";

/// How long one wizard step may take to appear (a question, a menu), under TCG.
pub fn step() -> Duration {
    scaled(Duration::from_secs(90))
}

/// Writing the disk template and growing ext4 to 8 GiB, under TCG.
pub fn install_timeout() -> Duration {
    scaled(Duration::from_secs(600))
}

/// What every console terminal shows before the wizard starts (nodeos's
/// `diskinstall::terminal::PRESS_ENTER`): it runs where Enter is pressed first.
pub const PRESS_ENTER: &str = "Press Enter to start the CloudOS installer on this console.";

/// Presses Enter on the serial line when asked, so the wizard runs there (the live
/// system has the screen as a console too).
pub fn start_the_wizard_here(vm: &Vm) {
    answer(vm, PRESS_ENTER, ENTER);
}

/// Waits for `prompt` on the console, then types `keys` as a person would.
pub fn answer(vm: &Vm, prompt: &str, keys: &[u8]) {
    vm.serial()
        .wait_for(prompt, step())
        .unwrap_or_else(|e| panic!("the wizard did not ask {prompt:?}: {e}"));
    // Let the prompt finish drawing and read its first key.
    std::thread::sleep(Duration::from_secs(1));
    vm.serial().send(keys).expect("typing on the console");
}

/// The items of the menu drawn after the console's cursor, in order, and which one is
/// active: lines starting `> ` (active) or two spaces, up to the next line that is
/// neither. Log lines PID 1 writes meanwhile (`[  12.3] INFO …`) are skipped.
pub fn menu_items(drawn: &str) -> (Vec<String>, Option<usize>) {
    let mut items = Vec::new();
    let mut active = None;
    // The first line is the rest of the prompt's own line.
    for line in drawn.lines().skip(1) {
        let line = line.trim_end();
        if let Some(item) = line.strip_prefix("> ") {
            active = Some(items.len());
            items.push(item.trim().to_owned());
        } else if let Some(item) = line.strip_prefix("  ") {
            items.push(item.trim().to_owned());
        } else if line.starts_with('[') {
            continue;
        } else if !items.is_empty() {
            break;
        }
    }
    (items, active)
}

/// Waits for the menu `prompt`, then moves to the first item that contains one of
/// `wanted` (tried in order: the first is what the person came for, the rest are what
/// they settle for) and picks it. Returns which of `wanted` was picked and every item
/// the menu showed.
pub fn choose_any(vm: &Vm, prompt: &str, wanted: &[&str]) -> (usize, Vec<String>) {
    let console = vm.serial();
    console
        .wait_for(prompt, step())
        .unwrap_or_else(|e| panic!("the wizard did not ask {prompt:?}: {e}"));
    // Whole items only: wait until the menu's lines have stopped coming.
    let mut drawn = String::new();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(500));
        let now = console.contents()[console.position()..].to_owned();
        if now == drawn && menu_items(&now).1.is_some() {
            break;
        }
        drawn = now;
    }
    let (items, active) = menu_items(&drawn);
    let active =
        active.unwrap_or_else(|| panic!("no active item in the {prompt:?} menu: {drawn:?}"));
    let (which, target) = wanted
        .iter()
        .enumerate()
        .find_map(|(n, w)| items.iter().position(|i| i.contains(w)).map(|t| (n, t)))
        .unwrap_or_else(|| {
            panic!("none of {wanted:?} in the {prompt:?} menu, which shows {items:#?}")
        });
    let (key, times) = if target >= active {
        (DOWN, target - active)
    } else {
        (UP, active - target)
    };
    // One key per write: an escape sequence split by the guest's read reads as Esc.
    for _ in 0..times {
        console.send(key).expect("typing on the console");
        std::thread::sleep(Duration::from_millis(200));
    }
    console.send(ENTER).expect("typing on the console");
    (which, items)
}

/// Picks the item of menu `prompt` that contains `wanted`; returns the items shown.
pub fn choose(vm: &Vm, prompt: &str, wanted: &str) -> Vec<String> {
    choose_any(vm, prompt, &[wanted]).1
}

/// A blank (all zeros, sparse) disk of `size` bytes named `name` in `dir`.
pub fn blank_disk(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    fs::File::create(&path)
        .and_then(|f| f.set_len(size))
        .expect("creating the blank disk");
    path
}

/// A small FAT disk labelled CLOUDOS-CFG holding `/install.toml`, as a person would
/// prepare a USB stick for an unattended install (`dir/cfg.img`).
pub fn config_disk(dir: &Path, answers: &str) -> PathBuf {
    let image = dir.join("cfg.img");
    let _ = fs::remove_file(&image);
    run(Command::new("mkfs.vfat")
        .args(["-n", "CLOUDOS-CFG", "-C"])
        .arg(&image)
        .arg("8192"));
    let file = dir.join("install.toml");
    fs::write(&file, answers).expect("writing install.toml");
    run(Command::new("mcopy")
        .arg("-i")
        .arg(&image)
        .arg(&file)
        .arg("::/install.toml"));
    image
}

fn run(cmd: &mut Command) {
    let what = format!("{cmd:?}");
    let out = cmd
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e} (dosfstools and mtools installed?)"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The first `len` bytes of a disk image.
pub fn first_bytes(path: &Path, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading the disk");
    buf
}

/// No kernel panic, no dead init and no Rust panic anywhere on the console so far.
pub fn assert_no_panic(vm: &Vm) {
    assert_none_on_console(
        vm,
        &["Kernel panic", "Attempted to kill init", "panicked at"],
    );
}

/// No kernel panic and no dead init on the console so far; for a test that makes a
/// service panic on purpose.
pub fn assert_no_kernel_panic(vm: &Vm) {
    assert_none_on_console(vm, &["Kernel panic", "Attempted to kill init"]);
}

fn assert_none_on_console(vm: &Vm, bad_lines: &[&str]) {
    let console = vm.serial().contents();
    for bad in bad_lines {
        assert!(
            !console.contains(bad),
            "{bad:?} on the console:\n{}",
            vm.serial().tail(60)
        );
    }
}

/// The x86_64 live ISO on a CD with the target disk and a config disk ([`config_disk`]),
/// on the test LAN with `mac` when given; QEMU exits on the installer's reboot.
pub fn install_vm(name: &str, target: &Path, cfg: &Path, lan: Option<(&TestNet, &str)>) -> Vm {
    let iso = artifacts::iso(Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    let mut builder = VmBuilder::new(Arch::X86_64)
        .name(name)
        .memory_mb(768)
        .boot(BootSource::Cdrom(iso))
        .disk(target.to_path_buf())
        .disk(cfg.to_path_buf());
    if let Some((net, mac)) = lan {
        builder = builder.network(net.vm_network_with_mac(mac).expect("tap"));
    }
    builder.spawn().expect("starting QEMU")
}

#[cfg(test)]
mod tests {
    use super::menu_items;

    #[test]
    fn a_menu_is_read_from_its_first_drawing() {
        let drawn = "? Which master should this node join? >\n\
                     > cloudos lab m1  10.77.0.2:9443  cluster lab  CA pin 0123...\n\
                     [    9.100] INFO  devices: loaded cdrom for a device found at boot\n\
                     \x20 Type the master's address\n\
                     \x20 Look again\n\
                     more text\n\
                     \x20 not an item\n";
        let (items, active) = menu_items(drawn);
        assert_eq!(
            items,
            [
                "cloudos lab m1  10.77.0.2:9443  cluster lab  CA pin 0123...",
                "Type the master's address",
                "Look again"
            ]
        );
        assert_eq!(active, Some(0));

        let (items, active) = menu_items("? Network >\n  DHCP\n> Static\n");
        assert_eq!((items.len(), active), (2, Some(1)));
        assert_eq!(menu_items("? Network >\n").1, None);
    }
}
