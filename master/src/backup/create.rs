//! A backup of a running master: the store's snapshot (one read transaction), then the
//! file trees, written to any writer or to a private file beside its final name.

use std::io::Write;
use std::path::{Path, PathBuf};

use cloudos_cluster::ClusterCa;
use cloudos_store::Store;
use time::OffsetDateTime;

use super::archive::{self, FileCount, Manifest};
use super::{BackupError, Passphrase, SCRYPT_LOG_N};

/// What a backup holds, for the log and the admin.
#[derive(Debug, Clone)]
pub struct Made {
    pub manifest: Manifest,
    pub files: FileCount,
}

/// Writes a backup of `store` and the file trees under `data_dir` to `out`.
pub fn create<W: Write>(
    store: &dyn Store,
    data_dir: &Path,
    passphrase: &Passphrase,
    out: W,
) -> Result<(W, Made), BackupError> {
    create_with(store, data_dir, passphrase, SCRYPT_LOG_N, out)
}

/// [`create`] with a chosen scrypt work factor (tests use a small one).
pub(crate) fn create_with<W: Write>(
    store: &dyn Store,
    data_dir: &Path,
    passphrase: &Passphrase,
    log_n: u8,
    out: W,
) -> Result<(W, Made), BackupError> {
    let snapshot = store.snapshot()?;
    let meta = snapshot.cluster_meta()?.ok_or(BackupError::NoCluster)?;
    let pin = ClusterCa::load(&meta.ca_cert_pem, &meta.ca_key_pem)
        .map(|ca| ca.pin().to_string())
        .map_err(|e| BackupError::Encrypt(format!("the stored CA does not load: {e}")))?;
    let mut manifest = Manifest::new(&meta.name, &pin, &snapshot, OffsetDateTime::now_utc());
    manifest.master_addresses = crate::addresses::host_ipv4_networks()
        .iter()
        .map(ToString::to_string)
        .collect();
    let (out, files) = archive::write(out, passphrase, log_n, &manifest, &snapshot, data_dir)?;
    Ok((out, Made { manifest, files }))
}

/// Writes a backup to `path`: into a private (0600) temporary file beside it, synced, then
/// renamed over `path`, so `path` is a whole backup or is not there.
pub fn write_file(
    store: &dyn Store,
    data_dir: &Path,
    passphrase: &Passphrase,
    path: &Path,
) -> Result<Made, BackupError> {
    write_file_with(store, data_dir, passphrase, SCRYPT_LOG_N, path)
}

pub(crate) fn write_file_with(
    store: &dyn Store,
    data_dir: &Path,
    passphrase: &Passphrase,
    log_n: u8,
    path: &Path,
) -> Result<Made, BackupError> {
    let tmp = temp_beside(path);
    let result = (|| {
        let file = private_file(&tmp)?;
        let (file, made) = create_with(
            store,
            data_dir,
            passphrase,
            log_n,
            std::io::BufWriter::new(file),
        )?;
        let file = file.into_inner().map_err(|e| {
            BackupError::io(format!("cannot write {}", tmp.display()))(e.into_error())
        })?;
        file.sync_all()
            .map_err(BackupError::io(format!("cannot write {}", tmp.display())))?;
        std::fs::rename(&tmp, path)
            .map_err(BackupError::io(format!("cannot write {}", path.display())))?;
        Ok(made)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `NAME.partial-PID` beside `path`.
pub(crate) fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".to_owned());
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// A new file only its owner can read, created so (never a moment with wider bits).
pub(crate) fn private_file(path: &Path) -> Result<std::fs::File, BackupError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::File::options()
        .write(true)
        .read(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(BackupError::io(format!("cannot create {}", path.display())))
}
