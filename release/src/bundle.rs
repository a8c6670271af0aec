//! The bundle file: a ustar archive of `manifest.json`, `manifest.sig`, then the parts in
//! the manifest's order. Plain tar so that a person can look inside with `tar tvf`, and so
//! that a node can check it in one pass while it downloads: the signature is verified and
//! the release accepted before the first byte of a part is read, and each part is hashed as
//! it is copied. A node never needs the whole bundle on disk.
//!
//! Reading writes only into the directory the caller gives (a staging directory); on any
//! failure it removes what it wrote there, so a refused bundle leaves nothing behind.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use semver::Version;
use sha2::{Digest, Sha256};

use super::keys::{KeyId, Keyring, SecretKey};
use super::manifest::{
    Arch, Manifest, ManifestError, Part, FORMAT, MAX_MANIFEST_BYTES, PART_NAMES,
};
use super::policy::PolicyError;
use super::sign::{self, SignError, Signature};

/// The bundle's first two entries; a system slot keeps them under the same names, so that
/// the release it holds can be offered again (see [`assemble`]).
pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.sig";
const MAX_SIGNATURE_BYTES: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("not a CloudOS bundle: {0}")]
    Form(String),
    #[error(transparent)]
    Signature(#[from] SignError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("release refused: {0}")]
    Policy(#[from] PolicyError),
    #[error("part {name} is {found} bytes, the signed manifest says {expected}")]
    PartSize {
        name: String,
        expected: u64,
        found: u64,
    },
    #[error("part {name} does not match the SHA-256 in the signed manifest: the bundle was changed after it was signed")]
    PartHash { name: String },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> BundleError {
    let context = context.into();
    move |source| BundleError::Io { context, source }
}

/// What a checked bundle is.
#[derive(Debug, Clone)]
pub struct Verified {
    pub manifest: Manifest,
    /// The trusted key that signed it.
    pub key: KeyId,
    /// The manifest and its signature as they were signed: what a slot keeps.
    pub signed: Signed,
}

/// A manifest and its signature, byte for byte as the release's key signed them. Only
/// these bytes carry the signature: a manifest serialised again might not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub manifest: Vec<u8>,
    pub signature: Vec<u8>,
}

impl Signed {
    /// The manifest, once its signature checks out against `keyring`: how a file kept
    /// beside a slot's manifest (the etcd pack) is checked without the bundle.
    pub fn verify(&self, keyring: &Keyring) -> Result<Manifest, BundleError> {
        let signature = Signature::from_json(&self.signature)?;
        sign::verify(keyring, &self.manifest, &signature)?;
        Ok(Manifest::parse(&self.manifest)?)
    }
}

/// Hashes the parts, signs the manifest and writes the bundle. `parts` are the files of
/// [`PART_NAMES`], in that order.
pub fn write(
    out: impl Write,
    key: &SecretKey,
    version: Version,
    arch: Arch,
    parts: &[PathBuf; 4],
) -> Result<Manifest, BundleError> {
    let mut listed = Vec::new();
    for (name, path) in PART_NAMES.iter().zip(parts) {
        let mut file = File::open(path).map_err(io_error(format!("opening {}", path.display())))?;
        let (size, sha256) =
            hash(&mut file, io::sink()).map_err(io_error(format!("reading {}", path.display())))?;
        listed.push(Part {
            name: name.to_string(),
            size,
            sha256,
        });
    }
    let manifest = Manifest {
        format: FORMAT,
        version,
        arch,
        parts: listed,
    };
    let manifest_bytes = manifest.to_bytes();
    let signature = sign::sign(key, &manifest_bytes).to_json();
    let signed = Signed {
        manifest: manifest_bytes,
        signature,
    };
    assemble(out, &signed, parts)?;
    Ok(manifest)
}

/// Writes a bundle from a manifest signed before and the files of [`PART_NAMES`], in that
/// order: how a master offers the release it runs, from what its system slot keeps. Checks
/// nothing; whoever takes the bundle checks it in full ([`open`]), as any other.
pub fn assemble(out: impl Write, signed: &Signed, parts: &[PathBuf; 4]) -> Result<(), BundleError> {
    let mut archive = tar::Builder::new(out);
    append(
        &mut archive,
        MANIFEST,
        signed.manifest.len() as u64,
        &signed.manifest[..],
    )?;
    append(
        &mut archive,
        SIGNATURE,
        signed.signature.len() as u64,
        &signed.signature[..],
    )?;
    for (name, path) in PART_NAMES.iter().zip(parts) {
        let file = File::open(path).map_err(io_error(format!("opening {}", path.display())))?;
        let size = file
            .metadata()
            .map_err(io_error(format!("reading {}", path.display())))?
            .len();
        // `take`: a file that grows while it is read cannot overrun its tar entry.
        append(&mut archive, name, size, file.take(size))?;
    }
    archive
        .into_inner()
        .and_then(|mut w| w.flush())
        .map_err(io_error("finishing the bundle"))?;
    Ok(())
}

/// Reproducible entries: fixed mode, owner and time.
fn append<W: Write>(
    archive: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    data: impl Read,
) -> Result<(), BundleError> {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    archive
        .append_data(&mut header, name, data)
        .map_err(io_error(format!("writing {name} into the bundle")))
}

/// Copies `from` into `to`, returning the byte count and the SHA-256 in hex.
fn hash(from: &mut impl Read, mut to: impl Write) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
    Ok((total, hex::encode(hasher.finalize())))
}

/// The manifest of a bundle, its signature checked, without reading the parts: for listing
/// bundles that were checked in full when they were stored.
pub fn read_header(reader: impl Read, keyring: &Keyring) -> Result<Verified, BundleError> {
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive.entries().map_err(io_error("reading the bundle"))?;
    verified_header(&mut entries, keyring)
}

/// Reads the manifest and its signature, the first two entries, and checks the signature.
/// Nothing in the manifest is believed before it checks out.
fn verified_header<R: Read>(
    entries: &mut tar::Entries<'_, R>,
    keyring: &Keyring,
) -> Result<Verified, BundleError> {
    let manifest_bytes = read_small(next(entries, MANIFEST)?, MANIFEST, MAX_MANIFEST_BYTES)?;
    let signature_bytes = read_small(next(entries, SIGNATURE)?, SIGNATURE, MAX_SIGNATURE_BYTES)?;
    let signature = Signature::from_json(&signature_bytes)?;
    let key = sign::verify(keyring, &manifest_bytes, &signature)?.id();
    let manifest = Manifest::parse(&manifest_bytes)?;
    Ok(Verified {
        manifest,
        key,
        signed: Signed {
            manifest: manifest_bytes,
            signature: signature_bytes,
        },
    })
}

/// Checks a bundle read from `reader`: the signature against `keyring`, then `accept` on the
/// manifest (the node's rules), then every part's size and hash. With `dest`, each part is
/// written there under its name (synced); without, the parts are only checked.
pub fn open(
    reader: impl Read,
    keyring: &Keyring,
    accept: impl FnOnce(&Manifest) -> Result<(), PolicyError>,
    dest: Option<&Path>,
) -> Result<Verified, BundleError> {
    open_into(reader, keyring, accept, |name| dest.map(|d| d.join(name)))
}

/// [`open`] for a node that needs one part only (a host installed with the curl line takes
/// `nodeos`): every part is checked, and only `part` is written, to the new file `to`.
pub fn open_part(
    reader: impl Read,
    keyring: &Keyring,
    accept: impl FnOnce(&Manifest) -> Result<(), PolicyError>,
    part: &str,
    to: &Path,
) -> Result<Verified, BundleError> {
    open_into(reader, keyring, accept, |name| {
        (name == part).then(|| to.to_owned())
    })
}

/// Checks the bundle and writes each part `target` names a file for; on any failure the
/// files written are removed.
fn open_into(
    reader: impl Read,
    keyring: &Keyring,
    accept: impl FnOnce(&Manifest) -> Result<(), PolicyError>,
    target: impl Fn(&str) -> Option<PathBuf>,
) -> Result<Verified, BundleError> {
    let mut written = Vec::new();
    let result = open_inner(reader, keyring, accept, &target, &mut written);
    if result.is_err() {
        for path in written {
            let _ = fs::remove_file(path);
        }
    }
    result
}

fn open_inner(
    reader: impl Read,
    keyring: &Keyring,
    accept: impl FnOnce(&Manifest) -> Result<(), PolicyError>,
    target: &dyn Fn(&str) -> Option<PathBuf>,
    written: &mut Vec<PathBuf>,
) -> Result<Verified, BundleError> {
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive.entries().map_err(io_error("reading the bundle"))?;
    let verified = verified_header(&mut entries, keyring)?;
    accept(&verified.manifest)?;
    let manifest = &verified.manifest;
    for part in &manifest.parts {
        let mut entry = next(&mut entries, &part.name)?;
        let size = entry.header().size().unwrap_or(u64::MAX);
        if size != part.size {
            return Err(BundleError::PartSize {
                name: part.name.clone(),
                expected: part.size,
                found: size,
            });
        }
        let sha256 = match target(&part.name) {
            Some(path) => {
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(io_error(format!("creating {}", path.display())))?;
                written.push(path.clone());
                let (_, sha256) = hash(&mut entry, &mut file)
                    .map_err(io_error(format!("writing {}", path.display())))?;
                file.sync_all()
                    .map_err(io_error(format!("syncing {}", path.display())))?;
                sha256
            }
            None => {
                hash(&mut entry, io::sink())
                    .map_err(io_error(format!("reading part {}", part.name)))?
                    .1
            }
        };
        if sha256 != part.sha256 {
            return Err(BundleError::PartHash {
                name: part.name.clone(),
            });
        }
    }
    if let Some(extra) = entries.next() {
        let name = extra
            .ok()
            .and_then(|e| e.path().ok().map(|p| p.to_string_lossy().into_owned()))
            .unwrap_or_default();
        return Err(BundleError::Form(format!(
            "unexpected {name:?} after the last part"
        )));
    }
    Ok(verified)
}

/// The next entry of the archive, which must be the regular file `expected`.
fn next<'a, R: Read>(
    entries: &mut tar::Entries<'a, R>,
    expected: &str,
) -> Result<tar::Entry<'a, R>, BundleError> {
    let entry = entries
        .next()
        .ok_or_else(|| BundleError::Form(format!("it ends before {expected}")))?
        .map_err(io_error(format!("reading the bundle's {expected}")))?;
    let name = entry
        .path()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name != expected || entry.header().entry_type() != tar::EntryType::Regular {
        return Err(BundleError::Form(format!(
            "expected the file {expected}, found {name:?}"
        )));
    }
    Ok(entry)
}

fn read_small(entry: impl Read, name: &str, limit: u64) -> Result<Vec<u8>, BundleError> {
    let mut bytes = Vec::new();
    entry
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error(format!("reading {name}")))?;
    if bytes.len() as u64 > limit {
        return Err(BundleError::Form(format!(
            "{name} is larger than {limit} bytes"
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{self, Intent};

    struct Fixture {
        dir: tempfile::TempDir,
        key: SecretKey,
        parts: [PathBuf; 4],
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let parts = PART_NAMES.map(|n| {
            let path = dir.path().join(format!("src-{n}"));
            fs::write(&path, format!("the {n} of release 2").repeat(1000)).unwrap();
            path
        });
        Fixture {
            dir,
            key: SecretKey::generate().unwrap(),
            parts,
        }
    }

    fn bundle(f: &Fixture, version: &str, arch: Arch) -> Vec<u8> {
        let mut out = Vec::new();
        write(
            &mut out,
            &f.key,
            Version::parse(version).unwrap(),
            arch,
            &f.parts,
        )
        .unwrap();
        out
    }

    fn upgrade_from(running: &str) -> impl FnOnce(&Manifest) -> Result<(), PolicyError> {
        let running = Version::parse(running).unwrap();
        move |m: &Manifest| policy::check(m, Some(Arch::X86_64), &running, Intent::Upgrade)
    }

    fn staging(f: &Fixture) -> PathBuf {
        let dir = f.dir.path().join("staging");
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn left_in(dir: &Path) -> usize {
        fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn a_good_bundle_unpacks_into_the_staging_directory() {
        let f = fixture();
        let bytes = bundle(&f, "2.0.0", Arch::X86_64);
        let ring = Keyring::new(vec![f.key.public()]);
        let dest = staging(&f);
        let verified = open(&bytes[..], &ring, upgrade_from("1.0.0"), Some(&dest)).unwrap();
        assert_eq!(verified.manifest.version, Version::new(2, 0, 0));
        assert_eq!(verified.key, f.key.public().id());
        let header = read_header(&bytes[..], &ring).unwrap();
        assert_eq!(header.manifest, verified.manifest);
        for (name, src) in PART_NAMES.iter().zip(&f.parts) {
            assert_eq!(fs::read(dest.join(name)).unwrap(), fs::read(src).unwrap());
        }
        // The same bytes give the same bundle: builds are reproducible.
        assert_eq!(bundle(&f, "2.0.0", Arch::X86_64), bytes);
    }

    /// What a slot keeps (the signed manifest and the parts) gives back the very bundle,
    /// and a part changed since is caught by whoever opens the reassembled one.
    #[test]
    fn a_bundle_assembled_from_what_a_slot_keeps_is_the_same_bundle() {
        let f = fixture();
        let bytes = bundle(&f, "2.0.0", Arch::X86_64);
        let ring = Keyring::new(vec![f.key.public()]);
        let dest = staging(&f);
        let verified = open(&bytes[..], &ring, |_| Ok(()), Some(&dest)).unwrap();
        let kept = PART_NAMES.map(|n| dest.join(n));
        let mut again = Vec::new();
        assemble(&mut again, &verified.signed, &kept).unwrap();
        assert_eq!(again, bytes);

        fs::write(&kept[1], "an initramfs changed on the boot partition").unwrap();
        let mut changed = Vec::new();
        assemble(&mut changed, &verified.signed, &kept).unwrap();
        let err = open(&changed[..], &ring, |_| Ok(()), None).unwrap_err();
        assert!(
            matches!(err, BundleError::PartSize { ref name, .. } if name == "initramfs.img"),
            "{err}"
        );
    }

    /// Flips one byte inside the named part's data.
    fn tamper(bytes: &mut [u8], marker: &[u8]) {
        let at = bytes
            .windows(marker.len())
            .position(|w| w == marker)
            .unwrap();
        bytes[at] ^= 0x20;
    }

    #[test]
    fn an_attacker_who_changes_a_part_is_caught_and_nothing_is_left() {
        let f = fixture();
        let mut bytes = bundle(&f, "2.0.0", Arch::X86_64);
        tamper(&mut bytes, b"the initramfs.img of release 2");
        let ring = Keyring::new(vec![f.key.public()]);
        let dest = staging(&f);
        let err = open(&bytes[..], &ring, upgrade_from("1.0.0"), Some(&dest)).unwrap_err();
        assert!(
            matches!(err, BundleError::PartHash { ref name } if name == "initramfs.img"),
            "{err}"
        );
        assert_eq!(left_in(&dest), 0, "a refused bundle leaves nothing");
    }

    #[test]
    fn an_attacker_who_edits_the_manifest_is_caught_before_any_part_is_written() {
        let f = fixture();
        let mut bytes = bundle(&f, "2.0.0", Arch::X86_64);
        // Same length: claim another version.
        let at = bytes.windows(9).position(|w| w == b"\"2.0.0\",\n").unwrap();
        bytes[at + 1] = b'9';
        let ring = Keyring::new(vec![f.key.public()]);
        let dest = staging(&f);
        let err = open(&bytes[..], &ring, upgrade_from("1.0.0"), Some(&dest)).unwrap_err();
        assert!(
            matches!(err, BundleError::Signature(SignError::Mismatch { .. })),
            "{err}"
        );
        assert_eq!(left_in(&dest), 0);
    }

    #[test]
    fn a_bundle_signed_with_another_key_is_refused() {
        let f = fixture();
        let bytes = bundle(&f, "2.0.0", Arch::X86_64);
        let someone_else = SecretKey::generate().unwrap();
        let ring = Keyring::new(vec![someone_else.public()]);
        let dest = staging(&f);
        let err = open(&bytes[..], &ring, upgrade_from("1.0.0"), Some(&dest)).unwrap_err();
        assert!(
            matches!(err, BundleError::Signature(SignError::UnknownKey { .. })),
            "{err}"
        );
        assert_eq!(left_in(&dest), 0);
    }

    /// The entries of `bundle` that `keep` names, in order, then `extra`: an attacker's
    /// re-packed archive.
    fn rebuild(
        bundle: &[u8],
        keep: impl Fn(&str) -> bool,
        extra: Option<(&str, &[u8])>,
    ) -> Vec<u8> {
        let mut archive = tar::Builder::new(Vec::new());
        let mut original = tar::Archive::new(bundle);
        for entry in original.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            if !keep(&name) {
                continue;
            }
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            append(&mut archive, &name, data.len() as u64, &data[..]).unwrap();
        }
        if let Some((name, data)) = extra {
            append(&mut archive, name, data.len() as u64, data).unwrap();
        }
        archive.into_inner().unwrap()
    }

    #[test]
    fn an_unsigned_bundle_is_refused() {
        let f = fixture();
        let signed = bundle(&f, "2.0.0", Arch::X86_64);
        // The attacker's archive: the manifest, then straight to the parts.
        let bytes = rebuild(&signed, |name| name != SIGNATURE, None);
        let ring = Keyring::new(vec![f.key.public()]);
        let err = open(&bytes[..], &ring, upgrade_from("1.0.0"), None).unwrap_err();
        assert!(matches!(err, BundleError::Form(_)), "{err}");
        assert!(err.to_string().contains("manifest.sig"), "{err}");
    }

    #[test]
    fn another_architecture_and_a_downgrade_are_refused_before_any_part_is_written() {
        let f = fixture();
        let ring = Keyring::new(vec![f.key.public()]);
        let dest = staging(&f);
        let arm = bundle(&f, "2.0.0", Arch::Aarch64);
        let err = open(&arm[..], &ring, upgrade_from("1.0.0"), Some(&dest)).unwrap_err();
        assert!(
            matches!(err, BundleError::Policy(PolicyError::OtherArch { .. })),
            "{err}"
        );
        let old = bundle(&f, "0.9.0", Arch::X86_64);
        let err = open(&old[..], &ring, upgrade_from("1.0.0"), Some(&dest)).unwrap_err();
        assert!(
            matches!(err, BundleError::Policy(PolicyError::Older { .. })),
            "{err}"
        );
        assert_eq!(left_in(&dest), 0);
        // Forced, the older one is taken.
        let running = Version::new(1, 0, 0);
        open(
            &old[..],
            &ring,
            |m| policy::check(m, Some(Arch::X86_64), &running, Intent::Force),
            Some(&dest),
        )
        .unwrap();
        assert_eq!(left_in(&dest), PART_NAMES.len());
    }

    #[test]
    fn a_host_takes_only_its_binary_and_a_refusal_leaves_no_file() {
        let f = fixture();
        let ring = Keyring::new(vec![f.key.public()]);
        let dest = staging(&f);
        let to = dest.join("nodeos.new");
        let good = bundle(&f, "2.0.0", Arch::X86_64);
        open_part(&good[..], &ring, upgrade_from("1.0.0"), "nodeos", &to).unwrap();
        assert_eq!(fs::read(&to).unwrap(), fs::read(&f.parts[2]).unwrap());
        assert_eq!(
            left_in(&dest),
            1,
            "the kernel and initramfs are only checked"
        );
        fs::remove_file(&to).unwrap();
        let mut tampered = good.clone();
        // A part after the one written: the binary is removed again.
        tamper(&mut tampered, b"the nodeos of release 2");
        let err = open_part(&tampered[..], &ring, upgrade_from("1.0.0"), "nodeos", &to);
        assert!(matches!(err, Err(BundleError::PartHash { .. })), "{err:?}");
        let err = open_part(&good[..], &ring, upgrade_from("2.0.0"), "nodeos", &to);
        assert!(matches!(err, Err(BundleError::Policy(_))), "{err:?}");
        assert_eq!(left_in(&dest), 0);
    }

    #[test]
    fn a_truncated_bundle_or_one_with_a_trailing_file_is_refused() {
        let f = fixture();
        let bytes = bundle(&f, "2.0.0", Arch::X86_64);
        let ring = Keyring::new(vec![f.key.public()]);
        let dest = staging(&f);
        let cut = &bytes[..bytes.len() / 2];
        assert!(open(cut, &ring, upgrade_from("1.0.0"), Some(&dest)).is_err());
        assert_eq!(left_in(&dest), 0);
        // A smuggled extra file after the last part.
        let smuggled = rebuild(&bytes, |_| true, Some(("extra", b"x")));
        let err = open(&smuggled[..], &ring, upgrade_from("1.0.0"), Some(&dest)).unwrap_err();
        assert!(err.to_string().contains("after the last part"), "{err}");
        assert_eq!(left_in(&dest), 0);
    }
}
