//! Times create → start → wait → delete of busybox `/bin/true` through the
//! CloudOS runtime and, interleaved in the same run, through `runc run` and
//! `crun run` on a bundle with the same root filesystem. Prints a Markdown
//! table (used by scripts/bench-runtime.sh, which prepares the environment).
//!
//!   cloudos-runtime-bench --rootfs DIR --work DIR [--runs N] [--shim PATH [--shim-arg ARG]…] [--peers runc,crun]
//!
//! `--shim nodeos --shim-arg shim` times the shim as nodes run it (`nodeos shim`, the
//! static binary); the default is the crate's own `cloudos-shim` beside this binary.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cloudos_runtime::{ContainerSpec, Runtime, ShimCommand};

/// Every single run is bounded: a hung peer must not hang the benchmark.
const RUN_TIMEOUT: Duration = Duration::from_secs(20);

struct Args {
    rootfs: PathBuf,
    work: PathBuf,
    runs: usize,
    shim: PathBuf,
    shim_args: Vec<String>,
    peers: Vec<String>,
}

fn parse_args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let exe = std::env::current_exe()?;
    let mut args = Args {
        rootfs: PathBuf::new(),
        work: PathBuf::new(),
        runs: 30,
        shim: exe.with_file_name("cloudos-shim"),
        shim_args: Vec::new(),
        peers: vec!["runc".into(), "crun".into()],
    };
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--rootfs" => args.rootfs = val()?.into(),
            "--work" => args.work = val()?.into(),
            "--runs" => args.runs = val()?.parse().context("--runs takes a number")?,
            "--shim" => args.shim = val()?.into(),
            "--shim-arg" => args.shim_args.push(val()?),
            "--peers" => {
                args.peers = val()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }
            _ => bail!("unknown argument {a}; usage: cloudos-runtime-bench --rootfs DIR --work DIR [--runs N] [--shim PATH [--shim-arg ARG]...] [--peers runc,crun]"),
        }
    }
    if args.rootfs.as_os_str().is_empty() || args.work.as_os_str().is_empty() {
        bail!("--rootfs and --work are required");
    }
    Ok(args)
}

/// A bundle for the peers: their default spec, running `/bin/true` on the
/// same read-only root filesystem.
fn peer_bundle(work: &Path, rootfs: &Path) -> Result<PathBuf> {
    let bundle = work.join("bundle");
    fs::create_dir_all(&bundle)?;
    let status = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(&bundle)
        .status()
        .context("runc spec")?;
    if !status.success() {
        bail!("runc spec failed");
    }
    let path = bundle.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&fs::read(&path)?)?;
    cfg["process"]["terminal"] = false.into();
    cfg["process"]["args"] = serde_json::json!(["/bin/true"]);
    cfg["root"]["path"] = rootfs.display().to_string().into();
    cfg["root"]["readonly"] = true.into();
    fs::write(&path, serde_json::to_vec_pretty(&cfg)?)?;
    Ok(bundle)
}

/// Runs a command to completion within RUN_TIMEOUT; kills it past that.
fn run_bounded(cmd: &mut Command) -> Result<()> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // SAFETY: pidfd_open on our own unreaped child; the fd is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as i32, 0) };
    if fd >= 0 {
        // SAFETY: fd was just returned by pidfd_open.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, RUN_TIMEOUT.as_millis() as i32) };
        if n == 0 {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {RUN_TIMEOUT:?}");
        }
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloudos-runtime-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench() -> Result<()> {
    let args = parse_args()?;
    let rootfs = fs::canonicalize(&args.rootfs).context("--rootfs")?;
    fs::create_dir_all(&args.work)?;
    let work = fs::canonicalize(&args.work)?;
    let rt = Runtime::open(
        work.join("cloudos"),
        ShimCommand {
            program: args.shim.clone(),
            args_prefix: args.shim_args.clone(),
        },
    )?;
    let bundle = if args.peers.is_empty() {
        PathBuf::new()
    } else {
        peer_bundle(&work, &rootfs)?
    };
    let names: Vec<String> = std::iter::once("cloudos".to_string())
        .chain(args.peers.iter().cloned())
        .collect();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let warmup = 2;
    // For looking into where the time goes: the shim logs its phases.
    let show_shim_log = std::env::var_os("CLOUDOS_BENCH_SHIM_LOG").is_some();
    for run in 0..args.runs + warmup {
        // Rotate the order so no runtime always goes first after the others.
        for k in 0..names.len() {
            let which = (run + k) % names.len();
            let name = &names[which];
            let id = format!("bench-{name}-{run}");
            let t = Instant::now();
            let result = if which == 0 {
                let spec = ContainerSpec {
                    id: id.clone(),
                    layers: vec![rootfs.clone()],
                    args: vec!["/bin/true".into()],
                    readonly_root: true,
                    ..Default::default()
                };
                (|| -> Result<()> {
                    let t0 = Instant::now();
                    rt.start(&spec)?;
                    let t1 = Instant::now();
                    let exit = rt.wait(&id, Some(RUN_TIMEOUT))?;
                    if show_shim_log {
                        eprintln!("start {:?} wait {:?}", t1 - t0, t1.elapsed());
                    }
                    if show_shim_log {
                        let log = work.join("cloudos").join(&id).join("shim.log");
                        eprint!("{}", fs::read_to_string(log).unwrap_or_default());
                    }
                    rt.delete(&id)?;
                    if !exit.success() {
                        bail!("/bin/true ended with {exit:?}");
                    }
                    Ok(())
                })()
            } else {
                let state = work.join(format!("{name}-state"));
                run_bounded(
                    Command::new(name)
                        .arg("--root")
                        .arg(&state)
                        .args(["run", "--bundle"])
                        .arg(&bundle)
                        .arg(&id),
                )
            };
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            result.with_context(|| format!("{name} run {run}"))?;
            if run >= warmup {
                times[which].push(ms);
            }
        }
    }
    let stats: Vec<(f64, f64)> = times
        .iter_mut()
        .map(|t| {
            t.sort_by(f64::total_cmp);
            (percentile(t, 0.5), percentile(t, 0.9))
        })
        .collect();
    let crun = names.iter().position(|n| n == "crun").map(|i| stats[i].0);
    println!("| runtime | p50 | p90 | vs crun p50 |\n|---|---|---|---|");
    for (name, (p50, p90)) in names.iter().zip(&stats) {
        let label = match name.as_str() {
            "cloudos" => format!(
                "CloudOS ({}, libcontainer 0.7)",
                shim_name(&args.shim, &args.shim_args)
            ),
            other => format!("{other} {}", version(other)),
        };
        let ratio = crun
            .map(|c| format!("{:.2}×", p50 / c))
            .unwrap_or_else(|| "–".into());
        println!("| {label} | {p50:.1} ms | {p90:.1} ms | {ratio} |");
    }
    if let Some(c) = crun {
        let ours = stats[0].0;
        println!(
            "\n{} runs each, interleaved, on {} cores. Target: no slower than crun at the median: **{}** ({ours:.1} ms vs {c:.1} ms).",
            args.runs,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            if ours <= c { "met" } else { "missed" }
        );
    }
    Ok(())
}

/// `nodeos shim` or `cloudos-shim`: what ran the containers.
fn shim_name(shim: &Path, args: &[String]) -> String {
    let program = shim
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::iter::once(program)
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn version(bin: &str) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(2).map(String::from))
        })
        .unwrap_or_default()
}
