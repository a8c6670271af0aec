//! Unpacks a layer blob (tar, gzip'd tar or zstd'd tar) into its own directory, once
//! per layer digest, in the form overlayfs reads as a lower layer.
//!
//! OCI whiteouts become overlayfs whiteouts: `.wh.<name>` turns into a 0/0 character
//! device `<name>`, and `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.
//! Entries that would land outside the layer's directory (`..`, or a path through a
//! symlink the layer made) are refused. Owns `layers/` under the store's root; does not
//! mount anything (the runtime stacks these directories).

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{lchown, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::digest::Digest;
use crate::store::{Store, StoreError};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Everything that can go wrong unpacking a layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("layer {layer} is not a tar archive, a gzip'd tar or a zstd'd tar: {reason}; the image is corrupt or uses an unsupported layer format")]
    Format { layer: Digest, reason: String },
    #[error("layer {layer} has entry {path:?} that would be written outside the layer ({reason}); the image is malicious or broken, do not use it")]
    PathEscape {
        layer: Digest,
        path: String,
        reason: &'static str,
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

impl Store {
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
        unpack_into(digest, blob, work.path())?;
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

    /// Removes unpacked layers whose blob is not in `keep` (called by [`Store::gc`]).
    pub(crate) fn gc_layers(
        &self,
        keep: &std::collections::BTreeSet<Digest>,
    ) -> Result<Vec<Digest>, StoreError> {
        let dir = self.root().join("layers");
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io {
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
        let mut removed = Vec::new();
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
                let path = entry.path();
                fs::remove_dir_all(&path).map_err(io("remove", &path))?;
                removed.push(digest);
            }
        }
        Ok(removed)
    }
}

/// The decompressed stream of a tar that may be gzip'd or zstd'd, told by its magic
/// bytes (media types lie more often than magic does).
pub(crate) fn decompress<'a>(blob: impl Read + 'a) -> Result<Box<dyn Read + 'a>, String> {
    let mut reader = BufReader::new(blob);
    let head = reader.fill_buf().map_err(|e| e.to_string())?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let decoder = ruzstd::decoding::StreamingDecoder::new(reader)
            .map_err(|e| format!("bad zstd header: {e}"))?;
        Ok(Box::new(ZstdFrames {
            decoder: Some(decoder),
        }))
    } else {
        Ok(Box::new(reader))
    }
}

/// A zstd stream of one or more concatenated frames (`zstd` and `pzstd` may write
/// several; one ruzstd decoder reads one frame).
struct ZstdFrames<R: BufRead> {
    decoder: Option<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>,
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(decoder) = self.decoder.as_mut() else {
                return Ok(0);
            };
            let n = decoder.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // This frame is done: go on with the next one, if any bytes are left.
            let Some(decoder) = self.decoder.take() else {
                return Ok(0);
            };
            let (mut source, frame) = decoder.into_parts();
            if source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            let next = ruzstd::decoding::StreamingDecoder::new_with_decoder(source, frame)
                .map_err(|e| io::Error::other(format!("bad zstd frame: {e}")))?;
            self.decoder = Some(next);
        }
    }
}

/// Unpacks one layer's tar stream into `root`, which must be empty.
fn unpack_into(layer: &Digest, blob: impl Read, root: &Path) -> Result<(), UnpackError> {
    let format_err = |e: io::Error| UnpackError::Format {
        layer: layer.clone(),
        reason: e.to_string(),
    };
    let stream = decompress(blob).map_err(|reason| UnpackError::Format {
        layer: layer.clone(),
        reason,
    })?;
    let mut archive = tar::Archive::new(stream);
    let is_root = rustix::process::geteuid().is_root();
    let mut dir_modes = Vec::new();
    for entry in archive.entries().map_err(format_err)? {
        let mut entry = entry.map_err(format_err)?;
        let raw_path = entry.path().map_err(format_err)?.into_owned();
        let escape = |reason| UnpackError::PathEscape {
            layer: layer.clone(),
            path: raw_path.display().to_string(),
            reason,
        };
        let kind = classify(&raw_path).map_err(escape)?;
        let rel = match &kind {
            EntryKind::Plain(p) | EntryKind::Whiteout(p) | EntryKind::Opaque(p) => p.clone(),
        };
        check_parents(root, &rel).map_err(escape)?;
        let dest = root.join(&rel);
        let io = |action, source| UnpackError::Io {
            layer: layer.clone(),
            action,
            path: dest.clone(),
            source,
        };
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| io("create parent directories of", e))?;
        }
        match kind {
            EntryKind::Opaque(_) => {
                fs::create_dir_all(&dest).map_err(|e| io("create", e))?;
                rustix::fs::lsetxattr(
                    &dest,
                    "trusted.overlay.opaque",
                    b"y",
                    rustix::fs::XattrFlags::empty(),
                )
                .map_err(|e| io("mark opaque", e.into()))?;
                continue;
            }
            EntryKind::Whiteout(_) => {
                remove_existing(&dest, false).map_err(|e| io("replace", e))?;
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &dest,
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .map_err(|e| io("create a whiteout at", e.into()))?;
                continue;
            }
            EntryKind::Plain(_) if rel.as_os_str().is_empty() => continue,
            EntryKind::Plain(_) => {}
        }
        let header = entry.header();
        let mode = header.mode().map_err(format_err)? & 0o7777;
        let entry_type = header.entry_type();
        let uid = header.uid().ok().and_then(|u| u32::try_from(u).ok());
        let gid = header.gid().ok().and_then(|g| u32::try_from(g).ok());
        let device = (
            header.device_major().ok().flatten().unwrap_or(0),
            header.device_minor().ok().flatten().unwrap_or(0),
        );
        remove_existing(&dest, entry_type.is_dir()).map_err(|e| io("replace", e))?;
        let mut file_mode = None;
        match entry_type {
            tar::EntryType::Directory => {
                fs::create_dir_all(&dest).map_err(|e| io("create", e))?;
                // Applied at the end: a read-only directory must still take its entries.
                dir_modes.push((dest.clone(), mode));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut file = fs::File::create(&dest).map_err(|e| io("create", e))?;
                io::copy(&mut entry, &mut file).map_err(|e| io("write", e))?;
                file_mode = Some(mode);
            }
            tar::EntryType::Symlink => {
                // The target is not checked: it is resolved inside the container's root
                // later, and nothing here follows it (see check_parents).
                let target = entry
                    .link_name()
                    .map_err(format_err)?
                    .ok_or_else(|| escape("it is a symlink without a target"))?;
                std::os::unix::fs::symlink(&target, &dest).map_err(|e| io("create symlink", e))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(format_err)?
                    .ok_or_else(|| escape("it is a hard link without a target"))?;
                let EntryKind::Plain(target) = classify(&target).map_err(escape)? else {
                    return Err(escape("it is a hard link to a whiteout"));
                };
                check_parents(root, &target).map_err(escape)?;
                fs::hard_link(root.join(target), &dest).map_err(|e| io("create hard link", e))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let file_type = match entry_type {
                    tar::EntryType::Char => rustix::fs::FileType::CharacterDevice,
                    tar::EntryType::Block => rustix::fs::FileType::BlockDevice,
                    _ => rustix::fs::FileType::Fifo,
                };
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &dest,
                    file_type,
                    rustix::fs::Mode::from_raw_mode(mode),
                    rustix::fs::makedev(device.0, device.1),
                )
                .map_err(|e| io("create device node", e.into()))?;
            }
            // PAX and GNU long-name headers are folded into the next entry by `tar`;
            // anything else carries no file.
            _ => continue,
        }
        // A hard link shares its target's inode: its owner and mode are the target's.
        if is_root && entry_type != tar::EntryType::Link {
            lchown(&dest, uid, gid).map_err(|e| io("set the owner of", e))?;
        }
        // After the chown, which clears setuid and setgid bits.
        if let Some(mode) = file_mode {
            fs::set_permissions(&dest, fs::Permissions::from_mode(mode))
                .map_err(|e| io("set the mode of", e))?;
        }
    }
    for (dir, mode) in dir_modes.into_iter().rev() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).map_err(|source| {
            UnpackError::Io {
                layer: layer.clone(),
                action: "set the mode of",
                path: dir,
                source,
            }
        })?;
    }
    Ok(())
}

/// Refuses a path whose parent directories inside `root` include a symlink: writing
/// through it could land anywhere (`ln -s / x` then `x/etc/passwd`).
fn check_parents(root: &Path, rel: &Path) -> Result<(), &'static str> {
    let mut at = root.to_path_buf();
    let mut parents: Vec<_> = rel.components().collect();
    parents.pop();
    for part in parents {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err("a directory on its path is a symlink")
            }
            Ok(meta) if !meta.is_dir() => return Err("a directory on its path is not a directory"),
            _ => {}
        }
    }
    Ok(())
}

/// Clears the way for a new entry: a later tar entry replaces an earlier one, except
/// that a directory entry keeps an existing directory (and its contents).
fn remove_existing(dest: &Path, keep_dir: bool) -> io::Result<()> {
    match fs::symlink_metadata(dest) {
        Ok(meta) if meta.is_dir() && keep_dir => Ok(()),
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(dest),
        Ok(_) => fs::remove_file(dest),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::temp_store as store;
    use std::io::Write as _;

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
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: overlay whiteouts need root (mknod, trusted.* xattrs)");
            return;
        }
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
