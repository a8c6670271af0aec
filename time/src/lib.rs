//! Time for CloudOS nodes: the SNTP wire format (`wire`), a client that asks one server
//! (`client`), the server a master runs so its LAN agrees on the time (`server`), and the
//! pure rules a node keeps its clock by (`policy`: the boot floor, the saved time, the
//! order of servers, step or slew).
//!
//! Owns no system call that changes the clock and reads no settings: `nodeos` (its
//! `clock` module) applies what `policy` decides.

pub mod client;
pub mod policy;
pub mod server;
pub mod wire;

pub use client::{query, SntpError};
pub use wire::{NtpTimestamp, Packet, Sample};

/// The SNTP port.
pub const NTP_PORT: u16 = 123;
