//! Backups of the master's state and restoring them (issue 19).
//!
//! A backup is one file: an age file (scrypt passphrase recipient) whose plaintext is a tar
//! archive (see [`archive`]) of a manifest, every table of the store read in one read
//! transaction ([`cloudos_store::Store::snapshot`]: the CA and its key, tokens, nodes and
//! their serials, admins, revocations, tasks, services) and the master's files that are not
//! in the store (task logs and outputs, release bundles; [`FILE_TREES`]). Anyone with the
//! passphrase can also read it with the `age` or `rage` tools and `tar`.
//!
//! - [`archive`]: the format, both ways, over plain readers and writers.
//! - [`create`]: a backup of a running master, to a writer or a private file.
//! - [`restore`]: a backup into a data directory, all or nothing.
//! - [`schedule`]: backups to a directory every interval, keeping the newest N.
//!
//! Encryption happens in the master: the on-demand backup (`POST /v1/backup`, admin only)
//! and the scheduled ones use one code path, and the plaintext, which holds the CA's key,
//! never leaves the master's process. The admin's passphrase reaches the master over the
//! admin's mTLS connection and is never logged. It owns no HTTP: the route is in `routes`.

pub mod archive;
pub mod create;
pub mod restore;
pub mod schedule;

use std::fmt;
use std::path::{Path, PathBuf};

use age::secrecy::{ExposeSecret, SecretString};

pub use archive::Manifest;
pub use create::{create, write_file};
pub use restore::{inspect, restore_file, Restored};
pub use schedule::Schedule;

/// The directories under the data directory backed up as files, whatever they hold: task
/// logs and `/output` archives, and release bundles. The store itself goes in as records.
pub const FILE_TREES: [&str; 2] = ["master/workloads", "master/releases"];

/// Shortest passphrase accepted for a new backup.
pub const MIN_PASSPHRASE_CHARS: usize = 12;

/// The scrypt work factor (log2 N) of new backups: 128 MiB and about half a second on a
/// current CPU, a few seconds on a Raspberry Pi. Fixed rather than measured (age's
/// default) so that a backup made on a fast machine opens on a small one.
pub const SCRYPT_LOG_N: u8 = 17;

/// The largest work factor a restore accepts (1 GiB of memory): backups made with the
/// `age` tools at their defaults open, a file that would take minutes does not.
pub const MAX_SCRYPT_LOG_N: u8 = 20;

/// A backup's passphrase. Never shown: `Debug` prints a placeholder.
#[derive(Clone)]
pub struct Passphrase(SecretString);

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

impl Passphrase {
    /// A passphrase for a new backup: at least [`MIN_PASSPHRASE_CHARS`] characters.
    pub fn new(text: impl Into<String>) -> Result<Self, BackupError> {
        let text = text.into();
        if text.chars().count() < MIN_PASSPHRASE_CHARS {
            return Err(BackupError::ShortPassphrase {
                min: MIN_PASSPHRASE_CHARS,
            });
        }
        Ok(Passphrase(SecretString::from(text)))
    }

    /// A passphrase to open a backup with: any length (the backup decides).
    pub fn for_restore(text: impl Into<String>) -> Self {
        Passphrase(SecretString::from(text.into()))
    }

    /// The first line of a file (without its line end), as `--passphrase-file` gives it.
    /// `for_new` applies the rules of a new backup.
    pub fn from_file(path: &Path, for_new: bool) -> Result<Self, BackupError> {
        let text = std::fs::read_to_string(path).map_err(|source| BackupError::PassphraseFile {
            path: path.to_owned(),
            source,
        })?;
        let line = text.lines().next().unwrap_or_default().to_owned();
        match for_new {
            true => Passphrase::new(line),
            false => Ok(Passphrase::for_restore(line)),
        }
    }

    pub(crate) fn secret(&self) -> SecretString {
        SecretString::from(self.0.expose_secret().to_owned())
    }
}

/// Why a backup or a restore failed. Messages say what to do; none carries the passphrase.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the passphrase is shorter than {min} characters; choose a longer one")]
    ShortPassphrase { min: usize },
    #[error("cannot read the passphrase file {path}: {source}")]
    PassphraseFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("this master holds no cluster yet: nothing to back up")]
    NoCluster,
    #[error(transparent)]
    Store(#[from] cloudos_store::StoreError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("cannot encrypt the backup: {0}")]
    Encrypt(String),
    #[error("{path} is not a CloudOS backup ({reason}); nothing was restored")]
    NotABackup { path: String, reason: String },
    #[error("{path} is encrypted to a key, not a passphrase; CloudOS backups use a passphrase; nothing was restored")]
    NotPassphrase { path: String },
    #[error("wrong passphrase: {path} does not open with it; nothing was restored")]
    WrongPassphrase { path: String },
    #[error("{path} asks for scrypt work factor 2^{required}, more than the 2^{max} this nodeos accepts; nothing was restored")]
    ExcessiveWork { path: String, required: u8, max: u8 },
    #[error("{path} is damaged or cut short ({reason}); nothing was restored; use another copy of the backup")]
    Damaged { path: String, reason: String },
    #[error("{path} is backup format {found}, newer than {supported} which this nodeos reads; restore it with the nodeos version that made it, or a newer one; nothing was restored")]
    NewerFormat {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error("{data_dir} already holds cluster `{name}`; restoring would replace it: use an empty data directory, or pass --force-restore (the old state is kept aside in {data_dir}/master.replaced-<time>); nothing was restored")]
    HoldsCluster { data_dir: PathBuf, name: String },
}

impl BackupError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
        let what = what.into();
        move |source| BackupError::Io { what, source }
    }
}

#[cfg(test)]
mod tests;
