//! A service's revisions and its updates (decision 63).
//!
//! Every spec a service is deployed with is a *revision*, numbered from 1. Deploying a
//! new spec on an existing service starts an *update*: its replicas are replaced a few at
//! a time, as its [`UpdatePolicy`] allows, each new one serving before an old one leaves.
//! An update whose new replicas fail (exit, fail their check, cannot start) is rolled
//! back by itself: a *rollback* is an update to a new revision with an earlier spec, so the
//! history only ever grows at its end. ("Rollout" is the cluster upgrade's word, not this.)

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::workload::{SpecError, WorkloadSpec, MAX_REPLICAS};

/// Revisions a service keeps, the current one included: the oldest go first.
pub const KEPT_REVISIONS: usize = 10;

/// Longest `--update-monitor`.
pub const MAX_MONITOR_SECS: u64 = 3600;

/// How an update replaces replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatePolicy {
    /// Replicas an update may run above the service's count (`--max-surge`).
    pub max_surge: u32,
    /// Replicas an update may take out of service below the count (`--max-unavailable`).
    pub max_unavailable: u32,
    /// How long a new replica must run (and pass its check, if it has one) before it
    /// counts as serving and an old one may leave (`--update-monitor`). A replica that
    /// exits within this time fails the update.
    pub monitor_secs: u64,
}

impl Default for UpdatePolicy {
    /// One new replica at a time beside the old ones, none taken out early: an update
    /// never serves with fewer replicas than asked.
    fn default() -> Self {
        UpdatePolicy {
            max_surge: 1,
            max_unavailable: 0,
            monitor_secs: 5,
        }
    }
}

impl UpdatePolicy {
    pub fn validate(&self) -> Result<(), SpecError> {
        for (what, value) in [
            ("max surge", self.max_surge),
            ("max unavailable", self.max_unavailable),
        ] {
            if value > MAX_REPLICAS {
                return Err(SpecError::OutOfRange {
                    what,
                    value: value.to_string(),
                    range: format!("0 to {MAX_REPLICAS}"),
                });
            }
        }
        if self.max_surge == 0 && self.max_unavailable == 0 {
            return Err(SpecError::Update(
                "with --max-surge 0 and --max-unavailable 0 it could never replace a replica: \
                 allow at least one of them"
                    .into(),
            ));
        }
        if self.monitor_secs > MAX_MONITOR_SECS {
            return Err(SpecError::OutOfRange {
                what: "update monitor",
                value: format!("{}s", self.monitor_secs),
                range: format!("0s to {}s", MAX_MONITOR_SECS),
            });
        }
        Ok(())
    }

    /// This policy with what `change` sets.
    pub fn with(mut self, change: &PolicyChange) -> Self {
        if let Some(v) = change.max_surge {
            self.max_surge = v;
        }
        if let Some(v) = change.max_unavailable {
            self.max_unavailable = v;
        }
        if let Some(v) = change.monitor_secs {
            self.monitor_secs = v;
        }
        self
    }
}

/// The parts of an [`UpdatePolicy`] a deploy sets; the rest stays as the service has it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_secs: Option<u64>,
}

/// One spec a service was deployed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    pub number: u32,
    pub spec: WorkloadSpec,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Why it was made, in words: `created`, `deploy`, `rollback to revision 2`,
    /// `automatic rollback: …`.
    pub cause: String,
    /// Why the update to it failed (it was rolled back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// An update under way: from one revision to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub from: u32,
    pub to: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// A rollback (asked for or automatic): if it fails too, it is not rolled back again;
    /// the replicas keep trying and `cloudos ps` says why.
    #[serde(default)]
    pub rollback: bool,
}

/// `PUT /v1/services/{name}`: `cloudos deploy`, which makes the service or updates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDeployRequest {
    pub spec: WorkloadSpec,
    /// The count; `None` keeps the service's (1 for a new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(default)]
    pub policy: PolicyChange,
    /// Makes the create idempotent (`workload::validate_request_id`); an update is by
    /// itself (the same spec deployed again changes nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// `POST /v1/services/{name}/rollback`: `cloudos rollback`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRequest {
    /// The revision whose spec to go back to; `None`: the one before the current spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u32>,
}

/// Of `revisions` (oldest first), the one `cloudos rollback` without `--to` goes back to:
/// the newest that did not fail, other than `current`, with another spec.
pub fn previous(revisions: &[Revision], current: u32) -> Option<&Revision> {
    let spec = &revisions.iter().find(|r| r.number == current)?.spec;
    revisions
        .iter()
        .rev()
        .find(|r| r.number != current && r.failed.is_none() && r.spec != *spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(number: u32, image: &str, failed: bool) -> Revision {
        Revision {
            number,
            spec: WorkloadSpec::new(image),
            created_at: OffsetDateTime::UNIX_EPOCH,
            cause: "deploy".into(),
            failed: failed.then(|| "it exited".into()),
        }
    }

    #[test]
    fn the_previous_revision_skips_failed_ones_and_the_current_spec() {
        let history = [
            revision(1, "web:1", false),
            revision(2, "web:2", false),
            revision(3, "web:3", true),
            // The automatic rollback of 3: web:2 again.
            revision(4, "web:2", false),
        ];
        assert_eq!(previous(&history, 4).map(|r| r.number), Some(1));
        assert_eq!(previous(&history, 2).map(|r| r.number), Some(1));
        assert_eq!(previous(&history[..1], 1), None);
        assert_eq!(previous(&history, 9), None);
    }

    #[test]
    fn a_policy_must_let_an_update_move() {
        assert!(UpdatePolicy::default().validate().is_ok());
        let stuck = UpdatePolicy {
            max_surge: 0,
            max_unavailable: 0,
            monitor_secs: 5,
        };
        let err = stuck.validate().unwrap_err().to_string();
        assert!(err.contains("could never replace"), "{err}");
        let huge = UpdatePolicy {
            max_surge: MAX_REPLICAS + 1,
            ..UpdatePolicy::default()
        };
        assert!(huge.validate().is_err());
        let changed = UpdatePolicy::default().with(&PolicyChange {
            max_unavailable: Some(1),
            ..PolicyChange::default()
        });
        assert_eq!((changed.max_surge, changed.max_unavailable), (1, 1));
    }
}
