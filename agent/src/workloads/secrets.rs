//! A run's secrets on the node (decision 65): a memory file system of the run's own at
//! `<data>/secrets/<run>` (tmpfs: nothing reaches the disk, and a power cut leaves
//! nothing). The secrets it mounts as files are in `files/`, each of mode 0400 owned by
//! the container's user, bound read-only at `/run/secrets`; those its environment takes
//! (`--env KEY=secret:NAME`) are in `env/`, readable by root only, and the runtime's shim
//! reads them into the container's environment as it starts it. Unmounted when the run
//! ends, and any left by an earlier agent when the agent starts.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use cloudos_cluster::secret::{env_value, validate_secret_name, RunSecret, SECRETS_DIR};
use cloudos_runtime::{Bind, EnvFile};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Where runs' secret file systems are mounted under the data directory.
const DIR: &str = "secrets";
/// Each run's file system: the largest secrets, all of them, fit with room to spare.
const SIZE: &str = "size=2m,nr_inodes=128,mode=0700";

fn run_dir(data_dir: &Path, run: &str) -> PathBuf {
    data_dir.join(DIR).join(run)
}

/// What a run's container gets of its secrets.
#[derive(Debug, Default)]
pub(super) struct Mounted {
    /// `/run/secrets`, when it mounts any as files.
    pub bind: Option<Bind>,
    /// The variables its environment takes from secrets.
    pub env_files: Vec<EnvFile>,
}

/// The secrets a run reads, by name: as files, and by environment variable.
pub(super) struct Wanted<'a> {
    pub files: &'a [String],
    pub env: &'a BTreeMap<String, String>,
}

/// Mounts run `run`'s secrets; nothing when it reads none. `owner` is the container's
/// user and group; every secret wanted must be among `secrets`.
pub(super) fn mount_for(
    data_dir: &Path,
    run: &str,
    secrets: &[RunSecret],
    wanted: &Wanted<'_>,
    owner: (u32, u32),
) -> Result<Mounted, String> {
    if wanted.files.is_empty() && wanted.env.is_empty() {
        return Ok(Mounted::default());
    }
    let value = |name: &str| {
        secrets
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.value.0.as_slice())
            .ok_or_else(|| {
                format!(
                    "secret {name} did not come with the run (removed, or unreadable on the master)"
                )
            })
    };
    // Checked before anything is mounted: a value that cannot be an environment
    // variable's fails the run with a reason that names the secret, not its value.
    for (key, name) in wanted.env {
        env_value(name, value(name)?).map_err(|e| format!("${key}: {e}"))?;
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
    let written = write_files(&dir.join("files"), wanted.files, &value, owner).and_then(|bind| {
        let env_files = write_env(&dir.join("env"), wanted.env, &value)?;
        Ok(Mounted { bind, env_files })
    });
    if written.is_err() {
        unmount(data_dir, run);
    }
    written
}

type Lookup<'a> = dyn Fn(&str) -> Result<&'a [u8], String> + 'a;

/// The file secrets in `dir`, given to the container's user; their bind.
fn write_files<'a>(
    dir: &Path,
    names: &[String],
    value: &Lookup<'a>,
    (uid, gid): (u32, u32),
) -> Result<Option<Bind>, String> {
    if names.is_empty() {
        return Ok(None);
    }
    make_dir(dir)?;
    for name in names {
        let file = write_one(dir, name, value(name)?)?;
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
            .map_err(|e| format!("cannot give secret {name} to the container's user: {e}"))?;
    }
    // The directory itself: the container's user may list it, nobody else.
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .map_err(|e| format!("cannot give the secrets to the container's user: {e}"))?;
    Ok(Some(Bind {
        source: dir.to_path_buf(),
        target: SECRETS_DIR.to_owned(),
        read_only: true,
    }))
}

/// The environment's secrets in `dir`, root's only: the shim reads them.
fn write_env<'a>(
    dir: &Path,
    env: &BTreeMap<String, String>,
    value: &Lookup<'a>,
) -> Result<Vec<EnvFile>, String> {
    if env.is_empty() {
        return Ok(Vec::new());
    }
    make_dir(dir)?;
    let mut files = Vec::new();
    for (key, name) in env {
        let path = dir.join(name);
        if !path.exists() {
            write_one(dir, name, value(name)?)?;
        }
        files.push(EnvFile {
            name: key.clone(),
            path,
        });
    }
    Ok(files)
}

fn make_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir(dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))
}

fn write_one(dir: &Path, name: &str, value: &[u8]) -> Result<std::fs::File, String> {
    // The master checked the name; a file name from the wire is checked again here.
    validate_secret_name(name).map_err(|e| e.to_string())?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(dir.join(name))
        .map_err(|e| format!("cannot write secret {name}: {e}"))?;
    file.write_all(value)
        .map_err(|e| format!("cannot write secret {name}: {e}"))?;
    Ok(file)
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

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_cluster::secret::SecretValue;

    #[test]
    fn a_value_no_environment_takes_fails_the_run_before_anything_is_mounted() {
        let data = tempfile::tempdir().unwrap();
        let secrets = [RunSecret {
            name: "key".into(),
            value: SecretValue(b"\x00\x01s3cr3t".to_vec()),
        }];
        let env = BTreeMap::from([("API_KEY".to_owned(), "key".to_owned())]);
        let wanted = Wanted {
            files: &[],
            env: &env,
        };
        let e = mount_for(data.path(), "r-1", &secrets, &wanted, (0, 0)).unwrap_err();
        assert!(e.contains("$API_KEY") && e.contains("--secret key"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
        assert!(!data.path().join(DIR).exists());

        let missing = Wanted {
            files: &["other".to_owned()],
            env: &BTreeMap::new(),
        };
        let e = mount_for(data.path(), "r-1", &secrets, &missing, (0, 0)).unwrap_err();
        assert!(e.contains("secret other did not come with the run"), "{e}");
    }
}
