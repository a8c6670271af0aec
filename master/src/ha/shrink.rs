//! An admin removes a master from the masters (`DELETE /v1/masters/{name}`, `cloudos master
//! remove NAME`).
//!
//! Its etcd member leaves the etcd cluster; etcd itself refuses when that would take the
//! quorum away from the members that run. The removed master notices within seconds that
//! its member is gone ([`watch`]), marks its `ha.json` removed and stops; it does not start
//! again on that file. Its candidate's lease runs out with it, so it leaves the masters'
//! list (and the agents' lists) a lease later.
//!
//! Not done yet: its etcd client certificate is not revoked (etcd reads a CRL file, which
//! the masters do not keep yet). See docs/design.md decision 69.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cloudos_store::{EtcdStore, StoreError};

use super::file::HaFile;
use crate::error::{ApiError, MasterError};
use crate::state::MasterState;

/// How long the leader asks etcd to remove a member before it answers.
const REMOVE_FOR: Duration = Duration::from_secs(15);
/// How often a master checks that its member is still one of the cluster's.
const EVERY: Duration = Duration::from_secs(2);

/// Removes master `name`'s etcd member. Returns how many members are left.
pub fn remove(state: &MasterState, name: &str) -> Result<usize, ApiError> {
    let Some(etcd) = &state.etcd else {
        return Err(ApiError::BadRequest(
            "this cluster has one master, on its own: there is no other master to remove".into(),
        ));
    };
    let members = etcd.members()?;
    let Some(member) = members.iter().find(|m| m.name == name) else {
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        return Err(ApiError::NotFound(format!(
            "no master named {name:?} among the masters ({})",
            names.join(", ")
        )));
    };
    if members.len() == 1 {
        return Err(ApiError::Conflict(format!(
            "{name} is the last master: the cluster would have none"
        )));
    }
    // etcd refuses a change of members while one of them has not answered for a few
    // seconds (one that just started, or one that is down): asked again for a while.
    let deadline = std::time::Instant::now() + REMOVE_FOR;
    loop {
        match etcd.remove_member(member.id) {
            Ok(()) => break,
            Err(e @ StoreError::Unavailable { .. }) if std::time::Instant::now() < deadline => {
                log::info!("removing master {name}'s etcd member: {e}; asking again");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(StoreError::Unavailable { .. }) => {
                return Err(ApiError::Unavailable(format!(
                    "etcd refuses to remove {name}'s member now: it does so while a member \
                     does not answer, as the others could lose their quorum; bring the \
                     masters up (or wait a few seconds after one started) and ask again"
                )))
            }
            Err(e) => return Err(e.into()),
        }
    }
    log::info!(
        "master {name} removed from the masters ({} etcd members left); it stops on its own",
        members.len() - 1
    );
    Ok(members.len() - 1)
}

/// Resolves once this master's own etcd member (the one at `peer_url`) is no longer among
/// the cluster's members, after marking `ha.json` in `data_dir` removed. Two readings in a
/// row must agree, and only a list etcd gave counts (no quorum says nothing).
pub async fn watch(store: Arc<EtcdStore>, peer_url: String, data_dir: PathBuf) -> MasterError {
    let mut missing = 0;
    loop {
        tokio::time::sleep(EVERY).await;
        let s = Arc::clone(&store);
        let listed = tokio::task::spawn_blocking(move || s.members()).await;
        let Ok(Ok(members)) = listed else { continue };
        if members.iter().any(|m| m.peer_urls.contains(&peer_url)) {
            missing = 0;
            continue;
        }
        missing += 1;
        if missing < 2 {
            continue;
        }
        log::error!("this master's etcd member was removed from the masters: it stops");
        match HaFile::load(&data_dir) {
            Ok(Some(mut file)) => {
                file.removed = true;
                if let Err(e) = file.save(&data_dir) {
                    log::error!("cannot mark ha.json removed: {e}");
                }
            }
            Ok(None) => {}
            Err(e) => log::error!("cannot mark ha.json removed: {e}"),
        }
        return MasterError::Removed;
    }
}
