//! Builds CloudOS's initramfs: a reproducible, LZ4-compressed cpio "newc" archive,
//! written without root (device nodes and ownership are synthetic). The
//! benchmark floor stays gzip-compressed, as it always was.

pub mod archive;
pub mod firmware;
pub mod modules;
pub mod newc;

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub use archive::Archive;

/// Where the CA bundle goes in the image.
pub const CA_BUNDLE_PATH: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The exact line the floor initramfs prints once userland runs.
pub const FLOOR_MARKER: &str = "floor: userland up";

/// Kernel modules to put in the image.
#[derive(Debug, Clone)]
pub struct ModuleSpec {
    pub kernel_release: String,
    /// The unpacked kernel package (holds `lib/modules/<kver>/`).
    pub modules_root: PathBuf,
    /// Module names; their dependency closure is included.
    pub names: Vec<String>,
    /// Unpacked firmware packages (each holds `lib/firmware/…`): the pool the
    /// firmware the modules name is taken from (see [`firmware`]).
    pub firmware_roots: Vec<PathBuf>,
}

/// What goes into the CloudOS initramfs.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub init: Option<PathBuf>,
    pub modules: Option<ModuleSpec>,
    pub ca_bundle: Option<PathBuf>,
    /// (source on the host, destination in the image)
    pub extra: Vec<(PathBuf, String)>,
}

/// What a build put in, for a summary.
#[derive(Debug, Default)]
pub struct Report {
    /// Modules in load order (dependencies first).
    pub modules: Vec<String>,
    /// Firmware files added (names under `/lib/firmware`).
    pub firmware: Vec<String>,
    /// Firmware the modules name that no firmware package holds.
    pub firmware_missing: Vec<String>,
}

/// The directories and device nodes every image has.
pub fn base_layout(a: &mut Archive) -> Result<()> {
    for d in ["bin", "dev", "etc", "proc", "run", "sbin", "sys"] {
        a.add_dir(d, 0o755)?;
    }
    a.add_dir("root", 0o700)?;
    a.add_dir("tmp", 0o1777)?;
    a.add_char_dev("dev/console", 0o600, 5, 1)?;
    a.add_char_dev("dev/null", 0o666, 1, 3)?;
    Ok(())
}

/// Mode bits of a host file, normalised so the build does not depend on a umask:
/// 0755 if any execute bit is set, 0644 otherwise.
fn normalized_mode(meta: &fs::Metadata) -> u32 {
    if meta.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn read_string(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Adds a host file, symlink or directory tree at `dest`.
pub fn add_host_path(a: &mut Archive, src: &Path, dest: &str) -> Result<()> {
    let meta = fs::symlink_metadata(src).with_context(|| format!("reading {}", src.display()))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(src)?;
        let target = target
            .to_str()
            .with_context(|| format!("{}: symlink target is not UTF-8", src.display()))?;
        a.add_symlink(dest, target)?;
    } else if ft.is_dir() {
        a.add_dir(dest, 0o755)?;
        let mut names: Vec<_> = fs::read_dir(src)
            .with_context(|| format!("listing {}", src.display()))?
            .collect::<std::io::Result<Vec<_>>>()?
            .into_iter()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for n in names {
            let name = n
                .to_str()
                .with_context(|| format!("{}: non-UTF-8 file name", src.display()))?;
            add_host_path(a, &src.join(name), &format!("{dest}/{name}"))?;
        }
    } else if ft.is_file() {
        a.add_file(dest, normalized_mode(&meta), read(src)?)?;
    } else {
        bail!(
            "{}: only files, directories and symlinks can be added",
            src.display()
        );
    }
    Ok(())
}

/// Parses `SRC:DEST` (split at the last `:`; DEST must be absolute).
pub fn parse_extra(s: &str) -> Result<(PathBuf, String)> {
    let (src, dest) = s
        .rsplit_once(':')
        .with_context(|| format!("--extra {s:?}: expected SRC:DEST"))?;
    if src.is_empty() || !dest.starts_with('/') {
        bail!("--extra {s:?}: expected SRC:DEST with an absolute DEST");
    }
    Ok((PathBuf::from(src), dest.to_string()))
}

/// `<root>/lib/modules/<kver>` (or `usr/lib/modules`, or `root` itself).
pub fn find_module_dir(root: &Path, kver: &str) -> Result<PathBuf> {
    let candidates = [
        root.join("lib/modules").join(kver),
        root.join("usr/lib/modules").join(kver),
        root.to_path_buf(),
    ];
    for c in &candidates {
        if c.join("modules.dep").is_file() {
            return Ok(c.clone());
        }
    }
    bail!(
        "no modules.dep for {kver} under {} (run `depmod -b {} {kver}` on the unpacked kernel)",
        root.display(),
        root.display()
    )
}

/// Adds the modules' closure, with filtered modules.dep/alias/softdep.
pub fn add_modules(a: &mut Archive, spec: &ModuleSpec) -> Result<Report> {
    let mut report = Report::default();
    let kver = &spec.kernel_release;
    let dir = find_module_dir(&spec.modules_root, kver)?;
    let dep_text = read_string(&dir.join("modules.dep"))?;
    let alias_text = match dir.join("modules.alias") {
        p if p.is_file() => read_string(&p)?,
        _ => String::new(),
    };
    let builtin_text = match dir.join("modules.builtin") {
        p if p.is_file() => read_string(&p)?,
        _ => String::new(),
    };
    let deps = cloudos_kmod_index::Deps::parse(&dep_text)?;
    let order = modules::closure(
        &deps,
        &spec.names,
        &cloudos_kmod_index::parse_builtin(&builtin_text),
        &alias_text,
    )?;
    let included: HashSet<String> = order.iter().cloned().collect();
    let base = format!("lib/modules/{kver}");
    let mut wanted_firmware = Vec::new();
    for (name, rel) in modules::paths(&deps, &order) {
        let bytes = read(&dir.join(rel))?;
        if !spec.firmware_roots.is_empty() {
            wanted_firmware.extend(firmware::requested(&name, &bytes)?);
        }
        let packed = modules::compress_module(&bytes)?;
        a.add_file(
            &format!("{base}/{}", cloudos_kmod_index::packed_path(rel)),
            0o644,
            packed,
        )?;
    }
    if !spec.firmware_roots.is_empty() {
        let found = firmware::find(&spec.firmware_roots, &wanted_firmware)?;
        for (name, bytes) in &found.files {
            a.add_file(
                &format!("{}/{name}", firmware::FIRMWARE_DIR),
                0o644,
                bytes.clone(),
            )?;
        }
        report.firmware = found.files.keys().cloned().collect();
        report.firmware_missing = found.missing;
    }
    a.add_file(
        &format!("{base}/modules.dep"),
        0o644,
        modules::compressed_dep(&modules::filter_dep(&dep_text, &included)).into_bytes(),
    )?;
    a.add_file(
        &format!("{base}/modules.alias"),
        0o644,
        modules::filter_alias(&alias_text, &included).into_bytes(),
    )?;
    let softdep = dir.join("modules.softdep");
    if softdep.is_file() {
        let text = read_string(&softdep)?;
        a.add_file(
            &format!("{base}/modules.softdep"),
            0o644,
            modules::filter_softdep(&text, &included).into_bytes(),
        )?;
    }
    // So that asking for a built-in module can be recognised as a no-op at runtime.
    if !builtin_text.is_empty() {
        a.add_file(
            &format!("{base}/modules.builtin"),
            0o644,
            builtin_text.into_bytes(),
        )?;
    }
    report.modules = order;
    Ok(report)
}

/// The CloudOS initramfs: `/init` (nodeos), modules, CA bundle, extras.
pub fn build(spec: &Spec) -> Result<(Archive, Report)> {
    let mut a = Archive::new();
    let mut report = Report::default();
    base_layout(&mut a)?;
    if let Some(init) = &spec.init {
        a.add_file("init", 0o755, read(init)?)?;
        a.add_symlink("bin/nodeos", "/init")?;
        // The kernel runs /sbin/modprobe when a driver asks for a module by
        // alias (ext4 wants "crypto-crc32c", say); nodeos answers as modprobe.
        a.add_symlink("sbin/modprobe", "/init")?;
    }
    if let Some(m) = &spec.modules {
        report = add_modules(&mut a, m)?;
    }
    if let Some(ca) = &spec.ca_bundle {
        a.add_file(CA_BUNDLE_PATH, 0o644, read(ca)?)?;
    }
    for (src, dest) in &spec.extra {
        add_host_path(&mut a, src, dest)
            .with_context(|| format!("adding {} as {dest}", src.display()))?;
    }
    Ok((a, report))
}

/// The benchmark floor: busybox `sh` as /init that mounts /proc, prints
/// [`FLOOR_MARKER`] and powers off.
pub fn build_floor(busybox: &Path) -> Result<Archive> {
    let mut a = Archive::new();
    base_layout(&mut a)?;
    a.add_file("bin/busybox", 0o755, read(busybox)?)?;
    for applet in ["sh", "mount", "poweroff", "echo", "cat", "ls"] {
        a.add_symlink(&format!("bin/{applet}"), "busybox")?;
    }
    let script = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox mount -t proc proc /proc\n\
         echo '{FLOOR_MARKER}'\n\
         exec /bin/busybox poweroff -f\n"
    );
    a.add_file("init", 0o755, script.into_bytes())?;
    Ok(a)
}

/// `SOURCE_DATE_EPOCH` (default 0) as the archive's mtime.
pub fn source_date_epoch() -> Result<u32> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a 32-bit timestamp")),
        _ => Ok(0),
    }
}

/// How an image is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// LZ4 (legacy format): what the kernel unpacks fastest of the formats
    /// Debian's kernel reads, short of no compression at all (three times
    /// the bytes for GRUB to read from a CD or stick).
    Lz4,
    /// gzip: the benchmark floor, unchanged so that its figure stays comparable.
    Gzip,
}

/// Writes `a` compressed to `out` (through a temporary file and a rename).
pub fn write_image(a: &Archive, out: &Path, mtime: u32, compression: Compression) -> Result<u64> {
    let bytes = match compression {
        Compression::Lz4 => a.write_lz4(Vec::new(), mtime)?,
        Compression::Gzip => a.write_gz(Vec::new(), mtime)?,
    };
    let tmp = out.with_extension("tmp");
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, out).with_context(|| format!("renaming to {}", out.display()))?;
    Ok(bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct TempDir(PathBuf);
    impl TempDir {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "mkinitramfs-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn write(p: &Path, s: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, s).unwrap();
    }

    /// A fake unpacked kernel package.
    fn fake_kernel(root: &Path) -> ModuleSpec {
        let m = root.join("kernel/lib/modules/9.9.9-test");
        write(&m.join("kernel/net/core/failover.ko"), "failover");
        write(
            &m.join("kernel/drivers/net/net_failover.ko"),
            "net_failover",
        );
        write(&m.join("kernel/drivers/net/virtio_net.ko"), "virtio_net");
        write(&m.join("kernel/drivers/net/e1000.ko"), "e1000");
        write(
            &m.join("modules.dep"),
            "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n\
             kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
             kernel/net/core/failover.ko:\n\
             kernel/drivers/net/e1000.ko:\n",
        );
        write(
            &m.join("modules.alias"),
            "# Aliases\nalias virtio:d00000001v* virtio_net\nalias pci:v00008086d0000100E* e1000\n",
        );
        write(
            &m.join("modules.builtin"),
            "kernel/net/packet/af_packet.ko\n",
        );
        ModuleSpec {
            kernel_release: "9.9.9-test".into(),
            modules_root: root.join("kernel"),
            names: vec!["virtio-net".into()],
            firmware_roots: Vec::new(),
        }
    }

    fn spec(t: &Path) -> Spec {
        write(&t.join("nodeos"), "\x7fELF fake init");
        fs::set_permissions(t.join("nodeos"), fs::Permissions::from_mode(0o700)).unwrap();
        write(&t.join("ca.crt"), "-----BEGIN CERTIFICATE-----\n");
        write(&t.join("extra/b.txt"), "b");
        write(&t.join("extra/a/c.txt"), "c");
        Spec {
            init: Some(t.join("nodeos")),
            modules: Some(fake_kernel(t)),
            ca_bundle: Some(t.join("ca.crt")),
            extra: vec![(t.join("extra"), "/usr/share/extra".into())],
        }
    }

    #[test]
    fn deterministic_bytes() {
        let t1 = TempDir::new();
        let t2 = TempDir::new();
        let (a1, _) = build(&spec(&t1.0)).unwrap();
        let (a2, _) = build(&spec(&t2.0)).unwrap();
        let out1 = t1.0.join("out/initramfs.img");
        let out2 = t2.0.join("out/initramfs.img");
        write_image(&a1, &out1, 0, Compression::Lz4).unwrap();
        write_image(&a2, &out2, 0, Compression::Lz4).unwrap();
        let b1 = fs::read(&out1).unwrap();
        assert_eq!(b1, fs::read(&out2).unwrap());
        // and a rebuild in the same place
        let (a3, _) = build(&spec(&t1.0)).unwrap();
        assert_eq!(a3.write_lz4(Vec::new(), 0).unwrap(), b1);
    }

    #[test]
    fn contents_of_an_image() {
        let t = TempDir::new();
        let (a, report) = build(&spec(&t.0)).unwrap();
        assert_eq!(report.modules, ["failover", "net_failover", "virtio_net"]);
        assert!(matches!(
            a.get("/init"),
            Some(archive::Node::File { mode: 0o755, .. })
        ));
        for link in ["/bin/nodeos", "/sbin/modprobe"] {
            assert_eq!(
                a.get(link),
                Some(&archive::Node::Symlink {
                    target: "/init".into()
                }),
                "{link}"
            );
        }
        assert_eq!(
            a.get("/dev/console"),
            Some(&archive::Node::CharDev {
                mode: 0o600,
                major: 5,
                minor: 1
            })
        );
        assert!(a.get(CA_BUNDLE_PATH).is_some());
        assert!(a.get("/usr/share/extra/a/c.txt").is_some());
        let k = "/lib/modules/9.9.9-test";
        match a.get(&format!("{k}/kernel/drivers/net/virtio_net.ko.zst")) {
            Some(archive::Node::File { data, .. }) => {
                let module = zstd::stream::decode_all(&data[..]).unwrap();
                assert_eq!(module, b"virtio_net");
            }
            other => panic!("virtio_net.ko.zst: {other:?}"),
        }
        assert!(a
            .get(&format!("{k}/kernel/drivers/net/virtio_net.ko"))
            .is_none());
        assert!(a
            .get(&format!("{k}/kernel/drivers/net/e1000.ko.zst"))
            .is_none());
        match a.get(&format!("{k}/modules.dep")) {
            Some(archive::Node::File { data, .. }) => assert!(
                String::from_utf8_lossy(data).starts_with(
                    "kernel/drivers/net/virtio_net.ko.zst: kernel/drivers/net/net_failover.ko.zst"
                ),
                "{}",
                String::from_utf8_lossy(data)
            ),
            other => panic!("modules.dep: {other:?}"),
        }
        match a.get(&format!("{k}/modules.alias")) {
            Some(archive::Node::File { data, .. }) => assert_eq!(
                String::from_utf8_lossy(data),
                "# Aliases\nalias virtio:d00000001v* virtio_net\n"
            ),
            other => panic!("modules.alias: {other:?}"),
        }
    }

    #[test]
    fn unknown_module_fails_with_its_name() {
        let t = TempDir::new();
        let mut s = spec(&t.0);
        s.modules.as_mut().unwrap().names.push("frobnicator".into());
        let e = build(&s).unwrap_err();
        assert!(format!("{e:#}").contains("frobnicator"), "{e:#}");
    }

    #[test]
    fn floor_image() {
        let t = TempDir::new();
        write(&t.0.join("busybox"), "bb");
        let a = build_floor(&t.0.join("busybox")).unwrap();
        match a.get("/init") {
            Some(archive::Node::File { data, mode }) => {
                assert_eq!(*mode, 0o755);
                let s = String::from_utf8_lossy(data);
                assert!(s.starts_with("#!/bin/busybox sh\n"));
                assert!(s.contains(FLOOR_MARKER));
                assert!(s.contains("poweroff -f"));
            }
            other => panic!("/init: {other:?}"),
        }
    }

    #[test]
    fn extra_parsing() {
        assert_eq!(
            parse_extra("a:b:/etc/x").unwrap(),
            (PathBuf::from("a:b"), "/etc/x".to_string())
        );
        assert!(parse_extra("a:etc/x").is_err());
        assert!(parse_extra("nocolon").is_err());
    }
}
