//! The power service: the ACPI power button (QEMU's `system_powerdown`, a
//! real machine's button) arrives as KEY_POWER on an input device; on a press
//! we ask PID 1 for an orderly poweroff with SIGTERM.

use std::collections::HashSet;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// struct input_event on 64-bit Linux: timeval (16), type (2), code (2), value (4).
const EVENT_SIZE: usize = 24;

pub fn run() -> anyhow::Result<()> {
    let mut watched: HashSet<PathBuf> = HashSet::new();
    crate::supervisor::ready::report();
    // Input devices come and go (the button driver may load after us), so
    // look for new ones now and then; each device gets a reader thread.
    loop {
        if let Ok(entries) = std::fs::read_dir("/dev/input") {
            for entry in entries.flatten() {
                let path = entry.path();
                let is_event = entry.file_name().to_string_lossy().starts_with("event");
                if is_event && watched.insert(path.clone()) {
                    std::thread::spawn(move || watch_device(path));
                }
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn watch_device(path: PathBuf) {
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            log::debug!("cannot open {}: {e}", path.display());
            return;
        }
    };
    log::debug!("watching {} for the power button", path.display());
    let mut event = [0u8; EVENT_SIZE];
    while file.read_exact(&mut event).is_ok() {
        if is_power_press(&event) {
            log::info!("power button pressed; asking for an orderly poweroff");
            if let Err(e) = kill(Pid::from_raw(1), Signal::SIGTERM) {
                log::error!("cannot signal PID 1: {e}");
            }
        }
    }
}

fn is_power_press(event: &[u8; EVENT_SIZE]) -> bool {
    let kind = u16::from_ne_bytes([event[16], event[17]]);
    let code = u16::from_ne_bytes([event[18], event[19]]);
    let value = i32::from_ne_bytes([event[20], event[21], event[22], event[23]]);
    kind == EV_KEY && code == KEY_POWER && value == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> [u8; EVENT_SIZE] {
        let mut e = [0u8; EVENT_SIZE];
        e[16..18].copy_from_slice(&kind.to_ne_bytes());
        e[18..20].copy_from_slice(&code.to_ne_bytes());
        e[20..24].copy_from_slice(&value.to_ne_bytes());
        e
    }

    #[test]
    fn only_a_power_key_press_counts() {
        assert!(is_power_press(&event(EV_KEY, KEY_POWER, 1)));
        assert!(!is_power_press(&event(EV_KEY, KEY_POWER, 0)), "release");
        assert!(!is_power_press(&event(EV_KEY, 30, 1)), "KEY_A");
        assert!(!is_power_press(&event(0, 0, 0)), "EV_SYN");
    }
}
