//! What the `clock` service knows, published for `nodeos status` as a small JSON file
//! under /run (the service and PID 1 are separate processes).

use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "/run/cloudos/clock.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClockState {
    /// A server answered at the last poll and the clock follows it.
    pub synced: bool,
    /// `host:port` of that server.
    pub server: Option<String>,
    /// Where it came from: `cloudos.ntp`, `dhcp` or `master`.
    pub source: Option<String>,
    /// Its last offset (positive: the clock was behind), in seconds.
    pub offset_secs: Option<f64>,
    /// The clock against the master's, when the master is known and answers, in seconds.
    pub master_offset_secs: Option<f64>,
    /// Why it is not synced, or what is wrong (drift from the master).
    pub note: Option<String>,
}

impl ClockState {
    /// One line for `nodeos status`.
    pub fn render(&self) -> String {
        let mut line = match (&self.server, self.synced) {
            (Some(server), true) => format!(
                "clock synced to {server} ({}) offset {}",
                self.source.as_deref().unwrap_or("?"),
                self.offset_secs
                    .map(|s| super::show_offset((s * 1e9) as i64))
                    .unwrap_or_else(|| "?".into())
            ),
            _ => "clock not synced".to_owned(),
        };
        if let Some(m) = self.master_offset_secs {
            line.push_str(&format!(
                "  master offset {}",
                super::show_offset((m * 1e9) as i64)
            ));
        }
        if let Some(note) = &self.note {
            line.push_str(&format!(" ({note})"));
        }
        line
    }

    /// The warning for `nodeos status`, when the clock is far from the master's.
    pub fn warning(&self) -> Option<String> {
        let m = self.master_offset_secs?;
        cloudos_time::policy::drifting((m * 1e9) as i64).then(|| {
            format!(
                "the clock is {} off the master's; check cloudos.ntp and the DHCP time servers",
                super::show_offset((m * 1e9) as i64)
            )
        })
    }

    /// What a compute node tells its master with each heartbeat (`cloudos node show`).
    pub fn report(&self) -> cloudos_cluster::api::ClockReport {
        cloudos_cluster::api::ClockReport {
            synced: self.synced,
            source: self.server.as_ref().map(|server| match &self.source {
                Some(kind) => format!("{server} ({kind})"),
                None => server.clone(),
            }),
            offset_secs: self.offset_secs,
        }
    }

    pub fn publish(&self) {
        match serde_json::to_vec_pretty(self) {
            Ok(bytes) => {
                if let Err(e) = cloudos_cluster::files::write_atomic(STATE_FILE, &bytes) {
                    log::warn!("cannot write {STATE_FILE}: {e}");
                }
            }
            Err(e) => log::warn!("cannot encode the clock state: {e}"),
        }
    }

    pub fn read() -> Option<ClockState> {
        let bytes = std::fs::read(STATE_FILE).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let synced = ClockState {
            synced: true,
            server: Some("10.0.0.2:123".into()),
            source: Some("master".into()),
            offset_secs: Some(0.004),
            master_offset_secs: Some(0.004),
            note: None,
        };
        assert_eq!(
            synced.render(),
            "clock synced to 10.0.0.2:123 (master) offset +0.004s  master offset +0.004s"
        );
        assert_eq!(synced.warning(), None);
        let drifting = ClockState {
            server: Some("10.0.0.1:123".into()),
            source: Some("dhcp".into()),
            master_offset_secs: Some(-12.5),
            ..synced
        };
        assert!(drifting
            .warning()
            .is_some_and(|w| w.contains("-12.5s off the master's")));
        assert_eq!(ClockState::default().render(), "clock not synced");
    }
}
