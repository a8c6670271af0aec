//! Where the built artifacts are.
//!
//! `scripts/build.sh` writes them under `<workspace>/out/`. The tests never
//! build images themselves: a missing artifact is an error that says how to
//! make it, so a QEMU test fails loudly instead of passing vacuously.
//! `CLOUDOS_OUT_DIR` overrides the location (e.g. to test a CI artifact).

use std::fs;
use std::path::{Path, PathBuf};

use crate::arch::Arch;

/// Errors finding or preparing images. `Debug` prints as `Display` so an
/// `.unwrap()` says "run scripts/build.sh first" plainly.
#[derive(thiserror::Error)]
pub enum ImageError {
    /// `script` is what makes the artifact (`scripts/build.sh` for the CloudOS images).
    #[error("{what} not found at {path}: run {script} first")]
    Missing {
        what: String,
        path: PathBuf,
        script: &'static str,
    },
    #[error("several files match {pattern} in {dir}: {found:?}; remove stale ones")]
    Ambiguous {
        pattern: String,
        dir: PathBuf,
        found: Vec<PathBuf>,
    },
    #[error(
        "{path} ({image_len} bytes) cannot go on an SD card of {size} bytes: QEMU needs \
         a power of two at least as large as the image"
    )]
    SdCardSize {
        path: PathBuf,
        image_len: u64,
        size: u64,
    },
    #[error("{path} pins no {what}: scripts/build.sh would find none either")]
    NotPinned { what: String, path: PathBuf },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl std::fmt::Debug for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Makes the CloudOS images (kernel, initramfs, ISO, CLI).
const BUILD_SCRIPT: &str = "scripts/build.sh";

/// Makes the Debian guest's disk and initramfs (see [`debian_guest_disk`]).
const DEBIAN_GUEST_SCRIPT: &str = "scripts/debian-guest.sh";

/// Fetches and unpacks the pinned Debian inputs of `image/packages.lock`.
const FETCH_INPUTS_SCRIPT: &str = "scripts/fetch-inputs.sh";

/// Maps an I/O error to [`ImageError::Io`] naming what was done to which path.
pub(crate) fn io_error(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.to_path_buf();
    move |source| ImageError::Io {
        action,
        path,
        source,
    }
}

/// The cargo workspace root (this package lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("the tests package is inside the workspace")
        .to_path_buf()
}

/// The build output directory: `$CLOUDOS_OUT_DIR`, else `<root>/out`.
pub fn out_dir() -> PathBuf {
    match std::env::var_os("CLOUDOS_OUT_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join("out"),
    }
}

/// The cargo target directory, where QEMU logs go (`target/qemu-logs`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join("target"),
    }
}

fn existing(what: &str, path: PathBuf) -> Result<PathBuf, ImageError> {
    existing_from(BUILD_SCRIPT, what, path)
}

fn existing_from(script: &'static str, what: &str, path: PathBuf) -> Result<PathBuf, ImageError> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(ImageError::Missing {
            what: what.to_string(),
            path,
            script,
        })
    }
}

/// `out/<arch>/vmlinuz`: the kernel.
pub fn kernel(arch: Arch) -> Result<PathBuf, ImageError> {
    existing("kernel", out_dir().join(arch.as_str()).join("vmlinuz"))
}

/// `out/<arch>/initramfs.img`: the CloudOS userland (nodeos as /init).
pub fn initramfs(arch: Arch) -> Result<PathBuf, ImageError> {
    existing(
        "initramfs",
        out_dir().join(arch.as_str()).join("initramfs.img"),
    )
}

/// `out/<arch>/floor-initramfs.img`: a busybox initramfs that prints
/// `floor: userland up` and powers off. It proves the kernel and the boot
/// plumbing work independently of nodeos.
pub fn floor_initramfs(arch: Arch) -> Result<PathBuf, ImageError> {
    existing(
        "floor initramfs",
        out_dir().join(arch.as_str()).join("floor-initramfs.img"),
    )
}

/// `out/<arch>/cloudos`: the admin CLI, static, as an admin would download it.
pub fn cloudos_cli(arch: Arch) -> Result<PathBuf, ImageError> {
    existing("cloudos CLI", out_dir().join(arch.as_str()).join("cloudos"))
}

/// `out/<arch>/downloads`: the binaries and `SHA256SUMS` a master serves to `install.sh`.
pub fn downloads(arch: Arch) -> Result<PathBuf, ImageError> {
    let dir = out_dir().join(arch.as_str()).join("downloads");
    existing("install.sh downloads", dir.join("SHA256SUMS"))?;
    Ok(dir)
}

/// `out/<arch>/debian-guest.img`: a raw ext4 root file system of a Debian 12
/// with systemd (see `scripts/debian-guest.sh`). Boot it through an overlay
/// ([`crate::debian`]), never directly: it is shared by every test.
pub fn debian_guest_disk(arch: Arch) -> Result<PathBuf, ImageError> {
    existing_from(
        DEBIAN_GUEST_SCRIPT,
        "Debian guest disk",
        out_dir().join(arch.as_str()).join("debian-guest.img"),
    )
}

/// `out/<arch>/debian-guest-initrd.img`: the busybox initramfs that mounts the
/// Debian guest's root (`/dev/vda`) and starts its systemd.
pub fn debian_guest_initrd(arch: Arch) -> Result<PathBuf, ImageError> {
    existing_from(
        DEBIAN_GUEST_SCRIPT,
        "Debian guest initramfs",
        out_dir()
            .join(arch.as_str())
            .join("debian-guest-initrd.img"),
    )
}

/// The lock of the pinned Debian inputs: `$CLOUDOS_LOCK`, else `image/packages.lock`,
/// as `scripts/fetch-inputs.sh` reads it.
pub fn packages_lock() -> PathBuf {
    match std::env::var_os("CLOUDOS_LOCK") {
        Some(lock) if !lock.is_empty() => PathBuf::from(lock),
        _ => workspace_root().join("image/packages.lock"),
    }
}

/// Where `scripts/fetch-inputs.sh` unpacked the pinned package `package` of Debian arch
/// `deb_arch` (`amd64`, `arm64`, `all`), under its cache. If it is not unpacked yet, the
/// script fetches the arch's inputs first, as `scripts/build.sh` does: the cache's layout
/// and the lock's checks stay the script's own.
pub fn pinned_package(package: &str, deb_arch: &str) -> Result<PathBuf, ImageError> {
    let script = workspace_root().join(FETCH_INPUTS_SCRIPT);
    let run = |args: &[&str]| -> Result<String, ImageError> {
        let output = std::process::Command::new(&script)
            .args(args)
            .output()
            .map_err(io_error("running", &script))?;
        if !output.status.success() {
            return Err(ImageError::Io {
                action: "running",
                path: PathBuf::from(format!("{FETCH_INPUTS_SCRIPT} {}", args.join(" "))),
                source: std::io::Error::other(
                    String::from_utf8_lossy(&output.stderr).trim().to_string(),
                ),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    let dir = PathBuf::from(run(&["--dir", package, deb_arch])?);
    // fetch-inputs.sh writes this marker last, once the package is wholly unpacked.
    let unpacked = |dir: &Path| dir.join(".cloudos-unpacked").is_file();
    if !unpacked(&dir) {
        run(&["--arch", deb_arch])?;
    }
    if unpacked(&dir) {
        Ok(dir)
    } else {
        Err(ImageError::Missing {
            what: format!("pinned package {package} ({deb_arch}), unpacked"),
            path: dir,
            script: FETCH_INPUTS_SCRIPT,
        })
    }
}

/// The kernel of the images: the pinned Debian `linux-image-*` package of the arch,
/// unpacked (with its `modules.dep`) by `scripts/fetch-inputs.sh`. `scripts/build.sh`
/// copies the same `vmlinuz` into `out/<arch>/` and the ISO, and the same modules into
/// the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageKernel {
    /// The release (`6.1.0-56-amd64`): the package's name after `linux-image-`.
    pub release: String,
    /// The unpacked package: `boot/vmlinuz-<release>`, `lib/modules/<release>/`.
    pub root: PathBuf,
}

impl ImageKernel {
    /// The kernel image, as QEMU's `-kernel` boots it.
    pub fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }
}

/// The image's kernel for `arch`, fetched and unpacked if the cache lacks it.
pub fn image_kernel(arch: Arch) -> Result<ImageKernel, ImageError> {
    let lock = packages_lock();
    let text = fs::read_to_string(&lock).map_err(io_error("reading", &lock))?;
    let deb_arch = arch.debian_arch();
    let package = kernel_package(&text, deb_arch).ok_or_else(|| ImageError::NotPinned {
        what: format!("linux-image-* for {deb_arch}"),
        path: lock.clone(),
    })?;
    let kernel = ImageKernel {
        release: package.trim_start_matches("linux-image-").to_string(),
        root: pinned_package(package, deb_arch)?,
    };
    existing_from(FETCH_INPUTS_SCRIPT, "kernel image", kernel.vmlinuz())?;
    Ok(kernel)
}

/// The first `linux-image-*` entry of Debian arch `deb_arch` in the lock's text, as
/// `scripts/build.sh` picks it (`name arch version sha256 [component]` a line).
fn kernel_package<'a>(lock: &'a str, deb_arch: &str) -> Option<&'a str> {
    lock.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .find_map(|l| {
            let mut fields = l.split_whitespace();
            match (fields.next(), fields.next()) {
                (Some(name), Some(arch))
                    if name.starts_with("linux-image-") && arch == deb_arch =>
                {
                    Some(name)
                }
                _ => None,
            }
        })
}

/// The executable of test target `test` of workspace package `package` (a file under
/// `tests/` of another crate, e.g. `cloudos-containernet`'s `mesh`), as cargo reports it:
/// `cargo test -p PACKAGE --test TEST --no-run --message-format=json`. Asking cargo,
/// rather than guessing at `target/debug/deps/TEST-<hash>`, never picks a stale build of
/// another feature set or an older source; a fresh build makes this a no-op, and
/// `scripts/test.sh` builds the same command before the QEMU tests so none compiles
/// while a guest slot is held.
pub fn cargo_test_binary(package: &str, test: &str) -> Result<PathBuf, ImageError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(&cargo)
        .args(["test", "--locked", "-p", package, "--test", test])
        .args(["--no-run", "--message-format=json-render-diagnostics"])
        .current_dir(workspace_root())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(io_error("running", Path::new(&cargo)))?;
    let what = format!("test binary {test} of {package}");
    if !output.status.success() {
        return Err(ImageError::Io {
            action: "building",
            path: PathBuf::from(what),
            source: std::io::Error::other(String::from_utf8_lossy(&output.stderr).into_owned()),
        });
    }
    test_executable(&String::from_utf8_lossy(&output.stdout), test).ok_or(ImageError::Missing {
        what,
        path: target_dir(),
        script: "cargo test --no-run",
    })
}

/// The executable of test target `test` in cargo's JSON messages.
fn test_executable(messages: &str, test: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == test)
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "test"))
        })
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
}

/// The ISO: the single file matching `out/cloudos-*-x86_64.iso` or `-arm64.iso`.
pub fn iso(arch: Arch) -> Result<PathBuf, ImageError> {
    let name = match arch {
        Arch::X86_64 => "x86_64",
        Arch::Aarch64 => "arm64",
    };
    versioned_artifact("ISO", &format!("-{name}.iso"))
}

/// The Raspberry Pi 3/4 SD card image: the single file matching
/// `out/cloudos-*-rpi.img` (made by `image/rpi.sh`, which `scripts/build.sh
/// --arch aarch64` runs). Boot a copy ([`sd_card_from_image`]), never this file.
pub fn rpi_image() -> Result<PathBuf, ImageError> {
    versioned_artifact("Raspberry Pi SD card image", "-rpi.img")
}

/// The single file in the output directory named `cloudos-<version><suffix>`.
fn versioned_artifact(what: &str, suffix: &str) -> Result<PathBuf, ImageError> {
    let dir = out_dir();
    let pattern = format!("cloudos-*{suffix}");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(_) => {
            return Err(ImageError::Missing {
                what: format!("{what} ({pattern})"),
                path: dir,
                script: BUILD_SCRIPT,
            })
        }
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("cloudos-") && n.ends_with(suffix))
        })
        .collect();
    found.sort();
    match found.len() {
        0 => Err(ImageError::Missing {
            what: format!("{what} ({pattern})"),
            path: dir,
            script: BUILD_SCRIPT,
        }),
        1 => Ok(found.remove(0)),
        // Two versions side by side means a stale build; guessing would test the wrong one.
        _ => Err(ImageError::Ambiguous {
            pattern,
            dir,
            found,
        }),
    }
}

/// Makes a USB-stick image from a hybrid ISO: the ISO is written to the stick
/// as-is (like `dd`), so this is a copy into a temp file. The copy is deleted
/// when the returned path is dropped; the original ISO is never touched.
///
/// `min_size`, if given, pads the image with zeros (sparse) to that many bytes,
/// as a real stick is larger than the ISO written to it.
pub fn usb_stick_from_iso(
    iso: &Path,
    min_size: Option<u64>,
) -> Result<tempfile::TempPath, ImageError> {
    if !iso.is_file() {
        return Err(ImageError::Missing {
            what: "ISO".into(),
            path: iso.to_path_buf(),
            script: BUILD_SCRIPT,
        });
    }
    let tmp = tempfile::Builder::new()
        .prefix("cloudos-usb-")
        .suffix(".img")
        .tempfile()
        .map_err(io_error("creating a temp file for", iso))?;
    let path = tmp.into_temp_path();
    fs::copy(iso, &path).map_err(io_error("copying", iso))?;
    if let Some(size) = min_size {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_error("opening", &path))?;
        let len = f.metadata().map_err(io_error("stat", &path))?.len();
        if len < size {
            f.set_len(size).map_err(io_error("extending", &path))?;
        }
    }
    Ok(path)
}

/// Writes an SD card image to a card of `card_size` bytes, as `dd` to a real
/// card would: a copy in `dir`, named after the image, grown with zeros
/// (sparse) to the card's size. QEMU's SD cards must be a power of two in
/// size, as real ones nearly are. The original image is never touched; the
/// copy is removed with `dir`.
pub fn sd_card_from_image(image: &Path, dir: &Path, card_size: u64) -> Result<PathBuf, ImageError> {
    let len = fs::metadata(image)
        .map_err(|_| ImageError::Missing {
            what: "SD card image".into(),
            path: image.to_path_buf(),
            script: BUILD_SCRIPT,
        })?
        .len();
    if !card_size.is_power_of_two() || card_size < len {
        return Err(ImageError::SdCardSize {
            path: image.to_path_buf(),
            image_len: len,
            size: card_size,
        });
    }
    let card = dir.join(image.file_name().unwrap_or("card.img".as_ref()));
    fs::copy(image, &card).map_err(io_error("copying", image))?;
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&card)
        .map_err(io_error("opening", &card))?;
    f.set_len(card_size).map_err(io_error("extending", &card))?;
    Ok(card)
}

/// A node's data disk: an ext4 file system labelled `CLOUDOS-DATA` (what an
/// installed node mounts at /var/lib/cloudos) of `size_mb` MiB, holding
/// `config.toml` with `config` as its text (the node's settings). Made with
/// `mkfs.ext4 -d`, so nothing is mounted on the host. Deleted on drop.
pub fn data_disk(config: &str, size_mb: u64) -> Result<tempfile::TempPath, ImageError> {
    let root =
        tempfile::tempdir().map_err(io_error("creating a temp dir for", Path::new("data disk")))?;
    let config_path = root.path().join("config.toml");
    fs::write(&config_path, config).map_err(io_error("writing", &config_path))?;
    let image = tempfile::Builder::new()
        .prefix("cloudos-data-")
        .suffix(".img")
        .tempfile()
        .map_err(io_error("creating", Path::new("data disk image")))?
        .into_temp_path();
    let output = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "CLOUDOS-DATA", "-d"])
        .arg(root.path())
        .arg(&*image)
        .arg(format!("{size_mb}M"))
        .output()
        .map_err(io_error("running mkfs.ext4 for", &image))?;
    if !output.status.success() {
        return Err(ImageError::Io {
            action: "mkfs.ext4",
            path: image.to_path_buf(),
            source: std::io::Error::other(String::from_utf8_lossy(&output.stderr).into_owned()),
        });
    }
    // Project quotas (volume size limits), as an installed node's data partition has
    // them; added after `-d`, since mke2fs 1.47 counts the files `-d` copies wrongly in
    // its quota inodes and tune2fs counts them again.
    let output = std::process::Command::new("tune2fs")
        .args(["-O", "quota,project"])
        .arg(&*image)
        .output()
        .map_err(io_error("running tune2fs for", &image))?;
    if !output.status.success() {
        return Err(ImageError::Io {
            action: "tune2fs",
            path: image.to_path_buf(),
            source: std::io::Error::other(String::from_utf8_lossy(&output.stderr).into_owned()),
        });
    }
    Ok(image)
}

/// Replaces `config.toml` on a data disk made by [`data_disk`] (with the VM
/// that used it powered off), as an operator editing the node's settings
/// would. Uses `debugfs`, so nothing is mounted on the host.
pub fn rewrite_config(disk: &Path, config: &str) -> Result<(), ImageError> {
    let dir = tempfile::tempdir().map_err(io_error("creating a temp dir for", disk))?;
    let file = dir.path().join("config.toml");
    fs::write(&file, config).map_err(io_error("writing", &file))?;
    for request in [
        "rm config.toml".to_string(),
        format!("write {} config.toml", file.display()),
    ] {
        let output = std::process::Command::new("debugfs")
            .args(["-w", "-R", &request])
            .arg(disk)
            .output()
            .map_err(io_error("running debugfs on", disk))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        // debugfs exits 0 even when a request fails; its complaint is on
        // stderr. Removing a file that is not there is fine.
        let write_failed = request.starts_with("write") && stderr.to_lowercase().contains("error");
        if !output.status.success() || write_failed {
            return Err(ImageError::Io {
                action: "debugfs",
                path: disk.to_path_buf(),
                source: std::io::Error::other(stderr.into_owned()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_is_the_first_linux_image_of_the_arch() {
        let lock = "\
# comment linux-image-old amd64
busybox-static amd64 1:1.35.0-4+deb12u1+b1 aa
linux-image-6.1.0-56-arm64 arm64 6.1.192-2 bb
linux-image-6.1.0-56-amd64 amd64 6.1.192-2 cc
linux-image-6.1.0-57-amd64 amd64 6.1.193-1 dd
raspi-firmware all 1.20220830+ds-1 ee non-free-firmware
";
        assert_eq!(
            kernel_package(lock, "amd64"),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(
            kernel_package(lock, "arm64"),
            Some("linux-image-6.1.0-56-arm64")
        );
        assert_eq!(kernel_package(lock, "riscv64"), None);
    }

    #[test]
    fn the_test_binary_is_the_test_targets_executable() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"cloudos_containernet","kind":["lib"]},"executable":null}
{"reason":"compiler-artifact","target":{"name":"mesh","kind":["bin"]},"executable":"/t/debug/mesh"}
{"reason":"compiler-artifact","target":{"name":"nat","kind":["test"]},"executable":"/t/debug/deps/nat-1"}
not json
{"reason":"compiler-artifact","target":{"name":"mesh","kind":["test"]},"executable":"/t/debug/deps/mesh-2"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            test_executable(messages, "mesh"),
            Some(PathBuf::from("/t/debug/deps/mesh-2"))
        );
        assert_eq!(test_executable(messages, "bridge"), None);
    }
}
