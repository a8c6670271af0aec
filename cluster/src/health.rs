//! Health checks of a workload (issue 21): what the node probes, how often, and what it
//! concludes. The node probes from outside the container (an HTTP GET or a TCP connect to
//! the container's own address: its bridge address; loopback on the host network), or
//! runs a command inside it (`--health-cmd`: `sh -c`, healthy on exit 0, as the
//! container's own user). A replica that fails its check leaves its service's rotation
//! and is restarted.
//!
//! Semantics (as Docker's, which people know): a probe runs every `interval`, and fails
//! when it takes longer than `timeout`; the check is *starting* until the first success,
//! *healthy* from then on, and *unhealthy* after `retries` failures in a row. Failures
//! within `start_period` of the container's start do not count (a slow start is not a
//! sick one).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::workload::{NetworkMode, SpecError};

/// Defaults, as Docker's but a shorter interval: a replica that dies leaves the rotation
/// in seconds, not half a minute.
pub const DEFAULT_INTERVAL_SECS: u32 = 5;
pub const DEFAULT_TIMEOUT_SECS: u32 = 2;
pub const DEFAULT_RETRIES: u32 = 3;
/// The bounds a check's times must keep: a probe at most every second, at least every
/// hour.
const MAX_SECS: u32 = 3600;
/// Longest HTTP path, as typed.
const MAX_PATH: usize = 1024;
/// Longest `--health-cmd`, as typed.
const MAX_COMMAND: usize = 1024;

/// What the node tries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// `GET path` on the container's `port`: healthy on a 2xx or 3xx answer.
    Http { port: u16, path: String },
    /// A TCP connection to the container's `port` is accepted.
    Tcp { port: u16 },
    /// `sh -c COMMAND` inside the container exits 0 within the timeout.
    Cmd { command: String },
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Http { port, path } => write!(f, "http {port}{path}"),
            Probe::Tcp { port } => write!(f, "tcp {port}"),
            Probe::Cmd { command } => write!(f, "cmd {:?}", crate::excerpt(command, 60)),
        }
    }
}

/// A workload's health check (`--health-http`, `--health-tcp` and the times).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub probe: Probe,
    #[serde(default = "default_interval")]
    pub interval_secs: u32,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u32,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default)]
    pub start_period_secs: u32,
}

fn default_interval() -> u32 {
    DEFAULT_INTERVAL_SECS
}
fn default_timeout() -> u32 {
    DEFAULT_TIMEOUT_SECS
}
fn default_retries() -> u32 {
    DEFAULT_RETRIES
}

impl HealthCheck {
    /// A check with the default times.
    pub fn new(probe: Probe) -> Self {
        HealthCheck {
            probe,
            interval_secs: DEFAULT_INTERVAL_SECS,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            retries: DEFAULT_RETRIES,
            start_period_secs: 0,
        }
    }

    /// The times in their bounds, a port, a path that is one, and a network the node can
    /// probe through (a container without one has no address to knock on).
    pub fn validate(&self, network: NetworkMode) -> Result<(), SpecError> {
        let bad = |what: &'static str, value: String, range: &str| SpecError::OutOfRange {
            what,
            value,
            range: range.to_owned(),
        };
        if !(1..=MAX_SECS).contains(&self.interval_secs) {
            return Err(bad(
                "health interval",
                format!("{}s", self.interval_secs),
                "1s to 1h",
            ));
        }
        if !(1..=self.interval_secs).contains(&self.timeout_secs) {
            return Err(bad(
                "health timeout",
                format!("{}s", self.timeout_secs),
                "1s to the interval",
            ));
        }
        if !(1..=100).contains(&self.retries) {
            return Err(bad("health retries", self.retries.to_string(), "1 to 100"));
        }
        if self.start_period_secs > MAX_SECS {
            return Err(bad(
                "health start period",
                format!("{}s", self.start_period_secs),
                "0s to 1h",
            ));
        }
        match &self.probe {
            Probe::Http { port, .. } | Probe::Tcp { port } if *port == 0 => {
                return Err(SpecError::Health("port 0 cannot be probed".into()))
            }
            Probe::Http { path, .. } => check_path(path)?,
            Probe::Tcp { .. } => {}
            // Run inside the container: it needs no address.
            Probe::Cmd { command } => return check_command(command),
        }
        if network == NetworkMode::None {
            return Err(SpecError::Health(
                "a container on --network none has no address to probe; use bridge or host".into(),
            ));
        }
        Ok(())
    }
}

/// An absolute path of printable ASCII without spaces: it goes into a request line as is.
fn check_path(path: &str) -> Result<(), SpecError> {
    let ok = path.starts_with('/')
        && path.len() <= MAX_PATH
        && path.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(SpecError::Health(format!(
            "{:?} is not an HTTP path such as /healthz",
            crate::excerpt(path, 80)
        )))
    }
}

/// A shell command of one line: it goes to `sh -c` in the container.
fn check_command(command: &str) -> Result<(), SpecError> {
    let ok = !command.trim().is_empty()
        && command.len() <= MAX_COMMAND
        && !command.chars().any(|c| c.is_control() && c != '\t');
    if ok {
        Ok(())
    } else {
        Err(SpecError::Health(format!(
            "--health-cmd takes one line of 1 to {MAX_COMMAND} characters, not {:?}",
            crate::excerpt(command, 80)
        )))
    }
}

/// `--health-cmd COMMAND`: run as `sh -c COMMAND` in the container.
pub fn parse_cmd(text: &str) -> Result<Probe, SpecError> {
    check_command(text)?;
    Ok(Probe::Cmd {
        command: text.to_owned(),
    })
}

/// `--health-http PORT[/PATH]`: `8080/healthz`, or `80` for `/`.
pub fn parse_http(text: &str) -> Result<Probe, SpecError> {
    let (port, path) = match text.split_once('/') {
        Some((port, rest)) => (port, format!("/{rest}")),
        None => (text, "/".to_owned()),
    };
    let port = parse_port(port, text)?;
    check_path(&path)?;
    Ok(Probe::Http { port, path })
}

/// `--health-tcp PORT`.
pub fn parse_tcp(text: &str) -> Result<Probe, SpecError> {
    Ok(Probe::Tcp {
        port: parse_port(text, text)?,
    })
}

fn parse_port(port: &str, whole: &str) -> Result<u16, SpecError> {
    match port.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(SpecError::Health(format!(
            "{:?} does not start with a port (1-65535), as in 8080/healthz",
            crate::excerpt(whole, 80)
        ))),
    }
}

/// Where a running replica stands, as its node reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// No probe has passed yet: out of the rotation.
    Starting,
    Healthy,
    /// Its probes failed `retries` times in a row: out of the rotation, about to restart.
    Unhealthy,
}

impl Health {
    /// Whether connections may go to it.
    pub fn serves(self) -> bool {
        self == Health::Healthy
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        })
    }
}

/// The check's verdicts over a container's life: fed each probe's result, says when the
/// health changes. Pure, so the rules are tested without a clock or a container.
#[derive(Debug, Clone)]
pub struct Verdict {
    retries: u32,
    start_period_secs: u32,
    health: Health,
    failures: u32,
}

impl Verdict {
    pub fn new(check: &HealthCheck) -> Self {
        Verdict {
            retries: check.retries,
            start_period_secs: check.start_period_secs,
            health: Health::Starting,
            failures: 0,
        }
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// One probe's result, `since_start` seconds after the container started; the new
    /// health when it changed.
    pub fn probed(&mut self, passed: bool, since_start: u64) -> Option<Health> {
        let before = self.health;
        if passed {
            self.failures = 0;
            self.health = Health::Healthy;
        } else if since_start >= u64::from(self.start_period_secs) {
            self.failures += 1;
            if self.failures >= self.retries {
                self.health = Health::Unhealthy;
            }
        }
        (self.health != before).then_some(self.health)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_parse_as_typed() {
        assert_eq!(
            parse_http("8080/healthz").unwrap(),
            Probe::Http {
                port: 8080,
                path: "/healthz".into()
            }
        );
        assert_eq!(
            parse_http("80").unwrap(),
            Probe::Http {
                port: 80,
                path: "/".into()
            }
        );
        assert_eq!(parse_tcp("5432").unwrap(), Probe::Tcp { port: 5432 });
        for bad in ["", "0/x", "http/x", "70000", "80/a b"] {
            assert!(parse_http(bad).is_err(), "{bad}");
        }
        assert!(parse_tcp("x").is_err());
        assert_eq!(
            parse_cmd("pg_isready -U app").unwrap(),
            Probe::Cmd {
                command: "pg_isready -U app".into()
            }
        );
        for bad in ["", "   ", "two\nlines", &"x".repeat(MAX_COMMAND + 1)] {
            assert!(parse_cmd(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn checks_keep_their_bounds_and_probes_need_an_address() {
        let check = HealthCheck::new(Probe::Tcp { port: 80 });
        assert!(check.validate(NetworkMode::Bridge).is_ok());
        assert!(check.validate(NetworkMode::Host).is_ok());
        let err = check.validate(NetworkMode::None).unwrap_err();
        assert!(err.to_string().contains("no address"), "{err}");
        let mut slow = check.clone();
        slow.timeout_secs = 10;
        assert!(
            slow.validate(NetworkMode::Bridge).is_err(),
            "timeout over the interval"
        );
        let mut never = check;
        never.retries = 0;
        assert!(never.validate(NetworkMode::Bridge).is_err());
        // A command runs inside the container: no address needed.
        let cmd = HealthCheck::new(parse_cmd("true").unwrap());
        assert!(cmd.validate(NetworkMode::None).is_ok());
    }

    #[test]
    fn starting_until_a_pass_unhealthy_after_the_retries_and_the_start_period_is_forgiven() {
        let mut check = HealthCheck::new(Probe::Tcp { port: 80 });
        check.retries = 2;
        check.start_period_secs = 10;
        let mut v = Verdict::new(&check);
        assert_eq!(v.health(), Health::Starting);
        // Failures in the start period do not count.
        assert_eq!(v.probed(false, 1), None);
        assert_eq!(v.probed(false, 6), None);
        assert_eq!(v.probed(true, 9), Some(Health::Healthy));
        assert_eq!(
            v.probed(false, 20),
            None,
            "one failure is not yet unhealthy"
        );
        assert_eq!(v.probed(true, 25), None, "a pass resets the count");
        assert_eq!(v.probed(false, 30), None);
        assert_eq!(v.probed(false, 35), Some(Health::Unhealthy));
        assert_eq!(v.probed(true, 40), Some(Health::Healthy));
        // Never passing after the start period: unhealthy without ever being healthy.
        let mut v = Verdict::new(&check);
        assert_eq!(v.probed(false, 10), None);
        assert_eq!(v.probed(false, 15), Some(Health::Unhealthy));
        assert!(!Health::Starting.serves() && !Health::Unhealthy.serves());
        assert!(Health::Healthy.serves());
    }
}
