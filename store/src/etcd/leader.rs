//! The one master that does the cluster's periodic work (scheduling and dispatch, health
//! checks, retries, garbage collection), chosen through an etcd election, and the fence
//! that keeps a stale leader from writing.
//!
//! The election is etcd's own recipe (its `concurrency` package), on the KV and lease
//! primitives: a candidate holds a lease and puts a key under it,
//! `<prefix>.election/<name>/<lease>`; the candidate whose key is oldest (lowest create
//! revision) leads. etcd deletes a key when its lease runs out (the master died, hung, or
//! lost its way to the quorum), and the next in line leads. *Why not etcd's election
//! service:* its `Campaign` call blocks until elected, past any request deadline, and a
//! call cancelled by the client resigns the candidate's key on the server, possibly after
//! a later call of the same candidate was elected with that same key, which would take
//! the leadership away from under it. Looking at the line costs one small read per
//! [`CAMPAIGN_POLL`] per waiting master.
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

use etcd_client::{
    Client, Compare, CompareOp, GetOptions, SortOrder, SortTarget, TxnOpResponse, TxnResponse,
};

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

/// How often a candidate looks whether its turn came.
pub const CAMPAIGN_POLL: Duration = Duration::from_millis(100);

/// A candidate in line: its lease, its key (which becomes the fence once elected), and
/// the keeper of its lease.
struct Candidate {
    lease: i64,
    fence: Fence,
    lost: Arc<AtomicBool>,
    stop: tokio::sync::oneshot::Sender<()>,
}

/// This master's leadership, from its election until it is lost or resigned.
pub struct Leadership {
    store: Arc<EtcdStore>,
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
    pub fn store(&self) -> Arc<EtcdStore> {
        Arc::clone(&self.store)
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
    /// Campaigns in election `name` (under the store's prefix) with `value` (what
    /// [`EtcdStore::leader`] reports, e.g. the master's name and address) and a lease of
    /// `ttl`; returns once this caller is the leader. Blocks while another leads: call it
    /// from a thread of its own. Setting `give_up` ends the campaign (within
    /// [`CAMPAIGN_POLL`]) with [`StoreError::Closed`].
    pub fn campaign(
        &self,
        name: &str,
        value: &str,
        ttl: Duration,
        give_up: &AtomicBool,
    ) -> Result<Leadership, StoreError> {
        let runtime = self.runtime.as_ref().ok_or(StoreError::Closed)?;
        // The candidate's lease and key, its keeper, and whether the lease was seen to
        // end; a lease that ends before the election is replaced, and the campaign goes on.
        let mut held: Option<Candidate> = None;
        let mut failures = 0u32;
        loop {
            if give_up.load(Ordering::Acquire) {
                return Err(StoreError::Closed);
            }
            if held.as_ref().is_none_or(|c| c.lost.load(Ordering::Acquire)) {
                held = None;
                match self.stand(name, value, ttl) {
                    Ok((lease, key, create_revision)) => {
                        let lost = Arc::new(AtomicBool::new(false));
                        let (stop, stopped) = tokio::sync::oneshot::channel();
                        runtime.spawn(keep(self.client.clone(), lease, ttl, lost.clone(), stopped));
                        held = Some(Candidate {
                            lease,
                            fence: Fence {
                                key,
                                create_revision,
                            },
                            lost,
                            stop,
                        });
                    }
                    Err(e) => {
                        failures += 1;
                        pause(ttl, failures, &e);
                        continue;
                    }
                }
            }
            let Some(candidate) = held.as_ref() else {
                continue;
            };
            // The leader is the candidate whose key is oldest: this one, once every
            // candidate before it resigned or lost its lease.
            match self.first_in_line(name) {
                Ok(Some((key, _))) if key == candidate.fence.key => break,
                Ok(Some(_)) => failures = 0,
                // Our own key is gone (its lease ran out unseen): stand again.
                Ok(None) => held = None,
                Err(e) => {
                    failures += 1;
                    pause(ttl, failures, &e);
                    continue;
                }
            }
            std::thread::sleep(CAMPAIGN_POLL);
        }
        let Some(candidate) = held else {
            return Err(StoreError::Closed);
        };
        Ok(Leadership {
            store: Arc::new(self.fenced(candidate.fence)?),
            lease: candidate.lease,
            lost: candidate.lost,
            _stop: candidate.stop,
        })
    }

    /// Enters the line of election `name`: a new lease, and the candidate's key under it
    /// (`<election>/<lease>`), made only if absent. Returns the lease, the key and its
    /// create revision: its place in line.
    fn stand(
        &self,
        name: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(i64, Vec<u8>, i64), StoreError> {
        let lease = self.grant(ttl)?;
        let key = format!("{}/{lease:x}", self.election_name(name)).into_bytes();
        let txn = etcd_client::Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([etcd_client::TxnOp::put(
                key.clone(),
                value,
                Some(etcd_client::PutOptions::new().with_lease(lease)),
            )])
            .or_else([etcd_client::TxnOp::get(key.clone(), None)]);
        let kv = self.kv();
        let response = self.request("campaign", || {
            let (mut kv, txn) = (kv.clone(), txn.clone());
            async move { kv.txn(txn).await }
        })?;
        let revision = if response.succeeded() {
            super::header_revision(response.header())
        } else {
            // Made by an earlier try whose answer was lost: the key is ours all the same.
            response
                .op_responses()
                .into_iter()
                .find_map(|op| match op {
                    TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.create_revision()),
                    _ => None,
                })
                .unwrap_or_default()
        };
        Ok((lease, key, revision))
    }

    /// The oldest candidate's key and value in election `name`: the leader.
    fn first_in_line(&self, name: &str) -> Result<Option<(Vec<u8>, String)>, StoreError> {
        let prefix = format!("{}/", self.election_name(name)).into_bytes();
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1);
        let kv = self.kv();
        let response = self.read("read the leader", || {
            let (mut kv, prefix, options) = (kv.clone(), prefix.clone(), options.clone());
            async move { kv.get(prefix, Some(options)).await }
        })?;
        Ok(response.kvs().first().map(|kv| {
            (
                kv.key().to_vec(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            )
        }))
    }

    /// A new lease of `ttl` (at least 1 s; etcd raises it to its own minimum, 1.5 election
    /// timeouts).
    fn grant(&self, ttl: Duration) -> Result<i64, StoreError> {
        let ttl_secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(60);
        let leases = self.client.lease_client();
        Ok(self
            .request("grant a lease", || {
                let mut leases = leases.clone();
                async move { leases.grant(ttl_secs, None).await }
            })?
            .id())
    }

    /// The values of every candidate in election `name`, oldest first (the leader first):
    /// with the masters' election, every master that runs.
    pub fn candidates(&self, name: &str) -> Result<Vec<String>, StoreError> {
        let prefix = format!("{}/", self.election_name(name)).into_bytes();
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend);
        let kv = self.kv();
        let response = self.read("read the candidates", || {
            let (mut kv, prefix, options) = (kv.clone(), prefix.clone(), options.clone());
            async move { kv.get(prefix, Some(options)).await }
        })?;
        Ok(response
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            .collect())
    }

    /// The value the current leader of election `name` campaigned with, if any leads.
    pub fn leader(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.first_in_line(name)?.map(|(_, value)| value))
    }

    fn election_name(&self, name: &str) -> String {
        format!("{}.election/{name}", self.prefix)
    }
}

/// Waits before the next campaign call after `failures` failures in a row: an etcd
/// member went away, or the cluster is choosing its own leader.
fn pause(ttl: Duration, failures: u32, error: &StoreError) {
    if failures == 1 || failures % 20 == 0 {
        log::info!("campaign: {error}; trying again");
    }
    std::thread::sleep((ttl / 8 * failures.min(8)).max(Duration::from_millis(100)));
}

/// Keeps `lease` alive at a third of its time to live, until told to stop (then revokes
/// it) or until etcd says the lease is gone (a time to live of 0, or "lease not found":
/// then marks it lost). While etcd cannot be reached it keeps trying: etcd extends every
/// lease when its own leader changes, so a lease outlives a member's loss, and a leader
/// cut off for longer is fenced anyway. (A rule of its own clock, lost after a few times
/// to live without a renewal, made leaders step down at their start, while etcd still
/// kept their lease: not used.)
async fn keep(
    client: Client,
    lease: i64,
    ttl: Duration,
    lost: Arc<AtomicBool>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut leases = client.lease_client();
    loop {
        // A fresh stream for each renewal, with a short deadline: one long-lived stream
        // that sat on a member being cut off held every renewal until the lease ran out
        // (seen in the partition test); a new one goes through the balancer again, which
        // the store's probe keeps to the members that answer.
        let renewed = tokio::time::timeout(ttl / 6, async {
            let (_keeper, mut responses) = leases.keep_alive(lease).await?;
            responses.message().await
        })
        .await;
        let pause = match renewed {
            Ok(Ok(Some(response))) if response.ttl() > 0 => ttl / 3,
            // A time to live of 0: etcd let the lease go.
            Ok(Ok(Some(_))) => {
                lost.store(true, Ordering::Release);
                return;
            }
            Ok(Err(e)) if e.to_string().contains("lease not found") => {
                lost.store(true, Ordering::Release);
                return;
            }
            // No answer in time: at once again, likely through another member.
            _ => Duration::from_millis(50),
        };
        tokio::select! {
            _ = &mut stop => {
                // The leadership was dropped: hand over at once.
                let _ = leases.revoke(lease).await;
                return;
            }
            _ = tokio::time::sleep(pause) => {}
        }
    }
}
