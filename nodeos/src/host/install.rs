//! `nodeos install` and `nodeos uninstall`: the steps, in an order that keeps a failed
//! install from leaving anything behind.
//!
//! A compute node joins its master *before* anything is written (the join is the only step
//! that can fail for a reason the person must fix: a wrong token, a wrong master). Every
//! path the install creates is appended to `/etc/cloudos/installed` as soon as it exists,
//! so uninstall — after a finished install, a failed one or a crash midway — removes
//! exactly those and nothing the host had before.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::layout::{self, HostSettings, Layout};
use super::systemd::Systemd;
use crate::settings::{validate_hostname, NodeRole, Settings};
use cloudos_agent::{IdentityStore, StoredIdentity};

/// `nodeos install`: what `install.sh` runs once it has checked and fetched this binary.
#[derive(Debug, Clone, clap::Args)]
pub struct InstallArgs {
    /// compute (join a master) or master (start a new cluster).
    #[arg(long, env = "CLOUDOS_ROLE", default_value = "compute", value_parser = ["compute", "master"])]
    pub role: String,
    /// Join token (compute). Prefer the CLOUDOS_TOKEN environment variable: arguments are
    /// visible to every user in `ps`.
    #[arg(long, env = "CLOUDOS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The master's host:port (compute).
    #[arg(long, env = "CLOUDOS_MASTER")]
    pub master: Option<String>,
    /// This node's name in the cluster (default: the host name).
    #[arg(long, env = "CLOUDOS_NAME")]
    pub name: Option<String>,
    /// Labels for scheduling: `zone=a,disk=ssd` (compute).
    #[arg(long, env = "CLOUDOS_LABELS")]
    pub labels: Option<String>,
    /// The new cluster's name (master).
    #[arg(long, env = "CLOUDOS_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Image registries (host:port) reached over plain HTTP, comma-separated.
    #[arg(long, env = "CLOUDOS_INSECURE_REGISTRIES")]
    pub insecure_registries: Option<String>,
    /// Master: more names or addresses for its certificate, comma-separated (the public IP
    /// or DNS name clients use when the master is behind NAT).
    #[arg(long, env = "CLOUDOS_TLS_SAN")]
    pub tls_san: Option<String>,
    /// A `cloudos` CLI binary to install next to nodeos.
    #[arg(long)]
    pub cli: Option<PathBuf>,
    /// Say what would be done and change nothing (no join either).
    #[arg(long, env = "CLOUDOS_DRY_RUN", value_parser = clap::builder::FalseyValueParser::new())]
    pub dry_run: bool,
    /// How long to wait for the unit to become active.
    #[arg(long, default_value = "90s", value_parser = parse_wait)]
    pub wait: Duration,
}

/// `nodeos uninstall`: what `cloudos-uninstall.sh` runs.
#[derive(Debug, Clone, clap::Args)]
pub struct UninstallArgs {
    /// Say what would be removed and remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_wait(value: &str) -> Result<Duration, String> {
    let d = cloudos_cluster::token::parse_ttl(value).map_err(|e| e.to_string())?;
    Ok(d.unsigned_abs())
}

/// What the host must offer before anything else is looked at.
fn check_host() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("this must run as root: it installs a system service (try again with sudo)");
    }
    if !Path::new("/run/systemd/system").is_dir() {
        let init = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
        bail!(
            "systemd is not running on this host (PID 1 is {:?}); CloudOS installs as a systemd service",
            init.trim()
        );
    }
    Ok(())
}

/// The settings the person gave, checked: every mistake is reported before any step runs.
fn settings_from(args: &InstallArgs, role: NodeRole) -> anyhow::Result<HostSettings> {
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| crate::roles::host_name("cloudos"));
    validate_hostname(&name).map_err(|why| anyhow::anyhow!("the node name {name:?} {why}"))?;
    // Through the appliance's own settings model, so a key means the same in both places;
    // in key-name order, so the first mistake named is the one a settings file's would be.
    let given = [
        ("cluster", &args.cluster_name),
        ("insecure_registries", &args.insecure_registries),
        ("labels", &args.labels),
        ("master", &args.master),
        ("tls_san", &args.tls_san),
    ];
    let mut parsed = Settings::default();
    for (key, value) in given {
        if let Some(value) = value {
            parsed
                .set(key, value)
                .map_err(|reason| anyhow::anyhow!("{key}: {reason}"))?;
        }
    }
    Ok(HostSettings {
        role,
        name,
        master: parsed.master,
        cluster: (role == NodeRole::Master)
            .then(|| parsed.cluster.unwrap_or_else(|| "cloudos".into())),
        labels: parsed.labels,
        insecure_registries: parsed.insecure_registries,
        tls_san: parsed.tls_san,
    })
}

/// The installed role, from the record's unit file, if any.
fn installed_role(layout: &Layout, record: &[PathBuf]) -> Option<NodeRole> {
    [NodeRole::Compute, NodeRole::Master]
        .into_iter()
        .find(|role| record.contains(&layout.unit_file(*role)))
}

fn read_record(layout: &Layout) -> anyhow::Result<Option<Vec<PathBuf>>> {
    match std::fs::read_to_string(layout.record()) {
        Ok(text) => Ok(Some(layout::parse_record(&text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", layout.record().display())),
    }
}

pub fn install_main(args: InstallArgs) -> anyhow::Result<()> {
    crate::logging::init_for_tool(false);
    let role = match args.role.as_str() {
        "master" => NodeRole::Master,
        _ => NodeRole::Compute,
    };
    check_host()?;
    let layout = Layout::system();
    let settings = settings_from(&args, role)?;
    let previous = read_record(&layout)?;
    let upgrade = previous.is_some();
    if let Some(record) = &previous {
        if let Some(installed) = installed_role(&layout, record) {
            if installed != role {
                bail!(
                    "this host is already a CloudOS {installed}; remove that first with {}",
                    layout.uninstall_script().display()
                );
            }
        }
    } else {
        for dir in [&layout.etc_dir, &layout.state_dir] {
            if dir.exists() {
                bail!(
                    "{} exists but was not made by this installer; move it away (or remove it) and run the installer again",
                    dir.display()
                );
            }
        }
    }
    let token = args
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<cloudos_cluster::Token>())
        .transpose()
        .map_err(|e| anyhow::anyhow!("the join token is not valid: {e}"))?;
    let joined = IdentityStore::new(&layout.state_dir).load().ok().flatten();
    let master = settings.master.clone();
    if role == NodeRole::Compute {
        if master.is_none() {
            bail!("which master? give --master HOST:PORT (the line `cloudos token create` prints gives it)");
        }
        if joined.is_none() && token.is_none() {
            bail!("a compute node needs a join token: --token or CLOUDOS_TOKEN (create one on the master with `cloudos token create`)");
        }
    }
    if args.dry_run {
        print_plan(&layout, &settings, upgrade, joined.as_ref());
        return Ok(());
    }

    // Compute: the join, the one step that can be refused, comes before any write.
    let identity = match (role, joined) {
        (NodeRole::Compute, Some(existing)) => {
            println!(
                "already joined cluster {} as {}: upgrading in place",
                existing.joined.cluster_name, existing.node_name
            );
            None
        }
        (NodeRole::Compute, None) => {
            let (Some(token), Some(master)) = (&token, &master) else {
                bail!("a compute node needs a token and a master (checked above)");
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let identity = runtime
                .block_on(cloudos_agent::join_once(
                    master,
                    token,
                    &settings.name,
                    &settings.labels,
                ))
                .map_err(|e| anyhow::anyhow!("cannot join the cluster at {master}: {e}"))?;
            println!(
                "joined cluster {} at {master} as {}",
                identity.joined.cluster_name, identity.node_name
            );
            Some(identity)
        }
        _ => None,
    };

    let mut writer = Writer::open(&layout, previous.unwrap_or_default())?;
    let result = write_and_start(&mut writer, &layout, &settings, identity.as_ref(), &args);
    match result {
        Ok(()) => Ok(()),
        Err(e) if !upgrade => {
            eprintln!("install failed: {e:#}\nremoving what this install created");
            if let Err(cleanup) = uninstall(&layout, false) {
                eprintln!("cleanup failed too: {cleanup:#}");
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

fn write_and_start(
    writer: &mut Writer,
    layout: &Layout,
    settings: &HostSettings,
    identity: Option<&StoredIdentity>,
    args: &InstallArgs,
) -> anyhow::Result<()> {
    let role = settings.role;
    writer.dir(&layout.state_dir, 0o700)?;
    if let Some(identity) = identity {
        IdentityStore::new(&layout.state_dir)
            .save(identity)
            .context("cannot save the node's identity")?;
    }
    writer.file(
        &layout.config(),
        layout::render_config(settings).as_bytes(),
        0o644,
    )?;
    // First: the role's unit names it in `OnFailure=`.
    writer.file(
        &layout.rollback_unit_file(),
        layout::render_rollback_unit(layout, role).as_bytes(),
        0o644,
    )?;
    writer.file(
        &layout.unit_file(role),
        layout::render_unit(layout, role).as_bytes(),
        0o644,
    )?;
    let me = std::fs::read("/proc/self/exe").context("cannot read this program's binary")?;
    writer.file(&layout.nodeos(), &me, 0o755)?;
    // What an upgrade from the master will create next to it (`host::upgrade`).
    for path in layout.upgrade_files() {
        writer.note(&path)?;
    }
    if let Some(cli) = &args.cli {
        let bytes = std::fs::read(cli).with_context(|| format!("cannot read {}", cli.display()))?;
        if layout.cli().exists() && !writer.created(&layout.cli()) {
            println!(
                "{} exists and is not ours: leaving it as it is",
                layout.cli().display()
            );
        } else {
            writer.file(&layout.cli(), &bytes, 0o755)?;
        }
    }
    writer.file(
        &layout.uninstall_script(),
        layout::render_uninstall_script(layout).as_bytes(),
        0o755,
    )?;

    let unit = layout::unit_name(role);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let systemd = Systemd::connect().await?;
        systemd
            .link(
                &layout.rollback_unit_file().to_string_lossy(),
                layout::ROLLBACK_UNIT,
            )
            .await?;
        let unit_file = layout.unit_file(role);
        systemd
            .install_and_start(&unit_file.to_string_lossy(), unit)
            .await?;
        systemd.wait_active(unit, args.wait).await?;
        anyhow::Ok(())
    })?;
    println!("{unit} is active; its log: journalctl -u {unit}");
    if role == NodeRole::Master {
        show_admin_token(layout)?;
    }
    println!(
        "to remove CloudOS from this host: {}",
        layout.uninstall_script().display()
    );
    Ok(())
}

/// Shows the new master's one-use admin token once, then deletes the file.
fn show_admin_token(layout: &Layout) -> anyhow::Result<()> {
    let path = cloudos_master::token_file(&layout.state_dir);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(text) = std::fs::read_to_string(&path) {
            print!("{text}");
            println!(
                "log in from your machine: cloudos login --token <admin token> --master <this host>:{}",
                crate::settings::DEFAULT_API_PORT
            );
            let _ = std::fs::remove_file(&path);
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "the master did not write an admin token (one exists already?); restarting it before any admin logs in shows a new one in {}",
        path.display()
    );
    Ok(())
}

fn print_plan(
    layout: &Layout,
    settings: &HostSettings,
    upgrade: bool,
    joined: Option<&StoredIdentity>,
) {
    let unit = layout::unit_name(settings.role);
    println!("dry run: nothing is changed");
    match (settings.role, joined) {
        (NodeRole::Compute, Some(id)) => println!(
            "- keep the identity of {} in cluster {}",
            id.node_name, id.joined.cluster_name
        ),
        (NodeRole::Compute, None) => println!(
            "- join the master at {} as {}",
            settings.master.as_deref().unwrap_or("?"),
            settings.name
        ),
        _ => println!(
            "- start cluster {:?} as master {}",
            settings.cluster.as_deref().unwrap_or("cloudos"),
            settings.name
        ),
    }
    let verb = if upgrade { "replace" } else { "write" };
    for path in [
        layout.nodeos(),
        layout.config(),
        layout.rollback_unit_file(),
        layout.unit_file(settings.role),
        layout.uninstall_script(),
    ] {
        println!("- {verb} {}", path.display());
    }
    println!("- keep state in {}", layout.state_dir.display());
    println!(
        "- link {}, then link, enable and start {unit} through systemd (D-Bus)",
        layout::ROLLBACK_UNIT
    );
}

/// Whether `nodeos` was installed here by `nodeos install` (its record lists the binary).
pub(super) fn is_installed(layout: &Layout) -> bool {
    matches!(read_record(layout), Ok(Some(record)) if record.contains(&layout.nodeos()))
}

/// Adds `paths` to the install record before an upgrade creates them, so that uninstall
/// removes them too. A binary that was not installed (no record) records nothing.
pub(super) fn record_paths(layout: &Layout, paths: &[PathBuf]) -> anyhow::Result<()> {
    let Some(record) = read_record(layout)? else {
        return Ok(());
    };
    if paths.iter().all(|p| record.contains(p)) {
        return Ok(());
    }
    let mut writer = Writer::open(layout, record)?;
    for path in paths {
        writer.note(path)?;
    }
    Ok(())
}

/// Writes files and directories, recording each path it creates before anything goes in it.
struct Writer {
    record_path: PathBuf,
    record: Vec<PathBuf>,
}

impl Writer {
    fn open(layout: &Layout, previous: Vec<PathBuf>) -> anyhow::Result<Writer> {
        let mut writer = Writer {
            record_path: layout.record(),
            record: previous,
        };
        if !layout.etc_dir.exists() {
            std::fs::create_dir_all(&layout.etc_dir)
                .with_context(|| format!("cannot create {}", layout.etc_dir.display()))?;
            writer.note(&layout.etc_dir)?;
        }
        Ok(writer)
    }

    fn created(&self, path: &Path) -> bool {
        self.record.iter().any(|p| p == path)
    }

    /// Adds `path` to the record (once), on disk before the caller writes it.
    fn note(&mut self, path: &Path) -> anyhow::Result<()> {
        if self.created(path) {
            return Ok(());
        }
        self.record.push(path.to_owned());
        let text: String = self
            .record
            .iter()
            .map(|p| format!("{}\n", p.display()))
            .collect();
        cloudos_cluster::files::write_atomic(&self.record_path, text.as_bytes())
            .with_context(|| format!("cannot write {}", self.record_path.display()))
    }

    fn dir(&mut self, path: &Path, mode: u32) -> anyhow::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        if path.is_dir() {
            return Ok(());
        }
        self.note(path)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
            .with_context(|| format!("cannot create {}", path.display()))
    }

    fn file(&mut self, path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
        if !path.exists() {
            self.note(path)?;
        } else if !self.created(path) {
            bail!(
                "{} exists and was not made by this installer; move it away and run the installer again",
                path.display()
            );
        }
        cloudos_cluster::files::write_atomic_mode(path, bytes, mode)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

pub fn uninstall_main(args: UninstallArgs) -> anyhow::Result<()> {
    crate::logging::init_for_tool(false);
    check_host()?;
    uninstall(&Layout::system(), args.dry_run)
}

/// Stops and removes the unit, then every recorded path, newest first.
fn uninstall(layout: &Layout, dry_run: bool) -> anyhow::Result<()> {
    let Some(record) = read_record(layout)? else {
        println!(
            "CloudOS is not installed here ({} does not exist); nothing to do",
            layout.record().display()
        );
        return Ok(());
    };
    // The rollback unit first: a role's unit that fails while it stops must not start it.
    let rollback = record
        .contains(&layout.rollback_unit_file())
        .then_some(layout::ROLLBACK_UNIT);
    let units: Vec<&str> = rollback
        .into_iter()
        .chain(
            [NodeRole::Compute, NodeRole::Master]
                .into_iter()
                .filter(|role| record.contains(&layout.unit_file(*role)))
                .map(layout::unit_name),
        )
        .collect();
    if dry_run {
        for unit in &units {
            println!("- stop, disable and unlink {unit}");
        }
        for path in record.iter().rev() {
            println!("- remove {}", path.display());
        }
        return Ok(());
    }
    if !units.is_empty() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let systemd = Systemd::connect().await?;
            for unit in &units {
                systemd.stop_and_remove(unit).await?;
                println!("stopped and removed {unit}");
            }
            // The slice exists only for our unit; it would linger until the next boot.
            systemd.stop_slice(layout::SLICE).await?;
            anyhow::Ok(())
        })?;
    }
    for unit in &units {
        remove_stray_link(layout, unit);
    }
    unmount_below(&layout.state_dir);
    let mut failed = Vec::new();
    for path in record.iter().rev() {
        let removed = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        };
        match removed {
            Ok(()) => println!("removed {}", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => failed.push(format!("{}: {e}", path.display())),
        }
    }
    if !failed.is_empty() {
        bail!("could not remove: {}", failed.join("; "));
    }
    let _ = std::io::stdout().flush();
    Ok(())
}

/// `DisableUnitFiles` removes the link `LinkUnitFiles` made on the systemd versions tried;
/// should one keep it, it is ours (it points into our directory) and goes too.
fn remove_stray_link(layout: &Layout, unit: &str) {
    let link = Path::new("/etc/systemd/system").join(unit);
    if let Ok(target) = std::fs::read_link(&link) {
        if target.starts_with(&layout.etc_dir) {
            let _ = std::fs::remove_file(&link);
        }
    }
}

/// Anything still mounted below the state directory (a container's root whose shim died
/// in the host's mount namespace) is detached, so removing the directory never walks into
/// a mount.
fn unmount_below(dir: &Path) {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut mounts: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|m| PathBuf::from(cloudos_runtime::cgroup::unescape_mount_path(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    // Deepest first.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for mount in mounts {
        if let Err(e) = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH) {
            log::warn!("cannot unmount {}: {e}", mount.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> InstallArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: InstallArgs,
        }
        let argv = std::iter::once("nodeos-install").chain(extra.iter().copied());
        Cli::try_parse_from(argv).expect("arguments").args
    }

    #[test]
    fn every_mistake_in_the_settings_is_caught_before_any_step() {
        let ok = settings_from(
            &args(&[
                "--name",
                "vm-1",
                "--labels",
                "zone=a",
                "--master",
                "10.0.0.1:9443",
            ]),
            NodeRole::Compute,
        )
        .expect("valid");
        assert_eq!(ok.labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(ok.master.as_deref(), Some("10.0.0.1:9443"));
        assert_eq!(ok.cluster, None);
        for (bad, says) in [
            (vec!["--name", "Not A Name!"], "node name"),
            (vec!["--name", "n", "--labels", "zone"], "labels"),
            (vec!["--name", "n", "--master", "a b"], "master"),
            (vec!["--name", "n", "--tls-san", "not_a name"], "tls_san"),
        ] {
            let err = settings_from(&args(&bad), NodeRole::Compute)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
        let master = settings_from(&args(&["--name", "m"]), NodeRole::Master).expect("master");
        assert_eq!(master.cluster.as_deref(), Some("cloudos"));
    }

    #[test]
    fn the_record_lists_each_created_path_before_it_is_written_and_only_those() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::under(root.path());
        std::fs::create_dir_all(&layout.bin_dir).unwrap();
        // Someone else's file in /usr/local/bin stays theirs.
        std::fs::write(layout.bin_dir.join("other-tool"), b"x").unwrap();
        let mut writer = Writer::open(&layout, Vec::new()).unwrap();
        writer.dir(&layout.state_dir, 0o700).unwrap();
        writer.file(&layout.nodeos(), b"binary", 0o755).unwrap();
        writer
            .file(&layout.config(), b"role = \"compute\"\n", 0o644)
            .unwrap();
        let record = layout::parse_record(&std::fs::read_to_string(layout.record()).unwrap());
        assert_eq!(
            record,
            vec![
                layout.etc_dir.clone(),
                layout.state_dir.clone(),
                layout.nodeos(),
                layout.config()
            ]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&layout.state_dir), 0o700);
        assert_eq!(mode(&layout.nodeos()), 0o755);
        // Writing again (an upgrade) is fine for our files, refused for anyone else's.
        writer.file(&layout.nodeos(), b"binary v2", 0o755).unwrap();
        let theirs = layout.bin_dir.join("other-tool");
        assert!(writer.file(&theirs, b"y", 0o755).is_err());

        // An upgrade from the master notes what it will create next to the binary.
        record_paths(&layout, &layout.upgrade_files()).unwrap();
        let record = layout::parse_record(&std::fs::read_to_string(layout.record()).unwrap());
        assert!(layout.upgrade_files().iter().all(|p| record.contains(p)));
        for kept in [layout.previous(), layout.failed()] {
            std::fs::write(kept, b"an older binary").unwrap();
        }
        assert!(is_installed(&layout));

        uninstall(&layout, false).unwrap();
        for path in &record {
            assert!(!path.exists(), "{} left", path.display());
        }
        assert!(!is_installed(&layout));
        // A binary that was never installed records nothing.
        record_paths(&layout, &layout.upgrade_files()).unwrap();
        assert!(!layout.record().exists());
        assert_eq!(std::fs::read(&theirs).unwrap(), b"x");
        assert!(
            layout.bin_dir.is_dir(),
            "directories we did not create stay"
        );
        // Twice is fine: nothing is installed any more.
        uninstall(&layout, false).unwrap();
    }
}
