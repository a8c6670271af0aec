//! CloudOS's node userland: PID 1, its supervised services and the node roles.
//!
//! Module map: `init` (PID 1 itself), `supervisor` (service lifecycles and the READY
//! protocol), `blockdev` (disks, partitions, the data partition and ext4, for PID 1 and the
//! disk install), `services` (what each service does), `kmod` (drivers), `net` (links,
//! DHCP, routes), `clock` (the boot floor, saved time, SNTP), `settings` (boot settings), `logging`, `status`, `watchdog` (the hardware
//! watchdog PID 1 feeds), `screen` (the virtual terminals while the wizard has them), and
//! `roles`: the node
//! roles, which are their own crates (`cloudos-master`, `cloudos-agent`), configured from
//! flags and boot settings and run as a tool, a PID 1 service or a systemd unit. `host`
//! runs either role as a systemd service on an existing Linux (the cloud install);
//! `diskinstall` installs CloudOS from the live ISO to a disk; `upgrade` writes a checked
//! release into the inactive slot of an installed disk.

pub mod blockdev;
pub mod clock;
pub mod diskinstall;
pub mod hardware;
pub mod host;
pub mod init;
pub mod kmod;
pub mod logging;
pub mod net;
pub mod roles;
pub mod screen;
pub mod services;
pub mod settings;
pub mod status;
pub mod supervisor;
pub mod upgrade;
pub mod watchdog;
