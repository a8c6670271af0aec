//! CloudOS node settings: the `cloudos.*` keys of the kernel command line and of the
//! settings file (`config.toml`), as one typed model with one key table.
//!
//! - [`model`]: the typed [`Settings`] a node runs with.
//! - [`keys`]: the key table, [`KEYS`]: for every key its name, kind, help, default, where
//!   it may be written, how its text is checked into its field and how the field is
//!   written back. Nothing else lists keys.
//! - [`values`]: the rule for each kind of value (labels, registries, names, …), also used
//!   by the installer for its answer file.
//! - [`load`]: reading a boot line and a settings file ([`Settings::load`]); a bad key is a
//!   [`Warning`], never a failed boot.
//! - [`write`](mod@write): writing a settings file ([`Settings::to_toml`]) or a boot line
//!   ([`Settings::to_cmdline`]) that reads back as the same settings.
//! - [`readme`]: the README's settings table, rendered from the key table.
//!
//! Who uses it: `nodeos` at boot and in `nodeos daemon`, the installer (wizard and answer
//! file) for the `config.toml` it writes, the host install for `/etc/cloudos/config.toml`.
//!
//! # Adding a key
//!
//! 1. Add the field to [`Settings`] (with its default in `Default`).
//! 2. Add a row to [`KEYS`]: name, [`keys::Kind`], help and default for people, whether
//!    README lists it and whether a file may carry it, `set` (check the text, store it; the
//!    error is the warning's reason) and `get` (the field as the text `set` reads back).
//!    The row's position is its place in the README table and in written files.
//! 3. Regenerate the README table:
//!    `CLOUDOS_WRITE_README=1 cargo test -p cloudos-settings readme`.
//!
//! The reader, both writers, the "known keys" of a typo's warning and the README follow;
//! the round-trip tests in [`write`](mod@write) cover the new key once `everything()` sets it.
//!
//! Pure: nothing here reads or writes files or logs.

pub mod keys;
pub mod load;
pub mod model;
pub mod readme;
pub mod values;
pub mod write;

pub use keys::{Key, Kind, KEYS};
pub use load::{without_token, Source, Warning, PREFIX};
pub use model::{
    CrashFault, Fault, Ipv4Cidr, NetMode, NetSettings, NodeRole, Secret, Settings, Slot, Watchdog,
    CONFIG_FILE,
};
pub use values::parse_tls_sans;
