//! What each run uses of the node, measured for each heartbeat from its container's cgroup
//! (the runtime reads the files). CPU is a rate: the time used since the previous sample
//! over the time between them, so the sampler keeps each run's last reading.

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
    /// The usage of `runs` now, read with `read` (a run's cgroup; `None`: gone). A run seen
    /// for the first time reports its memory and I/O, and no CPU yet (there is no interval
    /// to measure over). Runs no longer asked about are forgotten.
    pub fn sample(
        &mut self,
        runs: &[String],
        now: Instant,
        read: impl Fn(&str) -> Option<Usage>,
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
            out.insert(
                run.clone(),
                TaskUsage {
                    cpu_millicores,
                    memory_bytes: usage.memory_bytes,
                    io_read_bytes: usage.io_read_bytes,
                    io_write_bytes: usage.io_write_bytes,
                },
            );
            seen.insert(run.clone(), (usage, now));
        }
        self.last = seen;
        out
    }
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
    fn cpu_is_a_rate_between_two_samples_and_gone_runs_are_forgotten() {
        let mut sampler = Sampler::default();
        let t0 = Instant::now();
        let runs = vec!["t-1.1".to_string(), "t-2.1".to_string()];
        let first = sampler.sample(&runs, t0, |run| match run {
            "t-1.1" => Some(reading(1_000_000, 4096)),
            _ => None,
        });
        assert_eq!(first.len(), 1, "t-2.1 has no cgroup: not reported");
        assert_eq!(first["t-1.1"].cpu_millicores, 0, "no interval yet");
        assert_eq!(first["t-1.1"].memory_bytes, 4096);
        // Half a CPU over two seconds: 1 s of CPU time.
        let second = sampler.sample(&runs, t0 + Duration::from_secs(2), |_| {
            Some(reading(2_000_000, 8192))
        });
        assert_eq!(second["t-1.1"].cpu_millicores, 500);
        assert_eq!(second["t-2.1"].cpu_millicores, 0, "first seen now");
        assert_eq!(second["t-1.1"].io_write_bytes, 20);
        // A counter that went back (a restarted container) reads as idle, not as a wrap.
        let third = sampler.sample(&runs[..1], t0 + Duration::from_secs(4), |_| {
            Some(reading(10, 8192))
        });
        assert_eq!(third["t-1.1"].cpu_millicores, 0);
        assert_eq!(
            sampler.last.len(),
            1,
            "t-2.1 was not asked about: forgotten"
        );
    }
}
