//! `cluster-bench`: the cluster figures of docs/benchmarks.md, measured on this machine with the
//! release `nodeos` as its own process, in network namespaces the bench makes and removes.
//!
//! - `join`: agent process start → Ready in the master's node list, over the namespace
//!   bridge, with the master's address and by mDNS.
//! - `load`: one master process and this process simulating N agents, each a real join with
//!   its own key and certificate, a real mTLS WebSocket, a heartbeat every second; the
//!   heartbeat round trip as the agents see it, the master's CPU and memory.
//!
//! Prints a Markdown table on stdout (progress on stderr); `scripts/bench-cluster.sh`
//! puts it into docs/benchmarks.md.
//!
//!     cluster-bench --nodeos target/release/nodeos [--runs 10] [--agents 5000] [--seconds 20]

mod join;
mod load;
mod procs;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

struct Args {
    nodeos: PathBuf,
    runs: usize,
    agents: usize,
    window: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        nodeos: PathBuf::from("target/release/nodeos"),
        runs: 10,
        agents: 5000,
        window: Duration::from_secs(20),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--nodeos" => args.nodeos = PathBuf::from(value()?),
            "--runs" => args.runs = value()?.parse()?,
            "--agents" => args.agents = value()?.parse()?,
            "--seconds" => args.window = Duration::from_secs(value()?.parse()?),
            other => bail!(
                "unknown argument {other}; usage: cluster-bench [--nodeos PATH] [--runs N] [--agents N] [--seconds S]"
            ),
        }
    }
    if !args.nodeos.is_file() {
        bail!(
            "{} is missing: run cargo build --release -p nodeos first",
            args.nodeos.display()
        );
    }
    Ok(args)
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if unsafe { libc::geteuid() } != 0 {
        bail!("the cluster bench needs root (network namespaces)");
    }
    procs::raise_nofile(args.agents as u64 * 2 + 1024)?;
    let join = join::run(&args.nodeos, args.runs)?;
    let load = load::run(&args.nodeos, args.agents, args.window)?;

    let date = time::OffsetDateTime::now_utc().date();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("| cluster, release build, {cores} cores, {date} | result | target |\n|---|---|---|");
    println!(
        "| join: agent start → Ready, with `--master` (median / p90 of {}) | {} / {} | ≤ 1 s: {} |",
        join.direct.len(),
        ms(procs::percentile(&join.direct, 50)),
        ms(procs::percentile(&join.direct, 90)),
        verdict(procs::percentile(&join.direct, 50) <= Duration::from_secs(1)),
    );
    println!(
        "| join: agent start → Ready, master found by mDNS (median / p90 of {}) | {} / {} | ≤ 1 s: {} |",
        join.mdns.len(),
        ms(procs::percentile(&join.mdns, 50)),
        ms(procs::percentile(&join.mdns, 90)),
        verdict(procs::percentile(&join.mdns, 50) <= Duration::from_secs(1)),
    );
    println!(
        "| simulated agents joined through the API (one multi-use token) | {} in {:.1} s ({:.0}/s) | |",
        load.agents,
        load.join_time.as_secs_f64(),
        load.agents as f64 / load.join_time.as_secs_f64()
    );
    println!(
        "| agents holding a WebSocket, beating at 1 Hz / Ready of all nodes in the master's status | {} / {} of {} | 5000 |",
        load.connected, load.ready.0, load.ready.1
    );
    println!(
        "| heartbeat round trip p50 / p99 ({} heartbeats in {} s) | {} / {} | p99 ≤ 50 ms: {} |",
        load.rtts.len(),
        load.window.as_secs(),
        ms(procs::percentile(&load.rtts, 50)),
        ms(procs::percentile(&load.rtts, 99)),
        verdict(procs::percentile(&load.rtts, 99) <= Duration::from_millis(50)),
    );
    println!(
        "| heartbeats without an answer (timeouts, broken connections) | {} | 0 |",
        load.lost
    );
    println!(
        "| master CPU over the window (% of one core) | {:.0} % | |",
        load.master_cpu
    );
    println!(
        "| master RSS now / peak (VmRSS / VmHWM) | {} / {} MiB | ≤ 256 MB: {} |",
        load.master_rss_kib / 1024,
        load.master_hwm_kib / 1024,
        verdict(load.master_hwm_kib * 1024 <= 256_000_000),
    );
    println!(
        "| load generator CPU over the window (% of one core, same {cores} cores) | {:.0} % | |",
        load.generator_cpu
    );
    Ok(())
}
