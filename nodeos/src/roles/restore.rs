//! Restoring a master from a backup before it starts: `nodeos master --restore FILE` (the
//! passphrase from `--passphrase-file` or asked without echo on the terminal), and the
//! appliance's boot settings `cloudos.restore` / `cloudos.restore_passphrase_file` (a file
//! on the node, or `LABEL=NAME:/path` on a partition such as a USB stick, mounted read-only
//! for the moment it is read). The restore itself is `cloudos_master::backup`; this module
//! only finds the files and the passphrase.
//!
//! Under PID 1 a data partition that already holds a cluster is never replaced: the
//! setting is then ignored with a log line (a reboot with the setting still present is
//! harmless), and a failed restore stops the master service with its reason instead of
//! letting it make a new cluster.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cloudos_master::backup::{self, restore::existing_cluster, BackupError, Passphrase, Restored};

use crate::settings::Settings;

/// How long a labelled partition (a USB stick probing late) may take to appear.
const LABEL_WAIT: Duration = Duration::from_secs(30);

/// `nodeos master --restore FILE`: restores into `data_dir`, says what it restored.
pub fn from_flags(
    file: &Path,
    passphrase_file: Option<&Path>,
    data_dir: &Path,
    force: bool,
) -> anyhow::Result<()> {
    // Refuse before asking for the passphrase when the answer is already known.
    if let (Some(name), false) = (existing_cluster(data_dir)?, force) {
        return Err(BackupError::HoldsCluster {
            data_dir: data_dir.to_owned(),
            name,
        }
        .into());
    }
    let passphrase = match passphrase_file {
        Some(path) => Passphrase::from_file(path, false)?,
        None => prompt()?,
    };
    let restored = backup::restore_file(file, &passphrase, data_dir, force)?;
    report(&restored, &file.display().to_string());
    Ok(())
}

/// The passphrase from the terminal, without echo.
fn prompt() -> anyhow::Result<Passphrase> {
    use std::io::Write as _;
    let term = console::Term::stderr();
    if !term.is_term() {
        bail!("no terminal to ask for the backup's passphrase on; use --passphrase-file FILE");
    }
    let _ = write!(&term, "passphrase of the backup: ");
    let text = term
        .read_secure_line()
        .context("cannot read the passphrase")?;
    Ok(Passphrase::for_restore(text))
}

fn report(restored: &Restored, from: &str) {
    let m = &restored.manifest;
    let count = |t: &str| m.records.get(t).copied().unwrap_or(0);
    log::info!(
        "restored cluster {:?} (CA pin {}) from {from}, made {} by nodeos {}: {} nodes, {} admins, \
         {} tokens, {} tasks, {} services, {} files",
        m.cluster,
        m.ca_pin,
        m.created_at,
        m.nodeos_version,
        count("nodes"),
        count("admins"),
        count("tokens"),
        count("tasks"),
        count("services"),
        restored.files.files
    );
    if let Some(aside) = &restored.replaced {
        log::info!("the state it replaced is kept in {}", aside.display());
    }
}

/// The appliance's restore (see the module comment), before the master service starts.
pub fn from_settings(settings: &Settings, data_dir: &Path) -> anyhow::Result<()> {
    let Some(source) = &settings.restore else {
        return Ok(());
    };
    if let Some(name) = existing_cluster(data_dir)? {
        log::info!(
            "cloudos.restore: the data partition already holds cluster {name:?}; not restoring \
             (remove cloudos.restore from the settings)"
        );
        return Ok(());
    }
    let Some(pass_source) = &settings.restore_passphrase_file else {
        bail!(
            "cloudos.restore needs cloudos.restore_passphrase_file (a file whose first line is \
             the backup's passphrase); the master does not start a new cluster instead"
        );
    };
    let passphrase = with_file(pass_source, "restore-pass", |path| {
        Passphrase::from_file(path, false)
    })?;
    let restored = with_file(source, "restore", |path| {
        backup::restore_file(path, &passphrase, data_dir, false)
    })
    .with_context(|| {
        format!("cannot restore {source}; the master does not start a new cluster instead")
    })?;
    report(&restored, source);
    // A passphrase the wizard left on the data partition has done its job.
    if let Ok(rel) = Path::new(pass_source).strip_prefix(data_dir) {
        if !rel.as_os_str().is_empty() && std::fs::remove_file(pass_source).is_ok() {
            log::info!("removed the restore passphrase file {pass_source}");
        }
    }
    Ok(())
}

/// The installer's check (`cloudos_installer::System::open_backup`): the backup at
/// `source` (`/path` or `LABEL=NAME:/path`) opened with `passphrase` and read to its
/// authenticated end; nothing is kept or written.
pub fn inspect(source: &str, passphrase: &Passphrase) -> anyhow::Result<backup::archive::Opened> {
    with_file(source, "restore", |path| backup::inspect(path, passphrase))
}

/// The first line of the file at `source` (`/path` or `LABEL=NAME:/path`), as
/// `Passphrase::from_file` reads it, for the installer (which holds it as a `Secret`).
pub fn read_passphrase(source: &str) -> anyhow::Result<cloudos_settings::Secret> {
    with_file(source, "restore-pass", |path| {
        let text = std::fs::read_to_string(path).map_err(|e| BackupError::PassphraseFile {
            path: path.to_owned(),
            source: e,
        })?;
        Ok(cloudos_settings::Secret::new(
            text.lines().next().unwrap_or_default(),
        ))
    })
}

/// The install step of a restored master: the backup at `source` restored into the new
/// data partition mounted at `data_dir`, before the disk gets its partition table.
pub fn into_new_data_partition(
    source: &str,
    passphrase: &Passphrase,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let restored = with_file(source, "restore", |path| {
        backup::restore_file(path, passphrase, data_dir, false)
    })?;
    report(&restored, source);
    Ok(())
}

/// Calls `f` with the path of a file given as `/path` or `LABEL=NAME:/path`; a labelled
/// partition is mounted read-only (as `mount_name`) for the call.
fn with_file<T>(
    source: &str,
    mount_name: &str,
    f: impl FnOnce(&Path) -> Result<T, BackupError>,
) -> anyhow::Result<T> {
    let Some(rest) = source.strip_prefix("LABEL=") else {
        return Ok(f(Path::new(source))?);
    };
    let Some((label, path)) = rest.split_once(':') else {
        bail!("{source} is not LABEL=NAME:/path");
    };
    let started = Instant::now();
    let (device, kind) = loop {
        if let Some(found) = crate::blockdev::labels::find_labelled(label)
            .into_iter()
            .next()
        {
            break found;
        }
        if started.elapsed() > LABEL_WAIT {
            bail!(
                "no partition labelled {label} (vfat or ext4) appeared within {}s; attach the \
                 medium holding {path}",
                LABEL_WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let mounted = crate::diskinstall::medium::mount_ro(&device, kind, mount_name)?;
    let result = f(&mounted.dir.join(path.trim_start_matches('/')));
    drop(mounted);
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_store::{ClusterMeta, RedbStore, Store};

    /// A backup of a store holding cluster `lab`, written to `dir/lab.age`.
    fn a_backup(dir: &Path) -> std::path::PathBuf {
        let store = RedbStore::in_memory().expect("store");
        let now = time::OffsetDateTime::now_utc();
        let ca = cloudos_cluster::ClusterCa::create("lab", now).expect("ca");
        store
            .init_cluster_meta(&ClusterMeta {
                name: "lab".into(),
                ca_cert_pem: ca.cert_pem().to_owned(),
                ca_key_pem: ca.key_pem(),
                created_at: now,
            })
            .expect("meta");
        let file = dir.join("lab.age");
        let pass = Passphrase::new("correct horse battery staple").expect("passphrase");
        backup::write_file(&store, &dir.join("nothing"), &pass, &file).expect("backup");
        file
    }

    #[test]
    fn the_boot_settings_restore_once_then_leave_the_cluster_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let file = a_backup(dir.path());
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data");
        let pass = data.join("restore.pass");
        std::fs::write(&pass, "correct horse battery staple\n").expect("pass");
        let mut settings = Settings {
            restore: Some(file.to_string_lossy().into_owned()),
            ..Settings::default()
        };

        let err = from_settings(&settings, &data).expect_err("no passphrase setting");
        assert!(err.to_string().contains("restore_passphrase_file"), "{err}");
        assert!(!data.join("master").exists());

        settings.restore_passphrase_file = Some(pass.to_string_lossy().into_owned());
        from_settings(&settings, &data).expect("restore");
        assert_eq!(
            existing_cluster(&data).expect("read"),
            Some("lab".to_owned())
        );
        assert!(
            !pass.exists(),
            "the passphrase on the data partition is removed"
        );
        // The next boot, the setting still there: the cluster is left as it is.
        from_settings(&settings, &data).expect("ignored");
        assert_eq!(
            existing_cluster(&data).expect("read"),
            Some("lab".to_owned())
        );
    }

    #[test]
    fn a_failed_restore_under_pid1_stops_the_master_with_its_reason() {
        let dir = tempfile::tempdir().expect("dir");
        let file = a_backup(dir.path());
        let data = dir.path().join("data");
        let pass = dir.path().join("wrong.pass");
        std::fs::write(&pass, "not the passphrase\n").expect("pass");
        let settings = Settings {
            restore: Some(file.to_string_lossy().into_owned()),
            restore_passphrase_file: Some(pass.to_string_lossy().into_owned()),
            ..Settings::default()
        };
        let err = format!("{:#}", from_settings(&settings, &data).expect_err("wrong"));
        assert!(err.contains("wrong passphrase"), "{err}");
        assert!(err.contains("does not start a new cluster"), "{err}");
        assert_eq!(existing_cluster(&data).expect("read"), None);
        assert!(
            pass.exists(),
            "a passphrase outside the data partition is left alone"
        );
    }

    #[test]
    fn the_flag_refuses_a_data_dir_with_a_cluster_before_asking_anything() {
        let dir = tempfile::tempdir().expect("dir");
        let file = a_backup(dir.path());
        let data = dir.path().join("data");
        let pass = dir.path().join("pass");
        std::fs::write(&pass, "correct horse battery staple\n").expect("pass");
        from_flags(&file, Some(&pass), &data, false).expect("first restore");
        let err = from_flags(&file, None, &data, false).expect_err("holds a cluster");
        assert!(err.to_string().contains("--force-restore"), "{err}");
        from_flags(&file, Some(&pass), &data, true).expect("forced");
    }

    /// The installer's side: the live system opens the backup with a typed passphrase
    /// (a wrong one told apart from a missing file, so the wizard asks again), keeps
    /// nothing, and the install step then restores it into the new data partition.
    #[test]
    fn the_installer_opens_the_backup_then_restores_it_into_the_new_partition() {
        use cloudos_installer::restore::OpenError;
        use cloudos_installer::System as _;
        use cloudos_settings::Secret;
        let dir = tempfile::tempdir().expect("dir");
        let file = a_backup(dir.path());
        let source = file.to_string_lossy().into_owned();
        let live = crate::diskinstall::system::LiveSystem;

        let wrong = live
            .open_backup(&source, &Secret::new("not the passphrase"))
            .expect_err("wrong");
        assert!(matches!(wrong, OpenError::WrongPassphrase(_)), "{wrong:?}");
        let missing = live
            .open_backup(
                "/nowhere/lab.age",
                &Secret::new("correct horse battery staple"),
            )
            .expect_err("missing");
        assert!(
            matches!(&missing, OpenError::Unusable(why) if why.contains("/nowhere/lab.age")),
            "{missing:?}"
        );
        let info = live
            .open_backup(&source, &Secret::new("correct horse battery staple"))
            .expect("opens");
        assert_eq!(info.cluster, "lab");
        let entries = std::fs::read_dir(dir.path()).expect("list").count();
        assert_eq!(entries, 1, "only the backup: nothing unpacked");

        let pass = dir.path().join("pass");
        std::fs::write(&pass, "correct horse battery staple\nignored\n").expect("pass");
        let read = live.read_passphrase(&pass.to_string_lossy()).expect("read");
        assert_eq!(read.expose(), "correct horse battery staple");

        let data = dir.path().join("newdisk");
        std::fs::create_dir_all(&data).expect("data");
        let passphrase = Passphrase::for_restore(read.expose());
        into_new_data_partition(&source, &passphrase, &data).expect("restored");
        assert_eq!(
            existing_cluster(&data).expect("read"),
            Some("lab".to_owned())
        );
        assert!(file.exists(), "the backup itself is only read");
    }
}
