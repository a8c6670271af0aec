//! Image garbage collection on the node: an image no run has used for [`KEEP_UNUSED`] loses
//! its ref, and the content store then drops every blob and unpacked layer no ref reaches.
//! Images of runs that are not over are never touched, whatever their age.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let refs = store.refs().map_err(|e| e.to_string())?;
    let (in_use, last_used) = shared.image_use();
    let doomed = unused_refs(
        refs.keys(),
        &in_use,
        &last_used,
        started,
        Instant::now(),
        KEEP_UNUSED,
    );
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
}
