//! The network service (`nodeos svc net`): loopback, every Ethernet link up,
//! DHCPv4 or a static address, the default route and `/etc/resolv.conf`; IPv6 by SLAAC
//! (the kernel's, from router advertisements), DHCPv6 when the router says Managed, and
//! name servers from the advertisements' RDNSS option.
//!
//! It follows the links through rtnetlink events: a link whose carrier comes
//! back (a cable plugged in again) gets its lease renewed; a link that loses
//! it drops its address. It owns network configuration only; what it did is
//! published in `state` for `nodeos status`.

pub mod dhcp;
pub mod dhcp6;
pub mod ipv6;
pub mod links;
pub mod rdnss;
pub mod resolv;
pub mod service;
pub mod state;

pub use service::run;
