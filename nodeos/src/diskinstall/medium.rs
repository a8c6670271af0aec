//! Where the installer's inputs are: the live medium (the ISO, volume id `CLOUDOS`) with
//! the disk template and slot A's kernel and initramfs, and the answer file (a labelled
//! partition or an http:// URL). Only reads; everything is mounted read-only.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use cloudos_installer::Source;
use nix::mount::MsFlags;

use crate::blockdev::devices::{self, CLASS_BLOCK};
use crate::blockdev::labels::{find_labelled, FsKind};
use crate::blockdev::mount::Mounted;

/// The ISO's volume id (iso/build.sh).
pub const MEDIUM_LABEL: &str = "CLOUDOS";
/// On the medium: the gzip'd installed-disk template (iso/build.sh, from image/disk.sh).
pub const TEMPLATE_PATH: &str = "install/disk-template.img.gz";
/// On the medium: the system it boots, what slot A gets. Its files have a slot's names:
/// the kernel, the initramfs and the release's signed manifest (iso/build.sh, from the
/// bundle).
pub const SYSTEM_DIR: &str = "boot";
pub const KERNEL_PATH: &str = "boot/vmlinuz";
pub const INITRAMFS_PATH: &str = "boot/initramfs.img";
/// The etcd pack beside them (iso/build.sh): GRUB never loads it.
pub const ETCD_PACK_PATH: &str = "boot/etcd.tar.zst";
pub const MANIFEST_PATH: &str = "boot/manifest.json";
pub const SIGNATURE_PATH: &str = "boot/manifest.sig";

const RUN_DIR: &str = "/run/cloudos/install";
/// Answer files are small; anything bigger is not one.
const MAX_ANSWER_BYTES: u64 = 64 << 10;
/// How long fetching an answer file may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a live boot's medium may take to show up: its driver (a CD drive's, a USB
/// stick's) loads with the devices found at boot, after the services started.
const MEDIUM_WAIT: Duration = Duration::from_secs(90);

/// Whether the CloudOS medium is (or within [`MEDIUM_WAIT`] becomes) attached.
pub fn appears() -> bool {
    let deadline = std::time::Instant::now() + MEDIUM_WAIT;
    loop {
        if boot_medium().is_some() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The kernel name of the disk holding the live medium (`sr0`, or `sdb` for a stick).
pub fn boot_medium() -> Option<String> {
    let (device, _) = find_labelled(MEDIUM_LABEL).into_iter().next()?;
    let name = device.trim_start_matches("/dev/").to_owned();
    // A partition of a stick: name its disk.
    Some(devices::disk_of(Path::new(CLASS_BLOCK), &name).unwrap_or(name))
}

/// Loads the module for a file system if the kernel lacks it. The kernel asks
/// /sbin/modprobe (nodeos) by itself too; this is for a clearer failure.
fn load_fs_module(kind: FsKind) {
    let module = match kind {
        FsKind::Iso9660 => "isofs",
        FsKind::Vfat => "vfat",
        FsKind::Ext4 => "ext4",
    };
    let release = crate::kmod::kernel_release();
    let dir = PathBuf::from(format!("/lib/modules/{release}"));
    if let Ok(index) = crate::kmod::ModuleIndex::load(&dir) {
        if let Err(e) = crate::kmod::Loader::new(index).load(module) {
            log::debug!("loading {module}: {e}");
        }
    }
}

/// Mounts `device` read-only under /run/cloudos/install/<name>.
pub fn mount_ro(device: &str, kind: FsKind, name: &str) -> anyhow::Result<Mounted> {
    load_fs_module(kind);
    let dir = Path::new(RUN_DIR).join(name);
    Mounted::new(device, &dir, kind.mount_type(), MsFlags::MS_RDONLY).with_context(|| {
        format!(
            "cannot mount {device} ({}) at {}",
            kind.mount_type(),
            dir.display()
        )
    })
}

/// The live medium, mounted read-only for as long as the value lives.
pub fn mount_medium() -> anyhow::Result<Mounted> {
    let Some((device, kind)) = find_labelled(MEDIUM_LABEL).into_iter().next() else {
        bail!(
            "the live medium (volume {MEDIUM_LABEL}) is not attached: the installer reads the \
             disk template and the kernel from it; boot from the CloudOS ISO or USB stick"
        );
    };
    mount_ro(&device, kind, "medium")
}

/// Reads the answer file from where `source` says.
pub fn read_answers(source: &Source) -> anyhow::Result<String> {
    match source {
        Source::Labelled { label, path } => {
            let Some((device, kind)) = find_labelled(label).into_iter().next() else {
                bail!("no partition labelled {label} (with vfat or ext4) holds the answer file {path}");
            };
            let mounted = mount_ro(&device, kind, "answers")?;
            let file = mounted.dir.join(path.trim_start_matches('/'));
            let text = read_small(&file).with_context(|| {
                format!("cannot read the answer file {path} on {device} ({label})")
            })?;
            drop(mounted);
            Ok(text)
        }
        Source::Url(url) => http_get(url),
    }
}

fn read_small(path: &Path) -> anyhow::Result<String> {
    let file = File::open(path)?;
    let mut text = String::new();
    file.take(MAX_ANSWER_BYTES).read_to_string(&mut text)?;
    Ok(text)
}

/// A plain HTTP GET of a small text file: the answer file on a provisioning server.
/// Fetches an answer file over HTTP or HTTPS (reqwest on rustls; HTTPS servers are checked
/// against the CA bundle in the initramfs, or `SSL_CERT_FILE`). At most
/// [`MAX_ANSWER_BYTES`]; anything but 200 is refused with the status.
fn http_get(url: &str) -> anyhow::Result<String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("{url}: answer files are fetched over http:// or https:// only");
    }
    // The process's TLS provider, as for registry pulls: ring.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the HTTP client")?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .connect_timeout(FETCH_TIMEOUT)
            .timeout(FETCH_TIMEOUT)
            .user_agent("cloudos-installer")
            .build()
            .context("cannot start the HTTP client")?;
        let mut response = client
            .get(url)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot fetch {url}: {}", error_chain(&e)))?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            bail!("{url} answered {status}, not 200 OK");
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_ANSWER_BYTES)
        {
            bail!("{url} is larger than {MAX_ANSWER_BYTES} bytes: not an answer file");
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| anyhow::anyhow!("reading {url}: {}", error_chain(&e)))?
        {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > MAX_ANSWER_BYTES {
                bail!("{url} is larger than {MAX_ANSWER_BYTES} bytes: not an answer file");
            }
        }
        String::from_utf8(body).with_context(|| format!("{url} is not UTF-8 text"))
    })
}

/// An error with its causes, which say what went wrong (reqwest's own text is only "error
/// sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Backup files (`*.age`) at the top of, or one directory down on, every labelled vfat or
/// ext4 partition (a USB stick, the config disk, an old data partition's backup
/// directory), each mounted read-only while it is looked at; named `LABEL=NAME:/path`.
pub fn find_backups() -> Vec<cloudos_installer::restore::FoundBackup> {
    let mut found = Vec::new();
    for (device, kind, label) in crate::blockdev::labels::all_labelled() {
        if kind == FsKind::Iso9660 || found_label_already(&found, &label) {
            continue;
        }
        let mounted = match mount_ro(&device, kind, "backups") {
            Ok(mounted) => mounted,
            Err(e) => {
                log::debug!("looking for backups on {device}: {e:#}");
                continue;
            }
        };
        let mut files = Vec::new();
        age_files(&mounted.dir, Path::new("/"), 1, &mut files);
        files.sort();
        found.extend(files.into_iter().map(|(path, size_bytes)| {
            cloudos_installer::restore::FoundBackup {
                source: format!("LABEL={label}:{}", path.display()),
                size_bytes,
            }
        }));
        drop(mounted);
    }
    found
}

/// `LABEL=NAME:` finds the first partition with that label: a second one is not listed.
fn found_label_already(found: &[cloudos_installer::restore::FoundBackup], label: &str) -> bool {
    let prefix = format!("LABEL={label}:");
    found.iter().any(|f| f.source.starts_with(&prefix))
}

/// Regular files named `*.age` under `root/rel`, `depth` directories down at most.
fn age_files(root: &Path, rel: &Path, depth: u32, out: &mut Vec<(PathBuf, u64)>) {
    let dir = root.join(rel.strip_prefix("/").unwrap_or(rel));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let Ok(meta) = entry.metadata() else { continue };
        let path = rel.join(entry.file_name());
        if meta.is_file() && path.extension().is_some_and(|e| e == "age") {
            out.push((path, meta.len()));
        } else if meta.is_dir() && depth > 0 {
            age_files(root, &path, depth - 1, out);
        }
    }
}
