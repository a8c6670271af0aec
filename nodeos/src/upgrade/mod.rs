//! Upgrades of the node's own system: a checked release written into the inactive slot of
//! an installed disk (`slot`), GRUB's environment block that says which slot boots
//! (`grubenv`), the record of an upgrade in flight (`attempt`) and the hooks the agent and
//! PID 1 call (`node`), and a master's offer of the release it runs (`offer`). The
//! bundle's format and signature are `cloudos_release`'s; deciding when a node upgrades is
//! the master's.

pub mod attempt;
pub mod grubenv;
pub mod node;
pub mod offer;
pub mod slot;
