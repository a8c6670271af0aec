//! The node roles as this binary runs them. The roles themselves are libraries
//! (`cloudos-master`, `cloudos-agent`) that read no boot settings and parse no flags: this
//! module maps `nodeos master` / `nodeos agent` flags and the boot settings onto their
//! configs, and runs them as a tool, as a service under PID 1, or (through `host`) as a
//! systemd unit.

pub mod agent;
pub mod etcd_pack;
pub mod master;
pub mod master_join;
pub mod restore;

use std::time::Duration;

use cloudos_cluster::token::parse_ttl;

/// A duration flag (`3s`, `7d`), in the syntax of token TTLs.
fn parse_duration(value: &str) -> Result<Duration, String> {
    let d = parse_ttl(value).map_err(|e| e.to_string())?;
    Ok(d.unsigned_abs())
}

/// The kernel's host name, lowercased; `fallback` when it has none.
pub fn host_name(fallback: &str) -> String {
    nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty() && h != "(none)")
        .unwrap_or_else(|| fallback.to_owned())
}
