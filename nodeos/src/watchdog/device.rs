//! One hardware watchdog device (`/dev/watchdogN`) through the kernel's watchdog API
//! (`linux/watchdog.h`): open (which arms it), set and read back the timeout, feed, stop.
//!
//! Owns the ioctls and nothing of policy: when to arm, how often to feed and when to stop
//! is [`super`]'s.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// `struct watchdog_info`.
#[repr(C)]
pub struct WatchdogInfo {
    options: u32,
    firmware_version: u32,
    identity: [u8; 32],
}

// The ioctl numbers of linux/watchdog.h ('W'); SETOPTIONS and KEEPALIVE are declared
// _IOR there, and so here.
nix::ioctl_read!(wdioc_getsupport, b'W', 0, WatchdogInfo);
nix::ioctl_read!(wdioc_setoptions, b'W', 4, libc::c_int);
nix::ioctl_read!(wdioc_keepalive, b'W', 5, libc::c_int);
nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, libc::c_int);
nix::ioctl_read!(wdioc_gettimeout, b'W', 7, libc::c_int);

/// `WDIOS_DISABLECARD`: stop the timer.
const WDIOS_DISABLECARD: libc::c_int = 0x0001;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} does not say its timeout: {source}")]
    Timeout { path: PathBuf, source: nix::Error },
}

/// An open, and so armed, watchdog device.
#[derive(Debug)]
pub struct Device {
    path: PathBuf,
    file: File,
    /// What the driver calls itself (`i6300ESB timer`), for people.
    pub identity: String,
}

/// What became of a timeout we asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout {
    pub asked: u32,
    /// What the device runs with now: the asked value, the nearest one it can do, or its
    /// own when it refused ours.
    pub accepted: u32,
    /// Whether the device refused the asked value outright.
    pub refused: bool,
}

impl Device {
    /// The first watchdog device the kernel registered, if any.
    pub fn find() -> Option<PathBuf> {
        let mut names: Vec<String> = std::fs::read_dir("/sys/class/watchdog")
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("watchdog"))
            .collect();
        names.sort();
        let first = names.first()?;
        Some(Path::new("/dev").join(first))
    }

    /// Opens the device: from here on it resets the machine unless fed.
    pub fn open(path: &Path) -> Result<Device, DeviceError> {
        let file = File::options()
            .write(true)
            .open(path)
            .map_err(|source| DeviceError::Open {
                path: path.to_owned(),
                source,
            })?;
        let mut info = WatchdogInfo {
            options: 0,
            firmware_version: 0,
            identity: [0; 32],
        };
        // SAFETY: the fd is open and `info` is a `struct watchdog_info` we own.
        let identity = match unsafe { wdioc_getsupport(file.as_raw_fd(), &mut info) } {
            Ok(_) => {
                let end = info.identity.iter().position(|b| *b == 0).unwrap_or(32);
                String::from_utf8_lossy(info.identity.get(..end).unwrap_or_default())
                    .trim()
                    .to_owned()
            }
            Err(_) => String::new(),
        };
        Ok(Device {
            path: path.to_owned(),
            file,
            identity,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Asks for `secs` and reads back what the device took: drivers round to what their
    /// hardware counts, and refuse what it cannot (the Pi's stops at 15 s).
    pub fn set_timeout(&self, secs: u32) -> Result<Timeout, DeviceError> {
        let mut value = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
        // SAFETY: the fd is open; the kernel reads and writes one int we own.
        let refused = unsafe { wdioc_settimeout(self.file.as_raw_fd(), &mut value) }.is_err();
        let mut now: libc::c_int = 0;
        // SAFETY: as above.
        unsafe { wdioc_gettimeout(self.file.as_raw_fd(), &mut now) }.map_err(|source| {
            DeviceError::Timeout {
                path: self.path.clone(),
                source,
            }
        })?;
        Ok(Timeout {
            asked: secs,
            accepted: u32::try_from(now).unwrap_or(0),
            refused,
        })
    }

    /// Feeds the watchdog: the timeout starts again.
    pub fn feed(&self) -> nix::Result<()> {
        let mut unused: libc::c_int = 0;
        // SAFETY: the fd is open; the kernel ignores the argument.
        unsafe { wdioc_keepalive(self.file.as_raw_fd(), &mut unused) }.map(|_| ())
    }

    /// Stops the timer and closes the device: `WDIOS_DISABLECARD`, and the magic close
    /// (`V` before close) as well. The kernel's watchdog core stops a timer the same way
    /// for both and refuses both under `nowayout`, so the ioctl's answer is the answer:
    /// a device that would not stop is given back, to be fed still.
    pub fn stop(mut self) -> Result<(), (Device, nix::Error)> {
        let mut disable = WDIOS_DISABLECARD;
        // SAFETY: the fd is open; the kernel reads one int we own.
        match unsafe { wdioc_setoptions(self.file.as_raw_fd(), &mut disable) } {
            Ok(_) => {
                let _ = self.file.write_all(b"V");
                Ok(())
            }
            Err(e) => Err((self, e)),
        }
    }
}
