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
//! into the store's revoked list, and the admins on record in memory ([`Admins`]): every
//! admin request is checked against them, so checking never needs the store (which may
//! be failing: a full disk must not lock the admins out of reading the cluster).

use std::collections::HashMap;
use std::sync::RwLock;

use cloudos_cluster::pki::CertSerial;
use cloudos_cluster::{NodeIdentity, Role};
use cloudos_store::{AdminRecord, RevokedCert, StoreError};
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
    if identity.role == Role::Admin {
        let Some(admin) = state.admins.get(name) else {
            return Err(ApiError::Forbidden(format!(
                "admin {name} is not on record (it was revoked, or its certificate predates \
                 admin records); log in again with an admin token: `cloudos login`"
            )));
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
    let old = if identity.role == Role::Admin {
        let Some(mut admin) = state.admins.get(name) else {
            return Ok(());
        };
        if admin.pending_serial.as_ref() != Some(serial) {
            return Ok(());
        }
        let old = std::mem::replace(&mut admin.cert_serial, serial.clone());
        admin.pending_serial = None;
        state.store.put_admin(&admin)?;
        state.admins.put(admin);
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

/// The admins on record, mirrored from the store: written through (store first, then
/// memory), read on every admin request.
#[derive(Debug, Default)]
pub struct Admins(RwLock<HashMap<String, AdminRecord>>);

impl Admins {
    pub fn new(records: Vec<AdminRecord>) -> Self {
        Admins(RwLock::new(
            records.into_iter().map(|a| (a.name.clone(), a)).collect(),
        ))
    }

    pub fn get(&self, name: &str) -> Option<AdminRecord> {
        self.0.read().ok()?.get(name).cloned()
    }

    /// All, by name.
    pub fn list(&self) -> Vec<AdminRecord> {
        let mut all: Vec<AdminRecord> = self
            .0
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn put(&self, admin: AdminRecord) {
        if let Ok(mut m) = self.0.write() {
            m.insert(admin.name.clone(), admin);
        }
    }

    pub fn remove(&self, name: &str) {
        if let Ok(mut m) = self.0.write() {
            m.remove(name);
        }
    }
}
