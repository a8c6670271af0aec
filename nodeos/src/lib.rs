//! CloudOS's node userland: PID 1, its supervised services and the node roles.
//!
//! Module map: `init` (PID 1 itself), `supervisor` (service lifecycles),
//! `blockdev` (disks, partitions, the data partition and ext4, for PID 1 and the installer),
//! `services` (what each service does), `kmod` (drivers), `net` (links,
//! DHCP, routes), `settings` (boot settings), `logging`, `status`, and the node roles:
//! `master` (CA, tokens, registry, API) and `agent` (join, heartbeats); `host` runs
//! either role as a systemd service on an existing Linux (the cloud install);
//! `diskinstall` installs CloudOS from the live ISO to a disk.

pub mod agent;
pub mod blockdev;
pub mod diskinstall;
pub mod fsutil;
pub mod host;
pub mod init;
pub mod kmod;
pub mod logging;
pub mod master;
pub mod net;
pub mod services;
pub mod settings;
pub mod status;
pub mod supervisor;
