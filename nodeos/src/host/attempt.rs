//! The record of a host's upgrade (`/var/lib/cloudos/upgrade/host-attempt.json`): which
//! binary replaced which, and whether the new one passed its health check or was rolled
//! back and why. Written by the binary that installs (on trial), by the new one when it is
//! healthy (confirmed) and by whichever rolls back (rolled back, with the reason); read by
//! every start of `nodeos daemon` to say in its reports how the last upgrade went.
//!
//! The words of the reports are the appliance's (`upgrade::attempt`): the master and the
//! CLI follow a host's upgrade exactly as a slot upgrade. Nothing here touches a binary.

use std::path::Path;

use cloudos_cluster::api::{SystemReport, UpgradeReport, UpgradeState};
use serde::{Deserialize, Serialize};

/// What a host reports as its "slot": it has one binary and a previous one, not two slots.
pub const SLOT: &str = "host";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The new binary is in place and has not yet passed its health check.
    OnTrial,
    /// The new binary passed its health check; the previous one is kept all the same.
    Confirmed,
    /// The new binary did not become healthy; the previous one is back in place.
    RolledBack,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAttempt {
    /// The master's id of the request.
    pub id: String,
    pub from: String,
    pub to: String,
    pub state: Stage,
    /// Why the new binary was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the new binary took the place of the old one (microseconds since the epoch,
    /// systemd's unit of time).
    #[serde(default)]
    pub since_us: u64,
}

impl HostAttempt {
    /// Whether the binary running `running` is the new one on trial: it must pass its
    /// health check, and until it does the previous binary is the last known good one.
    pub fn on_trial_as(&self, running: &str) -> bool {
        self.state == Stage::OnTrial && self.to == running
    }

    /// Whether a failure of a process that started at `started_us` (systemd's
    /// `ExecMainStartTimestamp`; 0 when unknown) was the old binary's, before the swap.
    pub fn failed_before_swap(&self, started_us: u64) -> bool {
        started_us != 0 && started_us < self.since_us
    }

    /// The attempt after a roll-back for `why`.
    pub fn rolled_back(mut self, why: &str) -> HostAttempt {
        self.state = Stage::RolledBack;
        self.reason = Some(why.to_owned());
        self
    }
}

/// The time now as [`HostAttempt::since_us`] counts it.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

pub fn read(path: &Path) -> Option<HostAttempt> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Synced and renamed into place: a restart follows at once.
pub fn write(path: &Path, attempt: &HostAttempt) -> std::io::Result<()> {
    crate::upgrade::attempt::write(path, attempt)
}

/// What the binary running `running` says of itself: `confirmed` is whether it passed its
/// health check since it started.
pub fn report(running: &str, confirmed: bool, attempt: Option<&HostAttempt>) -> SystemReport {
    let upgrade = attempt.map(|a| {
        let (state, reason) = match a.state {
            Stage::Confirmed if a.to == running => (UpgradeState::Done, None),
            // The health check is under way (the appliance's word for a slot on trial).
            Stage::OnTrial if a.to == running => (UpgradeState::Rebooting, None),
            _ => {
                let why = a.reason.clone().unwrap_or_else(|| {
                    format!(
                        "nodeos {} did not take over (it never reported healthy)",
                        a.to
                    )
                });
                (
                    UpgradeState::FellBack,
                    Some(format!("{why}; the node went back to nodeos {}", a.from)),
                )
            }
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
        slot: Some(SLOT.to_owned()),
        confirmed,
        upgrade,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(state: Stage) -> HostAttempt {
        HostAttempt {
            id: "u-1".into(),
            from: "0.1.0".into(),
            to: "0.2.0".into(),
            state,
            reason: None,
            since_us: 1_000,
        }
    }

    #[test]
    fn only_a_failure_after_the_swap_counts_against_the_new_binary() {
        let a = attempt(Stage::OnTrial);
        // The old binary, started long before, timed out while it stopped.
        assert!(a.failed_before_swap(10));
        assert!(!a.failed_before_swap(2_000));
        // Unknown: assume the new binary failed (it is the one on trial).
        assert!(!a.failed_before_swap(0));
        assert!(now_us() > 1_000);
    }

    fn state(running: &str, a: &HostAttempt) -> (UpgradeState, Option<String>) {
        let u = report(running, true, Some(a)).upgrade.unwrap();
        (u.state, u.reason)
    }

    #[test]
    fn the_new_binary_is_on_trial_until_healthy_then_done() {
        let a = attempt(Stage::OnTrial);
        assert!(a.on_trial_as("0.2.0"));
        assert!(!a.on_trial_as("0.1.0"));
        assert_eq!(state("0.2.0", &a).0, UpgradeState::Rebooting);
        let done = attempt(Stage::Confirmed);
        assert!(!done.on_trial_as("0.2.0"));
        assert_eq!(state("0.2.0", &done), (UpgradeState::Done, None));
        let r = report("0.2.0", false, None);
        assert_eq!((r.slot.as_deref(), r.confirmed), (Some("host"), false));
        assert_eq!(r.upgrade, None);
    }

    #[test]
    fn the_previous_binary_after_a_roll_back_says_why() {
        let a = attempt(Stage::OnTrial).rolled_back("cloudos-node.service failed (exit-code)");
        let (s, reason) = state("0.1.0", &a);
        assert_eq!(s, UpgradeState::FellBack);
        let reason = reason.unwrap();
        assert!(
            reason.starts_with("cloudos-node.service failed"),
            "{reason}"
        );
        assert!(reason.ends_with("back to nodeos 0.1.0"), "{reason}");
        // Still on trial but the old binary runs: the new one never got to say anything.
        let (s, reason) = state("0.1.0", &attempt(Stage::OnTrial));
        assert_eq!(s, UpgradeState::FellBack);
        assert!(reason.unwrap().contains("never reported healthy"));
    }

    #[test]
    fn the_record_survives_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upgrade/host-attempt.json");
        let a = attempt(Stage::OnTrial).rolled_back("why");
        write(&path, &a).unwrap();
        assert_eq!(read(&path), Some(a));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"rolled_back\""), "{text}");
    }
}
