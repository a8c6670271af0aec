//! OCI images for CloudOS (docs/design.md decision 11, issue 4).
//!
//! Owns everything between a registry (or an image-layout tarball) and an unpacked layer
//! on the data partition: digests, the content-addressed store, pulls and unpacking.
//! It does not run containers and does not mount anything: assembling a container's
//! root with overlayfs belongs to the runtime, which gets layer directories from here.
//!
//! Nothing in this crate panics on bad input: it runs inside PID 1's services, so every
//! failure is a typed error that says what to do about it.

pub mod digest;
pub mod import;
pub mod lease;
pub mod limits;
pub mod manifest;
pub mod pull;
pub mod store;
pub mod unpack;

pub use digest::{Digest, DigestError};
pub use import::{ImportError, ImportedImage};
pub use lease::Lease;
pub use limits::Limits;
pub use manifest::{Descriptor, Document, Index, Manifest, ManifestError, Platform};
pub use pull::{Credentials, Progress, PullConfig, PullError, PulledImage, Puller};
pub use store::{BlobWriter, GcReport, ImageStore, ImageStoreError};
pub use unpack::{EntryKind, UnpackError};
