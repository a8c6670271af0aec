//! The node's measurements for each heartbeat, read from `/proc` and `statvfs(2)`.
//! The parsers are pure functions over the files' text; [`Sampler`] reads the files and
//! remembers the previous CPU counters, so CPU use is measured between two heartbeats.

use std::path::Path;

use cloudos_cluster::api::{Capacity, Telemetry};

/// The version of this `nodeos`.
/// The version this binary was stamped with at release (see `cloudos_release::stamp`).
pub fn nodeos_version() -> String {
    cloudos_release::version().to_string()
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`, new at every boot): how the master
/// sees that a node it asked to reboot did.
pub fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_owned()).filter(|id| !id.is_empty())
}

/// The architecture as `uname -m` names it; a static binary runs on the one it was built for.
pub fn arch() -> &'static str {
    std::env::consts::ARCH
}

/// Cumulative CPU time of all CPUs, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// The aggregate `cpu` line of `/proc/stat`. Idle time is `idle + iowait`; guest time is
/// already counted in `user` and `nice`, so only the first eight columns are summed.
pub fn parse_cpu_times(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    if values.len() < 4 {
        return None;
    }
    let total: u64 = values.iter().sum();
    let idle = values[3] + values.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// The number of `cpuN` lines of `/proc/stat`: the CPUs online.
pub fn count_cpus(stat: &str) -> u64 {
    stat.lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count() as u64
}

/// Busy fraction between two samples, 0.0 to 1.0.
pub fn cpu_usage(before: CpuTimes, after: CpuTimes) -> f64 {
    let total = after.total.saturating_sub(before.total);
    if total == 0 {
        return 0.0;
    }
    (after.busy.saturating_sub(before.busy) as f64 / total as f64).clamp(0.0, 1.0)
}

/// `(MemTotal, MemTotal - MemAvailable)` in bytes from `/proc/meminfo`.
pub fn parse_meminfo(meminfo: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
            Some(kb * 1024)
        })
    };
    let total = field("MemTotal")?;
    // Kernels before 3.14 have no MemAvailable; free memory is the closest.
    let available = field("MemAvailable").or_else(|| field("MemFree"))?;
    Some((total, total.saturating_sub(available)))
}

/// Received and sent bytes from `/proc/net/dev`, summed over every interface but `lo`.
pub fn parse_net_dev(net_dev: &str) -> (u64, u64) {
    net_dev
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.trim() != "lo")
        .filter_map(|(_, counters)| {
            let c: Vec<&str> = counters.split_whitespace().collect();
            Some((
                c.first()?.parse::<u64>().ok()?,
                c.get(8)?.parse::<u64>().ok()?,
            ))
        })
        .fold((0, 0), |(rx, tx), (r, t)| (rx + r, tx + t))
}

/// The three load averages of `/proc/loadavg`.
pub fn parse_loadavg(loadavg: &str) -> Option<(f64, f64, f64)> {
    let mut it = loadavg.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

/// Whole seconds since boot from `/proc/uptime`.
pub fn parse_uptime(uptime: &str) -> Option<u64> {
    let secs: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    Some(secs as u64)
}

/// Reads the node's telemetry; keeps the CPU counters between calls.
#[derive(Debug, Default)]
pub struct Sampler {
    previous_cpu: Option<CpuTimes>,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Sampler {
    pub fn new() -> Self {
        Sampler::default()
    }

    /// One sample. A file that cannot be read leaves its fields at zero: telemetry is
    /// best effort and never stops a heartbeat.
    pub fn sample(&mut self, data_dir: &Path) -> Telemetry {
        let stat = read("/proc/stat");
        let cpu = parse_cpu_times(&stat);
        let cpu_usage = match (self.previous_cpu, cpu) {
            (Some(before), Some(after)) => cpu_usage(before, after),
            _ => 0.0,
        };
        if cpu.is_some() {
            self.previous_cpu = cpu;
        }
        let (mem_total_bytes, mem_used_bytes) =
            parse_meminfo(&read("/proc/meminfo")).unwrap_or_default();
        let (disk_total_bytes, disk_used_bytes) = disk_usage(data_dir);
        let (net_rx_bytes, net_tx_bytes) = parse_net_dev(&read("/proc/net/dev"));
        let (load1, load5, load15) = parse_loadavg(&read("/proc/loadavg")).unwrap_or_default();
        Telemetry {
            cpu_usage,
            mem_total_bytes,
            mem_used_bytes,
            disk_total_bytes,
            disk_used_bytes,
            net_rx_bytes,
            net_tx_bytes,
            load1,
            load5,
            load15,
            uptime_secs: parse_uptime(&read("/proc/uptime")).unwrap_or_default(),
            arch: arch().to_owned(),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            nodeos_version: nodeos_version(),
            capacity: Capacity {
                cpu_millicores: count_cpus(&stat).max(1) * 1000,
                memory_bytes: mem_total_bytes,
            },
            clock: None,
            clock_skew_secs: None,
            volumes: crate::workloads::volume_usage(data_dir),
            system: None,
        }
    }
}

/// `(total, used)` bytes of the file system holding `dir`; zeros when it cannot be read.
// The casts are no-ops on 64-bit targets but not on every libc's 32-bit ones.
#[allow(clippy::unnecessary_cast)]
fn disk_usage(dir: &Path) -> (u64, u64) {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(fs) => {
            let unit = fs.fragment_size() as u64;
            let total = fs.blocks() as u64 * unit;
            let free = fs.blocks_free() as u64 * unit;
            (total, total.saturating_sub(free))
        }
        Err(_) => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 5 50 800 20 3 2 0 7 0\ncpu0 50 2 25 400 10 1 1 0 0 0\ncpu1 50 3 25 400 10 2 1 0 0 0\nintr 1 2 3\nctxt 99\n";

    #[test]
    fn cpu_times_and_usage() {
        let before = parse_cpu_times(STAT).expect("cpu");
        assert_eq!(
            before,
            CpuTimes {
                busy: 160,
                total: 980
            }
        );
        assert_eq!(count_cpus(STAT), 2);
        let after = CpuTimes {
            busy: 260,
            total: 1180,
        };
        assert!((cpu_usage(before, after) - 0.5).abs() < 1e-9);
        assert_eq!(cpu_usage(after, after), 0.0);
        assert_eq!(parse_cpu_times("intr 1\n"), None);
        assert_eq!(parse_cpu_times("cpu  1 x 3 4\n"), None);
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:        2048 kB\nMemFree:          512 kB\nMemAvailable:    1024 kB\n";
        assert_eq!(parse_meminfo(text), Some((2048 * 1024, 1024 * 1024)));
        let old = "MemTotal:        2048 kB\nMemFree:          512 kB\n";
        assert_eq!(parse_meminfo(old), Some((2048 * 1024, 1536 * 1024)));
        assert_eq!(parse_meminfo(""), None);
    }

    #[test]
    fn net_dev_skips_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:  1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  eth0:  5000      50    0    0    0     0          0         0     7000      70    0    0    0     0       0          0\n  eth1:   100       1    0    0    0     0          0         0      200       2    0    0    0     0       0          0\n";
        assert_eq!(parse_net_dev(text), (5100, 7200));
    }

    #[test]
    fn loadavg_and_uptime() {
        assert_eq!(
            parse_loadavg("0.50 0.25 0.10 1/123 4567\n"),
            Some((0.5, 0.25, 0.1))
        );
        assert_eq!(parse_loadavg("0.5"), None);
        assert_eq!(parse_uptime("3723.45 7000.00\n"), Some(3723));
        assert_eq!(parse_uptime(""), None);
    }

    #[test]
    fn a_real_sample_on_this_host() {
        let mut sampler = Sampler::new();
        let first = sampler.sample(Path::new("/"));
        let second = sampler.sample(Path::new("/"));
        assert!(second.capacity.cpu_millicores >= 1000);
        assert!(first.mem_total_bytes > 0 && first.disk_total_bytes > 0);
        assert!((0.0..=1.0).contains(&second.cpu_usage));
        assert_eq!(second.nodeos_version, nodeos_version());
    }
}
