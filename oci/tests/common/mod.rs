//! What the attack tests share: a tar writer that writes what an attacker writes (raw
//! names with `..`, absolute paths, GNU long names, PAX records, lying sizes: things
//! `tar::Builder` refuses to make), and a snapshot of a host tree to prove that nothing
//! outside a layer changed.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cloudos_oci::{ImageStore, Limits};

/// A tar stream written member by member, as raw as an attacker likes.
#[derive(Default)]
pub struct Tar {
    bytes: Vec<u8>,
}

/// How a member's long name travels when it does not fit the 100-byte header field.
#[derive(Clone, Copy, Debug)]
pub enum LongNames {
    Gnu,
    Pax,
}

impl Tar {
    pub fn new() -> Self {
        Self::default()
    }

    /// A member of `kind` at `path`, with a link target, mode and data. Names longer
    /// than the header field go ahead in a GNU long-name record.
    pub fn member(
        &mut self,
        kind: tar::EntryType,
        path: &[u8],
        link: &[u8],
        mode: u32,
        data: &[u8],
    ) -> &mut Self {
        self.member_with(kind, path, link, mode, data, LongNames::Gnu)
    }

    pub fn member_with(
        &mut self,
        kind: tar::EntryType,
        path: &[u8],
        link: &[u8],
        mode: u32,
        data: &[u8],
        long: LongNames,
    ) -> &mut Self {
        let long_path = path.len() > 100;
        let long_link = link.len() > 100;
        match long {
            LongNames::Gnu => {
                if long_path {
                    let mut name = path.to_vec();
                    name.push(0);
                    self.record(tar::EntryType::GNULongName, name.len() as u64, &name);
                }
                if long_link {
                    let mut name = link.to_vec();
                    name.push(0);
                    self.record(tar::EntryType::GNULongLink, name.len() as u64, &name);
                }
            }
            LongNames::Pax => {
                let mut records = Vec::new();
                if long_path {
                    records.push(("path", path));
                }
                if long_link {
                    records.push(("linkpath", link));
                }
                if !records.is_empty() {
                    self.pax(&records);
                }
            }
        }
        let mut h = tar::Header::new_gnu();
        let cut = |b: &[u8]| b[..b.len().min(100)].to_vec();
        h.as_gnu_mut().unwrap().name[..cut(path).len()].copy_from_slice(&cut(path));
        h.as_gnu_mut().unwrap().linkname[..cut(link).len()].copy_from_slice(&cut(link));
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000_000);
        h.set_cksum();
        self.header_and_data(&h, data)
    }

    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        self.member(tar::EntryType::Regular, path.as_bytes(), b"", mode, data)
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.member(tar::EntryType::Directory, path.as_bytes(), b"", mode, b"")
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let (p, t) = (path.as_bytes(), target.as_bytes());
        self.member(tar::EntryType::Symlink, p, t, 0o777, b"")
    }

    pub fn hard_link(&mut self, path: &str, target: &str) -> &mut Self {
        let (p, t) = (path.as_bytes(), target.as_bytes());
        self.member(tar::EntryType::Link, p, t, 0o644, b"")
    }

    /// A PAX record member (`x`) holding `records`, for the member that follows.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (key, value) in records {
            // "<len> <key>=<value>\n", where <len> counts itself.
            let rest = key.len() + value.len() + 3;
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            write!(body, "{len} {key}=").unwrap();
            body.extend_from_slice(value);
            body.push(b'\n');
        }
        self.record(tar::EntryType::XHeader, body.len() as u64, &body)
    }

    /// A long-name or PAX member that declares `size` bytes but carries `data`.
    pub fn record(&mut self, kind: tar::EntryType, size: u64, data: &[u8]) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        let name = b"././@LongLink";
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        self.header_and_data(&h, data)
    }

    fn header_and_data(&mut self, h: &tar::Header, data: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(h.as_bytes());
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0, pad));
        self
    }

    /// The stream with its two zero blocks of end.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.bytes.clone();
        out.extend(std::iter::repeat_n(0, 1024));
        out
    }

    /// The stream as it is, without an end (a record cut short, say).
    pub fn unfinished(&self) -> Vec<u8> {
        self.bytes.clone()
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A scratch directory holding a store and, beside it, a host tree the attacks aim at.
pub struct Scene {
    pub dir: tempfile::TempDir,
    pub store: ImageStore,
}

impl Scene {
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> Self {
        assert!(
            rustix::process::geteuid().is_root(),
            "the attack tests run as root: the unpacker chowns, makes device nodes and sets trusted.* xattrs only then, and the attacks aim at root's powers"
        );
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("store"))
            .unwrap()
            .with_limits(limits);
        make_host_tree(&dir.path().join("host"));
        Self { dir, store }
    }

    /// The host tree beside the store, which no layer may touch.
    pub fn host(&self) -> PathBuf {
        self.dir.path().join("host")
    }

    /// The host path as an absolute string, to aim symlinks and names at.
    pub fn host_str(&self) -> String {
        self.host().display().to_string()
    }

    /// Everything outside the store: the host tree and the scratch directory's entries.
    pub fn snapshot(&self) -> Snapshot {
        snapshot(self.dir.path(), &self.dir.path().join("store"))
    }
}

/// Files, a directory, a setuid-able script and a symlink, with fixed modes and mtimes.
fn make_host_tree(host: &Path) {
    fs::create_dir_all(host.join("etc")).unwrap();
    fs::write(host.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    fs::write(host.join("etc/shadow"), "root:*:1::::::\n").unwrap();
    fs::write(host.join("tool"), "#!/bin/sh\necho host tool\n").unwrap();
    std::os::unix::fs::symlink("etc", host.join("etc-link")).unwrap();
    for (path, mode) in [
        ("etc", 0o755),
        ("etc/passwd", 0o644),
        ("etc/shadow", 0o600),
        ("tool", 0o755),
        ("", 0o755),
    ] {
        fs::set_permissions(host.join(path), fs::Permissions::from_mode(mode)).unwrap();
    }
    let old = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 86_400,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 86_400,
            tv_nsec: 0,
        },
    };
    for path in ["etc/passwd", "etc/shadow", "tool", "etc", ""] {
        rustix::fs::utimensat(
            rustix::fs::CWD,
            host.join(path),
            &old,
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
    }
}

/// What a path is, as far as an attacker could change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub mtime: i64,
    pub content: Vec<u8>,
    pub xattrs: Vec<String>,
}

pub type Snapshot = BTreeMap<PathBuf, Node>;

/// Every path under `root` except `skip` (the store, which layers may change), read
/// without following links.
pub fn snapshot(root: &Path, skip: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(path) = todo.pop() {
        if path == skip {
            continue;
        }
        let meta = fs::symlink_metadata(&path).unwrap();
        let content = if meta.file_type().is_symlink() {
            fs::read_link(&path)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else if meta.is_file() {
            fs::read(&path).unwrap()
        } else {
            Vec::new()
        };
        if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                todo.push(entry.unwrap().path());
            }
        }
        let mut names = vec![0u8; 4096];
        let xattrs = match rustix::fs::llistxattr(&path, &mut names[..]) {
            Ok(n) => names[..n]
                .split(|b| *b == 0)
                .filter(|n| !n.is_empty())
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        out.insert(
            path,
            Node {
                mode: meta.mode(),
                uid: meta.uid(),
                gid: meta.gid(),
                nlink: meta.nlink(),
                mtime: meta.mtime(),
                content,
                xattrs,
            },
        );
    }
    out
}

/// Fails with the paths that differ.
pub fn assert_unchanged(before: &Snapshot, after: &Snapshot, what: &str) {
    if before == after {
        return;
    }
    let mut diff = Vec::new();
    for (path, node) in before {
        match after.get(path) {
            None => diff.push(format!("removed {}", path.display())),
            Some(now) if now != node => {
                diff.push(format!("changed {}: {node:?} -> {now:?}", path.display()))
            }
            _ => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        diff.push(format!("added {}", path.display()));
    }
    panic!(
        "{what}: the host changed outside the layer:\n{}",
        diff.join("\n")
    );
}
