//! The agent: a compute node's side of the cluster. It joins a master with a
//! token (checking the master's CA against the token's pin first), keeps its
//! identity on the data partition, holds one connection open to the master
//! and sends heartbeats with telemetry over it.

use std::path::PathBuf;

use crate::settings::Settings;

/// `nodeos agent`: run the agent outside PID 1 (on a host, or in tests).
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Where the agent keeps its identity.
    #[arg(long, default_value = "/var/lib/cloudos")]
    pub data_dir: PathBuf,
}

/// `nodeos agent …` on a host.
pub fn main(args: AgentArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("the agent is not built yet")
}

/// The `agent` service under PID 1 (`cloudos.role=compute`).
pub fn run_service(settings: &Settings) -> anyhow::Result<()> {
    let _ = settings;
    anyhow::bail!("the agent is not built yet")
}
