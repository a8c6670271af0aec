//! What every party of a CloudOS cluster shares: the master, the agent and the `cloudos`
//! CLI. The master's storage is not here (`cloudos-store`): what this crate holds is what
//! crosses the wire or proves who is speaking.
//!
//! - [`identity`]: who a node is (name and role) and how that is written into a certificate.
//! - [`pki`]: the cluster CA, CA pins, node keys and CSRs, certificate issuing and reading.
//! - [`token`]: join tokens, their hashed stored form and their checks.
//! - [`tls`]: TLS 1.3-only rustls configurations: pinned first contact, mTLS, the server.
//! - [`workload`]: tasks, services, runs and resource quantities as the API speaks them.
//! - [`api`]: the JSON types spoken between master, agent and CLI.
//! - [`nodeops`]: cordon, drain and reboot as the API speaks them (progress, boots).
//! - [`mesh`]: the WireGuard mesh between nodes: each node's key and the peers it gets.
//! - [`publish`]: published ports (`8080:80/udp`), parsed and printed.
//! - [`subnets`]: the cluster's container range and each node's subnet out of it.
//! - [`files`]: writing keys and state atomically and privately (0600/0700).
//! - [`client`]: the HTTPS client of the master's API (join, mTLS calls), for agent and CLI.
//! - [`backoff`]: exponential backoff between retries, for every retry loop of a node.
//! - [`units`]: sizes and CPU as people read them (`64Mi`, `500m`), re-exported from the
//!   dependency-free `cloudos-units` so that the scheduler can share them without this crate.
//!
//! Apart from [`client`], this crate opens no sockets and starts no threads: it is a library
//! the servers and clients are built on. Nothing in it panics on bad input, because the
//! master runs inside PID 1.

pub mod addr;
pub mod api;
pub mod apikey;
pub mod backoff;
pub mod client;
pub mod exposition;
pub mod files;
pub mod health;
pub mod identity;
pub mod install_line;
pub mod mesh;
pub mod nodeops;
pub mod pki;
pub mod publish;
pub mod registry;
pub mod revision;
pub mod rollout;
pub mod routing;
pub mod secret;
pub mod subnets;
pub mod tls;
pub mod token;
pub mod volume;
pub mod workload;

mod util;

pub use addr::{parse_master_address, Ipv4Cidr};
pub use cloudos_units as units;
pub use identity::{validate_hostname, NodeIdentity, Role};
pub use pki::{CaPin, CertSerial, ClusterCa, NodeKey};
pub use token::{Token, TokenRecord};
pub use util::{excerpt, to_hex};
