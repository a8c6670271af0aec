//! CloudOS releases: what a node accepts as a new version of itself, and how it proves it.
//!
//! A release is one **bundle** per architecture (`bundle`): a ustar archive holding a JSON
//! **manifest** (`manifest`: version, architecture, the size and SHA-256 of each part), its
//! **signature** (`sign`: ed25519 over the manifest's exact bytes, by a release key), then
//! the parts (the kernel, the initramfs, and `nodeos` alone for hosts installed with the
//! curl line). Nodes carry the public keys they trust (`keys`); a node checks the signature
//! before it reads a part, checks each part's hash while it copies it, and takes the
//! release only if the rules in `policy` allow it (its own architecture, no downgrade unless
//! the admin forces one). The version a binary reports is a **stamp** (`stamp`) in the
//! binary, set by the build, so one compiled `nodeos` can be released under any version.
//!
//! This crate parses, signs and checks. It never writes a boot slot or replaces a binary:
//! that is `nodeos::upgrade`'s job, once this crate has said yes.

pub mod bundle;
pub mod keys;
pub mod manifest;
pub mod policy;
pub mod sign;
pub mod stamp;

pub use bundle::{BundleError, Verified};
pub use keys::{trusted, trusts_development_key, KeyError, KeyId, Keyring, PublicKey, SecretKey};
pub use manifest::{Arch, Manifest, ManifestError, Part, ETCD_PACK, PART_NAMES};
pub use policy::{Intent, PolicyError};
pub use semver::Version;
pub use sign::{SignError, Signature};
pub use stamp::{version, version_text, StampError};
