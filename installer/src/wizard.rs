//! The interactive installer: keyboard-driven dialogs on the live system's console (screen
//! and serial line alike) that end in the same [`Answers`] an answer file gives.
//!
//! The steps are written against [`Prompts`] (select, type, confirm, show), so a scripted
//! run in the tests walks the very code a person does; [`Dialoguer`] is the real console.
//! Every decision (what a menu offers, what is refused and why, the summary) is a plain
//! function, and every check is the one [`crate::validate`] makes. Nothing is written here.

use cloudos_cluster::units::format_bytes;
use console::{style, Term};
use dialoguer::theme::ColorfulTheme;
use dialoguer::{Confirm, Input, Select};

use crate::answers::{
    check_cluster_name, check_hostname, check_token, parse_master_address, Answers, Ipv4Cidr,
    NetworkAnswers, RoleAnswers, DEFAULT_CLUSTER,
};
use crate::disks::{check_target, Disk, DiskRefusal};
use crate::restore::{
    address_warning, backup_lines, parse_backup_source, BackupInfo, CheckedRestore, OpenError,
    PassphraseSource, RestoreAnswers,
};
use crate::system::{MasterInfo, System};
use crate::{check_join, MasterChoice};

/// Where the wizard's answers go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Install to a disk of the machine, chosen in the wizard (the live ISO).
    Disk,
    /// Configure the medium the system runs from (a Raspberry Pi's SD card): no disk
    /// step; the answers become the settings on its data partition. `medium` names it
    /// for the person, as in "this SD card (/dev/mmcblk0)"; `device` is its path.
    InPlace { medium: String, device: String },
}

/// How the wizard ended.
// Returned once per run: boxing the answers would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WizardOutcome {
    /// Install with these answers (the wipe, or for [`Target::InPlace`] the new settings,
    /// was confirmed); pass them through [`crate::validate`] (or
    /// [`crate::validate_in_place`]) like an answer file's.
    Install(Answers),
    /// Keep running from RAM; nothing was written.
    TryLive,
    /// The person gave up; nothing was written.
    Cancelled,
}

/// The console broke down; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum WizardError {
    #[error("the console failed: {0}; an unattended install (cloudos.install=) needs no console")]
    Console(#[from] dialoguer::Error),
    #[error("cannot write to the console: {0}")]
    Write(#[from] std::io::Error),
}

/// The dialogs the wizard needs. [`Dialoguer`] shows them on a terminal.
pub trait Prompts {
    /// A menu; returns the chosen index.
    fn select(
        &mut self,
        prompt: &str,
        items: &[String],
        default: usize,
    ) -> Result<usize, WizardError>;
    /// A line of text; `check` says why a value is refused, and the question is asked again.
    fn input(
        &mut self,
        prompt: &str,
        default: Option<&str>,
        check: &dyn Fn(&str) -> Result<(), String>,
    ) -> Result<String, WizardError>;
    /// A line typed without echo (a passphrase); never shown, never a default.
    fn password(&mut self, prompt: &str) -> Result<String, WizardError>;
    /// Yes or no; no unless the person says yes.
    fn confirm(&mut self, prompt: &str) -> Result<bool, WizardError>;
    /// A line of information.
    fn say(&mut self, text: &str) -> Result<(), WizardError>;
    /// A refusal or failure, with its reason.
    fn warn(&mut self, text: &str) -> Result<(), WizardError>;
}

/// The first question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Master,
    Compute,
    /// A master restored from a backup: the same cluster on a new machine.
    Restore,
    TryLive,
}

impl Start {
    pub const ALL: [Start; 4] = [
        Start::Master,
        Start::Compute,
        Start::Restore,
        Start::TryLive,
    ];

    /// What the first menu offers: a restore only installs to a disk.
    pub fn offered(target: &Target) -> Vec<Start> {
        Start::ALL
            .into_iter()
            .filter(|s| *s != Start::Restore || *target == Target::Disk)
            .collect()
    }

    pub fn label(self, target: &Target) -> &'static str {
        match (self, target) {
            (Start::Master, Target::Disk) => "Install as master (creates a new cluster)",
            (Start::Compute, Target::Disk) => "Install as compute node (joins a master)",
            (Start::TryLive, Target::Disk) => "Try live (run from RAM, nothing is written)",
            (Start::Restore, _) => "Restore a master from a backup (the same cluster, new machine)",
            (Start::Master, Target::InPlace { .. }) => "Set up as master (creates a new cluster)",
            (Start::Compute, Target::InPlace { .. }) => "Set up as compute node (joins a master)",
            (Start::TryLive, Target::InPlace { .. }) => {
                "Not now (keep running unconfigured, nothing is written)"
            }
        }
    }
}

const NETWORK_ITEMS: [&str; 2] = [
    "DHCP (automatic address)",
    "Static address, gateway and DNS",
];
const AFTER_NO_ITEMS: [&str; 2] = ["Start over", "Cancel the install"];
const WORKLOADS_QUESTION: &str = "What runs on this machine?";
const WORKLOADS_ITEMS: [&str; 2] = [
    "The master and workloads (one machine is a whole cluster; add nodes any time)",
    "The master only (workloads run on compute nodes)",
];
const NO_DISK_ITEMS: [&str; 2] = ["Look again", "Cancel the install"];
const TOKEN_FAILED_ITEMS: [&str; 3] = [
    "Type the token again",
    "Choose another master",
    "Cancel the install",
];
const PASSPHRASE_FAILED_ITEMS: [&str; 3] = [
    "Type the passphrase again",
    "Choose another backup",
    "Cancel the install",
];
const TYPE_BACKUP_ITEM: &str = "Type where the backup is";
const TYPE_ADDRESS_ITEM: &str = "Type the master's address";
const LOOK_AGAIN_ITEM: &str = "Look again";
const CANCEL_ITEM: &str = "Cancel the install";

/// Runs the wizard on `term` (the live system passes `Term::stderr()`).
pub fn run(
    term: &Term,
    system: &dyn System,
    target: &Target,
) -> Result<WizardOutcome, WizardError> {
    run_with(&mut Dialoguer::new(term), system, target)
}

/// Runs the wizard over any [`Prompts`].
pub fn run_with(
    p: &mut dyn Prompts,
    system: &dyn System,
    target: &Target,
) -> Result<WizardOutcome, WizardError> {
    let starts = Start::offered(target);
    let start_items: Vec<String> = starts.iter().map(|s| s.label(target).to_owned()).collect();
    loop {
        let start = starts[p.select("What do you want to do?", &start_items, 0)?];
        if start == Start::TryLive {
            return Ok(WizardOutcome::TryLive);
        }
        // The backup first: its passphrase is checked before any other question, and its
        // master's address is the one offered for the network.
        let restore = match start {
            Start::Restore => match ask_backup(p, system)? {
                Some(restore) => Some(restore),
                None => return Ok(WizardOutcome::Cancelled),
            },
            _ => None,
        };
        let info = restore.as_ref().map(|r| &r.info);
        let hostname = ask(
            p,
            "Host name of this node",
            default_hostname(start),
            check_hostname,
        )?;
        let suggested = info.and_then(|i| i.master_addresses.first());
        let network = ask_network(p, system, suggested)?;
        let place = match target {
            Target::Disk => match ask_disk(p, system)? {
                Some(disk) => Place::Disk(disk),
                None => return Ok(WizardOutcome::Cancelled),
            },
            Target::InPlace { medium, device } => Place::InPlace { medium, device },
        };
        let role = match (start, &restore) {
            (Start::Compute, _) => match ask_join(p, system)? {
                Some(role) => role,
                None => return Ok(WizardOutcome::Cancelled),
            },
            (Start::Restore, Some(restore)) => RoleAnswers::Restore(RestoreAnswers {
                backup: restore.backup.clone(),
                passphrase: PassphraseSource::Typed(restore.passphrase.clone()),
            }),
            _ => {
                let cluster = ask(p, "Cluster name", Some(DEFAULT_CLUSTER), check_cluster_name)?;
                // The first machine of a cluster runs workloads by default: one machine
                // is then a whole cluster, and compute nodes can join it later.
                let workloads = p.select(WORKLOADS_QUESTION, &labels(WORKLOADS_ITEMS), 0)? == 0;
                RoleAnswers::Master { cluster, workloads }
            }
        };
        let answers = Answers {
            hostname,
            network,
            disk: place.device().to_owned(),
            role,
            labels: Vec::new(),
            insecure_registries: Vec::new(),
        };
        let (shown, question) = match &place {
            Place::Disk(disk) => (summary(&answers, disk, info), wipe_prompt(disk)),
            Place::InPlace { medium, .. } => (
                summary_in_place(&answers, medium),
                format!("Write these settings to {medium} and restart?"),
            ),
        };
        p.say(&shown)?;
        if p.confirm(&question)? {
            return Ok(WizardOutcome::Install(answers));
        }
        if p.select("Nothing was written. What now?", &labels(AFTER_NO_ITEMS), 0)? != 0 {
            return Ok(WizardOutcome::Cancelled);
        }
    }
}

/// Where this run's answers go, once known.
enum Place<'a> {
    Disk(Disk),
    InPlace { medium: &'a str, device: &'a str },
}

impl Place<'_> {
    fn device(&self) -> &str {
        match self {
            Place::Disk(disk) => &disk.path,
            Place::InPlace { device, .. } => device,
        }
    }
}

/// Asks until `check` accepts, and returns what it made of the text.
fn ask<T>(
    p: &mut dyn Prompts,
    prompt: &str,
    default: Option<&str>,
    check: impl Fn(&str) -> Result<T, String>,
) -> Result<T, WizardError> {
    loop {
        let typed = p.input(prompt, default, &|s| check(s).map(|_| ()))?;
        match check(&typed) {
            Ok(value) => return Ok(value),
            Err(why) => p.warn(&why)?,
        }
    }
}

/// The network; `suggested` (a restored master's old address) is offered as the static
/// address, and static is then the menu's default.
fn ask_network(
    p: &mut dyn Prompts,
    system: &dyn System,
    suggested: Option<&Ipv4Cidr>,
) -> Result<NetworkAnswers, WizardError> {
    let suggested = suggested.map(ToString::to_string);
    loop {
        let default = usize::from(suggested.is_some());
        let network = if p.select("Network", &labels(NETWORK_ITEMS), default)? == 0 {
            NetworkAnswers::Dhcp
        } else {
            NetworkAnswers::Static {
                address: ask(
                    p,
                    "Address with prefix length, as in 10.0.0.5/24",
                    suggested.as_deref(),
                    |s| s.parse::<Ipv4Cidr>(),
                )?,
                gateway: ask(p, "Gateway (empty for none)", None, parse_optional_ipv4)?,
                dns: ask(
                    p,
                    "DNS servers, separated by spaces (empty for none)",
                    None,
                    parse_dns,
                )?,
            }
        };
        p.say("Checking the network...")?;
        match system.check_network(&network) {
            Ok(()) => return Ok(network),
            Err(why) => p.warn(&format!("the network does not work: {why}; choose again"))?,
        }
    }
}

fn ask_disk(p: &mut dyn Prompts, system: &dyn System) -> Result<Option<Disk>, WizardError> {
    loop {
        let disks = match system.disks() {
            Ok(disks) => disks,
            Err(e) => {
                p.warn(&e.to_string())?;
                Vec::new()
            }
        };
        let items = disk_items(&disks, system.boot_medium().as_deref());
        if items.is_empty() {
            p.warn("no disk found to install to")?;
            if p.select("What now?", &labels(NO_DISK_ITEMS), 0)? == 0 {
                continue;
            }
            return Ok(None);
        }
        let default = items.iter().position(|i| i.refusal.is_none()).unwrap_or(0);
        let shown: Vec<String> = items.iter().map(DiskItem::label).collect();
        let chosen = &items[p.select(
            "Install to which disk? Everything on it will be erased",
            &shown,
            default,
        )?];
        match &chosen.refusal {
            None => return Ok(Some(chosen.disk.clone())),
            Some(refusal) => p.warn(&refusal.to_string())?,
        }
    }
}

/// The backup to restore, opened with its passphrase; `None` when the person cancels. A
/// wrong passphrase is asked again; a backup that cannot be used sends back to the list.
/// Nothing is written: the backup is only read.
fn ask_backup(
    p: &mut dyn Prompts,
    system: &dyn System,
) -> Result<Option<CheckedRestore>, WizardError> {
    loop {
        p.say("Looking for backups (*.age) on the machine's partitions...")?;
        let found = system.find_backups();
        if found.is_empty() {
            p.say("No backup found; attach the USB stick holding it and look again, or type where it is.")?;
        }
        let items: Vec<String> = found
            .iter()
            .map(|f| format!("{}  {}", f.source, format_bytes(f.size_bytes)))
            .chain([TYPE_BACKUP_ITEM, LOOK_AGAIN_ITEM, CANCEL_ITEM].map(str::to_owned))
            .collect();
        let chosen = p.select("Which backup should be restored?", &items, 0)?;
        let backup = match found.get(chosen) {
            Some(f) => f.source.clone(),
            None => match chosen - found.len() {
                0 => ask(
                    p,
                    "Backup file (/path, or LABEL=NAME:/path on a partition)",
                    None,
                    parse_backup_source,
                )?,
                1 => continue,
                _ => return Ok(None),
            },
        };
        loop {
            let typed = cloudos_settings::Secret::new(p.password("Passphrase of the backup")?);
            p.say("Opening the backup...")?;
            match system.open_backup(&backup, &typed) {
                Ok(info) => {
                    p.say(&format!(
                        "\nThe backup {backup} opened. It holds:\n{}",
                        backup_lines(&info)
                    ))?;
                    return Ok(Some(CheckedRestore {
                        backup,
                        passphrase: typed,
                        info,
                    }));
                }
                Err(OpenError::WrongPassphrase(why)) => {
                    p.warn(&why)?;
                    match p.select("What now?", &labels(PASSPHRASE_FAILED_ITEMS), 0)? {
                        0 => continue,
                        1 => break,
                        _ => return Ok(None),
                    }
                }
                Err(OpenError::Unusable(why)) => {
                    p.warn(&why)?;
                    break;
                }
            }
        }
    }
}

/// The master and a token it takes; `None` when the person cancels.
fn ask_join(p: &mut dyn Prompts, system: &dyn System) -> Result<Option<RoleAnswers>, WizardError> {
    loop {
        let Some(master) = ask_master(p, system)? else {
            return Ok(None);
        };
        loop {
            let token = ask(
                p,
                "Join token (printed by `cloudos token create` on the master)",
                None,
                check_token,
            )?;
            p.say("Checking the token with the master...")?;
            match check_join(system, &master, &token) {
                Ok(endpoint) => {
                    return Ok(Some(RoleAnswers::Compute {
                        token,
                        master: Some(endpoint),
                    }))
                }
                Err(why) => p.warn(&why.to_string())?,
            }
            match p.select("What now?", &labels(TOKEN_FAILED_ITEMS), 0)? {
                0 => continue,
                1 => break,
                _ => return Ok(None),
            }
        }
    }
}

/// `None` when the person cancels.
fn ask_master(
    p: &mut dyn Prompts,
    system: &dyn System,
) -> Result<Option<MasterChoice>, WizardError> {
    loop {
        p.say("Looking for masters on the network...")?;
        let masters = match system.discover_masters() {
            Ok(masters) => masters,
            Err(why) => {
                p.warn(&format!("cannot look for masters: {why}"))?;
                Vec::new()
            }
        };
        if masters.is_empty() {
            p.say("No master answered; type its address, or look again.")?;
        }
        let chosen = p.select(
            "Which master should this node join?",
            &master_items(&masters),
            0,
        )?;
        if let Some(master) = masters.get(chosen) {
            return Ok(Some(MasterChoice::Listed(master.clone())));
        }
        match chosen - masters.len() {
            0 => {
                let address = ask(
                    p,
                    "Master address (host or host:port)",
                    None,
                    parse_master_address,
                )?;
                return Ok(Some(MasterChoice::Typed(address)));
            }
            1 => continue,
            _ => return Ok(None),
        }
    }
}

fn labels<const N: usize>(items: [&str; N]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// A name to offer: a cluster usually has one master; compute nodes need distinct names,
/// so none is offered for them.
pub fn default_hostname(start: Start) -> Option<&'static str> {
    match start {
        Start::Master | Start::Restore => Some("cloudos-master"),
        _ => None,
    }
}

/// A disk as the menu shows it, with the reason it cannot be chosen, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskItem {
    pub disk: Disk,
    pub refusal: Option<DiskRefusal>,
}

impl DiskItem {
    pub fn label(&self) -> String {
        match &self.refusal {
            None => self.disk.describe(),
            Some(refusal) => format!(
                "{}  [cannot use: {}]",
                self.disk.describe(),
                short_reason(refusal)
            ),
        }
    }
}

/// Every disk, each checked with [`check_target`] as an answer file's disk would be.
pub fn disk_items(disks: &[Disk], boot_medium: Option<&str>) -> Vec<DiskItem> {
    disks
        .iter()
        .map(|disk| DiskItem {
            disk: disk.clone(),
            refusal: check_target(disk, boot_medium).err(),
        })
        .collect()
}

/// The refusal without the device path, which the line already shows.
fn short_reason(refusal: &DiskRefusal) -> String {
    match refusal {
        DiskRefusal::TooSmall { .. } => {
            format!("smaller than {}", format_bytes(crate::MIN_DISK_BYTES))
        }
        DiskRefusal::ReadOnly { .. } => "read-only".into(),
        DiskRefusal::BootMedium { .. } => "the installer runs from it".into(),
        DiskRefusal::SectorSize { size, .. } => format!("{size}-byte sectors"),
        DiskRefusal::NotFound { .. } => "gone".into(),
    }
}

/// The mDNS list, then typing an address, looking again, and cancelling.
pub fn master_items(masters: &[MasterInfo]) -> Vec<String> {
    masters
        .iter()
        .map(|m| {
            format!(
                "{}  {}  cluster {}  CA pin {}...",
                m.name,
                m.endpoint(),
                m.cluster,
                m.pin_prefix
            )
        })
        .chain([TYPE_ADDRESS_ITEM, LOOK_AGAIN_ITEM, CANCEL_ITEM].map(str::to_owned))
        .collect()
}

/// What will be installed, shown before the wipe is confirmed, with what a restored
/// master's backup holds. Names the token by its id only: the secret is never shown.
pub fn summary(answers: &Answers, disk: &Disk, restored: Option<&BackupInfo>) -> String {
    let restored = restored
        .map(|info| {
            let address = match &answers.network {
                NetworkAnswers::Static { address, .. } => Some(address),
                NetworkAnswers::Dhcp => None,
            };
            let warning = address_warning(info, address)
                .map(|w| format!("  ! {w}\n"))
                .unwrap_or_default();
            format!("The backup restored:\n{}{warning}", backup_lines(info))
        })
        .unwrap_or_default();
    format!(
        "\nAbout to install CloudOS:\n{}  disk       {}\n{restored}{}",
        summary_lines(answers),
        disk.describe().trim_end(),
        first_start_note(answers)
    )
}

/// What will be configured on the medium the system runs from.
pub fn summary_in_place(answers: &Answers, medium: &str) -> String {
    format!(
        "\nAbout to set up CloudOS on {medium}:\n{}  The data on it is kept; the node restarts \
         with these settings.\n{}",
        summary_lines(answers),
        first_start_note(answers)
    )
}

fn summary_lines(answers: &Answers) -> String {
    let role = match &answers.role {
        RoleAnswers::Master {
            cluster,
            workloads: true,
        } => format!("master of a new cluster \"{cluster}\", runs workloads too"),
        RoleAnswers::Master { cluster, .. } => format!("master of a new cluster \"{cluster}\""),
        RoleAnswers::Compute { token, master } => format!(
            "compute node joining {} with token {}",
            master.as_deref().unwrap_or("the master found by mDNS"),
            token.id()
        ),
        RoleAnswers::Restore(restore) => {
            format!("master restoring the backup {}", restore.backup)
        }
        RoleAnswers::AddMaster { token, master } => format!(
            "master added to the masters of {master} with token {}",
            token.id()
        ),
    };
    let network = match &answers.network {
        NetworkAnswers::Dhcp => "DHCP".to_owned(),
        NetworkAnswers::Static {
            address,
            gateway,
            dns,
        } => {
            let gateway = gateway.map_or("none".to_owned(), |g| g.to_string());
            let dns: Vec<String> = dns.iter().map(|d| d.to_string()).collect();
            let dns = if dns.is_empty() {
                "none".to_owned()
            } else {
                dns.join(", ")
            };
            format!("static {address}, gateway {gateway}, DNS {dns}")
        }
    };
    format!(
        "  role       {role}\n  host name  {}\n  network    {network}\n",
        answers.hostname
    )
}

/// What a master does at its first start. Its CA and first admin token are made by the
/// master itself, so the secret never exists on the install medium.
fn first_start_note(answers: &Answers) -> &'static str {
    match &answers.role {
        RoleAnswers::Master { .. } => {
            "At its first start the master creates the cluster and shows its CA pin and a\n\
             one-use admin token on this console (`cloudos login --token ...`).\n"
        }
        RoleAnswers::Compute { .. } => "",
        RoleAnswers::AddMaster { .. } => {
            "At its first start the master joins the masters, receives the cluster through\n\
             etcd and serves the same API; no new admin token.\n"
        }
        RoleAnswers::Restore(_) => {
            "The backup is restored into the new disk as it is installed. At its first start\n\
             the master serves the same cluster: its nodes reconnect with the certificates\n\
             they hold, and admins log in with `cloudos` as before. No new admin token.\n"
        }
    }
}

/// The last question before anything is written.
pub fn wipe_prompt(disk: &Disk) -> String {
    format!(
        "Erase everything on {} ({}{}) and install CloudOS?",
        disk.path,
        format_bytes(disk.size_bytes),
        disk.model
            .as_deref()
            .map(|m| format!(", {m}"))
            .unwrap_or_default()
    )
}

/// An optional IPv4 address: empty means none.
pub fn parse_optional_ipv4(text: &str) -> Result<Option<std::net::Ipv4Addr>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("{text:?} is not an IPv4 address"))
}

/// IPv4 addresses separated by spaces or commas; empty means none.
pub fn parse_dns(text: &str) -> Result<Vec<std::net::Ipv4Addr>, String> {
    text.split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| format!("{s:?} is not an IPv4 address"))
        })
        .collect()
}

/// The real console, through dialoguer.
pub struct Dialoguer<'a> {
    term: &'a Term,
    theme: ColorfulTheme,
}

impl<'a> Dialoguer<'a> {
    pub fn new(term: &'a Term) -> Self {
        Dialoguer {
            term,
            theme: console_theme(),
        }
    }
}

/// dialoguer's colourful theme with ASCII marks: the Linux console's default font and many
/// serial terminals lack glyphs such as ❯ and ✔.
pub fn console_theme() -> ColorfulTheme {
    ColorfulTheme {
        prompt_suffix: style(">".to_owned()).for_stderr().bold(),
        success_prefix: style("+".to_owned()).for_stderr().green(),
        success_suffix: style(":".to_owned()).for_stderr(),
        error_prefix: style("!".to_owned()).for_stderr().red(),
        active_item_prefix: style(">".to_owned()).for_stderr().green(),
        picked_item_prefix: style(">".to_owned()).for_stderr().green(),
        checked_item_prefix: style("[x]".to_owned()).for_stderr().green(),
        unchecked_item_prefix: style("[ ]".to_owned()).for_stderr(),
        ..ColorfulTheme::default()
    }
}

impl Prompts for Dialoguer<'_> {
    fn select(
        &mut self,
        prompt: &str,
        items: &[String],
        default: usize,
    ) -> Result<usize, WizardError> {
        Ok(Select::with_theme(&self.theme)
            .with_prompt(prompt)
            .items(items)
            .default(default)
            .interact_on(self.term)?)
    }

    fn input(
        &mut self,
        prompt: &str,
        default: Option<&str>,
        check: &dyn Fn(&str) -> Result<(), String>,
    ) -> Result<String, WizardError> {
        // A visible Input, not a password field, for the token too: it is pasted or typed
        // from another screen, and a 100-character string typed blind cannot be checked.
        let mut input = Input::<String>::with_theme(&self.theme)
            .with_prompt(prompt)
            .allow_empty(true)
            .validate_with(|s: &String| check(s));
        if let Some(default) = default {
            input = input.default(default.to_owned());
        }
        Ok(input.interact_text_on(self.term)?)
    }

    fn password(&mut self, prompt: &str) -> Result<String, WizardError> {
        // console's own no-echo read: dialoguer's Password needs its "password" feature.
        self.term.write_str(&format!("{prompt}: "))?;
        let text = self.term.read_secure_line()?;
        Ok(text)
    }

    fn confirm(&mut self, prompt: &str) -> Result<bool, WizardError> {
        // Enter after y: a stray key press must not erase a disk.
        Ok(Confirm::with_theme(&self.theme)
            .with_prompt(prompt)
            .default(false)
            .wait_for_newline(true)
            .interact_on(self.term)?)
    }

    fn say(&mut self, text: &str) -> Result<(), WizardError> {
        Ok(self.term.write_line(text)?)
    }

    fn warn(&mut self, text: &str) -> Result<(), WizardError> {
        Ok(self.term.write_line(&format!(
            "{} {}",
            style("!").red().bold(),
            style(text).red()
        ))?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::answers::tests::token_for_pin;
    use crate::disks::tests::{disk, GIB};
    use crate::testing::{master, FakeSystem, PIN_A, PIN_B};

    /// One scripted answer: pick the menu item containing the text, type a line, or answer
    /// the confirmation.
    enum Step {
        Pick(&'static str),
        Type(String),
        Yes,
        No,
    }
    use Step::*;

    fn typed(s: &str) -> Step {
        Type(s.to_owned())
    }

    /// A person at the console, following a script; what the wizard showed is kept.
    struct Script {
        steps: VecDeque<Step>,
        shown: Vec<String>,
    }

    impl Script {
        fn run(steps: Vec<Step>, system: &FakeSystem) -> (WizardOutcome, Vec<String>) {
            Script::run_for(&Target::Disk, steps, system)
        }

        fn run_for(
            target: &Target,
            steps: Vec<Step>,
            system: &FakeSystem,
        ) -> (WizardOutcome, Vec<String>) {
            let mut script = Script {
                steps: steps.into(),
                shown: Vec::new(),
            };
            let outcome = run_with(&mut script, system, target).expect("wizard");
            assert!(
                script.steps.is_empty(),
                "script not used up: {:?}",
                script.shown
            );
            (outcome, script.shown)
        }

        fn next(&mut self, prompt: &str) -> Step {
            self.steps
                .pop_front()
                .unwrap_or_else(|| panic!("script ran out at {prompt:?}; shown: {:#?}", self.shown))
        }
    }

    impl Prompts for Script {
        fn select(
            &mut self,
            prompt: &str,
            items: &[String],
            _: usize,
        ) -> Result<usize, WizardError> {
            let Pick(text) = self.next(prompt) else {
                panic!("{prompt:?} is a menu: {items:?}")
            };
            for shown in items.iter().map(String::as_str).chain([prompt]) {
                assert_the_console_font_has(shown);
            }
            let i = items
                .iter()
                .position(|item| item.contains(text))
                .unwrap_or_else(|| panic!("{prompt:?} has no {text:?}: {items:?}"));
            self.shown.push(format!("? {prompt} -> {}", items[i]));
            Ok(i)
        }

        fn input(
            &mut self,
            prompt: &str,
            default: Option<&str>,
            check: &dyn Fn(&str) -> Result<(), String>,
        ) -> Result<String, WizardError> {
            assert_the_console_font_has(prompt);
            assert_the_console_font_has(default.unwrap_or_default());
            // As dialoguer does: a refused line shows the reason and the question stays.
            loop {
                let Type(text) = self.next(prompt) else {
                    panic!("{prompt:?} wants text")
                };
                let value = match default {
                    Some(d) if text.is_empty() => d.to_owned(),
                    _ => text,
                };
                match check(&value) {
                    Ok(()) => return Ok(value),
                    Err(why) => {
                        assert_the_console_font_has(&why);
                        self.shown.push(format!("! {why}"))
                    }
                }
            }
        }

        fn password(&mut self, prompt: &str) -> Result<String, WizardError> {
            assert_the_console_font_has(prompt);
            let Type(text) = self.next(prompt) else {
                panic!("{prompt:?} wants text")
            };
            // What the console shows: the prompt, never the text.
            self.shown.push(format!("? {prompt}: (not echoed)"));
            Ok(text)
        }

        fn confirm(&mut self, prompt: &str) -> Result<bool, WizardError> {
            assert_the_console_font_has(prompt);
            self.shown.push(format!("? {prompt}"));
            match self.next(prompt) {
                Yes => Ok(true),
                No => Ok(false),
                _ => panic!("{prompt:?} wants yes or no"),
            }
        }

        fn say(&mut self, text: &str) -> Result<(), WizardError> {
            assert_the_console_font_has(text);
            self.shown.push(text.to_owned());
            Ok(())
        }

        fn warn(&mut self, text: &str) -> Result<(), WizardError> {
            assert_the_console_font_has(text);
            self.shown.push(format!("! {text}"));
            Ok(())
        }
    }

    /// The Linux console's default font (VGA, code page 437) draws printable ASCII for
    /// sure; a character it lacks is drawn as `?` (an ellipsis, a check mark, a pointer).
    /// Every scripted run checks every text the wizard shows with this.
    fn assert_the_console_font_has(text: &str) {
        let missing: Vec<char> = text
            .chars()
            .filter(|c| !(c.is_ascii_graphic() || *c == ' ' || *c == '\n'))
            .collect();
        assert!(
            missing.is_empty(),
            "the console font lacks {missing:?} in {text:?}"
        );
    }

    /// The theme's marks, with its colours taken out, are in the console font too.
    #[test]
    fn the_theme_draws_only_what_the_console_font_has() {
        use dialoguer::theme::Theme;
        let theme = console_theme();
        let mut drawn = String::new();
        for active in [true, false] {
            theme
                .format_select_prompt_item(&mut drawn, "item", active)
                .unwrap();
        }
        theme.format_select_prompt(&mut drawn, "pick").unwrap();
        theme
            .format_select_prompt_selection(&mut drawn, "pick", "item")
            .unwrap();
        theme
            .format_input_prompt(&mut drawn, "name", Some("default"))
            .unwrap();
        theme
            .format_input_prompt_selection(&mut drawn, "name", "value")
            .unwrap();
        theme
            .format_confirm_prompt(&mut drawn, "sure", Some(false))
            .unwrap();
        theme
            .format_confirm_prompt_selection(&mut drawn, "sure", Some(true))
            .unwrap();
        theme.format_error(&mut drawn, "refused").unwrap();
        assert_the_console_font_has(&console::strip_ansi_codes(&drawn));
    }

    fn shows(shown: &[String], text: &str) -> bool {
        shown.iter().any(|line| line.contains(text))
    }

    fn card() -> Target {
        Target::InPlace {
            medium: "this SD card (/dev/mmcblk0)".into(),
            device: "/dev/mmcblk0".into(),
        }
    }

    /// On a Pi the card is the target: no disk step, the settings are confirmed instead
    /// of a wipe, and the answers pass `validate_in_place` (the card is the boot medium,
    /// which `validate` would refuse).
    #[test]
    fn in_place_there_is_no_disk_step_and_nothing_is_wiped() {
        let system = FakeSystem {
            masters: vec![master("m1", 1, PIN_A)],
            ..FakeSystem::default()
        };
        let token = token_for_pin(PIN_A);
        let (outcome, shown) = Script::run_for(
            &card(),
            vec![
                Pick("compute"),
                typed("pi-1"),
                Pick("DHCP"),
                Pick("m1"),
                typed(&token),
                Yes,
            ],
            &system,
        );
        let WizardOutcome::Install(answers) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(answers.disk, "/dev/mmcblk0");
        assert_eq!(answers.hostname, "pi-1");
        let setup = crate::validate_in_place(&answers, &system).expect("setup");
        assert_eq!(setup.master.as_deref(), Some("10.0.0.1:9443"));
        assert!(shows(
            &shown,
            "About to set up CloudOS on this SD card (/dev/mmcblk0)"
        ));
        assert!(shows(&shown, "The data on it is kept"));
        assert!(!shows(&shown, "Install to which disk"), "{shown:#?}");
        assert!(!shows(&shown, "Erase"), "{shown:#?}");
        assert!(!shows(&shown, &token), "the secret was shown: {shown:#?}");
    }

    #[test]
    fn in_place_not_now_writes_nothing() {
        let (outcome, _) = Script::run_for(&card(), vec![Pick("Not now")], &FakeSystem::default());
        assert_eq!(outcome, WizardOutcome::TryLive);
        let (outcome, shown) = Script::run_for(
            &card(),
            vec![
                Pick("master"),
                typed("pi-m"),
                Pick("DHCP"),
                typed("lab"),
                Pick("The master and workloads"),
                No,
                Pick("Cancel"),
            ],
            &FakeSystem::default(),
        );
        assert_eq!(outcome, WizardOutcome::Cancelled);
        assert!(shows(
            &shown,
            "Write these settings to this SD card (/dev/mmcblk0) and restart?"
        ));
    }

    #[test]
    fn try_live_writes_nothing() {
        let (outcome, _) = Script::run(vec![Pick("Try live")], &FakeSystem::default());
        assert_eq!(outcome, WizardOutcome::TryLive);
    }

    #[test]
    fn a_master_install_gives_the_answer_file_answers() {
        let system = FakeSystem::default();
        let (outcome, shown) = Script::run(
            vec![
                Pick("master"),
                typed("-bad-"),
                typed("M1"),
                Pick("DHCP"),
                Pick("/dev/vdb"),
                Pick("/dev/sr0"),
                Pick("/dev/vda"),
                typed("no_good"),
                typed(""),
                Pick("The master and workloads"),
                Yes,
            ],
            &system,
        );
        let WizardOutcome::Install(answers) = outcome else {
            panic!("{outcome:?}")
        };
        // The same answers the equivalent file gives, and the same plan from validate.
        let file = Answers::from_toml(
            "mode = \"master\"\nhostname = \"m1\"\ndisk = \"/dev/vda\"\nwipe = true\nworkloads = true\n",
        )
        .expect("file");
        assert_eq!(answers, file);
        assert_eq!(
            crate::validate(&answers, &system).expect("plan").disk.path,
            "/dev/vda"
        );

        for text in [
            "not a valid host name",
            "/dev/vdb is a disk of 1Gi, too small: CloudOS needs at least 4Gi",
            "/dev/sr0 holds the medium this installer booted from",
            "not a valid cluster name",
            "master of a new cluster \"cloudos\", runs workloads too",
            "shows its CA pin and a\none-use admin token on this console",
            "Erase everything on /dev/vda (20Gi) and install CloudOS?",
        ] {
            assert!(shows(&shown, text), "{text:?} not in {shown:#?}");
        }
    }

    #[test]
    fn a_compute_node_picks_its_master_and_retries_a_wrong_token() {
        let system = FakeSystem {
            masters: vec![master("m1", 1, PIN_A), master("other", 9, PIN_B)],
            ..FakeSystem::default()
        };
        let (outcome, shown) = Script::run(
            vec![
                Pick("compute"),
                typed("c1"),
                Pick("Static"),
                typed("10.0.0.5"),
                typed("10.0.0.5/24"),
                typed("gw"),
                typed("10.0.0.1"),
                typed("10.0.0.53, 1.1.1.1"),
                Pick("/dev/vda"),
                Pick("m1"),
                typed("cloudos1_abcdef_tooshort"),
                typed(&token_for_pin(PIN_B)),
                Pick("Type the token again"),
                typed(&token_for_pin(PIN_A)),
                Yes,
            ],
            &system,
        );
        let WizardOutcome::Install(answers) = outcome else {
            panic!("{outcome:?}")
        };
        let file = Answers::from_toml(&format!(
            "mode = \"compute\"\nhostname = \"c1\"\ndisk = \"/dev/vda\"\nwipe = true\n\
             token = \"{}\"\nmaster = \"10.0.0.1:9443\"\n[network]\nmode = \"static\"\n\
             address = \"10.0.0.5/24\"\ngateway = \"10.0.0.1\"\ndns = [\"10.0.0.53\", \"1.1.1.1\"]\n",
            token_for_pin(PIN_A)
        ))
        .expect("file");
        assert_eq!(answers, file);
        // The token for the other cluster was refused from the advertised pin alone.
        assert_eq!(*system.token_checks.borrow(), ["10.0.0.1:9443"]);
        for text in [
            "needs a prefix length",
            "\"gw\" is not an IPv4 address",
            "not a CloudOS join token",
            "belongs to another cluster",
            "with token abcdef",
        ] {
            assert!(shows(&shown, text), "{text:?} not in {shown:#?}");
        }
        assert!(
            !shows(&shown, &"a".repeat(32)),
            "the secret was shown: {shown:#?}"
        );
    }

    #[test]
    fn a_typed_master_that_refuses_lets_the_person_choose_again() {
        let system = FakeSystem {
            masters: Vec::new(),
            network_error: None,
            ..FakeSystem::default()
        };
        let (outcome, shown) = Script::run(
            vec![
                Pick("compute"),
                typed("c2"),
                Pick("DHCP"),
                Pick("/dev/vda"),
                Pick("Type the master's address"),
                typed("10.0.0.7"),
                typed(&token_for_pin(PIN_A)),
                Pick("Choose another master"),
                Pick("Type the master's address"),
                typed("10.0.0.1"),
                typed(&token_for_pin(PIN_A)),
                Yes,
            ],
            &system,
        );
        assert!(matches!(
            outcome,
            WizardOutcome::Install(Answers {
                role: RoleAnswers::Compute { master: Some(ref m), .. },
                ..
            }) if m == "10.0.0.1:9443"
        ));
        assert!(
            shows(&shown, "10.0.0.7:9443 refused the token: no answer"),
            "{shown:#?}"
        );
        assert!(shows(&shown, "No master answered"), "{shown:#?}");
    }

    #[test]
    fn a_network_that_fails_is_asked_again() {
        struct FlakyNet(FakeSystem, std::cell::Cell<bool>);
        impl System for FlakyNet {
            fn disks(&self) -> Result<Vec<Disk>, crate::DiskError> {
                self.0.disks()
            }
            fn boot_medium(&self) -> Option<String> {
                self.0.boot_medium()
            }
            fn discover_masters(&self) -> Result<Vec<MasterInfo>, String> {
                self.0.discover_masters()
            }
            fn check_token(&self, m: &str, t: &cloudos_cluster::Token) -> Result<(), String> {
                self.0.check_token(m, t)
            }
            fn find_backups(&self) -> Vec<crate::restore::FoundBackup> {
                self.0.find_backups()
            }
            fn read_passphrase(&self, s: &str) -> Result<cloudos_settings::Secret, String> {
                self.0.read_passphrase(s)
            }
            fn open_backup(
                &self,
                s: &str,
                p: &cloudos_settings::Secret,
            ) -> Result<BackupInfo, OpenError> {
                self.0.open_backup(s, p)
            }
            fn check_network(&self, n: &NetworkAnswers) -> Result<(), String> {
                // Fails once: DHCP got no lease.
                if self.1.replace(true) {
                    Ok(())
                } else {
                    assert_eq!(*n, NetworkAnswers::Dhcp);
                    Err("no DHCP lease within 20s".into())
                }
            }
        }
        let system = FlakyNet(FakeSystem::default(), std::cell::Cell::new(false));
        let mut script = Script {
            steps: vec![
                Pick("master"),
                typed("m1"),
                Pick("DHCP"),
                Pick("Static"),
                typed("10.0.0.5/24"),
                typed(""),
                typed(""),
                Pick("/dev/vda"),
                typed("lab"),
                Pick("The master only"),
                Yes,
            ]
            .into(),
            shown: Vec::new(),
        };
        let outcome = run_with(&mut script, &system, &Target::Disk).expect("wizard");
        let WizardOutcome::Install(answers) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(
            answers.network,
            NetworkAnswers::Static {
                address: "10.0.0.5/24".parse().unwrap(),
                gateway: None,
                dns: Vec::new()
            }
        );
        assert!(shows(
            &script.shown,
            "the network does not work: no DHCP lease within 20s"
        ));
    }

    #[test]
    fn no_at_the_wipe_starts_over_or_cancels() {
        let system = FakeSystem::default();
        let once = |then: Vec<Step>| {
            let mut steps = vec![
                Pick("master"),
                typed("m1"),
                Pick("DHCP"),
                Pick("/dev/vda"),
                typed(""),
                Pick("The master only"),
                No,
            ];
            steps.extend(then);
            Script::run(steps, &system)
        };
        let (outcome, shown) = once(vec![Pick("Cancel")]);
        assert_eq!(outcome, WizardOutcome::Cancelled);
        assert!(shows(&shown, "Nothing was written"));
        let (outcome, _) = once(vec![Pick("Start over"), Pick("Try live")]);
        assert_eq!(outcome, WizardOutcome::TryLive);
    }

    #[test]
    fn no_disk_can_be_cancelled() {
        let system = FakeSystem {
            disks: Vec::new(),
            ..FakeSystem::default()
        };
        let (outcome, shown) = Script::run(
            vec![
                Pick("master"),
                typed("m1"),
                Pick("DHCP"),
                Pick("Look again"),
                Pick("Cancel"),
            ],
            &system,
        );
        assert_eq!(outcome, WizardOutcome::Cancelled);
        assert!(shows(&shown, "no disk found"));
    }

    #[test]
    fn menus_say_what_each_item_is() {
        for target in [Target::Disk, card()] {
            let labels: Vec<&str> = Start::offered(&target)
                .iter()
                .map(|s| s.label(&target))
                .collect();
            assert!(labels[0].contains("master") && labels[1].contains("compute"));
            assert!(labels[labels.len() - 1].contains("nothing is written"));
            if target == Target::Disk {
                assert!(labels[2].contains("Restore a master from a backup"));
            }
        }

        let items = disk_items(
            &[disk("sr0", GIB), disk("vda", 20 * GIB), disk("vdb", GIB)],
            Some("sr0"),
        );
        let shown: Vec<String> = items.iter().map(DiskItem::label).collect();
        assert!(
            shown[0].contains("[cannot use: the installer runs from it]"),
            "{shown:?}"
        );
        assert!(shown[1].starts_with("/dev/vda") && shown[1].contains("20Gi"));
        assert!(!shown[1].contains("cannot use"));
        assert!(
            shown[2].contains("[cannot use: smaller than 4Gi]"),
            "{shown:?}"
        );

        let masters = master_items(&[master("m1", 1, PIN_A)]);
        assert_eq!(
            masters,
            [
                "m1  10.0.0.1:9443  cluster m1-cluster  CA pin 5a5a5a5a5a5a5a5a...",
                TYPE_ADDRESS_ITEM,
                LOOK_AGAIN_ITEM,
                CANCEL_ITEM
            ]
        );
    }

    /// A refused token, or a master list with nothing to pick, can be walked away from.
    #[test]
    fn a_compute_install_can_be_cancelled_at_the_master_or_the_token() {
        let system = FakeSystem {
            masters: vec![master("m1", 1, PIN_A)],
            ..FakeSystem::default()
        };
        let (outcome, shown) = Script::run(
            vec![
                Pick("compute"),
                typed("c1"),
                Pick("DHCP"),
                Pick("/dev/vda"),
                Pick("m1"),
                typed(&token_for_pin(PIN_B)),
                Pick("Cancel the install"),
            ],
            &system,
        );
        assert_eq!(outcome, WizardOutcome::Cancelled);
        assert!(shows(&shown, "belongs to another cluster"), "{shown:#?}");

        let (outcome, _) = Script::run(
            vec![
                Pick("compute"),
                typed("c1"),
                Pick("DHCP"),
                Pick("/dev/vda"),
                Pick("Cancel the install"),
            ],
            &FakeSystem::default(),
        );
        assert_eq!(outcome, WizardOutcome::Cancelled);
    }

    #[test]
    fn the_summary_names_everything_but_the_secret() {
        let token = token_for_pin(PIN_A);
        let answers = Answers::from_toml(&format!(
            "mode = \"compute\"\nhostname = \"c1\"\ndisk = \"/dev/vda\"\nwipe = true\n\
             token = \"{token}\"\n[network]\nmode = \"static\"\naddress = \"10.0.0.5/24\"\n"
        ))
        .unwrap();
        let text = summary(&answers, &disk("vda", 20 * GIB), None);
        for want in [
            "compute node joining the master found by mDNS with token abcdef",
            "host name  c1",
            "static 10.0.0.5/24, gateway none, DNS none",
            "/dev/vda",
            "20Gi",
        ] {
            assert!(text.contains(want), "{want:?} not in {text}");
        }
        assert!(!text.contains(&"a".repeat(32)), "{text}");
    }

    #[test]
    fn typed_network_values() {
        assert_eq!(parse_optional_ipv4(" "), Ok(None));
        assert_eq!(
            parse_optional_ipv4("10.0.0.1"),
            Ok(Some([10, 0, 0, 1].into()))
        );
        assert!(parse_optional_ipv4("10.0.0").is_err());
        assert_eq!(parse_dns(""), Ok(vec![]));
        assert_eq!(
            parse_dns("1.1.1.1,9.9.9.9  10.0.0.53"),
            Ok(vec![
                [1, 1, 1, 1].into(),
                [9, 9, 9, 9].into(),
                [10, 0, 0, 53].into()
            ])
        );
        assert!(parse_dns("1.1.1.1 dns.example")
            .unwrap_err()
            .contains("dns.example"));
    }

    const BACKUP_PASS: &str = "correct horse battery staple";

    /// The restore path: a wrong passphrase is refused and asked again (the disk question
    /// has not even come), the right one opens the backup and shows what it holds, the
    /// backup's master address is the static address offered, and the summary before the
    /// wipe says what is restored. The answers pass `validate`, which opens it again.
    #[test]
    fn a_restore_asks_the_passphrase_again_and_shows_what_it_restores() {
        let system = FakeSystem::default();
        let (outcome, shown) = Script::run(
            vec![
                Pick("Restore a master"),
                Pick("LABEL=CLOUDOS-CFG:/lab.age"),
                typed("not the passphrase"),
                Pick("Type the passphrase again"),
                typed(BACKUP_PASS),
                typed(""),
                Pick("Static"),
                // The backup's address is offered: Enter takes it.
                typed(""),
                typed(""),
                typed(""),
                Pick("/dev/vda"),
                Yes,
            ],
            &system,
        );
        let WizardOutcome::Install(answers) = outcome else {
            panic!("{outcome:?}")
        };
        let wrong = shown
            .iter()
            .position(|l| l.contains("wrong passphrase"))
            .expect("the wrong passphrase was refused");
        let disk_question = shown
            .iter()
            .position(|l| l.contains("Install to which disk?"))
            .expect("the disk question");
        assert!(wrong < disk_question, "{shown:#?}");
        assert!(!shows(&shown, BACKUP_PASS), "the passphrase was shown");
        assert!(
            !shows(&shown, "not the passphrase"),
            "the passphrase was shown"
        );
        assert_eq!(
            *system.opened.borrow(),
            [
                (
                    "LABEL=CLOUDOS-CFG:/lab.age".to_owned(),
                    "not the passphrase".to_owned()
                ),
                (
                    "LABEL=CLOUDOS-CFG:/lab.age".to_owned(),
                    BACKUP_PASS.to_owned()
                ),
            ]
        );
        assert_eq!(answers.hostname, "cloudos-master");
        assert_eq!(
            answers.network,
            NetworkAnswers::Static {
                address: "10.0.0.5/24".parse().expect("cidr"),
                gateway: None,
                dns: Vec::new(),
            }
        );
        let summary = shown
            .iter()
            .find(|l| l.contains("About to install CloudOS"))
            .expect("summary");
        for want in [
            "master restoring the backup LABEL=CLOUDOS-CFG:/lab.age",
            "cluster    \"lab\"",
            &format!("CA pin     sha256:{PIN_A}"),
            "2 nodes, 1 services, 3 tasks, 1 admins",
            "master at  10.0.0.5/24",
            "No new admin token",
        ] {
            assert!(summary.contains(want), "{want}: {summary}");
        }
        assert!(!summary.contains("its nodes dial"), "{summary}");
        let plan = crate::validate(&answers, &system).expect("plan");
        let restore = plan.restore.expect("a restore in the plan");
        assert_eq!(restore.info.cluster, "lab");
        assert_eq!(restore.passphrase.expose(), BACKUP_PASS);
    }

    /// A backup that cannot be used sends back to the list; giving up writes nothing;
    /// a typed place is checked; another address than the backup's is warned about.
    #[test]
    fn a_missing_backup_or_a_cancel_writes_nothing() {
        let system = FakeSystem::default();
        let (outcome, shown) = Script::run(
            vec![
                Pick("Restore a master"),
                Pick("Type where the backup is"),
                typed("lab.age"),
                typed("LABEL=USB:/gone.age"),
                typed(BACKUP_PASS),
                Pick("Cancel the install"),
            ],
            &system,
        );
        assert_eq!(outcome, WizardOutcome::Cancelled);
        assert!(
            shows(&shown, "neither /path nor LABEL=NAME:/path"),
            "{shown:#?}"
        );
        assert!(
            shows(&shown, "cannot open the backup LABEL=USB:/gone.age"),
            "{shown:#?}"
        );
        assert!(!shows(&shown, "Install to which disk"), "{shown:#?}");

        let (outcome, shown) = Script::run(
            vec![
                Pick("Restore a master"),
                Pick("lab.age"),
                typed("wrong"),
                Pick("Cancel the install"),
            ],
            &system,
        );
        assert_eq!(outcome, WizardOutcome::Cancelled);
        assert!(shows(&shown, "wrong passphrase"), "{shown:#?}");

        let (outcome, shown) = Script::run(
            vec![
                Pick("Restore a master"),
                Pick("lab.age"),
                typed(BACKUP_PASS),
                typed("m2"),
                Pick("DHCP"),
                Pick("/dev/vda"),
                No,
                Pick("Cancel"),
            ],
            &system,
        );
        assert_eq!(outcome, WizardOutcome::Cancelled);
        assert!(
            shows(
                &shown,
                "the backup's master was at 10.0.0.5/24; its nodes dial that address"
            ),
            "{shown:#?}"
        );
    }

    #[test]
    fn a_restore_is_not_offered_in_place() {
        assert!(!Start::offered(&card()).contains(&Start::Restore));
        assert!(Start::offered(&Target::Disk).contains(&Start::Restore));
    }
}
