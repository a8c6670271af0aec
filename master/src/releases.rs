//! The releases a master keeps for its nodes: signed update bundles, one file each under
//! `<data dir>/master/releases/`, named `cloudos-<version>-<arch>.bundle`.
//!
//! The directory is the record: a bundle is checked in full (signature by a trusted key,
//! every part's hash) before it is renamed in, so listing only reads each manifest and
//! checks its signature again. With several masters (etcd, issue 22) the bundles will have
//! to be copied between them; the store is not the place for 40 MB files.
//!
//! Owns the files; knows nothing of HTTP (routes/releases.rs) or of upgrades.

use std::fs;
use std::path::{Path, PathBuf};

use cloudos_cluster::api::ReleaseInfo;
use cloudos_release::{
    bundle, Arch, BundleError, Keyring, Manifest, Verified, Version, PART_NAMES,
};

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("the bundle is refused: {0}")]
    Refused(#[from] BundleError),
    #[error("release {version} for {arch} is already kept, with other contents; remove it first")]
    Conflict { version: Version, arch: Arch },
    #[error("no release {version} for {arch} is kept here")]
    Missing { version: String, arch: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ReleaseError {
    let context = context.into();
    move |source| ReleaseError::Io { context, source }
}

pub struct Releases {
    /// What admins added: kept in backups.
    dir: PathBuf,
    /// The release this master runs, put together from its own system
    /// ([`Releases::offer`]): never backed up (45 MB per architecture that any master
    /// running that release offers again).
    offered: PathBuf,
    keyring: Keyring,
}

impl Releases {
    pub fn new(data_dir: &Path, keyring: Keyring) -> Releases {
        Releases {
            dir: data_dir.join("releases"),
            offered: data_dir.join("offered"),
            keyring,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A place for an upload on the same file system as the releases.
    pub fn upload_path(&self, tag: &str) -> Result<PathBuf, ReleaseError> {
        upload_path_in(&self.dir, tag)
    }

    /// Keeps the release of a system directory, with `nodeos` as its third part: how a
    /// master offers the release it runs, so that nobody has to upload it to bring nodes to
    /// the master's own version. A system directory (a system slot on the ESP, or the live
    /// medium's `/boot`) holds the kernel, the initramfs, the etcd pack and the release's
    /// signed manifest under the bundle's names. `None` when that release is kept already.
    ///
    /// The bundle is checked in full like an upload ([`Releases::add`]): files that no
    /// longer match their signed manifest are refused, and nothing is kept.
    pub fn offer(&self, system: &Path, nodeos: &Path) -> Result<Option<ReleaseInfo>, ReleaseError> {
        let read = |name: &str| {
            let path = system.join(name);
            fs::read(&path).map_err(io(format!("reading {}", path.display())))
        };
        let signed = bundle::Signed {
            manifest: read(bundle::MANIFEST)?,
            signature: read(bundle::SIGNATURE)?,
        };
        // Only for the file's name; `add` believes nothing before the signature checks out.
        let named = Manifest::parse(&signed.manifest).map_err(BundleError::from)?;
        if self
            .path(&named.version.to_string(), named.arch.as_str())
            .is_ok()
        {
            return Ok(None);
        }
        let upload = upload_path_in(&self.offered, "offer")?;
        let parts = [
            system.join(PART_NAMES[0]),
            system.join(PART_NAMES[1]),
            nodeos.to_owned(),
            system.join(PART_NAMES[3]),
        ];
        let kept = fs::File::create(&upload)
            .map_err(io(format!("creating {}", upload.display())))
            .and_then(|file| {
                let mut out = std::io::BufWriter::new(file);
                bundle::assemble(&mut out, &signed, &parts)?;
                Ok(())
            })
            .and_then(|()| self.keep(&self.offered, &upload));
        if kept.is_err() {
            let _ = fs::remove_file(&upload);
        }
        kept.map(Some)
    }

    /// Checks the uploaded bundle at `upload` in full and keeps it. The same bundle twice is
    /// fine (nothing changes); another bundle under a kept version and architecture is not.
    pub fn add(&self, upload: &Path) -> Result<ReleaseInfo, ReleaseError> {
        self.keep(&self.dir, upload)
    }

    /// [`Releases::add`] into `dir`.
    fn keep(&self, dir: &Path, upload: &Path) -> Result<ReleaseInfo, ReleaseError> {
        let verified = self.check(upload)?;
        let name = verified.manifest.file_name();
        let target = dir.join(&name);
        if target.exists() {
            let same = files_equal(&target, upload)
                .map_err(io(format!("comparing with {}", target.display())))?;
            if !same {
                return Err(ReleaseError::Conflict {
                    version: verified.manifest.version,
                    arch: verified.manifest.arch,
                });
            }
            fs::remove_file(upload).map_err(io("removing the duplicate upload"))?;
        } else {
            fs::rename(upload, &target).map_err(io(format!("keeping {}", target.display())))?;
        }
        let size = fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
        Ok(info(&verified, &name, size))
    }

    fn check(&self, path: &Path) -> Result<Verified, ReleaseError> {
        let file = fs::File::open(path).map_err(io(format!("opening {}", path.display())))?;
        // The master keeps any version and architecture; each node decides for itself.
        Ok(bundle::open(
            std::io::BufReader::new(file),
            &self.keyring,
            |_| Ok(()),
            None,
        )?)
    }

    /// Every kept release (added and offered), newest first; a file that no longer
    /// verifies is logged and left out.
    pub fn list(&self) -> Vec<ReleaseInfo> {
        let entries = [&self.dir, &self.offered]
            .into_iter()
            .filter_map(|dir| fs::read_dir(dir).ok())
            .flat_map(|entries| entries.flatten());
        let mut out: Vec<(Version, ReleaseInfo)> = Vec::new();
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".bundle") || name.starts_with('.') {
                continue;
            }
            // Added and offered both: the same release, listed once.
            if out.iter().any(|(_, r)| r.file == name) {
                continue;
            }
            let header = fs::File::open(entry.path())
                .map_err(|source| BundleError::Io {
                    context: format!("opening {name}"),
                    source,
                })
                .and_then(|f| bundle::read_header(std::io::BufReader::new(f), &self.keyring));
            match header {
                Ok(verified) => {
                    let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    out.push((
                        verified.manifest.version.clone(),
                        info(&verified, &name, size),
                    ));
                }
                Err(e) => log::warn!("release file {name} is left out: {e}"),
            }
        }
        out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.arch.cmp(&b.1.arch)));
        out.into_iter().map(|(_, info)| info).collect()
    }

    /// The file of a kept release.
    pub fn path(&self, version: &str, arch: &str) -> Result<PathBuf, ReleaseError> {
        let missing = || ReleaseError::Missing {
            version: version.to_owned(),
            arch: arch.to_owned(),
        };
        let version = Version::parse(version).map_err(|_| missing())?;
        let arch = Arch::parse(arch).ok_or_else(missing)?;
        let name = format!("cloudos-{version}-{}.bundle", arch.as_str());
        [&self.dir, &self.offered]
            .into_iter()
            .map(|dir| dir.join(&name))
            .find(|path| path.is_file())
            .ok_or_else(missing)
    }
}

/// A place for an upload in `dir`, on the same file system as what it becomes.
fn upload_path_in(dir: &Path, tag: &str) -> Result<PathBuf, ReleaseError> {
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    Ok(dir.join(format!(".upload-{tag}")))
}

fn info(verified: &Verified, file: &str, size: u64) -> ReleaseInfo {
    ReleaseInfo {
        version: verified.manifest.version.to_string(),
        arch: verified.manifest.arch.to_string(),
        size,
        key: verified.key.to_string(),
        file: file.to_owned(),
    }
}

fn files_equal(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let (ma, mb) = (fs::metadata(a)?, fs::metadata(b)?);
    if ma.len() != mb.len() {
        return Ok(false);
    }
    let (mut fa, mut fb) = (
        std::io::BufReader::new(fs::File::open(a)?),
        std::io::BufReader::new(fs::File::open(b)?),
    );
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_release::SecretKey;

    struct Lab {
        dir: tempfile::TempDir,
        key: SecretKey,
        releases: Releases,
    }

    fn lab() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate().unwrap();
        let releases = Releases::new(dir.path(), Keyring::new(vec![key.public()]));
        Lab { dir, key, releases }
    }

    /// A bundle signed by `key`, written where an upload lands.
    fn upload(lab: &Lab, key: &SecretKey, version: &str, content: &str) -> PathBuf {
        let parts = cloudos_release::PART_NAMES.map(|n| {
            let p = lab.dir.path().join(format!("part-{n}"));
            fs::write(&p, format!("{n} {content}")).unwrap();
            p
        });
        let path = lab
            .releases
            .upload_path(&format!("{version}-{content}"))
            .unwrap();
        let file = fs::File::create(&path).unwrap();
        bundle::write(
            file,
            key,
            Version::parse(version).unwrap(),
            Arch::X86_64,
            &parts,
        )
        .unwrap();
        path
    }

    #[test]
    fn a_signed_bundle_is_kept_listed_and_found() {
        let lab = lab();
        let up = upload(&lab, &lab.key, "1.1.0", "a");
        let info = lab.releases.add(&up).unwrap();
        assert_eq!(info.version, "1.1.0");
        assert_eq!(info.file, "cloudos-1.1.0-x86_64.bundle");
        assert!(!up.exists());
        let up = upload(&lab, &lab.key, "1.2.0", "b");
        lab.releases.add(&up).unwrap();
        let listed: Vec<String> = lab.releases.list().into_iter().map(|r| r.version).collect();
        assert_eq!(listed, ["1.2.0", "1.1.0"]);
        assert!(lab.releases.path("1.1.0", "x86_64").is_ok());
        assert!(matches!(
            lab.releases.path("1.1.0", "aarch64"),
            Err(ReleaseError::Missing { .. })
        ));
        // Not a way out of the directory.
        assert!(lab.releases.path("../../etc/passwd", "x86_64").is_err());
    }

    /// A system directory as a slot keeps it: the parts and the signed manifest of a
    /// bundle signed by `key`; the loose nodeos beside it.
    fn system_dir(lab: &Lab, key: &SecretKey, version: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let up = upload(lab, key, version, "offered");
        let bytes = fs::read(&up).unwrap();
        let system = lab.dir.path().join(format!("slot-{version}"));
        fs::create_dir_all(&system).unwrap();
        let ring = Keyring::new(vec![key.public()]);
        let verified = bundle::open(&bytes[..], &ring, |_| Ok(()), Some(&system)).unwrap();
        fs::write(system.join(bundle::MANIFEST), &verified.signed.manifest).unwrap();
        fs::write(system.join(bundle::SIGNATURE), &verified.signed.signature).unwrap();
        let nodeos = lab.dir.path().join(format!("nodeos-{version}"));
        fs::rename(system.join("nodeos"), &nodeos).unwrap();
        fs::remove_file(&up).unwrap();
        (system, nodeos, bytes)
    }

    #[test]
    fn the_release_a_master_runs_is_offered_from_its_slot_once() {
        let lab = lab();
        let (system, nodeos, bytes) = system_dir(&lab, &lab.key, "2.0.0");
        let info = lab.releases.offer(&system, &nodeos).unwrap().unwrap();
        assert_eq!(
            (info.version.as_str(), info.arch.as_str()),
            ("2.0.0", "x86_64")
        );
        let kept = lab.releases.path("2.0.0", "x86_64").unwrap();
        assert_eq!(
            fs::read(&kept).unwrap(),
            bytes,
            "the very bundle the build signed"
        );
        // Not among what admins added, which backups hold: any master running it offers it.
        assert!(!kept.starts_with(lab.releases.dir()), "{}", kept.display());
        assert_eq!(lab.releases.list().len(), 1);
        assert!(lab.releases.offer(&system, &nodeos).unwrap().is_none());
    }

    #[test]
    fn a_slot_whose_files_do_not_match_their_signed_manifest_offers_nothing() {
        let lab = lab();
        let (system, nodeos, _) = system_dir(&lab, &lab.key, "2.0.0");
        // Another nodeos than the one the release signed (a node that runs something else).
        fs::write(&nodeos, "nodeos offered-but-changed").unwrap();
        let err = lab.releases.offer(&system, &nodeos).unwrap_err();
        assert!(err.to_string().contains("nodeos"), "{err}");
        // A slot signed by a key this master does not trust.
        let stranger = SecretKey::generate().unwrap();
        let (system, nodeos, _) = system_dir(&lab, &stranger, "3.0.0");
        let err = lab.releases.offer(&system, &nodeos).unwrap_err();
        assert!(err.to_string().contains("does not trust"), "{err}");
        assert!(lab.releases.list().is_empty());
        for dir in [
            lab.dir.path().join("releases"),
            lab.dir.path().join("offered"),
        ] {
            let left: Vec<_> = fs::read_dir(&dir)
                .map(|d| d.flatten().collect())
                .unwrap_or_default();
            assert!(
                left.is_empty(),
                "nothing left behind in {}: {left:?}",
                dir.display()
            );
        }
    }

    #[test]
    fn an_admin_uploading_a_bundle_signed_by_an_untrusted_key_is_refused() {
        let lab = lab();
        let stranger = SecretKey::generate().unwrap();
        let up = upload(&lab, &stranger, "9.9.9", "evil");
        let err = lab.releases.add(&up).unwrap_err();
        assert!(err.to_string().contains("does not trust"), "{err}");
        assert!(lab.releases.list().is_empty());
    }

    #[test]
    fn the_same_bundle_twice_is_fine_and_another_under_the_same_version_is_not() {
        let lab = lab();
        lab.releases
            .add(&upload(&lab, &lab.key, "1.0.0", "a"))
            .unwrap();
        lab.releases
            .add(&upload(&lab, &lab.key, "1.0.0", "a"))
            .unwrap();
        let other = upload(&lab, &lab.key, "1.0.0", "changed");
        assert!(matches!(
            lab.releases.add(&other),
            Err(ReleaseError::Conflict { .. })
        ));
        assert_eq!(lab.releases.list().len(), 1);
    }
}
