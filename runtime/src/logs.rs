//! A container's stdout or stderr file, rotated at a size limit so a chatty
//! workload cannot fill the data partition: `stdout.log` holds the newest
//! output, `stdout.log.1` the previous file, older output is dropped.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Default size at which a log file is rotated.
pub const DEFAULT_LOG_LIMIT: u64 = 8 << 20;

pub struct RotatingLog {
    path: PathBuf,
    file: Option<File>,
    written: u64,
    limit: u64,
}

impl RotatingLog {
    pub fn open(path: &Path, limit: u64) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_path_buf(),
            file: Some(file),
            written,
            limit: limit.max(1),
        })
    }

    pub fn rotated_path(path: &Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".1");
        PathBuf::from(p)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        fs::rename(&self.path, Self::rotated_path(&self.path))?;
        self.file = Some(File::create(&self.path)?);
        self.written = 0;
        Ok(())
    }

    /// Writes all of `data`, rotating as often as needed. A failing disk must
    /// not stop the shim from reaping its container, so callers may ignore errors.
    pub fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            if self.written >= self.limit || self.file.is_none() {
                self.rotate()?;
            }
            let room = (self.limit - self.written) as usize;
            let n = room.min(data.len());
            if let Some(f) = self.file.as_mut() {
                f.write_all(&data[..n])?;
            }
            self.written += n as u64;
            data = &data[n..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_keeps_one_old_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("stdout.log");
        let mut log = RotatingLog::open(&p, 10).unwrap();
        log.write(b"0123456789abc").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"abc");
        assert_eq!(
            fs::read(RotatingLog::rotated_path(&p)).unwrap(),
            b"0123456789"
        );
        log.write(b"defghijklmnop").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"klmnop");
        assert_eq!(
            fs::read(RotatingLog::rotated_path(&p)).unwrap(),
            b"abcdefghij"
        );
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 2);
        // Reopening continues the count.
        let mut log = RotatingLog::open(&p, 10).unwrap();
        log.write(b"1234").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"klmnop1234");
    }
}
