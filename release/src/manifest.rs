//! The manifest: what a bundle claims to be (version, architecture) and what it holds (each
//! part's name, size and SHA-256). It is the one thing the signature covers; the parts are
//! bound to it by their hashes.

use std::fmt;

use semver::Version;
use serde::{Deserialize, Serialize};

/// The manifest format this code writes and reads.
/// Format 2 added the etcd pack: a node of format 1 says "upgrade in steps" instead of
/// taking a bundle whose masters could not run etcd.
pub const FORMAT: u32 = 2;
/// The parts every bundle has, in the order the archive holds them: the appliance's slot
/// (kernel and initramfs), the binary a host installed with the curl line runs, and the
/// etcd pack a master among several runs its member from (kept in the slot beside the
/// kernel, so that a compute node's boot never loads it: see docs/design.md decision 70).
pub const PART_NAMES: [&str; 4] = ["vmlinuz", "initramfs.img", "nodeos", ETCD_PACK];
/// The etcd pack's name in a bundle, a slot and the live medium's `/boot`.
pub const ETCD_PACK: &str = "etcd.tar.zst";
/// Larger than any real manifest by far: a bundle cannot make a node read more.
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest is not valid: {0}")]
    Form(String),
    #[error("the manifest has format {0}; this node reads format {FORMAT} (upgrade in steps)")]
    Format(u32),
    #[error(
        "the manifest lists parts {found:?}; a bundle holds exactly {PART_NAMES:?}, in that order"
    )]
    Parts { found: Vec<String> },
    #[error("part {name} has a bad SHA-256 {value:?} (64 hex digits)")]
    Hash { name: String, value: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arch {
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "aarch64")]
    Aarch64,
}

impl Arch {
    /// The architecture this code was compiled for, if it is one CloudOS releases.
    pub fn running() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }

    pub fn parse(text: &str) -> Option<Arch> {
        match text {
            "x86_64" | "amd64" => Some(Arch::X86_64),
            "aarch64" | "arm64" => Some(Arch::Aarch64),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    pub name: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub version: Version,
    pub arch: Arch,
    pub parts: Vec<Part>,
}

impl Manifest {
    /// The bytes that get signed: pretty JSON, so a person can read a bundle's manifest.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Parses and checks the shape: the format, exactly the known parts, well-formed hashes.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        // The format is read first, so a newer manifest says so instead of failing on a
        // field this code does not know.
        #[derive(Deserialize)]
        struct FormatOnly {
            format: u32,
        }
        let format: FormatOnly =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Form(e.to_string()))?;
        if format.format != FORMAT {
            return Err(ManifestError::Format(format.format));
        }
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Form(e.to_string()))?;
        let names: Vec<&str> = manifest.parts.iter().map(|p| p.name.as_str()).collect();
        if names != PART_NAMES {
            return Err(ManifestError::Parts {
                found: names.iter().map(|n| n.to_string()).collect(),
            });
        }
        for part in &manifest.parts {
            let ok = part.sha256.len() == 64
                && part
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !ok {
                return Err(ManifestError::Hash {
                    name: part.name.clone(),
                    value: part.sha256.clone(),
                });
            }
        }
        Ok(manifest)
    }

    pub fn part(&self, name: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.name == name)
    }

    /// Total bytes of the parts: what a node downloads and writes.
    pub fn size(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }

    /// The bundle's file name: `cloudos-<version>-<arch>.bundle`.
    pub fn file_name(&self) -> String {
        format!("cloudos-{}-{}.bundle", self.version, self.arch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format: FORMAT,
            version: Version::new(1, 2, 3),
            arch: Arch::X86_64,
            parts: PART_NAMES
                .iter()
                .map(|n| Part {
                    name: n.to_string(),
                    size: 1,
                    sha256: "ab".repeat(32),
                })
                .collect(),
        }
    }

    #[test]
    fn a_manifest_round_trips() {
        let m = sample();
        assert_eq!(Manifest::parse(&m.to_bytes()).unwrap(), m);
        assert_eq!(m.file_name(), "cloudos-1.2.3-x86_64.bundle");
    }

    #[test]
    fn a_newer_format_says_so() {
        let text = r#"{"format": 3, "version": "1.0.0", "something": "new"}"#;
        assert!(matches!(
            Manifest::parse(text.as_bytes()),
            Err(ManifestError::Format(3))
        ));
    }

    #[test]
    fn missing_extra_or_reordered_parts_are_refused() {
        let mut m = sample();
        m.parts.swap(0, 1);
        assert!(matches!(
            Manifest::parse(&m.to_bytes()),
            Err(ManifestError::Parts { .. })
        ));
        let mut m = sample();
        m.parts.push(Part {
            name: "../../etc/passwd".into(),
            size: 1,
            sha256: "ab".repeat(32),
        });
        assert!(matches!(
            Manifest::parse(&m.to_bytes()),
            Err(ManifestError::Parts { .. })
        ));
        let mut m = sample();
        m.parts[2].sha256 = "AB".repeat(32);
        assert!(matches!(
            Manifest::parse(&m.to_bytes()),
            Err(ManifestError::Hash { .. })
        ));
    }

    #[test]
    fn unknown_fields_and_bad_versions_are_refused() {
        let mut json: serde_json::Value = serde_json::from_slice(&sample().to_bytes()).unwrap();
        json["extra"] = serde_json::json!(1);
        assert!(Manifest::parse(json.to_string().as_bytes()).is_err());
        let mut json: serde_json::Value = serde_json::from_slice(&sample().to_bytes()).unwrap();
        json["version"] = serde_json::json!("v1");
        assert!(Manifest::parse(json.to_string().as_bytes()).is_err());
        assert_eq!(Arch::parse("arm64"), Some(Arch::Aarch64));
        assert_eq!(Arch::parse("riscv64"), None);
    }
}
