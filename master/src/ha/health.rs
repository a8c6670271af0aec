//! etcd's health as `cloudos status` shows it: every member, and whether it accepts a
//! connection now (a member that does not is down, or cut off from this master).

use cloudos_cluster::api::EtcdMemberStatus;
use cloudos_store::etcd::endpoints::reachable;

use crate::state::MasterState;

/// The members of the masters' etcd, each probed; empty on a master on its own, and when
/// etcd cannot list its members (no quorum: `status` still answers).
pub async fn members(state: &MasterState) -> Vec<EtcdMemberStatus> {
    let Some(etcd) = state.etcd.clone() else {
        return Vec::new();
    };
    let listed = match tokio::task::spawn_blocking(move || etcd.members()).await {
        Ok(Ok(members)) => members,
        Ok(Err(e)) => {
            log::warn!("cannot list the etcd members: {e}");
            return Vec::new();
        }
        Err(_) => return Vec::new(),
    };
    let probes = listed.into_iter().map(|m| async move {
        let client_url = m
            .client_urls
            .first()
            .or(m.peer_urls.first())
            .cloned()
            .unwrap_or_default();
        let answering = reachable(&client_url).await;
        EtcdMemberStatus {
            name: m.name,
            client_url,
            answering,
        }
    });
    futures::future::join_all(probes).await
}
