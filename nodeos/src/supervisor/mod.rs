//! The supervisor: starts the node's services in dependency order, restarts a
//! service that exits with exponential backoff, and keeps each one's state for
//! `nodeos status`.
//!
//! Every service is this same binary re-executed as `nodeos svc NAME`, so a
//! service that crashes (even with a panic or a segfault) is a child that
//! exited, never PID 1 going down. The supervisor owns process lifecycles
//! only; what a service does lives in `crate::services`.

pub mod policy;
pub mod ready;
pub mod reaper;
pub mod runner;
pub mod spec;

pub use policy::{Backoff, HEALTHY_AFTER, RESTART_BACKOFF};
pub use reaper::Reaper;
pub use runner::{ServiceState, ServiceStatus, Supervisor};
pub use spec::ServiceSpec;
