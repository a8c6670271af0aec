//! Installing a master that restores a backup (`mode = "restore"`, the wizard's "Restore a
//! master from a backup"): where the backup is, where its passphrase comes from, what the
//! backup holds, and the words the wizard and the answer file use for them.
//!
//! Opening a backup is the machine's job ([`crate::System::open_backup`]: nodeos opens it
//! with the master's own backup code, reading it to its authenticated end and keeping
//! nothing); this module only decides and describes. The backup is restored into the new
//! data partition by the install step itself, after the wipe was confirmed: the passphrase
//! is never written to any disk, and no copy of the backup is left on the installed one.

use std::fmt::Write as _;

use cloudos_settings::{values, Secret};

use crate::answers::Ipv4Cidr;
use crate::system::System;
use crate::InstallError;

/// What to restore: the backup (`/path`, or `LABEL=NAME:/path` on a partition such as a USB
/// stick or the config disk) and its passphrase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreAnswers {
    pub backup: String,
    pub passphrase: PassphraseSource,
}

/// Where the passphrase comes from. `Debug` never shows a typed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassphraseSource {
    /// An answer file's `passphrase_file`: its first line (`/path` or `LABEL=NAME:/path`).
    File(String),
    /// Typed in the wizard, without echo; it lives in memory only.
    Typed(Secret),
}

/// A backup file found on one of the machine's partitions, for the wizard's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundBackup {
    /// `LABEL=NAME:/path`, as an answer file would name it.
    pub source: String,
    pub size_bytes: u64,
}

/// What a backup holds, read from it with its passphrase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    pub cluster: String,
    /// The cluster CA's pin (`sha256:…`), as join tokens and `cloudos status` show it.
    pub ca_pin: String,
    /// When it was made (RFC 3339) and by which nodeos.
    pub created_at: String,
    pub made_by: String,
    pub nodes: usize,
    pub services: usize,
    pub tasks: usize,
    pub admins: usize,
    /// The master's IPv4 addresses when the backup was made; empty for older backups.
    pub master_addresses: Vec<Ipv4Cidr>,
}

/// Why a backup cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The passphrase does not open it: ask again.
    #[error("{0}")]
    WrongPassphrase(String),
    /// Missing, damaged, not a backup, too new: choose another.
    #[error("{0}")]
    Unusable(String),
}

/// A restore whose backup opened with its passphrase: what the install step restores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedRestore {
    pub backup: String,
    pub passphrase: Secret,
    pub info: BackupInfo,
}

/// Reads the passphrase (from its file, for an answer file) and opens the backup with it,
/// before anything is written.
pub fn check_restore(
    system: &dyn System,
    restore: &RestoreAnswers,
) -> Result<CheckedRestore, InstallError> {
    let refused = |why: String| InstallError::Backup {
        backup: restore.backup.clone(),
        why,
    };
    let passphrase = match &restore.passphrase {
        PassphraseSource::Typed(secret) => secret.clone(),
        PassphraseSource::File(source) => system
            .read_passphrase(source)
            .map_err(|why| refused(format!("cannot read the passphrase file {source}: {why}")))?,
    };
    let info = system
        .open_backup(&restore.backup, &passphrase)
        .map_err(|e| refused(e.to_string()))?;
    Ok(CheckedRestore {
        backup: restore.backup.clone(),
        passphrase,
        info,
    })
}

/// `/path` or `LABEL=NAME:/path`, as the node setting `restore` takes it.
pub fn parse_backup_source(text: &str) -> Result<String, String> {
    values::parse_file_source(text.trim())
}

/// What the backup holds, shown once it opened and again before the wipe.
pub fn backup_lines(info: &BackupInfo) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "  cluster    \"{}\"", info.cluster);
    let _ = writeln!(text, "  CA pin     {}", info.ca_pin);
    let _ = writeln!(
        text,
        "  holds      {} nodes, {} services, {} tasks, {} admins",
        info.nodes, info.services, info.tasks, info.admins
    );
    let _ = writeln!(
        text,
        "  made       {} by nodeos {}",
        info.created_at, info.made_by
    );
    let _ = writeln!(text, "  master at  {}", had_addresses(info));
    text
}

/// The backup's master addresses, or a word that there are none.
pub fn had_addresses(info: &BackupInfo) -> String {
    if info.master_addresses.is_empty() {
        return "(not recorded in this backup)".to_owned();
    }
    let all: Vec<String> = info
        .master_addresses
        .iter()
        .map(ToString::to_string)
        .collect();
    all.join(", ")
}

/// A warning when the new master's static address is not one the backup's master had:
/// the nodes dial the old address, so they would not find it.
pub fn address_warning(info: &BackupInfo, address: Option<&Ipv4Cidr>) -> Option<String> {
    if info.master_addresses.is_empty() {
        return None;
    }
    let same =
        address.is_some_and(|a| info.master_addresses.iter().any(|m| m.address == a.address));
    (!same).then(|| {
        format!(
            "the backup's master was at {}; its nodes dial that address, so give this master \
             the same one (a static address) or they will not find it",
            had_addresses(info)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> BackupInfo {
        BackupInfo {
            ca_pin: "sha256:5a5a".into(),
            ..crate::testing::backup_info()
        }
    }

    #[test]
    fn the_lines_name_the_cluster_the_counts_and_the_address() {
        let text = backup_lines(&info());
        for want in [
            "\"lab\"",
            "sha256:5a5a",
            "2 nodes, 1 services, 3 tasks, 1 admins",
            "master at  10.0.0.5/24",
            "by nodeos 0.1.0",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
    }

    #[test]
    fn another_address_than_the_backups_is_warned_about() {
        let same: Ipv4Cidr = "10.0.0.5/16".parse().expect("cidr");
        let other: Ipv4Cidr = "10.0.0.6/24".parse().expect("cidr");
        assert_eq!(address_warning(&info(), Some(&same)), None);
        let warned = address_warning(&info(), Some(&other)).expect("warned");
        assert!(warned.contains("was at 10.0.0.5/24"), "{warned}");
        assert!(
            address_warning(&info(), None).is_some(),
            "DHCP is warned about"
        );
        let old = BackupInfo {
            master_addresses: Vec::new(),
            ..info()
        };
        assert_eq!(address_warning(&old, None), None);
        assert!(backup_lines(&old).contains("not recorded"));
    }
}
