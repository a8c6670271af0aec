//! Unpacks a layer blob (tar, gzip'd tar or zstd'd tar) into its own directory, once
//! per layer digest, in the form overlayfs reads as a lower layer.
//!
//! OCI whiteouts become overlayfs whiteouts: `.wh.<name>` turns into a 0/0 character
//! device `<name>`, and `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.
//! Entries that would land outside the layer's directory (`..`, or a path through a
//! symlink the layer made) are refused, and every file operation goes through the layer
//! directory's descriptor without following links ([`rooted`]). The caps of the store's
//! [`Limits`] bound what a layer may unpack to. Owns `layers/` under the store's root;
//! does not mount anything (the runtime stacks these directories).

mod decompress;
mod members;
mod rooted;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::FileType;

use crate::digest::Digest;
use crate::limits::Limits;
use crate::store::{ImageStore, ImageStoreError};
pub(crate) use decompress::decompress;
use decompress::{cap_hit, Capped};
use members::{Member, Members, Refusal};
use rooted::{Cleared, Meta, Root};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Everything that can go wrong unpacking a layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error(transparent)]
    ImageStore(#[from] ImageStoreError),
    #[error("layer {layer} is not a tar archive, a gzip'd tar or a zstd'd tar: {reason}; the image is corrupt or uses an unsupported layer format")]
    Format { layer: Digest, reason: String },
    #[error("layer {layer} has entry {path:?} that would be written outside the layer ({reason}); the image is malicious or broken, do not use it")]
    PathEscape {
        layer: Digest,
        path: String,
        reason: &'static str,
    },
    #[error("layer {layer} has hard link {path:?} to {target:?}, which is not a file earlier in the layer; the image is broken, rebuild it")]
    BadHardLink {
        layer: Digest,
        path: String,
        target: PathBuf,
    },
    #[error("layer {layer} unpacks to more than {limit} bytes (a decompression bomb, or an image larger than this node accepts); it was refused, raise Limits::max_layer_unpacked_bytes only for an image you trust")]
    TooLarge { layer: Digest, limit: u64 },
    #[error("layer {layer} has more than {limit} tar entries; it was refused, raise Limits::max_layer_entries only for an image you trust")]
    TooManyEntries { layer: Digest, limit: u64 },
    #[error("layer {layer} has a {kind} of {size} bytes, above the limit of {limit}; the image is malicious or broken, do not use it")]
    RecordTooLarge {
        layer: Digest,
        kind: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("cannot {action} {path} while unpacking layer {layer}: {source}; check that the data partition is writable, not full, and supports trusted.* xattrs and device nodes (run as root)")]
    Io {
        layer: Digest,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What a tar entry's path means once OCI whiteout names are recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// An ordinary entry at this relative path.
    Plain(PathBuf),
    /// `.wh.<name>`: `<name>` (this relative path) is deleted from lower layers.
    Whiteout(PathBuf),
    /// `.wh..wh..opq`: this directory hides everything lower layers have in it.
    Opaque(PathBuf),
}

/// Turns a tar entry path into a clean relative path and its meaning. Leading `/` and
/// `.` components are dropped (layers are relative to the root); `..` is refused.
pub fn classify(path: &Path) -> Result<EntryKind, &'static str> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err("it contains .."),
            Component::Prefix(_) => return Err("it has a path prefix"),
        }
    }
    let Some(name) = clean.file_name().and_then(|n| n.to_str()) else {
        return Ok(EntryKind::Plain(clean));
    };
    if name == OPAQUE_MARKER {
        let dir = clean.parent().map(Path::to_path_buf).unwrap_or_default();
        return Ok(EntryKind::Opaque(dir));
    }
    if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err("its whiteout names nothing, . or ..");
        }
        return Ok(EntryKind::Whiteout(clean.with_file_name(hidden)));
    }
    Ok(EntryKind::Plain(clean))
}

impl ImageStore {
    /// Where the unpacked layer `digest` lives (whether or not it is there).
    pub fn layer_dir(&self, digest: &Digest) -> PathBuf {
        self.root().join("layers").join(digest.hex())
    }

    /// Unpacks the layer blob `digest` (already in the store) unless it was unpacked
    /// before, and returns its directory. The layer is unpacked into a temporary
    /// directory and renamed into place, so a half-unpacked layer never has a name.
    pub fn unpack_layer(&self, digest: &Digest) -> Result<PathBuf, UnpackError> {
        let target = self.layer_dir(digest);
        if target.is_dir() {
            return Ok(target);
        }
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| UnpackError::Io {
                layer: digest.clone(),
                action,
                path,
                source,
            }
        };
        let layers = self.root().join("layers");
        fs::create_dir_all(&layers).map_err(io("create", &layers))?;
        let tmp_root = self.tmp_dir();
        let work = tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(&tmp_root)
            .map_err(io("create a directory in", &tmp_root))?;
        let blob = self.open_blob(digest)?;
        unpack_into(digest, blob, work.path(), self.limits())?;
        let work = work.keep();
        if let Err(source) = fs::rename(&work, &target) {
            let _ = fs::remove_dir_all(&work);
            // Another unpack of the same layer won the race: its result is as good.
            if target.is_dir() {
                return Ok(target);
            }
            return Err(io("rename an unpacked layer to", &target)(source));
        }
        Ok(target)
    }

    /// Moves the unpacked layers whose blob is not in `keep` into `tmp/`, where
    /// [`ImageStore::gc`] removes them once it no longer holds the leases (and a crash leaves
    /// them for [`ImageStore::clean_tmp`]).
    pub(crate) fn doom_layers(
        &self,
        keep: &std::collections::BTreeSet<Digest>,
    ) -> Result<Vec<(Digest, PathBuf)>, ImageStoreError> {
        let dir = self.root().join("layers");
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| ImageStoreError::Io {
                action,
                path,
                source,
            }
        };
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("list", &dir)(e)),
        };
        let mut doomed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io("list", &dir))?;
            let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok())
            else {
                continue;
            };
            if !keep.contains(&digest) {
                let aside = self.tmp_dir().join(format!("gc-{}", digest.hex()));
                let path = entry.path();
                fs::rename(&path, &aside).map_err(io("move aside", &path))?;
                doomed.push((digest, aside));
            }
        }
        Ok(doomed)
    }
}

/// Unpacks one layer's tar stream into `root`, which must be empty.
fn unpack_into(
    layer: &Digest,
    blob: impl Read,
    root: &Path,
    limits: &Limits,
) -> Result<(), UnpackError> {
    let stream = decompress(blob).map_err(|reason| UnpackError::Format {
        layer: layer.clone(),
        reason,
    })?;
    let mut archive = tar::Archive::new(Capped::new(stream, limits.max_layer_unpacked_bytes));
    let mut unpacker = Unpacker {
        layer,
        path: root,
        root: Root::open(root).map_err(|source| UnpackError::Io {
            layer: layer.clone(),
            action: "open",
            path: root.to_path_buf(),
            source,
        })?,
        is_root: rustix::process::geteuid().is_root(),
        dirs: BTreeMap::new(),
    };
    let refused = |refusal| unpacker_refusal(layer, refusal);
    let mut members = Members::new(&mut archive, *limits).map_err(refused)?;
    while let Some((member, mut data)) = members.next_member().map_err(refused)? {
        unpacker.member(member, &mut data)?;
    }
    unpacker.finish()
}

fn unpacker_refusal(layer: &Digest, refusal: Refusal) -> UnpackError {
    let layer = layer.clone();
    match refusal {
        Refusal::TooManyEntries { limit } => UnpackError::TooManyEntries { layer, limit },
        Refusal::RecordTooLarge { kind, size, limit } => UnpackError::RecordTooLarge {
            layer,
            kind,
            size,
            limit,
        },
        Refusal::Format(e) => read_error(layer, e),
    }
}

/// A failure reading the layer: its cap was hit, or it is not a readable tar.
fn read_error(layer: Digest, e: io::Error) -> UnpackError {
    match cap_hit(&e) {
        Some(limit) => UnpackError::TooLarge { layer, limit },
        None => UnpackError::Format {
            layer,
            reason: e.to_string(),
        },
    }
}

/// The state of one layer's unpacking.
struct Unpacker<'a> {
    layer: &'a Digest,
    /// For messages only: every operation goes through `root`.
    path: &'a Path,
    root: Root,
    is_root: bool,
    /// Directory members' modes and mtimes, given once everything is in (a read-only
    /// directory must still take its members): relative path → (mode, mtime).
    dirs: BTreeMap<PathBuf, (u32, i64)>,
}

impl Unpacker<'_> {
    fn member(&mut self, m: Member, data: &mut impl Read) -> Result<(), UnpackError> {
        let escape = |reason| UnpackError::PathEscape {
            layer: self.layer.clone(),
            path: m.path.display().to_string(),
            reason,
        };
        let rel = match classify(&m.path).map_err(escape)? {
            EntryKind::Opaque(rel) => {
                let dir = self.dir(&rel, &m.path, true)?;
                return rooted::mark_opaque(&dir).map_err(self.io("mark opaque", &rel));
            }
            EntryKind::Whiteout(rel) => {
                let (parent, name) = self.parent(&rel, &m.path, true)?;
                self.clear(&parent, name, &rel, false)?;
                return rooted::make_node(&parent, name, FileType::CharacterDevice, 0, (0, 0))
                    .map_err(self.io("create a whiteout at", &rel));
            }
            // The layer's root is the overlay's: it keeps the store's mode.
            EntryKind::Plain(rel) if rel.as_os_str().is_empty() => return Ok(()),
            EntryKind::Plain(rel) => rel,
        };
        let meta = Meta {
            owner: self.is_root.then_some((m.uid, m.gid)),
            mtime: m.mtime,
        };
        let (parent, name) = self.parent(&rel, &m.path, true)?;
        match m.entry_type {
            tar::EntryType::Directory => {
                self.clear(&parent, name, &rel, true)?;
                let dir = rooted::make_dir(&parent, name).map_err(self.io("create", &rel))?;
                rooted::set_meta(&dir, meta, None).map_err(self.io("set the owner of", &rel))?;
                self.dirs.insert(rel, (m.mode, m.mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.clear(&parent, name, &rel, false)?;
                let mut file =
                    rooted::create_file(&parent, name).map_err(self.io("create", &rel))?;
                self.copy(data, &mut file, &rel)?;
                // Owner first: a chown clears setuid and setgid bits.
                rooted::set_meta(&file, meta, Some(m.mode))
                    .map_err(self.io("set the owner and mode of", &rel))?;
            }
            tar::EntryType::Symlink => {
                // The target is not checked: it is resolved inside the container's root
                // later, and nothing here follows it.
                let target = m
                    .link
                    .as_deref()
                    .ok_or_else(|| escape("it is a symlink without a target"))?;
                self.clear(&parent, name, &rel, false)?;
                rooted::symlink(&parent, name, target).map_err(self.io("create symlink", &rel))?;
                rooted::set_meta_at(&parent, name, meta)
                    .map_err(self.io("set the owner of", &rel))?;
            }
            tar::EntryType::Link => {
                let target = m
                    .link
                    .as_deref()
                    .ok_or_else(|| escape("it is a hard link without a target"))?;
                let EntryKind::Plain(target) = classify(target).map_err(escape)? else {
                    return Err(escape("it is a hard link to a whiteout"));
                };
                if target.as_os_str().is_empty() {
                    return Err(escape("it is a hard link to the layer's root"));
                }
                let bad_link = || UnpackError::BadHardLink {
                    layer: self.layer.clone(),
                    path: m.path.display().to_string(),
                    target: target.clone(),
                };
                let (target_parent, target_name) = match self.parent(&target, &m.path, false) {
                    Err(UnpackError::Io { source, .. }) if rooted::gone(&source) => {
                        return Err(bad_link())
                    }
                    other => other?,
                };
                self.clear(&parent, name, &rel, false)?;
                // A hard link shares its target's inode: owner and mode are the target's.
                match rooted::hard_link(&target_parent, target_name, &parent, name) {
                    // Missing, or a directory (which cannot be hard-linked).
                    Err(e) if rooted::gone(&e) || e.kind() == io::ErrorKind::PermissionDenied => {
                        return Err(bad_link())
                    }
                    other => other.map_err(self.io("create hard link", &rel))?,
                }
            }
            kind @ (tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo) => {
                let file_type = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                self.clear(&parent, name, &rel, false)?;
                rooted::make_node(&parent, name, file_type, m.mode, m.device)
                    .map_err(self.io("create device node", &rel))?;
                rooted::set_meta_at(&parent, name, meta)
                    .map_err(self.io("set the owner of", &rel))?;
            }
            // Anything else carries no file.
            _ => {}
        }
        Ok(())
    }

    /// Gives directories their modes and mtimes, deepest first; a directory that a
    /// later member replaced (by a symlink, say) is left alone, never followed.
    fn finish(self) -> Result<(), UnpackError> {
        for (rel, (mode, mtime)) in self.dirs.iter().rev() {
            let dir = self.root.existing_dir(rel).map_err(self.io("open", rel))?;
            if let Some(dir) = dir {
                rooted::finish_dir(&dir, *mode, *mtime).map_err(self.io("set the mode of", rel))?;
            }
        }
        Ok(())
    }

    /// The directory `rel`, opened inside the root without following links.
    fn dir(&self, rel: &Path, member: &Path, create: bool) -> Result<OwnedFd, UnpackError> {
        self.root
            .dir(rel, create)
            .map_err(|e| self.resolve_error(e, rel, member))
    }

    /// The directory holding `rel` (made with its parents when `create`) and the name.
    fn parent<'p>(
        &self,
        rel: &'p Path,
        member: &Path,
        create: bool,
    ) -> Result<(OwnedFd, &'p OsStr), UnpackError> {
        let name = rel.file_name().ok_or_else(|| UnpackError::PathEscape {
            layer: self.layer.clone(),
            path: member.display().to_string(),
            reason: "it names no file",
        })?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        Ok((self.dir(parent, member, create)?, name))
    }

    fn resolve_error(&self, e: io::Error, rel: &Path, member: &Path) -> UnpackError {
        let reason = match rustix::io::Errno::from_io_error(&e) {
            Some(rustix::io::Errno::LOOP) => "a directory on its path is a symlink",
            Some(rustix::io::Errno::NOTDIR) => "a directory on its path is not a directory",
            Some(rustix::io::Errno::XDEV) => "its path leaves the layer",
            _ => return self.io("open the directory", rel)(e),
        };
        UnpackError::PathEscape {
            layer: self.layer.clone(),
            path: member.display().to_string(),
            reason,
        }
    }

    /// Clears `name` for a new member, forgetting the modes of directories removed.
    fn clear(
        &mut self,
        parent: &OwnedFd,
        name: &OsStr,
        rel: &Path,
        keep_dir: bool,
    ) -> Result<(), UnpackError> {
        let cleared = rooted::clear(parent, name, keep_dir).map_err(self.io("replace", rel))?;
        if cleared == (Cleared::Removed { was_dir: true }) {
            self.dirs.retain(|dir, _| !dir.starts_with(rel));
        }
        Ok(())
    }

    /// Copies a member's data; reading fails on a cap or a corrupt stream, writing on
    /// the disk.
    fn copy(
        &self,
        data: &mut impl Read,
        file: &mut fs::File,
        rel: &Path,
    ) -> Result<(), UnpackError> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(self.layer.clone(), e)),
            };
            file.write_all(&buf[..n]).map_err(self.io("write", rel))?;
        }
    }

    fn io(&self, action: &'static str, rel: &Path) -> impl FnOnce(io::Error) -> UnpackError {
        let layer = self.layer.clone();
        let path = self.path.join(rel);
        move |source| UnpackError::Io {
            layer,
            action,
            path,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::temp_store as store;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn classify_table() {
        use EntryKind::*;
        let p = PathBuf::from;
        let table: &[(&str, Result<EntryKind, &str>)] = &[
            ("etc/passwd", Ok(Plain(p("etc/passwd")))),
            ("./etc/passwd", Ok(Plain(p("etc/passwd")))),
            ("/etc/passwd", Ok(Plain(p("etc/passwd")))),
            ("etc/.wh.passwd", Ok(Whiteout(p("etc/passwd")))),
            (".wh.tmp", Ok(Whiteout(p("tmp")))),
            ("var/cache/.wh..wh..opq", Ok(Opaque(p("var/cache")))),
            ("etc/.wh.", Err("its whiteout names nothing, . or ..")),
            ("../etc/passwd", Err("it contains ..")),
            ("a/../../etc/passwd", Err("it contains ..")),
            ("a/.wh...", Err("its whiteout names nothing, . or ..")),
        ];
        for (input, want) in table {
            assert_eq!(&classify(Path::new(input)), want, "{input}");
        }
    }

    enum E<'a> {
        File(&'a str, &'a str),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        Link(&'a str, &'a str),
    }

    /// A tar with raw names (tar::Builder refuses `..`, which these tests need).
    fn tar_of(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_old();
            let (name, kind, data, link) = match e {
                E::File(n, d) => (*n, tar::EntryType::Regular, d.as_bytes(), None),
                E::Dir(n) => (*n, tar::EntryType::Directory, &b""[..], None),
                E::Symlink(n, t) => (*n, tar::EntryType::Symlink, &b""[..], Some(*t)),
                E::Link(n, t) => (*n, tar::EntryType::Link, &b""[..], Some(*t)),
            };
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(t) = link {
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
            }
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    fn zstd(bytes: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(bytes, ruzstd::encoding::CompressionLevel::Fastest)
    }

    #[test]
    fn unpacks_every_compression_once() {
        let tar = tar_of(&[
            E::Dir("etc"),
            E::File("etc/hostname", "cloudos\n"),
            E::Symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
            E::Link("etc/hostname2", "etc/hostname"),
        ]);
        let (_dir, store) = store();
        let two_frames = [zstd(&tar[..512]), zstd(&tar[512..])].concat();
        for blob in [tar.clone(), gzip(&tar), zstd(&tar), two_frames] {
            let digest = store.put_bytes(&blob).unwrap();
            let dir = store.unpack_layer(&digest).unwrap();
            assert_eq!(dir, store.layer_dir(&digest));
            assert_eq!(
                fs::read_to_string(dir.join("etc/hostname")).unwrap(),
                "cloudos\n"
            );
            assert_eq!(
                fs::read_to_string(dir.join("etc/hostname2")).unwrap(),
                "cloudos\n"
            );
            assert_eq!(
                fs::read_link(dir.join("etc/localtime")).unwrap(),
                Path::new("/usr/share/zoneinfo/UTC")
            );
            // Once per digest: a second call does not unpack again.
            fs::write(dir.join("marker"), "").unwrap();
            assert!(store.unpack_layer(&digest).unwrap().join("marker").exists());
        }
        assert_eq!(fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn refuses_escapes_and_leaves_nothing() {
        let outside = tempfile::tempdir().unwrap();
        let abs = outside.path().display().to_string();
        let cases: Vec<(Vec<E>, &str)> = vec![
            (vec![E::File("../evil", "x")], "contains .."),
            (
                vec![E::Symlink("x", &abs), E::File("x/evil", "x")],
                "is a symlink",
            ),
            (
                vec![E::Symlink("x", "../../.."), E::Dir("x/d")],
                "is a symlink",
            ),
            (vec![E::Link("evil", "../../etc/passwd")], "contains .."),
        ];
        for (entries, reason) in cases {
            let (_dir, store) = store();
            let digest = store.put_bytes(&tar_of(&entries)).unwrap();
            let err = store.unpack_layer(&digest).unwrap_err();
            assert!(matches!(err, UnpackError::PathEscape { .. }), "{err}");
            assert!(err.to_string().contains(reason), "{err}");
            assert!(!store.layer_dir(&digest).exists());
            assert_eq!(fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
            assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        }
    }

    #[test]
    fn corrupt_layer_is_a_format_error() {
        let (_dir, store) = store();
        let mut bad = gzip(&tar_of(&[E::File("a", "hello")]));
        bad.truncate(bad.len() / 2);
        let digest = store.put_bytes(&bad).unwrap();
        let err = store.unpack_layer(&digest).unwrap_err();
        assert!(matches!(err, UnpackError::Format { .. }), "{err}");
        assert!(!store.layer_dir(&digest).exists());
    }

    #[test]
    fn modes_survive_ownership() {
        let (_dir, store) = store();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o4755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        b.append_data(&mut h, "bin/su", &b"#!"[..]).unwrap();
        let digest = store.put_bytes(&b.into_inner().unwrap()).unwrap();
        let dir = store.unpack_layer(&digest).unwrap();
        let mode = fs::metadata(dir.join("bin/su"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o4755);
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        assert!(
            rustix::process::geteuid().is_root(),
            "overlay whiteouts need root (mknod, trusted.* xattrs): run the tests as root"
        );
        let (_dir, store) = store();
        let digest = store
            .put_bytes(&tar_of(&[
                E::Dir("etc"),
                E::File("etc/.wh.motd", ""),
                E::Dir("var/cache"),
                E::File("var/cache/.wh..wh..opq", ""),
                E::File("var/cache/kept", "k"),
            ]))
            .unwrap();
        let dir = store.unpack_layer(&digest).unwrap();
        let motd = rustix::fs::lstat(dir.join("etc/motd")).unwrap();
        assert_eq!(
            rustix::fs::FileType::from_raw_mode(motd.st_mode),
            rustix::fs::FileType::CharacterDevice
        );
        assert_eq!(motd.st_rdev, 0);
        assert!(!dir.join("etc/.wh.motd").exists());
        let mut value = [0u8; 4];
        let n = rustix::fs::lgetxattr(dir.join("var/cache"), "trusted.overlay.opaque", &mut value)
            .unwrap();
        assert_eq!(&value[..n], b"y");
        assert!(!dir.join("var/cache/.wh..wh..opq").exists());
        assert!(dir.join("var/cache/kept").exists());
    }
}
