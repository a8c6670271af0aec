//! Pulls from an OCI distribution registry into the [`ImageStore`], through `oci-client`.
//!
//! Owns credentials, the platform choice from an index and turning registry failures
//! into errors that say what to do. Every blob is verified twice: by oci-client while it
//! streams, and by the store before the blob gets its name. The ref is set last, so an
//! interrupted pull leaves no image behind, only blobs that the next pull reuses.
//!
//! Sizes are checked against the manifest and the store's [`Limits`](crate::Limits): a
//! declaration above the caps is refused before anything is downloaded, and a download
//! stops as soon as more bytes arrive than the manifest declared. A pull pins every blob
//! it writes or reuses in a [`Lease`], so a garbage collection meanwhile keeps them.

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::digest::Digest;
use crate::lease::Lease;
use crate::manifest::{Descriptor, Document, ManifestError, Platform, ACCEPTED_MANIFEST_TYPES};
use crate::store::{ImageStore, ImageStoreError};

/// How to authenticate to a registry. Bearer-token challenges (`WWW-Authenticate:
/// Bearer realm=…`) are followed with these credentials, as Docker Hub and GHCR need.
#[derive(Clone, Default)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// A token sent as `Authorization: Bearer …` as it is.
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    // Secrets stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Anonymous => write!(f, "Anonymous"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Self::Bearer(_) => write!(f, "Bearer(***)"),
        }
    }
}

impl Credentials {
    fn to_auth(&self) -> RegistryAuth {
        match self {
            Self::Anonymous => RegistryAuth::Anonymous,
            Self::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Self::Bearer(token) => RegistryAuth::Bearer(token.clone()),
        }
    }
}

/// What a puller is set up with.
#[derive(Debug, Clone)]
pub struct PullConfig {
    pub credentials: Credentials,
    /// The platform whose manifest is taken from an index; by default this machine's.
    pub platform: Platform,
    /// Registries (`host:port`) spoken to over plain HTTP, for a registry on the local
    /// network or in a test. Every other registry is HTTPS.
    pub plain_http_registries: Vec<String>,
}

impl Default for PullConfig {
    fn default() -> Self {
        Self {
            credentials: Credentials::Anonymous,
            platform: Platform::current(),
            plain_http_registries: Vec::new(),
        }
    }
}

/// Everything that can go wrong in a pull.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{image:?} is not a valid image reference: {reason}; write it as [registry/]repository[:tag|@sha256:…]")]
    InvalidReference { image: String, reason: String },
    #[error("cannot set up the registry client: {0}")]
    Client(String),
    #[error("image {image} not found: the registry has no such repository, tag or digest; check the name")]
    NotFound { image: String },
    #[error("registry {registry} refused the credentials for {image}; check the user name and password (or token) and that they may pull this repository")]
    Unauthorized { image: String, registry: String },
    #[error("image {image} has {source}")]
    Platform {
        image: String,
        #[source]
        source: ManifestError,
    },
    #[error("the registry sent {what} of image {image} with digest {actual}, but {expected} was asked for; the registry or a proxy on the way is corrupting data, pull again or from another mirror")]
    DigestMismatch {
        image: String,
        what: &'static str,
        expected: Digest,
        actual: String,
    },
    #[error("image {image}: {source}")]
    BadManifest {
        image: String,
        #[source]
        source: ManifestError,
    },
    #[error("image {image} declares blob {digest} of {size} bytes, above the limit of {limit}; nothing was downloaded (raise Limits::max_blob_bytes only for an image you trust)")]
    BlobTooLarge {
        image: String,
        digest: Digest,
        size: u64,
        limit: u64,
    },
    #[error("image {image} declares {size} bytes of config and layers, above the limit of {limit}; nothing was downloaded (raise Limits::max_image_bytes only for an image you trust)")]
    ImageTooLarge {
        image: String,
        size: u64,
        limit: u64,
    },
    #[error("image {image} has {count} layers, more than the limit of {limit}; the image is malicious or broken")]
    TooManyLayers {
        image: String,
        count: usize,
        limit: usize,
    },
    #[error("the registry sent {received} bytes of blob {digest} of image {image}, whose manifest declares {declared}; the download was stopped: the registry or a proxy on the way is hostile or broken, pull from another mirror")]
    BlobSizeMismatch {
        image: String,
        digest: Digest,
        declared: u64,
        received: u64,
    },
    #[error("cannot pull image {image} from its registry: {message}; check the registry address and that it is reachable")]
    Registry { image: String, message: String },
    #[error("cannot store image {image}: {source}")]
    ImageStore {
        image: String,
        #[source]
        source: ImageStoreError,
    },
}

/// Progress of a pull, for a progress bar: each blob starts, advances and ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A blob is being downloaded; `total` is its size from the manifest.
    Started { digest: Digest, total: u64 },
    /// `done` of the blob's bytes have arrived.
    Advanced { digest: Digest, done: u64 },
    /// The blob was verified and stored, or was in the store already.
    Finished { digest: Digest, total: u64 },
}

/// A pulled image: the ref now points at `manifest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    pub name: String,
    pub manifest: Digest,
    pub config: Descriptor,
    /// Bottom layer first.
    pub layers: Vec<Descriptor>,
}

/// A registry client bound to one set of credentials and one platform.
pub struct Puller {
    client: Client,
    config: PullConfig,
}

impl Puller {
    pub fn new(config: PullConfig) -> Result<Self, PullError> {
        // reqwest is built without a TLS provider so that ring, not aws-lc, is linked.
        // Installing it fails only when a provider is installed already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let protocol = if config.plain_http_registries.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(config.plain_http_registries.clone())
        };
        let client = Client::try_from(ClientConfig {
            protocol,
            ..ClientConfig::default()
        })
        .map_err(|e| PullError::Client(e.to_string()))?;
        Ok(Self { client, config })
    }

    /// Pulls `image` (e.g. `registry.example.org/team/app:1.2`) into `store`, skipping
    /// blobs it has already, and points the ref `image` at the platform's manifest.
    pub async fn pull(&self, store: &ImageStore, image: &str) -> Result<PulledImage, PullError> {
        self.pull_with_progress(store, image, |_| {}).await
    }

    /// [`Puller::pull`], reporting each blob's progress to `progress`.
    pub async fn pull_with_progress(
        &self,
        store: &ImageStore,
        image: &str,
        progress: impl FnMut(Progress),
    ) -> Result<PulledImage, PullError> {
        self.pull_leased(&store.lease(), image, progress).await
    }

    /// [`Puller::pull_with_progress`] into the lease's store, pinning the image's blobs
    /// in `lease`: they stay when the lease outlives the pull, even if the tag moves.
    pub async fn pull_leased(
        &self,
        lease: &Lease,
        image: &str,
        mut progress: impl FnMut(Progress),
    ) -> Result<PulledImage, PullError> {
        let store = lease.store();
        let reference = parse_reference(image)?;
        let store_err = |source| PullError::ImageStore {
            image: image.to_string(),
            source,
        };
        let bad_manifest = |source| PullError::BadManifest {
            image: image.to_string(),
            source,
        };

        let asked = match reference.digest() {
            Some(d) => Some(
                d.parse::<Digest>()
                    .map_err(|e| PullError::InvalidReference {
                        image: image.to_string(),
                        reason: e.to_string(),
                    })?,
            ),
            None => None,
        };
        let (mut bytes, mut digest) = self.fetch_manifest(image, &reference, asked).await?;
        if let Document::Index(index) = Document::parse(&bytes).map_err(bad_manifest)? {
            let chosen =
                index
                    .choose(&self.config.platform)
                    .map_err(|source| PullError::Platform {
                        image: image.to_string(),
                        source,
                    })?;
            let by_digest = reference.clone_with_digest(chosen.digest.to_string());
            (bytes, digest) = self
                .fetch_manifest(image, &by_digest, Some(chosen.digest.clone()))
                .await?;
        }
        let manifest = match Document::parse(&bytes).map_err(bad_manifest)? {
            Document::Manifest(m) => m,
            Document::Index(_) => {
                return Err(bad_manifest(ManifestError::Malformed(
                    "an index points at another index".to_string(),
                )))
            }
        };
        check_sizes(image, &manifest, store.limits())?;
        lease.pin(&digest);
        for descriptor in std::iter::once(&manifest.config).chain(&manifest.layers) {
            lease.pin(&descriptor.digest);
            self.fetch_blob(store, image, &reference, descriptor, &mut progress)
                .await?;
        }
        store.write_blob(&digest, &bytes[..]).map_err(store_err)?;
        store.set_ref(image, &digest).map_err(store_err)?;
        Ok(PulledImage {
            name: image.to_string(),
            manifest: digest,
            config: manifest.config,
            layers: manifest.layers,
        })
    }

    /// The platforms `image` is published for, without pulling it: those of an index's
    /// manifests (attestation entries, `unknown/unknown`, left out), or the one named in a
    /// single manifest's config. The master schedules with this, so an image for one
    /// architecture goes only to nodes of that architecture.
    pub async fn platforms(&self, image: &str) -> Result<Vec<Platform>, PullError> {
        let reference = parse_reference(image)?;
        let bad_manifest = |source| PullError::BadManifest {
            image: image.to_string(),
            source,
        };
        let (bytes, _) = self.fetch_manifest(image, &reference, None).await?;
        match Document::parse(&bytes).map_err(bad_manifest)? {
            Document::Index(index) => Ok(index
                .manifests
                .into_iter()
                .filter_map(|d| d.platform)
                .filter(|p| p.os != "unknown" && p.architecture != "unknown")
                .collect()),
            Document::Manifest(manifest) => {
                let config = self
                    .fetch_small_blob(image, &reference, &manifest.config)
                    .await?;
                let platform: Platform = serde_json::from_slice(&config).map_err(|e| {
                    bad_manifest(ManifestError::Malformed(format!(
                        "its config names no platform: {e}"
                    )))
                })?;
                Ok(vec![platform])
            }
        }
    }

    /// A blob of at most 1 MiB (an image config) in memory, its digest checked.
    async fn fetch_small_blob(
        &self,
        image: &str,
        reference: &Reference,
        descriptor: &Descriptor,
    ) -> Result<Vec<u8>, PullError> {
        const LIMIT: u64 = 1024 * 1024;
        let too_big = || PullError::BadManifest {
            image: image.to_string(),
            source: ManifestError::Malformed(format!(
                "its config blob is larger than {LIMIT} bytes"
            )),
        };
        if descriptor.size > LIMIT {
            return Err(too_big());
        }
        let mut body = self.blob_stream(image, reference, descriptor).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = body.stream.next().await {
            let chunk = chunk.map_err(|e| PullError::Registry {
                image: image.to_string(),
                message: e.to_string(),
            })?;
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > LIMIT {
                return Err(too_big());
            }
            if bytes.len() as u64 > descriptor.size {
                return Err(size_mismatch(image, descriptor, bytes.len() as u64));
            }
        }
        let actual = Digest::of(&bytes);
        if actual != descriptor.digest {
            return Err(PullError::DigestMismatch {
                image: image.to_string(),
                what: "the config",
                expected: descriptor.digest.clone(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// The body of the blob `descriptor` names, as a stream (verified by its reader).
    async fn blob_stream(
        &self,
        image: &str,
        reference: &Reference,
        descriptor: &Descriptor,
    ) -> Result<oci_client::client::SizedStream, PullError> {
        let oci_descriptor = OciDescriptor {
            media_type: descriptor.media_type.clone(),
            digest: descriptor.digest.to_string(),
            size: i64::try_from(descriptor.size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        self.client
            .pull_blob_stream(reference, &oci_descriptor)
            .await
            .map_err(|e| classify(image, reference, e))
    }

    /// A manifest or index and its digest, checked against `expected` when there is one.
    async fn fetch_manifest(
        &self,
        image: &str,
        reference: &Reference,
        expected: Option<Digest>,
    ) -> Result<(Vec<u8>, Digest), PullError> {
        let (bytes, _) = self
            .client
            .pull_manifest_raw(
                reference,
                &self.config.credentials.to_auth(),
                ACCEPTED_MANIFEST_TYPES,
            )
            .await
            .map_err(|e| classify(image, reference, e))?;
        let actual = Digest::of(&bytes);
        if let Some(expected) = expected {
            if expected != actual {
                return Err(PullError::DigestMismatch {
                    image: image.to_string(),
                    what: "a manifest",
                    expected,
                    actual: actual.to_string(),
                });
            }
        }
        Ok((bytes.to_vec(), actual))
    }

    async fn fetch_blob(
        &self,
        store: &ImageStore,
        image: &str,
        reference: &Reference,
        descriptor: &Descriptor,
        progress: &mut impl FnMut(Progress),
    ) -> Result<(), PullError> {
        let (digest, total) = (descriptor.digest.clone(), descriptor.size);
        if store.has_blob(&digest) {
            progress(Progress::Finished { digest, total });
            return Ok(());
        }
        progress(Progress::Started {
            digest: digest.clone(),
            total,
        });
        let store_err = |source| PullError::ImageStore {
            image: image.to_string(),
            source,
        };
        let mut body = self.blob_stream(image, reference, descriptor).await?;
        let mut writer = store.begin_blob(&descriptor.digest).map_err(store_err)?;
        while let Some(chunk) = body.stream.next().await {
            let chunk = chunk.map_err(|e| {
                // oci-client checks the digest as the stream ends; report that as a
                // mismatch, not as a network failure.
                let inner = e.get_ref().and_then(|i| i.downcast_ref::<DigestError>());
                match inner {
                    Some(DigestError::VerificationError { actual, .. }) => {
                        PullError::DigestMismatch {
                            image: image.to_string(),
                            what: "a blob",
                            expected: descriptor.digest.clone(),
                            actual: actual.clone(),
                        }
                    }
                    _ => PullError::Registry {
                        image: image.to_string(),
                        message: format!("download of {} failed: {e}", descriptor.digest),
                    },
                }
            })?;
            // Stopped before writing: a registry may not fill the disk past the manifest.
            let received = writer.size() + chunk.len() as u64;
            if received > total {
                return Err(size_mismatch(image, descriptor, received));
            }
            writer.write_chunk(&chunk).map_err(store_err)?;
            progress(Progress::Advanced {
                digest: digest.clone(),
                done: writer.size(),
            });
        }
        if writer.size() != total {
            return Err(size_mismatch(image, descriptor, writer.size()));
        }
        writer.commit().map_err(store_err)?;
        progress(Progress::Finished { digest, total });
        Ok(())
    }
}

/// Refuses a manifest whose declared sizes or layer count exceed `limits`, before any
/// of its blobs is downloaded.
fn check_sizes(
    image: &str,
    manifest: &crate::manifest::Manifest,
    limits: &crate::limits::Limits,
) -> Result<(), PullError> {
    if manifest.layers.len() > limits.max_layers {
        return Err(PullError::TooManyLayers {
            image: image.to_string(),
            count: manifest.layers.len(),
            limit: limits.max_layers,
        });
    }
    let mut total = 0u64;
    for descriptor in std::iter::once(&manifest.config).chain(&manifest.layers) {
        if descriptor.size > limits.max_blob_bytes {
            return Err(PullError::BlobTooLarge {
                image: image.to_string(),
                digest: descriptor.digest.clone(),
                size: descriptor.size,
                limit: limits.max_blob_bytes,
            });
        }
        total = total.saturating_add(descriptor.size);
    }
    if total > limits.max_image_bytes {
        return Err(PullError::ImageTooLarge {
            image: image.to_string(),
            size: total,
            limit: limits.max_image_bytes,
        });
    }
    Ok(())
}

fn size_mismatch(image: &str, descriptor: &Descriptor, received: u64) -> PullError {
    PullError::BlobSizeMismatch {
        image: image.to_string(),
        digest: descriptor.digest.clone(),
        declared: descriptor.size,
        received,
    }
}

fn parse_reference(image: &str) -> Result<Reference, PullError> {
    image
        .parse()
        .map_err(|e: oci_client::ParseError| PullError::InvalidReference {
            image: image.to_string(),
            reason: e.to_string(),
        })
}

/// Turns oci-client's errors into the few cases a person acts on differently.
fn classify(image: &str, reference: &Reference, error: OciDistributionError) -> PullError {
    let not_found = || PullError::NotFound {
        image: image.to_string(),
    };
    let unauthorized = || PullError::Unauthorized {
        image: image.to_string(),
        registry: reference.resolve_registry().to_string(),
    };
    match &error {
        OciDistributionError::ImageManifestNotFoundError(_) => not_found(),
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => unauthorized(),
        OciDistributionError::ServerError { code: 404, .. } => not_found(),
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => unauthorized(),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<_> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                unauthorized()
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                )
            }) {
                not_found()
            } else {
                PullError::Registry {
                    image: image.to_string(),
                    message: error.to_string(),
                }
            }
        }
        _ => PullError::Registry {
            image: image.to_string(),
            message: error.to_string(),
        },
    }
}
