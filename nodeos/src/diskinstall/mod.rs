//! Install to disk from the live ISO: `nodeos install-disk`, and the hook that makes PID 1
//! run it at boot (`cloudos.install=`, or an answer file on a partition labelled
//! `CLOUDOS-CFG`).
//!
//! The decisions (the answer file, the disk checks, the partition plan, the wizard) live
//! in the `cloudos-installer` crate; this module is the machine side of it:
//!
//! - `system`: [`cloudos_installer::System`] over sysfs, mDNS, TLS and the net state;
//! - `livenet`: a static network chosen in the installer, applied to the live system;
//! - `inplace`: setting up the medium the system runs from (the Pi's card);
//! - `medium`: the live medium (template, kernel, initramfs) and the answer file's source;
//! - `writer`: the ordered write of a checked plan (see its module comment);
//! - `ids`: this disk's own ESP volume id and data UUID;
//! - `terminal`: which console terminal the wizard runs on (the first to press Enter);
//! - `boot`: PID 1's side, which runs `nodeos install-disk` as a child process so that
//!   nothing in the installer can take PID 1 down.
//!
//! Disks, partitions, labels and ext4 come from `crate::blockdev`, which PID 1 shares.
//!
//! It must not touch a disk before the answers are checked and every input is read: a bad
//! answer file, a missing template or a wrong token leave the target as it was.

pub mod boot;
pub mod ids;
pub mod inplace;
pub mod livenet;
pub mod medium;
pub mod system;
pub mod terminal;
pub mod writer;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use cloudos_installer::wizard::WizardOutcome;
use cloudos_installer::{Answers, Plan, Source, Target};

use system::LiveSystem;

/// `nodeos install-disk`: install CloudOS to a disk of this machine from the live system.
#[derive(Debug, Clone, clap::Args)]
pub struct InstallDiskArgs {
    /// The answer file (TOML; see the installer's documentation).
    #[arg(long, conflicts_with_all = ["from", "wizard"])]
    pub answers: Option<PathBuf>,
    /// Where the answer file is: an http:// URL, or LABEL=NAME:/path for a file on a
    /// labelled partition (as `cloudos.install=` takes it).
    #[arg(long, alias = "answers-url", conflicts_with = "wizard")]
    pub from: Option<String>,
    /// Ask on the console, step by step.
    #[arg(long)]
    pub wizard: bool,
    /// Set up the medium this system runs from (a Raspberry Pi's SD card) instead of
    /// installing to a disk: no disk step; the settings go to its data partition.
    #[arg(long, requires = "wizard")]
    pub in_place: bool,
    /// Where to write the outcome (`ok <disk>` or `failed <reason>`), for PID 1.
    #[arg(long, hide = true)]
    pub report: Option<PathBuf>,
}

/// The last line the installer writes in its report file when it succeeded.
pub const REPORT_OK: &str = "ok";
pub const REPORT_FAILED: &str = "failed";
pub const REPORT_NOTHING: &str = "nothing";

/// How an install run ended, for PID 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Installed {
        disk: String,
    },
    /// The medium the system runs from got its settings (`--in-place`).
    Configured {
        medium: String,
    },
    /// The person chose to keep running live, or cancelled.
    NothingDone(String),
}

pub fn install_disk_main(args: InstallDiskArgs) -> anyhow::Result<()> {
    crate::logging::init_for_tool(false);
    let report = args.report.clone();
    let outcome = run(&args);
    if let Some(path) = report {
        let line = match &outcome {
            Ok(Outcome::Installed { disk }) => format!("{REPORT_OK} {disk}\n"),
            Ok(Outcome::Configured { medium }) => {
                format!("{REPORT_OK} settings written to {medium}\n")
            }
            Ok(Outcome::NothingDone(why)) => format!("{REPORT_NOTHING} {why}\n"),
            Err(e) => format!("{REPORT_FAILED} {}\n", one_line(&format!("{e:#}"))),
        };
        if let Err(e) = cloudos_cluster::files::write_atomic(&path, line.as_bytes()) {
            log::warn!("cannot write {}: {e}", path.display());
        }
    }
    match outcome {
        Ok(Outcome::Installed { disk }) => {
            println!("CloudOS is installed on {disk}; remove the install medium and reboot.");
            Ok(())
        }
        Ok(Outcome::Configured { medium }) => {
            println!("CloudOS is set up on {medium}; it restarts with the new settings.");
            Ok(())
        }
        Ok(Outcome::NothingDone(why)) => {
            println!("{why}");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn run(args: &InstallDiskArgs) -> anyhow::Result<Outcome> {
    let system = LiveSystem;
    if args.in_place {
        return set_up_in_place(&system);
    }
    let answers = if args.wizard {
        let tty = terminal::take_wizard_terminal()?;
        log::info!("install: the wizard runs on {tty}");
        let term = console::Term::stderr();
        match cloudos_installer::wizard::run(&term, &system, &Target::Disk)? {
            WizardOutcome::Install(answers) => answers,
            WizardOutcome::TryLive => {
                return Ok(Outcome::NothingDone(
                    "running live from RAM; nothing was written".into(),
                ))
            }
            WizardOutcome::Cancelled => {
                return Ok(Outcome::NothingDone(
                    "the install was cancelled; nothing was written".into(),
                ))
            }
        }
    } else {
        let (text, from) = match (&args.answers, &args.from) {
            (Some(path), _) => (
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the answer file {}", path.display()))?,
                path.display().to_string(),
            ),
            (None, Some(source)) => {
                let source: Source = source.parse()?;
                (medium::read_answers(&source)?, source.to_string())
            }
            (None, None) => bail!("give --answers FILE, --from SOURCE or --wizard"),
        };
        log::info!("install: answers from {from}");
        Answers::from_toml(&text).with_context(|| format!("in {from}"))?
    };
    let plan = cloudos_installer::validate(&answers, &system)?;
    install(&plan)?;
    Ok(Outcome::Installed {
        disk: plan.disk.path.clone(),
    })
}

/// The wizard on the medium the system runs from, then its settings on the data
/// partition (see `inplace`).
fn set_up_in_place(system: &LiveSystem) -> anyhow::Result<Outcome> {
    let target = inplace::target()?;
    let Target::InPlace { device, .. } = &target else {
        bail!("not an in-place target");
    };
    let medium = device.clone();
    let tty = terminal::take_wizard_terminal()?;
    log::info!("setup: the wizard runs on {tty}");
    let term = console::Term::stderr();
    let answers = match cloudos_installer::wizard::run(&term, system, &target)? {
        WizardOutcome::Install(answers) => answers,
        WizardOutcome::TryLive | WizardOutcome::Cancelled => {
            return Ok(Outcome::NothingDone(
                "not set up now; nothing was written (the wizard comes back at the next boot)"
                    .into(),
            ))
        }
    };
    let setup = cloudos_installer::validate_in_place(&answers, system)?;
    inplace::write_settings(&setup)?;
    Ok(Outcome::Configured { medium })
}

/// The node's config.toml: the answers' settings, and for a compute node its join token
/// (used by the first boot's join, as the settings key `token`).
pub fn settings_text(answers: &Answers) -> String {
    let mut text = answers.to_settings_toml();
    text.push_str(&answers.node_settings().toml_lines(&["token"]));
    text
}

/// The medium's signed manifest and signature, if it has both.
fn signed_manifest(medium: &Path) -> Option<[PathBuf; 2]> {
    let files = [medium::MANIFEST_PATH, medium::SIGNATURE_PATH].map(|p| medium.join(p));
    if files.iter().all(|f| f.is_file()) {
        Some(files)
    } else {
        log::warn!(
            "install: the medium has no signed release manifest (a build without a release \
             key): a master installed from it cannot offer its own release"
        );
        None
    }
}

/// The medium's etcd pack, if it has one (an ISO older than packs has none: a master
/// installed from it cannot run among several until it is upgraded).
fn etcd_pack(medium: &std::path::Path) -> Option<std::path::PathBuf> {
    let pack = medium.join(medium::ETCD_PACK_PATH);
    if pack.is_file() {
        Some(pack)
    } else {
        log::warn!(
            "install: the medium has no {}: this machine cannot be a master among several \
             until it is upgraded",
            medium::ETCD_PACK_PATH
        );
        None
    }
}

/// Writes a checked plan with the live medium's template and kernel.
pub fn install(plan: &Plan) -> anyhow::Result<()> {
    log::info!(
        "install: {} as {} on {} ({})",
        plan.answers.hostname,
        plan.answers.role.name(),
        plan.disk.path,
        cloudos_cluster::units::format_bytes(plan.disk.size_bytes)
    );
    let medium = medium::mount_medium()?;
    let inputs = writer::Inputs {
        template_gz: medium.dir.join(medium::TEMPLATE_PATH),
        kernel: medium.dir.join(medium::KERNEL_PATH),
        initramfs: medium.dir.join(medium::INITRAMFS_PATH),
        etcd_pack: etcd_pack(&medium.dir),
        signed: signed_manifest(&medium.dir),
    };
    if !inputs.template_gz.is_file() {
        bail!(
            "the live medium has no {} (an ISO built without image/disk.sh's template); \
             nothing was written",
            medium::TEMPLATE_PATH
        );
    }
    let mut settings = settings_text(&plan.answers);
    if let Some(restore) = &plan.restore {
        // The restored cluster's own name: the master reads it from the restored store,
        // and the settings say the same instead of the default name.
        let cluster = crate::settings::Settings {
            cluster: Some(restore.info.cluster.clone()),
            ..crate::settings::Settings::default()
        };
        settings.push_str(&cluster.toml_lines(&["cluster"]));
    }
    writer::write(plan, &inputs, &settings)?;
    drop(medium);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compute_nodes_settings_carry_its_token_last_and_read_back() {
        let token = format!("cloudos1_abcdef_{}_{}", "a".repeat(32), "5a".repeat(32));
        let answers = Answers::from_toml(&format!(
            "mode = \"compute\"\nhostname = \"c1\"\ndisk = \"/dev/vda\"\nwipe = true\n\
             token = \"{token}\"\n"
        ))
        .expect("valid");
        let text = settings_text(&answers);
        assert!(
            text.ends_with(&format!("\nnet = \"dhcp\"\ntoken = \"{token}\"\n")),
            "{text}"
        );
        let (settings, warnings) = crate::settings::Settings::load(Some(&text), "");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            settings.token.as_ref().map(|t| t.expose()),
            Some(token.as_str())
        );

        let master = Answers::from_toml(
            "mode = \"master\"\nhostname = \"m1\"\ndisk = \"/dev/vda\"\nwipe = true\n",
        )
        .expect("valid");
        assert_eq!(settings_text(&master), master.to_settings_toml());
    }
}
