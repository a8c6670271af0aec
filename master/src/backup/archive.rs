//! The backup format, both ways, over plain readers and writers (no store, no network).
//!
//! An age v1 file with one scrypt passphrase stanza (<https://c2sp.org/age>); its plaintext
//! is a tar archive (ustar with GNU long names) holding, in this order:
//!
//! 1. `cloudos-backup.json`: the [`Manifest`] (format version, cluster, CA pin, schema);
//! 2. `store.json`: the store's [`Snapshot`] (every table, raw records, hex);
//! 3. `files/<tree>/…`: the files of each of [`super::FILE_TREES`] under the data directory,
//!    directories and regular files only.
//!
//! age authenticates every 64 KiB chunk and marks the last one, so a wrong passphrase, a
//! changed byte and a file cut short are each told apart and refused. Reading checks the
//! manifest before anything else (a newer format or schema is refused before a file is
//! unpacked) and reads the age stream to its authenticated end before it reports success;
//! what it unpacked meanwhile went to a directory the caller throws away on failure.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use cloudos_store::{Snapshot, StoreError};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{BackupError, Passphrase, FILE_TREES, MAX_SCRYPT_LOG_N};

/// What the manifest's `format` says.
pub const FORMAT: &str = "cloudos-backup";
/// The format version this code writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

const MANIFEST_NAME: &str = "cloudos-backup.json";
const STORE_NAME: &str = "store.json";
const FILES_DIR: &str = "files";
/// Bounds on what is read into memory from a backup.
const MAX_MANIFEST_BYTES: u64 = 64 << 10;
const MAX_STORE_BYTES: u64 = 1 << 30;

/// The first entry of a backup: what it is, of which cluster, made by what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub cluster: String,
    /// The cluster CA's pin (sha256 of its public key), as join tokens carry it.
    pub ca_pin: String,
    /// The store's schema version (`cloudos_store::SCHEMA_VERSION` when it was made).
    pub schema_version: u32,
    pub store_revision: u64,
    /// The version of the master that made it.
    pub nodeos_version: String,
    /// Records per table.
    pub records: BTreeMap<String, usize>,
    /// The master's IPv4 addresses with their prefix length when it was made (`10.0.0.5/24`):
    /// the nodes dial one of them, so a restore is offered them. Absent in older backups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub master_addresses: Vec<String>,
}

impl Manifest {
    /// The manifest of a backup of `snapshot`, made now.
    pub fn new(cluster: &str, ca_pin: &str, snapshot: &Snapshot, now: OffsetDateTime) -> Self {
        Manifest {
            format: FORMAT.to_owned(),
            version: FORMAT_VERSION,
            created_at: now,
            cluster: cluster.to_owned(),
            ca_pin: ca_pin.to_owned(),
            schema_version: snapshot.schema_version,
            store_revision: snapshot.revision,
            nodeos_version: env!("CARGO_PKG_VERSION").to_owned(),
            records: snapshot
                .tables
                .iter()
                .map(|(name, entries)| (name.clone(), entries.len()))
                .collect(),
            master_addresses: Vec::new(),
        }
    }
}

/// How many files (and their bytes) went into or came out of a backup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileCount {
    pub files: u64,
    pub bytes: u64,
}

/// Writes a backup to `out`: the manifest, the snapshot, then the file trees under
/// `data_dir`, encrypted to `passphrase` with scrypt work factor `log_n`. Returns `out`
/// once the age stream is finished (its last chunk written).
pub fn write<W: Write>(
    out: W,
    passphrase: &Passphrase,
    log_n: u8,
    manifest: &Manifest,
    snapshot: &Snapshot,
    data_dir: &Path,
) -> Result<(W, FileCount), BackupError> {
    let mut recipient = age::scrypt::Recipient::new(passphrase.secret());
    recipient.set_work_factor(log_n);
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .map_err(|e| BackupError::Encrypt(e.to_string()))?;
    let sealed = encryptor
        .wrap_output(out)
        .map_err(BackupError::io("cannot write the backup"))?;
    let mut tar = tar::Builder::new(sealed);
    let mtime = u64::try_from(manifest.created_at.unix_timestamp()).unwrap_or(0);
    let json = |what: &str, e: serde_json::Error| BackupError::Io {
        what: format!("cannot encode the {what}"),
        source: io::Error::other(e),
    };
    let manifest_json = serde_json::to_vec_pretty(manifest).map_err(|e| json("manifest", e))?;
    append_bytes(&mut tar, MANIFEST_NAME, &manifest_json, mtime)?;
    let store_json = serde_json::to_vec(snapshot).map_err(|e| json("store snapshot", e))?;
    append_bytes(&mut tar, STORE_NAME, &store_json, mtime)?;
    let mut count = FileCount::default();
    for tree in FILE_TREES {
        append_tree(&mut tar, data_dir, Path::new(tree), &mut count)?;
    }
    let sealed = tar
        .into_inner()
        .map_err(BackupError::io("cannot write the backup"))?;
    let out = sealed
        .finish()
        .map_err(BackupError::io("cannot finish the backup"))?;
    Ok((out, count))
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
    mtime: u64,
) -> Result<(), BackupError> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(bytes.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(mtime);
    tar.append_data(&mut header, name, bytes)
        .map_err(BackupError::io(format!(
            "cannot write {name} into the backup"
        )))
}

/// Appends `data_dir/rel` and everything under it (directories and regular files, in name
/// order) as `files/rel/…`. A missing tree is skipped; other kinds of files are skipped
/// with a warning (the master makes none).
fn append_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    data_dir: &Path,
    rel: &Path,
    count: &mut FileCount,
) -> Result<(), BackupError> {
    let path = data_dir.join(rel);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        // Gone since it was listed (retention deleted a task), or never made.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(BackupError::io(format!("cannot read {}", path.display()))(
                e,
            ))
        }
    };
    let name = Path::new(FILES_DIR).join(rel);
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let mut header = tar::Header::new_gnu();
    header.set_mtime(mtime);
    if meta.is_dir() {
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o700);
        header.set_size(0);
        tar.append_data(&mut header, &name, io::empty())
            .map_err(BackupError::io("cannot write into the backup"))?;
        let mut children: Vec<_> = std::fs::read_dir(&path)
            .map_err(BackupError::io(format!("cannot list {}", path.display())))?
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        children.sort();
        for child in children {
            append_tree(tar, data_dir, &rel.join(child), count)?;
        }
    } else if meta.is_file() {
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(BackupError::io(format!("cannot read {}", path.display()))(
                    e,
                ))
            }
        };
        // The size when opened: a log that grows meanwhile is cut there, one that shrinks
        // is padded, so the archive stays well-formed.
        let size = file
            .metadata()
            .map_err(BackupError::io(format!("cannot read {}", path.display())))?
            .len();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o600);
        header.set_size(size);
        let data = file.take(size).chain(io::repeat(0)).take(size);
        tar.append_data(&mut header, &name, data)
            .map_err(BackupError::io(format!(
                "cannot back up {}",
                path.display()
            )))?;
        count.files += 1;
        count.bytes += size;
    } else {
        log::warn!(
            "backup: skipping {}, which is neither a file nor a directory",
            path.display()
        );
    }
    Ok(())
}

/// What a backup held, once read to its authenticated end.
#[derive(Debug)]
pub struct Opened {
    pub manifest: Manifest,
    pub snapshot: Snapshot,
    pub files: FileCount,
}

/// Reads the backup in `input` (`shown` names it in errors): decrypts it with
/// `passphrase`, checks the manifest, reads the snapshot, and unpacks the file trees under
/// `files_to` (as `files_to/<tree>/…`), or with `None` reads them through and keeps
/// nothing (a check before an install: every byte authenticated, nothing written). On
/// error, `files_to` may hold part of the files: the caller removes it.
pub fn read<R: Read>(
    input: R,
    shown: &str,
    passphrase: &Passphrase,
    files_to: Option<&Path>,
) -> Result<Opened, BackupError> {
    let path = shown.to_owned();
    let not_a_backup = |reason: String| BackupError::NotABackup {
        path: path.clone(),
        reason,
    };
    let damaged = |reason: String| BackupError::Damaged {
        path: path.clone(),
        reason,
    };
    // An age file whose header no longer parses was changed, not something else.
    let mut input = BufReader::new(input);
    let is_age = input
        .fill_buf()
        .map(|b| b.starts_with(b"age-encryption.org/"))
        .unwrap_or(false);
    let decryptor = match age::Decryptor::new_buffered(input) {
        Ok(d) => d,
        Err(age::DecryptError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(damaged("it ends inside the age header".to_owned()))
        }
        Err(age::DecryptError::Io(e)) => {
            return Err(BackupError::io(format!("cannot read {path}"))(e))
        }
        Err(e) if is_age => return Err(damaged(format!("its header was changed ({e})"))),
        Err(e) => return Err(not_a_backup(format!("not an age file: {e}"))),
    };
    if !decryptor.is_scrypt() {
        return Err(BackupError::NotPassphrase { path: path.clone() });
    }
    let mut identity = age::scrypt::Identity::new(passphrase.secret());
    identity.set_max_work_factor(MAX_SCRYPT_LOG_N);
    let plain = match decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity)) {
        Ok(reader) => reader,
        Err(age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys) => {
            return Err(BackupError::WrongPassphrase { path: path.clone() })
        }
        Err(age::DecryptError::ExcessiveWork { required, .. }) => {
            return Err(BackupError::ExcessiveWork {
                path: path.clone(),
                required,
                max: MAX_SCRYPT_LOG_N,
            })
        }
        Err(age::DecryptError::InvalidMac) => {
            return Err(damaged("its header was changed".to_owned()))
        }
        Err(e) => return Err(damaged(e.to_string())),
    };
    let mut archive = tar::Archive::new(plain);
    let mut manifest: Option<Manifest> = None;
    let mut snapshot: Option<Snapshot> = None;
    let mut files = FileCount::default();
    let entries = archive
        .entries()
        .map_err(|e| damaged(format!("not a tar archive inside: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| damaged(e.to_string()))?;
        let name = entry
            .path()
            .map_err(|e| damaged(format!("an entry's name: {e}")))?
            .into_owned();
        let kind = entry.header().entry_type();
        match (&manifest, &snapshot) {
            (None, _) => {
                if name != Path::new(MANIFEST_NAME) {
                    return Err(not_a_backup(format!(
                        "it starts with {} instead of {MANIFEST_NAME}",
                        name.display()
                    )));
                }
                let bytes = read_capped(&mut entry, MAX_MANIFEST_BYTES)
                    .map_err(|e| damaged(e.to_string()))?;
                let m: Manifest = serde_json::from_slice(&bytes)
                    .map_err(|e| not_a_backup(format!("its manifest does not read: {e}")))?;
                check_manifest(&m, &path)?;
                manifest = Some(m);
            }
            (Some(_), None) => {
                if name != Path::new(STORE_NAME) {
                    return Err(damaged(format!("{STORE_NAME} is missing")));
                }
                let bytes =
                    read_capped(&mut entry, MAX_STORE_BYTES).map_err(|e| damaged(e.to_string()))?;
                let s: Snapshot = serde_json::from_slice(&bytes)
                    .map_err(|e| damaged(format!("its store snapshot does not read: {e}")))?;
                s.check()?;
                snapshot = Some(s);
            }
            (Some(_), Some(_)) => {
                let rel = file_path(&name).ok_or_else(|| {
                    damaged(format!("it holds an unexpected entry {}", name.display()))
                })?;
                let Some(files_to) = files_to else {
                    if kind == tar::EntryType::Regular {
                        let read = io::copy(&mut entry, &mut io::sink())
                            .map_err(|e| damaged(e.to_string()))?;
                        files.files += 1;
                        files.bytes += read;
                    }
                    continue;
                };
                let target = files_to.join(&rel);
                match kind {
                    tar::EntryType::Directory => {
                        cloudos_cluster::files::create_private_dir(&target).map_err(
                            BackupError::io(format!("cannot create {}", target.display())),
                        )?;
                    }
                    tar::EntryType::Regular => {
                        if let Some(parent) = target.parent() {
                            cloudos_cluster::files::create_private_dir(parent).map_err(
                                BackupError::io(format!("cannot create {}", parent.display())),
                            )?;
                        }
                        let written = unpack_file(&mut entry, &target).map_err(|e| {
                            match e.kind() {
                                // Reading the backup failed: age's check or its end.
                                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => {
                                    damaged(e.to_string())
                                }
                                _ => {
                                    BackupError::io(format!("cannot write {}", target.display()))(e)
                                }
                            }
                        })?;
                        files.files += 1;
                        files.bytes += written;
                    }
                    other => {
                        return Err(damaged(format!(
                            "{} is a {other:?}, not a file or directory",
                            name.display()
                        )))
                    }
                }
            }
        }
    }
    // The tar end needs not be the age stream's: read on to its last, authenticated chunk,
    // or a backup cut right after the archive's end would pass.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| damaged(e.to_string()))?;
    let manifest = manifest.ok_or_else(|| damaged("it is empty".to_owned()))?;
    let snapshot = snapshot.ok_or_else(|| damaged(format!("{STORE_NAME} is missing")))?;
    if snapshot.schema_version != manifest.schema_version {
        return Err(damaged(
            "its manifest and its store disagree on the schema".to_owned(),
        ));
    }
    Ok(Opened {
        manifest,
        snapshot,
        files,
    })
}

fn check_manifest(m: &Manifest, path: &str) -> Result<(), BackupError> {
    if m.format != FORMAT {
        return Err(BackupError::NotABackup {
            path: path.to_owned(),
            reason: format!("its manifest says {:?}", m.format),
        });
    }
    if m.version > FORMAT_VERSION {
        return Err(BackupError::NewerFormat {
            path: path.to_owned(),
            found: m.version,
            supported: FORMAT_VERSION,
        });
    }
    if m.schema_version > cloudos_store::SCHEMA_VERSION {
        return Err(StoreError::SnapshotNewer {
            found: m.schema_version,
            supported: cloudos_store::SCHEMA_VERSION,
        }
        .into());
    }
    Ok(())
}

/// `files/<tree>/…` as the path under the data directory, when it is under one of the
/// trees and has only plain components (no `..`, no root): a crafted archive cannot write
/// anywhere else.
fn file_path(name: &Path) -> Option<PathBuf> {
    let rel = name.strip_prefix(FILES_DIR).ok()?;
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    FILE_TREES
        .iter()
        .any(|tree| rel.starts_with(tree))
        .then(|| rel.to_owned())
}

fn read_capped(entry: &mut impl Read, cap: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    entry.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("an entry is larger than {cap} bytes"),
        ));
    }
    Ok(bytes)
}

/// Copies an entry into a new private file; its size.
fn unpack_file(entry: &mut impl Read, target: &Path) -> io::Result<u64> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(target)?;
    let n = io::copy(entry, &mut file)?;
    file.flush()?;
    Ok(n)
}

#[cfg(test)]
pub(super) fn file_path_for_test(name: &Path) -> Option<PathBuf> {
    file_path(name)
}
