//! The per-container shim process (like containerd-shim or conmon). It is
//! exec'd by [`crate::Runtime::start`], so libcontainer's clone()s happen in
//! a fresh single-threaded process rather than in the agent's multi-threaded
//! one (fork-unsafe under musl's malloc), and the container outlives an agent
//! restart. It owns: assembling the root filesystem, creating and starting
//! the container, pumping its output into rotated log files, forwarding kill
//! requests, recording the exit and tearing everything down. It must not
//! touch anything outside `<root>/<id>/` and the container's cgroup.
//!
//! Protocol with the runtime: one JSON [`StartReport`] line on the shim's
//! stdout, then stdout is closed (EOF tells the runtime the report is
//! complete). Kill requests arrive as [`KILL_REQUEST_SIGNAL`] carrying the
//! signal number. The exit is recorded in `exit.json`.

use std::error::Error as _;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::cgroup;
use crate::logs::{RotatingLog, DEFAULT_LOG_LIMIT};
use crate::oci::{self, HostFacts};
use crate::process::KILL_REQUEST_SIGNAL;
use crate::rootfs;
use crate::seccomp::{self, ConfinedExecutor};
use crate::spec::ContainerSpec;
use crate::state::{self, ContainerRecord, ExitStatus, Layout, StartReport};
use crate::undo::Undo;

/// How long output is still collected after the container's init exited:
/// the rest of its pid namespace dies with it, so EOF normally comes at once.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Entry point of the shim. `args` are the arguments after the
/// `ShimCommand`'s prefix: `run <root> <id>`. Returns the process exit code.
pub fn shim_main(args: &[String]) -> i32 {
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .skip_while(|a| *a == "shim")
        .collect();
    match args.as_slice() {
        ["run", root, id] => run(Path::new(root), id),
        ["exec", root, id, timeout_ms, argv @ ..] => {
            crate::exec::exec_main(Path::new(root), id, timeout_ms, argv)
        }
        _ => {
            eprintln!(
                "usage: shim run <root> <id> | shim exec <root> <id> <timeout-ms> <command…>"
            );
            2
        }
    }
}

fn log(id: &str, msg: &str) {
    // stderr is <root>/<id>/shim.log (set up by the runtime).
    eprintln!("cloudos-shim {id}: {msg}");
}

fn run(root: &Path, id: &str) -> i32 {
    if crate::spec::validate_id(id).is_err() {
        eprintln!("cloudos-shim: invalid container id {id:?}");
        return 2;
    }
    let layout = Layout::new(root, id);
    // Our own session: a terminal's or the agent's process-group signals must
    // not reach the shim. Fails only if we already lead a group, which is fine.
    let _ = nix::unistd::setsid();
    // Orphans of the container (if any escape its pid namespace's init) are
    // reparented to us and reaped, instead of to PID 1.
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }

    let t0 = Instant::now();
    let started = start_container(&layout, id);
    let (_container, init, out_r, err_r) = match started {
        Ok(s) => s,
        Err(report) => {
            log(id, &format!("start failed: {report:?}"));
            send_report(&report);
            return 1;
        }
    };

    // Signals are blocked only now: the container's processes were cloned
    // from us and must not inherit a blocked mask. A SIGCHLD that came before
    // is caught by the first reap below.
    let sfd = match signal_fd() {
        Ok(fd) => fd,
        Err(e) => {
            let message = format!("cannot set up signal handling in the shim: {e}");
            teardown(&layout, id);
            send_report(&StartReport::Failed { message });
            return 1;
        }
    };
    let _ = state::write_json(&layout.container(), &ContainerRecord { pid: init.as_raw() });
    send_report(&StartReport::Started { pid: init.as_raw() });
    log(id, &format!("started pid {init} in {:?}", t0.elapsed()));

    let status = supervise(&layout, id, init, &sfd, out_r, err_r);
    let oom_killed = cgroup::oom_kills(&cgroup::dirs(id)) > 0;
    let exit = ExitStatus {
        oom_killed,
        finished_at_unix_ms: state::now_unix_ms(),
        ..status
    };
    if let Err(e) = state::write_json(&layout.exit(), &exit) {
        log(id, &format!("cannot record the exit: {e}"));
    }
    let t1 = Instant::now();
    teardown(&layout, id);
    log(
        id,
        &format!("exited {exit:?}; teardown took {:?}", t1.elapsed()),
    );
    0
}

/// Writes the report on stdout and closes it, so the runtime's read ends.
fn send_report(report: &StartReport) {
    let mut line = serde_json::to_vec(report).unwrap_or_default();
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&line);
    let _ = out.flush();
    // Replace fd 1 by /dev/null: the runtime may be gone later, and a write
    // to its closed pipe would SIGPIPE us.
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        // SAFETY: dup2 onto fd 1, which we own as the process's stdout.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}

type Started = (Container, Pid, OwnedFd, OwnedFd);

fn start_container(layout: &Layout, id: &str) -> Result<Started, StartReport> {
    let spec: ContainerSpec = match state::read_json(id, &layout.spec()) {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(StartReport::InvalidSpec {
                why: format!("{} is missing", layout.spec().display()),
            })
        }
        Err(e) => return Err(StartReport::InvalidSpec { why: e.to_string() }),
    };
    if let Err(e) = spec.validate() {
        return Err(StartReport::InvalidSpec { why: e.to_string() });
    }
    let spec = spec
        .with_env_files()
        .map_err(|why| StartReport::InvalidSpec { why })?;
    if let Some(missing) = spec.layers.iter().find(|l| !l.is_dir()) {
        return Err(StartReport::LayerMissing {
            path: missing.clone(),
        });
    }
    let failed = |message: String| StartReport::Failed { message };

    // A private mount namespace for the shim: the overlay root exists only
    // here and in the container, so it vanishes with them even when the shim
    // is SIGKILLed, and never shows up in the agent's mount table. Slave, not
    // private: an unmount on the host still propagates in.
    unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| failed(format!("cannot create the shim's mount namespace: {e}")))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| failed(format!("cannot make the shim's mounts private: {e}")))?;

    // libcontainer's state and the OCI bundle go on a tmpfs that only this
    // namespace sees: no disk writes for them, and nothing to remove later.
    let scratch = layout.scratch();
    fs::create_dir_all(&scratch)
        .and_then(|_| {
            mount(
                Some("tmpfs"),
                &scratch,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("mode=0700,size=4m"),
            )
            .map_err(std::io::Error::from)
        })
        .map_err(|e| failed(format!("cannot mount the shim's scratch tmpfs: {e}")))?;

    let rootfs = layout.rootfs();
    let t = Instant::now();
    let mut phases = String::new();
    let mut phase = |name: &str| phases.push_str(&format!(" {name} {:.1?}", t.elapsed()));
    phase("namespace");
    rootfs::mount_overlay(&spec.layers, &layout.upper(), &layout.work(), &rootfs)
        .map_err(failed)?;
    // From here on every way out but success undoes what was made, last first.
    let mut undo = Undo::new();
    undo.push(|| rootfs::unmount(&rootfs));

    phase("overlay");
    let env = spec.effective_env();
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(crate::spec::DEFAULT_PATH);
    if rootfs::find_command(&rootfs, &spec.args[0], path_var, spec.cwd_or_root()).is_none() {
        return Err(StartReport::CommandNotFound {
            command: spec.args[0].clone(),
        });
    }

    rootfs::ensure_dir_in_root(&rootfs, Path::new(spec.cwd_or_root()))
        .map_err(|why| StartReport::InvalidSpec { why })?;

    phase("checks");
    let host = host_facts();
    let oci = oci::build(&spec, &rootfs, &host).map_err(failed)?;
    phase("oci");
    // Compiled here, where an error can still be reported; installed by the
    // executor in the container's init, as the last thing before execve.
    let filters = seccomp::compile_native().map_err(|e| failed(e.to_string()))?;
    phase("seccomp");
    let bundle = layout.bundle();
    let lc_root = layout.libcontainer_root();
    for d in [&bundle, &lc_root] {
        fs::create_dir_all(d).map_err(|e| failed(format!("cannot create {}: {e}", d.display())))?;
    }
    phase("rootfs");
    oci.save(bundle.join("config.json"))
        .map_err(|e| failed(format!("cannot write the OCI config: {e}")))?;

    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC);
    let ((out_r, out_w), (err_r, err_w)) = match (pipe(), pipe()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            return Err(failed(format!("cannot create output pipes: {e}")))
        }
    };

    phase("bundle");
    // A container libcontainer created, even half, may hold a cgroup and processes.
    let created_in = lc_root.clone();
    undo.push(move || {
        delete_by_state(&created_in, id);
        cgroup::kill_and_remove(id, Duration::from_secs(2));
    });
    // Rust ignores SIGPIPE in its binaries, and an ignored signal stays
    // ignored across exec: give the container the default disposition (a
    // writer to a closed pipe dies) while libcontainer clones it.
    set_sigpipe(libc::SIG_DFL);
    let built = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(&lc_root)
        .map(|b| {
            b.with_executor(ConfinedExecutor::new(filters))
                .with_stdout(out_w)
                .with_stderr(err_w)
                .as_init(&bundle)
                .with_systemd(false)
                .with_detach(true)
                .build()
        });
    // Back to ignoring: the report is written to a pipe whose reader may be gone.
    set_sigpipe(libc::SIG_IGN);
    let mut container = match built {
        Ok(Ok(c)) => c,
        Ok(Err(e)) | Err(e) => return Err(classify(&e)),
    };
    phase("create");
    container.start().map_err(|e| classify(&e))?;
    phase("start");
    log(id, &format!("start phases:{phases}"));
    let Some(init) = container.pid() else {
        return Err(failed(
            "libcontainer reported no pid for the started container".into(),
        ));
    };
    undo.disarm();
    // libcontainer's Pid is from its own, older nix: it crosses by number.
    Ok((container, Pid::from_raw(init.as_raw()), out_r, err_r))
}

fn set_sigpipe(disposition: libc::sighandler_t) {
    // SAFETY: SIG_DFL and SIG_IGN are valid dispositions; no handler runs.
    unsafe {
        libc::signal(libc::SIGPIPE, disposition);
    }
}

/// Deletes the container libcontainer recorded under `lc_root`, from its state, so that
/// the undo step of a failed start needs no handle (there is none when the build failed).
fn delete_by_state(lc_root: &Path, id: &str) {
    if let Ok(mut c) = Container::load(lc_root.join(id)) {
        let _ = c.delete(true);
    }
}

/// The full error chain, and whether it is about cgroups.
fn classify(e: &libcontainer::error::LibcontainerError) -> StartReport {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    let cgroup_error = matches!(
        e,
        libcontainer::error::LibcontainerError::CgroupManager(_)
            | libcontainer::error::LibcontainerError::CgroupCreate(_)
            | libcontainer::error::LibcontainerError::CgroupGet(_)
            | libcontainer::error::LibcontainerError::OtherCgroup(_)
    ) || message.contains("cgroup");
    if cgroup_error {
        StartReport::Cgroup { message }
    } else {
        StartReport::Failed { message }
    }
}

fn host_facts() -> HostFacts {
    let v1_memsw = cgroup::hierarchies()
        .iter()
        .any(|h| h.join("memory.memsw.limit_in_bytes").exists());
    let resolv = PathBuf::from("/etc/resolv.conf");
    HostFacts {
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "cloudos".into()),
        v1_memsw,
        resolv_conf: resolv.is_file().then_some(resolv),
        nofile_hard: nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(_, hard)| hard)
            .unwrap_or(1024),
    }
}

const FORWARDED: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

fn signal_fd() -> nix::Result<SignalFd> {
    // SAFETY: sigemptyset/sigaddset only write into the local set; the
    // kill-request signal is a valid real-time signal number, which nix's
    // Signal enum cannot name.
    let mask = unsafe {
        let mut raw: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut raw);
        libc::sigaddset(&mut raw, libc::SIGCHLD);
        for s in FORWARDED {
            libc::sigaddset(&mut raw, s as i32);
        }
        libc::sigaddset(&mut raw, KILL_REQUEST_SIGNAL);
        SigSet::from_sigset_t_unchecked(raw)
    };
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
}

fn exit_of(ws: WaitStatus) -> Option<ExitStatus> {
    match ws {
        WaitStatus::Exited(_, code) => Some(ExitStatus {
            code: Some(code),
            ..Default::default()
        }),
        WaitStatus::Signaled(_, sig, _) => Some(ExitStatus {
            signal: Some(sig as i32),
            ..Default::default()
        }),
        _ => None,
    }
}

/// Reaps every exited child; returns the init's status once it is among them.
fn reap(init: Pid) -> Option<ExitStatus> {
    let mut found = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return found,
            Ok(ws) => {
                if ws.pid() == Some(init) {
                    found = exit_of(ws);
                }
            }
        }
    }
}

/// Pumps output and signals until the container's init has exited and its
/// output is drained. Returns its exit status.
fn supervise(
    layout: &Layout,
    id: &str,
    init: Pid,
    sfd: &SignalFd,
    out_r: OwnedFd,
    err_r: OwnedFd,
) -> ExitStatus {
    let paths = layout.logs();
    let open = |p: &Path| match RotatingLog::open(p, DEFAULT_LOG_LIMIT) {
        Ok(l) => Some(l),
        Err(e) => {
            log(
                id,
                &format!("cannot open {}: {e}; output is dropped", p.display()),
            );
            None
        }
    };
    let mut sinks = [open(&paths.stdout), open(&paths.stderr)];
    let mut pipes = [Some(out_r), Some(err_r)];
    let mut status = reap(init);
    let mut exited_at = status.map(|_| Instant::now());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(t) = exited_at {
            if pipes.iter().all(Option::is_none) || t.elapsed() >= DRAIN_AFTER_EXIT {
                break;
            }
        }
        let mut pfds = vec![libc::pollfd {
            fd: sfd.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        for p in pipes.iter().flatten() {
            pfds.push(libc::pollfd {
                fd: p.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout = match exited_at {
            Some(t) => DRAIN_AFTER_EXIT.saturating_sub(t.elapsed()).as_millis() as i32 + 1,
            None => -1,
        };
        // SAFETY: pfds is a valid array of pollfds for the whole call.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
        if n <= 0 {
            continue;
        }
        if pfds[0].revents != 0 {
            while let Ok(Some(si)) = sfd.read_signal() {
                let signo = si.ssi_signo as i32;
                if signo == libc::SIGCHLD {
                    if let Some(s) = reap(init) {
                        status = Some(s);
                        exited_at.get_or_insert_with(Instant::now);
                    }
                } else if status.is_none() {
                    // A kill request carries the signal to send; a plain
                    // TERM/INT/HUP/QUIT sent to the shim is passed on as is.
                    let sig = if signo == KILL_REQUEST_SIGNAL {
                        si.ssi_int
                    } else {
                        signo
                    };
                    // SAFETY: init is our child and not yet reaped (status is
                    // None), so its pid cannot have been reused.
                    unsafe {
                        libc::kill(init.as_raw(), sig);
                    }
                }
            }
        }
        // Map the remaining pollfds back to the pipes they came from.
        let mut k = 1;
        for i in 0..2 {
            let Some(p) = &pipes[i] else { continue };
            let revents = pfds[k].revents;
            k += 1;
            if revents == 0 {
                continue;
            }
            match nix::unistd::read(p, &mut buf) {
                Ok(0) => pipes[i] = None,
                Ok(n) => {
                    if let Some(sink) = sinks[i].as_mut() {
                        if let Err(e) = sink.write(&buf[..n]) {
                            log(id, &format!("cannot write output: {e}; output is dropped"));
                            sinks[i] = None;
                        }
                    }
                }
                Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
                Err(_) => pipes[i] = None,
            }
        }
    }
    status.unwrap_or_else(ExitStatus::lost_now)
}

/// Removes the container's processes and cgroup, and unmounts its root.
/// Done directly rather than through libcontainer's `delete`: with no hooks
/// and no Intel RDT in our specs that is all it would do, and its careful
/// procfs walks made it the slowest step of a short container's life.
/// libcontainer's state lives on the shim's scratch tmpfs and goes with the
/// shim's mount namespace.
fn teardown(layout: &Layout, id: &str) {
    let stuck = cgroup::kill_and_remove(id, Duration::from_secs(5));
    if !stuck.is_empty() {
        log(id, &format!("cgroup directories left behind: {stuck:?}"));
    }
    rootfs::unmount(&layout.rootfs());
}
