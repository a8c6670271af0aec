//! Cordon and uncordon: the node's `unschedulable` flag, in memory and in the store (a
//! cordon survives a master restart). The scheduler reads it through the dispatch loop's
//! node facts; nothing that runs on the node is touched.

use std::sync::Arc;

use cloudos_cluster::api::NodeInfo;
use cloudos_store::StoreError;

use super::NodeOpError;
use crate::state::MasterState;

/// Cordons (`true`) or uncordons a node; the node as it is now. Memory first, then the
/// store (the roster's periodic save writes whole records, so the store never goes back
/// to the old value); a store failure puts memory back and is the error.
pub async fn set_cordon(
    state: &Arc<MasterState>,
    node: &str,
    cordon: bool,
) -> Result<NodeInfo, NodeOpError> {
    let (record, was) = state
        .roster
        .set_unschedulable(node, cordon)
        .ok_or_else(|| NodeOpError::NoNode(node.to_owned()))?;
    if was == cordon {
        return Ok(NodeInfo::from(&record));
    }
    let (s, name) = (Arc::clone(state), node.to_owned());
    let saved = tokio::task::spawn_blocking(move || {
        s.store.update_node(&name, &mut |stored| {
            stored.unschedulable = cordon;
            Ok(())
        })
    })
    .await;
    let failed = match saved {
        Ok(Ok(_)) => None,
        Ok(Err(StoreError::NotFound { .. })) => Some(NodeOpError::NoNode(node.to_owned())),
        Ok(Err(e)) => Some(NodeOpError::Store(e)),
        Err(e) => Some(NodeOpError::Task(e.to_string())),
    };
    if let Some(e) = failed {
        state.roster.set_unschedulable(node, was);
        return Err(e);
    }
    if cordon {
        log::info!("node {node} cordoned: no new work goes there");
    } else {
        log::info!("node {node} uncordoned: it takes new work again");
    }
    Ok(NodeInfo::from(&record))
}
