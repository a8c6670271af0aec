//! What each run uses of the node, measured for each heartbeat from its container's cgroup
//! (the runtime reads the files) and its link on the bridge. CPU is a rate: the time used
//! since the previous sample over the time between them, so the sampler keeps each run's
//! last reading.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use cloudos_cluster::workload::TaskUsage;
use cloudos_runtime::cgroup::Usage;

/// Each run's last reading, to turn CPU time into a rate.
#[derive(Debug, Default)]
pub struct Sampler {
    last: HashMap<String, (Usage, Instant)>,
}

impl Sampler {
    /// The usage of `runs` now, read with `read` (a run's cgroup; `None`: gone) and `net`
    /// (bytes it received and sent; `None`: no link of its own). A run seen for the first
    /// time reports its memory and I/O, and no CPU yet (there is no interval to measure
    /// over). Runs no longer asked about are forgotten.
    pub fn sample(
        &mut self,
        runs: &[String],
        now: Instant,
        read: impl Fn(&str) -> Option<Usage>,
        net: impl Fn(&str) -> Option<(u64, u64)>,
    ) -> BTreeMap<String, TaskUsage> {
        let mut out = BTreeMap::new();
        let mut seen = HashMap::new();
        for run in runs {
            let Some(usage) = read(run) else { continue };
            let cpu_millicores = match self.last.get(run) {
                Some((before, at)) => {
                    let used = usage.cpu_usec.saturating_sub(before.cpu_usec);
                    let micros = now.saturating_duration_since(*at).as_micros();
                    // millicores = µs used per µs elapsed × 1000.
                    match u64::try_from(micros) {
                        Ok(micros) if micros > 0 => used.saturating_mul(1000) / micros,
                        _ => 0,
                    }
                }
                None => 0,
            };
            let (net_rx_bytes, net_tx_bytes) = net(run).unwrap_or_default();
            out.insert(
                run.clone(),
                TaskUsage {
                    cpu_millicores,
                    memory_bytes: usage.memory_bytes,
                    io_read_bytes: usage.io_read_bytes,
                    io_write_bytes: usage.io_write_bytes,
                    net_rx_bytes,
                    net_tx_bytes,
                },
            );
            seen.insert(run.clone(), (usage, now));
        }
        self.last = seen;
        out
    }
}

/// What each link of the agent's network namespace received and sent, by name, from
/// `/proc/net/dev` (which, unlike `/sys/class/net`, always shows the reader's own
/// namespace).
pub fn link_traffic() -> std::collections::HashMap<String, (u64, u64)> {
    parse_net_dev(&std::fs::read_to_string("/proc/net/dev").unwrap_or_default())
}

/// `  name: rx_bytes rx_packets … (8 receive fields) tx_bytes …` lines.
fn parse_net_dev(text: &str) -> std::collections::HashMap<String, (u64, u64)> {
    text.lines()
        .filter_map(|line| {
            let (name, fields) = line.split_once(':')?;
            let fields: Vec<u64> = fields
                .split_whitespace()
                .map(|f| f.parse().ok())
                .collect::<Option<_>>()?;
            Some((name.trim().to_owned(), (*fields.first()?, *fields.get(8)?)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn reading(cpu_usec: u64, memory_bytes: u64) -> Usage {
        Usage {
            cpu_usec,
            memory_bytes,
            io_read_bytes: 10,
            io_write_bytes: 20,
        }
    }

    #[test]
    fn link_counters_come_from_proc_net_dev() {
        let text = "Inter-|   Receive                            |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets\n \
    lo:     560       8    0    0    0     0          0         0      560       8    0    0    0     0       0          0\n\
vc1a2b3c4d: 1500 10 0 0 0 0 0 0 90000 60 0 0 0 0 0 0\n";
        let links = parse_net_dev(text);
        assert_eq!(links["lo"], (560, 560));
        assert_eq!(links["vc1a2b3c4d"], (1500, 90000));
        assert_eq!(links.len(), 2, "the header lines are not links");
    }

    #[test]
    fn cpu_is_a_rate_between_two_samples_and_gone_runs_are_forgotten() {
        let mut sampler = Sampler::default();
        let t0 = Instant::now();
        let runs = vec!["t-1.1".to_string(), "t-2.1".to_string()];
        let net = |run: &str| (run == "t-1.1").then_some((100, 200));
        let first = sampler.sample(
            &runs,
            t0,
            |run| match run {
                "t-1.1" => Some(reading(1_000_000, 4096)),
                _ => None,
            },
            net,
        );
        assert_eq!(first.len(), 1, "t-2.1 has no cgroup: not reported");
        assert_eq!(first["t-1.1"].cpu_millicores, 0, "no interval yet");
        assert_eq!(first["t-1.1"].memory_bytes, 4096);
        assert_eq!(
            (first["t-1.1"].net_rx_bytes, first["t-1.1"].net_tx_bytes),
            (100, 200)
        );
        // Half a CPU over two seconds: 1 s of CPU time.
        let second = sampler.sample(
            &runs,
            t0 + Duration::from_secs(2),
            |_| Some(reading(2_000_000, 8192)),
            net,
        );
        assert_eq!(second["t-1.1"].cpu_millicores, 500);
        assert_eq!(second["t-2.1"].cpu_millicores, 0, "first seen now");
        assert_eq!(second["t-1.1"].io_write_bytes, 20);
        assert_eq!(second["t-2.1"].net_rx_bytes, 0, "no link of its own");
        // A counter that went back (a restarted container) reads as idle, not as a wrap.
        let third = sampler.sample(
            &runs[..1],
            t0 + Duration::from_secs(4),
            |_| Some(reading(10, 8192)),
            net,
        );
        assert_eq!(third["t-1.1"].cpu_millicores, 0);
        assert_eq!(
            sampler.last.len(),
            1,
            "t-2.1 was not asked about: forgotten"
        );
    }
}
