//! Which architectures an image is published for, read from its registry when work is
//! created, so the scheduler sends an image only to nodes that can run it (and says why
//! none can). Owns a registry client and a small cache; it never pulls layers.
//!
//! A lookup that fails (a registry the master cannot reach, one that wants credentials
//! only the nodes have) leaves the platforms unknown: any node may try, and a node whose
//! architecture is missing refuses the run with the images crate's reason.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cloudos_cluster::registry::RegistryAuth;
use cloudos_oci::{Credentials, PullConfig, Puller};

/// How long an answer is reused: tags move, but rarely between two `cloudos run`s.
const KEEP_FOUND: Duration = Duration::from_secs(300);
/// How long a failed lookup is not tried again, so a burst of tasks waits only once.
const KEEP_FAILED: Duration = Duration::from_secs(60);
/// The longest a task creation waits for the registry.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

pub struct ImagePlatforms {
    puller: Option<Puller>,
    /// Registries reached over plain HTTP, for a client with credentials.
    plain_http_registries: Vec<String>,
    cache: Mutex<HashMap<String, Answer>>,
}

/// A lookup's result, kept for `keep` after `at`.
struct Answer {
    at: Instant,
    keep: Duration,
    archs: Vec<String>,
}

impl ImagePlatforms {
    /// A client for registries, plain HTTP for `insecure_registries`.
    pub fn new(insecure_registries: &[String]) -> ImagePlatforms {
        let puller = Puller::new(PullConfig {
            plain_http_registries: insecure_registries.to_vec(),
            ..PullConfig::default()
        })
        .map_err(|e| log::warn!("image architectures are not looked up: {e}"))
        .ok();
        ImagePlatforms {
            puller,
            plain_http_registries: insecure_registries.to_vec(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The Linux architectures (OCI names) `image` is published for, asked with `auth`
    /// (the cluster's credentials for its registry) when given; empty when unknown.
    pub async fn architectures(&self, image: &str, auth: Option<RegistryAuth>) -> Vec<String> {
        if let Some(known) = self.cached(image) {
            return known;
        }
        // A client holds one set of credentials: one of its own for a registry with some.
        let own;
        let puller = match auth {
            Some(auth) => {
                own = Puller::new(PullConfig {
                    credentials: Credentials::from(auth),
                    plain_http_registries: self.plain_http_registries.clone(),
                    ..PullConfig::default()
                });
                own.as_ref().ok()
            }
            None => self.puller.as_ref(),
        };
        let Some(puller) = puller else {
            return Vec::new();
        };
        let (found, keep) = match tokio::time::timeout(LOOKUP_TIMEOUT, puller.platforms(image))
            .await
        {
            Ok(Ok(platforms)) => {
                let mut archs: Vec<String> = platforms
                    .into_iter()
                    .filter(|p| p.os == "linux")
                    .map(|p| p.architecture)
                    .collect();
                archs.sort();
                archs.dedup();
                (archs, KEEP_FOUND)
            }
            Ok(Err(e)) => {
                log::warn!("cannot read the architectures of {image} ({e}); any node may try it");
                (Vec::new(), KEEP_FAILED)
            }
            Err(_) => {
                log::warn!(
                    "the registry of {image} did not answer within {LOOKUP_TIMEOUT:?}; any node may try it"
                );
                (Vec::new(), KEEP_FAILED)
            }
        };
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|_, answer| answer.at.elapsed() < answer.keep);
            cache.insert(
                image.to_owned(),
                Answer {
                    at: Instant::now(),
                    keep,
                    archs: found.clone(),
                },
            );
        }
        found
    }

    fn cached(&self, image: &str) -> Option<Vec<String>> {
        let cache = self.cache.lock().ok()?;
        let answer = cache.get(image)?;
        (answer.at.elapsed() < answer.keep).then(|| answer.archs.clone())
    }
}
