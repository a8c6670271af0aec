//! A wrong clock at first contact (docs/design.md, "time at first contact"): before a join,
//! and before giving up on an identity that looks expired, the agent reads its master's
//! time over a connection checked against the CA pin at a time when the master's
//! certificates are valid (`client::master_time`) and hands the offset to the OS's
//! [`SetClock`] hook, which decides whether to set the clock. Then the join (or the
//! session) checks the certificate normally, at the corrected time.
//!
//! Owns no clock: without a hook (a host install keeps its own time service) it does
//! nothing, and the join says why it fails.

use cloudos_cluster::client;
use cloudos_cluster::CaPin;

/// Sets this machine's clock by an offset (the master's time minus ours), if the OS
/// agrees; given by `nodeos` under PID 1.
pub type SetClock = std::sync::Arc<dyn Fn(time::Duration) + Send + Sync>;

/// Asks the master at `master` for its time and hands the offset to `set_clock`. A master
/// that cannot be reached or is not the pinned one changes nothing here: the join that
/// follows reports why.
pub async fn from_master(master: &str, pin: CaPin, set_clock: &SetClock) {
    match client::master_time(master, pin).await {
        Ok(told) => {
            log::debug!(
                "the master at {master} is {} from this clock (round trip {:?})",
                told.offset,
                told.round_trip
            );
            set_clock(told.offset);
        }
        Err(e) => log::debug!("cannot read the master's time at {master}: {e}"),
    }
}
