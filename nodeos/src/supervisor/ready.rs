//! The READY protocol, service side: a service tells the supervisor it is doing its job by
//! printing [`READY_LINE`] on its stdout; the runner (`runner`) waits for that line.

use std::io::Write;

pub use super::runner::READY_LINE;

/// Tells the supervisor that this service is doing its job.
pub fn report() {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{READY_LINE}");
    let _ = out.flush();
}
