//! The on-disk state of one container under `<root>/<id>/`, shared by the
//! runtime (in the agent) and the shim: file names, atomic writes, and the
//! records both sides read. Nothing else lives on disk, so an agent restart
//! finds everything here.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::RuntimeError;

/// How a container ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code when the process exited by itself.
    pub code: Option<i32>,
    /// Signal number when a signal ended it.
    pub signal: Option<i32>,
    /// The cgroup's OOM killer killed a process of the container.
    pub oom_killed: bool,
    /// The shim died before it could record the exit (e.g. it was SIGKILLed,
    /// or the node restarted): code and signal are unknown.
    pub lost: bool,
    pub finished_at_unix_ms: u64,
}

impl ExitStatus {
    pub fn lost_now() -> Self {
        ExitStatus {
            lost: true,
            finished_at_unix_ms: now_unix_ms(),
            ..Default::default()
        }
    }

    /// True only for a clean exit with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.oom_killed && !self.lost
    }
}

/// Where a container's output is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogPaths {
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

/// Who the shim is: pid plus the kernel's start time, so a recycled pid is
/// never taken for the shim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimRecord {
    pub pid: i32,
    pub start_time: u64,
}

/// Written by the shim once the container's process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub pid: i32,
}

/// The one message the shim sends the runtime on its stdout: started, or why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum StartReport {
    Started { pid: i32 },
    InvalidSpec { why: String },
    LayerMissing { path: PathBuf },
    CommandNotFound { command: String },
    Cgroup { message: String },
    Failed { message: String },
}

/// File names under `<root>/<id>/`.
#[derive(Clone, Debug)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(root: &Path, id: &str) -> Self {
        Layout { dir: root.join(id) }
    }
    pub fn spec(&self) -> PathBuf {
        self.dir.join("spec.json")
    }
    pub fn shim(&self) -> PathBuf {
        self.dir.join("shim.json")
    }
    pub fn container(&self) -> PathBuf {
        self.dir.join("container.json")
    }
    pub fn exit(&self) -> PathBuf {
        self.dir.join("exit.json")
    }
    pub fn shim_log(&self) -> PathBuf {
        self.dir.join("shim.log")
    }
    pub fn logs(&self) -> LogPaths {
        LogPaths {
            stdout: self.dir.join("stdout.log"),
            stderr: self.dir.join("stderr.log"),
        }
    }
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    /// Mount point of the shim's private tmpfs (visible only in the shim's
    /// mount namespace) holding the bundle and libcontainer's state.
    pub fn scratch(&self) -> PathBuf {
        self.dir.join("run")
    }
    pub fn bundle(&self) -> PathBuf {
        self.scratch().join("bundle")
    }
    /// libcontainer's own state root (it adds `<id>/state.json` below).
    pub fn libcontainer_root(&self) -> PathBuf {
        self.scratch().join("lc")
    }
}

/// Writes through a temporary file and a rename, so a reader sees the old
/// file or the whole new one, never a torn one. No fsync: these records lose
/// their meaning across a power cut anyway (the containers are gone too), and
/// an fsync per start and exit would cost more than the rest of the start.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), RuntimeError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The pid keeps two writers of one file (the runtime and the shim both
    // record the shim) from sharing a temporary.
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        RuntimeError::io("write", path, e)
    })
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RuntimeError> {
    let data = serde_json::to_vec(value)
        .map_err(|e| RuntimeError::io("serialise", path, std::io::Error::other(e)))?;
    write_atomic(path, &data)
}

/// `Ok(None)` when the file does not exist.
pub fn read_json<T: DeserializeOwned>(id: &str, path: &Path) -> Result<Option<T>, RuntimeError> {
    match fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| RuntimeError::BadState {
                id: id.to_string(),
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RuntimeError::io("read", path, e)),
    }
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_json_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("exit.json");
        assert_eq!(read_json::<ExitStatus>("x", &p).unwrap(), None);
        let st = ExitStatus {
            code: Some(3),
            ..Default::default()
        };
        write_json(&p, &st).unwrap();
        assert_eq!(read_json::<ExitStatus>("x", &p).unwrap(), Some(st));
        // Only the file itself is left, no temporary.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        fs::write(&p, b"{").unwrap();
        assert!(matches!(
            read_json::<ExitStatus>("x", &p),
            Err(RuntimeError::BadState { .. })
        ));
    }

    #[test]
    fn report_wire_format() {
        let r = StartReport::CommandNotFound {
            command: "/nope".into(),
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"result":"command_not_found","command":"/nope"}"#);
        assert_eq!(serde_json::from_str::<StartReport>(&s).unwrap(), r);
    }
}
