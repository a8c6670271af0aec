//! A host-built test binary run in a small guest booted with the image's own kernel, for
//! tests of kernel features the build host's kernel may lack (a build host's kernel may
//! have no WireGuard; the node's, Debian's, has it). The kernel and its modules are the
//! pinned Debian package the ISO ships ([`artifacts::image_kernel`]): what passes here is
//! what a node's kernel does.
//!
//! The guest boots that kernel directly ([`BootSource::Kernel`](crate::BootSource)) with
//! an initramfs made here (uncompressed newc):
//! - busybox, the host's static one ([`registry::host_busybox`]), with a link per applet;
//! - the test binary, and the shared libraries `ldd` names for it (test binaries are
//!   glibc-dynamic: the host's glibc goes along);
//! - the modules the test asks for with their closure from the kernel's `modules.dep`,
//!   picked as the image's initramfs picks them ([`cloudos_initramfs::modules::closure`]),
//!   and the `pre:` soft dependencies of `modules.softdep` that `modprobe` would load
//!   first (libcrc32c wants a crc32c), as plain `.ko` files (the Debian kernel cannot
//!   unpack compressed ones), and
//!   `modules.dep`/`modules.alias` of just those for the kernel's own requests
//!   (`/sbin/modprobe` is busybox's);
//! - `/init`, a shell script: mounts proc, sys, dev, tmp and run, `insmod`s the modules
//!   in dependency order, runs `BINARY --include-ignored --exact TEST --test-threads=1`
//!   with `CLOUDOS_STRICT=1` (a missing prerequisite fails the test, never skips it),
//!   prints `kernel-guest: exit <code>` and powers off.
//!
//! The tests run so are `#[ignore]`d in their own crate, with a reason naming the test
//! here that runs them: nothing runs them on the host, and none goes unrun.
//!
//! x86_64 only: the binary and its libraries are the host's. The caller reserves the
//! guest first ([`crate::guests::reserve`]), as for any VM.

use std::collections::HashSet;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cloudos_initramfs::{modules, Archive};
use cloudos_kmod_index::{normalize, parse_builtin, Aliases, Deps, UnknownModule};

use crate::arch::Arch;
use crate::artifacts::{self, io_error, ImageError, ImageKernel};
use crate::console::{ConsoleError, Pattern};
use crate::qemu::{VmBuilder, VmError};
use crate::registry;
use crate::timeouts::scaled;

/// Guest memory: the initramfs (a debug test binary is ~50 MB) is unpacked into it.
pub const DEFAULT_MEMORY_MB: u32 = 1024;

/// Where the test binary is in the guest.
const GUEST_BINARY: &str = "/kernel-guest/test";

/// The modules to load, in order, one a line: `required PATH` or `optional PATH` (a soft
/// dependency, see [`Load`]), PATH under `/lib/modules/<release>/`.
const GUEST_MODULE_LIST: &str = "/kernel-guest/modules";

/// The line `/init` ends with; the binary's exit code follows it (125: a module failed).
const EXIT_MARKER: &str = "kernel-guest: exit ";

/// `/init`'s exit code when a module does not load (the test did not run).
pub const MODULE_FAILED: i32 = 125;

/// How long the guest gets to power off once it said it is done.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(10);

/// The kernel's command line: the serial console, a panic ends QEMU (`-no-reboot`), and
/// warnings and worse only (`loglevel=5`), so the test's output reads whole.
fn append(arch: Arch) -> String {
    format!(
        "console={},115200 panic=-1 loglevel=5",
        arch.serial_console()
    )
}

/// Errors building or running a kernel guest. `Debug` prints as `Display`, so an
/// `.unwrap()` shows the guest's lines as lines.
#[derive(thiserror::Error)]
pub enum KernelGuestError {
    #[error(
        "kernel guests are x86_64 only (the test binary and its libraries are the host's), \
         not {0}"
    )]
    Unsupported(Arch),
    #[error("{0} is not an x86_64 ELF executable: build the test for the host")]
    NotX86_64(PathBuf),
    #[error("test name {0:?}: a test's path is letters, digits, `_` and `::`")]
    BadTestName(String),
    #[error("ldd {binary}: {detail}")]
    Ldd { binary: PathBuf, detail: String },
    #[error("the guest's initramfs: {0}")]
    Initramfs(String),
    #[error(
        "{binary} ran no test named {test} in the guest (is the name its full path?); \
         the guest's console:\n{output}"
    )]
    NoSuchTest {
        binary: PathBuf,
        test: String,
        output: String,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Console(#[from] ConsoleError),
}

impl std::fmt::Debug for KernelGuestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

fn initramfs_error(e: impl std::fmt::Display) -> KernelGuestError {
    KernelGuestError::Initramfs(e.to_string())
}

/// How one test went in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The test ran and passed: exit code 0, and libtest counted one test passed.
    pub passed: bool,
    /// The test binary's exit code ([`MODULE_FAILED`] if a module did not load).
    pub exit_code: i32,
    /// The guest's console: the kernel's warnings, `/init`'s lines and the test's output.
    pub output: String,
}

/// A guest to run one test of a test binary in; see the module comment.
#[derive(Debug, Clone)]
pub struct KernelGuest {
    arch: Arch,
    modules: Vec<String>,
    memory_mb: u32,
}

impl KernelGuest {
    pub fn new(arch: Arch) -> KernelGuest {
        KernelGuest {
            arch,
            modules: Vec::new(),
            memory_mb: DEFAULT_MEMORY_MB,
        }
    }

    /// Modules to load before the test (names as `modprobe` takes them); their
    /// dependencies come along and load first.
    pub fn modules(mut self, names: &[&str]) -> Self {
        self.modules.extend(names.iter().map(|n| n.to_string()));
        self
    }

    /// Guest memory (default [`DEFAULT_MEMORY_MB`]).
    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.memory_mb = mb;
        self
    }

    /// Boots the guest and runs test `test` (its full path in the binary, as
    /// `--exact` takes it) of `binary`, ignored or not, waiting up to `timeout` (used
    /// as given: wrap it in [`scaled`]) for it to end. A test that fails is an
    /// [`Outcome`] with `passed: false`; a guest that does not get to the end, or a
    /// binary without that test, is an error.
    pub fn run(
        &self,
        binary: &Path,
        test: &str,
        timeout: Duration,
    ) -> Result<Outcome, KernelGuestError> {
        if self.arch != Arch::X86_64 {
            return Err(KernelGuestError::Unsupported(self.arch));
        }
        if !is_test_path(test) {
            return Err(KernelGuestError::BadTestName(test.to_string()));
        }
        let head = read_head(binary)?;
        if elf_arch(&head) != Some(Arch::X86_64) {
            return Err(KernelGuestError::NotX86_64(binary.to_path_buf()));
        }
        let kernel = artifacts::image_kernel(self.arch)?;
        let dir = tempfile::Builder::new()
            .prefix("cloudos-kernel-guest-")
            .tempdir()
            .map_err(io_error("creating a temp dir in", &std::env::temp_dir()))?;
        let initrd = dir.path().join("initramfs.cpio");
        let archive = self.initramfs(&kernel, binary, test)?;
        let file = fs::File::create(&initrd).map_err(io_error("creating", &initrd))?;
        archive
            .write_cpio(BufWriter::new(file), 0)
            .and_then(|mut w| w.flush())
            .map_err(io_error("writing", &initrd))?;

        let vm = VmBuilder::new(self.arch)
            .memory_mb(self.memory_mb)
            .kernel(kernel.vmlinuz(), &initrd, &append(self.arch))
            .spawn()?;
        let end = vm.serial().wait_for(
            Pattern::regex(&format!(r"{EXIT_MARKER}(-?\d+)\s*$"))?,
            timeout,
        )?;
        let exit_code = end
            .group(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(i32::MIN);
        // The guest powers off next; its last lines are in the console once QEMU is gone.
        let _ = vm.wait_exit(scaled(POWEROFF_TIMEOUT));
        let output = vm.serial().contents();
        judge(binary, test, exit_code, output)
    }

    /// The guest's initramfs: busybox, the binary and its libraries, the modules, `/init`.
    fn initramfs(
        &self,
        kernel: &ImageKernel,
        binary: &Path,
        test: &str,
    ) -> Result<Archive, KernelGuestError> {
        let mut a = Archive::new();
        cloudos_initramfs::base_layout(&mut a).map_err(initramfs_error)?;

        let busybox = registry::host_busybox();
        add_host_file(&mut a, &busybox, "bin/busybox")?;
        let applets = registry::busybox_applets().map_err(io_error("listing", &busybox))?;
        for applet in applets {
            a.add_symlink(&format!("bin/{applet}"), "busybox")
                .map_err(initramfs_error)?;
        }
        // The kernel asks /sbin/modprobe for a module it wants (a netfilter expression
        // by its alias, say).
        a.add_symlink("sbin/modprobe", "/bin/busybox")
            .map_err(initramfs_error)?;

        add_host_file(&mut a, binary, GUEST_BINARY)?;
        for library in shared_libraries(binary)? {
            let dest = library.to_string_lossy().into_owned();
            add_host_file(&mut a, &library, &dest)?;
        }

        let load = add_modules(&mut a, kernel, &self.modules)?;
        let list: String = load
            .iter()
            .map(|m| {
                let need = if m.optional { "optional" } else { "required" };
                format!("{need} {}\n", m.path)
            })
            .collect();
        a.add_file(GUEST_MODULE_LIST, 0o644, list.into_bytes())
            .map_err(initramfs_error)?;
        a.add_file(
            "init",
            0o755,
            init_script(&kernel.release, test).into_bytes(),
        )
        .map_err(initramfs_error)?;
        Ok(a)
    }
}

/// The binary passed (exit 0 and one test passed), failed, or ran no test of that name
/// (exit 0 and nothing passed: `--exact` matched none, which must not read as a pass).
fn judge(
    binary: &Path,
    test: &str,
    exit_code: i32,
    output: String,
) -> Result<Outcome, KernelGuestError> {
    let passed = libtest_passed(&output);
    if exit_code == 0 && passed != Some(1) {
        return Err(KernelGuestError::NoSuchTest {
            binary: binary.to_path_buf(),
            test: test.to_string(),
            output,
        });
    }
    Ok(Outcome {
        passed: exit_code == 0,
        exit_code,
        output,
    })
}

/// How many tests libtest's summary (`test result: ok. 1 passed; 0 failed; …`) counts
/// as passed, from the last summary in `output`.
fn libtest_passed(output: &str) -> Option<u32> {
    output.lines().rev().find_map(|line| {
        let (_, result) = line.split_once("test result: ")?;
        let (_, counts) = result.split_once(". ")?;
        let (n, rest) = counts.split_once(' ')?;
        rest.starts_with("passed").then(|| n.parse().ok())?
    })
}

/// A test's path as libtest names it (`module::name`): safe to put in `/init` as is.
fn is_test_path(test: &str) -> bool {
    !test.is_empty()
        && test
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The first bytes of `path` (for its ELF header).
fn read_head(path: &Path) -> Result<Vec<u8>, KernelGuestError> {
    use std::io::Read;
    let mut head = Vec::with_capacity(20);
    fs::File::open(path)
        .and_then(|f| f.take(20).read_to_end(&mut head))
        .map_err(io_error("reading", path))?;
    Ok(head)
}

/// The architecture of an ELF file by its header's `e_machine`.
fn elf_arch(head: &[u8]) -> Option<Arch> {
    if head.len() < 20 || !head.starts_with(b"\x7fELF") {
        return None;
    }
    match u16::from_le_bytes([head[18], head[19]]) {
        62 => Some(Arch::X86_64),
        183 => Some(Arch::Aarch64),
        _ => None,
    }
}

fn add_host_file(a: &mut Archive, src: &Path, dest: &str) -> Result<(), KernelGuestError> {
    let bytes = fs::read(src).map_err(io_error("reading", src))?;
    a.add_file(dest, 0o755, bytes).map_err(initramfs_error)
}

/// The files `ldd` names for `binary`: its shared libraries and the dynamic loader, by
/// the paths the loader looks them up at. None for a static binary.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, KernelGuestError> {
    let ldd_error = |detail: String| KernelGuestError::Ldd {
        binary: binary.to_path_buf(),
        detail,
    };
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| ldd_error(format!("running it: {e} (libc-bin has it)")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        if stdout.contains("not a dynamic executable")
            || stderr.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(ldd_error(format!("{}: {}", output.status, stderr.trim())));
    }
    parse_ldd(&stdout).map_err(|missing| ldd_error(format!("{missing} not found")))
}

/// The paths in `ldd`'s output (`name => /path (0x…)`, `/path (0x…)`); the vDSO, which
/// has no file, is left out. `Err` names a library that was not found.
fn parse_ldd(output: &str) -> Result<Vec<PathBuf>, String> {
    let mut paths = Vec::new();
    for line in output.lines().map(str::trim) {
        let file = match line.split_once("=>") {
            Some((name, target)) => {
                let target = target.trim();
                if target.starts_with("not found") {
                    return Err(name.trim().to_string());
                }
                target.split_whitespace().next().unwrap_or("")
            }
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if file.starts_with('/') {
            paths.push(PathBuf::from(file));
        }
    }
    Ok(paths)
}

/// A module for `/init` to load.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Load {
    /// Its file under `lib/modules/<release>/`.
    path: String,
    /// A soft dependency only: `modprobe` loads what a `pre:` line names (often an alias
    /// several modules match, `crc32c`, of which one may not fit the machine:
    /// crc32c-intel wants SSE4.2), and goes on if it fails; so does `/init`.
    optional: bool,
}

/// Adds the modules `names` with their closure under `lib/modules/<release>/` as plain
/// `.ko` files, and `modules.dep`/`modules.alias` of just those. Returns them in the
/// order to `insmod` them in: dependencies first, and the `pre:` soft dependencies of
/// `modules.softdep` ([`soft_closure`]) before the modules that want them.
fn add_modules(
    a: &mut Archive,
    kernel: &ImageKernel,
    names: &[String],
) -> Result<Vec<Load>, KernelGuestError> {
    let dir = cloudos_initramfs::find_module_dir(&kernel.root, &kernel.release)
        .map_err(|e| KernelGuestError::Initramfs(format!("{e:#}")))?;
    let read = |name: &str, required: bool| -> Result<String, KernelGuestError> {
        let path = dir.join(name);
        match fs::read_to_string(&path) {
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            other => Ok(other.map_err(io_error("reading", &path))?),
        }
    };
    let dep_text = read("modules.dep", true)?;
    let alias_text = read("modules.alias", false)?;
    let builtin_text = read("modules.builtin", false)?;
    let softdep_text = read("modules.softdep", false)?;
    let deps = Deps::parse(&dep_text).map_err(initramfs_error)?;
    let required = modules::closure(&deps, names, &parse_builtin(&builtin_text), &alias_text)
        .map_err(initramfs_error)?;
    let order = soft_closure(&deps, &Aliases::parse(&alias_text), &softdep_text, names)
        .map_err(initramfs_error)?;

    let base = format!("lib/modules/{}", kernel.release);
    let mut load = Vec::with_capacity(order.len());
    for name in &order {
        let rel = deps.path(name).ok_or_else(|| {
            KernelGuestError::Initramfs(format!("modules.dep has no file for {name}"))
        })?;
        let bytes = plain_module(&dir.join(rel))?;
        let plain = plain_path(rel);
        a.add_file(&format!("{base}/{plain}"), 0o644, bytes)
            .map_err(initramfs_error)?;
        load.push(Load {
            path: plain.to_string(),
            optional: !required.contains(name),
        });
    }
    let included: HashSet<String> = order.into_iter().collect();
    a.add_file(
        &format!("{base}/modules.dep"),
        0o644,
        plain_dep(&modules::filter_dep(&dep_text, &included)).into_bytes(),
    )
    .map_err(initramfs_error)?;
    a.add_file(
        &format!("{base}/modules.alias"),
        0o644,
        modules::filter_alias(&alias_text, &included).into_bytes(),
    )
    .map_err(initramfs_error)?;
    Ok(load)
}

/// The load order of `names`, their dependencies and, over and over until none is new,
/// the `pre:` soft dependencies of every module in it (each a module, or an alias of the
/// modules it matches; one the kernel lacks or has built in is left out), those first.
fn soft_closure(
    deps: &Deps,
    aliases: &Aliases,
    softdep: &str,
    names: &[String],
) -> Result<Vec<String>, UnknownModule> {
    let mut soft: Vec<String> = Vec::new();
    loop {
        let roots: Vec<&str> = soft
            .iter()
            .map(String::as_str)
            .chain(names.iter().map(String::as_str))
            .collect();
        let order = deps.load_order(&roots)?;
        let mut new = Vec::new();
        for wanted in order.iter().flat_map(|m| softdeps_pre(softdep, m)) {
            let found: Vec<String> = if deps.contains(&normalize(wanted)) {
                vec![normalize(wanted)]
            } else {
                aliases
                    .matching(wanted)
                    .into_iter()
                    .map(normalize)
                    .collect()
            };
            for module in found {
                if deps.contains(&module) && !soft.contains(&module) && !new.contains(&module) {
                    new.push(module);
                }
            }
        }
        if new.is_empty() {
            return Ok(order);
        }
        // Found later, wanted earlier: a soft dependency's own ones load before it.
        new.append(&mut soft);
        soft = new;
    }
}

/// What `modules.softdep` (`softdep MODULE pre: A B post: C`) says to load before
/// `module`.
fn softdeps_pre<'a>(softdep: &'a str, module: &str) -> Vec<&'a str> {
    softdep
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "softdep" && normalize(words.next()?) == module).then_some(words)
        })
        .flat_map(|words| {
            words
                .skip_while(|w| *w != "pre:")
                .skip(1)
                .take_while(|w| *w != "post:")
        })
        .collect()
}

/// The program that unpacks a module file compressed as its name says (`.ko.xz`,
/// `.ko.zst`, `.ko.gz`), or `None` for a plain `.ko`.
fn decompressor(path: &str) -> Option<&'static str> {
    [(".ko.xz", "xz"), (".ko.zst", "zstd"), (".ko.gz", "gzip")]
        .into_iter()
        .find(|(suffix, _)| path.ends_with(suffix))
        .map(|(_, program)| program)
}

/// A module's path with its compression suffix taken off: `a/b.ko.xz` -> `a/b.ko`.
fn plain_path(path: &str) -> &str {
    match decompressor(path) {
        Some(_) => path.rsplit_once('.').map_or(path, |(plain, _)| plain),
        None => path,
    }
}

/// `modules.dep` with every path made plain ([`plain_path`]).
fn plain_dep(text: &str) -> String {
    text.lines()
        .map(|line| {
            line.split_whitespace()
                .map(|word| match word.strip_suffix(':') {
                    Some(module) => format!("{}:", plain_path(module)),
                    None => plain_path(word).to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
                + "\n"
        })
        .collect()
}

/// A module file's bytes, unpacked (with the host's `xz`, `zstd` or `gzip`) if the
/// package ships it compressed: the Debian kernel has no MODULE_DECOMPRESS, and
/// busybox's `insmod` hands the kernel the file as it is.
fn plain_module(path: &Path) -> Result<Vec<u8>, KernelGuestError> {
    let Some(program) = decompressor(&path.to_string_lossy()) else {
        return Ok(fs::read(path).map_err(io_error("reading", path))?);
    };
    let output = Command::new(program)
        .arg("-dc")
        .arg(path)
        .output()
        .map_err(io_error("unpacking", path))?;
    if !output.status.success() {
        return Err(ImageError::Io {
            action: "unpacking",
            path: path.to_path_buf(),
            source: std::io::Error::other(format!(
                "{program}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )),
        }
        .into());
    }
    Ok(output.stdout)
}

/// `/init`: mounts, loads the modules in order, runs the one test strictly, says how it
/// ended and powers off. `test` is a checked test path ([`is_test_path`]).
fn init_script(release: &str, test: &str) -> String {
    format!(
        r#"#!/bin/sh
# A kernel guest's /init (cloudos-tests, src/kernel_guest.rs).
export PATH=/bin:/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
code=0
loaded=0
while read -r need module; do
    if insmod "/lib/modules/{release}/$module"; then
        loaded=$((loaded + 1))
    elif [ "$need" = optional ]; then
        echo "kernel-guest: $module, a soft dependency, did not load; going on as modprobe does"
    else
        echo "kernel-guest: insmod $module failed"
        code={MODULE_FAILED}
        break
    fi
done <{GUEST_MODULE_LIST}
if [ "$code" = 0 ]; then
    echo "kernel-guest: $loaded modules loaded; running {test}"
    cd /tmp
    CLOUDOS_STRICT=1 RUST_BACKTRACE=1 {GUEST_BINARY} --include-ignored --exact {test} --test-threads=1
    code=$?
fi
echo "{EXIT_MARKER}$code"
poweroff -f
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_names_libraries_and_loader_but_not_the_vdso() {
        let out = "\tlinux-vdso.so.1 (0x00007ffc3a5f2000)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0e1c5a0000)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e1c3bf000)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f0e1c6a1000)\n";
        assert_eq!(
            parse_ldd(out).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(
            parse_ldd("\tlibfoo.so.2 => not found\n").unwrap_err(),
            "libfoo.so.2"
        );
        assert_eq!(
            parse_ldd("\tstatically linked\n").unwrap(),
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn soft_dependencies_load_first_by_name_or_by_alias() {
        let deps = Deps::parse(
            "kernel/net/nf_tables.ko: kernel/lib/libcrc32c.ko\n\
             kernel/lib/libcrc32c.ko:\n\
             kernel/crypto/crc32c-intel.ko:\n\
             kernel/crypto/crc32c_generic.ko:\n\
             kernel/crypto/helper.ko:\n\
             kernel/net/veth.ko:\n",
        )
        .unwrap();
        let aliases = Aliases::parse(
            "alias crc32c crc32c_intel\nalias crc32c crc32c_generic\nalias other veth\n",
        );
        let softdep = "# comment\n\
                       softdep libcrc32c pre: crc32c post: veth\n\
                       softdep crc32c_generic pre: helper\n\
                       softdep cifs pre: crc32c\n\
                       softdep veth pre: not-in-this-kernel\n";
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            soft_closure(&deps, &aliases, softdep, &names(&["nf_tables", "veth"])).unwrap(),
            [
                "helper",
                "crc32c_intel",
                "crc32c_generic",
                "libcrc32c",
                "nf_tables",
                "veth"
            ]
        );
        assert_eq!(
            soft_closure(&deps, &aliases, softdep, &names(&["veth"])).unwrap(),
            ["veth"]
        );
        assert_eq!(softdeps_pre(softdep, "libcrc32c"), ["crc32c"]);
        assert_eq!(softdeps_pre(softdep, "nf_tables"), Vec::<&str>::new());
    }

    #[test]
    fn compressed_modules_are_named_and_listed_plain() {
        assert_eq!(plain_path("kernel/net/wg.ko"), "kernel/net/wg.ko");
        assert_eq!(plain_path("kernel/net/wg.ko.xz"), "kernel/net/wg.ko");
        assert_eq!(plain_path("kernel/net/wg.ko.zst"), "kernel/net/wg.ko");
        assert_eq!(decompressor("kernel/net/wg.ko"), None);
        assert_eq!(
            plain_dep("kernel/a.ko.xz: kernel/b.ko.zst kernel/c.ko\nkernel/b.ko.zst:\n"),
            "kernel/a.ko: kernel/b.ko kernel/c.ko\nkernel/b.ko:\n"
        );
    }

    #[test]
    fn a_compressed_module_is_unpacked_for_insmod() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("m.ko");
        let content = b"\x7fELF not really a module".repeat(100);
        fs::write(&module, &content).unwrap();
        let status = Command::new("xz").arg("-k").arg(&module).status();
        assert!(status.as_ref().is_ok_and(|s| s.success()), "xz {status:?}");
        assert_eq!(plain_module(&dir.path().join("m.ko.xz")).unwrap(), content);
        assert_eq!(plain_module(&module).unwrap(), content);
    }

    fn outcome(code: i32, output: &str) -> Result<Outcome, KernelGuestError> {
        judge(Path::new("/t/mesh"), "a::b", code, output.to_string())
    }

    #[test]
    fn only_one_test_passed_with_exit_zero_is_a_pass() {
        let ok = "running 1 test\ntest a::b ... ok\n\n\
                  test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 3 filtered out; finished in 9.1s\n\
                  kernel-guest: exit 0";
        assert!(outcome(0, ok).unwrap().passed);

        let failed = "test a::b ... FAILED\n\
                      test result: FAILED. 0 passed; 1 failed; 0 ignored\nkernel-guest: exit 101";
        let o = outcome(101, failed).unwrap();
        assert!(!o.passed);
        assert_eq!(o.exit_code, 101);

        let module = "kernel-guest: insmod kernel/net/x.ko failed\nkernel-guest: exit 125";
        assert!(!outcome(MODULE_FAILED, module).unwrap().passed);

        // `--exact` with a name the binary lacks runs nothing, and exits 0.
        let none = "running 0 tests\n\n\
                    test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 4 filtered out\n";
        match outcome(0, none) {
            Err(KernelGuestError::NoSuchTest { test, .. }) => assert_eq!(test, "a::b"),
            other => panic!("expected NoSuchTest, got {other:?}"),
        }
        assert!(matches!(
            outcome(0, "no summary at all"),
            Err(KernelGuestError::NoSuchTest { .. })
        ));
    }

    #[test]
    fn only_test_paths_go_into_init() {
        assert!(is_test_path("containers_talk"));
        assert!(is_test_path("mesh::tests::containers_talk"));
        for bad in ["", "a b", "a;poweroff", "$(x)", "a'b"] {
            assert!(!is_test_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn elf_header_says_the_architecture() {
        let mut head = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0".to_vec();
        assert_eq!(
            elf_arch(&[head.clone(), vec![62, 0]].concat()),
            Some(Arch::X86_64)
        );
        head.extend([183, 0]);
        assert_eq!(elf_arch(&head), Some(Arch::Aarch64));
        assert_eq!(elf_arch(b"#!/bin/sh\n echo not an elf"), None);
    }

    #[test]
    fn init_loads_modules_then_runs_the_one_test_strictly_and_says_how_it_ended() {
        let init = init_script("6.1.0-56-amd64", "containers_talk");
        let at = |s: &str| {
            init.find(s)
                .unwrap_or_else(|| panic!("{s:?} not in\n{init}"))
        };
        assert!(init.starts_with("#!/bin/sh\n"));
        assert!(at("insmod \"/lib/modules/6.1.0-56-amd64/$module\"") < at("CLOUDOS_STRICT=1"));
        assert!(at("[ \"$need\" = optional ]") < at("code=125"));
        assert!(
            at("/kernel-guest/test --include-ignored --exact containers_talk --test-threads=1")
                < at("echo \"kernel-guest: exit $code\"")
        );
        assert!(at("kernel-guest: exit") < at("poweroff -f"));
    }
}
