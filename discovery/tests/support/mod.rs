//! A private two-host LAN for mDNS tests: network namespaces `<name>-a` and
//! `<name>-b` joined by a veth pair, nothing else. Every packet the tests send
//! stays on that wire. The namespaces and every process started here are removed
//! on drop, also when a test fails.

#![allow(dead_code)] // each test file uses a different part

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The veth end's name in both namespaces.
pub const LINK: &str = "lan0";

/// What every test here needs: root, to create network namespaces. Checked with
/// `cloudos_testkit::require!` (a skip, or a failure under `CLOUDOS_STRICT=1`).
pub fn lan_host() -> Result<(), cloudos_testkit::Missing> {
    cloudos_testkit::root("network namespaces")
}

/// Runs `cmd`, failing with its output if it does not succeed.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

pub struct Lan {
    pub a: String,
    pub b: String,
    pub dir: PathBuf,
    processes: Vec<(String, Child)>,
}

impl Lan {
    /// `tag` keeps tests running in parallel apart.
    pub fn new(tag: &str) -> Lan {
        let base = format!("cdisc-{}-{tag}", std::process::id());
        let dir = std::env::temp_dir().join(&base);
        let lan = Lan {
            a: format!("{base}-a"),
            b: format!("{base}-b"),
            dir,
            processes: Vec::new(),
        };
        // Leftovers of a crashed earlier run with the same pid: start clean.
        lan.remove_namespaces();
        let _ = std::fs::remove_dir_all(&lan.dir);
        std::fs::create_dir_all(&lan.dir).expect("create the test directory");

        let (a, b) = (lan.a.as_str(), lan.b.as_str());
        ip(&["netns", "add", a]);
        ip(&["netns", "add", b]);
        ip(&[
            "link", "add", LINK, "netns", a, "type", "veth", "peer", "name", LINK, "netns", b,
        ]);
        for (ns, addr, peer) in [(a, ADDR_A, ADDR_B), (b, ADDR_B, ADDR_A)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", LINK]);
            ip(&["-n", ns, "link", "set", LINK, "up"]);
            // A default route, as on a real LAN: libmdns sends its multicast by the
            // routing table and gets `network is unreachable` without one.
            ip(&[
                "-n",
                ns,
                "route",
                "add",
                "default",
                "via",
                &peer.to_string(),
            ]);
        }
        // mdns-sd ignores interfaces whose carrier is not up yet.
        for ns in [a, b] {
            let up = wait_for(Duration::from_secs(5), || {
                let out = run(Command::new("ip").args(["-n", ns, "-o", "link", "show", LINK]));
                String::from_utf8_lossy(&out.stdout)
                    .contains("state UP")
                    .then_some(())
            });
            assert!(up.is_some(), "{LINK} in {ns} is not up after 5 s");
        }
        lan
    }

    /// Runs `f` on a thread inside namespace `ns`. Threads it starts (the mDNS
    /// libraries start their own) inherit the namespace.
    pub fn in_ns<T: Send + 'static>(&self, ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{ns}");
        thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            setns(file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// Starts a long-running process; it is stopped (SIGTERM, then SIGKILL) on drop.
    pub fn spawn(&mut self, what: &str, cmd: &mut Command) -> u32 {
        let log = File::create(self.dir.join(format!("{what}.log"))).expect("create a log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
        let pid = child.id();
        self.processes.push((what.to_owned(), child));
        pid
    }

    pub fn log(&self, what: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{what}.log"))).unwrap_or_default()
    }

    fn remove_namespaces(&self) {
        for ns in [&self.a, &self.b] {
            if Path::new("/run/netns").join(ns).exists() {
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for (what, child) in self.processes.iter_mut().rev() {
            stop(what, child);
        }
        self.remove_namespaces();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stop(what: &str, child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    eprintln!("{what} did not stop on SIGTERM; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// With `DISCOVERY_TEST_LOG=debug` (or trace...), the libraries' log goes to stderr.
pub fn init_log() {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            eprintln!(
                "{:5} {}: {}",
                record.level(),
                record.target(),
                record.args()
            );
        }
        fn flush(&self) {}
    }
    static LOGGER: Stderr = Stderr;
    let level = std::env::var("DISCOVERY_TEST_LOG")
        .ok()
        .and_then(|l| l.parse().ok());
    if let Some(level) = level {
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(level);
        }
    }
}
