//! Imports an OCI image-layout tarball (`oci-layout`, `index.json`, `blobs/sha256/…`,
//! optionally gzip'd or zstd'd) into the [`ImageStore`], for sites with no registry in reach.
//!
//! Every blob is verified against its name as it streams into the store, so a tampered
//! tarball is refused. An image is named by its `io.containerd.image.name` annotation,
//! else by `org.opencontainers.image.ref.name`; an index inside the layout is resolved
//! to the platform's manifest, as a pull does.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;

use serde::Deserialize;

use crate::digest::Digest;
use crate::manifest::{Descriptor, Document, ManifestError, Platform};
use crate::store::{ImageStore, ImageStoreError};

const NAME_ANNOTATIONS: [&str; 2] = [
    "io.containerd.image.name",
    "org.opencontainers.image.ref.name",
];
/// index.json is small; a bigger one is not an image layout.
const MAX_INDEX_BYTES: u64 = 16 << 20;

/// Everything that can go wrong in an import.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the file is not a readable image-layout tarball: {0}; create one with `skopeo copy … oci-archive:FILE` or `docker save`-style tools that write OCI layouts")]
    Archive(String),
    #[error("the tarball is not an OCI image layout: {0}")]
    NotALayout(String),
    #[error("the layout's index.json entry {digest} has no name (no io.containerd.image.name or org.opencontainers.image.ref.name annotation); name the image when you create the layout")]
    NoName { digest: Digest },
    #[error("the layout lacks blob {digest}, which image {name} needs; the tarball is incomplete, create it again")]
    MissingBlob { name: String, digest: Digest },
    #[error("image {name} in the layout has {source}")]
    Platform {
        name: String,
        #[source]
        source: ManifestError,
    },
    #[error("image {name} in the layout: {source}")]
    BadManifest {
        name: String,
        #[source]
        source: ManifestError,
    },
    #[error(transparent)]
    ImageStore(#[from] ImageStoreError),
}

/// An imported image: the ref `name` now points at `manifest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    pub name: String,
    pub manifest: Digest,
}

#[derive(Deserialize)]
struct LayoutIndex {
    manifests: Vec<LayoutEntry>,
}

#[derive(Deserialize)]
struct LayoutEntry {
    #[serde(flatten)]
    descriptor: Descriptor,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

impl ImageStore {
    /// Imports every named image of the layout tarball `archive`, choosing `platform`'s
    /// manifest where an image has several.
    pub fn import_layout(
        &self,
        archive: impl Read,
        platform: &Platform,
    ) -> Result<Vec<ImportedImage>, ImportError> {
        let archive_err = |e: io::Error| ImportError::Archive(e.to_string());
        let stream = crate::unpack::decompress(archive).map_err(ImportError::Archive)?;
        let mut tar = tar::Archive::new(stream);
        // Blobs have no ref until the end: the lease keeps a collection off them.
        let lease = self.lease();
        let mut index_json = None;
        let mut has_layout_marker = false;
        for entry in tar.entries().map_err(archive_err)? {
            let mut entry = entry.map_err(archive_err)?;
            let path = entry.path().map_err(archive_err)?.into_owned();
            let path = path.strip_prefix("./").unwrap_or(&path).to_path_buf();
            if path == Path::new("index.json") {
                let mut bytes = Vec::new();
                (&mut entry)
                    .take(MAX_INDEX_BYTES)
                    .read_to_end(&mut bytes)
                    .map_err(archive_err)?;
                index_json = Some(bytes);
            } else if path == Path::new("oci-layout") {
                has_layout_marker = true;
            } else if let Ok(blob) = path.strip_prefix("blobs") {
                let Some(digest) = blob_digest(blob) else {
                    if entry.header().entry_type().is_file() {
                        return Err(ImportError::NotALayout(format!(
                            "{} is not named by a sha256 digest",
                            path.display()
                        )));
                    }
                    continue;
                };
                lease.pin(&digest);
                self.write_blob(&digest, &mut entry)?;
            }
        }
        if !has_layout_marker {
            return Err(ImportError::NotALayout("it has no oci-layout file".into()));
        }
        let index_json =
            index_json.ok_or_else(|| ImportError::NotALayout("it has no index.json".into()))?;
        let index: LayoutIndex = serde_json::from_slice(&index_json)
            .map_err(|e| ImportError::NotALayout(format!("index.json: {e}")))?;
        let mut imported = Vec::new();
        for entry in index.manifests {
            let name = NAME_ANNOTATIONS
                .iter()
                .find_map(|key| entry.annotations.get(*key))
                .cloned()
                .ok_or_else(|| ImportError::NoName {
                    digest: entry.descriptor.digest.clone(),
                })?;
            let manifest = self.resolve(&name, &entry.descriptor.digest, platform)?;
            self.set_ref(&name, &manifest)?;
            imported.push(ImportedImage { name, manifest });
        }
        Ok(imported)
    }

    /// The platform's manifest for the layout entry `digest`, with all its blobs present.
    fn resolve(
        &self,
        name: &str,
        digest: &Digest,
        platform: &Platform,
    ) -> Result<Digest, ImportError> {
        let missing = |digest: &Digest| ImportError::MissingBlob {
            name: name.to_string(),
            digest: digest.clone(),
        };
        let bad = |source| ImportError::BadManifest {
            name: name.to_string(),
            source,
        };
        let read = |digest: &Digest| match self.read_blob(digest) {
            Err(ImageStoreError::BlobNotFound(d)) => Err(missing(&d)),
            other => other.map_err(ImportError::from),
        };
        let mut digest = digest.clone();
        let mut doc = Document::parse(&read(&digest)?).map_err(bad)?;
        if let Document::Index(index) = &doc {
            let chosen = index
                .choose(platform)
                .map_err(|source| ImportError::Platform {
                    name: name.to_string(),
                    source,
                })?;
            digest = chosen.digest.clone();
            doc = Document::parse(&read(&digest)?).map_err(bad)?;
        }
        let Document::Manifest(manifest) = doc else {
            return Err(bad(ManifestError::Malformed(
                "an index points at another index".to_string(),
            )));
        };
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if !self.has_blob(&blob.digest) {
                return Err(missing(&blob.digest));
            }
        }
        Ok(digest)
    }
}

/// `sha256/<hex>` → its digest.
fn blob_digest(rel: &Path) -> Option<Digest> {
    let mut parts = rel.iter();
    let algorithm = parts.next()?.to_str()?;
    let hex = parts.next()?.to_str()?;
    if parts.next().is_some() {
        return None;
    }
    format!("{algorithm}:{hex}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{OCI_INDEX, OCI_MANIFEST};
    use crate::store::temp_store as store;

    fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
        serde_json::json!({
            "mediaType": media_type,
            "digest": Digest::of(bytes).to_string(),
            "size": bytes.len(),
        })
    }

    /// The layout's files: path and content.
    type Files = Vec<(String, Vec<u8>)>;
    type Tamper = Box<dyn FnOnce(&mut Files)>;

    /// A layout with one two-platform image; `tamper` edits its files first.
    fn layout(tamper: impl FnOnce(&mut Files)) -> (Vec<u8>, Digest) {
        let mut blobs = Vec::new();
        let mut entries = Vec::new();
        let mut amd64 = None;
        for arch in ["amd64", "arm64"] {
            let mut layer = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(arch.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            layer
                .append_data(&mut h, "etc/arch", arch.as_bytes())
                .unwrap();
            let layer = layer.into_inner().unwrap();
            let config = format!(r#"{{"architecture":"{arch}","os":"linux"}}"#).into_bytes();
            let manifest = serde_json::json!({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
                "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
            })
            .to_string()
            .into_bytes();
            let mut entry = descriptor(OCI_MANIFEST, &manifest);
            entry["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
            entries.push(entry);
            if arch == "amd64" {
                amd64 = Some(Digest::of(&manifest));
            }
            blobs.extend([layer, config, manifest]);
        }
        let index =
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
                .to_string()
                .into_bytes();
        let mut top = descriptor(OCI_INDEX, &index);
        top["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "site/app:1"});
        blobs.push(index);
        let mut files: Files = blobs
            .into_iter()
            .map(|b| (format!("blobs/sha256/{}", Digest::of(&b).hex()), b))
            .collect();
        files.push((
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ));
        let index_json = serde_json::json!({"schemaVersion": 2, "manifests": [top]});
        files.push(("index.json".into(), index_json.to_string().into_bytes()));
        tamper(&mut files);
        let mut tar = tar::Builder::new(Vec::new());
        for (path, bytes) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, path, &bytes[..]).unwrap();
        }
        (tar.into_inner().unwrap(), amd64.unwrap())
    }

    #[test]
    fn imports_the_platform_manifest_plain_or_gzipped() {
        let (tar, amd64) = layout(|_| {});
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        for archive in [tar.clone(), gz.finish().unwrap()] {
            let (_dir, store) = store();
            let imported = store
                .import_layout(&archive[..], &Platform::linux("amd64"))
                .unwrap();
            assert_eq!(
                imported,
                vec![ImportedImage {
                    name: "site/app:1".into(),
                    manifest: amd64.clone()
                }]
            );
            assert_eq!(store.get_ref("site/app:1").unwrap(), amd64);
        }
        let (_dir, store) = store();
        let err = store
            .import_layout(&tar[..], &Platform::linux("s390x"))
            .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("has no linux/s390x variant; it has: linux/amd64, linux/arm64"),
            "{err}"
        );
    }

    #[test]
    fn refuses_tampered_incomplete_or_foreign_tarballs() {
        let cases: Vec<(Tamper, &str)> = vec![
            (
                Box::new(|f| f[0].1.push(b'!')),
                "content does not match its digest",
            ),
            (Box::new(|f| drop(f.remove(0))), "the layout lacks blob"),
            (
                Box::new(|f| f.retain(|(p, _)| p != "index.json")),
                "it has no index.json",
            ),
            (
                Box::new(|f| f.retain(|(p, _)| p != "oci-layout")),
                "it has no oci-layout file",
            ),
            (
                Box::new(|f| f.push(("blobs/sha256/zz".into(), vec![]))),
                "is not named by a sha256 digest",
            ),
        ];
        for (tamper, want) in cases {
            let (tar, _) = layout(tamper);
            let (_dir, store) = store();
            let err = store
                .import_layout(&tar[..], &Platform::linux("amd64"))
                .unwrap_err();
            assert!(err.to_string().contains(want), "{want}: {err}");
            assert!(store.refs().unwrap().is_empty());
        }
    }
}
