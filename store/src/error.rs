//! The store's one error type. Backend failures carry the backend's own error boxed, so
//! that the redb and etcd backends share the variants callers match on.

use std::path::PathBuf;

use cloudos_cluster::token::TokenError;

use crate::Table;

/// A backend's own error, kept as the cause.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state store at {path}: {source}; check that the data partition is mounted and that no other master uses it")]
    Open { path: PathBuf, source: BackendError },
    #[error("cannot make the state store {path} private (mode 0600): {source}; it holds the cluster CA's key, fix its owner and permissions")]
    Protect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the state store has schema version {found}, newer than {supported} which this nodeos understands; upgrade nodeos, or restore the state backup made before the upgrade")]
    NewerSchema { found: u32, supported: u32 },
    #[error("the backup holds state of schema version {found}, newer than {supported} which this nodeos understands; restore it with the nodeos version that made it, or a newer one")]
    SnapshotNewer { found: u32, supported: u32 },
    #[error("the backup holds a table `{name}` this nodeos does not know; restore it with the nodeos version that made it, or a newer one")]
    SnapshotTable { name: String },
    #[error("state store {action} failed: {source}")]
    Backend {
        action: &'static str,
        source: BackendError,
    },
    #[error(
        "stored {table} record `{key}` is unreadable ({source}); restore the state from a backup"
    )]
    Corrupt {
        table: Table,
        key: String,
        source: serde_json::Error,
    },
    #[error("cannot encode {table} record `{key}`: {source}")]
    Encode {
        table: Table,
        key: String,
        source: serde_json::Error,
    },
    #[error("this state store already holds cluster `{name}`; use it, or wipe the data partition to start a new cluster")]
    AlreadyInitialized { name: String },
    #[error("no {what} `{key}`")]
    NotFound { what: &'static str, key: String },
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the cluster state is unavailable ({action}: {reason}); with several masters, a majority of them must be up and reachable to make changes")]
    Unavailable {
        action: &'static str,
        reason: String,
    },
    #[error("this master is no longer the leader (its lease ran out or another master took over); its write was refused")]
    Fenced,
    #[error("a change of {table} was overtaken by other masters' changes {attempts} times in a row; try again")]
    Contention { table: Table, attempts: u32 },
    #[error("the state store is closing")]
    Closed,
}
