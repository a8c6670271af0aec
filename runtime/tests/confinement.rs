//! Issue 16, item 7: what a container's defaults keep in. The attacker is a
//! process running as root inside a real container on this host, armed with
//! `tests/probe/probe.c` (built here with musl-gcc) and busybox. Each attack
//! is also shown to work on the host without the container's confinement,
//! so a pass means the confinement stopped it, not the kernel.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cloudos_runtime::{ContainerSpec, Resources, Runtime, DEFAULT_PIDS_LIMIT};
use cloudos_testkit::require;
use common::{id, run, sh};

const EPERM: &str = "errno:1";
const ENOSYS: &str = "errno:38";

/// A layer holding `/bin/probe`, built once per test binary.
fn probe_layer() -> PathBuf {
    static LAYER: OnceLock<PathBuf> = OnceLock::new();
    LAYER
        .get_or_init(|| {
            // Rebuilt every run (the source may have changed) and renamed
            // into place, so a container never sees a half-written binary.
            let layer = Path::new(env!("CARGO_TARGET_TMPDIR")).join("runtime-probe");
            fs::create_dir_all(layer.join("bin")).unwrap();
            let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probe/probe.c");
            let built = layer.join(format!("bin/probe.{}", std::process::id()));
            let out = Command::new("musl-gcc")
                .args(["-static", "-O2", "-Wall", "-o"])
                .arg(&built)
                .arg(&source)
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run musl-gcc ({e}): apt-get install musl-tools (scripts/deps.sh)"
                    )
                });
            assert!(
                out.status.success(),
                "musl-gcc failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            fs::rename(&built, layer.join("bin/probe")).unwrap();
            layer
        })
        .clone()
}

fn probe_spec(cid: &str, args: &[&str]) -> ContainerSpec {
    let mut s = common::spec(cid, &["/bin/probe"]);
    s.args.extend(args.iter().map(|a| a.to_string()));
    s.layers.push(probe_layer());
    s
}

/// `name=value` lines of the probe, and whether it ran to the end.
fn parse(stdout: &str) -> (HashMap<String, String>, bool) {
    let results = stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (results, stdout.lines().any(|l| l == "done"))
}

/// Runs the probe's checks as root in a container.
fn probe_in_container(name: &str, checks: &[&str]) -> HashMap<String, String> {
    let (_d, rt) = common::runtime();
    let r = run(&rt, &probe_spec(&id(name), checks));
    let (results, done) = parse(&r.stdout);
    // Refused, not killed: the probe itself ran to its end.
    assert!(
        done && r.exit.code == Some(0),
        "the probe did not finish: {:?} stdout {:?} stderr {:?}",
        r.exit,
        r.stdout,
        r.stderr
    );
    results
}

/// The control: the same checks as root on the host, unconfined.
fn probe_on_host(checks: &[&str]) -> HashMap<String, String> {
    let out = Command::new(probe_layer().join("bin/probe"))
        .args(checks)
        .output()
        .unwrap();
    let (results, done) = parse(&String::from_utf8_lossy(&out.stdout));
    assert!(done, "the probe did not finish on the host: {out:?}");
    results
}

fn assert_results(results: &HashMap<String, String>, expected: &[(&str, &str)], what: &str) {
    for (check, want) in expected {
        assert_eq!(
            results.get(*check).map(String::as_str),
            Some(*want),
            "{check} {what}: {results:?}"
        );
    }
}

#[test]
fn root_in_a_container_gets_eperm_for_escape_syscalls() {
    require!(common::container_host());
    // Each of these works for root on this host (the control below) and
    // gives a way out or a large kernel attack surface: new user namespaces
    // (by unshare and by clone flags), the kernel keyring, which is not
    // namespaced, userfaultfd and io_uring (exploit primitives), turning
    // ASLR off, and the 32-bit syscall ABI, which a filter for the 64-bit
    // one would otherwise not see.
    let mut attacks = vec![
        ("unshare_user", EPERM),
        ("clone_newuser", EPERM),
        ("keyctl_join", EPERM),
        ("add_key", EPERM),
        ("userfaultfd", EPERM),
        ("io_uring_setup", EPERM),
        ("personality_aslr_off", EPERM),
        // clone3's flags are behind a pointer the filter cannot read: ENOSYS,
        // so that C libraries fall back to clone, whose flags it can.
        ("clone3", ENOSYS),
    ];
    if cfg!(target_arch = "x86_64") {
        attacks.push(("int80_getpid", EPERM));
    }
    let attack_names: Vec<&str> = attacks.iter().map(|(n, _)| *n).collect();
    let host = probe_on_host(&attack_names);
    for name in &attack_names {
        assert_eq!(
            host.get(*name).map(String::as_str),
            Some("ok"),
            "{name} does not work on this host even unconfined, so refusing it proves nothing: {host:?}"
        );
    }

    // Also refused in the container (these by the missing capabilities too).
    let mut also = vec![
        ("unshare_mount", EPERM),
        ("mount_tmpfs", EPERM),
        ("kexec_load", EPERM),
        ("reboot_cad_off", EPERM),
    ];
    if cfg!(target_arch = "x86_64") {
        // The x32 ABI: the same syscall numbers with bit 30 set.
        also.push(("x32_getpid", EPERM));
    }
    // What ordinary programs need keeps working.
    let allowed = [
        ("getpid", "ok"),
        ("fork", "ok"),
        ("clone_plain", "ok"),
        ("socket_tcp", "ok"),
        ("personality_query", "ok"),
    ];
    let all: Vec<&str> = attacks
        .iter()
        .chain(&also)
        .chain(&allowed)
        .map(|(n, _)| *n)
        .collect();
    let results = probe_in_container("seccomp", &all);
    assert_results(&results, &attacks, "in the container");
    assert_results(&results, &also, "in the container");
    assert_results(&results, &allowed, "in the container");
}

#[test]
fn the_kernel_reports_the_filters_no_new_privs_and_no_net_raw() {
    require!(common::container_host());
    let (_d, rt) = common::runtime();
    let r = run(
        &rt,
        &sh(
            &id("status"),
            "grep -E '^(NoNewPrivs|Seccomp|Seccomp_filters|CapBnd|CapEff):' /proc/self/status",
        ),
    );
    let field = |name: &str| {
        r.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in {:?} (stderr {})", r.stdout, r.stderr))
    };
    assert_eq!(field("NoNewPrivs:"), "1");
    // 2: filter mode; two filters, the allow list and clone3's.
    assert_eq!(field("Seccomp:"), "2");
    assert_eq!(field("Seccomp_filters:"), "2");
    for set in ["CapBnd:", "CapEff:"] {
        let caps = u64::from_str_radix(&field(set), 16).unwrap();
        assert_eq!(caps & (1 << 13), 0, "CAP_NET_RAW in {set} {caps:x}");
        assert_eq!(caps & (1 << 21), 0, "CAP_SYS_ADMIN in {set} {caps:x}");
    }
}

#[test]
fn root_in_a_container_cannot_open_raw_sockets() {
    require!(common::container_host());
    let checks = ["socket_raw_icmp", "socket_packet"];
    let host = probe_on_host(&checks);
    assert_results(
        &host,
        &[("socket_raw_icmp", "ok"), ("socket_packet", "ok")],
        "on the host",
    );
    let results = probe_in_container("rawsock", &checks);
    assert_results(
        &results,
        &[("socket_raw_icmp", EPERM), ("socket_packet", EPERM)],
        "in the container (CAP_NET_RAW must be dropped)",
    );
    // busybox ping falls back to an ICMP datagram socket when raw ones fail;
    // what matters is that no raw socket was had, which the probe showed.
}

#[test]
fn root_in_a_container_cannot_read_the_kernel_command_line() {
    require!(common::container_host());
    // The host's kernel command line is the secret: an appliance may carry
    // its join token there.
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap();
    let secrets: Vec<&str> = cmdline
        .split_whitespace()
        .filter(|w| w.contains('=') && w.len() > 6)
        .collect();
    assert!(
        !secrets.is_empty(),
        "the host's command line has no key=value word to look for: {cmdline:?}"
    );
    let (_d, rt) = common::runtime();
    // Every way root in the container might try: read it, unmount the mask,
    // mount a fresh procfs, the kernel log (which repeats the command line),
    // the boot config, the device tree under /sys/firmware.
    let r = run(
        &rt,
        &sh(
            &id("cmdline"),
            "echo \"len=$(wc -c < /proc/cmdline)\"; cat /proc/cmdline; \
             umount /proc/cmdline && echo unmounted; cat /proc/cmdline; \
             mkdir -p /tmp/p && mount -t proc proc /tmp/p && echo mounted-proc; cat /tmp/p/cmdline; \
             dmesg; cat /proc/bootconfig; timeout 1 cat /proc/kmsg; \
             find /sys/firmware; \
             for f in kcore keys timer_list sched_debug interrupts; do echo \"$f=$(wc -c < /proc/$f)\"; done; \
             echo end",
        ),
    );
    let out = &r.stdout;
    assert!(out.ends_with("end\n"), "stdout {out:?} stderr {}", r.stderr);
    for secret in &secrets {
        assert!(
            !out.contains(secret),
            "{secret:?} read in the container: {out}"
        );
    }
    assert!(out.contains("len=0\n"), "{out}");
    assert!(
        !out.contains("unmounted") && !out.contains("mounted-proc"),
        "{out}"
    );
    for f in ["kcore", "keys", "timer_list", "sched_debug", "interrupts"] {
        // A file this kernel lacks reads as nothing at all (wc fails).
        let masked = out.contains(&format!("{f}=0\n"))
            || (!Path::new("/proc").join(f).exists() && out.contains(&format!("{f}=\n")));
        assert!(masked, "/proc/{f} not masked: {out}");
    }
    // Only the empty mount point itself.
    assert!(
        out.contains("/sys/firmware\n") && !out.contains("/sys/firmware/"),
        "{out}"
    );
}

#[test]
fn a_fork_bomb_in_a_container_stops_at_the_default_pids_limit() {
    require!(common::container_host());
    let (_d, rt) = common::runtime();
    let cid = id("forkbomb");
    let mut s = probe_spec(&cid, &["forkbomb"]);
    // No pids limit in the spec: the default applies. Memory is capped so a
    // broken pids limit fails this test instead of the host.
    s.resources = Resources {
        memory_bytes: Some(1 << 30),
        ..Default::default()
    };
    assert_eq!(s.resources.pids, None);
    rt.start(&s).unwrap();
    // Should an assertion fail, the bomb must not outlive the test.
    let guard = DeleteOnDrop(&rt, &cid);
    let stdout = rt.log_paths(&cid).stdout;
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let text = fs::read_to_string(&stdout).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.starts_with("forked=")) {
            break l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the bomb never stopped forking: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // "forked=N errno=E": N children besides the probe itself.
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    let forked = field("forked=");
    assert_eq!(field("errno="), libc::EAGAIN as u64, "{line}");
    assert_eq!(forked + 1, DEFAULT_PIDS_LIMIT, "{line}");
    // The cgroup holds exactly the limit, and the host can still fork.
    let current = common::cgroup_dirs(&cid)
        .iter()
        .find_map(|d| fs::read_to_string(d.join("pids.current")).ok())
        .map(|c| c.trim().parse::<u64>().unwrap());
    assert_eq!(current, Some(DEFAULT_PIDS_LIMIT));
    let t = Instant::now();
    assert!(Command::new("true").status().unwrap().success());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the host was slowed: {:?}",
        t.elapsed()
    );
    drop(guard);
    assert!(common::cgroup_dirs(&cid).is_empty());
}

struct DeleteOnDrop<'a>(&'a Runtime, &'a str);

impl Drop for DeleteOnDrop<'_> {
    fn drop(&mut self) {
        self.0
            .delete(self.1)
            .unwrap_or_else(|e| eprintln!("delete {}: {e}", self.1));
    }
}
