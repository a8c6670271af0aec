//! Kernel modules: which modules a device asks for, and loading them.
//!
//! `index` reads `modules.alias`/`modules.dep` and answers from the pure, table-tested
//! parser of `cloudos-kmod-index` (shared with mkinitramfs: modalias matching, dependency
//! order); `loader` performs `finit_module`; `coldplug` walks `/sys` for the devices
//! present at boot. Hot-plugged devices are handled by the `devices` service, which uses
//! the same loader; `modprobe` answers the kernel's own requests for modules.

pub mod coldplug;
pub mod index;
pub mod loader;
pub mod modprobe;

pub use index::ModuleIndex;
pub use loader::Loader;

/// The running kernel's release (`uname -r`): it names the modules' directory,
/// `/lib/modules/<release>`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}
