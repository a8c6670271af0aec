//! Image garbage collection on the node: an image no run has used for [`KEEP_UNUSED`] loses
//! its ref, and the content store then drops every blob and unpacked layer that no ref
//! reaches and no lease pins. Refs go by tag (a tag is what a run asks for), but what stays
//! is decided by digest: a pull in progress and every run's prepared image pin their blobs
//! in a lease (see `image.rs`), and the store serialises collections with pins. So a pull
//! never loses the blobs it wrote, and a running container keeps its layers when its tag
//! moves to another image.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudos_oci::ImageStore;

use super::Shared;

/// How long an unused image stays for the next run that may want it.
pub const KEEP_UNUSED: Duration = Duration::from_secs(3600);
/// How often the node looks for unused images.
pub const EVERY: Duration = Duration::from_secs(600);

/// The refs to drop: not in use, and unused for longer than `keep`. Refs the agent has not
/// seen used since it started count from `started`.
pub fn unused_refs<'a>(
    refs: impl IntoIterator<Item = &'a String>,
    in_use: &BTreeSet<String>,
    last_used: &HashMap<String, Instant>,
    started: Instant,
    now: Instant,
    keep: Duration,
) -> Vec<String> {
    refs.into_iter()
        .filter(|r| !in_use.contains(*r))
        .filter(|r| {
            let since = last_used.get(*r).copied().unwrap_or(started);
            now.saturating_duration_since(since) >= keep
        })
        .cloned()
        .collect()
}

/// Every [`EVERY`]: drops unused images and collects the store.
pub(super) async fn run(shared: Arc<Shared>) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let s = Arc::clone(&shared);
        let collected = tokio::task::spawn_blocking(move || collect(&s, started)).await;
        match collected {
            Ok(Ok((0, 0))) => {}
            Ok(Ok((images, bytes))) => {
                log::info!("image gc: {images} unused images removed, {bytes} bytes freed")
            }
            Ok(Err(e)) => log::warn!("image gc failed: {e}"),
            Err(e) => log::warn!("image gc task failed: {e}"),
        }
    }
}

fn collect(shared: &Shared, started: Instant) -> Result<(usize, u64), String> {
    let Ok(store) = &shared.images else {
        return Ok((0, 0));
    };
    let (in_use, last_used) = shared.image_use();
    collect_store(store, &in_use, &last_used, started, Instant::now())
}

/// Drops the refs [`unused_refs`] picks and collects the store; returns the images
/// dropped and the bytes freed.
fn collect_store(
    store: &ImageStore,
    in_use: &BTreeSet<String>,
    last_used: &HashMap<String, Instant>,
    started: Instant,
    now: Instant,
) -> Result<(usize, u64), String> {
    let refs = store.refs().map_err(|e| e.to_string())?;
    let doomed = unused_refs(refs.keys(), in_use, last_used, started, now, KEEP_UNUSED);
    for name in &doomed {
        store.remove_ref(name).map_err(|e| e.to_string())?;
    }
    let report = store.gc().map_err(|e| e.to_string())?;
    Ok((doomed.len(), report.bytes_freed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_unused_images_go() {
        let start = Instant::now();
        let hour = Duration::from_secs(3600);
        let refs: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let in_use: BTreeSet<String> = ["a".to_string()].into();
        let last_used: HashMap<String, Instant> =
            [("b".to_string(), start + hour), ("c".to_string(), start)].into();
        let now = start + hour + Duration::from_secs(60);
        // a: in use; b: used a minute ago; c: used an hour ago; d: never seen since start.
        assert_eq!(
            unused_refs(&refs, &in_use, &last_used, start, now, hour),
            ["c", "d"]
        );
        assert!(unused_refs(&refs, &in_use, &last_used, start, start, hour).is_empty());
    }

    /// A one-layer image whose `bin/app` says `tag`, stored; returns its manifest digest.
    fn put_image(store: &ImageStore, says: &str) -> cloudos_oci::Digest {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(says.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        tar.append_data(&mut h, "bin/app", says.as_bytes()).unwrap();
        let layer = store.put_bytes(&tar.into_inner().unwrap()).unwrap();
        let config = serde_json::json!({"config": {"Cmd": ["/bin/app", says]}}).to_string();
        let config = store.put_bytes(config.as_bytes()).unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config.to_string(), "size": 1},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer.to_string(), "size": 1}],
        });
        store.put_bytes(manifest.to_string().as_bytes()).unwrap()
    }

    /// Race (b) of issue 16 through the agent's own code: a run prepares app:1 (image A)
    /// and its container runs from A's layers; the tag moves to image B and the old gc
    /// (tags only) would have dropped A's blobs and layers under the running container.
    #[tokio::test(flavor = "current_thread")]
    async fn a_running_containers_layers_survive_its_tag_moving_and_gc() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("images")).unwrap();
        let tag = "registry.test/team/app:1";
        let a = put_image(&store, "A");
        store.set_ref(tag, &a).unwrap();
        let running =
            super::super::image::prepare(&store, &cloudos_oci::PullConfig::default(), tag, |_| {})
                .await
                .unwrap();
        assert_eq!(running.layers.len(), 1);
        let app = running.layers[0].join("bin/app");
        assert_eq!(std::fs::read(&app).unwrap(), b"A");

        let b = put_image(&store, "B");
        store.set_ref(tag, &b).unwrap();
        // Long unused by tag, as far as the gc knows: the ref goes, then the store gc.
        let start = Instant::now();
        let later = start + KEEP_UNUSED;
        let none = BTreeSet::new();
        let (dropped, _) = collect_store(&store, &none, &HashMap::new(), start, later).unwrap();
        assert_eq!(dropped, 1);
        assert!(store.refs().unwrap().is_empty());
        assert_eq!(
            std::fs::read(&app).unwrap(),
            b"A",
            "the running layer survived"
        );
        assert!(store.has_blob(&a));

        drop(running);
        let (_, freed) = collect_store(&store, &none, &HashMap::new(), start, later).unwrap();
        assert!(freed > 0);
        assert!(!app.exists(), "with the run over, the layer goes");
        assert!(!store.has_blob(&a) && !store.has_blob(&b));
    }
}
