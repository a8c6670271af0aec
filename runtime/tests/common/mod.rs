//! Test support: a two-layer busybox image made from Debian's busybox-static,
//! a runtime rooted in a temporary directory, and run-to-completion helpers.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use cloudos_runtime::{ContainerSpec, ExitStatus, Runtime, ShimCommand};
use cloudos_testkit::Missing;

pub const BUSYBOX: &str = "/bin/busybox";

/// What these tests need of the host: root (containers), and Debian's static busybox,
/// which the test image is made of. Checked with `cloudos_testkit::require!`: a test
/// without them is skipped, or fails under `CLOUDOS_STRICT=1` (scripts/test.sh).
pub fn container_host() -> Result<(), Missing> {
    cloudos_testkit::root("containers")?;
    cloudos_testkit::file(
        Path::new(BUSYBOX),
        "apt-get install busybox-static (scripts/deps.sh)",
    )
}

/// The image, made once per test binary: layer 0 is busybox with its applet
/// links and an /etc/gone file; layer 1 adds /etc/layer2 and deletes
/// /etc/gone with an overlay whiteout (a 0/0 character device), the form
/// `cloudos_oci` unpacks layers into.
pub fn layers() -> Vec<PathBuf> {
    static LAYERS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    LAYERS
        .get_or_init(|| {
            // Kept in cargo's target tmpdir and reused by later runs (it only
            // depends on /bin/busybox); made aside and renamed into place so
            // two test binaries never see a half-made image.
            let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("runtime-busybox-image");
            let layers = vec![base.join("layer0"), base.join("layer1")];
            if !base.join("complete").exists() {
                let tmp = base.with_extension(format!("tmp{}", std::process::id()));
                let _ = fs::remove_dir_all(&tmp);
                make_image(&tmp);
                fs::write(tmp.join("complete"), "").unwrap();
                let _ = fs::remove_dir_all(&base);
                if fs::rename(&tmp, &base).is_err() {
                    // Another test binary got there first.
                    let _ = fs::remove_dir_all(&tmp);
                }
            }
            layers
        })
        .clone()
}

fn make_image(base: &Path) {
    let l0 = base.join("layer0");
    let l1 = base.join("layer1");
    fs::create_dir_all(l0.join("bin")).unwrap();
    fs::create_dir_all(l0.join("etc")).unwrap();
    fs::create_dir_all(l0.join("tmp")).unwrap();
    fs::set_permissions(l0.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::copy(BUSYBOX, l0.join("bin/busybox")).unwrap();
    let list = std::process::Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            let _ = symlink("busybox", l0.join("bin").join(applet));
        }
    }
    fs::write(l0.join("etc/gone"), "from layer 0\n").unwrap();
    fs::write(l0.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    fs::create_dir_all(l1.join("etc")).unwrap();
    fs::write(l1.join("etc/layer2"), "from layer 1\n").unwrap();
    nix::sys::stat::mknod(
        &l1.join("etc/gone"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o000),
        0,
    )
    .unwrap();
}

pub fn shim() -> ShimCommand {
    ShimCommand {
        program: env!("CARGO_BIN_EXE_cloudos-shim").into(),
        args_prefix: vec![],
    }
}

pub fn runtime() -> (tempfile::TempDir, Runtime) {
    let dir = tempfile::Builder::new()
        .prefix("cloudos-rt-")
        .tempdir()
        .unwrap();
    let rt = Runtime::open(dir.path(), shim()).unwrap();
    (dir, rt)
}

/// A unique id: cgroups are global, and test binaries may run side by side.
pub fn id(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

pub fn spec(id: &str, args: &[&str]) -> ContainerSpec {
    ContainerSpec {
        id: id.to_string(),
        layers: layers(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub fn sh(id: &str, script: &str) -> ContainerSpec {
    spec(id, &["/bin/sh", "-c", script])
}

pub struct Ran {
    pub exit: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// start → wait → read logs → delete.
pub fn run(rt: &Runtime, spec: &ContainerSpec) -> Ran {
    rt.start(spec)
        .unwrap_or_else(|e| panic!("start {}: {e}", spec.id));
    let exit = rt.wait(&spec.id, Some(Duration::from_secs(60))).unwrap();
    let logs = rt.log_paths(&spec.id);
    let ran = Ran {
        exit,
        stdout: fs::read_to_string(&logs.stdout).unwrap_or_default(),
        stderr: fs::read_to_string(&logs.stderr).unwrap_or_default(),
    };
    rt.delete(&spec.id).unwrap();
    ran
}

/// The container's cgroup directories on every mounted hierarchy.
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .filter(|l| l.contains(" - cgroup"))
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|mp| Path::new(mp).join("cloudos").join(id))
        .filter(|d| d.exists())
        .collect()
}

/// Mount points under `dir` in our mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|m| Path::new(m).starts_with(dir))
        .map(String::from)
        .collect()
}

/// Our child processes, with their state letter.
pub fn children() -> Vec<(i32, char)> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: i32 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if ppid == me {
            out.push((pid, state));
        }
    }
    out
}
