//! Guest architectures and the boards they are emulated on: which QEMU
//! binary, which machine, and which serial device the guest kernel sees.

use std::fmt;

/// A guest architecture CloudOS is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Arch {
    #[default]
    X86_64,
    Aarch64,
}

impl Arch {
    /// The name used in build output paths (`out/<arch>/...`, `cloudos-*-<arch>.iso`).
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Debian's name for the architecture (`amd64`, `arm64`): the arch field of
    /// `image/packages.lock`, as `scripts/build.sh` maps it.
    pub fn debian_arch(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The QEMU system emulator for this guest.
    pub fn qemu_binary(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// The serial console device name the guest kernel sees, for `console=`,
    /// on the architecture's generic machine (see [`Machine::serial_console`]).
    pub fn serial_console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The board QEMU emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Machine {
    /// The architecture's generic PC-like machine: `-M pc` (SeaBIOS) or
    /// `-M q35` (UEFI) on x86_64, `-M virt -cpu cortex-a57` on aarch64. PCI,
    /// so virtio disks and NICs.
    #[default]
    Generic,
    /// A Raspberry Pi 3 Model B (`-M raspi3b`, aarch64 only). The board fixes
    /// 4 cores and 1 GiB; it has no PCI (no virtio devices, no NIC QEMU can
    /// put on a tap) and QEMU cannot run its VideoCore firmware, so it boots
    /// a kernel, initramfs and device tree directly. Storage is the SD card.
    /// Its first serial port is the PL011 (wired to Bluetooth on a real Pi);
    /// the console on GPIO 14/15 is the mini UART, QEMU's second serial port.
    RaspberryPi3B,
}

/// RAM of a Raspberry Pi 3B, which QEMU's `raspi3b` requires exactly.
pub const RPI3B_MEMORY_MB: u32 = 1024;

/// Cores of a Raspberry Pi 3B, which QEMU's `raspi3b` requires exactly.
pub const RPI3B_CPUS: u32 = 4;

impl Machine {
    /// The architecture the board exists for, or `None` if it is emulated
    /// for every architecture.
    pub fn required_arch(self) -> Option<Arch> {
        match self {
            Machine::Generic => None,
            Machine::RaspberryPi3B => Some(Arch::Aarch64),
        }
    }

    /// The serial console device name the guest kernel sees on this board,
    /// for `console=`.
    pub fn serial_console(self, arch: Arch) -> &'static str {
        match self {
            Machine::Generic => arch.serial_console(),
            // The mini UART with the upstream kernel and device tree.
            Machine::RaspberryPi3B => "ttyS1",
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Machine::Generic => "generic",
            Machine::RaspberryPi3B => "raspi3b",
        })
    }
}
