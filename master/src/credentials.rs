//! Which certificate is current for whom. A certificate the cluster CA signed is not enough
//! to call the API: its serial must be the one the master has on record for its holder,
//! the node's record in the roster or the admin's record in the store. So a renewed,
//! re-joined, removed or revoked holder's older certificates stop working at once, even
//! while the revoked list has not heard of them (certificates issued before records were
//! kept, for example).
//!
//! Renewal hands out a *pending* certificate; both it and the current one are accepted
//! until the pending one is first used, which makes it current and revokes the old one.
//! A renewal whose answer was lost therefore never locks a node or admin out.
//!
//! Also owns revoking: a serial goes into the in-memory set the TLS accept path reads and
//! into the store's revoked list, and the admins on record in memory ([`Users`]): every
//! admin request is checked against them, so checking never needs the store (which may
//! be failing: a full disk must not lock the admins out of reading the cluster).

use std::collections::HashMap;
use std::sync::RwLock;

use cloudos_cluster::apikey::ApiKeyRecord;
use cloudos_cluster::pki::CertSerial;
use cloudos_cluster::{NodeIdentity, Role};
use cloudos_store::{RevokedCert, StoreError, UserRecord};
use time::OffsetDateTime;

use super::error::ApiError;
use super::roster::SerialStatus;
use super::state::MasterState;

/// Which accepted certificate of `identity`'s holder `serial` is, from memory only (every
/// request asks): an error when it is none of them.
pub fn status(
    state: &MasterState,
    identity: &NodeIdentity,
    serial: &CertSerial,
) -> Result<SerialStatus, ApiError> {
    let name = &identity.name;
    if identity.role.is_user() {
        let Some(admin) = state.users.get(name) else {
            return Err(not_on_record(name));
        };
        return SerialStatus::of(&admin.cert_serial, admin.pending_serial.as_ref(), serial)
            .ok_or_else(|| replaced(name));
    }
    match state.roster.serial_status(name, serial) {
        Some(status) => Ok(status),
        None if state.roster.contains(name) => Err(replaced(name)),
        // The revoked code: the agent forgets an identity that can never work again.
        None => Err(ApiError::NodeRemoved(format!(
            "node {name} is not registered (it was removed); join it again with a new token"
        ))),
    }
}

/// The holder used its pending certificate `serial` for the first time: it becomes the
/// current one (store first, then memory) and the one it replaces is revoked. Nothing
/// happens when another request promoted it already.
pub fn promote(
    state: &MasterState,
    identity: &NodeIdentity,
    serial: &CertSerial,
) -> Result<(), ApiError> {
    let name = &identity.name;
    let old = if identity.role.is_user() {
        let Some(mut admin) = state.users.get(name) else {
            return Ok(());
        };
        if admin.pending_serial.as_ref() != Some(serial) {
            return Ok(());
        }
        let old = std::mem::replace(&mut admin.cert_serial, serial.clone());
        admin.pending_serial = None;
        state.store.put_user(&admin)?;
        state.users.put(admin);
        old
    } else {
        let Some(old) = state.roster.serials_of(name).into_iter().next() else {
            return Ok(());
        };
        if state.roster.serial_status(name, serial) != Some(SerialStatus::Pending) {
            return Ok(());
        }
        state.store.update_node(name, &mut |stored| {
            stored.cert_serial = serial.clone();
            stored.pending_serial = None;
            Ok(())
        })?;
        state.roster.promote_pending(name, serial);
        old
    };
    revoke(state, old, name, "replaced by its renewed certificate")?;
    log::info!("{identity} uses its renewed certificate {serial}");
    Ok(())
}

fn replaced(name: &str) -> ApiError {
    ApiError::Forbidden(format!(
        "this certificate of {name} was replaced by a newer one; use the newest (an old copy \
         of the identity was used)"
    ))
}

/// Refuses a certificate from now on, in memory at once and in the store.
pub fn revoke(
    state: &MasterState,
    serial: CertSerial,
    holder: &str,
    reason: &str,
) -> Result<(), StoreError> {
    state.mark_revoked(serial.clone());
    state.store.revoke_cert(&RevokedCert {
        serial,
        node: Some(holder.to_owned()),
        revoked_at: OffsetDateTime::now_utc(),
        reason: reason.to_owned(),
    })
}

/// Records mirrored from the store in memory: written through (store first, then memory),
/// read on every request that shows the credential.
#[derive(Debug)]
pub struct Mirror<T>(RwLock<HashMap<String, T>>);

/// A record's key in its [`Mirror`].
pub trait Keyed {
    fn key(&self) -> &str;
}

impl Keyed for UserRecord {
    fn key(&self) -> &str {
        &self.name
    }
}

impl Keyed for ApiKeyRecord {
    fn key(&self) -> &str {
        &self.id
    }
}

/// The users on record.
pub type Users = Mirror<UserRecord>;
/// The API keys on record.
pub type ApiKeys = Mirror<ApiKeyRecord>;

impl<T> Default for Mirror<T> {
    fn default() -> Self {
        Mirror(RwLock::new(HashMap::new()))
    }
}

impl<T: Keyed + Clone> Mirror<T> {
    pub fn new(records: Vec<T>) -> Self {
        Mirror(RwLock::new(
            records
                .into_iter()
                .map(|r| (r.key().to_owned(), r))
                .collect(),
        ))
    }

    pub fn get(&self, key: &str) -> Option<T> {
        self.0.read().ok()?.get(key).cloned()
    }

    /// All, by key.
    pub fn list(&self) -> Vec<T> {
        let mut all: Vec<T> = self
            .0
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by(|a, b| a.key().cmp(b.key()));
        all
    }

    pub fn put(&self, record: T) {
        if let Ok(mut m) = self.0.write() {
            m.insert(record.key().to_owned(), record);
        }
    }

    pub fn remove(&self, key: &str) {
        if let Ok(mut m) = self.0.write() {
            m.remove(key);
        }
    }
}

/// The role on the record of user `name`: what their certificate may do now.
pub fn user_role(state: &MasterState, name: &str) -> Result<Role, ApiError> {
    state
        .users
        .get(name)
        .map(|u| u.role)
        .ok_or_else(|| not_on_record(name))
}

fn not_on_record(name: &str) -> ApiError {
    ApiError::Forbidden(format!(
        "user {name} is not on record (they were removed, or their certificate predates user \
         records); log in again with a login token: `cloudos login`"
    ))
}
