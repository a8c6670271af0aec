//! `cloudos run --input PATH…`: the files and directories packed into one tar archive
//! (each under its own name, at the top of the container's `/input`), uploaded to the
//! master before the task is made, and named in its spec by digest.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use cloudos_cluster::client::ApiClient;
use cloudos_cluster::workload::MAX_INPUT_BYTES;

/// Uploads `paths` as one archive; its digest.
pub async fn upload(client: &ApiClient, paths: &[PathBuf]) -> anyhow::Result<String> {
    let tar = pack(paths)?;
    let info = client.upload_input(tar).await?;
    Ok(info.digest)
}

/// A tar archive of `paths`, each under its file name; refused past [`MAX_INPUT_BYTES`].
fn pack(paths: &[PathBuf]) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Capped::default());
    builder.mode(tar::HeaderMode::Deterministic);
    let mut names = std::collections::BTreeSet::new();
    for path in paths {
        let name = path
            .file_name()
            .with_context(|| format!("--input {}: name a file or a directory", path.display()))?;
        if !names.insert(name.to_owned()) {
            bail!(
                "--input: two inputs are called {}; each goes to /input/NAME",
                Path::new(name).display()
            );
        }
        let meta = std::fs::metadata(path)
            .with_context(|| format!("--input {}: cannot read it", path.display()))?;
        let added = if meta.is_dir() {
            builder.append_dir_all(name, path)
        } else {
            builder.append_path_with_name(path, name)
        };
        added.map_err(|e| too_large_or(e, path))?;
    }
    let capped = builder
        .into_inner()
        .map_err(|e| too_large_or(e, Path::new("the archive")))?;
    Ok(capped.0)
}

fn too_large_or(e: std::io::Error, path: &Path) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::FileTooLarge {
        anyhow::anyhow!("--input: the files come to more than {MAX_INPUT_BYTES} bytes; a task's input is at most that")
    } else {
        anyhow::anyhow!("--input {}: {e}", path.display())
    }
}

/// The archive in memory, refused as soon as it passes the cap.
#[derive(Default)]
struct Capped(Vec<u8>);

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() as u64 + buf.len() as u64 > MAX_INPUT_BYTES {
            return Err(std::io::ErrorKind::FileTooLarge.into());
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_directories_go_in_under_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rows.csv");
        std::fs::write(&file, "a,b\n").unwrap();
        let sub = dir.path().join("conf");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("app.toml"), "x = 1\n").unwrap();
        let tar = pack(&[file.clone(), sub]).unwrap();
        let mut names: Vec<String> = tar::Archive::new(tar.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["conf/", "conf/app.toml", "rows.csv"]);

        let twice = pack(&[file.clone(), file]).unwrap_err().to_string();
        assert!(twice.contains("two inputs are called rows.csv"), "{twice}");
        let missing = pack(&[dir.path().join("nope")]).unwrap_err().to_string();
        assert!(missing.contains("nope"), "{missing}");
    }
}
