//! The content-addressed store on a directory (the data partition on a node).
//!
//! Layout under the root:
//! - `blobs/sha256/<hex>`: manifests, indexes, configs and layers, named by their digest;
//! - `tmp/`: blobs being written; a blob is renamed into `blobs/` only after its digest
//!   was verified while streaming, so a corrupt or truncated blob never has a name;
//! - `refs.json`: image name → manifest (or index) digest, replaced atomically.
//!
//! Garbage collection removes blobs that neither a ref reaches nor a [`Lease`](crate::Lease) pins. Pulls
//! and imports pin every blob they write or reuse before their ref is set, and the agent
//! pins the blobs of every image a container runs from, so a collection may run at any
//! time: it never takes a pull's blobs or a running container's layers.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::lease::Leases;
use crate::limits::Limits;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum ImageStoreError {
    #[error("cannot {action} {path}: {source}; check that the data partition is mounted, writable and not full")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("content does not match its digest: expected {expected}, got {actual} ({size} bytes); the source is corrupt or was truncated, pull it again")]
    DigestMismatch {
        expected: Digest,
        actual: Digest,
        size: u64,
    },
    #[error("blob {digest} is larger than the limit of {limit} bytes; the source is hostile or broken (raise Limits::max_blob_bytes only for an image you trust)")]
    BlobTooLarge { digest: Digest, limit: u64 },
    #[error("blob {0} is not in the store; pull or import the image first")]
    BlobNotFound(Digest),
    #[error("no image named {0:?} in the store; pull or import it first")]
    RefNotFound(String),
    #[error("{path} is corrupt: {reason}; remove it and pull the images again")]
    CorruptRefs { path: PathBuf, reason: String },
}

type Result<T, E = ImageStoreError> = std::result::Result<T, E>;

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImageStoreError {
    let path = path.to_path_buf();
    move |source| ImageStoreError::Io {
        action,
        path,
        source,
    }
}

/// Serialises read-modify-write of refs.json within the process (pulls run as
/// concurrent tasks); nodeos is the only process that writes the store.
fn refs_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A panic while holding it cannot leave refs.json half-written (it is replaced by a
    // rename), so a poisoned lock is still good.
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A missing blob is its own error: the remedy (pull again) differs from a failing disk.
fn blob_err(
    digest: &Digest,
    action: &'static str,
    path: PathBuf,
    source: io::Error,
) -> ImageStoreError {
    if source.kind() == io::ErrorKind::NotFound {
        ImageStoreError::BlobNotFound(digest.clone())
    } else {
        ImageStoreError::Io {
            action,
            path,
            source,
        }
    }
}

/// A content-addressed blob store with named refs, rooted at a directory. Clones share
/// their leases: open the store once per process and clone it.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    limits: Limits,
    leases: std::sync::Arc<Leases>,
}

/// What a garbage collection removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs removed.
    pub removed: Vec<Digest>,
    /// Bytes of blobs removed (unpacked layers not counted).
    pub bytes_freed: u64,
    /// Unpacked layer directories removed with their blobs.
    pub layers_removed: Vec<Digest>,
}

impl ImageStore {
    /// Opens the store at `root`, creating its directories if they are missing, with the
    /// default [`Limits`].
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let store = Self {
            root: root.into(),
            limits: Limits::default(),
            leases: Default::default(),
        };
        for dir in [store.blob_dir(), store.tmp_dir()] {
            fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        Ok(store)
    }

    /// Removes what interrupted writes and unpacks left in `tmp/` (a crash or power loss
    /// mid-pull). Call it at startup, before any pull or unpack runs: it would remove
    /// their work in progress.
    pub fn clean_tmp(&self) -> Result<usize> {
        let dir = self.tmp_dir();
        let entries = fs::read_dir(&dir).map_err(io_err("list", &dir))?;
        let mut removed = 0;
        for entry in entries {
            let path = entry.map_err(io_err("list", &dir))?.path();
            let result = match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => fs::remove_dir_all(&path),
                _ => fs::remove_file(&path),
            };
            result.map_err(io_err("remove", &path))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// The store with other caps on what images may hold.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The caps pulls and unpacking apply.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn leases(&self) -> &std::sync::Arc<Leases> {
        &self.leases
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn refs_path(&self) -> PathBuf {
        self.root.join("refs.json")
    }

    /// Where the blob `digest` lives (whether or not it is there).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blob_dir().join(digest.hex())
    }

    /// Whether the blob `digest` is in the store.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Reads a whole blob (meant for manifests and configs, which are small).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        fs::read(&path).map_err(|e| blob_err(digest, "read blob", path, e))
    }

    /// Opens a blob for streaming (layers).
    pub fn open_blob(&self, digest: &Digest) -> Result<fs::File> {
        let path = self.blob_path(digest);
        fs::File::open(&path).map_err(|e| blob_err(digest, "open blob", path, e))
    }

    /// Starts writing a blob that must have digest `expected`. Feed it with
    /// [`Write`] (or [`BlobWriter::write_chunk`]) and finish with [`BlobWriter::commit`].
    pub fn begin_blob(&self, expected: &Digest) -> Result<BlobWriter> {
        let dir = self.tmp_dir();
        let file =
            tempfile::NamedTempFile::new_in(&dir).map_err(io_err("create a file in", &dir))?;
        Ok(BlobWriter {
            file,
            hasher: Sha256::new(),
            size: 0,
            expected: expected.clone(),
            target: self.blob_path(expected),
        })
    }

    /// Copies `reader` into the store as blob `expected`, verifying it on the way.
    /// Returns the blob's size. A blob already present is not read again.
    pub fn write_blob(&self, expected: &Digest, mut reader: impl Read) -> Result<u64> {
        let path = self.blob_path(expected);
        if let Ok(meta) = fs::metadata(&path) {
            return Ok(meta.len());
        }
        let mut writer = self.begin_blob(expected)?;
        let mut buf = vec![0u8; 64 * 1024];
        let limit = self.limits.max_blob_bytes;
        loop {
            if writer.size() > limit {
                return Err(ImageStoreError::BlobTooLarge {
                    digest: expected.clone(),
                    limit,
                });
            }
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(ImageStoreError::Io {
                        action: "read the content of",
                        path,
                        source,
                    })
                }
            };
            writer.write_chunk(&buf[..n])?;
        }
        writer.commit()
    }

    /// Stores `bytes` under their own digest and returns it.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        self.write_blob(&digest, bytes)?;
        Ok(digest)
    }

    /// All refs, by image name.
    pub fn refs(&self) -> Result<BTreeMap<String, Digest>> {
        let path = self.refs_path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(source) => {
                return Err(ImageStoreError::Io {
                    action: "read",
                    path,
                    source,
                })
            }
        };
        let raw: BTreeMap<String, String> =
            serde_json::from_str(&text).map_err(|e| ImageStoreError::CorruptRefs {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        raw.into_iter()
            .map(|(name, digest)| match digest.parse() {
                Ok(d) => Ok((name, d)),
                Err(e) => Err(ImageStoreError::CorruptRefs {
                    path: path.clone(),
                    reason: format!("ref {name:?}: {e}"),
                }),
            })
            .collect()
    }

    /// The manifest digest an image name points at.
    pub fn get_ref(&self, name: &str) -> Result<Digest> {
        self.refs()?
            .remove(name)
            .ok_or_else(|| ImageStoreError::RefNotFound(name.to_string()))
    }

    /// Points `name` at `digest`, which must already be in the store.
    pub fn set_ref(&self, name: &str, digest: &Digest) -> Result<()> {
        if !self.has_blob(digest) {
            return Err(ImageStoreError::BlobNotFound(digest.clone()));
        }
        let _guard = refs_lock();
        let mut refs = self.refs()?;
        refs.insert(name.to_string(), digest.clone());
        self.write_refs(&refs)
    }

    /// Removes the ref `name`; its blobs go at the next [`ImageStore::gc`].
    pub fn remove_ref(&self, name: &str) -> Result<()> {
        let _guard = refs_lock();
        let mut refs = self.refs()?;
        if refs.remove(name).is_none() {
            return Err(ImageStoreError::RefNotFound(name.to_string()));
        }
        self.write_refs(&refs)
    }

    fn write_refs(&self, refs: &BTreeMap<String, Digest>) -> Result<()> {
        let raw: BTreeMap<&str, String> = refs
            .iter()
            .map(|(name, digest)| (name.as_str(), digest.to_string()))
            .collect();
        let path = self.refs_path();
        let text = serde_json::to_vec_pretty(&raw).map_err(|e| ImageStoreError::CorruptRefs {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let dir = self.tmp_dir();
        let mut file =
            tempfile::NamedTempFile::new_in(&dir).map_err(io_err("create a file in", &dir))?;
        file.write_all(&text)
            .and_then(|()| file.as_file().sync_all())
            .map_err(io_err("write", file.path()))?;
        file.persist(&path).map_err(|e| ImageStoreError::Io {
            action: "replace",
            path,
            source: e.error,
        })?;
        Ok(())
    }

    /// Every blob reachable from a ref: the manifests and indexes themselves, and the
    /// configs, layers and child manifests they name (children not pulled are skipped).
    pub fn referenced(&self) -> Result<BTreeSet<Digest>> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<Digest> = self.refs()?.into_values().collect();
        while let Some(digest) = todo.pop() {
            if !self.has_blob(&digest) || !seen.insert(digest.clone()) {
                continue;
            }
            // Layers are never parsed: only manifests and indexes are walked, and a ref
            // always points at one of those.
            let bytes = self.read_blob(&digest)?;
            let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            for descriptor in descriptors(&doc) {
                let Some(child) = descriptor.get("digest").and_then(|d| d.as_str()) else {
                    continue;
                };
                let Ok(child) = child.parse::<Digest>() else {
                    continue;
                };
                let is_manifest = descriptor
                    .get("mediaType")
                    .and_then(|m| m.as_str())
                    .is_some_and(is_manifest_media_type);
                if is_manifest {
                    todo.push(child);
                } else if self.has_blob(&child) {
                    seen.insert(child);
                }
            }
        }
        Ok(seen)
    }

    /// Removes every blob that no ref reaches and no lease pins, and the unpacked layers
    /// of those blobs. Pins wait while it decides and unlinks; the unpacked layers it
    /// dooms are moved aside then, and removed after the pins are free again.
    pub fn gc(&self) -> Result<GcReport> {
        let table = self.leases.lock();
        let mut keep = self.referenced()?;
        keep.extend(table.pinned());
        let mut report = GcReport::default();
        let dir = self.blob_dir();
        let entries = fs::read_dir(&dir).map_err(io_err("list", &dir))?;
        for entry in entries {
            let entry = entry.map_err(io_err("list", &dir))?;
            let name = entry.file_name();
            let Some(digest) = name
                .to_str()
                .and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok())
            else {
                continue;
            };
            if keep.contains(&digest) {
                continue;
            }
            let path = entry.path();
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
            report.bytes_freed += size;
            report.removed.push(digest);
        }
        let doomed = self.doom_layers(&keep)?;
        drop(table);
        for (digest, path) in doomed {
            fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
            report.layers_removed.push(digest);
        }
        Ok(report)
    }
}

/// The descriptors a manifest or index names: `config`, `layers[]` and `manifests[]`.
fn descriptors(doc: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    if let Some(config) = doc.get("config") {
        out.push(config);
    }
    for key in ["layers", "manifests"] {
        if let Some(list) = doc.get(key).and_then(|l| l.as_array()) {
            out.extend(list);
        }
    }
    out
}

/// Whether a descriptor's media type is a manifest or an index (OCI or Docker v2).
pub(crate) fn is_manifest_media_type(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.manifest.v1+json"
            | "application/vnd.oci.image.index.v1+json"
            | "application/vnd.docker.distribution.manifest.v2+json"
            | "application/vnd.docker.distribution.manifest.list.v2+json"
    )
}

/// A blob being written: hashed as it streams, renamed into place by [`BlobWriter::commit`].
/// Dropped without a commit, its temp file is removed.
#[derive(Debug)]
pub struct BlobWriter {
    file: tempfile::NamedTempFile,
    hasher: Sha256,
    size: u64,
    expected: Digest,
    target: PathBuf,
}

impl BlobWriter {
    /// Appends a chunk.
    pub fn write_chunk(&mut self, chunk: &[u8]) -> Result<()> {
        self.file
            .write_all(chunk)
            .map_err(io_err("write", self.file.path()))?;
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Checks the digest and, if it matches, gives the blob its name. Returns its size.
    pub fn commit(self) -> Result<u64> {
        let actual = Digest::from_hasher(self.hasher);
        if actual != self.expected {
            return Err(ImageStoreError::DigestMismatch {
                expected: self.expected,
                actual,
                size: self.size,
            });
        }
        self.file
            .as_file()
            .sync_all()
            .map_err(io_err("sync", self.file.path()))?;
        let target = self.target;
        self.file
            .persist(&target)
            .map_err(|e| ImageStoreError::Io {
                action: "rename a verified blob to",
                path: target.clone(),
                source: e.error,
            })?;
        Ok(self.size)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A store in a fresh temporary directory, for tests.
#[cfg(test)]
pub(crate) fn temp_store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path().join("store")).unwrap();
    (dir, store)
}

#[cfg(test)]
mod tests {
    use super::temp_store as store;
    use super::*;

    fn tmp_entries(store: &ImageStore) -> usize {
        fs::read_dir(store.root().join("tmp")).unwrap().count()
    }

    #[test]
    fn verified_blob_gets_its_name() {
        let (_dir, store) = store();
        let digest = Digest::of(b"hello");
        assert_eq!(store.write_blob(&digest, &b"hello"[..]).unwrap(), 5);
        assert_eq!(store.read_blob(&digest).unwrap(), b"hello");
        assert_eq!(tmp_entries(&store), 0);
    }

    #[test]
    fn corrupt_or_truncated_blob_never_appears() {
        let (_dir, store) = store();
        let digest = Digest::of(b"hello world");
        for bad in [&b"hello"[..], b"hello wOrld", b"hello world!"] {
            let err = store.write_blob(&digest, bad).unwrap_err();
            assert!(
                matches!(&err, ImageStoreError::DigestMismatch { expected, .. } if *expected == digest),
                "{err}"
            );
            assert!(err.to_string().contains("pull it again"), "{err}");
            assert!(!store.has_blob(&digest));
            assert_eq!(tmp_entries(&store), 0);
        }
    }

    #[test]
    fn chunked_writer_and_abandoned_writer() {
        let (_dir, store) = store();
        let digest = Digest::of(b"abcdef");
        let mut w = store.begin_blob(&digest).unwrap();
        w.write_chunk(b"abc").unwrap();
        w.write_chunk(b"def").unwrap();
        assert_eq!(w.commit().unwrap(), 6);
        assert!(store.has_blob(&digest));

        let other = Digest::of(b"never finished");
        let mut w = store.begin_blob(&other).unwrap();
        w.write_chunk(b"never").unwrap();
        drop(w);
        assert!(!store.has_blob(&other));
        assert_eq!(tmp_entries(&store), 0);
    }

    #[test]
    fn clean_tmp_removes_leftovers() {
        let (_dir, store) = store();
        let tmp = store.root().join("tmp");
        fs::write(tmp.join(".tmpAbc"), b"half a blob").unwrap();
        fs::create_dir_all(tmp.join("layer-x/etc")).unwrap();
        assert_eq!(store.clean_tmp().unwrap(), 2);
        assert_eq!(tmp_entries(&store), 0);
    }

    #[test]
    fn refs_round_trip_and_missing() {
        let (_dir, store) = store();
        let digest = store.put_bytes(b"{}").unwrap();
        store.set_ref("example.org/app:1", &digest).unwrap();
        assert_eq!(store.get_ref("example.org/app:1").unwrap(), digest);
        let err = store.get_ref("example.org/app:2").unwrap_err();
        assert!(matches!(err, ImageStoreError::RefNotFound(_)), "{err}");
        let absent = Digest::of(b"absent");
        assert!(matches!(
            store.set_ref("x", &absent).unwrap_err(),
            ImageStoreError::BlobNotFound(_)
        ));
        store.remove_ref("example.org/app:1").unwrap();
        assert!(store.refs().unwrap().is_empty());
    }

    #[test]
    fn gc_keeps_what_refs_reach() {
        let (_dir, store) = store();
        let layer = store.put_bytes(b"layer bytes").unwrap();
        let config = store.put_bytes(b"{\"architecture\":\"amd64\"}").unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config.to_string(), "size": 1},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer.to_string(), "size": 1}],
        });
        let manifest = store.put_bytes(manifest.to_string().as_bytes()).unwrap();
        let not_pulled = Digest::of(b"the arm64 manifest");
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "digest": manifest.to_string(), "size": 1},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "digest": not_pulled.to_string(), "size": 1},
            ],
        });
        let index = store.put_bytes(index.to_string().as_bytes()).unwrap();
        let orphan = store.put_bytes(b"orphan").unwrap();
        store.set_ref("app:1", &index).unwrap();

        let report = store.gc().unwrap();
        assert_eq!(report.removed, vec![orphan.clone()]);
        assert_eq!(report.bytes_freed, 6);
        for kept in [&layer, &config, &manifest, &index] {
            assert!(store.has_blob(kept), "{kept}");
        }

        store.remove_ref("app:1").unwrap();
        let report = store.gc().unwrap();
        assert_eq!(report.removed.len(), 4);
        assert!(!store.has_blob(&layer));
    }

    /// A manifest naming `config` and `layers`, stored; returns its digest.
    fn image(store: &ImageStore, config: &[u8], layers: &[&[u8]]) -> (Digest, Vec<Digest>) {
        let config = store.put_bytes(config).unwrap();
        let layers: Vec<Digest> = layers.iter().map(|l| store.put_bytes(l).unwrap()).collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config.to_string(), "size": 1},
            "layers": layers.iter().map(|l| serde_json::json!(
                {"mediaType": "application/vnd.oci.image.layer.v1.tar",
                 "digest": l.to_string(), "size": 1})).collect::<Vec<_>>(),
        });
        let manifest = store.put_bytes(manifest.to_string().as_bytes()).unwrap();
        let mut blobs = vec![manifest.clone(), config];
        blobs.extend(layers);
        (manifest, blobs)
    }

    /// Race (b) of issue 16, at the store: a container runs from image A under tag
    /// app:1; the tag moves to image B; a collection must keep A's blobs and unpacked
    /// layer while the container's lease lives, and take them once it is dropped.
    #[test]
    fn a_lease_keeps_an_image_whose_tag_moved() {
        let (_dir, store) = store();
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o755);
        h.set_cksum();
        tar.append_data(&mut h, "bin/app", &b"A!"[..]).unwrap();
        let layer_a = tar.into_inner().unwrap();
        let (a, blobs_a) = image(&store, b"{\"a\":1}", &[&layer_a]);
        store.set_ref("app:1", &a).unwrap();
        let layer_dir = store.unpack_layer(&blobs_a[2]).unwrap();

        let running = store.lease();
        for blob in &blobs_a {
            running.pin(blob);
        }
        let (b, _) = image(&store, b"{\"b\":1}", &[b"layer b"]);
        store.set_ref("app:1", &b).unwrap();

        let report = store.gc().unwrap();
        assert!(report.removed.is_empty(), "{report:?}");
        for blob in &blobs_a {
            assert!(store.has_blob(blob), "{blob}");
        }
        assert!(layer_dir.join("bin/app").is_file());

        drop(running);
        let report = store.gc().unwrap();
        assert_eq!(report.removed.len(), blobs_a.len());
        assert_eq!(report.layers_removed, vec![blobs_a[2].clone()]);
        assert!(!layer_dir.exists());
        assert_eq!(
            tmp_entries(&store),
            0,
            "doomed layers are removed, not left in tmp"
        );
        assert!(store.has_blob(&b));
    }

    #[test]
    fn leases_count_per_digest() {
        let (_dir, store) = store();
        let blob = store.put_bytes(b"shared").unwrap();
        let (one, two) = (store.lease(), store.lease());
        one.pin(&blob);
        two.pin(&blob);
        drop(one);
        store.gc().unwrap();
        assert!(store.has_blob(&blob), "the second lease still holds it");
        assert_eq!(two.pinned(), [blob.clone()].into());
        drop(two);
        store.gc().unwrap();
        assert!(!store.has_blob(&blob));
    }
}
