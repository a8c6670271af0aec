//! The machine, as the installer sees it: one trait for every question that needs real
//! hardware or the network. The live system implements it over sysfs, mDNS and the
//! master's API; tests implement it with fixed answers, so the decisions above it (the
//! wizard's steps, [`crate::validate`]) are tested without a machine.

use std::fmt;
use std::net::IpAddr;

use cloudos_cluster::Token;
use cloudos_settings::Secret;

use crate::answers::NetworkAnswers;
use crate::disks::{Disk, DiskError};
use crate::restore::{BackupInfo, FoundBackup, OpenError};

/// Everything the installer asks of the machine. Errors are the reason, in words, as the
/// person will read it.
pub trait System {
    /// The machine's disks (the live system: [`crate::disks::list`] over `/sys`).
    fn disks(&self) -> Result<Vec<Disk>, DiskError>;

    /// The kernel name of the device the live system booted from (`sr0`, `sdb`, `sdb1`),
    /// if it is known, so it is never offered as a target.
    fn boot_medium(&self) -> Option<String>;

    /// The masters advertising `_cloudos._tcp` on the LAN.
    fn discover_masters(&self) -> Result<Vec<MasterInfo>, String>;

    /// Checks `token` with the master at `master` (`host:port`): its CA matches the token's
    /// pin (checked before anything secret is sent) and it accepts the token. Nothing is
    /// written or consumed.
    fn check_token(&self, master: &str, token: &Token) -> Result<(), String>;

    /// Applies `network` to the live system and checks it works (a link, an address, the
    /// gateway answers), so a wrong address is found before the install, not after. The
    /// wizard calls it, then [`crate::validate`] again with the same settings: applying
    /// them twice must be harmless.
    fn check_network(&self, network: &NetworkAnswers) -> Result<(), String>;

    /// Backup files (`*.age`) on the machine's labelled partitions (a USB stick, the
    /// config disk), named `LABEL=NAME:/path`. Partitions are only mounted read-only.
    fn find_backups(&self) -> Vec<FoundBackup>;

    /// The first line of the file at `source` (`/path` or `LABEL=NAME:/path`).
    fn read_passphrase(&self, source: &str) -> Result<Secret, String>;

    /// Opens the backup at `source` with `passphrase` and reads it to its authenticated
    /// end; says what it holds. Nothing is written.
    fn open_backup(&self, source: &str, passphrase: &Secret) -> Result<BackupInfo, OpenError>;
}

/// A master found by mDNS, with what its advertisement says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterInfo {
    /// The DNS-SD instance name.
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub cluster: String,
    /// The first hex digits of its CA pin (16 in the advertisement).
    pub pin_prefix: String,
}

impl MasterInfo {
    /// `address:port`, bracketed for IPv6, as the `master` setting takes it.
    pub fn endpoint(&self) -> String {
        match self.address {
            IpAddr::V4(a) => format!("{a}:{}", self.port),
            IpAddr::V6(a) => format!("[{a}]:{}", self.port),
        }
    }

    /// Whether the CA this master advertises is the one `token` pins. Only a prefix is
    /// advertised, so a match is a good hint, not proof: [`System::check_token`] checks the
    /// whole pin over TLS.
    pub fn matches_pin(&self, token: &Token) -> bool {
        let prefix = self.pin_prefix.trim().to_ascii_lowercase();
        !prefix.is_empty() && token.pin().to_hex().starts_with(&prefix)
    }
}

impl fmt::Display for MasterInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {}, cluster {}, CA pin {}...",
            self.name,
            self.endpoint(),
            self.cluster,
            self.pin_prefix
        )
    }
}
