//! The etcd pack: Debian's etcd with the glibc loader and the libc it runs on, a zstd'd
//! ustar that scripts/build.sh makes (docs/design.md decision 70).
//!
//! It lies beside the initramfs, never in it: in the booted system slot on the ESP, in the
//! live medium's `/boot`, on the Raspberry Pi's boot partition. A compute node's boot never
//! reads a byte of it. A master among several unpacks it into its data partition, once
//! per release (the unpacked tree is stamped with the pack's SHA-256), and runs etcd
//! through the loader: `<dir>/lib/ld-linux… --library-path <dir>/lib <dir>/etcd …`. The
//! appliance has no `/lib` of its own, so the loader is told where libc is.
//!
//! Where the release's signed manifest lies beside the pack (a slot, the medium), the pack
//! must be the one it lists: a damaged or stale pack is refused before anything runs.

use std::fs;
use std::io::BufReader;
use std::path::{Component, Path, PathBuf};

use cloudos_master::ha::member::EtcdProgram;
use cloudos_release::{bundle, ETCD_PACK};

use crate::diskinstall::medium;
use crate::init::bootslot;
use crate::settings::Slot;

/// The Raspberry Pi image's boot partition (image/rpi.sh): the pack is at its root.
const PI_LABEL: &str = "CLOUDOS-PI";
/// Under the data directory: the unpacked pack.
const UNPACKED_DIR: &str = "master/etcd/program";
/// In the unpacked tree: the SHA-256 of the pack it came from.
const STAMP: &str = ".pack-sha256";
/// More than the pack holds by far (etcd is 26 MB): a pack cannot fill the data partition.
const MAX_UNPACKED_BYTES: u64 = 256 << 20;

#[cfg(target_arch = "aarch64")]
const LOADER: &str = "ld-linux-aarch64.so.1";
#[cfg(not(target_arch = "aarch64"))]
const LOADER: &str = "ld-linux-x86-64.so.2";

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error(
        "no etcd pack ({ETCD_PACK}) was found: this master booted neither a system slot, nor a \
         CloudOS medium, nor a Raspberry Pi card that holds one, and a master among several \
         runs etcd from it"
    )]
    NotFound,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the release manifest beside {path} does not check out: {source}")]
    Manifest {
        path: PathBuf,
        source: cloudos_release::BundleError,
    },
    #[error("{path} is not the etcd pack its release signed (SHA-256 {found}, the manifest says {expected}): the boot partition was damaged or changed")]
    Mismatch {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("the etcd pack {path} is not valid: {reason}")]
    Form { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PackError + '_ {
    move |source| PackError::Io {
        path: path.to_owned(),
        source,
    }
}

/// How to run etcd on this machine: the pack of the system it booted, unpacked under
/// `data_dir` if it was not already. Mounts what it has to for the time it takes.
pub fn program(data_dir: &Path, booted: Option<Slot>) -> Result<EtcdProgram, PackError> {
    let dest = data_dir.join(UNPACKED_DIR);
    if let Some(slot) = booted {
        let esp = bootslot::mount_esp().map_err(|e| PackError::Io {
            path: PathBuf::from(bootslot::ESP_LABEL),
            source: std::io::Error::other(e.to_string()),
        })?;
        let dir = crate::upgrade::slot::slot_dir(esp.path(), slot);
        return unpack_checked(&dir, &dest);
    }
    if let Some(device) = crate::blockdev::labels::find_vfat_labelled(PI_LABEL) {
        let boot = medium::mount_ro(&device, crate::blockdev::labels::FsKind::Vfat, "pi-boot")
            .map_err(|e| PackError::Io {
                path: PathBuf::from(&device),
                source: std::io::Error::other(format!("{e:#}")),
            })?;
        return unpack_checked(&boot.dir, &dest);
    }
    // A live boot: the medium's driver may load after the master started.
    if medium::appears() {
        let live = medium::mount_medium().map_err(|e| PackError::Io {
            path: PathBuf::from(medium::MEDIUM_LABEL),
            source: std::io::Error::other(format!("{e:#}")),
        })?;
        return unpack_checked(&live.dir.join(medium::SYSTEM_DIR), &dest);
    }
    Err(PackError::NotFound)
}

/// Unpacks `<system>/etcd.tar.zst` into `dest` unless `dest` holds it already, after
/// checking it against the signed manifest when `system` has one.
pub fn unpack_checked(system: &Path, dest: &Path) -> Result<EtcdProgram, PackError> {
    let pack = system.join(ETCD_PACK);
    if !pack.is_file() {
        return Err(PackError::NotFound);
    }
    let digest = sha256_of(&pack)?;
    if let Some(expected) = signed_digest(system)? {
        if expected != digest {
            return Err(PackError::Mismatch {
                path: pack,
                found: digest,
                expected,
            });
        }
    }
    let stamp = fs::read_to_string(dest.join(STAMP)).unwrap_or_default();
    if stamp.trim() != digest || !dest.join("etcd").is_file() {
        log::info!("unpacking {} into {}", pack.display(), dest.display());
        unpack(&pack, dest, &digest)?;
    }
    Ok(program_in(dest))
}

/// How etcd in the unpacked tree `dir` is started.
pub fn program_in(dir: &Path) -> EtcdProgram {
    let lib = dir.join("lib");
    EtcdProgram {
        program: lib.join(LOADER),
        leading_args: vec![
            "--library-path".into(),
            lib.into_os_string(),
            dir.join("etcd").into_os_string(),
        ],
    }
}

/// The pack's SHA-256 in the release manifest beside it, its signature checked against the
/// keys this build trusts; `None` where no manifest lies there (the Pi's card).
fn signed_digest(system: &Path) -> Result<Option<String>, PackError> {
    let manifest_path = system.join(bundle::MANIFEST);
    let signature_path = system.join(bundle::SIGNATURE);
    if !manifest_path.is_file() {
        return Ok(None);
    }
    let signed = bundle::Signed {
        manifest: fs::read(&manifest_path).map_err(io(&manifest_path))?,
        signature: fs::read(&signature_path).map_err(io(&signature_path))?,
    };
    let manifest = signed
        .verify(&cloudos_release::trusted())
        .map_err(|source| PackError::Manifest {
            path: system.join(ETCD_PACK),
            source,
        })?;
    Ok(manifest.part(ETCD_PACK).map(|p| p.sha256.clone()))
}

/// The same hashing the master's downloads use (one place for "SHA-256 of a file").
fn sha256_of(path: &Path) -> Result<String, PackError> {
    cloudos_master::downloads::sha256_file(path).map_err(io(path))
}

/// Unpacks into `dest.new`, then puts it in `dest`'s place: a power cut leaves either the
/// old tree or the new one, and the stamp is written last.
fn unpack(pack: &Path, dest: &Path, digest: &str) -> Result<(), PackError> {
    let form = |reason: String| PackError::Form {
        path: pack.to_owned(),
        reason,
    };
    let staging = dest.with_extension("new");
    let _ = fs::remove_dir_all(&staging);
    cloudos_cluster::files::create_private_dir(&staging).map_err(io(&staging))?;
    let file = BufReader::new(fs::File::open(pack).map_err(io(pack))?);
    let decoder = ruzstd::decoding::StreamingDecoder::new(file)
        .map_err(|e| form(format!("not zstd: {e}")))?;
    let mut archive = tar::Archive::new(decoder);
    let mut total = 0u64;
    for entry in archive.entries().map_err(|e| form(e.to_string()))? {
        let mut entry = entry.map_err(|e| form(e.to_string()))?;
        let path = entry.path().map_err(|e| form(e.to_string()))?.into_owned();
        // Only plain relative names: nothing lands outside the tree.
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(form(format!("entry {} leaves the tree", path.display())));
        }
        let kind = entry.header().entry_type();
        let target = staging.join(&path);
        if kind.is_dir() {
            fs::create_dir_all(&target).map_err(io(&target))?;
            continue;
        }
        if !kind.is_file() {
            return Err(form(format!("entry {} is not a file", path.display())));
        }
        total += entry.size();
        if total > MAX_UNPACKED_BYTES {
            return Err(form(format!(
                "more than {MAX_UNPACKED_BYTES} bytes unpacked"
            )));
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o755;
        let mut out = fs::File::create(&target).map_err(io(&target))?;
        std::io::copy(&mut entry, &mut out)
            .map_err(|e| form(format!("{}: {e}", path.display())))?;
        use std::os::unix::fs::PermissionsExt;
        out.set_permissions(fs::Permissions::from_mode(mode))
            .and_then(|()| out.sync_all())
            .map_err(io(&target))?;
    }
    for needed in ["etcd", &format!("lib/{LOADER}"), "lib/libc.so.6"] {
        if !staging.join(needed).is_file() {
            return Err(form(format!("it holds no {needed}")));
        }
    }
    let stamp = staging.join(STAMP);
    fs::write(&stamp, format!("{digest}\n")).map_err(io(&stamp))?;
    let _ = fs::remove_dir_all(dest);
    fs::rename(&staging, dest).map_err(io(dest))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pack as scripts/build.sh makes it, with stand-in files.
    fn pack(dir: &Path, entries: &[(&str, &[u8])]) -> PathBuf {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o755);
            header.set_entry_type(tar::EntryType::Regular);
            // set_path refuses `..`; an attacker's archive writes the name itself.
            let raw = &mut header.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            header.set_cksum();
            tar.append(&header, *data).unwrap();
        }
        let bytes = tar.into_inner().unwrap();
        let packed = ruzstd::encoding::compress_to_vec(
            &bytes[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let path = dir.join(ETCD_PACK);
        fs::write(&path, packed).unwrap();
        path
    }

    fn good(dir: &Path) -> PathBuf {
        pack(
            dir,
            &[
                ("etcd", b"etcd"),
                (&format!("lib/{LOADER}"), b"loader"),
                ("lib/libc.so.6", b"libc"),
                ("copyright/etcd-server", b"Apache-2.0"),
            ],
        )
    }

    #[test]
    fn a_pack_is_unpacked_once_and_run_through_its_loader() {
        let system = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        good(system.path());
        let dest = data.path().join(UNPACKED_DIR);
        let program = unpack_checked(system.path(), &dest).unwrap();
        assert_eq!(program.program, dest.join("lib").join(LOADER));
        assert_eq!(
            program.leading_args,
            vec![
                std::ffi::OsString::from("--library-path"),
                dest.join("lib").into_os_string(),
                dest.join("etcd").into_os_string(),
            ]
        );
        assert_eq!(fs::read(dest.join("etcd")).unwrap(), b"etcd");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dest.join("etcd"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        // Unchanged: not unpacked again (a file changed in the tree stays as it is).
        fs::write(dest.join("copyright/etcd-server"), b"touched").unwrap();
        unpack_checked(system.path(), &dest).unwrap();
        assert_eq!(
            fs::read(dest.join("copyright/etcd-server")).unwrap(),
            b"touched"
        );
        // Another release's pack replaces the tree.
        pack(
            system.path(),
            &[
                ("etcd", b"etcd 2"),
                (&format!("lib/{LOADER}"), b"loader"),
                ("lib/libc.so.6", b"libc"),
            ],
        );
        unpack_checked(system.path(), &dest).unwrap();
        assert_eq!(fs::read(dest.join("etcd")).unwrap(), b"etcd 2");
        assert!(!dest.join("copyright").exists(), "the old tree is gone");
    }

    #[test]
    fn a_pack_that_escapes_or_lacks_a_file_is_refused_and_leaves_the_old_tree() {
        let system = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let dest = data.path().join(UNPACKED_DIR);
        good(system.path());
        unpack_checked(system.path(), &dest).unwrap();
        pack(
            system.path(),
            &[("etcd", b"x"), ("../../escaped", b"attacker")],
        );
        let err = unpack_checked(system.path(), &dest).unwrap_err();
        assert!(err.to_string().contains("leaves the tree"), "{err}");
        assert!(!data.path().join("master/escaped").exists());
        assert!(!data.path().join("escaped").exists());
        pack(system.path(), &[("etcd", b"x")]);
        let err = unpack_checked(system.path(), &dest).unwrap_err();
        assert!(err.to_string().contains("holds no lib/"), "{err}");
        assert_eq!(
            fs::read(dest.join("etcd")).unwrap(),
            b"etcd",
            "old tree kept"
        );
        fs::write(system.path().join(ETCD_PACK), b"not zstd").unwrap();
        let err = unpack_checked(system.path(), &dest).unwrap_err();
        assert!(err.to_string().contains("not valid"), "{err}");
    }

    #[test]
    fn a_pack_that_is_not_the_signed_one_is_refused() {
        let system = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let dest = data.path().join(UNPACKED_DIR);
        // A release signed with the development key (which test builds trust) over a
        // good pack; then the pack is swapped.
        let key = cloudos_release::SecretKey::parse(include_str!(
            "../../../image/release-keys/dev.secret"
        ))
        .unwrap();
        let src = tempfile::tempdir().unwrap();
        let parts = cloudos_release::PART_NAMES.map(|n| {
            let p = src.path().join(n);
            fs::write(&p, n).unwrap();
            p
        });
        let real = good(src.path());
        assert_eq!(real, parts[3]);
        let mut out = Vec::new();
        bundle::write(
            &mut out,
            &key,
            cloudos_release::Version::new(9, 0, 0),
            cloudos_release::Arch::running().unwrap(),
            &parts,
        )
        .unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().into_owned();
            if name == Path::new(bundle::MANIFEST) || name == Path::new(bundle::SIGNATURE) {
                entry.unpack(system.path().join(name)).unwrap();
            }
        }
        fs::copy(&real, system.path().join(ETCD_PACK)).unwrap();
        unpack_checked(system.path(), &dest).unwrap();
        pack(
            system.path(),
            &[
                ("etcd", b"another etcd"),
                (&format!("lib/{LOADER}"), b"loader"),
                ("lib/libc.so.6", b"libc"),
            ],
        );
        let err = unpack_checked(system.path(), &dest).unwrap_err();
        assert!(matches!(err, PackError::Mismatch { .. }), "{err}");
        assert_eq!(fs::read(dest.join("etcd")).unwrap(), b"etcd");
    }
}
