//! The network service (`nodeos svc net`): loopback, every Ethernet link up,
//! DHCPv4 or a static address, the default route and `/etc/resolv.conf`.
//!
//! It follows the links through rtnetlink events: a link whose carrier comes
//! back (a cable plugged in again) gets its lease renewed; a link that loses
//! it drops its address. It owns network configuration only; what it did is
//! published in `state` for `nodeos status`.

pub mod dhcp;
pub mod links;
pub mod resolv;
pub mod service;
pub mod state;

pub use service::run;
