//! First start and every start after it: create the cluster (name and CA) in an empty store
//! or load it, and make the first admin's token while no admin has joined yet.
//!
//! The bootstrap token is role admin, valid 24 h, one use. A new one is made (and the
//! previous one deleted) on every start while no admin is on record, so a token that
//! expired or was lost is fixed by restarting the master, and the console is the only place
//! that ever shows one. Once an admin has joined, admins make tokens with the API. When
//! every admin was revoked (or the cluster predates admin records), the next start shows a
//! token again: whoever has the master's console can always get back in.

use cloudos_cluster::token::TokenRecord;
use cloudos_cluster::{ClusterCa, Role, Token};
use cloudos_store::Store;
use cloudos_store::{ClusterMeta, Table};
use time::{Duration, OffsetDateTime};

use super::error::MasterError;

/// How long the bootstrap admin token is valid.
pub const BOOTSTRAP_TTL: Duration = Duration::hours(24);
/// How many times it can be used.
pub const BOOTSTRAP_USES: u32 = 1;

/// Meta key: id of the current bootstrap token.
const BOOTSTRAP_TOKEN_KEY: &str = "bootstrap_token";
/// Meta key: id of the current token for the master's own node.
const OWN_NODE_TOKEN_KEY: &str = "own_node_token";

/// The cluster as loaded or created.
pub struct Cluster {
    pub name: String,
    pub ca: ClusterCa,
}

/// Loads the cluster from the store, or creates it there named `wanted_name`.
pub fn open_cluster(store: &dyn Store, wanted_name: &str) -> Result<Cluster, MasterError> {
    if let Some(meta) = store.cluster_meta()? {
        if meta.name != wanted_name {
            log::warn!(
                "this master already holds cluster {:?}; ignoring the name {wanted_name:?}",
                meta.name
            );
        }
        let ca = ClusterCa::load(&meta.ca_cert_pem, &meta.ca_key_pem)?;
        log::info!("loaded cluster {:?} (CA pin {})", meta.name, ca.pin());
        return Ok(Cluster {
            name: meta.name,
            ca,
        });
    }
    let now = OffsetDateTime::now_utc();
    let ca = ClusterCa::create(wanted_name, now)?;
    let created = store.init_cluster_meta(&ClusterMeta {
        name: wanted_name.to_owned(),
        ca_cert_pem: ca.cert_pem().to_owned(),
        ca_key_pem: ca.key_pem(),
        created_at: now,
    });
    match created {
        // Another master of an etcd cluster made it first: use that one.
        Err(cloudos_store::StoreError::AlreadyInitialized { .. }) => {
            return open_cluster(store, wanted_name)
        }
        other => other?,
    }
    log::info!("created cluster {wanted_name:?} (CA pin {})", ca.pin());
    Ok(Cluster {
        name: wanted_name.to_owned(),
        ca,
    })
}

/// A fresh admin token while no admin is on record; `None` while one is.
pub fn bootstrap_admin_token(
    store: &dyn Store,
    ca: &ClusterCa,
) -> Result<Option<Token>, MasterError> {
    if !store.list_users()?.is_empty() {
        return Ok(None);
    }
    if let Some(old) = store.get_raw(Table::Meta, BOOTSTRAP_TOKEN_KEY)? {
        store.delete_token(&String::from_utf8_lossy(&old))?;
    }
    let now = OffsetDateTime::now_utc();
    let token = Token::generate(ca.pin())?;
    let record = TokenRecord::new(
        &token,
        Role::Admin,
        now,
        Some(BOOTSTRAP_TTL),
        Some(BOOTSTRAP_USES),
        "first admin (printed on the master's console)",
    )?;
    store.put_token(&record)?;
    store.put_raw(
        Table::Meta,
        BOOTSTRAP_TOKEN_KEY,
        token.id().as_str().as_bytes(),
    )?;
    log::info!(
        "no admin has joined yet: admin token {} is shown on the console (valid 24h, 1 use)",
        token.id()
    );
    Ok(Some(token))
}

/// Where a master that runs workloads leaves its own node's token, below the data
/// directory (the agent on the same machine shares it).
pub fn own_node_token_file(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("master").join("own-node-token")
}

/// A fresh one-use compute token for this machine's own node (a master that runs
/// workloads, whose agent has not joined yet), written to `path` (root only), which the
/// agent reads and deletes once it has joined. The previous one, if any, is deleted: at
/// most one is ever valid. Same lifetime as the bootstrap token, so an agent that waits
/// for the master's first start gets a token it can still use.
///
/// A token the file already holds that is still valid is kept: an agent retrying its join
/// while the master service restarts must not find its token gone.
///
/// It is never logged or shown: the agent on this machine is its only reader.
pub fn own_node_token(
    store: &dyn Store,
    ca: &ClusterCa,
    path: &std::path::Path,
) -> Result<(), MasterError> {
    if still_valid(store, path)? {
        return Ok(());
    }
    if let Some(old) = store.get_raw(Table::Meta, OWN_NODE_TOKEN_KEY)? {
        store.delete_token(&String::from_utf8_lossy(&old))?;
    }
    let token = Token::generate(ca.pin())?;
    let mut record = TokenRecord::new(
        &token,
        Role::Compute,
        OffsetDateTime::now_utc(),
        Some(BOOTSTRAP_TTL),
        Some(1),
        "this machine's own node (the master runs workloads)",
    )?;
    record.own_node = true;
    store.put_token(&record)?;
    store.put_raw(
        Table::Meta,
        OWN_NODE_TOKEN_KEY,
        token.id().as_str().as_bytes(),
    )?;
    cloudos_cluster::files::write_private(path, format!("{token}\n").as_bytes()).map_err(
        |source| MasterError::OwnNodeToken {
            path: path.to_owned(),
            source,
        },
    )?;
    log::info!(
        "this master runs workloads: its own node joins with token {} (in {})",
        token.id(),
        path.display()
    );
    Ok(())
}

/// Whether `path` holds an own-node token the store still accepts.
fn still_valid(store: &dyn Store, path: &std::path::Path) -> Result<bool, MasterError> {
    let Some(token) = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse::<Token>().ok())
    else {
        return Ok(false);
    };
    Ok(match store.get_token(token.id().as_str())? {
        Some(record) => {
            record.own_node
                && cloudos_cluster::token::verify(
                    &record,
                    token.secret(),
                    OffsetDateTime::now_utc(),
                )
                .is_ok()
        }
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_store::RedbStore;

    #[test]
    fn create_then_load_and_bootstrap_tokens_until_an_admin_joins() {
        let store = RedbStore::in_memory().expect("store");
        let first = open_cluster(&store, "lab").expect("create");
        let again = open_cluster(&store, "other").expect("load");
        assert_eq!(again.name, "lab");
        assert_eq!(again.ca.pin(), first.ca.pin());

        let t1 = bootstrap_admin_token(&store, &first.ca)
            .expect("token")
            .expect("first start");
        let record = store
            .get_token(t1.id().as_str())
            .expect("get")
            .expect("stored");
        assert_eq!(record.role, Role::Admin);
        assert_eq!(record.uses_left, Some(1));
        let t2 = bootstrap_admin_token(&store, &first.ca)
            .expect("token")
            .expect("still no admin");
        assert_eq!(store.get_token(t1.id().as_str()).expect("get"), None);
        assert!(store.get_token(t2.id().as_str()).expect("get").is_some());

        let admin = cloudos_store::UserRecord {
            name: "alice".into(),
            role: Role::Admin,
            address: "10.0.0.9".into(),
            cert_serial: cloudos_cluster::CertSerial::from_bytes(&[1, 2, 3]),
            pending_serial: None,
            token_id: t2.id().to_string(),
            password_hash: None,
            joined_at: OffsetDateTime::now_utc(),
        };
        store.put_user(&admin).expect("admin");
        assert!(bootstrap_admin_token(&store, &first.ca)
            .expect("token")
            .is_none());
        // Every admin revoked: the console shows a token again.
        store.delete_user("alice").expect("delete");
        assert!(bootstrap_admin_token(&store, &first.ca)
            .expect("token")
            .is_some());
    }

    #[test]
    fn the_own_node_token_is_one_use_kept_while_valid_and_replaced_once_spent() {
        let store = RedbStore::in_memory().expect("store");
        let cluster = open_cluster(&store, "lab").expect("create");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = own_node_token_file(dir.path());
        own_node_token(&store, &cluster.ca, &path).expect("token");
        let read = |p: &std::path::Path| -> Token {
            std::fs::read_to_string(p).unwrap().trim().parse().unwrap()
        };
        let first = read(&path);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "root only");
        let record = store.get_token(first.id().as_str()).unwrap().unwrap();
        assert!(record.own_node && record.role == Role::Compute);
        assert_eq!(record.uses_left, Some(1));
        // A master restart while the agent still retries: the same token.
        own_node_token(&store, &cluster.ca, &path).expect("again");
        assert_eq!(read(&path), first);
        // Spent (or damaged): a new one, and the old record is gone.
        let mut spent = record.clone();
        spent.uses_left = Some(0);
        store.put_token(&spent).unwrap();
        own_node_token(&store, &cluster.ca, &path).expect("new");
        let second = read(&path);
        assert_ne!(second, first);
        assert_eq!(store.get_token(first.id().as_str()).unwrap(), None);
    }
}
