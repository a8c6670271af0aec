//! The one master that does the cluster's periodic work (scheduling and dispatch, health
//! checks, retries, garbage collection), chosen through etcd's election API, and the
//! fence that keeps a stale leader from writing.
//!
//! A candidate holds a lease and campaigns with it: etcd makes the first candidate's key
//! the leader key, and deletes it when the lease runs out (the master died, hung, or lost
//! its way to the quorum). The next candidate in line is then elected.
//!
//! A leader that is paused, or cut off, may still believe it leads after etcd has chosen
//! another. Its writes cannot land: a leader writes through [`Leadership::store`], whose
//! every commit also compares the leader key's create revision with the one it was elected
//! with ([`Fence`]). Once the key is gone or belongs to a newer leader, the compare fails
//! and the write is refused with [`StoreError::Fenced`]. The keep-alive side is only a
//! hint ([`Leadership::is_lost`]) so that the old leader stops trying; the fence is what
//! guarantees.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, TxnOpResponse, TxnResponse};

use super::{etcd_err, EtcdStore};
use crate::StoreError;

/// What a leader's commits require: the leader key still exists with the create revision
/// it had when this leader was elected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    key: Vec<u8>,
    create_revision: i64,
}

impl Fence {
    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }

    pub(crate) fn compare(&self) -> Compare {
        Compare::create_revision(self.key.clone(), CompareOp::Equal, self.create_revision)
    }

    /// Whether the failed transaction `response` (whose failure branch read the leader
    /// key) still found the key as elected: then the failure was an ordinary conflict.
    pub(crate) fn holds_in(&self, response: &TxnResponse) -> bool {
        response.op_responses().iter().any(|op| match op {
            TxnOpResponse::Get(get) => get
                .kvs()
                .first()
                .is_some_and(|kv| kv.create_revision() == self.create_revision),
            _ => false,
        })
    }
}

/// This master's leadership, from its election until it is lost or resigned.
pub struct Leadership {
    store: EtcdStore,
    pub(super) lease: i64,
    lost: Arc<AtomicBool>,
    /// Ends the lease keeper when dropped.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("lease", &format_args!("{:x}", self.lease))
            .field("lost", &self.is_lost())
            .finish()
    }
}

impl Leadership {
    /// The store to do the leader's work through: every commit is fenced.
    pub fn store(&self) -> &EtcdStore {
        &self.store
    }

    /// Whether the lease was seen to end: stop doing leader's work and campaign again.
    /// `false` does not prove leadership; the fence does.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Gives leadership up at once (the lease is revoked, so the next candidate is
    /// elected without waiting for the lease to run out).
    pub fn resign(self) -> Result<(), StoreError> {
        let mut lease = self.store.client.lease_client();
        let id = self.lease;
        self.store
            .run(async move { lease.revoke(id).await })?
            .map_err(etcd_err("resign"))?;
        self.lost.store(true, Ordering::Release);
        Ok(())
    }
}

impl EtcdStore {
    /// Campaigns in election `name` (under the store's prefix) with `value` (the master's
    /// name, which [`EtcdStore::leader`] reports) and a lease of `ttl`; returns once this
    /// caller is the leader. Blocks while another leads: call it from a thread of its own.
    pub fn campaign(
        &self,
        name: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<Leadership, StoreError> {
        let ttl_secs = i64::try_from(ttl.as_secs().max(2)).unwrap_or(60);
        let mut leases = self.client.lease_client();
        let lease = self
            .run(async move { leases.grant(ttl_secs, None).await })?
            .map_err(etcd_err("grant a lease"))?
            .id();
        let lost = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let runtime = self.runtime.as_ref().ok_or(StoreError::Closed)?;
        runtime.spawn(keep(self.client.clone(), lease, ttl, lost.clone(), stopped));

        let election = self.election_name(name);
        let value = value.as_bytes().to_vec();
        let client = self.client.clone();
        // A campaign waits as long as another leads, past any request deadline: each call
        // waits at most `ttl`, and the candidate keeps its key between calls.
        let leader = loop {
            if lost.load(Ordering::Acquire) {
                return Err(StoreError::Unavailable {
                    action: "campaign",
                    reason: "the candidate's lease ended before it was elected".into(),
                });
            }
            let mut elections = client.election_client();
            let (election, value) = (election.clone(), value.clone());
            let attempt = self.run(async move {
                tokio::time::timeout(ttl, elections.campaign(election, value, lease)).await
            })?;
            match attempt {
                Ok(Ok(mut response)) => match response.take_leader() {
                    Some(leader) => break leader,
                    None => continue,
                },
                Ok(Err(e)) => match etcd_err("campaign")(e) {
                    // Not elected within the client's deadline: still in line.
                    StoreError::Unavailable { .. } => std::thread::sleep(ttl / 10),
                    other => return Err(other),
                },
                Err(_waiting) => {}
            }
        };
        let fence = Fence {
            key: leader.key().to_vec(),
            create_revision: leader.rev(),
        };
        Ok(Leadership {
            store: self.fenced(fence)?,
            lease,
            lost,
            _stop: stop,
        })
    }

    /// The value the current leader of election `name` campaigned with, if any leads.
    pub fn leader(&self, name: &str) -> Result<Option<String>, StoreError> {
        let mut elections = self.client.election_client();
        let election = self.election_name(name);
        match self.run(async move { elections.leader(election).await })? {
            Ok(response) => Ok(response
                .kv()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())),
            // etcd answers "election: no leader" as an error.
            Err(etcd_client::Error::GRpcStatus(status))
                if status.message().contains("no leader") =>
            {
                Ok(None)
            }
            Err(e) => Err(etcd_err("read the leader")(e)),
        }
    }

    fn election_name(&self, name: &str) -> String {
        format!("{}.election/{name}", self.prefix)
    }
}

/// Keeps `lease` alive at a third of its time to live, until told to stop (then revokes
/// it) or until no keep-alive succeeded for a whole `ttl` (then marks the leadership
/// lost: etcd has let the lease go, or soon will).
async fn keep(
    client: Client,
    lease: i64,
    ttl: Duration,
    lost: Arc<AtomicBool>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut leases = client.lease_client();
    let mut last_ok = tokio::time::Instant::now();
    let mut stream = None;
    loop {
        if last_ok.elapsed() >= ttl {
            lost.store(true, Ordering::Release);
            return;
        }
        if stream.is_none() {
            stream = leases.keep_alive(lease).await.ok();
        }
        if let Some((keeper, responses)) = stream.as_mut() {
            let renewed = async {
                keeper.keep_alive().await?;
                responses.message().await
            };
            match tokio::time::timeout(ttl / 3, renewed).await {
                // A time to live of 0: the lease is gone.
                Ok(Ok(Some(response))) if response.ttl() > 0 => {
                    last_ok = tokio::time::Instant::now();
                }
                Ok(Ok(Some(_))) => {
                    lost.store(true, Ordering::Release);
                    return;
                }
                _ => stream = None,
            }
        }
        tokio::select! {
            _ = &mut stop => {
                // The leadership was dropped: hand over at once.
                let _ = leases.revoke(lease).await;
                return;
            }
            _ = tokio::time::sleep(ttl / 3) => {}
        }
    }
}
