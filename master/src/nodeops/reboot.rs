//! Reboot: the master asks a node, over the connection its agent opened, to reboot. The
//! agent hands the request to whoever owns the machine (PID 1 on the appliance); a host
//! install says in its hello that it does not reboot, and is refused here with the reason.
//! The caller sees the node come back by its new boot id (`NodeInfo::boot`).

use cloudos_cluster::api::MasterMessage;
use cloudos_cluster::nodeops::RebootStarted;
use cloudos_store::NodeState;

use super::NodeOpError;
use crate::state::MasterState;

/// Sends the reboot to `node`; `by` (who asked) goes to the node's log. Refused while the
/// node has no connection, or when it cannot reboot itself.
pub fn reboot(state: &MasterState, node: &str, by: &str) -> Result<RebootStarted, NodeOpError> {
    let info = state
        .roster
        .get(node)
        .ok_or_else(|| NodeOpError::NoNode(node.to_owned()))?;
    if info.state != NodeState::Ready || !state.roster.is_connected(node) {
        return Err(NodeOpError::NotConnected {
            node: node.to_owned(),
            state: info.state,
        });
    }
    let boot = match info.boot {
        None => {
            return Err(NodeOpError::NoBootReport {
                node: node.to_owned(),
            })
        }
        Some(boot) if !boot.rebootable => {
            return Err(NodeOpError::HostInstall {
                node: node.to_owned(),
            })
        }
        Some(boot) => boot,
    };
    let message = MasterMessage::Reboot {
        reason: format!("asked by {by}"),
    };
    if !state.roster.send(node, message) {
        return Err(NodeOpError::NotSent {
            node: node.to_owned(),
        });
    }
    log::info!("node {node} asked to reboot by {by} (boot {})", boot.id);
    Ok(RebootStarted {
        node: node.to_owned(),
        boot_id: boot.id,
    })
}
