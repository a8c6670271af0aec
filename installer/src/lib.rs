//! The CloudOS installer's core, shared by the TUI wizard and the unattended install.
//!
//! One code path: the wizard ([`wizard`]) produces the same [`Answers`] an answer file
//! gives ([`answers`]), and both go through [`validate`] into a [`Plan`] before anything is
//! written. The checks the wizard makes step by step are the functions below, so an answer
//! file is refused for exactly what the wizard refuses, with the same words.
//!
//! - [`answers`]: the answer file, its validation, the `config.toml` it becomes.
//! - [`disks`]: the machine's disks from sysfs and which are acceptable targets.
//! - [`plan`]: the partition layout and the exact GPT bytes.
//! - [`restore`]: a master installed from a backup: where it is, its passphrase, what it holds.
//! - [`system`]: the trait over everything that touches the machine or the network.
//! - [`wizard`]: the keyboard-driven dialogs (dialoguer) over that trait.
//!
//! Nothing here writes to a disk: the install step takes a [`Plan`] and does that.

pub mod answers;
pub mod disks;
pub mod plan;
pub mod restore;
pub mod system;
pub mod wizard;

use cloudos_cluster::Token;

pub use answers::{AnswerError, Answers, NetworkAnswers, RoleAnswers, Source};
pub use disks::{check_target, Bus, Disk, DiskError, DiskRefusal};
pub use plan::{gpt_tables, GptTables, PartitionPlan, PlanError, MIN_DISK_BYTES};
pub use restore::{BackupInfo, CheckedRestore, PassphraseSource, RestoreAnswers};
pub use system::{MasterInfo, System};
pub use wizard::{Target, WizardError, WizardOutcome};

/// Everything the install step needs, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub answers: Answers,
    /// The target disk as listed when the plan was made.
    pub disk: Disk,
    pub partitions: PartitionPlan,
    /// A compute node's master (`host:port`) whose CA and token were checked: the one the
    /// answers name, or the one found by mDNS. `None` for a master.
    pub master: Option<String>,
    /// A restored master's backup, opened with its passphrase: the install step restores
    /// it into the new data partition.
    pub restore: Option<CheckedRestore>,
}

/// Why an install is refused. Nothing has been written when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Answers(#[from] AnswerError),
    #[error(transparent)]
    ListDisks(#[from] DiskError),
    #[error(transparent)]
    Disk(#[from] DiskRefusal),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("the network settings do not work: {0}")]
    Network(String),
    #[error("cannot look for masters on the network: {0}")]
    Discovery(String),
    #[error(
        "no master of this token's cluster answered on the network (its CA pin starts \
         {pin_prefix}); {seen}; give the master's address with `master = \"host:port\"`"
    )]
    NoMaster { pin_prefix: String, seen: String },
    #[error(
        "{master} belongs to another cluster: its CA pin starts {master_pin}, the token's \
         {token_pin}; use a token created on that master with `cloudos token create`"
    )]
    OtherCluster {
        master: String,
        master_pin: String,
        token_pin: String,
    },
    #[error("the master at {master} refused the token: {why}")]
    Token { master: String, why: String },
    #[error("the backup {backup} cannot be restored: {why}")]
    Backup { backup: String, why: String },
    #[error(
        "restoring a master from a backup installs to a disk; choose \"Restore a master from \
         a backup\" on the installer's menu"
    )]
    RestoreInPlace,
}

/// Checks answers against this machine and makes the plan: the disk exists and may be
/// used, the network works, and a compute node's master is reachable, is of the token's
/// cluster and accepts the token. The wizard makes the same checks as it goes; its
/// answers are passed through here too before the install starts.
pub fn validate(answers: &Answers, system: &dyn System) -> Result<Plan, InstallError> {
    let disk = choose_disk(system, &answers.disk)?;
    let partitions = PartitionPlan::for_disk(disk.size_bytes / plan::SECTOR_SIZE)?;
    let master = check_network_and_role(answers, system)?;
    let restore = match &answers.role {
        RoleAnswers::Restore(restore) => Some(restore::check_restore(system, restore)?),
        _ => None,
    };
    Ok(Plan {
        answers: answers.clone(),
        disk,
        partitions,
        master,
        restore,
    })
}

/// Settings for the medium the system runs from (a Pi's SD card), checked: nothing is
/// partitioned, so only the network and the role are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    pub answers: Answers,
    /// As [`Plan::master`].
    pub master: Option<String>,
}

/// [`validate`] for [`wizard::Target::InPlace`]: the same network and join checks, and
/// no disk checks (the target is the boot medium, which an install to disk refuses).
pub fn validate_in_place(answers: &Answers, system: &dyn System) -> Result<Setup, InstallError> {
    if let RoleAnswers::Restore(_) = answers.role {
        return Err(InstallError::RestoreInPlace);
    }
    let master = check_network_and_role(answers, system)?;
    Ok(Setup {
        answers: answers.clone(),
        master,
    })
}

/// The network works, and a compute node's master is reachable, is of the token's cluster
/// and accepts the token; returns that master's `host:port`.
fn check_network_and_role(
    answers: &Answers,
    system: &dyn System,
) -> Result<Option<String>, InstallError> {
    system
        .check_network(&answers.network)
        .map_err(InstallError::Network)?;
    match &answers.role {
        // An added master's join is checked by the masters at its first start (a master
        // token is refused by a node's join check).
        RoleAnswers::Master { .. } | RoleAnswers::Restore(_) | RoleAnswers::AddMaster { .. } => {
            Ok(None)
        }
        RoleAnswers::Compute { token, master } => {
            let choice = match master {
                Some(address) => MasterChoice::Typed(address.clone()),
                None => {
                    let masters = system.discover_masters().map_err(InstallError::Discovery)?;
                    MasterChoice::Listed(find_master(&masters, token)?.clone())
                }
            };
            Ok(Some(check_join(system, &choice, token)?))
        }
    }
}

/// The unattended path: an answer file's text to a checked plan.
pub fn plan_from_toml(text: &str, system: &dyn System) -> Result<Plan, InstallError> {
    validate(&Answers::from_toml(text)?, system)
}

/// The disk at `path` (`/dev/vda`), if the machine has it and it may be installed to.
pub fn choose_disk(system: &dyn System, path: &str) -> Result<Disk, InstallError> {
    let disks = system.disks()?;
    let Some(disk) = disks.iter().find(|d| d.path == path) else {
        let available: Vec<&str> = disks.iter().map(|d| d.path.as_str()).collect();
        return Err(DiskRefusal::NotFound {
            path: path.to_owned(),
            available: if available.is_empty() {
                "none".into()
            } else {
                available.join(", ")
            },
        }
        .into());
    };
    check_target(disk, system.boot_medium().as_deref())?;
    Ok(disk.clone())
}

/// The first discovered master whose advertised CA pin is the token's.
pub fn find_master<'a>(
    masters: &'a [MasterInfo],
    token: &Token,
) -> Result<&'a MasterInfo, InstallError> {
    if let Some(found) = masters.iter().find(|m| m.matches_pin(token)) {
        return Ok(found);
    }
    let seen = if masters.is_empty() {
        "no master answered at all".to_owned()
    } else {
        let list: Vec<String> = masters.iter().map(MasterInfo::to_string).collect();
        format!("found only {}", list.join("; "))
    };
    Err(InstallError::NoMaster {
        pin_prefix: short_pin(token),
        seen,
    })
}

/// A master picked from the mDNS list must advertise the token's CA: a token for another
/// cluster is refused before the master is even asked.
pub fn check_master_pin(master: &MasterInfo, token: &Token) -> Result<(), InstallError> {
    if master.matches_pin(token) {
        return Ok(());
    }
    Err(InstallError::OtherCluster {
        master: master.to_string(),
        master_pin: master.pin_prefix.clone(),
        token_pin: short_pin(token),
    })
}

/// The master a compute node joins: picked from the mDNS list, or an address typed or
/// written in the answer file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterChoice {
    Listed(MasterInfo),
    /// `host:port`.
    Typed(String),
}

/// Checks that the chosen master takes `token`, before anything is written, and returns
/// its `host:port`. A listed master of another cluster is refused without dialing it.
pub fn check_join(
    system: &dyn System,
    master: &MasterChoice,
    token: &Token,
) -> Result<String, InstallError> {
    let endpoint = match master {
        MasterChoice::Listed(info) => {
            check_master_pin(info, token)?;
            info.endpoint()
        }
        MasterChoice::Typed(address) => address.clone(),
    };
    check_token(system, &endpoint, token)?;
    Ok(endpoint)
}

/// Asks the master at `master` (`host:port`) whether it takes `token`.
pub fn check_token(system: &dyn System, master: &str, token: &Token) -> Result<(), InstallError> {
    system
        .check_token(master, token)
        .map_err(|why| InstallError::Token {
            master: master.to_owned(),
            why,
        })
}

/// The first 16 hex digits of the token's CA pin, as masters advertise theirs.
fn short_pin(token: &Token) -> String {
    token.pin().to_hex().chars().take(16).collect()
}

#[cfg(test)]
pub(crate) mod testing {
    //! A fake machine for the tests of [`crate::validate`] and the wizard's steps.

    use std::cell::RefCell;
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::disks::tests::{disk, GIB};

    pub(crate) const PIN_A: &str =
        "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
    pub(crate) const PIN_B: &str =
        "9f86d08188888888888888888888888888888888888888888888888888888888";

    pub(crate) struct FakeSystem {
        pub disks: Vec<Disk>,
        pub boot_medium: Option<String>,
        pub masters: Vec<MasterInfo>,
        /// Masters (`host:port`) that answer, with the CA pin each serves.
        pub reachable: Vec<(String, String)>,
        pub network_error: Option<String>,
        /// Every master a token was checked with, in order.
        pub token_checks: RefCell<Vec<String>>,
        /// Backups on the machine: where, the passphrase that opens it, what it holds.
        pub backups: Vec<(String, String, BackupInfo)>,
        /// Passphrase files: where, the first line.
        pub passphrase_files: Vec<(String, String)>,
        /// Every backup opened, with the passphrase tried, in order.
        pub opened: RefCell<Vec<(String, String)>>,
    }

    impl Default for FakeSystem {
        fn default() -> Self {
            FakeSystem {
                disks: vec![
                    disk("sr0", 700 << 20),
                    disk("vda", 20 * GIB),
                    disk("vdb", GIB),
                ],
                boot_medium: Some("sr0".into()),
                masters: vec![master("m1", 1, PIN_A)],
                reachable: vec![("10.0.0.1:9443".into(), PIN_A.into())],
                network_error: None,
                token_checks: RefCell::new(Vec::new()),
                backups: vec![(
                    "LABEL=CLOUDOS-CFG:/lab.age".into(),
                    "correct horse battery staple".into(),
                    backup_info(),
                )],
                passphrase_files: vec![(
                    "LABEL=CLOUDOS-CFG:/pass".into(),
                    "correct horse battery staple".into(),
                )],
                opened: RefCell::new(Vec::new()),
            }
        }
    }

    /// What the fake's backup holds.
    pub(crate) fn backup_info() -> BackupInfo {
        BackupInfo {
            cluster: "lab".into(),
            ca_pin: format!("sha256:{PIN_A}"),
            created_at: "2026-12-06T10:00:00Z".into(),
            made_by: "0.1.0".into(),
            nodes: 2,
            services: 1,
            tasks: 3,
            admins: 1,
            master_addresses: vec!["10.0.0.5/24".parse().expect("cidr")],
        }
    }

    pub(crate) fn master(name: &str, last_octet: u8, pin: &str) -> MasterInfo {
        MasterInfo {
            name: name.into(),
            address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last_octet)),
            port: 9443,
            cluster: format!("{name}-cluster"),
            pin_prefix: pin[..16].into(),
        }
    }

    impl System for FakeSystem {
        fn disks(&self) -> Result<Vec<Disk>, DiskError> {
            Ok(self.disks.clone())
        }
        fn boot_medium(&self) -> Option<String> {
            self.boot_medium.clone()
        }
        fn discover_masters(&self) -> Result<Vec<MasterInfo>, String> {
            Ok(self.masters.clone())
        }
        fn check_token(&self, master: &str, token: &Token) -> Result<(), String> {
            self.token_checks.borrow_mut().push(master.to_owned());
            match self.reachable.iter().find(|(m, _)| m == master) {
                None => Err("no answer within 10s (connection timed out)".into()),
                Some((_, pin)) if *pin != token.pin().to_hex() => Err(format!(
                    "its CA pin is {pin}, not the token's; the token is for another cluster"
                )),
                Some(_) => Ok(()),
            }
        }
        fn check_network(&self, _: &NetworkAnswers) -> Result<(), String> {
            self.network_error.clone().map_or(Ok(()), Err)
        }
        fn find_backups(&self) -> Vec<crate::restore::FoundBackup> {
            self.backups
                .iter()
                .map(|(source, _, _)| crate::restore::FoundBackup {
                    source: source.clone(),
                    size_bytes: 12 << 10,
                })
                .collect()
        }
        fn read_passphrase(&self, source: &str) -> Result<cloudos_settings::Secret, String> {
            self.passphrase_files
                .iter()
                .find(|(s, _)| s == source)
                .map(|(_, line)| cloudos_settings::Secret::new(line.clone()))
                .ok_or_else(|| "no such file".to_owned())
        }
        fn open_backup(
            &self,
            source: &str,
            passphrase: &cloudos_settings::Secret,
        ) -> Result<BackupInfo, crate::restore::OpenError> {
            use crate::restore::OpenError;
            self.opened
                .borrow_mut()
                .push((source.to_owned(), passphrase.expose().to_owned()));
            match self.backups.iter().find(|(s, _, _)| s == source) {
                None => Err(OpenError::Unusable(format!(
                    "cannot open the backup {source}: no such file"
                ))),
                Some((_, pass, _)) if pass != passphrase.expose() => {
                    Err(OpenError::WrongPassphrase(format!(
                        "wrong passphrase: {source} does not open with it; nothing was restored"
                    )))
                }
                Some((_, _, info)) => Ok(info.clone()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::answers::tests::token_for_pin;

    fn compute(master: Option<&str>, pin: &str) -> String {
        let master = master
            .map(|m| format!("master = \"{m}\"\n"))
            .unwrap_or_default();
        format!(
            "mode = \"compute\"\nhostname = \"c1\"\ndisk = \"/dev/vda\"\nwipe = true\n\
             token = \"{}\"\n{master}",
            token_for_pin(pin)
        )
    }

    const MASTER: &str = "mode = \"master\"\nhostname = \"m1\"\ndisk = \"/dev/vda\"\nwipe = true\n";

    #[test]
    fn a_good_master_install_is_planned() {
        let plan = plan_from_toml(MASTER, &FakeSystem::default()).expect("plan");
        assert_eq!(plan.disk.path, "/dev/vda");
        assert_eq!(plan.partitions.disk_sectors, 20 * (1 << 30) / 512);
        assert_eq!(plan.master, None);
    }

    #[test]
    fn a_compute_node_finds_its_master_by_mdns() {
        let system = FakeSystem {
            masters: vec![master("other", 9, PIN_B), master("m1", 1, PIN_A)],
            ..FakeSystem::default()
        };
        let plan = plan_from_toml(&compute(None, PIN_A), &system).expect("plan");
        assert_eq!(plan.master.as_deref(), Some("10.0.0.1:9443"));
        assert_eq!(*system.token_checks.borrow(), ["10.0.0.1:9443"]);
    }

    #[test]
    fn a_named_master_is_asked_directly() {
        let system = FakeSystem {
            masters: Vec::new(),
            ..FakeSystem::default()
        };
        let plan = plan_from_toml(&compute(Some("10.0.0.1"), PIN_A), &system).expect("plan");
        assert_eq!(plan.master.as_deref(), Some("10.0.0.1:9443"));
    }

    /// Each bad input of issue 5 that an answer file can carry, refused before anything is
    /// written, with the reason in the message.
    #[test]
    fn bad_installs_are_refused_with_the_reason() {
        let system = FakeSystem::default();
        let cases: Vec<(String, FakeSystem, &[&str])> = vec![
            (
                MASTER.replace("\"m1\"", "\"-m1\""),
                FakeSystem::default(),
                &["hostname", "not a valid host name"],
            ),
            (
                MASTER.replace("/dev/vda", "/dev/vdb"),
                FakeSystem::default(),
                &["/dev/vdb is a disk of 1Gi, too small", "at least 4Gi"],
            ),
            (
                MASTER.replace("/dev/vda", "/dev/sr0"),
                FakeSystem::default(),
                &["/dev/sr0 holds the medium this installer booted from"],
            ),
            (
                MASTER.replace("/dev/vda", "/dev/sdz"),
                FakeSystem::default(),
                &["there is no disk /dev/sdz", "/dev/sr0, /dev/vda, /dev/vdb"],
            ),
            (
                MASTER.replace("wipe = true\n", ""),
                FakeSystem::default(),
                &["`wipe = true` is required"],
            ),
            (
                MASTER.replace("hostname", "hostnmae"),
                FakeSystem::default(),
                &["unknown field `hostnmae`"],
            ),
            (
                compute(Some("10.0.0.1"), PIN_B),
                FakeSystem::default(),
                &["10.0.0.1:9443 refused the token", "another cluster"],
            ),
            (
                compute(None, PIN_B),
                FakeSystem::default(),
                &[
                    "no master of this token's cluster",
                    "9f86d08188888888",
                    "found only m1",
                ],
            ),
            (
                compute(Some("10.0.0.2:9443"), PIN_A),
                FakeSystem::default(),
                &["10.0.0.2:9443 refused the token", "no answer"],
            ),
            (
                compute(None, PIN_A),
                FakeSystem {
                    masters: Vec::new(),
                    ..FakeSystem::default()
                },
                &["no master answered at all", "master = \"host:port\""],
            ),
            (
                MASTER.into(),
                FakeSystem {
                    network_error: Some("no link has a carrier".into()),
                    ..FakeSystem::default()
                },
                &["network settings do not work: no link has a carrier"],
            ),
        ];
        for (text, system, wanted) in cases {
            let err = plan_from_toml(&text, &system).expect_err(&text);
            let msg = format!("{err}");
            for want in wanted {
                assert!(msg.contains(want), "{text}\n→ {msg}\nwanted {want:?}");
            }
        }
        assert!(plan_from_toml(MASTER, &system).is_ok());
    }

    /// An answer file's restore: the passphrase file is read and the backup opened before
    /// the plan is made; a missing backup, a missing passphrase file and a wrong
    /// passphrase are each refused with the reason (nothing written: there is no plan).
    #[test]
    fn a_restore_opens_the_backup_before_the_plan_is_made() {
        use crate::answers::tests::RESTORE;
        let system = FakeSystem::default();
        let plan = plan_from_toml(RESTORE, &system).expect("plan");
        let restore = plan.restore.expect("restore");
        assert_eq!(restore.info, backup_info());
        assert_eq!(plan.master, None);
        assert_eq!(
            *system.opened.borrow(),
            [(
                "LABEL=CLOUDOS-CFG:/lab.age".to_owned(),
                "correct horse battery staple".to_owned()
            )]
        );

        let wrong = FakeSystem {
            passphrase_files: vec![("LABEL=CLOUDOS-CFG:/pass".into(), "guess".into())],
            ..FakeSystem::default()
        };
        let cases: Vec<(String, FakeSystem, &[&str])> = vec![
            (
                RESTORE.replace("/lab.age", "/gone.age"),
                FakeSystem::default(),
                &[
                    "the backup LABEL=CLOUDOS-CFG:/gone.age cannot be restored",
                    "no such file",
                ],
            ),
            (
                RESTORE.replace("/pass", "/nopass"),
                FakeSystem::default(),
                &["cannot read the passphrase file LABEL=CLOUDOS-CFG:/nopass"],
            ),
            (
                RESTORE.into(),
                wrong,
                &["wrong passphrase", "nothing was restored"],
            ),
        ];
        for (text, system, wanted) in cases {
            let msg = plan_from_toml(&text, &system).expect_err(&text).to_string();
            for want in wanted {
                assert!(msg.contains(want), "{text}\n-> {msg}\nwanted {want:?}");
            }
            assert!(!msg.contains("guess"), "{msg}");
        }
        let answers = Answers::from_toml(RESTORE).expect("answers");
        let err = validate_in_place(&answers, &FakeSystem::default()).expect_err("in place");
        assert!(err.to_string().contains("installs to a disk"), "{err}");
    }

    #[test]
    fn a_listed_master_of_another_cluster_is_refused_before_it_is_asked() {
        let token: Token = token_for_pin(PIN_B).parse().unwrap();
        let m = master("m1", 1, PIN_A);
        let err = check_master_pin(&m, &token)
            .expect_err("other cluster")
            .to_string();
        assert!(
            err.contains("belongs to another cluster")
                && err.contains("5a5a5a5a5a5a5a5a")
                && err.contains("9f86d08188888888"),
            "{err}"
        );
        let ok: Token = token_for_pin(PIN_A).parse().unwrap();
        assert!(check_master_pin(&m, &ok).is_ok());
    }
}
