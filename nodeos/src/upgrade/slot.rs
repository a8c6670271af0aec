//! Writes a checked release into the inactive system slot of an installed disk and makes
//! GRUB try it at the next boot.
//!
//! The ESP holds `/slot-a` and `/slot-b` (a kernel and an initramfs each) and GRUB's
//! environment block. The order is what makes a power cut at any moment harmless:
//! 1. refuse unless the running slot is the active one **and confirmed good**: otherwise
//!    the other slot is the last known good system, and it is never written;
//! 2. check and copy the bundle's parts into `/slot-X.new` (each part synced as it is
//!    written; a refused bundle leaves nothing);
//! 3. replace `/slot-X` with it, then flush the file system;
//! 4. only then point GRUB at it: `cloudos_slot=X cloudos_tries=3 cloudos_good=0`, in one
//!    in-place write of the block.
//!
//! Until step 4 the machine boots what it booted before. After it, GRUB counts the new
//! slot's boots and falls back to the old one when they run out (image/grub-disk.cfg).
//!
//! Each slot also holds the release's signed manifest (`manifest.json`, `manifest.sig`:
//! what a master offers its own release from) and a `version` file (the release's
//! version; the installer writes slot A's), so that a rollback ([`switch_to_other`]) can say what it goes back to. A rollback
//! is step 4 alone, on a slot that already holds a system: the slot it leaves is confirmed
//! good, so GRUB comes back to it if the other does not become healthy.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use cloudos_release::policy::{self, Intent};
use cloudos_release::{bundle, Arch, BundleError, Keyring, Version};

use super::grubenv::{EnvError, GrubEnv};
use crate::settings::Slot;

pub const GRUBENV: &str = "boot/grub/grubenv";
/// Boots GRUB gives an unconfirmed slot (the same number the installer sets).
pub const TRIES: &str = "3";
/// In each slot: the version of the system it holds.
pub const VERSION_FILE: &str = "version";

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("the boot environment: {0}")]
    Env(#[from] EnvError),
    #[error("this boot is slot {booted}, but GRUB's active slot is {active}: this system was picked by hand from the boot menu; boot the active slot first")]
    NotActive { booted: String, active: String },
    #[error("slot {booted} is not confirmed good yet, so slot {other} holds the last system that was: it is not overwritten (wait until this boot is confirmed, or roll back)")]
    Unconfirmed { booted: String, other: String },
    #[error("slot {0} holds no system to switch to (no kernel and initramfs there): this disk was installed and never upgraded")]
    Empty(String),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SlotError {
    let context = context.into();
    move |source| SlotError::Io { context, source }
}

pub fn other(slot: Slot) -> Slot {
    match slot {
        Slot::A => Slot::B,
        Slot::B => Slot::A,
    }
}

pub fn slot_dir(esp: &Path, slot: Slot) -> PathBuf {
    esp.join(format!("slot-{}", slot.as_str()))
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub slot: Slot,
    pub version: Version,
    /// Bytes of the parts written to the ESP.
    pub bytes: u64,
}

/// The environment block and whether `booted` may be written over its other slot.
pub fn read_env(esp: &Path) -> Result<GrubEnv, SlotError> {
    let path = esp.join(GRUBENV);
    let block = fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
    Ok(GrubEnv::parse(&block)?)
}

fn check_writable(env: &GrubEnv, booted: Slot) -> Result<(), SlotError> {
    let active = env.get("cloudos_slot").unwrap_or("a");
    if active != booted.as_str() {
        return Err(SlotError::NotActive {
            booted: booted.as_str().into(),
            active: active.into(),
        });
    }
    if env.get("cloudos_good") != Some("1") {
        return Err(SlotError::Unconfirmed {
            booted: booted.as_str().into(),
            other: other(booted).as_str().into(),
        });
    }
    Ok(())
}

/// Checks `bundle` (signature by a key of `keyring`, then this machine's architecture and
/// `intent` against `running`, then every part) and writes it into the slot `booted` is
/// not, then makes GRUB try that slot next. `esp` is where the ESP is mounted.
pub fn write_inactive(
    esp: &Path,
    booted: Slot,
    bundle: impl Read,
    keyring: &Keyring,
    running: &Version,
    intent: Intent,
) -> Result<Written, SlotError> {
    let mut env = read_env(esp)?;
    check_writable(&env, booted)?;
    let target = other(booted);
    let staging = esp.join(format!("slot-{}.new", target.as_str()));
    // A cut earlier attempt leaves a staging directory; it was never pointed at.
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io(format!("removing {}", staging.display())))?;
    }
    fs::create_dir(&staging).map_err(io(format!("creating {}", staging.display())))?;
    let verified = bundle::open(
        bundle,
        keyring,
        |m| policy::check(m, Arch::running(), running, intent),
        Some(&staging),
    );
    let verified = match verified {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e.into());
        }
    };
    // The appliance boots the initramfs's own nodeos; the loose binary is for hosts.
    let _ = fs::remove_file(staging.join("nodeos"));
    // The signed manifest stays with the system it describes, so that a master booted
    // from this slot can offer its release to its nodes (upgrade/offer.rs).
    write_synced(&staging.join(bundle::MANIFEST), &verified.signed.manifest)?;
    write_synced(&staging.join(bundle::SIGNATURE), &verified.signed.signature)?;
    write_synced(
        &staging.join(VERSION_FILE),
        verified.manifest.version.to_string().as_bytes(),
    )?;
    sync_dir(&staging)?;
    let slot = slot_dir(esp, target);
    if slot.exists() {
        fs::remove_dir_all(&slot).map_err(io(format!("removing {}", slot.display())))?;
    }
    fs::rename(&staging, &slot)
        .map_err(io(format!("moving the new system into {}", slot.display())))?;
    sync_dir(esp)?;
    sync_fs(esp)?;
    env.set("cloudos_slot", target.as_str())?;
    env.set("cloudos_tries", TRIES)?;
    env.set("cloudos_good", "0")?;
    write_env(esp, &env)?;
    let bytes = verified
        .manifest
        .parts
        .iter()
        .filter(|p| p.name != "nodeos")
        .map(|p| p.size)
        .sum();
    Ok(Written {
        slot: target,
        version: verified.manifest.version,
        bytes,
    })
}

/// What a rollback switched to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switched {
    pub slot: Slot,
    /// The version in that slot, when it says (slots written before versions were kept
    /// do not).
    pub version: Option<String>,
}

/// Makes GRUB try the slot `booted` is not at the next boot (`cloudos node rollback`), with
/// the same boot counting as an upgrade: the booted slot must be the active one and
/// confirmed good (it is the one GRUB comes back to), and the other must hold a system.
pub fn switch_to_other(esp: &Path, booted: Slot) -> Result<Switched, SlotError> {
    let mut env = read_env(esp)?;
    check_writable(&env, booted)?;
    let target = other(booted);
    let dir = slot_dir(esp, target);
    if !dir.join("vmlinuz").is_file() || !dir.join("initramfs.img").is_file() {
        return Err(SlotError::Empty(target.as_str().into()));
    }
    let version = slot_version(esp, target);
    env.set("cloudos_slot", target.as_str())?;
    env.set("cloudos_tries", TRIES)?;
    env.set("cloudos_good", "0")?;
    write_env(esp, &env)?;
    Ok(Switched {
        slot: target,
        version,
    })
}

/// The version the slot holds, if it says.
pub fn slot_version(esp: &Path, slot: Slot) -> Option<String> {
    let text = fs::read_to_string(slot_dir(esp, slot).join(VERSION_FILE)).ok()?;
    let text = text.trim();
    (!text.is_empty() && text.len() <= 128).then(|| text.to_owned())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), SlotError> {
    fs::File::create(path)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .map_err(io(format!("writing {}", path.display())))
}

/// Writes the block over the existing file, same length, and syncs it.
pub fn write_env(esp: &Path, env: &GrubEnv) -> Result<(), SlotError> {
    let path = esp.join(GRUBENV);
    let block = env.render()?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(io(format!("opening {}", path.display())))?;
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(&block))
        .and_then(|_| file.sync_all())
        .map_err(io(format!("writing {}", path.display())))
}

fn sync_dir(dir: &Path) -> Result<(), SlotError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing {}", dir.display())))
}

/// Flushes the whole file system `path` is on (FAT keeps its allocation table apart from
/// the files; a directory fsync alone does not promise it).
fn sync_fs(path: &Path) -> Result<(), SlotError> {
    use std::os::fd::AsRawFd;
    let dir = fs::File::open(path).map_err(io(format!("opening {}", path.display())))?;
    // SAFETY: syncfs takes a valid open descriptor and touches no memory of ours.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(SlotError::Io {
            context: format!("flushing {}", path.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_release::{SecretKey, PART_NAMES};

    struct Esp {
        dir: tempfile::TempDir,
        key: SecretKey,
    }

    impl Esp {
        /// An installed disk's ESP booted from slot a, confirmed, with an old slot b.
        fn new(env: &str) -> Esp {
            let dir = tempfile::tempdir().unwrap();
            let esp = dir.path();
            fs::create_dir_all(esp.join("boot/grub")).unwrap();
            let mut block = format!("# GRUB Environment Block\n{env}").into_bytes();
            block.resize(1024, b'#');
            fs::write(esp.join(GRUBENV), block).unwrap();
            for slot in ["slot-a", "slot-b"] {
                fs::create_dir_all(esp.join(slot)).unwrap();
                fs::write(esp.join(slot).join("vmlinuz"), format!("{slot} kernel")).unwrap();
                fs::write(
                    esp.join(slot).join("initramfs.img"),
                    format!("{slot} initramfs"),
                )
                .unwrap();
            }
            Esp {
                dir,
                key: SecretKey::generate().unwrap(),
            }
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }

        fn bundle(&self, key: &SecretKey, version: &str) -> Vec<u8> {
            let src = self.dir.path().join("src");
            fs::create_dir_all(&src).unwrap();
            let parts = PART_NAMES.map(|n| {
                let p = src.join(n);
                fs::write(&p, format!("{n} {version}")).unwrap();
                p
            });
            let mut out = Vec::new();
            let arch = Arch::running().unwrap();
            bundle::write(
                &mut out,
                key,
                Version::parse(version).unwrap(),
                arch,
                &parts,
            )
            .unwrap();
            out
        }

        fn keyring(&self) -> Keyring {
            Keyring::new(vec![self.key.public()])
        }

        /// [`write_inactive`] on this ESP, trusting its key.
        fn write(
            &self,
            booted: Slot,
            bundle: &[u8],
            running: &Version,
            intent: Intent,
        ) -> Result<Written, SlotError> {
            write_inactive(
                self.path(),
                booted,
                bundle,
                &self.keyring(),
                running,
                intent,
            )
        }

        fn env(&self) -> GrubEnv {
            read_env(self.path()).unwrap()
        }

        fn slot_b_kernel(&self) -> String {
            fs::read_to_string(self.path().join("slot-b/vmlinuz")).unwrap()
        }
    }

    const CONFIRMED_A: &str = "cloudos_slot=a\ncloudos_tries=3\ncloudos_good=1\n";

    #[test]
    fn a_release_goes_into_the_other_slot_and_grub_is_told_to_try_it() {
        let esp = Esp::new(CONFIRMED_A);
        let bundle = esp.bundle(&esp.key, "0.2.0");
        let running = Version::new(0, 1, 0);
        let written = esp
            .write(Slot::A, &bundle, &running, Intent::Upgrade)
            .unwrap();
        assert_eq!(written.slot, Slot::B);
        assert_eq!(written.version, Version::new(0, 2, 0));
        assert_eq!(esp.slot_b_kernel(), "vmlinuz 0.2.0");
        assert!(
            !esp.path().join("slot-b/nodeos").exists(),
            "the host binary stays out of the slot"
        );
        assert!(!esp.path().join("slot-b.new").exists());
        assert_eq!(
            fs::read_to_string(esp.path().join("slot-a/vmlinuz")).unwrap(),
            "slot-a kernel"
        );
        let env = esp.env();
        assert_eq!(
            (
                env.get("cloudos_slot"),
                env.get("cloudos_tries"),
                env.get("cloudos_good")
            ),
            (Some("b"), Some("3"), Some("0"))
        );
        assert_eq!(fs::metadata(esp.path().join(GRUBENV)).unwrap().len(), 1024);
        assert_eq!(slot_version(esp.path(), Slot::B).as_deref(), Some("0.2.0"));
        // The signed manifest, byte for byte: what the master offers its release from.
        let signed = bundle::read_header(&bundle[..], &esp.keyring())
            .unwrap()
            .signed;
        assert_eq!(
            fs::read(esp.path().join("slot-b/manifest.json")).unwrap(),
            signed.manifest
        );
        assert_eq!(
            fs::read(esp.path().join("slot-b/manifest.sig")).unwrap(),
            signed.signature
        );
    }

    #[test]
    fn a_rollback_points_grub_at_the_other_slot_on_trial_and_writes_no_system() {
        let esp = Esp::new(CONFIRMED_A);
        fs::write(esp.path().join("slot-b/version"), "0.1.5\n").unwrap();
        let switched = switch_to_other(esp.path(), Slot::A).unwrap();
        assert_eq!(switched.slot, Slot::B);
        assert_eq!(switched.version.as_deref(), Some("0.1.5"));
        let env = esp.env();
        assert_eq!(
            (
                env.get("cloudos_slot"),
                env.get("cloudos_tries"),
                env.get("cloudos_good")
            ),
            (Some("b"), Some("3"), Some("0"))
        );
        assert_eq!(esp.slot_b_kernel(), "slot-b kernel");
    }

    #[test]
    fn a_rollback_is_refused_from_an_unconfirmed_boot_or_to_an_empty_slot() {
        // On trial: the other slot is the last good system and stays GRUB's fall-back.
        let esp = Esp::new("cloudos_slot=b\ncloudos_tries=2\ncloudos_good=0\n");
        let err = switch_to_other(esp.path(), Slot::B).unwrap_err();
        assert!(matches!(err, SlotError::Unconfirmed { .. }), "{err}");
        assert_eq!(esp.env().get("cloudos_slot"), Some("b"));

        let esp = Esp::new(CONFIRMED_A);
        fs::remove_file(esp.path().join("slot-b/vmlinuz")).unwrap();
        let err = switch_to_other(esp.path(), Slot::A).unwrap_err();
        assert!(matches!(err, SlotError::Empty(_)), "{err}");
        assert!(err.to_string().contains("holds no system"), "{err}");
        assert_eq!(esp.env().get("cloudos_slot"), Some("a"));
    }

    #[test]
    fn the_last_good_slot_is_never_written_while_this_boot_is_unconfirmed() {
        // Slot b was just upgraded and is on trial: slot a is all there is to go back to.
        let esp = Esp::new("cloudos_slot=b\ncloudos_tries=2\ncloudos_good=0\n");
        let bundle = esp.bundle(&esp.key, "0.3.0");
        let err = esp
            .write(Slot::B, &bundle, &Version::new(0, 2, 0), Intent::Force)
            .unwrap_err();
        assert!(matches!(err, SlotError::Unconfirmed { .. }), "{err}");
        assert_eq!(
            fs::read_to_string(esp.path().join("slot-a/vmlinuz")).unwrap(),
            "slot-a kernel"
        );
        assert_eq!(esp.env().get("cloudos_slot"), Some("b"));
    }

    #[test]
    fn a_boot_picked_by_hand_from_the_menu_writes_nothing() {
        let esp = Esp::new(CONFIRMED_A);
        let bundle = esp.bundle(&esp.key, "0.2.0");
        let err = esp
            .write(Slot::B, &bundle, &Version::new(0, 1, 0), Intent::Upgrade)
            .unwrap_err();
        assert!(matches!(err, SlotError::NotActive { .. }), "{err}");
        assert_eq!(esp.slot_b_kernel(), "slot-b kernel");
    }

    #[test]
    fn refused_bundles_leave_the_slots_and_grub_as_they_were() {
        let esp = Esp::new(CONFIRMED_A);
        let before = fs::read(esp.path().join(GRUBENV)).unwrap();
        let running = Version::new(0, 2, 0);
        let stranger = SecretKey::generate().unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("another key", esp.bundle(&stranger, "0.3.0")),
            ("a downgrade", esp.bundle(&esp.key, "0.1.0")),
            ("the same version", esp.bundle(&esp.key, "0.2.0")),
            (
                "a truncated file",
                esp.bundle(&esp.key, "0.3.0")[..1500].to_vec(),
            ),
        ];
        for (what, bundle) in cases {
            let err = esp.write(Slot::A, &bundle, &running, Intent::Upgrade);
            assert!(err.is_err(), "{what} was taken");
            assert_eq!(esp.slot_b_kernel(), "slot-b kernel", "{what}");
            assert!(!esp.path().join("slot-b.new").exists(), "{what}");
            assert_eq!(
                fs::read(esp.path().join(GRUBENV)).unwrap(),
                before,
                "{what}"
            );
        }
    }

    #[test]
    fn a_staging_directory_left_by_a_power_cut_is_replaced() {
        let esp = Esp::new(CONFIRMED_A);
        fs::create_dir_all(esp.path().join("slot-b.new")).unwrap();
        fs::write(esp.path().join("slot-b.new/vmlinuz"), "half").unwrap();
        let bundle = esp.bundle(&esp.key, "0.2.0");
        esp.write(Slot::A, &bundle, &Version::new(0, 1, 0), Intent::Upgrade)
            .unwrap();
        assert_eq!(esp.slot_b_kernel(), "vmlinuz 0.2.0");
    }
}
