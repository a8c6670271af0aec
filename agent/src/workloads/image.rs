//! From an image reference to what a container needs: the image pulled into the node's
//! content store (with progress), its layers unpacked once each, and its config's
//! entrypoint, command, environment, working directory and user merged with the spec.
//!
//! Every blob of the image is pinned by digest in a lease from before it is looked up
//! until the run that prepared it ends (the lease lives in [`PreparedImage`]), so the
//! image gc never takes a pull in progress or the layers of a running container, even
//! when its tag has moved to another image since.

use std::path::PathBuf;

use cloudos_cluster::workload::{PullProgress, WorkloadSpec};
use cloudos_oci::{Digest, ImageStore, Lease, Progress, PullConfig, PullError, Puller};
use serde::Deserialize;

/// The parts of an OCI image config a container start needs.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageRunConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Deserialize)]
struct ImageConfigFile {
    #[serde(default)]
    config: Option<ImageRunConfig>,
}

/// A pulled, unpacked image. Keep it for as long as a container runs from it: it holds
/// the image's blobs and layers against the image gc.
pub struct PreparedImage {
    /// Unpacked layer directories, bottom first.
    pub layers: Vec<PathBuf>,
    pub config: ImageRunConfig,
    /// Pins the manifest, config and layers by digest; dropped with the run.
    _lease: Lease,
}

/// Pulls `image` (reporting progress), unpacks its layers and reads its config.
pub async fn prepare(
    store: &ImageStore,
    pull_config: &PullConfig,
    image: &str,
    mut progress: impl FnMut(PullProgress),
) -> Result<PreparedImage, String> {
    let lease = store.lease();
    if let Some(local) = local_image(&lease, image) {
        // Imported for an air-gapped site, or pulled before under a fixed tag.
        return unpack(lease, local.0, local.1).await;
    }
    let puller = Puller::new(pull_config.clone()).map_err(|e| e.to_string())?;
    let mut totals: std::collections::BTreeMap<Digest, (u64, u64)> = Default::default();
    let pulled = puller
        .pull_leased(&lease, image, |p| {
            match p {
                Progress::Started { digest, total } => {
                    totals.insert(digest, (0, total));
                }
                Progress::Advanced { digest, done } => {
                    if let Some(entry) = totals.get_mut(&digest) {
                        entry.0 = done;
                    }
                }
                Progress::Finished { digest, total } => {
                    totals.insert(digest, (total, total));
                }
            }
            let (done, total) = totals
                .values()
                .fold((0, 0), |(d, t), (done, total)| (d + done, t + total));
            progress(PullProgress {
                done_bytes: done,
                total_bytes: total,
            });
        })
        .await
        .map_err(pull_error)?;
    let manifest = cloudos_oci::Manifest {
        config: pulled.config,
        layers: pulled.layers,
    };
    unpack(lease, pulled.name, manifest).await
}

/// An image the store has under a fixed tag or a digest (`:latest` and untagged
/// references are always pulled again, as they are meant to move), with its blobs
/// pinned in `lease`; `None` when it is not there whole.
fn local_image(lease: &Lease, image: &str) -> Option<(String, cloudos_oci::Manifest)> {
    let last = image.rsplit('/').next().unwrap_or(image);
    let pinned =
        image.contains('@') || last.split_once(':').is_some_and(|(_, tag)| tag != "latest");
    if !pinned {
        return None;
    }
    let store = lease.store();
    let digest = store.get_ref(image).ok()?;
    // Pinned before each look: what is there now stays there.
    lease.pin(&digest);
    let manifest = match cloudos_oci::Document::parse(&store.read_blob(&digest).ok()?).ok()? {
        cloudos_oci::Document::Manifest(m) => m,
        cloudos_oci::Document::Index(_) => return None,
    };
    for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
        lease.pin(&blob.digest);
        if !store.has_blob(&blob.digest) {
            return None;
        }
    }
    Some((image.to_owned(), manifest))
}

/// Unpacks the manifest's layers (each once) and reads its config, off the async thread.
async fn unpack(
    lease: Lease,
    name: String,
    manifest: cloudos_oci::Manifest,
) -> Result<PreparedImage, String> {
    tokio::task::spawn_blocking(move || -> Result<PreparedImage, String> {
        let store = lease.store();
        let config_bytes = store
            .read_blob(&manifest.config.digest)
            .map_err(|e| format!("cannot read the image config: {e}"))?;
        let file: ImageConfigFile = serde_json::from_slice(&config_bytes)
            .map_err(|e| format!("the image config of {name} is not valid JSON: {e}"))?;
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for layer in &manifest.layers {
            let dir = store
                .unpack_layer(&layer.digest)
                .map_err(|e| format!("cannot unpack a layer of {name}: {e}"))?;
            layers.push(dir);
        }
        Ok(PreparedImage {
            layers,
            config: file.config.unwrap_or_default(),
            _lease: lease,
        })
    })
    .await
    .map_err(|e| format!("unpacking failed: {e}"))?
}

fn pull_error(e: PullError) -> String {
    // The images crate's messages already say what is wrong and what to do.
    format!("cannot pull the image: {e}")
}

/// What the container runs: the spec's entrypoint and command where given, else the
/// image's (Docker's rules: a command replaces `Cmd`, an entrypoint replaces
/// `Entrypoint` and drops the image's `Cmd`).
pub fn argv(spec: &WorkloadSpec, image: &ImageRunConfig) -> Result<Vec<String>, String> {
    let entrypoint = spec
        .entrypoint
        .clone()
        .or_else(|| image.entrypoint.clone())
        .unwrap_or_default();
    let command = if !spec.command.is_empty() {
        spec.command.clone()
    } else if spec.entrypoint.is_some() {
        Vec::new()
    } else {
        image.cmd.clone().unwrap_or_default()
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(command).collect();
    if argv.is_empty() {
        return Err(format!(
            "{} has no entrypoint or command and none was given: add one after `--`",
            spec.image
        ));
    }
    Ok(argv)
}

/// The image's environment overlaid with the spec's.
pub fn env(spec: &WorkloadSpec, image: &ImageRunConfig) -> Vec<String> {
    let mut vars: Vec<(String, String)> = image
        .env
        .iter()
        .flatten()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect();
    for (k, v) in &spec.env {
        vars.retain(|(existing, _)| existing != k);
        vars.push((k.clone(), v.clone()));
    }
    vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// `(uid, gid)` from the spec, else from the image when numeric; names would need the
/// image's /etc/passwd, which is left for later (say so rather than guess).
pub fn user(spec: &WorkloadSpec, image: &ImageRunConfig) -> Result<Option<(u32, u32)>, String> {
    let text = match (&spec.user, &image.user) {
        (Some(u), _) => u.clone(),
        (None, Some(u)) if !u.is_empty() => u.clone(),
        _ => return Ok(None),
    };
    cloudos_cluster::workload::parse_user(&text)
        .map(Some)
        .map_err(|_| format!("user {text:?} is not numeric; give --user UID[:GID]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: &[&str], entrypoint: Option<&[&str]>) -> WorkloadSpec {
        WorkloadSpec {
            command: command.iter().map(|s| s.to_string()).collect(),
            entrypoint: entrypoint.map(|e| e.iter().map(|s| s.to_string()).collect()),
            env: [("B".to_string(), "2".to_string())].into(),
            ..WorkloadSpec::new("r/busybox:1")
        }
    }

    fn image() -> ImageRunConfig {
        ImageRunConfig {
            entrypoint: Some(vec!["/bin/tini".into()]),
            cmd: Some(vec!["sh".into()]),
            env: Some(vec!["PATH=/bin".into(), "B=1".into()]),
            working_dir: None,
            user: Some("1000".into()),
        }
    }

    #[test]
    fn docker_rules_for_argv() {
        assert_eq!(
            argv(&spec(&[], None), &image()).unwrap(),
            ["/bin/tini", "sh"]
        );
        assert_eq!(
            argv(&spec(&["ls"], None), &image()).unwrap(),
            ["/bin/tini", "ls"]
        );
        assert_eq!(argv(&spec(&[], Some(&["/x"])), &image()).unwrap(), ["/x"]);
        let empty = ImageRunConfig::default();
        assert!(argv(&spec(&[], None), &empty)
            .unwrap_err()
            .contains("after `--`"));
    }

    #[test]
    fn env_and_user() {
        assert_eq!(env(&spec(&[], None), &image()), ["PATH=/bin", "B=2"]);
        assert_eq!(
            user(&spec(&[], None), &image()).unwrap(),
            Some((1000, 1000))
        );
        let mut named = image();
        named.user = Some("nobody".into());
        assert!(user(&spec(&[], None), &named).is_err());
    }
}
