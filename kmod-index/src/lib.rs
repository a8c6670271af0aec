//! The kernel's module index as `depmod` writes it under `/lib/modules/<release>/`, read
//! in one place by both of its readers: `mkinitramfs` (the `initramfs` crate), which picks
//! the modules an image carries, and `nodeos`, which loads them on the node. Both must
//! agree on what a module is called, what it needs and where its file is, so the format is
//! parsed here once.
//!
//! - [`name`]: module names (`usb-storage` is `usb_storage`) and `modules.builtin`.
//! - [`dep`]: `modules.dep`, its paths and the load order of modules with their dependencies.
//! - [`alias`]: `modules.alias` and the fnmatch(3) matching of modaliases against it.
//! - [`packed`]: how the image names a module file it packed as a zstd frame.
//!
//! Pure: no file is read here (callers read the text, so errors name their own paths),
//! nothing is loaded, nothing panics on bad input (nodeos runs this inside PID 1).

pub mod alias;
pub mod dep;
pub mod name;
pub mod packed;

pub use alias::{glob_match, Aliases};
pub use dep::{Deps, ParseError, UnknownModule};
pub use name::{module_name, normalize, parse_builtin};
pub use packed::{packed_path, PACKED_SUFFIX};
