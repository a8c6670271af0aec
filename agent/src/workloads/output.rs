//! A finished run's `/output`: packed as a tar archive and handed to the master, which keeps
//! it for `cloudos output`. Nothing is sent when the task wrote nothing there.
//!
//! The container chose what is in there, so the archive is packed into a file on the data
//! partition, never into memory, and refused as soon as it would pass the size the master
//! accepts: first from the sizes the files claim (a sparse file of terabytes costs no disk
//! and no time to refuse), then while writing, in case a file grew meanwhile.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cloudos_cluster::client::MAX_TRANSFER_BYTES;

use super::Shared;

/// Directory (beside the runs' output directories) for packed archives. Run ids start with
/// a letter or digit, so no run's directory can be called this.
const PACKED_DIR: &str = ".packed";

/// Why `/output` was not packed.
#[derive(Debug, thiserror::Error)]
enum PackError {
    #[error("/output holds at least {bytes} bytes, over the {cap} bytes the master accepts; write less to /output")]
    TooLarge { bytes: u64, cap: u64 },
    #[error("cannot pack /output: {0}")]
    Io(#[from] io::Error),
}

/// Uploads the archive of `dir`; its size when the master has it.
pub(super) async fn collect(shared: &Arc<Shared>, run: &str, dir: &Path) -> Option<u64> {
    let empty = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true);
    if empty {
        return None;
    }
    let archive = archive_path(dir, run);
    let packed = {
        let (dir, archive) = (dir.to_owned(), archive.clone());
        tokio::task::spawn_blocking(move || pack(&dir, &archive, MAX_TRANSFER_BYTES as u64)).await
    };
    let size = match packed {
        Ok(Ok(size)) => size,
        Ok(Err(e)) => {
            log::warn!("/output of {run} not collected: {e}");
            return None;
        }
        Err(e) => {
            log::warn!("packing /output of {run} failed: {e}");
            return None;
        }
    };
    let uploaded = match shared.api() {
        // Streamed from the archive: never more than a chunk of it in memory.
        Some(api) => api
            .upload_output_file(run, &archive)
            .await
            .map_err(|e| e.to_string()),
        None => Err("no connection to the master yet".to_owned()),
    };
    let _ = std::fs::remove_file(&archive);
    match uploaded {
        Ok(()) => Some(size),
        Err(e) => {
            log::warn!("cannot hand /output of {run} to the master: {e}");
            None
        }
    }
}

/// Where the archive of the run whose output is in `dir` is packed.
fn archive_path(dir: &Path, run: &str) -> PathBuf {
    let outputs = dir.parent().unwrap_or(dir);
    outputs.join(PACKED_DIR).join(format!("{run}.tar"))
}

/// Packs the contents of `dir` (paths relative to it; symlinks kept as links, never
/// followed out of it) into `archive`, at most `cap` bytes; the archive's size. Nothing is
/// left at `archive` on an error.
fn pack(dir: &Path, archive: &Path, cap: u64) -> Result<u64, PackError> {
    let claimed = claimed_size(dir)?;
    if claimed > cap {
        return Err(PackError::TooLarge {
            bytes: claimed,
            cap,
        });
    }
    if let Some(parent) = archive.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let written = write_archive(dir, archive, cap);
    if written.is_err() {
        let _ = std::fs::remove_file(archive);
    }
    written
}

fn write_archive(dir: &Path, archive: &Path, cap: u64) -> Result<u64, PackError> {
    let capped = Capped {
        inner: File::create(archive)?,
        written: 0,
        cap,
    };
    let mut builder = tar::Builder::new(capped);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Deterministic);
    let appended = builder
        .append_dir_all(".", dir)
        .and_then(|()| builder.into_inner());
    match appended {
        Ok(capped) => Ok(capped.written),
        Err(e) if e.get_ref().is_some_and(|inner| inner.is::<OverCap>()) => {
            Err(PackError::TooLarge {
                bytes: cap + 1,
                cap,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// The size of the archive of `dir` as its files claim it (tar headers and padding
/// included), without reading them: a lower bound of what packing would write.
fn claimed_size(dir: &Path) -> io::Result<u64> {
    const BLOCK: u64 = 512;
    let mut total = 0u64;
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.path().symlink_metadata()?;
            total = total.saturating_add(BLOCK);
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                total = total.saturating_add(meta.len().div_ceil(BLOCK) * BLOCK);
            }
        }
    }
    Ok(total)
}

/// The marker error of a [`Capped`] writer that reached its cap.
#[derive(Debug, thiserror::Error)]
#[error("the archive reached its size cap")]
struct OverCap;

/// A writer that fails instead of writing past `cap` bytes.
struct Capped<W> {
    inner: W,
    written: u64,
    cap: u64,
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.cap {
            return Err(io::Error::other(OverCap));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn peak_rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_owned();
                line.split_whitespace().nth(1)?.parse().ok()
            })
            .expect("VmHWM in /proc/self/status")
    }

    /// The container's attacker writes a sparse 10 GiB file to /output: it costs it no disk,
    /// and the agent used to read it all into memory and die, on every restart.
    #[test]
    fn a_sparse_10_gib_file_is_refused_at_once_without_reading_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("outputs").join("t-0123456789.1");
        std::fs::create_dir_all(&out).expect("mkdir");
        std::fs::write(out.join("result.txt"), "42").expect("write");
        File::create(out.join("huge"))
            .and_then(|f| f.set_len(10 << 30))
            .expect("sparse file");
        let archive = archive_path(&out, "t-0123456789.1");
        let rss_before = peak_rss_kib();
        let started = Instant::now();
        let err = pack(&out, &archive, MAX_TRANSFER_BYTES as u64).expect_err("refused");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert!(
            matches!(err, PackError::TooLarge { bytes, .. } if bytes > 10 << 30),
            "{err}"
        );
        assert!(
            err.to_string().contains("over the 268435456 bytes"),
            "{err}"
        );
        assert!(!archive.exists(), "nothing packed");
        let grown = peak_rss_kib().saturating_sub(rss_before);
        assert!(grown < 64 * 1024, "peak memory grew by {grown} KiB");
    }

    /// A file that grows past what it claimed while it is being packed is cut off by the
    /// writer itself.
    #[test]
    fn the_cap_holds_while_writing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = dir.path().join("a.tar");
        let mut capped = Capped {
            inner: File::create(&archive).expect("create"),
            written: 0,
            cap: 4096,
        };
        capped.write_all(&[1u8; 4096]).expect("up to the cap");
        let err = capped.write_all(&[1u8]).expect_err("past the cap");
        assert!(err.get_ref().is_some_and(|e| e.is::<OverCap>()));
        assert_eq!(std::fs::metadata(&archive).expect("archive").len(), 4096);
    }

    #[test]
    fn what_fits_is_packed_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("outputs").join("r1");
        std::fs::create_dir_all(out.join("sub")).expect("mkdir");
        std::fs::write(out.join("sub").join("a.txt"), "hello").expect("write");
        std::os::unix::fs::symlink("/etc/passwd", out.join("link")).expect("symlink");
        let archive = archive_path(&out, "r1");
        let size = pack(&out, &archive, 1 << 20).expect("packed");
        assert_eq!(std::fs::metadata(&archive).expect("archive").len(), size);
        let mut names: Vec<String> = tar::Archive::new(File::open(&archive).expect("open"))
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        names.sort();
        assert_eq!(names, ["./", "link", "sub", "sub/a.txt"]);
        // A cap below the claimed size is refused before anything is written.
        let _ = std::fs::remove_file(&archive);
        assert!(matches!(
            pack(&out, &archive, 1024),
            Err(PackError::TooLarge { .. })
        ));
        assert!(!archive.exists());
    }
}
