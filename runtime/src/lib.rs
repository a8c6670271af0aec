//! CloudOS container runtime (issue 4): runs OCI containers on a compute node
//! through youki's libcontainer, one shim process per container.
//!
//! [`Runtime`] is what the agent uses: it validates a [`ContainerSpec`],
//! writes it under `<root>/<id>/` and spawns a shim ([`shim_main`]) that
//! assembles the overlayfs root from the image's unpacked layers, runs the
//! container, logs its output and records its exit. The runtime itself never
//! forks a container: libcontainer's clone()s run in the shim, a fresh
//! single-threaded process, and containers survive an agent restart
//! ([`Runtime::recover`]).
//!
//! This crate owns container processes, their cgroups under `cloudos/` (or the parent
//! that `CLOUDOS_CGROUP_PARENT` names, see [`cgroup::parent`]) and
//! everything under its root directory; it does not pull or unpack images
//! (that is `cloudos_oci`) and does not talk to the master.

pub mod cgroup;
mod error;
mod exec;
mod logs;
mod oci;
mod process;
pub mod quota;
mod rootfs;
mod runtime;
mod seccomp;
mod shim;
mod spec;
mod state;
mod undo;

pub use error::RuntimeError;
pub use exec::ExecReport;
pub use logs::DEFAULT_LOG_LIMIT;
pub use runtime::{ContainerStatus, RecoverReport, Runtime, ShimCommand};
pub use shim::shim_main;
pub use spec::{
    validate_id, Bind, ContainerNetwork, ContainerSpec, EnvFile, Resources, User, DEFAULT_PATH,
    DEFAULT_PIDS_LIMIT,
};
pub use state::{ExitStatus, LogPaths};
