//! A run's secrets on the node (decision 65): a memory file system of the run's own at
//! `<data>/secrets/<run>` (tmpfs: nothing reaches the disk, and a power cut leaves
//! nothing), each secret a file of mode 0400 owned by the container's user, bound
//! read-only at `/run/secrets`. Unmounted when the run ends, and any left by an earlier
//! agent when the agent starts.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use cloudos_cluster::secret::{validate_secret_name, RunSecret, SECRETS_DIR};
use cloudos_runtime::Bind;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Where runs' secret file systems are mounted under the data directory.
const DIR: &str = "secrets";
/// Each run's file system: the largest secrets, all of them, fit with room to spare.
const SIZE: &str = "size=2m,nr_inodes=64,mode=0700";

fn run_dir(data_dir: &Path, run: &str) -> PathBuf {
    data_dir.join(DIR).join(run)
}

/// Mounts run `run`'s secrets and returns the bind that shows them in its container;
/// `None` when it has none. `owner` is the container's user and group.
pub(super) fn mount_for(
    data_dir: &Path,
    run: &str,
    secrets: &[RunSecret],
    owner: (u32, u32),
) -> Result<Option<Bind>, String> {
    if secrets.is_empty() {
        return Ok(None);
    }
    let dir = run_dir(data_dir, run);
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot make {} for the run's secrets: {e}", dir.display()))?;
    mount(
        Some("tmpfs"),
        &dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(SIZE),
    )
    .map_err(|e| format!("cannot mount a memory file system for the run's secrets: {e}"))?;
    if let Err(e) = write_all(&dir, secrets, owner) {
        unmount(data_dir, run);
        return Err(e);
    }
    Ok(Some(Bind {
        source: dir,
        target: SECRETS_DIR.to_owned(),
        read_only: true,
    }))
}

fn write_all(dir: &Path, secrets: &[RunSecret], (uid, gid): (u32, u32)) -> Result<(), String> {
    for s in secrets {
        // The master checked the name; a file name from the wire is checked again here.
        validate_secret_name(&s.name).map_err(|e| e.to_string())?;
        let path = dir.join(&s.name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&path)
            .map_err(|e| format!("cannot write secret {}: {e}", s.name))?;
        file.write_all(&s.value.0)
            .map_err(|e| format!("cannot write secret {}: {e}", s.name))?;
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
            .map_err(|e| format!("cannot give secret {} to the container's user: {e}", s.name))?;
    }
    // The directory itself: the container's user may list it, nobody else.
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .map_err(|e| format!("cannot give the secrets to the container's user: {e}"))?;
    Ok(())
}

/// Unmounts run `run`'s secrets (its values are gone with the file system).
pub(super) fn unmount(data_dir: &Path, run: &str) {
    let dir = run_dir(data_dir, run);
    if dir.exists() {
        if let Err(e) = umount2(&dir, MntFlags::MNT_DETACH) {
            if e != nix::errno::Errno::EINVAL {
                log::warn!("cannot unmount the secrets of run {run}: {e}");
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

/// Unmounts every run's secrets: at the agent's start no run is under way here.
pub(super) fn unmount_all(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir.join(DIR)) else {
        return;
    };
    for entry in entries.flatten() {
        unmount(data_dir, &entry.file_name().to_string_lossy());
    }
}
