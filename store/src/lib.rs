//! The master's state: its records, the [`Store`] trait every backend implements, and the
//! embedded redb backend. Only the master links this crate; the agent and the CLI speak the
//! wire types of `cloudos-cluster` and never see a record.
//!
//! - [`keyspace`]: tables, keys, key ranges and transactions: the model backends implement.
//! - [`watch`]: the changes committed, in order, for whoever follows them.
//! - [`records`]: what is stored (cluster meta, nodes, admins, revoked certificates).
//! - [`ops`]: the changes that span records, each one transaction (join, eviction, ...).
//! - [`quarantine`]: records that do not decode, moved aside at start.
//! - [`redb`]: the embedded backend, for a master on its own.
//! - [`etcd`]: the etcd backend, for several masters.
//! - [`snapshot`]: every table at one revision, for backups, and restoring one.
//! - [`wire`]: records and errors as the API shows them.
//!
//! Backends implement the raw operations on JSON values in the [`Table`]s; the typed methods
//! (cluster meta, tokens, nodes, revoked certificates, workloads) are provided on top of
//! them, so a later etcd backend only has to supply the raw operations. Two raw operations
//! are atomic: read-modify-write of one key ([`Store::update_raw`]) and a transaction over
//! several tables ([`Store::transact_raw`]). redb runs each in one write transaction (redb
//! has a single writer); etcd will run them as compare-and-swap loops (so the closures may
//! run more than once). Every change that spans records (a join, an eviction, a workload
//! change) is one transaction: it happens entirely or not at all (see [`ops`]).
//!
//! A record that does not decode does not stop a master: [`Store::quarantine_unreadable`]
//! (run at start) moves it into the `quarantine` table with the reason, see [`quarantine`].
//!
//! The schema version lives in the `meta` table under `schema_version`. Opening state with a
//! newer version than [`SCHEMA_VERSION`] fails with a message instead of misreading it; an
//! older version is migrated on open (version 1 is the first, so there is nothing to migrate
//! yet).
//!
//! ## Shaped for etcd
//!
//! The HA backend maps onto the trait one to one. A table is a key prefix
//! (`/cloudos/<table>/<key>`); [`Store::range_raw`] is a range read; [`Store::update_raw`]
//! and [`Store::transact_raw`] become optimistic transactions: the closure runs against
//! reads that remember each key's mod revision, and the commit is one etcd `Txn` whose
//! compares check those revisions and whose success branch holds the puts and deletes;
//! on a failed compare the closure runs again (hence "may run more than once").
//! [`Store::watch_raw`] is an etcd watch on the table's prefix, and [`Store::revision`]
//! the header revision.

use serde::de::DeserializeOwned;
use serde::Serialize;
use time::OffsetDateTime;

use cloudos_cluster::identity::Role;
use cloudos_cluster::pki::CertSerial;
use cloudos_cluster::secret::SecretRecord;
use cloudos_cluster::token::TokenRecord;
use cloudos_cluster::workload::{ServiceRecord, TaskInfo};

pub mod error;
pub mod etcd;
pub mod keyspace;
pub mod ops;
pub mod people;
pub mod quarantine;
pub mod records;
pub mod redb;
pub mod snapshot;
pub mod watch;
pub mod wire;

pub use error::{BackendError, StoreError};
pub use etcd::{EtcdConfig, EtcdStore};
pub use keyspace::{KeyRange, Table, Txn, TxnFn, UpdateFn, Write, SCHEMA_VERSION};
pub use ops::{Admission, TokenUse, WorkloadWrite};
pub use people::PeopleStore;
pub use quarantine::Quarantined;
pub use records::{ClusterMeta, EtcdCaRecord, NodeRecord, NodeState, RevokedCert, UserRecord};
pub use redb::RedbStore;
pub use snapshot::{Snapshot, SnapshotEntry};
pub use watch::{Change, Watch, WatchError, WatchEvent};

use keyspace::{CLUSTER_KEY, ETCD_CA_KEY};

/// The master's state. Backends implement the `*_raw` methods; the rest is provided.
pub trait Store: Send + Sync {
    fn get_raw(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// The `(key, value)` pairs of `range` in a table, in key order (etcd: a range read).
    fn range_raw(
        &self,
        table: Table,
        range: KeyRange<'_>,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// The keys of `range` in a table, in key order, without reading their values (etcd: a
    /// keys-only range read): for sweeps over large tables (history, audit).
    fn range_keys(&self, table: Table, range: KeyRange<'_>) -> Result<Vec<String>, StoreError> {
        Ok(self
            .range_raw(table, range)?
            .into_iter()
            .map(|(key, _)| key)
            .collect())
    }

    /// All `(key, value)` pairs of a table, in key order.
    fn list_raw(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.range_raw(table, KeyRange::All)
    }

    /// Every change committed to `table` after this call, in commit order (etcd: a watch
    /// on the table's prefix from the current revision). See [`watch`].
    fn watch_raw(&self, table: Table) -> Result<Watch, StoreError>;

    /// The revision of the last committed write (etcd: the header revision). Grows by one
    /// per write transaction; the embedded backend counts from 0 at each open.
    fn revision(&self) -> Result<u64, StoreError>;

    fn put_raw(&self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError>;

    /// Removes a key; `true` if it was there.
    fn delete_raw(&self, table: Table, key: &str) -> Result<bool, StoreError>;

    /// Atomically reads a key, lets `f` decide, and applies the decision. An error from `f`
    /// aborts without writing and is returned. `f` may be called more than once by backends
    /// that retry on conflict, so it must not have side effects beyond its captures.
    fn update_raw(&self, table: Table, key: &str, f: &mut UpdateFn<'_>) -> Result<(), StoreError>;

    /// Runs `f` in one write transaction over any tables and commits what it wrote: all of
    /// it or, when `f` or the commit fails, none of it (the error is returned). Like
    /// [`Store::update_raw`]'s closure, `f` may run more than once.
    fn transact_raw(&self, f: &mut TxnFn<'_>) -> Result<(), StoreError>;

    /// Every table's records, read in one read transaction: a consistent point in time even
    /// while writes go on (etcd: a range read of the whole prefix at one revision). See
    /// [`snapshot`].
    fn snapshot(&self) -> Result<Snapshot, StoreError>;

    /// Puts a [`Store::snapshot`] back, in one transaction: all of it or nothing. Refuses a
    /// snapshot of a newer schema and a store that already holds a cluster (nothing is
    /// written then). Older schemas are migrated when the store is next opened.
    fn restore(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        snapshot::restore(self, snapshot)
    }

    /// A join, in one transaction: checks the token and takes one use (as
    /// [`Store::consume_token`]), stores `node` (replacing a record of the same name),
    /// revokes the replaced record's serial when it differs from the new one, and stores
    /// every revocation in `revoke`. Nothing is written when any step fails. See
    /// [`ops::admit_node`].
    fn admit_node(
        &self,
        token: &TokenUse<'_>,
        node: &NodeRecord,
        revoke: &[RevokedCert],
    ) -> Result<Admission, StoreError> {
        ops::admit_node(self, token, node, revoke)
    }

    /// A node's removal, in one transaction: deletes its record, revokes the record's
    /// current serial and every serial of `also_revoke`, all for `reason` at `now`. Returns
    /// the deleted record and the revocations written; `NotFound` (nothing written) if no
    /// such node is stored. See [`ops::evict_node`].
    fn evict_node(
        &self,
        name: &str,
        reason: &str,
        now: OffsetDateTime,
        also_revoke: &[CertSerial],
    ) -> Result<(NodeRecord, Vec<RevokedCert>), StoreError> {
        ops::evict_node(self, name, reason, now, also_revoke)
    }

    /// An admin's login, in one transaction: takes one use of the token, stores `admin`
    /// (replacing a record of the same name, the admin logging in again) and revokes every
    /// serial the replaced record held. Returns those revocations. See
    /// [`ops::admit_user`].
    fn admit_user(
        &self,
        token: &TokenUse<'_>,
        admin: &UserRecord,
        reason: &str,
    ) -> Result<Vec<RevokedCert>, StoreError> {
        ops::admit_user(self, token, admin, reason)
    }

    /// An admin's revocation, in one transaction: deletes the record and revokes its
    /// current and pending serials. `NotFound` (nothing written) if there is no such admin.
    fn evict_user(
        &self,
        name: &str,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(UserRecord, Vec<RevokedCert>), StoreError> {
        ops::evict_user(self, name, reason, now)
    }

    /// One workload change (tasks, services and volumes saved and deleted), in one
    /// transaction.
    fn write_workloads(&self, write: &WorkloadWrite<'_>) -> Result<(), StoreError> {
        ops::write_workloads(self, write)
    }

    /// Moves every record that does not decode into the `quarantine` table, in one
    /// transaction, and returns what was moved (the master logs it at start). The `meta`
    /// table is never touched: without its CA a master must not start.
    fn quarantine_unreadable(&self, now: OffsetDateTime) -> Result<Vec<Quarantined>, StoreError> {
        quarantine::sweep(self, now)
    }

    /// The records quarantined so far.
    fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        list_json(self, Table::Quarantine)
    }

    /// The cluster's meta, once `master init` ran.
    fn cluster_meta(&self) -> Result<Option<ClusterMeta>, StoreError> {
        get_json(self, Table::Meta, CLUSTER_KEY)
    }

    /// Stores the cluster meta; fails if a cluster is already there (never overwrites a CA).
    fn init_cluster_meta(&self, meta: &ClusterMeta) -> Result<(), StoreError> {
        let value = encode(Table::Meta, CLUSTER_KEY, meta)?;
        self.update_raw(Table::Meta, CLUSTER_KEY, &mut |current| match current {
            Some(bytes) => {
                let existing: ClusterMeta = decode(Table::Meta, CLUSTER_KEY, bytes)?;
                Err(StoreError::AlreadyInitialized {
                    name: existing.name,
                })
            }
            None => Ok(Write::Put(value.clone())),
        })
    }

    /// The etcd CA, once the cluster has had a second master.
    fn etcd_ca(&self) -> Result<Option<EtcdCaRecord>, StoreError> {
        get_json(self, Table::Meta, ETCD_CA_KEY)
    }

    /// Stores `record` as the etcd CA unless one is there; returns the one stored (which
    /// may be an earlier one: a CA is never replaced).
    fn init_etcd_ca(&self, record: &EtcdCaRecord) -> Result<EtcdCaRecord, StoreError> {
        let value = encode(Table::Meta, ETCD_CA_KEY, record)?;
        let mut kept = record.clone();
        self.update_raw(Table::Meta, ETCD_CA_KEY, &mut |current| match current {
            Some(bytes) => {
                kept = decode(Table::Meta, ETCD_CA_KEY, bytes)?;
                Ok(Write::Keep)
            }
            None => {
                kept = record.clone();
                Ok(Write::Put(value.clone()))
            }
        })?;
        Ok(kept)
    }

    fn put_token(&self, record: &TokenRecord) -> Result<(), StoreError> {
        put_json(self, Table::Tokens, record.id.as_str(), record)
    }

    fn get_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        get_json(self, Table::Tokens, id)
    }

    fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        list_json(self, Table::Tokens)
    }

    fn delete_token(&self, id: &str) -> Result<bool, StoreError> {
        self.delete_raw(Table::Tokens, id)
    }

    /// Marks a token revoked (kept for the audit trail; delete it to forget it).
    fn revoke_token(&self, id: &str) -> Result<TokenRecord, StoreError> {
        update_json(
            self,
            Table::Tokens,
            "token",
            id,
            |record: &mut TokenRecord| {
                record.revoked = true;
                Ok(())
            },
        )
    }

    /// Verifies `secret` for token `id` (and its role when `role` is given) and takes one
    /// use, atomically: two nodes racing for the last use cannot both win. Returns the record
    /// as it was before this use.
    fn consume_token(
        &self,
        id: &str,
        secret: &str,
        now: OffsetDateTime,
        role: Option<Role>,
    ) -> Result<TokenRecord, StoreError> {
        let token = TokenUse {
            id,
            secret,
            now,
            role,
        };
        let mut used = None;
        self.transact_raw(&mut |txn| {
            used = Some(ops::take_use(txn, &token)?);
            Ok(())
        })?;
        used.ok_or_else(|| StoreError::NotFound {
            what: "token",
            key: id.to_owned(),
        })
    }

    fn put_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        put_json(self, Table::Nodes, &node.name, node)
    }

    fn get_node(&self, name: &str) -> Result<Option<NodeRecord>, StoreError> {
        get_json(self, Table::Nodes, name)
    }

    fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        list_json(self, Table::Nodes)
    }

    fn delete_node(&self, name: &str) -> Result<bool, StoreError> {
        self.delete_raw(Table::Nodes, name)
    }

    /// Changes a node atomically (heartbeats, state changes); `NotFound` if it is unknown.
    fn update_node(
        &self,
        name: &str,
        f: &mut dyn FnMut(&mut NodeRecord) -> Result<(), StoreError>,
    ) -> Result<NodeRecord, StoreError> {
        update_json(self, Table::Nodes, "node", name, f)
    }

    /// Replaces several stored node records at once (the master's periodic save of live
    /// state). Nodes no longer stored are skipped, never re-created. Returns how many were
    /// written. Backends override it to write them in one transaction.
    fn update_nodes(&self, nodes: &[NodeRecord]) -> Result<usize, StoreError> {
        let mut written = 0;
        for node in nodes {
            let result = self.update_node(&node.name, &mut |stored| {
                *stored = node.clone();
                Ok(())
            });
            match result {
                Ok(_) => written += 1,
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }

    fn put_user(&self, admin: &UserRecord) -> Result<(), StoreError> {
        put_json(self, Table::Users, &admin.name, admin)
    }

    fn get_user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        get_json(self, Table::Users, name)
    }

    fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        list_json(self, Table::Users)
    }

    fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        self.delete_raw(Table::Users, name)
    }

    fn revoke_cert(&self, revoked: &RevokedCert) -> Result<(), StoreError> {
        put_json(self, Table::RevokedCerts, revoked.serial.as_str(), revoked)
    }

    fn is_cert_revoked(&self, serial: &CertSerial) -> Result<bool, StoreError> {
        Ok(self
            .get_raw(Table::RevokedCerts, serial.as_str())?
            .is_some())
    }

    fn revoked_certs(&self) -> Result<Vec<RevokedCert>, StoreError> {
        list_json(self, Table::RevokedCerts)
    }

    fn put_task(&self, task: &TaskInfo) -> Result<(), StoreError> {
        put_json(self, Table::Tasks, &task.id, task)
    }

    fn list_tasks(&self) -> Result<Vec<TaskInfo>, StoreError> {
        list_json(self, Table::Tasks)
    }

    fn delete_task(&self, id: &str) -> Result<bool, StoreError> {
        self.delete_raw(Table::Tasks, id)
    }

    fn put_service(&self, service: &ServiceRecord) -> Result<(), StoreError> {
        put_json(self, Table::Services, &service.name, service)
    }

    fn list_services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        list_json(self, Table::Services)
    }

    fn delete_service(&self, name: &str) -> Result<bool, StoreError> {
        self.delete_raw(Table::Services, name)
    }

    fn list_volumes(&self) -> Result<Vec<cloudos_cluster::volume::VolumeRecord>, StoreError> {
        list_json(self, Table::Volumes)
    }

    /// Saves a new sealed secret; `false` (nothing written) if one has its name.
    fn create_secret(&self, record: &SecretRecord) -> Result<bool, StoreError> {
        let value = encode(Table::Secrets, &record.name, record)?;
        let mut created = false;
        self.update_raw(Table::Secrets, &record.name, &mut |old| {
            created = old.is_none();
            Ok(if created {
                Write::Put(value.clone())
            } else {
                Write::Keep
            })
        })?;
        Ok(created)
    }

    /// Saves a sealed secret, replacing one of its name in the same write (a registry's
    /// credentials, logged in again).
    fn put_secret(&self, record: &SecretRecord) -> Result<(), StoreError> {
        let value = encode(Table::Secrets, &record.name, record)?;
        self.update_raw(Table::Secrets, &record.name, &mut |_| {
            Ok(Write::Put(value.clone()))
        })
    }

    fn get_secret(&self, name: &str) -> Result<Option<SecretRecord>, StoreError> {
        get_json(self, Table::Secrets, name)
    }

    fn list_secrets(&self) -> Result<Vec<SecretRecord>, StoreError> {
        list_json(self, Table::Secrets)
    }

    fn delete_secret(&self, name: &str) -> Result<bool, StoreError> {
        self.delete_raw(Table::Secrets, name)
    }
}

pub(crate) fn encode<T: Serialize>(
    table: Table,
    key: &str,
    value: &T,
) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode {
        table,
        key: key.to_owned(),
        source,
    })
}

pub(crate) fn decode<T: DeserializeOwned>(
    table: Table,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        table,
        key: key.to_owned(),
        source,
    })
}

pub(crate) fn get_json<S: Store + ?Sized, T: DeserializeOwned>(
    store: &S,
    table: Table,
    key: &str,
) -> Result<Option<T>, StoreError> {
    store
        .get_raw(table, key)?
        .map(|bytes| decode(table, key, &bytes))
        .transpose()
}

pub(crate) fn put_json<S: Store + ?Sized, T: Serialize>(
    store: &S,
    table: Table,
    key: &str,
    value: &T,
) -> Result<(), StoreError> {
    store.put_raw(table, key, &encode(table, key, value)?)
}

pub(crate) fn list_json<S: Store + ?Sized, T: DeserializeOwned>(
    store: &S,
    table: Table,
) -> Result<Vec<T>, StoreError> {
    store
        .list_raw(table)?
        .iter()
        .map(|(key, bytes)| decode(table, key, bytes))
        .collect()
}

fn update_json<S: Store + ?Sized, T: Serialize + DeserializeOwned + Clone>(
    store: &S,
    table: Table,
    what: &'static str,
    key: &str,
    mut f: impl FnMut(&mut T) -> Result<(), StoreError>,
) -> Result<T, StoreError> {
    let mut updated = None;
    store.update_raw(table, key, &mut |current| {
        let bytes = current.ok_or_else(|| StoreError::NotFound {
            what,
            key: key.to_owned(),
        })?;
        let mut value: T = decode(table, key, bytes)?;
        f(&mut value)?;
        let encoded = encode(table, key, &value)?;
        updated = Some(value);
        Ok(Write::Put(encoded))
    })?;
    updated.ok_or_else(|| StoreError::NotFound {
        what,
        key: key.to_owned(),
    })
}

#[cfg(test)]
mod backends;

#[cfg(test)]
mod atomic_tests;

#[cfg(test)]
mod watch_tests;

#[cfg(test)]
mod snapshot_tests;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cloudos_cluster::token::TokenError;

    use super::*;
    use crate::backends::{on_both_backends, NewStore};
    use crate::keyspace::SCHEMA_KEY;
    use cloudos_cluster::pki::CaPin;
    use cloudos_cluster::token::Token;
    use std::sync::Arc;
    use time::macros::datetime;
    use time::Duration;

    const NOW: OffsetDateTime = datetime!(2026-03-01 10:00 UTC);

    on_both_backends!(
        cluster_meta_is_written_once,
        tokens_crud,
        consume_token_table,
        concurrent_consumers_share_uses_exactly,
        nodes_crud_and_update,
        update_nodes_writes_known_nodes_only,
        revoked_certs,
        corrupt_record_says_which
    );

    fn store() -> RedbStore {
        RedbStore::in_memory().expect("in-memory store")
    }

    fn token(uses: Option<u32>, role: Role) -> (Token, TokenRecord) {
        let t = Token::generate(CaPin::from_hex(&"11".repeat(32)).expect("pin")).expect("token");
        let r = TokenRecord::new(&t, role, NOW, Some(Duration::hours(1)), uses, "test")
            .expect("record");
        (t, r)
    }

    fn node(name: &str) -> NodeRecord {
        NodeRecord {
            name: name.to_owned(),
            role: Role::Compute,
            address: "10.0.0.7:50312".to_owned(),
            arch: "x86_64".to_owned(),
            labels: BTreeMap::from([("zone".to_owned(), "a".to_owned())]),
            reported_labels: Default::default(),
            pending_serial: None,
            cert_serial: "4a01".parse().expect("serial"),
            joined_at: NOW,
            last_seen: NOW,
            telemetry: None,
            state: NodeState::Ready,
            unschedulable: false,
            boot: None,
            subnet: None,
        }
    }

    fn meta(name: &str) -> ClusterMeta {
        ClusterMeta {
            name: name.to_owned(),
            ca_cert_pem: "cert".to_owned(),
            ca_key_pem: "key".to_owned(),
            created_at: NOW,
        }
    }

    fn cluster_meta_is_written_once(new: NewStore) {
        let s = new();
        assert_eq!(s.cluster_meta().expect("read"), None);
        s.init_cluster_meta(&meta("lab")).expect("init");
        assert_eq!(s.cluster_meta().expect("read"), Some(meta("lab")));
        let err = s
            .init_cluster_meta(&meta("other"))
            .expect_err("second init");
        assert!(
            matches!(err, StoreError::AlreadyInitialized { ref name } if name == "lab"),
            "{err}"
        );
        assert_eq!(s.cluster_meta().expect("read"), Some(meta("lab")));
        assert!(!format!("{:?}", meta("lab")).contains("key\""));
    }

    fn tokens_crud(new: NewStore) {
        let s = new();
        let (_, a) = token(None, Role::Compute);
        let (_, b) = token(Some(1), Role::Admin);
        s.put_token(&a).expect("put a");
        s.put_token(&b).expect("put b");
        assert_eq!(s.get_token(a.id.as_str()).expect("get"), Some(a.clone()));
        let mut ids: Vec<_> = s
            .list_tokens()
            .expect("list")
            .into_iter()
            .map(|r| r.id)
            .collect();
        let mut want = vec![a.id.clone(), b.id.clone()];
        ids.sort();
        want.sort();
        assert_eq!(ids, want);
        assert!(s.revoke_token(a.id.as_str()).expect("revoke").revoked);
        assert!(s
            .get_token(a.id.as_str())
            .expect("get")
            .is_some_and(|r| r.revoked));
        assert!(s.delete_token(a.id.as_str()).expect("delete"));
        assert!(!s.delete_token(a.id.as_str()).expect("delete again"));
        assert!(matches!(
            s.revoke_token("nosuch"),
            Err(StoreError::NotFound { .. })
        ));
    }

    fn consume_token_table(new: NewStore) {
        let s = new();
        let (t, limited) = token(Some(1), Role::Compute);
        let (u, unlimited) = token(None, Role::Compute);
        s.put_token(&limited).expect("put");
        s.put_token(&unlimited).expect("put");
        let lid = limited.id.to_string();
        let uid = unlimited.id.to_string();
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a str,
            OffsetDateTime,
            Option<Role>,
            Result<(), TokenError>,
        );
        let cases: Vec<Case> = vec![
            (
                "unknown",
                "zzzzzz",
                t.secret(),
                NOW,
                None,
                Err(TokenError::UnknownId {
                    id: "zzzzzz".into(),
                }),
            ),
            (
                "wrong secret",
                &lid,
                u.secret(),
                NOW,
                None,
                Err(TokenError::WrongSecret { id: lid.clone() }),
            ),
            (
                "role",
                &lid,
                t.secret(),
                NOW,
                Some(Role::Master),
                Err(TokenError::RoleMismatch {
                    id: lid.clone(),
                    actual: Role::Compute,
                    wanted: Role::Master,
                }),
            ),
            (
                "first use",
                &lid,
                t.secret(),
                NOW,
                Some(Role::Compute),
                Ok(()),
            ),
            (
                "used up",
                &lid,
                t.secret(),
                NOW,
                None,
                Err(TokenError::UsedUp { id: lid.clone() }),
            ),
            ("unlimited", &uid, u.secret(), NOW, None, Ok(())),
            ("unlimited again", &uid, u.secret(), NOW, None, Ok(())),
            (
                "expired",
                &uid,
                u.secret(),
                NOW + Duration::hours(2),
                None,
                Err(TokenError::Expired {
                    id: uid.clone(),
                    expired_at: NOW + Duration::hours(1),
                }),
            ),
        ];
        for (name, id, secret, now, role, want) in cases {
            let got = match s.consume_token(id, secret, now, role) {
                Ok(_) => Ok(()),
                Err(StoreError::Token(e)) => Err(e),
                Err(e) => panic!("{name}: unexpected {e}"),
            };
            assert_eq!(got, want, "{name}");
        }
        assert_eq!(
            s.get_token(&uid).expect("get").and_then(|r| r.uses_left),
            None
        );
    }

    fn concurrent_consumers_share_uses_exactly(new: NewStore) {
        let s = new();
        let (t, record) = token(Some(5), Role::Compute);
        s.put_token(&record).expect("put");
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let s = Arc::clone(&s);
                let id = record.id.to_string();
                let secret = t.secret().to_owned();
                std::thread::spawn(move || {
                    (0..4)
                        .filter(|_| s.consume_token(&id, &secret, NOW, None).is_ok())
                        .count()
                })
            })
            .collect();
        let wins: usize = threads.into_iter().map(|h| h.join().expect("thread")).sum();
        assert_eq!(wins, 5);
        assert_eq!(
            s.get_token(record.id.as_str())
                .expect("get")
                .and_then(|r| r.uses_left),
            Some(0)
        );
    }

    fn nodes_crud_and_update(new: NewStore) {
        let s = new();
        s.put_node(&node("n1")).expect("put");
        s.put_node(&node("n2")).expect("put");
        let names: Vec<_> = s
            .list_nodes()
            .expect("list")
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, ["n1", "n2"]);
        let later = NOW + Duration::minutes(1);
        let updated = s
            .update_node("n1", &mut |n| {
                n.last_seen = later;
                n.telemetry = Some(serde_json::json!({"load1": 0.5}));
                Ok(())
            })
            .expect("update");
        assert_eq!(updated.last_seen, later);
        assert_eq!(s.get_node("n1").expect("get"), Some(updated));
        let err = s
            .update_node("n1", &mut |_| {
                Err(StoreError::NotFound {
                    what: "test",
                    key: "x".into(),
                })
            })
            .expect_err("aborted");
        assert!(matches!(err, StoreError::NotFound { what: "test", .. }));
        assert!(matches!(
            s.update_node("n9", &mut |_| Ok(())),
            Err(StoreError::NotFound { what: "node", .. })
        ));
        assert!(s.delete_node("n2").expect("delete"));
        assert_eq!(s.get_node("n2").expect("get"), None);
    }

    fn update_nodes_writes_known_nodes_only(new: NewStore) {
        let s = new();
        s.put_node(&node("n1")).expect("put");
        let mut n1 = node("n1");
        n1.state = NodeState::NotReady;
        assert_eq!(
            s.update_nodes(&[n1.clone(), node("gone")]).expect("batch"),
            1
        );
        assert_eq!(s.get_node("n1").expect("get"), Some(n1));
        assert_eq!(s.get_node("gone").expect("get"), None);
    }

    fn revoked_certs(new: NewStore) {
        let s = new();
        let serial: CertSerial = "7f00aa".parse().expect("serial");
        assert!(!s.is_cert_revoked(&serial).expect("check"));
        let r = RevokedCert {
            serial: serial.clone(),
            node: Some("n1".into()),
            revoked_at: NOW,
            reason: "node removed".into(),
        };
        s.revoke_cert(&r).expect("revoke");
        assert!(s.is_cert_revoked(&serial).expect("check"));
        assert_eq!(s.revoked_certs().expect("list"), vec![r]);
    }

    fn corrupt_record_says_which(new: NewStore) {
        let s = new();
        s.put_raw(Table::Nodes, "n1", b"{not json")
            .expect("raw put");
        let err = s.get_node("n1").expect_err("corrupt").to_string();
        assert!(
            err.contains("stored nodes record `n1` is unreadable"),
            "{err}"
        );
    }

    #[test]
    fn file_store_persists_and_checks_schema() {
        let dir = std::env::temp_dir().join(format!("cloudos-store-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.redb");
        let _ = std::fs::remove_file(&path);
        {
            let s = RedbStore::open(&path).expect("create");
            assert_eq!(s.schema_version().expect("version"), Some(SCHEMA_VERSION));
            s.put_node(&node("n1")).expect("put");
        }
        {
            let s = RedbStore::open(&path).expect("reopen");
            assert_eq!(s.get_node("n1").expect("get"), Some(node("n1")));
            s.put_raw(Table::Meta, SCHEMA_KEY, b"99").expect("bump");
        }
        let err = RedbStore::open(&path).expect_err("newer schema");
        assert!(
            matches!(
                err,
                StoreError::NewerSchema {
                    found: 99,
                    supported: SCHEMA_VERSION
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("upgrade nodeos"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn open_error_names_the_path() {
        let err = RedbStore::open("/proc/cloudos-no-such-dir/state.redb").expect_err("cannot open");
        assert!(
            err.to_string()
                .contains("/proc/cloudos-no-such-dir/state.redb"),
            "{err}"
        );
    }

    #[test]
    fn store_is_object_safe_and_errors_are_send_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<StoreError>();
        let s: Box<dyn Store> = Box::new(store());
        assert_eq!(s.list_nodes().expect("list"), vec![]);
    }
}
