//! A backup into a data directory, all or nothing: read and check the whole backup into a
//! staging directory beside the target, build the store there, and only then move it into
//! place. A wrong passphrase, a damaged or truncated file, a newer format or schema, or a
//! target that already holds a cluster (unless forced) leaves the data directory as it was.
//!
//! What it puts back: `<data>/master/state.redb` (every table, so the same CA, tokens,
//! nodes with their certificate serials, admins, revocations and workloads: nodes
//! reconnect with the certificates they hold and `cloudos` logins keep working), and the
//! file trees (task logs and outputs, releases). A forced restore keeps the replaced
//! `<data>/master` aside as `master.replaced-<unix time>`.

use std::path::{Path, PathBuf};

use cloudos_cluster::ClusterCa;
use cloudos_store::{RedbStore, Store};

use super::archive::{self, FileCount, Manifest, Opened};
use super::{BackupError, Passphrase};

/// What a restore put back.
#[derive(Debug, Clone)]
pub struct Restored {
    pub manifest: Manifest,
    pub files: FileCount,
    /// Where a forced restore moved the state it replaced.
    pub replaced: Option<PathBuf>,
}

/// The staging directory, removed on drop unless the restore went through.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The cluster `data_dir` holds, if any (its store opened and read).
pub fn existing_cluster(data_dir: &Path) -> Result<Option<String>, BackupError> {
    let path = data_dir.join("master").join("state.redb");
    if !path.exists() {
        return Ok(None);
    }
    let store = RedbStore::open(&path)?;
    Ok(store.cluster_meta()?.map(|m| m.name))
}

/// Opens the backup at `backup` with `passphrase` and reads it to its authenticated end,
/// keeping nothing: what a restore of it would put back, checked before anything is
/// written (the installer's restore asks this before it erases a disk).
pub fn inspect(backup: &Path, passphrase: &Passphrase) -> Result<Opened, BackupError> {
    let shown = backup.display().to_string();
    let input = std::fs::File::open(backup)
        .map_err(BackupError::io(format!("cannot open the backup {shown}")))?;
    archive::read(input, &shown, passphrase, None)
}

/// Restores the backup at `backup` into `data_dir`. See the module comment.
pub fn restore_file(
    backup: &Path,
    passphrase: &Passphrase,
    data_dir: &Path,
    force: bool,
) -> Result<Restored, BackupError> {
    // Refuse before the (slow) decryption: the answer does not depend on the backup.
    let existing = existing_cluster(data_dir)?;
    if let (Some(name), false) = (&existing, force) {
        return Err(BackupError::HoldsCluster {
            data_dir: data_dir.to_owned(),
            name: name.clone(),
        });
    }
    let shown = backup.display().to_string();
    let input = std::fs::File::open(backup)
        .map_err(BackupError::io(format!("cannot open the backup {shown}")))?;
    cloudos_cluster::files::create_private_dir(data_dir).map_err(BackupError::io(format!(
        "cannot create {}",
        data_dir.display()
    )))?;
    let staging = Staging(data_dir.join(format!(".restore-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&staging.0);
    let files_dir = staging.0.join("files");
    cloudos_cluster::files::create_private_dir(&files_dir).map_err(BackupError::io(format!(
        "cannot create {}",
        files_dir.display()
    )))?;

    let opened = archive::read(input, &shown, passphrase, Some(&files_dir))?;
    let meta = opened
        .snapshot
        .cluster_meta()?
        .ok_or_else(|| BackupError::Damaged {
            path: shown.clone(),
            reason: "it holds no cluster".to_owned(),
        })?;
    ClusterCa::load(&meta.ca_cert_pem, &meta.ca_key_pem).map_err(|e| BackupError::Damaged {
        path: shown.clone(),
        reason: format!("its CA does not load: {e}"),
    })?;

    // The new master directory, complete, beside the target.
    let master = staging.0.join("master");
    cloudos_cluster::files::create_private_dir(&master).map_err(BackupError::io(format!(
        "cannot create {}",
        master.display()
    )))?;
    {
        let store = RedbStore::open(master.join("state.redb"))?;
        store.restore(&opened.snapshot)?;
    }
    let staged_workloads = files_dir.join("master").join("workloads");
    if staged_workloads.exists() {
        rename(&staged_workloads, &master.join("workloads"))?;
    }

    // Into place: the old master directory aside (forced, or one without a cluster), the
    // new one in, then the other trees file by file (a release already there is replaced
    // by the backup's copy, others are kept).
    let target = data_dir.join("master");
    let replaced = if target.exists() {
        let aside = data_dir.join(format!(
            "master.replaced-{}",
            time::OffsetDateTime::now_utc().unix_timestamp()
        ));
        rename(&target, &aside)?;
        Some(aside)
    } else {
        None
    };
    rename(&master, &target)?;
    let trees = files_dir.clone();
    move_tree(&trees, &trees, data_dir)?;
    Ok(Restored {
        manifest: opened.manifest,
        files: opened.files,
        replaced,
    })
}

fn rename(from: &Path, to: &Path) -> Result<(), BackupError> {
    std::fs::rename(from, to).map_err(BackupError::io(format!(
        "cannot move {} to {}",
        from.display(),
        to.display()
    )))
}

/// Moves every file under `dir` (a part of `root`) to the same place under `data_dir`.
fn move_tree(root: &Path, dir: &Path, data_dir: &Path) -> Result<(), BackupError> {
    let entries = std::fs::read_dir(dir)
        .map_err(BackupError::io(format!("cannot list {}", dir.display())))?;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let to = data_dir.join(rel);
        if path.is_dir() {
            cloudos_cluster::files::create_private_dir(&to)
                .map_err(BackupError::io(format!("cannot create {}", to.display())))?;
            move_tree(root, &path, data_dir)?;
        } else {
            rename(&path, &to)?;
        }
    }
    Ok(())
}
