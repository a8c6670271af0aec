//! Finding CloudOS masters on the LAN with DNS-SD over mDNS (RFC 6762/6763),
//! docs/design.md decision 8.
//!
//! Every master advertises `<instance>._cloudos._tcp.local.` ([`Advertiser`], libmdns)
//! with the TXT keys `txtvers=1`, `cluster`, `pin` (first 16 hex characters of the
//! CA pin), `port` (API port) and `version`; nodes, the installer and
//! `cloudos discover` find them with [`browse`] (mdns-sd) and keep those whose pin
//! matches the one they trust with [`matching_pin`]. `avahi-browse -rt _cloudos._tcp`
//! shows and resolves the same service.
//!
//! This crate only sends and reads mDNS; it does not decide whom to trust (the pin
//! match is a filter, the TLS check against the full pin is the caller's).

mod advertise;
mod browse;
mod error;
mod txt;

pub use advertise::{AdvertiseHandle, Advertiser, MasterAd, GOODBYE_GRACE};
pub use browse::{
    browse, browse_for_pin, browse_report, matching_pin, BrowseReport, DiscoveredMaster,
    SkippedMaster, SERVICE_TYPE,
};
pub use error::DiscoveryError;
pub use txt::{parse_txt, pin_prefix, MasterTxt, SkippedKey, PIN_PREFIX_LEN, TXT_VERSION};
