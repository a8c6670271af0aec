//! The one error type of this crate. Each message says what went wrong and what to do.

use std::io;

/// Why advertising or browsing could not be done.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(
        "invalid instance name {name:?}: {reason}; use 1 to {max} bytes without dots or control characters",
        max = crate::txt::MAX_LABEL
    )]
    InvalidInstance { name: String, reason: &'static str },

    #[error(
        "invalid host name {name:?}: {reason}; use 1 to {max} letters, digits and hyphens, not starting or ending with a hyphen",
        max = crate::txt::MAX_LABEL
    )]
    InvalidHost { name: String, reason: &'static str },

    #[error(
        "invalid ca pin prefix {0:?}: expected the first 16 hex characters of the ca pin; derive it with pin_prefix()"
    )]
    InvalidPinPrefix(String),

    #[error("invalid ca pin {0:?}: expected sha256:<64 hex characters>, as printed for the cluster's ca")]
    InvalidPin(String),

    #[error("api port 0 cannot be advertised; pass the port the master's api listens on")]
    InvalidPort,

    #[error(
        "txt entry {key:?} is {len} bytes, over the 255-byte limit of a dns-sd txt string; shorten the {key}"
    )]
    TxtTooLong { key: &'static str, len: usize },

    #[error("cannot start the mdns responder thread: {0}; check the process and memory limits")]
    Thread(#[source] io::Error),

    #[error(
        "cannot open the mdns responder sockets on udp port 5353: {0}; bring a network interface up with an ipv4 address and a route first"
    )]
    Responder(#[source] io::Error),

    #[error(
        "the mdns responder thread stopped before it was ready; look for its error in the log"
    )]
    ResponderGone,

    #[error("mdns browser failed: {0}; check that a network interface is up and udp port 5353 can be bound")]
    Browser(#[from] mdns_sd::Error),
}
