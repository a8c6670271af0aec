//! Named volumes, as the book sees them (decision 64): a volume is on the node where the
//! first run that names it was placed, and every later run that names it goes there.
//! Pure, like the rest of the book: the node makes the directory when the run starts,
//! deletes it when told (`MasterMessage::RemoveVolume`).

use cloudos_cluster::api::MasterMessage;
use std::collections::BTreeMap;

use cloudos_cluster::volume::{
    check_size_limit, validate_volume_name, VolumeChange, VolumeInfo, VolumeList, VolumeRecord,
};
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
            // A volume made by `cloudos volume create` is on no node until work uses it.
            let Some(home) = self.volumes.get(name).and_then(|r| r.node.as_ref()) else {
                continue;
            };
            match &pin {
                Pin::Node { node, volume } if node != home => {
                    return Pin::Split(format!(
                        "its volumes are on two nodes ({volume} on {node}, {name} on {home}); \
                         a task or replica runs on one"
                    ));
                }
                Pin::Node { .. } => {}
                _ => {
                    pin = Pin::Node {
                        node: home.clone(),
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
            let record = self.volume_entry(name, now);
            if record.node.is_none() {
                record.node = Some(node.to_owned());
                made.push(record.clone());
            }
        }
        made
    }

    /// Volume `name`'s record, made (on no node, without a limit) if there is none.
    fn volume_entry(&mut self, name: &str, now: OffsetDateTime) -> &mut VolumeRecord {
        self.volumes
            .entry(name.to_owned())
            .or_insert_with(|| VolumeRecord {
                name: name.to_owned(),
                node: None,
                created_at: now,
                size_limit: None,
            })
    }

    /// The size limits of `spec`'s named volumes that have one.
    pub(super) fn volume_limits(&self, spec: &WorkloadSpec) -> BTreeMap<String, u64> {
        spec.volume_names()
            .into_iter()
            .filter_map(|name| {
                let limit = self.volumes.get(name)?.size_limit?;
                Some((name.to_owned(), limit))
            })
            .collect()
    }

    /// `cloudos volume create|resize`: makes volume `name` with `size_limit` (on no node
    /// until work uses it), or gives the one there is that limit, telling its node now if
    /// it is connected (`connected` as for [`Book::remove_volume`]).
    pub fn set_volume(
        &mut self,
        name: &str,
        size_limit: Option<u64>,
        now: OffsetDateTime,
        connected: &dyn Fn(&str) -> Option<bool>,
    ) -> Result<(VolumeChange, Effects), BookError> {
        validate_volume_name(name).map_err(|e| BookError::BadVolume(e.to_string()))?;
        if let Some(bytes) = size_limit {
            check_size_limit(bytes).map_err(|e| BookError::BadVolume(e.to_string()))?;
        }
        let created = !self.volumes.contains_key(name);
        let record = self.volume_entry(name, now);
        record.size_limit = size_limit;
        let record = record.clone();
        let mut effects = Effects::default();
        let mut sent = false;
        if let Some(node) = &record.node {
            if connected(node) == Some(true) {
                effects.messages.push((
                    node.clone(),
                    MasterMessage::SetVolumeLimit {
                        name: name.to_owned(),
                        size_limit,
                    },
                ));
                sent = true;
            }
        }
        effects.save_volumes.push(record.clone());
        let change = VolumeChange {
            volume: self.info(&record),
            created,
            sent,
        };
        Ok((change, effects))
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
        let volumes = self.volumes.values().map(|v| self.info(v)).collect();
        VolumeList { volumes }
    }

    fn info(&self, v: &VolumeRecord) -> VolumeInfo {
        VolumeInfo {
            name: v.name.clone(),
            node: v.node.clone(),
            created_at: v.created_at,
            size_limit: v.size_limit,
            // The node reports it; the route adds it (see `routes::volumes::list`).
            used_bytes: None,
            used_by: self.users(&v.name),
        }
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
        if let Some(node) = &record.node {
            match connected(node) {
                Some(true) => effects.messages.push((
                    node.clone(),
                    MasterMessage::RemoveVolume {
                        name: name.to_owned(),
                    },
                )),
                Some(false) => {
                    return Err(BookError::VolumeNodeAway {
                        name: name.to_owned(),
                        node: node.clone(),
                    })
                }
                // The node was removed from the cluster: its data went with it.
                None => {}
            }
        }
        self.volumes.remove(name);
        effects.delete_volumes.push(name.to_owned());
        Ok((record, effects))
    }
}

#[cfg(test)]
mod tests;
