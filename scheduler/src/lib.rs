//! CloudOS scheduler (issue 4, docs/design.md decision 10): decides which node runs a task or
//! a service replica. It filters nodes by readiness, architecture, labels, free host ports
//! and free resources, scores the rest with a pluggable policy, and explains in plain words why
//! work that fits nowhere has to wait.
//!
//! Pure and synchronous: the master owns the cluster state and calls in with a snapshot;
//! nothing here does I/O, keeps time or holds state between calls.

mod filter;
mod place;
mod policy;
mod queue;
mod reason;
mod types;

#[cfg(test)]
mod testutil;

pub use filter::{check, Unfit};
pub use place::Scheduler;
pub use policy::{policy_by_name, Binpack, Policy, Spread, POLICY_NAMES};
pub use queue::QueueOutcome;
pub use reason::{NoFit, Shortfall};
pub use types::{
    HostPort, InvalidRequest, NodeView, PortProtocol, Request, Resources, MAX_CPU_MILLIS,
    MAX_MEMORY_BYTES,
};
