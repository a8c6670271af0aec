//! Tasks' input archives (`cloudos run --input`): uploaded once by an admin, kept by
//! their sha256 under `<data>/inputs/`, fetched by the node a run of such a task is
//! assigned to, and deleted by the retention sweep once no task names them.
//!
//! The archive is kept as it came: the node checks its digest and unpacks it (files and
//! directories only) into the container's `/input`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cloudos_cluster::workload::InputInfo;

/// An archive no task names yet is kept this long: the CLI uploads it just before it
/// creates the task.
const UNCLAIMED_FOR: Duration = Duration::from_secs(600);

/// Where input archives are kept, under the master's workloads directory.
pub fn dir(workloads_dir: &Path) -> PathBuf {
    workloads_dir.join("inputs")
}

/// The archive of `digest` (`sha256:…`, checked by the caller).
pub fn path(workloads_dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    dir(workloads_dir).join(format!("{hex}.tar"))
}

/// Keeps the uploaded file `tmp` (`bytes` long) under its digest; the same archive again
/// is kept once.
pub fn store(workloads_dir: &Path, tmp: &Path, bytes: u64) -> std::io::Result<InputInfo> {
    std::fs::File::open(tmp)?.sync_all()?;
    let hex = crate::downloads::sha256_file(tmp)?;
    let digest = format!("sha256:{hex}");
    std::fs::create_dir_all(dir(workloads_dir))?;
    std::fs::rename(tmp, path(workloads_dir, &digest))?;
    Ok(InputInfo { digest, bytes })
}

/// Deletes the archives no task names (`named`), but those uploaded within
/// [`UNCLAIMED_FOR`] of `now`; how many went.
pub fn remove_unnamed(
    workloads_dir: &Path,
    named: &dyn Fn(&str) -> bool,
    now: SystemTime,
) -> usize {
    let Ok(entries) = std::fs::read_dir(dir(workloads_dir)) else {
        return 0;
    };
    let mut gone = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(hex) = name.strip_suffix(".tar") else {
            // A partial upload left by a crash: the same age rule.
            if young(&entry, now) {
                continue;
            }
            let _ = std::fs::remove_file(entry.path());
            continue;
        };
        if named(&format!("sha256:{hex}")) || young(&entry, now) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => gone += 1,
            Err(e) => log::warn!("cannot delete the input archive {name}: {e}"),
        }
    }
    gone
}

fn young(entry: &std::fs::DirEntry, now: SystemTime) -> bool {
    entry
        .metadata()
        .and_then(|m| m.modified())
        .map(|at| now.duration_since(at).unwrap_or_default() < UNCLAIMED_FOR)
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_is_kept_by_its_digest_until_no_task_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("upload.tmp");
        std::fs::write(&tmp, b"abc").unwrap();
        let info = store(dir.path(), &tmp, 3).unwrap();
        // sha256("abc")
        assert_eq!(
            info.digest,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            std::fs::read(path(dir.path(), &info.digest)).unwrap(),
            b"abc"
        );
        assert!(!tmp.exists());

        let now = SystemTime::now();
        // Young, or named: kept.
        assert_eq!(remove_unnamed(dir.path(), &|_| false, now), 0);
        let later = now + UNCLAIMED_FOR + Duration::from_secs(1);
        assert_eq!(remove_unnamed(dir.path(), &|d| d == info.digest, later), 0);
        assert_eq!(remove_unnamed(dir.path(), &|_| false, later), 1);
        assert!(!path(dir.path(), &info.digest).exists());
    }
}
