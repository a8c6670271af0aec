//! The OS's side of an upgrade on an installed disk, as hooks the agent calls
//! (`cloudos_agent::InstallRelease`, `SystemReporter`) and as PID 1's fall-back when the
//! slot on trial does not become healthy.

use std::path::Path;
use std::sync::Arc;

use cloudos_release::policy::Intent;

use super::attempt::{self, Attempt};
use super::slot::{self, SlotError};
use crate::init::bootslot;
use crate::init::shutdown::{ask_pid1, ShutdownKind};
use crate::settings::Slot;

/// Checks the bundle at the path, writes it into the inactive slot, records the attempt
/// and asks PID 1 for an orderly reboot (SIGINT).
pub fn install_hook(booted: Slot) -> cloudos_agent::InstallRelease {
    Arc::new(move |bundle: &Path, allow_downgrade: bool, id: &str| {
        let intent = if allow_downgrade {
            Intent::Force
        } else {
            Intent::Upgrade
        };
        let running = cloudos_release::version();
        let file =
            std::fs::File::open(bundle).map_err(|e| format!("cannot open the bundle: {e}"))?;
        let esp =
            bootslot::mount_esp().map_err(|e| format!("cannot reach the boot partition: {e}"))?;
        let written = slot::write_inactive(
            esp.path(),
            booted,
            std::io::BufReader::new(file),
            &cloudos_release::trusted(),
            running,
            intent,
        )
        .map_err(|e: SlotError| e.to_string())?;
        drop(esp);
        let record = Attempt {
            id: id.to_owned(),
            from: running.to_string(),
            from_slot: booted.as_str().to_owned(),
            to: written.version.to_string(),
            to_slot: written.slot.as_str().to_owned(),
            reason: None,
        };
        if let Err(e) = attempt::write(Path::new(attempt::FILE), &record) {
            // The upgrade goes on: only the report after a fall-back loses its detail.
            log::warn!("cannot record the upgrade attempt: {e}");
        }
        log::info!(
            "release {} written to slot {} ({} bytes); rebooting into it",
            written.version,
            written.slot.as_str(),
            written.bytes
        );
        ask_pid1(ShutdownKind::Reboot).map_err(|e| format!("cannot ask for a reboot: {e}"))
    })
}

/// Switches to the other slot (`cloudos node rollback`): points GRUB at it on trial,
/// records the switch like an upgrade (so that the reports after the reboot say whether
/// it came up), and asks PID 1 for an orderly reboot.
pub fn switch_hook(booted: Slot) -> cloudos_agent::SwitchSlot {
    Arc::new(move |id: &str| switch_slot(booted, id))
}

/// [`switch_hook`]'s work; the master's own rollback calls it too.
pub fn switch_slot(booted: Slot, id: &str) -> Result<String, String> {
    let esp = bootslot::mount_esp().map_err(|e| format!("cannot reach the boot partition: {e}"))?;
    let target = slot::other(booted);
    let version = slot::slot_version(esp.path(), target)
        .unwrap_or_else(|| format!("the system in slot {}", target.as_str()));
    // Recorded first: a reboot that comes back on the old slot must report why.
    let record = Attempt {
        id: id.to_owned(),
        from: cloudos_release::version().to_string(),
        from_slot: booted.as_str().to_owned(),
        to: version.clone(),
        to_slot: target.as_str().to_owned(),
        reason: None,
    };
    attempt::write(Path::new(attempt::FILE), &record)
        .map_err(|e| format!("cannot record the rollback: {e}"))?;
    let switched = slot::switch_to_other(esp.path(), booted).map_err(|e| e.to_string());
    drop(esp);
    if let Err(e) = switched {
        // Nothing changed on the ESP: the record must not claim a switch.
        let _ = std::fs::remove_file(attempt::FILE);
        return Err(e);
    }
    log::info!(
        "rolling back: slot {} ({version}) is tried at the next boot; rebooting",
        target.as_str()
    );
    ask_pid1(ShutdownKind::Reboot).map_err(|e| format!("cannot ask for a reboot: {e}"))?;
    Ok(version)
}

/// The booted slot, whether it is confirmed, and the last upgrade: read from small files at
/// each heartbeat, never from the ESP.
pub fn report_hook(booted: Slot) -> cloudos_agent::SystemReporter {
    Arc::new(move || {
        let confirmed = Path::new(attempt::CONFIRMED_MARK).exists();
        let last = attempt::read(Path::new(attempt::FILE));
        Some(attempt::report(booted, confirmed, last.as_ref()))
    })
}

/// PID 1, when the services are not ready in time on a slot that is on trial: say why in
/// the attempt record, use up the slot's tries, and reboot, so that GRUB goes back to the
/// other slot at once instead of after three slow boots. Returns whether it gave up (the
/// caller reboots); a slot that is confirmed, or whose other slot is empty, stays.
pub fn give_up_if_on_trial(booted: Slot, why: &str) -> bool {
    let esp = match bootslot::mount_esp() {
        Ok(esp) => esp,
        Err(e) => {
            log::warn!("cannot look at the boot partition: {e}");
            return false;
        }
    };
    let mut env = match slot::read_env(esp.path()) {
        Ok(env) => env,
        Err(e) => {
            log::warn!("cannot read GRUB's environment: {e}");
            return false;
        }
    };
    let other = slot::slot_dir(esp.path(), slot::other(booted));
    let on_trial = env.get("cloudos_good") != Some("1")
        && env.get("cloudos_slot") == Some(booted.as_str())
        && other.join("vmlinuz").exists()
        && other.join("initramfs.img").exists();
    if !on_trial {
        return false;
    }
    let path = Path::new(attempt::FILE);
    if let Some(mut record) = attempt::read(path) {
        record.reason = Some(why.to_owned());
        if let Err(e) = attempt::write(path, &record) {
            log::warn!("cannot record why the upgrade failed: {e}");
        }
    }
    if let Err(e) = env
        .set("cloudos_tries", "0")
        .map_err(SlotError::from)
        .and_then(|()| slot::write_env(esp.path(), &env))
    {
        log::warn!("cannot end slot {}'s trial: {e}", booted.as_str());
        return false;
    }
    log::error!(
        "slot {} is on trial and {why}: going back to slot {}",
        booted.as_str(),
        slot::other(booted).as_str()
    );
    true
}
