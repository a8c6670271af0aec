//! Containers run for real on this host (root, cgroup v1 or v2): exit codes,
//! output, the process's view (env, cwd, args, user, root, network), limits,
//! kill, start failures and recovery after a shim is killed.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use cloudos_runtime::{ContainerNetwork, ContainerStatus, Resources, RuntimeError, User};
use cloudos_testkit::require;
use common::{id, run, sh, spec};

#[test]
fn exit_codes() {
    require!(common::container_host());
    let (_d, rt) = common::runtime();
    let ok = run(&rt, &spec(&id("exit0"), &["true"]));
    assert_eq!(ok.exit.code, Some(0));
    assert!(ok.exit.success());
    let three = run(&rt, &sh(&id("exit3"), "exit 3"));
    assert_eq!(three.exit.code, Some(3));
    assert_eq!(three.exit.signal, None);
    assert!(!three.exit.oom_killed && !three.exit.lost);
    assert!(three.exit.finished_at_unix_ms > 0);
}

#[test]
fn stdout_and_stderr_go_to_their_files() {
    require!(common::container_host());
    let (_d, rt) = common::runtime();
    let r = run(
        &rt,
        &sh(&id("logs"), "echo to-out; echo to-err >&2; echo more-out"),
    );
    assert_eq!(r.stdout, "to-out\nmore-out\n");
    assert_eq!(r.stderr, "to-err\n");
}

#[test]
fn env_cwd_and_args_are_honoured() {
    require!(common::container_host());
    let (_d, rt) = common::runtime();
    let mut s = spec(
        &id("env"),
        &[
            "sh",
            "-c",
            "echo \"$FOO|$(pwd)|$1|$2|$#\"",
            "argv0",
            "a b",
            "c",
        ],
    );
    s.env = vec!["FOO=bar baz".into()];
    s.cwd = "/etc".into();
    let r = run(&rt, &s);
    assert_eq!(r.stdout, "bar baz|/etc|a b|c|2\n", "stderr: {}", r.stderr);
}

#[test]
fn signals_start_out_unblocked_and_sigpipe_default() {
    require!(common::container_host());
    let (_d, rt) = common::runtime();
    // The shim blocks signals and (as every Rust binary) ignores SIGPIPE;
    // neither may leak into the container, or pipes would end differently.
    let r = run(
        &rt,
        &spec(
            &id("sigs"),
            &["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"],
        ),
    );
    let field = |name: &str| {
        r.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap_or_else(|| panic!("no {name} in {:?} (stderr {})", r.stdout, r.stderr))
    };
    assert_eq!(field("SigBlk:"), 0);
    assert_eq!(
        field("SigIgn:") & (1 << (libc::SIGPIPE - 1)),
        0,
        "SIGPIPE ignored"
    );
}

#[test]
fn a_missing_working_directory_is_created() {
    require!(common::container_host());
    let (_d, rt) = common::runtime();
    let mut s = spec(&id("cwd"), &["pwd"]);
    s.cwd = "/work/dir".into();
    let r = run(&rt, &s);
    assert_eq!(r.stdout, "/work/dir\n", "stderr: {}", r.stderr);
    assert!(
        !common::layers()[0].join("work").exists(),
        "made in an image layer"
    );
}

#[test]
fn user_ids_are_applied() {
    require!(common::container_host());
    let (_d, rt) = common::runtime();
    let mut s = sh(
        &id("user"),
        "id -u; id -g; touch /tmp/x && stat -c %u:%g /tmp/x",
    );
    s.user = Some(User {
        uid: 1000,
        gid: 1001,
    });
    let r = run(&rt, &s);
    assert_eq!(r.stdout, "1000\n1001\n1000:1001\n", "stderr: {}", r.stderr);
    let root = run(&rt, &sh(&id("root"), "id -u"));
    assert_eq!(root.stdout, "0\n");
}

#[test]
fn layers_are_stacked_and_writes_stay_in_the_container() {
    require!(common::container_host());
    let (_d, rt) = common::runtime();
    let r = run(
        &rt,
        &sh(&id("layers"), "cat /etc/layer2; test -e /etc/gone && echo gone-visible; echo new > /etc/new; rm /etc/layer2; echo ok"),
    );
    assert_eq!(r.stdout, "from layer 1\nok\n", "stderr: {}", r.stderr);
    let layers = common::layers();
    assert!(
        layers[1].join("etc/layer2").exists(),
        "a delete reached the image layer"
    );
    assert!(!layers[0].join("etc/new").exists() && !layers[1].join("etc/new").exists());
}

#[test]
fn memory_limit_ends_in_the_oom_killer() {
    require!(common::container_host());
    let (_d, rt) = common::runtime();
    let mut s = sh(
        &id("oom"),
        "x=0123456789abcdef; while true; do x=\"$x$x\"; done",
    );
    s.resources = Resources {
        memory_bytes: Some(32 << 20),
        ..Default::default()
    };
    let r = run(&rt, &s);
    assert!(r.exit.oom_killed, "{:?} stderr: {}", r.exit, r.stderr);
    assert_eq!(r.exit.signal, Some(libc::SIGKILL));
}

#[test]
fn pids_limit_caps_a_fork_bomb() {
    require!(common::container_host());
    let (_d, rt) = common::runtime();
    // Thirty background sleeps against a limit of 8 processes: forks fail,
    // the shell goes on, and the container still exits.
    let mut s = sh(
        &id("pids"),
        "n=0; while [ $n -lt 30 ]; do sleep 1 & n=$((n+1)); done; wait; echo finished",
    );
    s.resources = Resources {
        pids: Some(8),
        ..Default::default()
    };
    let start = Instant::now();
    let r = run(&rt, &s);
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(
        r.stderr.contains("fork"),
        "no fork failure: {:?} {}",
        r.exit,
        r.stderr
    );
}

#[test]
fn limits_reach_the_cgroup() {
    require!(common::container_host());
    let (_d, rt) = common::runtime();
    let cid = id("limits");
    let mut s = spec(&cid, &["sleep", "1000"]);
    s.resources = Resources {
        cpu_millis: Some(250),
        memory_bytes: Some(48 << 20),
        pids: Some(20),
    };
    rt.start(&s).unwrap();
    let dirs = common::cgroup_dirs(&cid);
    let read = |file: &str| {
        dirs.iter()
            .find_map(|d| fs::read_to_string(d.join(file)).ok())
            .map(|s| s.trim().to_string())
    };
    if let Some(max) = read("cpu.max") {
        assert_eq!(max, "25000 100000");
        assert_eq!(read("memory.max").unwrap(), (48u64 << 20).to_string());
        assert_eq!(read("pids.max").unwrap(), "20");
    } else {
        assert_eq!(read("cpu.cfs_quota_us").unwrap(), "25000");
        assert_eq!(read("cpu.cfs_period_us").unwrap(), "100000");
        assert_eq!(
            read("memory.limit_in_bytes").unwrap(),
            (48u64 << 20).to_string()
        );
        assert_eq!(read("pids.max").unwrap(), "20");
    }
    rt.delete(&cid).unwrap();
    assert!(common::cgroup_dirs(&cid).is_empty());
}

#[test]
fn kill_cancels_a_running_container() {
    require!(common::container_host());
    let (_d, rt) = common::runtime();
    let cid = id("kill");
    rt.start(&spec(&cid, &["sleep", "1000"])).unwrap();
    let ContainerStatus::Running { pid } = rt.status(&cid).unwrap() else {
        panic!("not running")
    };
    assert!(pid > 0 && Path::new(&format!("/proc/{pid}")).exists());
    assert!(matches!(
        rt.wait(&cid, Some(Duration::from_millis(100))),
        Err(RuntimeError::WaitTimeout { .. })
    ));
    rt.kill(&cid, libc::SIGKILL).unwrap();
    let exit = rt.wait(&cid, Some(Duration::from_secs(10))).unwrap();
    assert_eq!(exit.signal, Some(libc::SIGKILL));
    assert_eq!(exit.code, None);
    assert!(matches!(rt.status(&cid).unwrap(), ContainerStatus::Exited(e) if e == exit));
    // Killing what already exited is fine.
    rt.kill(&cid, libc::SIGTERM).unwrap();
    assert!(matches!(
        rt.kill(&cid, 0),
        Err(RuntimeError::InvalidSignal { .. })
    ));
    rt.delete(&cid).unwrap();
    assert!(matches!(
        rt.status(&cid),
        Err(RuntimeError::NotFound { .. })
    ));
}

/// A command run in a running container (a health check's) sees what the container
/// sees (its files, environment, user and processes) and nothing of the host; its exit
/// code and output come back; one that runs too long is killed; a stopped container runs
/// nothing.
#[test]
fn exec_runs_inside_the_container_as_its_process_does() {
    require!(common::container_host());
    let (_d, rt) = common::runtime();
    let cid = id("exec");
    let mut s = sh(&cid, "echo ready > /tmp/state; sleep 1000");
    s.env = vec!["ROLE=primary".into()];
    s.user = Some(User {
        uid: 1234,
        gid: 1234,
    });
    rt.start(&s).unwrap();
    let argv = |script: &str| -> Vec<String> { vec!["/bin/sh".into(), "-c".into(), script.into()] };
    let second = Duration::from_secs(5);
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let r = rt
            .exec(
                &cid,
                &argv("cat /tmp/state; echo \"$ROLE $(id -u)\"; echo oops >&2"),
                second,
            )
            .unwrap();
        if r.output.contains("ready") || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(seen.success(), "{seen:?}");
    assert_eq!(seen.output, "ready\nprimary 1234\noops\n");
    // Its own pid namespace (the container's init is 1, the host's processes are not
    // there) and its own files: a file on the host is not to be found.
    let host_file = std::env::temp_dir().join(format!("host-only-{}", std::process::id()));
    fs::write(&host_file, "host secret").unwrap();
    let script = format!(
        "ls /proc | grep -c '^[0-9]'; cat /proc/1/cmdline | tr '\\0' ' '; echo; cat {} || echo no-host-file",
        host_file.display()
    );
    let view = rt.exec(&cid, &argv(&script), second).unwrap();
    let _ = fs::remove_file(&host_file);
    assert!(view.output.contains("sleep 1000"), "{view:?}");
    assert!(view.output.contains("no-host-file"), "{view:?}");
    assert!(!view.output.contains("host secret"), "{view:?}");
    let count: u32 = view
        .output
        .lines()
        .next()
        .unwrap_or("0")
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(count < 10, "it sees {count} processes: {view:?}");
    let three = rt.exec(&cid, &argv("exit 3"), second).unwrap();
    assert_eq!((three.exit_code, three.success()), (Some(3), false));
    let slow = rt
        .exec(&cid, &argv("sleep 30"), Duration::from_millis(300))
        .unwrap();
    assert!(slow.timed_out && !slow.success(), "{slow:?}");
    assert!(rt.exec(&cid, &[], second).is_err());
    rt.kill(&cid, libc::SIGKILL).unwrap();
    rt.wait(&cid, Some(Duration::from_secs(10))).unwrap();
    let gone = rt.exec(&cid, &argv("true"), second).unwrap_err();
    assert!(gone.to_string().contains("not running"), "{gone}");
    rt.delete(&cid).unwrap();
}

#[test]
fn a_shell_init_gets_sigterm() {
    require!(common::container_host());
    let (_d, rt) = common::runtime();
    let cid = id("term");
    rt.start(&sh(
        &cid,
        "trap 'echo got-term; exit 7' TERM; while true; do sleep 0.05; done",
    ))
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    rt.kill(&cid, libc::SIGTERM).unwrap();
    let exit = rt.wait(&cid, Some(Duration::from_secs(10))).unwrap();
    assert_eq!(exit.code, Some(7));
    let out = fs::read_to_string(rt.log_paths(&cid).stdout).unwrap();
    assert_eq!(out, "got-term\n");
    rt.delete(&cid).unwrap();
}

#[test]
fn delete_kills_a_running_container() {
    require!(common::container_host());
    let (d, rt) = common::runtime();
    let cid = id("delrun");
    rt.start(&spec(&cid, &["sleep", "1000"])).unwrap();
    rt.delete(&cid).unwrap();
    assert!(!d.path().join(&cid).exists());
    assert!(common::cgroup_dirs(&cid).is_empty());
    assert!(rt.list().unwrap().is_empty());
}

#[test]
fn command_not_found_is_a_clear_error_and_leaves_nothing() {
    require!(common::container_host());
    let (d, rt) = common::runtime();
    for (name, cmd) in [
        ("nf-abs", "/bin/no-such-tool"),
        ("nf-path", "no-such-tool"),
        ("nf-dir", "/etc"),
    ] {
        let cid = id(name);
        match rt.start(&spec(&cid, &[cmd])) {
            Err(RuntimeError::CommandNotFound { id: eid, command }) => {
                assert_eq!(eid, cid);
                assert_eq!(command, cmd);
            }
            other => panic!("{cmd}: expected CommandNotFound, got {other:?}"),
        }
        assert!(!d.path().join(&cid).exists());
        assert!(common::cgroup_dirs(&cid).is_empty());
    }
    assert!(rt.list().unwrap().is_empty());
    assert!(common::mounts_under(d.path()).is_empty());
}

#[test]
fn bad_specs_are_refused_before_anything_runs() {
    require!(common::container_host());
    let (d, rt) = common::runtime();
    assert!(matches!(
        rt.start(&spec("Bad/Id", &["true"])),
        Err(RuntimeError::InvalidId { .. })
    ));
    let mut s = spec(&id("nolayer"), &["true"]);
    s.layers.push("/nonexistent/layer".into());
    assert!(matches!(
        rt.start(&s),
        Err(RuntimeError::LayerMissing { .. })
    ));
    let mut s = spec(&id("noout"), &["true"]);
    s.output_dir = Some("/nonexistent/out".into());
    assert!(matches!(
        rt.start(&s),
        Err(RuntimeError::InvalidSpec { .. })
    ));
    assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    assert!(matches!(
        rt.status("nothere"),
        Err(RuntimeError::NotFound { .. })
    ));
    assert!(matches!(
        rt.wait("nothere", None),
        Err(RuntimeError::NotFound { .. })
    ));
    assert!(matches!(
        rt.kill("nothere", 9),
        Err(RuntimeError::NotFound { .. })
    ));
    assert!(matches!(
        rt.delete("nothere"),
        Err(RuntimeError::NotFound { .. })
    ));
    // The same id twice.
    let cid = id("twice");
    rt.start(&spec(&cid, &["sleep", "1000"])).unwrap();
    assert!(matches!(
        rt.start(&spec(&cid, &["true"])),
        Err(RuntimeError::AlreadyExists { .. })
    ));
    assert_eq!(rt.list().unwrap(), vec![cid.clone()]);
    rt.delete(&cid).unwrap();
}

#[test]
fn readonly_root_refuses_writes() {
    require!(common::container_host());
    let (_d, rt) = common::runtime();
    let mut s = sh(
        &id("ro"),
        "echo x > /etc/new && echo wrote; echo x > /tmp/new && echo wrote-tmp; exit 0",
    );
    s.readonly_root = true;
    let r = run(&rt, &s);
    assert_eq!(r.stdout, "", "stderr: {}", r.stderr);
    assert!(r.stderr.contains("Read-only file system"), "{}", r.stderr);
}

#[test]
fn output_dir_is_shared_with_the_host() {
    require!(common::container_host());
    let (_d, rt) = common::runtime();
    let out = tempfile::tempdir().unwrap();
    let mut s = sh(
        &id("output"),
        "echo result > /output/answer.txt && ls /output",
    );
    s.output_dir = Some(out.path().to_path_buf());
    s.readonly_root = true;
    let r = run(&rt, &s);
    assert_eq!(r.exit.code, Some(0), "stderr: {}", r.stderr);
    assert_eq!(
        fs::read_to_string(out.path().join("answer.txt")).unwrap(),
        "result\n"
    );
}

#[test]
fn network_none_has_only_loopback() {
    require!(common::container_host());
    let (_d, rt) = common::runtime();
    let ifaces = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '";
    let mut s = sh(&id("netnone"), ifaces);
    s.network = ContainerNetwork::None;
    let r = run(&rt, &s);
    assert_eq!(r.stdout, "lo\n", "stderr: {}", r.stderr);
    // The host's network has more than loopback (or at least the same).
    let host = run(&rt, &sh(&id("nethost"), ifaces));
    let host_ifaces = fs::read_to_string("/proc/net/dev").unwrap().lines().count() - 2;
    assert_eq!(host.stdout.lines().count(), host_ifaces);
}

#[test]
fn hostname_is_set() {
    require!(common::container_host());
    let (_d, rt) = common::runtime();
    let mut s = spec(&id("host"), &["hostname"]);
    s.hostname = Some("worker-7".into());
    assert_eq!(run(&rt, &s).stdout, "worker-7\n");
}

#[test]
fn recover_cleans_up_after_a_killed_shim() {
    require!(common::container_host());
    let (d, rt) = common::runtime();
    let lost = id("lost");
    let kept = id("kept");
    let done = id("done");
    rt.start(&spec(&lost, &["sleep", "1000"])).unwrap();
    rt.start(&spec(&kept, &["sleep", "1000"])).unwrap();
    rt.start(&spec(&done, &["true"])).unwrap();
    rt.wait(&done, Some(Duration::from_secs(10))).unwrap();
    let ContainerStatus::Running { pid } = rt.status(&lost).unwrap() else {
        panic!("not running")
    };
    let shim: serde_json::Value =
        serde_json::from_slice(&fs::read(d.path().join(&lost).join("shim.json")).unwrap()).unwrap();
    let shim_pid = shim["pid"].as_i64().unwrap() as i32;
    // SAFETY: kill(2) of the shim we just started.
    unsafe { libc::kill(shim_pid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !matches!(rt.status(&lost).unwrap(), ContainerStatus::Exited(_)) {
        assert!(Instant::now() < deadline, "shim did not die");
        std::thread::sleep(Duration::from_millis(10));
    }
    // A fresh runtime, as after an agent restart.
    let rt2 = cloudos_runtime::Runtime::open(d.path(), common::shim()).unwrap();
    let report = rt2.recover().unwrap();
    assert_eq!(report.lost, vec![lost.clone()]);
    assert_eq!(report.running, vec![kept.clone()]);
    assert_eq!(report.exited, vec![done.clone()]);
    let ContainerStatus::Exited(e) = rt2.status(&lost).unwrap() else {
        panic!("lost container still running")
    };
    assert!(e.lost && e.code.is_none() && e.signal.is_none());
    assert!(common::cgroup_dirs(&lost).is_empty());
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}")).exists()
        && !fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z")
    {
        assert!(
            Instant::now() < deadline,
            "the container's process survived recover"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(matches!(
        rt2.status(&kept).unwrap(),
        ContainerStatus::Running { .. }
    ));
    for c in [&lost, &kept, &done] {
        rt2.delete(c).unwrap();
    }
    assert!(rt2.list().unwrap().is_empty());
}
