//! The store's changes that span records, each one transaction ([`Store::transact_raw`]):
//! a join (token use, node record, revocations), an eviction (node record, revocations)
//! and a workload change (tasks and services). A failure anywhere leaves every table as it
//! was, so the master never keeps half of an operation: a used token without its node, a
//! removed node whose certificate still works, a task saved without its service.

use serde::de::DeserializeOwned;
use serde::Serialize;
use time::OffsetDateTime;

use super::{decode, encode, NodeRecord, RevokedCert, Store, StoreError, Table, Txn, UserRecord};
use cloudos_cluster::identity::Role;
use cloudos_cluster::pki::CertSerial;
use cloudos_cluster::token::{self, TokenError, TokenRecord};
use cloudos_cluster::workload::{ServiceRecord, TaskInfo};

/// A token presented for one use: its id and secret, checked at `now`, and the role the
/// caller needs it to grant (`None`: any).
#[derive(Clone, Copy)]
pub struct TokenUse<'a> {
    pub id: &'a str,
    pub secret: &'a str,
    pub now: OffsetDateTime,
    pub role: Option<Role>,
}

impl std::fmt::Debug for TokenUse<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenUse")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("now", &self.now)
            .field("role", &self.role)
            .finish()
    }
}

/// What a committed join did.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    /// The token's record as it was before this use.
    pub token: TokenRecord,
    /// The node record the join replaced (the same node joining again).
    pub replaced: Option<NodeRecord>,
    /// Every revocation written: the replaced record's serial, then the caller's.
    pub revoked: Vec<RevokedCert>,
}

/// Tasks, services and volumes to save and delete, as one change.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkloadWrite<'a> {
    pub save_tasks: &'a [TaskInfo],
    pub delete_tasks: &'a [String],
    pub save_services: &'a [ServiceRecord],
    pub delete_services: &'a [String],
    pub save_volumes: &'a [cloudos_cluster::volume::VolumeRecord],
    pub delete_volumes: &'a [String],
}

/// Why a replaced node record's serial is revoked.
pub const REJOIN_REASON: &str = "the node joined again";

fn get_json<T: DeserializeOwned>(
    txn: &mut dyn Txn,
    table: Table,
    key: &str,
) -> Result<Option<T>, StoreError> {
    txn.get(table, key)?
        .map(|bytes| decode(table, key, &bytes))
        .transpose()
}

fn put_json<T: Serialize>(
    txn: &mut dyn Txn,
    table: Table,
    key: &str,
    value: &T,
) -> Result<(), StoreError> {
    txn.put(table, key, &encode(table, key, value)?)
}

/// Checks `token` and takes one of its uses inside `txn`; the record before the use.
pub(super) fn take_use(txn: &mut dyn Txn, token: &TokenUse<'_>) -> Result<TokenRecord, StoreError> {
    let id = token.id;
    let mut record: TokenRecord = get_json(txn, Table::Tokens, id)?
        .ok_or_else(|| TokenError::UnknownId { id: id.to_owned() })?;
    match token.role {
        Some(role) => token::verify_for_role(&record, token.secret, token.now, role)?,
        None => token::verify(&record, token.secret, token.now)?,
    }
    let before = record.clone();
    if record.uses_left.is_some() {
        record.consume_use();
        put_json(txn, Table::Tokens, id, &record)?;
    }
    Ok(before)
}

/// See [`Store::admit_node`].
pub fn admit_node<S: Store + ?Sized>(
    store: &S,
    token: &TokenUse<'_>,
    node: &NodeRecord,
    revoke: &[RevokedCert],
) -> Result<Admission, StoreError> {
    let mut done = None;
    store.transact_raw(&mut |txn| {
        let used = take_use(txn, token)?;
        let replaced: Option<NodeRecord> = get_json(txn, Table::Nodes, &node.name)?;
        put_json(txn, Table::Nodes, &node.name, node)?;
        let mut revoked = Vec::new();
        // Every certificate the replaced record held: current and pending.
        for serial in replaced.iter().flat_map(NodeRecord::serials) {
            if *serial != node.cert_serial {
                revoked.push(RevokedCert {
                    serial: serial.clone(),
                    node: Some(node.name.clone()),
                    revoked_at: token.now,
                    reason: REJOIN_REASON.to_owned(),
                });
            }
        }
        revoked.extend(revoke.iter().cloned());
        for r in &revoked {
            put_json(txn, Table::RevokedCerts, r.serial.as_str(), r)?;
        }
        done = Some(Admission {
            token: used,
            replaced,
            revoked,
        });
        Ok(())
    })?;
    done.ok_or_else(|| StoreError::NotFound {
        what: "token",
        key: token.id.to_owned(),
    })
}

/// Writes a revocation of each serial, for `holder`, inside `txn`; the revocations.
fn revoke_in(
    txn: &mut dyn Txn,
    serials: impl IntoIterator<Item = CertSerial>,
    holder: &str,
    reason: &str,
    now: OffsetDateTime,
) -> Result<Vec<RevokedCert>, StoreError> {
    let mut revoked = Vec::new();
    for serial in serials {
        let r = RevokedCert {
            serial,
            node: Some(holder.to_owned()),
            revoked_at: now,
            reason: reason.to_owned(),
        };
        put_json(txn, Table::RevokedCerts, r.serial.as_str(), &r)?;
        revoked.push(r);
    }
    Ok(revoked)
}

/// See [`Store::admit_user`].
pub fn admit_user<S: Store + ?Sized>(
    store: &S,
    token: &TokenUse<'_>,
    admin: &UserRecord,
    reason: &str,
) -> Result<Vec<RevokedCert>, StoreError> {
    let mut done = None;
    store.transact_raw(&mut |txn| {
        take_use(txn, token)?;
        let replaced: Option<UserRecord> = get_json(txn, Table::Users, &admin.name)?;
        put_json(txn, Table::Users, &admin.name, admin)?;
        let serials = replaced.iter().flat_map(UserRecord::serials).cloned();
        done = Some(revoke_in(txn, serials, &admin.name, reason, token.now)?);
        Ok(())
    })?;
    done.ok_or_else(|| StoreError::NotFound {
        what: "token",
        key: token.id.to_owned(),
    })
}

/// See [`Store::evict_user`].
pub fn evict_user<S: Store + ?Sized>(
    store: &S,
    name: &str,
    reason: &str,
    now: OffsetDateTime,
) -> Result<(UserRecord, Vec<RevokedCert>), StoreError> {
    let mut done = None;
    store.transact_raw(&mut |txn| {
        let record: UserRecord =
            get_json(txn, Table::Users, name)?.ok_or_else(|| StoreError::NotFound {
                what: "admin",
                key: name.to_owned(),
            })?;
        txn.delete(Table::Users, name)?;
        let revoked = revoke_in(txn, record.serials().cloned(), name, reason, now)?;
        done = Some((record, revoked));
        Ok(())
    })?;
    done.ok_or_else(|| StoreError::NotFound {
        what: "admin",
        key: name.to_owned(),
    })
}

/// See [`Store::evict_node`].
pub fn evict_node<S: Store + ?Sized>(
    store: &S,
    name: &str,
    reason: &str,
    now: OffsetDateTime,
    also_revoke: &[CertSerial],
) -> Result<(NodeRecord, Vec<RevokedCert>), StoreError> {
    let mut done = None;
    store.transact_raw(&mut |txn| {
        let record: NodeRecord =
            get_json(txn, Table::Nodes, name)?.ok_or_else(|| StoreError::NotFound {
                what: "node",
                key: name.to_owned(),
            })?;
        txn.delete(Table::Nodes, name)?;
        let mut serials: Vec<CertSerial> = record.serials().cloned().collect();
        for serial in also_revoke {
            if !serials.contains(serial) {
                serials.push(serial.clone());
            }
        }
        let revoked = revoke_in(txn, serials, name, reason, now)?;
        done = Some((record, revoked));
        Ok(())
    })?;
    done.ok_or_else(|| StoreError::NotFound {
        what: "node",
        key: name.to_owned(),
    })
}

/// See [`Store::write_workloads`].
pub fn write_workloads<S: Store + ?Sized>(
    store: &S,
    write: &WorkloadWrite<'_>,
) -> Result<(), StoreError> {
    store.transact_raw(&mut |txn| {
        for task in write.save_tasks {
            put_json(txn, Table::Tasks, &task.id, task)?;
        }
        for id in write.delete_tasks {
            txn.delete(Table::Tasks, id)?;
        }
        for service in write.save_services {
            put_json(txn, Table::Services, &service.name, service)?;
        }
        for name in write.delete_services {
            txn.delete(Table::Services, name)?;
        }
        for volume in write.save_volumes {
            put_json(txn, Table::Volumes, &volume.name, volume)?;
        }
        for name in write.delete_volumes {
            txn.delete(Table::Volumes, name)?;
        }
        Ok(())
    })
}
