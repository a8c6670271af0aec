//! The OCI documents this crate reads: descriptors, image manifests and image indexes
//! (Docker v2 manifest lists are read the same way), and the choice of the manifest
//! for a platform from an index.
//!
//! Pure parsing and choosing: no I/O, so every case is a table test.

use std::fmt;

use serde::Deserialize;

use crate::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The manifest media types a pull accepts, indexes first.
pub const ACCEPTED_MANIFEST_TYPES: &[&str] = &[
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
];

/// Why a document is not a manifest this crate can use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("not a valid OCI manifest or index: {0}")]
    Malformed(String),
    #[error("no {wanted} variant; it has: {}", if available.is_empty() { "no platforms at all".to_string() } else { available.join(", ") })]
    NoPlatform {
        wanted: String,
        available: Vec<String>,
    },
}

/// An OS/architecture pair, as in an index's `platform` field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    /// Linux on the architecture this binary was built for, in OCI's names.
    pub fn current() -> Self {
        Self::linux(oci_architecture(std::env::consts::ARCH))
    }

    /// Linux on `architecture` (OCI names: `amd64`, `arm64`).
    pub fn linux(architecture: &str) -> Self {
        Self {
            os: "linux".to_string(),
            architecture: architecture.to_string(),
            variant: None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// Rust's architecture names → OCI's (Go's) names.
pub fn oci_architecture(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// A reference to a blob: its media type, digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    #[serde(deserialize_with = "de_digest")]
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

fn de_digest<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

/// An image manifest: one config and the layers, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// An image index (or manifest list): one manifest per platform.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Index {
    pub manifests: Vec<Descriptor>,
}

/// A manifest or an index, told apart by content (`manifests` vs `layers`) because
/// `mediaType` is optional in OCI documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    Manifest(Manifest),
    Index(Index),
}

impl Document {
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        let malformed = |e: serde_json::Error| ManifestError::Malformed(e.to_string());
        if value.get("manifests").is_some() {
            serde_json::from_value(value)
                .map(Document::Index)
                .map_err(malformed)
        } else if value.get("layers").is_some() {
            serde_json::from_value(value)
                .map(Document::Manifest)
                .map_err(malformed)
        } else {
            Err(ManifestError::Malformed(
                "it has neither \"layers\" nor \"manifests\"".to_string(),
            ))
        }
    }
}

impl Index {
    /// The manifest for `wanted`. A variant is matched only when `wanted` names one,
    /// so `linux/arm64` takes `linux/arm64/v8`. Entries without a platform (such as
    /// attestations) are never chosen.
    pub fn choose(&self, wanted: &Platform) -> Result<&Descriptor, ManifestError> {
        let matches = |p: &Platform| {
            p.os == wanted.os
                && p.architecture == wanted.architecture
                && (wanted.variant.is_none() || p.variant == wanted.variant)
        };
        self.manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(matches))
            .ok_or_else(|| ManifestError::NoPlatform {
                wanted: wanted.to_string(),
                available: self
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref())
                    .filter(|p| p.os != "unknown")
                    .map(Platform::to_string)
                    .collect(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(platforms: &[(&str, &str, Option<&str>)]) -> Index {
        let manifests: Vec<_> = platforms
            .iter()
            .enumerate()
            .map(|(i, (os, arch, variant))| {
                serde_json::json!({
                    "mediaType": OCI_MANIFEST,
                    "digest": Digest::of(&[i as u8]).to_string(),
                    "size": 1,
                    "platform": {"os": os, "architecture": arch, "variant": variant},
                })
            })
            .collect();
        let doc = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
        match Document::parse(doc.to_string().as_bytes()).unwrap() {
            Document::Index(index) => index,
            other => panic!("not an index: {other:?}"),
        }
    }

    #[test]
    fn chooses_the_platform_or_says_what_there_is() {
        let amd = ("linux", "amd64", None);
        let arm = ("linux", "arm64", Some("v8"));
        let attestation = ("unknown", "unknown", None);
        let linux = |a: &str| Platform::linux(a);
        let arm_v8 = Platform {
            variant: Some("v8".into()),
            ..Platform::linux("arm64")
        };
        let arm_v7 = Platform {
            variant: Some("v7".into()),
            ..Platform::linux("arm64")
        };
        let table: Vec<(Vec<_>, Platform, Result<usize, &str>)> = vec![
            (vec![amd, arm], linux("amd64"), Ok(0)),
            (vec![attestation, amd, arm], linux("arm64"), Ok(2)),
            (vec![amd, arm], arm_v8, Ok(1)),
            (
                vec![amd, arm],
                arm_v7,
                Err("no linux/arm64/v7 variant; it has: linux/amd64, linux/arm64/v8"),
            ),
            (
                vec![amd, attestation],
                linux("arm64"),
                Err("no linux/arm64 variant; it has: linux/amd64"),
            ),
            (
                vec![],
                linux("amd64"),
                Err("no linux/amd64 variant; it has: no platforms at all"),
            ),
        ];
        for (platforms, wanted, want) in table {
            let index = index(&platforms);
            let got = index
                .choose(&wanted)
                .map(|d| index.manifests.iter().position(|m| m == d).unwrap())
                .map_err(|e| e.to_string());
            assert_eq!(got, want.map_err(str::to_string), "{platforms:?} {wanted}");
        }
    }

    #[test]
    fn tells_manifests_from_indexes_and_rejects_junk() {
        let d = Digest::of(b"x").to_string();
        let manifest = serde_json::json!({
            "config": {"mediaType": "c", "digest": d, "size": 1},
            "layers": [{"mediaType": "l", "digest": d, "size": 1}],
        });
        assert!(matches!(
            Document::parse(manifest.to_string().as_bytes()),
            Ok(Document::Manifest(m)) if m.layers.len() == 1
        ));
        let bad_digest = serde_json::json!({
            "manifests": [{"mediaType": "m", "digest": "sha256:../../etc", "size": 1}],
        });
        for junk in [&b"not json"[..], b"{}", bad_digest.to_string().as_bytes()] {
            let err = Document::parse(junk).unwrap_err();
            assert!(matches!(err, ManifestError::Malformed(_)), "{err}");
        }
    }

    #[test]
    fn current_platform_uses_oci_names() {
        let p = Platform::current();
        assert_eq!(p.os, "linux");
        assert!(!p.architecture.contains('_'), "{p}");
    }
}
