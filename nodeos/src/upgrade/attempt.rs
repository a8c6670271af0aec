//! The record of an upgrade in flight, on the data partition, so that the system that boots
//! next, the new one or the old one after a fall-back, can say how it went.
//!
//! Written by the old system once the new slot is in place (`nodeos::upgrade::node`); read
//! by whichever system runs afterwards to fill the node's [`SystemReport`]; the new system
//! adds its reason when it gives up on itself. Nothing here decides anything.

use std::path::{Path, PathBuf};

use cloudos_cluster::api::{SystemReport, UpgradeReport, UpgradeState};
use serde::{Deserialize, Serialize};

use crate::settings::Slot;

pub const FILE: &str = "/var/lib/cloudos/upgrade/attempt.json";
/// Written by PID 1 once it confirmed the booted slot (tmpfs: gone at the next boot).
pub const CONFIRMED_MARK: &str = "/run/cloudos/slot-confirmed";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The master's id of the request.
    #[serde(default)]
    pub id: String,
    pub from: String,
    pub from_slot: String,
    pub to: String,
    pub to_slot: String,
    /// Why the new system gave up on itself, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

pub fn read(path: &Path) -> Option<Attempt> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Written through a temporary file and a rename, and synced: it must survive the reboot
/// that follows at once.
pub fn write(path: &Path, attempt: &impl Serialize) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let bytes = serde_json::to_vec_pretty(attempt).map_err(std::io::Error::other)?;
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// What this boot says of its slot and of the last upgrade.
pub fn report(booted: Slot, confirmed: bool, attempt: Option<&Attempt>) -> SystemReport {
    let upgrade = attempt.map(|a| {
        let (state, reason) = if a.to_slot == booted.as_str() {
            if confirmed {
                (UpgradeState::Done, None)
            } else {
                (UpgradeState::Rebooting, None)
            }
        } else {
            let why = a.reason.clone().unwrap_or_else(|| {
                format!(
                    "slot {} with {} never came up healthy (no report from it: it may not have \
                     booted at all)",
                    a.to_slot, a.to
                )
            });
            (
                UpgradeState::FellBack,
                Some(format!(
                    "{why}; the node went back to slot {} with {}",
                    a.from_slot, a.from
                )),
            )
        };
        UpgradeReport {
            id: a.id.clone(),
            version: a.to.clone(),
            from: a.from.clone(),
            state,
            reason,
        }
    });
    SystemReport {
        slot: Some(booted.as_str().to_owned()),
        confirmed,
        upgrade,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(reason: Option<&str>) -> Attempt {
        Attempt {
            id: "u-1".into(),
            from: "0.1.0".into(),
            from_slot: "a".into(),
            to: "0.2.0".into(),
            to_slot: "b".into(),
            reason: reason.map(str::to_owned),
        }
    }

    #[test]
    fn the_new_slot_reports_done_once_confirmed() {
        let a = attempt(None);
        let r = report(Slot::B, false, Some(&a));
        assert_eq!(r.upgrade.as_ref().unwrap().state, UpgradeState::Rebooting);
        let r = report(Slot::B, true, Some(&a));
        assert_eq!(r.upgrade.as_ref().unwrap().state, UpgradeState::Done);
        assert_eq!(r.slot.as_deref(), Some("b"));
    }

    #[test]
    fn the_old_slot_after_a_fall_back_says_why() {
        let given = attempt(Some("services agent not ready after 60s"));
        let r = report(Slot::A, true, Some(&given));
        let u = r.upgrade.unwrap();
        assert_eq!(u.state, UpgradeState::FellBack);
        let reason = u.reason.unwrap();
        assert!(reason.contains("agent not ready"), "{reason}");
        assert!(reason.contains("back to slot a with 0.1.0"), "{reason}");
        // A new system that never ran nodeos (a kernel panic) wrote nothing.
        let silent = report(Slot::A, true, Some(&attempt(None)));
        assert!(silent
            .upgrade
            .unwrap()
            .reason
            .unwrap()
            .contains("never came up"));
    }

    #[test]
    fn the_record_survives_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upgrade/attempt.json");
        write(&path, &attempt(None)).unwrap();
        assert_eq!(read(&path), Some(attempt(None)));
        assert_eq!(read(&dir.path().join("missing")), None);
    }
}
