//! Timeout scaling.
//!
//! Boot times under TCG vary a lot with host load: a `-kernel` boot that takes
//! ~4 s on an idle host took ~38 s while two `rustc` jobs shared the 2 cores.
//! Tests state the timeout they expect on a normal host and pass it through
//! [`scaled`], so a slow CI runner can set `CLOUDOS_TIMEOUT_SCALE=3` instead of
//! every test hard-coding worst cases.

use std::time::Duration;

/// Multiplies `base` by `CLOUDOS_TIMEOUT_SCALE` (a float, default 1.0).
pub fn scaled(base: Duration) -> Duration {
    let factor = std::env::var("CLOUDOS_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f > 0.0)
        .unwrap_or(1.0);
    base.mul_f64(factor)
}
