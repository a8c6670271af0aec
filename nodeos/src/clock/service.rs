//! `nodeos svc clock`: keeps the clock right over SNTP. Asks the servers in
//! `policy::sources`' order (`cloudos.ntp`, the DHCP lease's, the master) and follows the
//! first that answers, stepping or slewing (`policy::adjustment`); after a step the
//! hardware clock follows. It also measures the clock against the master's when the
//! master is not the server it follows, and warns when they drift apart. Every ten minutes
//! it saves the time on the data partition.
//!
//! On a master node it has no master to ask: with no server set or leased it serves its
//! own clock (the master role runs the SNTP server, see `roles::master`).

use std::path::Path;
use std::time::{Duration, Instant};

use cloudos_time::policy::{self, Adjustment, Source, SourceKind};
use cloudos_time::Sample;

use super::state::ClockState;
use super::{saved, show_offset, system};
use crate::net::state::NetState;
use crate::settings::{NodeRole, Settings};

/// How long one server gets to answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

pub fn run(settings: &Settings) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    crate::supervisor::ready::report();
    runtime.block_on(keep(settings));
    Ok(())
}

/// The master's API address, for a compute node: the setting, else the identity it
/// joined with (the master found by mDNS is known only then).
fn master_api(settings: &Settings) -> Option<String> {
    if settings.role != NodeRole::Compute {
        return None;
    }
    settings.master.clone().or_else(|| {
        cloudos_agent::IdentityStore::new(Path::new(crate::roles::agent::DATA_DIR)).master_address()
    })
}

async fn keep(settings: &Settings) {
    let mut good_in_a_row = 0u32;
    let mut last_save = Instant::now();
    let mut last_note: Option<String> = None;
    let mut was_drifting = false;
    loop {
        let dhcp = NetState::read().map(|n| n.ntp).unwrap_or_default();
        let master = master_api(settings);
        let sources = policy::sources(&settings.ntp, &dhcp, master.as_deref());
        let mut state = ClockState::default();
        match first_answer(&sources).await {
            Some((source, sample)) => {
                good_in_a_row += 1;
                let residual = apply(source, &sample);
                state.synced = true;
                state.server = Some(source.server.clone());
                state.source = Some(source.kind.to_string());
                state.offset_secs = Some(sample.offset_secs());
                state.master_offset_secs = match source.kind {
                    SourceKind::Master => Some(residual as f64 / 1e9),
                    _ => master_offset(&sources).await,
                };
            }
            None => {
                good_in_a_row = 0;
                state.note = Some(if sources.is_empty() {
                    match settings.role {
                        NodeRole::Master => {
                            "no time server set or leased: this master's own clock is the cluster's"
                                .to_owned()
                        }
                        _ => "no time server yet: set cloudos.ntp, or join a master".to_owned(),
                    }
                } else {
                    let names: Vec<&str> = sources.iter().map(|s| s.server.as_str()).collect();
                    format!("no answer from {}", names.join(", "))
                });
            }
        }
        if state.note != last_note {
            if let Some(note) = &state.note {
                log::info!("clock: {note}");
            }
            last_note = state.note.clone();
        }
        let warning = state.warning();
        match (&warning, was_drifting) {
            (Some(w), false) => log::warn!("clock: {w}"),
            (None, true) => log::info!(
                "clock: back within {}s of the master's",
                policy::DRIFT_WARNING.as_secs()
            ),
            _ => {}
        }
        was_drifting = warning.is_some();
        state.publish();
        if last_save.elapsed() >= policy::SAVE_EVERY {
            saved::save_now();
            last_save = Instant::now();
        }
        tokio::time::sleep(policy::next_poll(good_in_a_row)).await;
    }
}

/// The first source that answers, in order.
async fn first_answer(sources: &[Source]) -> Option<(&Source, Sample)> {
    for source in sources {
        match cloudos_time::query(&source.server, QUERY_TIMEOUT).await {
            Ok(sample) => return Some((source, sample)),
            Err(e) => log::debug!("clock: {e}"),
        }
    }
    None
}

/// The clock against the master's (seconds), when a master is among the sources.
async fn master_offset(sources: &[Source]) -> Option<f64> {
    let master = sources.iter().find(|s| s.kind == SourceKind::Master)?;
    match cloudos_time::query(&master.server, QUERY_TIMEOUT).await {
        Ok(sample) => Some(sample.offset_secs()),
        Err(e) => {
            log::debug!("clock: the master: {e}");
            None
        }
    }
}

/// Steps or slews by the sample's offset; returns what is left to correct (nanoseconds).
fn apply(source: &Source, sample: &Sample) -> i64 {
    match policy::adjustment(sample.offset_nanos) {
        Adjustment::Step(nanos) => match system::step(nanos) {
            Ok(_) => {
                log::info!(
                    "clock: stepped by {} to {} ({})",
                    show_offset(nanos),
                    source.server,
                    source.kind
                );
                match system::write_rtc() {
                    Ok(true) => log::debug!("clock: hardware clock set"),
                    Ok(false) => {}
                    Err(e) => log::warn!("clock: {e}"),
                }
                saved::save_now();
                0
            }
            Err(e) => {
                log::warn!("clock: {e}");
                nanos
            }
        },
        Adjustment::Slew(nanos) => {
            if let Err(e) = system::slew(nanos) {
                log::warn!("clock: {e}");
            }
            nanos
        }
    }
}
