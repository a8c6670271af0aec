//! The cluster's registry credentials (see `cloudos_cluster::registry`), opened when an
//! assignment of an image from that registry is sent, and for the master's own look at
//! an image's platforms.

use cloudos_cluster::registry::{secret_name, RegistryAuth};
use cloudos_cluster::secret::SecretRecord;

use crate::secrets::Sealer;
use crate::state::MasterState;

/// The credentials the cluster has for `registry`, opened; `None` when it has none or
/// they cannot be read (logged, by name only).
pub fn credentials_for(state: &MasterState, registry: &str) -> Option<RegistryAuth> {
    let record = match state.store.get_secret(&secret_name(registry)) {
        Ok(record) => record?,
        Err(e) => {
            log::error!("cannot read the credentials for registry {registry}: {e}");
            return None;
        }
    };
    open(&state.sealer, &record)
        .map_err(|why| log::error!("{why}"))
        .ok()
}

/// A registry's sealed credentials, opened; the error names the record, never a value.
pub fn open(sealer: &Sealer, record: &SecretRecord) -> Result<RegistryAuth, String> {
    let value = sealer
        .open(record)
        .map_err(|e| format!("cannot open {}: {e}", record.name))?;
    serde_json::from_slice(&value.0)
        .map_err(|_| format!("{} does not hold registry credentials", record.name))
}
