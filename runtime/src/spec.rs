//! The container description the agent hands to the runtime, and its validation.
//! Owns only plain data: no syscalls, so every rule here is unit-tested.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::RuntimeError;

/// What to run and how. The caller (the agent) has already merged the image's
/// entrypoint and command into `args` and its environment into `env`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// `[a-z0-9][a-z0-9_.-]{0,63}`: also a directory and cgroup name.
    pub id: String,
    /// Unpacked layer directories, bottom first.
    pub layers: Vec<PathBuf>,
    /// Full argv; `args[0]` is looked up in the image's `PATH` when it has no `/`.
    pub args: Vec<String>,
    /// `K=V`; a default `PATH` is added when none is given.
    pub env: Vec<String>,
    /// Working directory inside the container; `/` when empty.
    #[serde(default)]
    pub cwd: String,
    /// `None` runs as 0:0.
    #[serde(default)]
    pub user: Option<User>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub readonly_root: bool,
    /// Host directory bind-mounted read-write at `/output`.
    #[serde(default)]
    pub output_dir: Option<PathBuf>,
    #[serde(default)]
    pub network: ContainerNetwork,
    /// `None`: the host's hostname (in the container's own UTS namespace).
    #[serde(default)]
    pub hostname: Option<String>,
    /// The container's `/etc/resolv.conf` (bound read-only) when not the host's: a bridge
    /// container's names its node's DNS.
    #[serde(default)]
    pub resolv_conf: Option<PathBuf>,
    /// Host directories bound into the container (its volumes).
    #[serde(default)]
    pub binds: Vec<Bind>,
    /// Environment variables whose values the shim reads from files as it starts the
    /// container: a secret's value stays on its memory file system, and this spec, which
    /// is kept on disk, holds only where it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_files: Vec<EnvFile>,
}

/// An environment variable whose value is a file's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvFile {
    pub name: String,
    /// Absolute; read once, as the container starts.
    pub path: PathBuf,
}

/// A host directory bound into the container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    /// An existing directory on the host.
    pub source: PathBuf,
    /// Where it appears in the container (absolute; made if the image lacks it).
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

/// Limits written to the container's cgroup (v2 `cpu.max`, `memory.max`,
/// `pids.max`; the v1 equivalents on a v1 host).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Millicores: 500 = half a core (quota 50 ms per 100 ms period).
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// `None`: [`DEFAULT_PIDS_LIMIT`].
    pub pids: Option<u64>,
}

/// The most processes (and threads) a container may have when its spec sets
/// no limit: plenty for real workloads, and a fork bomb stops there instead
/// of taking every pid of the host.
pub const DEFAULT_PIDS_LIMIT: u64 = 4096;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerNetwork {
    /// Share the host's network namespace.
    #[default]
    Host,
    /// A new network namespace with only the loopback interface.
    None,
    /// The network namespace kept at this path (made and wired by the caller: the node's
    /// bridge, `cloudos-containernet`).
    Join(PathBuf),
}

/// The PATH used when the spec's environment has none (the same as Docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Checks a container id: it names a directory under the runtime root and a
/// cgroup, so it must not be able to escape either.
pub fn validate_id(id: &str) -> Result<(), RuntimeError> {
    let bad = |why: &str| RuntimeError::InvalidId {
        id: id.to_string(),
        why: why.to_string(),
    };
    let mut chars = id.chars();
    match chars.next() {
        None => return Err(bad("it is empty")),
        Some(c) if !(c.is_ascii_lowercase() || c.is_ascii_digit()) => {
            return Err(bad("it must start with a-z or 0-9"))
        }
        Some(_) => {}
    }
    if id.len() > 64 {
        return Err(bad("it is longer than 64 characters"));
    }
    if let Some(c) = chars
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-')))
    {
        return Err(bad(&format!("it contains {c:?}; use only a-z 0-9 _ . -")));
    }
    Ok(())
}

impl ContainerSpec {
    /// Everything that can be checked without touching the system.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        validate_id(&self.id)?;
        let invalid = |why: String| RuntimeError::InvalidSpec {
            id: self.id.clone(),
            why,
        };
        if self.layers.is_empty() {
            return Err(invalid(
                "it has no layers; give at least one unpacked layer".into(),
            ));
        }
        if let Some(layer) = self.layers.iter().find(|l| !l.is_absolute()) {
            return Err(invalid(format!(
                "layer {} is not an absolute path",
                layer.display()
            )));
        }
        // overlayfs separates lowerdirs with ':' and options with ','.
        if let Some(layer) = self
            .layers
            .iter()
            .find(|l| l.to_string_lossy().contains([':', ',']))
        {
            return Err(invalid(format!(
                "layer path {} contains ':' or ',', which overlayfs cannot take",
                layer.display()
            )));
        }
        if self.args.is_empty() || self.args[0].is_empty() {
            return Err(invalid("args is empty; give the command to run".into()));
        }
        if self.args.iter().any(|a| a.contains('\0')) {
            return Err(invalid("an argument contains a NUL byte".into()));
        }
        if let Some(e) = self
            .env
            .iter()
            .find(|e| !e.contains('=') || e.starts_with('='))
        {
            return Err(invalid(format!("environment entry {e:?} is not K=V")));
        }
        if self.env.iter().any(|e| e.contains('\0')) {
            return Err(invalid("an environment entry contains a NUL byte".into()));
        }
        if !self.cwd.is_empty() && !self.cwd.starts_with('/') {
            return Err(invalid(format!("cwd {:?} is not absolute", self.cwd)));
        }
        if let ContainerNetwork::Join(path) = &self.network {
            if !path.is_absolute() {
                return Err(invalid(format!(
                    "network namespace {} is not an absolute path",
                    path.display()
                )));
            }
        }
        for bind in &self.binds {
            let target = Path::new(&bind.target);
            let dotted = target
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir));
            if !bind.source.is_absolute() || !target.is_absolute() || dotted {
                return Err(invalid(format!(
                    "bind {} on {} needs absolute paths without ..",
                    bind.source.display(),
                    bind.target
                )));
            }
        }
        for f in &self.env_files {
            let key_ok = !f.name.is_empty()
                && !f.name.starts_with(|c: char| c.is_ascii_digit())
                && f.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !key_ok || !f.path.is_absolute() {
                return Err(invalid(format!(
                    "environment file {} for {:?} needs a variable name and an absolute path",
                    f.path.display(),
                    f.name
                )));
            }
        }
        if let Some(dir) = &self.output_dir {
            if !dir.is_absolute() {
                return Err(invalid(format!(
                    "output_dir {} is not an absolute path",
                    dir.display()
                )));
            }
        }
        if let Some(h) = &self.hostname {
            let ok = !h.is_empty()
                && h.len() <= 63
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if !ok {
                return Err(invalid(format!(
                    "hostname {h:?} is not 1-63 characters of a-z A-Z 0-9 - ."
                )));
            }
        }
        let r = &self.resources;
        if r.cpu_millis == Some(0) || r.memory_bytes == Some(0) || r.pids == Some(0) {
            return Err(invalid(
                "a resource limit is 0; leave it unset for no limit".into(),
            ));
        }
        if r.memory_bytes.is_some_and(|m| m > i64::MAX as u64)
            || r.pids.is_some_and(|p| p > i64::MAX as u64)
            || r.cpu_millis.is_some_and(|c| c > 1_000_000)
        {
            return Err(invalid("a resource limit is out of range".into()));
        }
        Ok(())
    }

    pub fn cwd_or_root(&self) -> &str {
        if self.cwd.is_empty() {
            "/"
        } else {
            &self.cwd
        }
    }

    /// The spec with each of its `env_files` read into its environment. An error names
    /// the variable and the file, never what the file holds.
    pub fn with_env_files(mut self) -> Result<Self, String> {
        for f in std::mem::take(&mut self.env_files) {
            let bytes = std::fs::read(&f.path)
                .map_err(|e| format!("cannot read {} for ${}: {e}", f.path.display(), f.name))?;
            match String::from_utf8(bytes) {
                Ok(value) if !value.contains('\0') => {
                    self.env
                        .retain(|e| e.split_once('=').map(|(k, _)| k) != Some(&f.name));
                    self.env.push(format!("{}={value}", f.name));
                }
                _ => {
                    return Err(format!(
                        "{} (for ${}) is not text without NUL bytes",
                        f.path.display(),
                        f.name
                    ))
                }
            }
        }
        Ok(self)
    }

    /// The environment the process gets: the spec's, plus a default PATH.
    pub fn effective_env(&self) -> Vec<String> {
        let mut env = self.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            id: "job-1".into(),
            layers: vec!["/var/lib/l0".into()],
            args: vec!["/bin/true".into()],
            ..Default::default()
        }
    }

    #[test]
    fn ids() {
        for ok in ["a", "0", "job-1", "a.b_c-d", &"a".repeat(64)] {
            assert!(validate_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            ".",
            "..",
            "A",
            "a/b",
            "a b",
            "é",
            &"a".repeat(65),
            "_x",
        ] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_files_are_read_into_the_environment_and_an_error_never_shows_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, "p4ss word").unwrap();
        let mut s = spec();
        s.env = vec!["TOKEN=old".into(), "A=1".into()];
        s.env_files = vec![EnvFile {
            name: "TOKEN".into(),
            path: good,
        }];
        assert!(s.validate().is_ok());
        let read = s.clone().with_env_files().unwrap();
        assert_eq!(read.env, vec!["A=1".to_owned(), "TOKEN=p4ss word".into()]);
        assert!(read.env_files.is_empty());

        let binary = dir.path().join("binary");
        std::fs::write(&binary, b"k3y\0bytes").unwrap();
        s.env_files[0].path = binary;
        let e = s.clone().with_env_files().unwrap_err();
        assert!(e.contains("$TOKEN") && !e.contains("k3y"), "{e}");
        s.env_files[0].path = "relative".into();
        assert!(s.validate().is_err());
        s.env_files[0] = EnvFile {
            name: "1X".into(),
            path: "/x".into(),
        };
        assert!(s.validate().is_err());
    }

    #[test]
    fn spec_rules() {
        assert!(spec().validate().is_ok());
        let cases: Vec<fn(&mut ContainerSpec)> = vec![
            |s| s.layers.clear(),
            |s| s.layers = vec!["rel".into()],
            |s| s.layers = vec!["/a:b".into()],
            |s| s.args.clear(),
            |s| s.env = vec!["NOEQ".into()],
            |s| s.cwd = "rel".into(),
            |s| s.output_dir = Some("rel".into()),
            |s| s.network = ContainerNetwork::Join("rel".into()),
            |s| s.hostname = Some("a b".into()),
            |s| s.resources.pids = Some(0),
        ];
        for (i, mutate) in cases.iter().enumerate() {
            let mut s = spec();
            mutate(&mut s);
            assert!(s.validate().is_err(), "case {i}");
        }
    }

    #[test]
    fn env_gets_a_path() {
        let mut s = spec();
        assert!(s.effective_env().iter().any(|e| e.starts_with("PATH=")));
        s.env = vec!["PATH=/x".into()];
        assert_eq!(s.effective_env(), vec!["PATH=/x".to_string()]);
        assert_eq!(s.cwd_or_root(), "/");
    }

    #[test]
    fn json_round_trip() {
        let s = spec();
        let back: ContainerSpec =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(s, back);
    }
}
