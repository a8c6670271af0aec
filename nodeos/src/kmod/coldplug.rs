//! Coldplug: load the modules for the devices that exist at boot.
//!
//! Loading a driver can make new devices appear (the ACPI button driver makes
//! an input device that wants `evdev`; a USB host controller makes USB
//! devices), so the walk repeats until a pass loads nothing new.

use std::path::Path;

use super::Loader;

/// The longest chain of "driver makes device" we follow at boot.
const MAX_PASSES: usize = 6;

#[derive(Debug, Default)]
pub struct ColdplugReport {
    pub loaded: Vec<String>,
    pub failures: Vec<String>,
}

pub fn coldplug(loader: &Loader, sys_devices: &Path) -> ColdplugReport {
    let mut report = ColdplugReport::default();
    for _ in 0..MAX_PASSES {
        let mut aliases = Vec::new();
        collect_modaliases(sys_devices, &mut aliases, 0);
        aliases.sort();
        aliases.dedup();
        let before = report.loaded.len();
        // One thread per device: a driver's init probes its hardware and
        // often sleeps doing so (ATA resets, PHY negotiation), so loading in
        // parallel overlaps those waits. A module two devices share is loaded
        // once: the kernel makes the second finit_module wait, then EEXIST.
        let wanted: Vec<String> = aliases
            .into_iter()
            .filter(|a| !loader.index().lookup(a).is_empty())
            .collect();
        let results: Vec<(String, Result<Vec<String>, super::loader::LoadError>)> =
            std::thread::scope(|scope| {
                let handles: Vec<_> = wanted
                    .iter()
                    .map(|alias| scope.spawn(move || (alias.clone(), loader.load_for_alias(alias))))
                    .collect();
                handles.into_iter().filter_map(|h| h.join().ok()).collect()
            });
        for (alias, result) in results {
            match result {
                Ok(newly) => report.loaded.extend(newly),
                Err(e) => {
                    let line = format!("{alias}: {e}");
                    if !report.failures.contains(&line) {
                        report.failures.push(line);
                    }
                }
            }
        }
        if report.loaded.len() == before {
            // Some drivers probe asynchronously; one settle round is enough in practice.
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    report
}

/// Depth-first walk of /sys/devices that does not follow symlinks (sysfs is
/// full of cycles through them).
fn collect_modaliases(dir: &Path, out: &mut Vec<String>, depth: usize) {
    if depth > 24 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            collect_modaliases(&entry.path(), out, depth + 1);
        } else if kind.is_file() && entry.file_name() == "modalias" {
            if let Ok(text) = std::fs::read_to_string(entry.path()) {
                let alias = text.trim();
                if !alias.is_empty() {
                    out.push(alias.to_string());
                }
            }
        }
    }
}
