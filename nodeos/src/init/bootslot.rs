//! Confirms the system slot GRUB booted, once the node is healthy.
//!
//! The installed disk's grub.cfg (image/grub-disk.cfg) counts boots of a slot
//! that is not yet confirmed (`cloudos_tries`) and falls back to the other slot
//! when they run out. nodeos ends the count by setting `cloudos_good=1` in GRUB's
//! environment block, /boot/grub/grubenv on the ESP (FAT, labelled CLOUDOS-ESP).
//!
//! The block is rewritten in place at the same length: GRUB's own `save_env`
//! overwrites the file's existing sectors and could not follow a file that was
//! replaced by a rename. Only a slot that matches `cloudos_slot` is confirmed, so a
//! boot of the other slot by hand from the menu never confirms the wrong one.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use nix::mount::{mount, umount, MsFlags};

use crate::settings::Slot;
use crate::upgrade::grubenv::{GrubEnv, SIZE as GRUBENV_SIZE};

pub const ESP_LABEL: &str = "CLOUDOS-ESP";
const ESP_MOUNT: &str = "/run/cloudos/esp";
use crate::upgrade::slot::GRUBENV;

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("no partition labelled {ESP_LABEL}")]
    NoEsp,
    #[error("mounting {device} at {ESP_MOUNT}: {source}")]
    Mount { device: String, source: nix::Error },
    #[error("{action} {ESP_MOUNT}/{GRUBENV}: {source}")]
    Io {
        action: &'static str,
        source: std::io::Error,
    },
    #[error("{ESP_MOUNT}/{GRUBENV}: {0}")]
    Env(String),
}

/// What confirming did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmed {
    /// `cloudos_good` went from 0 to 1.
    Now,
    /// It was 1 already.
    Already,
}

/// The environment block with `cloudos_good=1`, same length, or why not:
/// not a GRUB environment block, another slot active, no `cloudos_good` entry.
pub fn confirm_env(block: &[u8], booted: Slot) -> Result<Option<Vec<u8>>, String> {
    let mut env = GrubEnv::parse(block).map_err(|e| e.to_string())?;
    match env.get("cloudos_slot") {
        Some(active) if active == booted.as_str() => {}
        Some(active) => {
            return Err(format!(
                "slot {active} is the active one, this boot is slot {}",
                booted.as_str()
            ))
        }
        None => return Err("no cloudos_slot in it".into()),
    }
    match env.get("cloudos_good") {
        Some("1") => Ok(None),
        Some("0") => {
            env.set("cloudos_good", "1").map_err(|e| e.to_string())?;
            env.render().map(Some).map_err(|e| e.to_string())
        }
        other => Err(format!("cloudos_good is {other:?}, not 0 or 1")),
    }
}

/// The ESP mounted at [`ESP_MOUNT`] for as long as this lives. One at a time: the confirm,
/// an upgrade's writes and the master's offer of its release (upgrade/offer.rs) all mount it
/// there, and a second mount of the device at the same place is refused (EBUSY); the next
/// one waits for this to unmount.
pub struct EspMount {
    _turn: MutexGuard<'static, ()>,
}

static ESP_TURN: Mutex<()> = Mutex::new(());
/// How often, and how far apart, a confirmation is tried.
const CONFIRM_TRIES: u32 = 5;
const CONFIRM_RETRY: std::time::Duration = std::time::Duration::from_secs(3);

impl EspMount {
    pub fn path(&self) -> &Path {
        Path::new(ESP_MOUNT)
    }
}

impl Drop for EspMount {
    fn drop(&mut self) {
        if let Err(e) = umount(ESP_MOUNT) {
            log::warn!("cannot unmount {ESP_MOUNT}: {e}");
        }
    }
}

/// Mounts the installed disk's ESP (found by its label).
pub fn mount_esp() -> Result<EspMount, SlotError> {
    let turn = ESP_TURN.lock().unwrap_or_else(|e| e.into_inner());
    let device = crate::blockdev::labels::find_vfat_labelled(ESP_LABEL).ok_or(SlotError::NoEsp)?;
    std::fs::create_dir_all(ESP_MOUNT).map_err(|source| SlotError::Io {
        action: "creating",
        source,
    })?;
    mount(
        Some(device.as_str()),
        ESP_MOUNT,
        Some("vfat"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|source| SlotError::Mount {
        device: device.clone(),
        source,
    })?;
    Ok(EspMount { _turn: turn })
}

/// Confirms `booted` in the ESP's grubenv. Mounts the ESP for the time it takes.
pub fn confirm(booted: Slot) -> Result<Confirmed, SlotError> {
    let esp = mount_esp()?;
    rewrite(&esp.path().join(GRUBENV), booted)
}

fn rewrite(path: &Path, booted: Slot) -> Result<Confirmed, SlotError> {
    let io = |action| move |source| SlotError::Io { action, source };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io("opening"))?;
    let mut block = Vec::with_capacity(GRUBENV_SIZE);
    file.read_to_end(&mut block).map_err(io("reading"))?;
    match confirm_env(&block, booted).map_err(SlotError::Env)? {
        None => Ok(Confirmed::Already),
        Some(updated) => {
            // In place: no truncate, no rename (see the module comment).
            file.seek(SeekFrom::Start(0))
                .and_then(|_| file.write_all(&updated))
                .and_then(|_| file.sync_all())
                .map_err(io("writing"))?;
            Ok(Confirmed::Now)
        }
    }
}

/// Confirms the booted slot if there is one (an installed disk) and logs what happened.
pub fn confirm_and_log(slot: Option<Slot>) {
    let Some(slot) = slot else { return };
    // A slot left unconfirmed after a healthy boot would be counted down and given up at
    // the next reboots: a passing failure (a busy device, a slow disk) is tried again.
    let mut result = confirm(slot);
    for _ in 1..CONFIRM_TRIES {
        let Err(e) = &result else { break };
        log::warn!(
            "cannot confirm slot {} yet ({e}); trying again",
            slot.as_str()
        );
        std::thread::sleep(CONFIRM_RETRY);
        result = confirm(slot);
    }
    match result {
        Ok(how) => {
            match how {
                Confirmed::Now => log::info!("slot {} confirmed good", slot.as_str()),
                Confirmed::Already => log::info!("slot {} confirmed good already", slot.as_str()),
            }
            // For the agent's report (`upgrade::node::report_hook`): reading a file is cheap,
            // mounting the ESP at every heartbeat is not.
            if let Err(e) = std::fs::write(crate::upgrade::attempt::CONFIRMED_MARK, slot.as_str()) {
                log::warn!("cannot note the confirmation: {e}");
            }
        }
        Err(e) => log::warn!("cannot confirm slot {}: {e}", slot.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(vars: &str) -> Vec<u8> {
        let mut b = format!("# GRUB Environment Block\n{vars}").into_bytes();
        b.resize(GRUBENV_SIZE, b'#');
        b
    }

    #[test]
    fn an_unconfirmed_active_slot_is_confirmed_in_place() {
        let before = block("cloudos_slot=a\ncloudos_tries=2\ncloudos_good=0\n");
        let after = confirm_env(&before, Slot::A).unwrap().expect("a change");
        assert_eq!(after.len(), GRUBENV_SIZE);
        assert_eq!(
            after,
            block("cloudos_slot=a\ncloudos_tries=2\ncloudos_good=1\n")
        );
    }

    #[test]
    fn a_confirmed_slot_is_left_alone() {
        let b = block("cloudos_slot=b\ncloudos_good=1\ncloudos_tries=3\n");
        assert_eq!(confirm_env(&b, Slot::B), Ok(None));
    }

    #[test]
    fn the_other_slot_and_broken_blocks_are_refused() {
        let b = block("cloudos_slot=a\ncloudos_tries=2\ncloudos_good=0\n");
        assert!(confirm_env(&b, Slot::B)
            .unwrap_err()
            .contains("slot a is the active"));
        assert!(confirm_env(&b[..100], Slot::A).is_err());
        assert!(confirm_env(&block("cloudos_good=0\n"), Slot::A)
            .unwrap_err()
            .contains("no cloudos_slot"));
        let odd = block("cloudos_slot=a\ncloudos_good=7\n");
        assert!(confirm_env(&odd, Slot::A)
            .unwrap_err()
            .contains("not 0 or 1"));
    }
}
