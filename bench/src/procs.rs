//! Processes and what the kernel says about them: the master as a child in a namespace,
//! entering a namespace, CPU time and memory from /proc, the open-files limit.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cloudos_cluster::Token;
use cloudos_tests::nodes::spawn_tied;

/// Raises RLIMIT_NOFILE (soft, and hard when allowed) to `want`; children inherit it.
pub fn raise_nofile(want: u64) -> anyhow::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if lim.rlim_cur >= want {
            return Ok(());
        }
        lim.rlim_max = lim.rlim_max.max(want);
        lim.rlim_cur = want;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            bail!(
                "cannot raise the open files limit to {want}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Moves the calling thread into namespace `name`; threads it starts later are there too.
pub fn enter_netns(name: &str) -> anyhow::Result<()> {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).with_context(|| format!("open {path}"))?;
    use std::os::fd::AsRawFd;
    // SAFETY: setns on an fd we hold open.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {path}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// A `nodeos` process started with `ip netns exec` (which execs in place: the child's PID
/// is nodeos's), its output in files. Killed when dropped.
pub struct NodeosProc {
    pub child: Child,
    pub out: PathBuf,
    pub err: PathBuf,
}

impl NodeosProc {
    pub fn start(
        netns: &str,
        nodeos: &Path,
        args: &[&str],
        logs: &Path,
        what: &str,
    ) -> anyhow::Result<Self> {
        let out = logs.join(format!("{what}.out"));
        let err = logs.join(format!("{what}.err"));
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", netns])
            .arg(nodeos)
            .args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&out)?)
            .stderr(File::create(&err)?);
        let child = spawn_tied(cmd).with_context(|| format!("starting {what}"))?;
        Ok(NodeosProc { child, out, err })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until stderr contains `line`; the process's output in the error otherwise.
    pub fn wait_log(&mut self, line: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let err = std::fs::read_to_string(&self.err).unwrap_or_default();
            if err.contains(line) {
                return Ok(());
            }
            if Instant::now() >= deadline || !matches!(self.child.try_wait(), Ok(None)) {
                bail!("no {line:?} from the process:\n{err}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The value after `label` in stdout, up to whitespace.
    pub fn stdout_field(&self, label: &str) -> Option<String> {
        let out = std::fs::read_to_string(&self.out).ok()?;
        out.lines()
            .find_map(|l| l.split(label).nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    }

    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for NodeosProc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// utime + stime of `pid` (or `self`), in seconds.
pub fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime is field 14, stime 15: indices 11 and 12 counting from state.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) as f64 / hz
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The `p`th percentile (nearest rank) of `values`; zero when empty.
pub fn percentile(values: &[Duration], p: usize) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// `nodeos master` of cluster `bench` in namespace `netns`, its state and logs in `dir`,
/// waited for until it listens; with the admin token it printed.
pub fn start_master(
    netns: &str,
    nodeos: &Path,
    dir: &Path,
    extra: &[&str],
) -> anyhow::Result<(NodeosProc, Token)> {
    let data = dir.join("master").to_string_lossy().into_owned();
    let mut args = vec![
        "master",
        "--data-dir",
        &data,
        "--name",
        "bench-master",
        "--cluster-name",
        "bench",
    ];
    args.extend_from_slice(extra);
    let mut master = NodeosProc::start(netns, nodeos, &args, dir, "master")?;
    master.wait_log("master listening on", Duration::from_secs(20))?;
    let token = master
        .stdout_field("admin token: ")
        .context("the master printed no admin token")?
        .parse()?;
    Ok((master, token))
}
