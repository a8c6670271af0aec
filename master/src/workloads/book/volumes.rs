//! Named volumes, as the book sees them (decision 64): a volume is on the node where the
//! first run that names it was placed, and every later run that names it goes there.
//! Pure, like the rest of the book: the node makes the directory when the run starts,
//! deletes it when told (`MasterMessage::RemoveVolume`).

use cloudos_cluster::api::MasterMessage;
use cloudos_cluster::volume::{VolumeInfo, VolumeList, VolumeRecord};
use cloudos_cluster::workload::{TaskInfo, WorkloadSpec};
use time::OffsetDateTime;

use super::{Book, BookError, Effects};

/// Where a spec's named volumes pin it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Pin {
    /// No volume of it is on a node yet: any node may take it.
    Free,
    /// Its volumes are on this node.
    Node { node: String, volume: String },
    /// Two of its volumes are on different nodes: no node can take it.
    Split(String),
}

impl Book {
    /// The volumes as the master keeps them (from the store, at start).
    pub fn with_volumes(mut self, volumes: Vec<VolumeRecord>) -> Self {
        self.volumes = volumes.into_iter().map(|v| (v.name.clone(), v)).collect();
        self
    }

    /// Where `spec`'s named volumes are.
    pub(super) fn pin(&self, spec: &WorkloadSpec) -> Pin {
        let mut pin = Pin::Free;
        for name in spec.volume_names() {
            let Some(record) = self.volumes.get(name) else {
                continue;
            };
            match &pin {
                Pin::Node { node, volume } if *node != record.node => {
                    return Pin::Split(format!(
                        "its volumes are on two nodes ({volume} on {node}, {name} on {}); a \
                         task or replica runs on one",
                        record.node
                    ));
                }
                Pin::Node { .. } => {}
                _ => {
                    pin = Pin::Node {
                        node: record.node.clone(),
                        volume: name.to_owned(),
                    }
                }
            }
        }
        pin
    }

    /// The volumes of `task` that are on no node yet are now on `node`, where its run was
    /// placed: the records to save.
    pub(super) fn bind_volumes(
        &mut self,
        task: &TaskInfo,
        node: &str,
        now: OffsetDateTime,
    ) -> Vec<VolumeRecord> {
        let mut made = Vec::new();
        for name in task.spec.volume_names() {
            if self.volumes.contains_key(name) {
                continue;
            }
            let record = VolumeRecord {
                name: name.to_owned(),
                node: node.to_owned(),
                created_at: now,
            };
            self.volumes.insert(name.to_owned(), record.clone());
            made.push(record);
        }
        made
    }

    /// Why work pinned to `pin` waits, in words, from the scheduler's reason.
    pub(super) fn pinned_reason(pin: &Pin, why: &str) -> Option<String> {
        match pin {
            Pin::Node { node, volume } => Some(format!(
                "waits for node {node}, which holds its volume {volume}: {why}"
            )),
            Pin::Split(why) => Some(why.clone()),
            Pin::Free => None,
        }
    }

    /// `cloudos volume list`: each volume, its node, and the work that uses it now.
    pub fn volumes(&self) -> VolumeList {
        let volumes = self
            .volumes
            .values()
            .map(|v| VolumeInfo {
                name: v.name.clone(),
                node: v.node.clone(),
                created_at: v.created_at,
                used_by: self.users(&v.name),
            })
            .collect();
        VolumeList { volumes }
    }

    /// What uses volume `name` (see [`Book::spec_users`]).
    fn users(&self, name: &str) -> Vec<String> {
        self.spec_users(|spec| spec.volume_names().contains(&name))
    }

    /// `cloudos volume rm`: forgets volume `name` and tells its node to delete its data.
    /// Refused while work uses it. `connected(node)` says whether the node can be told
    /// now: a volume on a node that is away stays (its data would outlive the record),
    /// unless the node is no longer in the cluster at all (`None`).
    pub fn remove_volume(
        &mut self,
        name: &str,
        connected: &dyn Fn(&str) -> Option<bool>,
    ) -> Result<(VolumeRecord, Effects), BookError> {
        let record = self
            .volumes
            .get(name)
            .cloned()
            .ok_or_else(|| BookError::NoVolume(name.to_owned()))?;
        let users = self.users(name);
        if !users.is_empty() {
            return Err(BookError::VolumeInUse {
                name: name.to_owned(),
                users: users.join(", "),
            });
        }
        let mut effects = Effects::default();
        match connected(&record.node) {
            Some(true) => effects.messages.push((
                record.node.clone(),
                MasterMessage::RemoveVolume {
                    name: name.to_owned(),
                },
            )),
            Some(false) => {
                return Err(BookError::VolumeNodeAway {
                    name: name.to_owned(),
                    node: record.node,
                })
            }
            // The node was removed from the cluster: its data went with it.
            None => {}
        }
        self.volumes.remove(name);
        effects.delete_volumes.push(name.to_owned());
        Ok((record, effects))
    }
}

#[cfg(test)]
mod tests;
