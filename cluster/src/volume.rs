//! Volumes (decision 64): where a container keeps what must outlive it.
//!
//! A *named volume* (`--volume data:/var/lib/app`) is a directory on the data partition of
//! one node, made there by the first run that uses it; from then on every task and replica
//! that names it is placed on that node, so it finds what the last one left. A *host path*
//! (`--volume /srv/media:/media:ro`) is a directory of the node itself, refused unless the
//! node's admin allowed a prefix of it (`cloudos.volume_host_paths`).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::workload::SpecError;

/// Most volumes one container mounts.
pub const MAX_VOLUMES: usize = 16;

/// One volume in a container, as `--volume SOURCE:TARGET[:ro]` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// A volume name, or (starting with `/`) a path on the node.
    pub source: String,
    /// Where it appears in the container (absolute).
    pub target: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

impl VolumeMount {
    /// A path on the node rather than a named volume.
    pub fn is_host_path(&self) -> bool {
        self.source.starts_with('/')
    }

    /// The named volume it mounts, if it is one.
    pub fn volume(&self) -> Option<&str> {
        (!self.is_host_path()).then_some(self.source.as_str())
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        if self.is_host_path() {
            check_path(&self.source, "host path")?;
        } else {
            validate_volume_name(&self.source)?;
        }
        check_path(&self.target, "mount point")?;
        if self.target == "/" {
            return Err(SpecError::Volume(
                "a volume cannot be mounted on / (the container's root)".into(),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for VolumeMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.source, self.target)?;
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

/// An absolute path without `.` or `..` parts, NUL or a line break: what it names is
/// what a reader of the spec sees.
fn check_path(path: &str, what: &str) -> Result<(), SpecError> {
    let bad = |why: &str| SpecError::Volume(format!("the {what} {path:?} {why}"));
    if !path.starts_with('/') {
        return Err(bad("is not absolute"));
    }
    if path.len() > 4096 || path.contains(['\0', '\n']) {
        return Err(bad("is not a path"));
    }
    if path.split('/').any(|part| part == "." || part == "..") {
        return Err(bad("has . or .. in it"));
    }
    Ok(())
}

/// A volume name: 1 to 63 of `a-z 0-9 _ . -`, starting with a letter or digit (it names a
/// directory on the node).
pub fn validate_volume_name(name: &str) -> Result<(), SpecError> {
    if crate::util::is_file_name(name) {
        Ok(())
    } else {
        Err(SpecError::Volume(format!(
            "invalid volume name {name:?}: use 1-63 of a-z 0-9 _ . -, starting with a letter or digit"
        )))
    }
}

/// `NAME:/path`, `NAME:/path:ro`, `/host/path:/path[:ro|:rw]`.
pub fn parse_volume(text: &str) -> Result<VolumeMount, SpecError> {
    let bad = || {
        SpecError::Volume(format!(
            "invalid volume {text:?}: use NAME:/path[:ro] or /host/path:/path[:ro]"
        ))
    };
    let mut parts = text.split(':');
    let (Some(source), Some(target)) = (parts.next(), parts.next()) else {
        return Err(bad());
    };
    let read_only = match parts.next() {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(_) => return Err(bad()),
    };
    if parts.next().is_some() {
        return Err(bad());
    }
    let mount = VolumeMount {
        source: source.to_owned(),
        target: target.to_owned(),
        read_only,
    };
    mount.validate()?;
    Ok(mount)
}

/// Checks a spec's volumes: each valid, at most [`MAX_VOLUMES`], no mount point twice.
pub fn validate_mounts(mounts: &[VolumeMount]) -> Result<(), SpecError> {
    if mounts.len() > MAX_VOLUMES {
        return Err(SpecError::Volume(format!(
            "{} volumes: a container mounts at most {MAX_VOLUMES}",
            mounts.len()
        )));
    }
    for (i, m) in mounts.iter().enumerate() {
        m.validate()?;
        if mounts[..i].iter().any(|other| other.target == m.target) {
            return Err(SpecError::Volume(format!(
                "{} is the mount point of two volumes",
                m.target
            )));
        }
    }
    Ok(())
}

/// The smallest size limit a volume takes: less is a typing slip, not a volume.
pub const MIN_SIZE_LIMIT: u64 = 1 << 20;

/// A named volume as the master keeps it: the node that holds it, once work used it, and
/// its size limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    /// `None` until the first run that names it is placed (`cloudos volume create` makes
    /// a volume before any work uses it).
    pub node: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Bytes it may hold (a project quota on its node's data partition); `None`: as much
    /// as the partition has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<u64>,
}

/// `PUT /v1/volumes/{name}` (`cloudos volume create`, `cloudos volume resize`): makes
/// the volume, or sets the limit of the one there is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeRequest {
    #[serde(default)]
    pub size_limit: Option<u64>,
}

/// What `PUT /v1/volumes/{name}` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeChange {
    pub volume: VolumeInfo,
    /// It did not exist before.
    pub created: bool,
    /// Its node was told the new limit now; `false` when it is on no node yet or its node
    /// is away (the limit is sent when work next mounts it there).
    pub sent: bool,
}

/// `cloudos volume list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub name: String,
    /// The node that holds it; `None` before any work used it.
    pub node: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<u64>,
    /// Bytes it holds, as its node last reported (volumes with a size limit, on a node
    /// that is connected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// The tasks and replicas that use it and have not ended.
    #[serde(default)]
    pub used_by: Vec<String>,
}

/// Parses a volume's size limit (`500Mi`, `10G`, …), at least [`MIN_SIZE_LIMIT`].
pub fn parse_size_limit(text: &str) -> Result<u64, SpecError> {
    let bytes = crate::workload::parse_byte_count(text).ok_or_else(|| {
        SpecError::Volume(format!(
            "invalid size {text:?}: use bytes with a unit such as 500Mi, 10Gi or 2G"
        ))
    })?;
    check_size_limit(bytes)?;
    Ok(bytes)
}

/// A size limit the master accepts.
pub fn check_size_limit(bytes: u64) -> Result<(), SpecError> {
    if bytes < MIN_SIZE_LIMIT {
        return Err(SpecError::Volume(format!(
            "a size limit of {bytes} bytes is below the least, 1Mi"
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeList {
    pub volumes: Vec<VolumeInfo>,
}

/// Whether `path` (canonical: no symbolic link, `.` or `..` left) is under one of the
/// `allowed` prefixes, by whole path components (`/srv` allows `/srv/a`, not `/srvx`).
pub fn host_path_allowed(path: &std::path::Path, allowed: &[String]) -> bool {
    allowed.iter().any(|prefix| {
        let prefix = std::path::Path::new(prefix);
        prefix.is_absolute() && path.starts_with(prefix)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_parse_as_docker_writes_them() {
        let named = parse_volume("data:/var/lib/app").unwrap();
        assert_eq!(named.volume(), Some("data"));
        assert!(!named.read_only);
        let host = parse_volume("/srv/media:/media:ro").unwrap();
        assert!(host.is_host_path() && host.read_only);
        assert_eq!(host.volume(), None);
        assert_eq!(host.to_string(), "/srv/media:/media:ro");
        for bad in [
            "data",
            "data:relative",
            "data:/x:rx",
            "data:/x:ro:more",
            "Data:/x",
            "-x:/x",
            "data:/",
            "/srv/../etc:/x",
            "data:/a/../b",
            "",
        ] {
            let err = parse_volume(bad).unwrap_err().to_string();
            assert!(!err.is_empty(), "{bad}");
        }
        let long = format!("{}:/x", "a".repeat(64));
        assert!(parse_volume(&long).is_err());
    }

    #[test]
    fn a_spec_mounts_few_volumes_each_at_its_own_place() {
        let a = parse_volume("a:/x").unwrap();
        let b = parse_volume("b:/x").unwrap();
        let err = validate_mounts(&[a.clone(), b]).unwrap_err().to_string();
        assert!(
            err.contains("/x is the mount point of two volumes"),
            "{err}"
        );
        let many: Vec<VolumeMount> = (0..=MAX_VOLUMES)
            .map(|i| parse_volume(&format!("v{i}:/m{i}")).unwrap())
            .collect();
        assert!(validate_mounts(&many).is_err());
        assert!(validate_mounts(&[a]).is_ok());
    }

    #[test]
    fn host_paths_are_allowed_by_whole_components() {
        let allowed = vec!["/srv".to_owned(), "relative".to_owned()];
        let ok = |p: &str| host_path_allowed(std::path::Path::new(p), &allowed);
        assert!(ok("/srv/media"));
        assert!(ok("/srv"));
        assert!(!ok("/srvx"));
        assert!(!ok("/etc"));
        assert!(!ok("relative/x"));
        assert!(!host_path_allowed(std::path::Path::new("/srv/a"), &[]));
    }
}
