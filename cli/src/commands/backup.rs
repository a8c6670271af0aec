//! `cloudos backup create FILE`: an encrypted backup of the master's state, written to a
//! private file (0600) through a temporary file beside it and a rename, so FILE is a whole
//! backup or is not written. The master encrypts (age, scrypt passphrase); the passphrase
//! is asked for without echo (twice) or read from `--passphrase-file`, and never printed.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use cloudos_cluster::api::BackupSummary;

use super::Ctx;

/// Shortest passphrase the master accepts (it checks too).
const MIN_PASSPHRASE_CHARS: usize = 12;

pub async fn create(ctx: &Ctx, file: &Path, passphrase_file: Option<&Path>) -> anyhow::Result<()> {
    let passphrase = match passphrase_file {
        Some(path) => read_passphrase_file(path)?,
        None => prompt_new_passphrase()?,
    };
    let client = ctx.client().await?;
    let tmp = temp_beside(file);
    let result = async {
        let mut out = std::io::BufWriter::new(private_file(&tmp)?);
        let summary = client.create_backup(&passphrase, &mut out).await?;
        let out = out.into_inner().map_err(|e| e.into_error())?;
        out.sync_all()?;
        std::fs::rename(&tmp, file).with_context(|| format!("cannot write {}", file.display()))?;
        anyhow::Ok(summary)
    }
    .await;
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    ctx.print(&summary, |s| render(s, file, bytes))
}

pub fn render(s: &BackupSummary, file: &Path, bytes: u64) -> String {
    let count = |table: &str| s.records.get(table).copied().unwrap_or(0);
    format!(
        "backup of cluster {} (CA pin {}) written to {} ({}): {} nodes, {} admins, {} tokens, \
         {} tasks, {} services, {} files ({})\nrestore it on a new master with `nodeos master \
         --restore {}`; keep the passphrase: without it the backup cannot be opened\n",
        s.cluster,
        s.ca_pin,
        file.display(),
        cloudos_cluster::units::format_bytes(bytes),
        count("nodes"),
        count("admins"),
        count("tokens"),
        count("tasks"),
        count("services"),
        s.files,
        cloudos_cluster::units::format_bytes(s.file_bytes),
        file.display()
    )
}

fn read_passphrase_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the passphrase file {}", path.display()))?;
    let line = text.lines().next().unwrap_or_default().to_owned();
    check_length(&line)?;
    Ok(line)
}

fn prompt_new_passphrase() -> anyhow::Result<String> {
    let term = console::Term::stderr();
    if !term.is_term() {
        bail!("no terminal to ask for the passphrase on; use --passphrase-file FILE");
    }
    let _ = write!(&term, "passphrase for the backup: ");
    let first = term
        .read_secure_line()
        .context("cannot read the passphrase")?;
    check_length(&first)?;
    let _ = write!(&term, "the same again: ");
    let again = term
        .read_secure_line()
        .context("cannot read the passphrase")?;
    if first != again {
        bail!("the two passphrases differ; nothing was written");
    }
    Ok(first)
}

fn check_length(passphrase: &str) -> anyhow::Result<()> {
    if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
        bail!(
            "the passphrase is shorter than {MIN_PASSPHRASE_CHARS} characters; choose a longer one"
        );
    }
    Ok(())
}

fn temp_beside(file: &Path) -> PathBuf {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".to_owned());
    file.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Created readable by its owner only: the backup is encrypted, but who holds the file and
/// the passphrase holds the cluster's CA.
fn private_file(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_what_and_how_to_restore() {
        let s = BackupSummary {
            cluster: "lab".into(),
            ca_pin: "ab12".into(),
            created_at: time::macros::datetime!(2026-12-01 10:00 UTC),
            schema_version: 1,
            records: [("nodes".to_owned(), 3), ("admins".to_owned(), 1)].into(),
            files: 4,
            file_bytes: 2048,
        };
        let text = render(&s, Path::new("/b/lab.age"), 4096);
        assert!(text.contains("cluster lab"), "{text}");
        assert!(text.contains("3 nodes, 1 admins"), "{text}");
        assert!(
            text.contains("4 files (2Ki)") || text.contains("4 files (2"),
            "{text}"
        );
        assert!(
            text.contains("nodeos master --restore /b/lab.age"),
            "{text}"
        );
    }

    #[test]
    fn short_passphrases_are_refused_before_calling_the_master() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("pass");
        std::fs::write(&file, "short\n").expect("write");
        let err = read_passphrase_file(&file).expect_err("short");
        assert!(err.to_string().contains("shorter than 12"), "{err}");
        std::fs::write(&file, "a long enough passphrase\n").expect("write");
        assert_eq!(
            read_passphrase_file(&file).expect("ok"),
            "a long enough passphrase"
        );
    }
}
