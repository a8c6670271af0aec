//! Scheduling decisions per second and per-decision latency over a simulated cluster
//! (mixed architectures, labels and sizes) and a queue of mixed requests, for each
//! policy. Prints the Markdown table `scripts/bench-scheduler.sh` puts in docs/benchmarks.md.
//!
//!   cargo bench -p cloudos-scheduler -- [--nodes N] [--tasks N]
//!
//! The inputs come from a fixed-seed generator so every run schedules the same work.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cloudos_scheduler::{policy_by_name, NodeView, Request, Resources, Scheduler};

const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;
const TARGET_PER_SEC: f64 = 2_000.0;
const TARGET_P95: Duration = Duration::from_millis(5);

/// xorshift64*: deterministic and dependency-free; statistical quality is beside the point.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const ZONES: [&str; 4] = ["a", "b", "c", "d"];

fn cluster(rng: &mut Rng, count: usize) -> Vec<NodeView> {
    (0..count)
        .map(|i| {
            let arch = if rng.chance(25) { "aarch64" } else { "x86_64" };
            let mut labels = BTreeMap::new();
            labels.insert("zone".to_string(), rng.pick(&ZONES).to_string());
            labels.insert("disk".to_string(), rng.pick(&["ssd", "hdd"]).to_string());
            if rng.chance(5) {
                labels.insert("gpu".to_string(), "true".to_string());
            }
            let capacity = Resources::new(
                rng.pick(&[2_000, 4_000, 8_000, 16_000, 32_000, 64_000]),
                rng.pick(&[4, 8, 16, 32, 64, 128, 256]) * GI,
            );
            // Already running work: up to about half of each resource.
            let allocated = Resources::new(
                capacity.cpu_millis * rng.below(50) / 100,
                capacity.memory_bytes * rng.below(50) / 100,
            );
            NodeView {
                name: format!("node-{i:05}"),
                arch: arch.to_string(),
                labels,
                ready: !rng.chance(2),
                cordoned: false,
                capacity,
                allocated,
                groups: BTreeMap::new(),
                ports: BTreeMap::new(),
            }
        })
        .collect()
}

fn queue(rng: &mut Rng, count: usize) -> Vec<Request> {
    (0..count)
        .map(|i| {
            let mut req = Request::new(
                format!("task-{i:05}"),
                Resources::new(
                    rng.pick(&[100, 250, 500, 1_000, 2_000, 4_000, 8_000]),
                    rng.pick(&[
                        64 * MI,
                        128 * MI,
                        256 * MI,
                        512 * MI,
                        GI,
                        2 * GI,
                        4 * GI,
                        8 * GI,
                    ]),
                ),
            );
            match rng.below(10) {
                0 | 1 => req.archs = vec!["x86_64".into()],
                2 => req.archs = vec!["aarch64".into()],
                _ => {}
            }
            if rng.chance(20) {
                req.node_selector
                    .insert("zone".into(), rng.pick(&ZONES).into());
            }
            if rng.chance(3) {
                req.node_selector.insert("gpu".into(), "true".into());
                req.node_selector.insert("disk".into(), "ssd".into());
            }
            if rng.chance(30) {
                req.group = Some(format!("svc-{}", rng.below(count as u64 / 5 + 1)));
            }
            // Work that fits nowhere, so the no-fit path is part of the measurement.
            if rng.chance(3) {
                req.resources.cpu_millis = 128_000;
            }
            req
        })
        .collect()
}

struct Run {
    label: String,
    decisions: usize,
    placed: usize,
    total: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn percentile(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }
    fn per_sec(&self) -> f64 {
        self.decisions as f64 / self.total.as_secs_f64()
    }
}

/// Each request goes through `schedule_queue` on its own, so each decision (placement
/// and bookkeeping, or the no-fit report) is timed exactly as the master will see it.
fn run(
    label: String,
    sched: &Scheduler,
    nodes: &mut [NodeView],
    queue: Vec<Request>,
) -> (Run, Vec<Request>) {
    let mut latencies = Vec::with_capacity(queue.len());
    let mut waiting = Vec::new();
    let mut placed = 0;
    let decisions = queue.len();
    let start = Instant::now();
    for req in queue {
        let mut one = vec![req];
        let t = Instant::now();
        let out = sched.schedule_queue(nodes, &mut one);
        latencies.push(t.elapsed());
        placed += out.placed.len();
        waiting.append(&mut one);
    }
    let total = start.elapsed();
    latencies.sort();
    (
        Run {
            label,
            decisions,
            placed,
            total,
            latencies,
        },
        waiting,
    )
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let mut nodes_n = 5_000;
    let mut tasks_n = 10_000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.parse().ok())
                .expect("a number after the flag")
        };
        match arg.as_str() {
            "--nodes" => nodes_n = value(),
            "--tasks" => tasks_n = value(),
            // cargo bench passes --bench; nothing else is ours.
            _ => {}
        }
    }

    let mut rng = Rng(0x5eed_c10d_05ed_0001);
    let nodes = cluster(&mut rng, nodes_n);
    let tasks = queue(&mut rng, tasks_n);

    let mut runs = Vec::new();
    for policy in ["spread", "binpack"] {
        let sched = Scheduler::new(policy_by_name(policy).expect("a built-in policy"));
        let mut nodes = nodes.clone();
        let (first, waiting) = run(
            format!("{policy}, queue of {tasks_n}"),
            &sched,
            &mut nodes,
            tasks.clone(),
        );
        runs.push(first);
        // The master retries the waiting ones on every change; none fit, so this is the
        // path that scans twice and builds the reasons.
        let (retry, _) = run(
            format!("{policy}, retry of the {} waiting", waiting.len()),
            &sched,
            &mut nodes,
            waiting,
        );
        runs.push(retry);
    }

    println!("| {nodes_n} nodes | decisions | placed | decisions/s | p50 | p95 | p99 | target (≥ 2,000/s, p95 ≤ 5 ms) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for r in &runs {
        let (p50, p95, p99) = (r.percentile(0.50), r.percentile(0.95), r.percentile(0.99));
        let met = r.per_sec() >= TARGET_PER_SEC && p95 <= TARGET_P95;
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            r.label,
            r.decisions,
            r.placed,
            r.per_sec(),
            ms(p50),
            ms(p95),
            ms(p99),
            if met { "met" } else { "missed" }
        );
    }
}
