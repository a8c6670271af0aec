//! Scheduled backups: the master writes one to a directory every interval and keeps the
//! newest N. The next one is due an interval after the newest in the directory, so a
//! master that restarts more often than the interval still makes them. The passphrase is
//! read from its file at each backup (so it can be changed without a restart) and checked
//! once at start, so a wrong path shows at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;

use super::{write_file, BackupError, Passphrase};
use crate::state::MasterState;

/// The names of scheduled backups: `cloudos-backup-<UTC time>.age`, which sort by time.
const PREFIX: &str = "cloudos-backup-";
const SUFFIX: &str = ".age";
/// How long to wait after a failed backup before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(300);

/// Where, how often and how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub dir: PathBuf,
    pub interval: Duration,
    /// How many backups to keep (at least 1).
    pub keep: usize,
    pub passphrase_file: PathBuf,
}

impl Schedule {
    /// A day between backups, unless told otherwise.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(86_400);
    /// A week of daily backups.
    pub const DEFAULT_KEEP: usize = 7;

    /// Checks what can be checked before the first backup: the passphrase file reads and
    /// holds a passphrase long enough, and the directory can be made.
    pub fn check(&self) -> Result<(), BackupError> {
        Passphrase::from_file(&self.passphrase_file, true)?;
        cloudos_cluster::files::create_private_dir(&self.dir).map_err(BackupError::io(format!(
            "cannot create {}",
            self.dir.display()
        )))
    }
}

/// The scheduled backups in `dir`, oldest first.
pub fn list(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
        })
        .collect();
    found.sort();
    found
}

/// Removes the oldest scheduled backups beyond `keep`; what it removed. Other files in the
/// directory are never touched.
pub fn prune(dir: &Path, keep: usize) -> Vec<PathBuf> {
    let all = list(dir);
    let extra = all.len().saturating_sub(keep.max(1));
    all.into_iter()
        .take(extra)
        .filter(|p| std::fs::remove_file(p).is_ok())
        .collect()
}

/// The file name of a backup made at `at`.
fn file_name(at: OffsetDateTime) -> String {
    format!(
        "{PREFIX}{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z{SUFFIX}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// One scheduled backup now, then the pruning; the new file.
pub fn once(state: &MasterState, schedule: &Schedule) -> Result<PathBuf, BackupError> {
    let passphrase = Passphrase::from_file(&schedule.passphrase_file, true)?;
    cloudos_cluster::files::create_private_dir(&schedule.dir).map_err(BackupError::io(format!(
        "cannot create {}",
        schedule.dir.display()
    )))?;
    let path = schedule.dir.join(file_name(
        OffsetDateTime::now_utc().to_offset(time::UtcOffset::UTC),
    ));
    let made = write_file(
        state.store.as_ref(),
        &state.config.data_dir,
        &passphrase,
        &path,
    )?;
    log::info!(
        "backup: wrote {} ({} records, {} files)",
        path.display(),
        made.manifest.records.values().sum::<usize>(),
        made.files.files
    );
    for old in prune(&schedule.dir, schedule.keep) {
        log::info!(
            "backup: removed {} (keeping {})",
            old.display(),
            schedule.keep
        );
    }
    Ok(path)
}

/// How long until the next backup is due: an interval after the newest one, now if none.
fn due_in(schedule: &Schedule, now: SystemTime) -> Duration {
    let newest = list(&schedule.dir)
        .iter()
        .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .max();
    match newest {
        Some(at) => (at + schedule.interval)
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
        None => Duration::ZERO,
    }
}

/// Makes backups for as long as the master runs.
pub async fn run(state: Arc<MasterState>, schedule: Schedule) {
    log::info!(
        "backup: every {}s to {}, keeping {}",
        schedule.interval.as_secs(),
        schedule.dir.display(),
        schedule.keep
    );
    loop {
        tokio::time::sleep(due_in(&schedule, SystemTime::now())).await;
        let (s, sched) = (Arc::clone(&state), schedule.clone());
        let result = tokio::task::spawn_blocking(move || once(&s, &sched)).await;
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                log::error!(
                    "backup: failed: {e}; trying again in {}s",
                    RETRY_AFTER.as_secs()
                );
                tokio::time::sleep(RETRY_AFTER.min(schedule.interval)).await;
            }
            Err(e) => {
                log::error!("backup: the backup task failed: {e}");
                tokio::time::sleep(RETRY_AFTER.min(schedule.interval)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_time_and_pruning_keeps_the_newest_only() {
        let dir = tempfile::tempdir().expect("dir");
        let t0 = time::macros::datetime!(2026-12-01 10:00:00 UTC);
        let mut made = Vec::new();
        for minutes in [0, 1, 2, 3, 4] {
            let path = dir
                .path()
                .join(file_name(t0 + time::Duration::minutes(minutes)));
            std::fs::write(&path, b"x").expect("write");
            made.push(path);
        }
        std::fs::write(dir.path().join("notes.txt"), b"mine").expect("other file");
        assert_eq!(list(dir.path()), made);
        assert_eq!(prune(dir.path(), 2), made[..3].to_vec());
        assert_eq!(list(dir.path()), made[3..].to_vec());
        assert!(
            dir.path().join("notes.txt").exists(),
            "other files are kept"
        );
        assert_eq!(file_name(t0), "cloudos-backup-20261201T100000.000Z.age");
    }

    #[test]
    fn the_next_backup_is_an_interval_after_the_newest() {
        let dir = tempfile::tempdir().expect("dir");
        let schedule = Schedule {
            dir: dir.path().to_owned(),
            interval: Duration::from_secs(3600),
            keep: 3,
            passphrase_file: dir.path().join("pass"),
        };
        assert_eq!(
            due_in(&schedule, SystemTime::now()),
            Duration::ZERO,
            "none yet: now"
        );
        std::fs::write(dir.path().join(file_name(OffsetDateTime::now_utc())), b"x").expect("write");
        let wait = due_in(&schedule, SystemTime::now());
        assert!(
            wait > Duration::from_secs(3500) && wait <= Duration::from_secs(3600),
            "{wait:?}"
        );
    }
}
