//! The etcd backend: the state of a cluster with several masters, in the masters' etcd
//! cluster (design decision 68).
//!
//! The key layout is the one the keyspace promises: a record is `<prefix><table>/<key>`
//! (prefix `/cloudos/` in a cluster; tests give each store its own). Beside the tables,
//! `<prefix>.rev/<table>` is a *table marker* every write transaction puts for each table it
//! writes, so a transaction that read a key range can ask at commit whether anything in
//! that table changed since (a range compare alone would miss a deletion).
//!
//! - [`txn`]: the optimistic transactions behind [`Store::update_raw`] and
//!   [`Store::transact_raw`]; the closure may run more than once.
//! - [`watch`]: etcd watches as [`Watch`]es, resumed across a member's loss.
//! - [`endpoints`]: requests go to the members that answer.
//! - [`members`]: the etcd cluster's members, and adding one.
//! - [`member`]: the command line of a master's etcd member.
//! - [`leader`]: the election of the one master that does the cluster's periodic work, and
//!   the fence that keeps a stale leader from writing.
//! - [`fixture`] (tests only): a real etcd process on loopback with certificates of a test
//!   etcd CA.
//!
//! The [`Store`] trait is synchronous (its callers run on blocking threads) and
//! etcd-client is async: an `EtcdStore` owns a small tokio runtime of its own and each call
//! runs there while the calling thread waits, so it works from any thread, inside an async
//! runtime or not.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, KvClient, TlsOptions,
};

use crate::keyspace::{KeyRange, Table, TxnFn, UpdateFn, Write, SCHEMA_KEY, SCHEMA_VERSION};
use crate::snapshot::Snapshot;
use crate::watch::Watch;
use crate::{decode, encode, NodeRecord, Store, StoreError};

pub mod endpoints;
#[cfg(any(test, feature = "testing"))]
pub mod fixture;
pub mod leader;
pub mod member;
pub mod members;
mod txn;
mod watch;

pub use leader::{Fence, Leadership};

/// A table's `(key, value)` pairs, in key order.
type Rows = Vec<(String, Vec<u8>)>;

/// The key prefix of a cluster's state.
pub const CLUSTER_PREFIX: &str = "/cloudos/";
/// How long one etcd request may take before the store reports etcd unavailable. A
/// cluster that lost its quorum never answers a write; this bounds how long a caller
/// waits to be told so.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How many members a request is offered to when each refuses the connection.
const SEND_ATTEMPTS: u32 = 4;
/// How often a read is asked again while etcd is between leaders ("leader changed",
/// "no leader"): an election takes about one election timeout, and the waits between
/// attempts (50 ms doubling) add up to 1.55 s, longer than the longest timeout a master
/// sets (`Member::timing`).
const READ_ATTEMPTS: u32 = 6;
/// How often a transaction whose reads were overtaken by another master's commit is run
/// again before the store gives up and says so.
const MAX_ATTEMPTS: u32 = 64;

/// Where the etcd cluster is and how to prove who we are to it.
#[derive(Clone)]
pub struct EtcdConfig {
    /// Client URLs of the members, `https://10.0.0.5:2379`.
    pub endpoints: Vec<String>,
    /// The etcd CA's certificate (PEM): the only CA the members' certificates may chain to.
    pub ca_pem: String,
    /// This master's etcd certificate and key (PEM), from the etcd CA.
    pub cert_pem: String,
    pub key_pem: String,
    /// The key prefix of the state, ending in `/` ([`CLUSTER_PREFIX`] in a cluster).
    pub prefix: String,
    /// Per-request deadline ([`REQUEST_TIMEOUT`] in a cluster).
    pub timeout: Duration,
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The state in an etcd cluster.
pub struct EtcdStore {
    client: Client,
    /// Runs the client's futures; `None` only while dropping (see [`Drop`]).
    runtime: Option<tokio::runtime::Runtime>,
    prefix: String,
    /// Set on a leader's store: every commit also checks that the leadership still holds.
    fence: Option<Fence>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.prefix)
            .field("fenced", &self.fence.is_some())
            .finish()
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio forbids inside another runtime; the last
        // reference to a store may well be dropped there.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Maps an etcd client error: a member that does not answer in time, or a cluster that
/// cannot commit, is [`StoreError::Unavailable`]; anything else a backend failure.
pub(crate) fn etcd_err(action: &'static str) -> impl FnOnce(etcd_client::Error) -> StoreError {
    move |e| {
        let unavailable = match &e {
            etcd_client::Error::GRpcStatus(status) => matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ),
            etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
            _ => false,
        };
        if unavailable {
            StoreError::Unavailable {
                action,
                reason: e.to_string(),
            }
        } else {
            StoreError::Backend {
                action,
                source: Box::new(e),
            }
        }
    }
}

impl EtcdStore {
    /// Connects to the etcd cluster and checks (or writes) the schema version under the
    /// prefix, as [`crate::RedbStore::open`] does in its file.
    pub fn connect(config: &EtcdConfig) -> Result<Self, StoreError> {
        if !config.prefix.ends_with('/') {
            return Err(StoreError::Backend {
                action: "connect",
                source: format!("the etcd key prefix `{}` must end in `/`", config.prefix).into(),
            });
        }
        let runtime = client_runtime()?;
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(&config.ca_pem))
            .identity(Identity::from_pem(&config.cert_pem, &config.key_pem));
        let options = ConnectOptions::new()
            .with_tls(tls)
            .with_timeout(config.timeout)
            .with_connect_timeout(config.timeout)
            .with_keep_alive(Duration::from_secs(2), config.timeout);
        let endpoints = config.endpoints.clone();
        let client = run_on(&runtime, async move {
            Client::connect(endpoints, Some(options)).await
        })?
        .map_err(etcd_err("connect"))?;
        if config.endpoints.len() > 1 {
            runtime.spawn(endpoints::keep_live(
                client.clone(),
                config.endpoints.clone(),
            ));
        }
        let store = EtcdStore {
            client,
            runtime: Some(runtime),
            prefix: config.prefix.clone(),
            fence: None,
        };
        store.init_schema()?;
        Ok(store)
    }

    /// Writes the schema version on first use; refuses state of a newer schema.
    fn init_schema(&self) -> Result<(), StoreError> {
        self.update_raw(Table::Meta, SCHEMA_KEY, &mut |current| {
            match current.map(|bytes| decode::<u32>(Table::Meta, SCHEMA_KEY, bytes)) {
                Some(Ok(v)) if v > SCHEMA_VERSION => Err(StoreError::NewerSchema {
                    found: v,
                    supported: SCHEMA_VERSION,
                }),
                Some(Ok(v)) if v == SCHEMA_VERSION => Ok(Write::Keep),
                Some(Err(e)) => Err(e),
                // Older or fresh: migrations from `v` go here once there is a version 2.
                _ => Ok(Write::Put(encode(
                    Table::Meta,
                    SCHEMA_KEY,
                    &SCHEMA_VERSION,
                )?)),
            }
        })
    }

    /// The same store, whose every commit also requires `fence` to hold: a leader's
    /// writes, refused with [`StoreError::Fenced`] once its leadership is gone.
    pub fn fenced(&self, fence: Fence) -> Result<EtcdStore, StoreError> {
        Ok(EtcdStore {
            client: self.client.clone(),
            runtime: Some(client_runtime()?),
            prefix: self.prefix.clone(),
            fence: Some(fence),
        })
    }

    /// Runs `future` on the store's runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let runtime = self.runtime.as_ref().ok_or(StoreError::Closed)?;
        run_on(runtime, future)
    }

    fn kv(&self) -> KvClient {
        self.client.kv_client()
    }

    /// Runs the request `make` builds, and builds it again (up to [`SEND_ATTEMPTS`]
    /// times) while a member refuses the connection: the request was never sent, so
    /// sending it to another member is safe even for a transaction. Any other failure is
    /// returned as it is: a request that may have reached etcd is never sent twice.
    fn request<T, Fut>(&self, action: &'static str, make: impl Fn() -> Fut) -> Result<T, StoreError>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let mut attempt = 1;
        loop {
            match self.run(make())? {
                Ok(value) => return Ok(value),
                Err(e) if attempt < SEND_ATTEMPTS && never_sent(&e) => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(etcd_err(action)(e)),
            }
        }
    }

    /// Runs the read `make` builds like [`Self::request`], and also asks again (up to
    /// [`READ_ATTEMPTS`] times) while etcd answers that it is between leaders. A read
    /// changes nothing, so asking twice is always safe; a write is never asked again
    /// here, because "leader changed" does not say whether it was applied.
    fn read<T, Fut>(&self, action: &'static str, make: impl Fn() -> Fut) -> Result<T, StoreError>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let mut attempt = 1;
        let mut pause = Duration::from_millis(50);
        loop {
            match self.run(make())? {
                Ok(value) => return Ok(value),
                Err(e) if attempt < READ_ATTEMPTS && (never_sent(&e) || between_leaders(&e)) => {
                    attempt += 1;
                    std::thread::sleep(pause);
                    pause *= 2;
                }
                Err(e) => return Err(etcd_err(action)(e)),
            }
        }
    }

    /// The etcd key of a record.
    fn key(&self, table: Table, key: &str) -> Vec<u8> {
        format!("{}{}/{key}", self.prefix, table.name()).into_bytes()
    }

    /// The prefix of a table's keys.
    fn table_prefix(&self, table: Table) -> String {
        format!("{}{}/", self.prefix, table.name())
    }

    /// The key of a table's marker (see the module's documentation).
    fn marker(&self, table: Table) -> Vec<u8> {
        format!("{}.rev/{}", self.prefix, table.name()).into_bytes()
    }

    /// The etcd key range `[start, end)` of `range` in `table`.
    fn key_range(&self, table: Table, range: KeyRange<'_>) -> (Vec<u8>, Vec<u8>) {
        let base = self.table_prefix(table);
        match range {
            KeyRange::All => {
                let start = base.clone().into_bytes();
                (start, prefix_end(base.as_bytes()))
            }
            KeyRange::Prefix(prefix) => {
                let start = format!("{base}{prefix}").into_bytes();
                let end = prefix_end(&start);
                (start, end)
            }
            KeyRange::Between { start, end } => {
                let s = format!("{base}{start}").into_bytes();
                // An empty or inverted range is empty, as etcd would also answer.
                let e = if end <= start {
                    s.clone()
                } else {
                    format!("{base}{end}").into_bytes()
                };
                (s, e)
            }
        }
    }

    /// The record key of an etcd key of `table`.
    fn record_key(&self, table: Table, etcd_key: &[u8]) -> Result<String, StoreError> {
        let base = self.table_prefix(table);
        std::str::from_utf8(etcd_key)
            .ok()
            .and_then(|k| k.strip_prefix(base.as_str()))
            .map(str::to_owned)
            .ok_or_else(|| StoreError::Backend {
                action: "read",
                source: format!(
                    "etcd returned the key `{}` outside table {table}",
                    String::from_utf8_lossy(etcd_key)
                )
                .into(),
            })
    }

    /// Reads `range` of `table` at `revision` (the latest when `None`); returns the pairs
    /// and the revision read.
    fn read_range(
        &self,
        table: Table,
        range: KeyRange<'_>,
        revision: Option<i64>,
    ) -> Result<(Rows, i64), StoreError> {
        let (start, end) = self.key_range(table, range);
        if start >= end {
            return Ok((Vec::new(), self.current_revision()?));
        }
        let mut options = GetOptions::new().with_range(end);
        if let Some(revision) = revision {
            options = options.with_revision(revision);
        }
        let kv = self.kv();
        let response = self.read("read", || {
            let (mut kv, start, options) = (kv.clone(), start.clone(), options.clone());
            async move { kv.get(start, Some(options)).await }
        })?;
        let read_at = header_revision(response.header());
        let mut out = Vec::with_capacity(response.kvs().len());
        // etcd returns a range sorted by key bytes, which is the keyspace's order.
        for kv in response.kvs() {
            out.push((self.record_key(table, kv.key())?, kv.value().to_vec()));
        }
        Ok((out, read_at))
    }

    /// The cluster's current revision.
    fn current_revision(&self) -> Result<i64, StoreError> {
        let kv = self.kv();
        let key = self.marker(Table::Meta);
        let response = self.read("read the revision", || {
            let (mut kv, key) = (kv.clone(), key.clone());
            async move { kv.get(key, Some(GetOptions::new().with_count_only())).await }
        })?;
        Ok(header_revision(response.header()))
    }
}

/// The runtime a store's client runs on: two threads, enough for a request in flight
/// while a watch or a lease keeper waits.
fn client_runtime() -> Result<tokio::runtime::Runtime, StoreError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("etcd-client")
        .enable_all()
        .build()
        .map_err(|e| StoreError::Backend {
            action: "start the etcd client",
            source: Box::new(e),
        })
}

fn run_on<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    future: impl Future<Output = T> + Send + 'static,
) -> Result<T, StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(future.await);
    });
    // Every request carries the client's deadline, so this wait ends; it fails only when
    // the runtime is shutting down.
    rx.recv().map_err(|_| StoreError::Closed)
}

/// Whether `e` says the connection was refused or could not be made: the request never
/// left this process.
fn never_sent(e: &etcd_client::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            return matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::HostUnreachable
                    | K::NetworkUnreachable
                    | K::AddrNotAvailable
            );
        }
        source = err.source();
    }
    false
}

/// Whether etcd refused a request because its members are electing a leader: the
/// request was not served and a moment later it will be.
fn between_leaders(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::Unavailable
                && BETWEEN_LEADERS.iter().any(|m| status.message().contains(m))
        }
        _ => false,
    }
}

/// etcd's own words for "no leader to serve this yet" (`etcdserver/errors.go`).
const BETWEEN_LEADERS: [&str; 3] = ["leader changed", "no leader", "not capable"];

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map(|h| h.revision()).unwrap_or_default()
}

/// The end of etcd's range of every key starting with `prefix`: the prefix with its last
/// byte below 0xff incremented (what etcd's own `WithPrefix` computes).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (never for our keys): to the end of the keyspace.
    vec![0]
}

impl Store for EtcdStore {
    fn get_raw(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let kv = self.kv();
        let etcd_key = self.key(table, key);
        let response = self.read("read", || {
            let (mut kv, etcd_key) = (kv.clone(), etcd_key.clone());
            async move { kv.get(etcd_key, None).await }
        })?;
        Ok(response.kvs().first().map(|kv| kv.value().to_vec()))
    }

    fn range_raw(
        &self,
        table: Table,
        range: KeyRange<'_>,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self.read_range(table, range, None)?.0)
    }

    fn range_keys(&self, table: Table, range: KeyRange<'_>) -> Result<Vec<String>, StoreError> {
        let (start, end) = self.key_range(table, range);
        if start >= end {
            return Ok(Vec::new());
        }
        let options = GetOptions::new().with_range(end).with_keys_only();
        let kv = self.kv();
        let response = self.read("read keys", || {
            let (mut kv, start, options) = (kv.clone(), start.clone(), options.clone());
            async move { kv.get(start, Some(options)).await }
        })?;
        response
            .kvs()
            .iter()
            .map(|kv| self.record_key(table, kv.key()))
            .collect()
    }

    fn watch_raw(&self, table: Table) -> Result<Watch, StoreError> {
        watch::start(self, table)
    }

    fn revision(&self) -> Result<u64, StoreError> {
        Ok(u64::try_from(self.current_revision()?).unwrap_or_default())
    }

    fn put_raw(&self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.transact_raw(&mut |txn| txn.put(table, key, value))
    }

    fn delete_raw(&self, table: Table, key: &str) -> Result<bool, StoreError> {
        let mut existed = false;
        self.transact_raw(&mut |txn| {
            existed = txn.delete(table, key)?;
            Ok(())
        })?;
        Ok(existed)
    }

    fn update_raw(&self, table: Table, key: &str, f: &mut UpdateFn<'_>) -> Result<(), StoreError> {
        self.transact_raw(&mut |txn| {
            let current = txn.get(table, key)?;
            match f(current.as_deref())? {
                Write::Put(value) => txn.put(table, key, &value),
                Write::Delete => txn.delete(table, key).map(drop),
                Write::Keep => Ok(()),
            }
        })
    }

    fn transact_raw(&self, f: &mut TxnFn<'_>) -> Result<(), StoreError> {
        txn::transact(self, f)
    }

    /// One range read of the nodes and one commit, instead of one transaction per node.
    fn update_nodes(&self, nodes: &[NodeRecord]) -> Result<usize, StoreError> {
        let mut written = 0;
        self.transact_raw(&mut |txn| {
            written = 0;
            let stored: std::collections::BTreeSet<String> = txn
                .list(Table::Nodes)?
                .into_iter()
                .map(|(name, _)| name)
                .collect();
            for node in nodes.iter().filter(|n| stored.contains(&n.name)) {
                txn.put(
                    Table::Nodes,
                    &node.name,
                    &encode(Table::Nodes, &node.name, node)?,
                )?;
                written += 1;
            }
            Ok(())
        })?;
        Ok(written)
    }

    /// Every table read at one revision: a point in time while other masters write on.
    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let revision = self.current_revision()?;
        Snapshot::read_with(u64::try_from(revision).unwrap_or_default(), |table| {
            Ok(self.read_range(table, KeyRange::All, Some(revision))?.0)
        })
    }
}

#[cfg(test)]
mod tests;
