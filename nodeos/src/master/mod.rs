//! The master role: the cluster's CA and join tokens, the node registry fed by
//! the agents' connections, and the HTTPS API (TLS 1.3, mTLS) the agents and
//! the `cloudos` CLI talk to. It never dials a node. State lives in the
//! cluster store under the data directory.

use std::path::PathBuf;

use crate::settings::Settings;

/// `nodeos master`: run the master outside PID 1 (on a host, or in tests).
#[derive(Debug, Clone, clap::Args)]
pub struct MasterArgs {
    /// Where the master keeps its state.
    #[arg(long, default_value = "/var/lib/cloudos")]
    pub data_dir: PathBuf,
}

/// `nodeos master …` on a host.
pub fn main(args: MasterArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("the master role is not built yet")
}

/// The `master` service under PID 1 (`cloudos.role=master`).
pub fn run_service(settings: &Settings) -> anyhow::Result<()> {
    let _ = settings;
    anyhow::bail!("the master role is not built yet")
}
