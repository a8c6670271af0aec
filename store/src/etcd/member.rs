//! How a master runs its etcd member: the command line, with TLS everywhere.
//!
//! - Client and peer ports both require a certificate from the etcd CA (and trust no
//!   other CA), TLS 1.3 only.
//! - Transactions may be large: a restore or a grown cluster's node save is one
//!   transaction, so the per-transaction operation and request size limits are raised.
//! - History is compacted automatically (one hour kept): watches that fall further behind
//!   are told to read again.

use std::ffi::OsString;
use std::path::PathBuf;

/// Files of a member's TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberTls {
    /// The etcd CA certificate.
    pub ca: PathBuf,
    /// The member's certificate and key (serverAuth and clientAuth).
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Whether the member starts a new etcd cluster or joins an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

/// One etcd member's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's name: the master's node name.
    pub name: String,
    pub data_dir: PathBuf,
    /// `https://IP:2379`: where clients reach it (listened on and advertised).
    pub client_url: String,
    /// `https://IP:2380`: where the other members reach it.
    pub peer_url: String,
    /// Every member at start, `name=peer_url`.
    pub initial_cluster: Vec<(String, String)>,
    pub state: ClusterState,
    pub tls: MemberTls,
    /// The masters' leader lease: etcd's own timing follows it ([`Member::timing`]).
    pub pace: std::time::Duration,
}

/// etcd's heartbeat between members at a one-second lease, in ms (etcd's default is 100).
pub const HEARTBEAT_MS: u32 = 50;
/// How long a member waits for its leader before it calls an election at a one-second
/// lease, in ms (etcd's default is 1000).
pub const ELECTION_TIMEOUT_MS: u32 = 500;
/// The largest transaction, in operations (etcd's default is 128).
pub const MAX_TXN_OPS: u32 = 100_000;
/// The largest request, in bytes (etcd's default is 1.5 MiB).
pub const MAX_REQUEST_BYTES: u32 = 16 << 20;

impl Member {
    /// etcd's heartbeat and election timeout, in ms, for the lease `pace`: half the lease
    /// to notice a dead etcd leader, a tenth of that between heartbeats, never faster than
    /// at a one-second lease. Masters on slow (emulated) machines that raise the lease get
    /// an etcd that does not call elections over their stalls.
    pub fn timing(&self) -> (u32, u32) {
        let election = u32::try_from(self.pace.as_millis() / 2)
            .unwrap_or(u32::MAX)
            .max(ELECTION_TIMEOUT_MS);
        ((election / 10).max(HEARTBEAT_MS), election)
    }

    /// The arguments of `etcd` for this member.
    pub fn args(&self) -> Vec<OsString> {
        let initial: Vec<String> = self
            .initial_cluster
            .iter()
            .map(|(name, url)| format!("{name}={url}"))
            .collect();
        let mut args: Vec<OsString> = Vec::new();
        let mut flag = |name: &str, value: OsString| {
            let mut arg = OsString::from(format!("--{name}="));
            arg.push(value);
            args.push(arg);
        };
        flag("name", self.name.clone().into());
        flag("data-dir", self.data_dir.clone().into());
        flag("listen-client-urls", self.client_url.clone().into());
        flag("advertise-client-urls", self.client_url.clone().into());
        flag("listen-peer-urls", self.peer_url.clone().into());
        flag("initial-advertise-peer-urls", self.peer_url.clone().into());
        flag("initial-cluster", initial.join(",").into());
        flag(
            "initial-cluster-state",
            match self.state {
                ClusterState::New => "new",
                ClusterState::Existing => "existing",
            }
            .into(),
        );
        for prefix in ["", "peer-"] {
            flag(&format!("{prefix}client-cert-auth"), "true".into());
            flag(
                &format!("{prefix}trusted-ca-file"),
                self.tls.ca.clone().into(),
            );
            flag(&format!("{prefix}cert-file"), self.tls.cert.clone().into());
            flag(&format!("{prefix}key-file"), self.tls.key.clone().into());
        }
        flag("tls-min-version", "TLS1.3".into());
        // A member that is gone is noticed, and etcd's own leader replaced, within half a
        // second to a second rather than one to two: a master's failover waits for it
        // before the dead leader's lease can run out. Ten times a LAN's round trip and
        // more; a WAN between masters wants the defaults (100 ms, 1 s) back: a 2 s lease.
        let (heartbeat, election) = self.timing();
        flag("heartbeat-interval", heartbeat.to_string().into());
        flag("election-timeout", election.to_string().into());
        flag("max-txn-ops", MAX_TXN_OPS.to_string().into());
        flag("max-request-bytes", MAX_REQUEST_BYTES.to_string().into());
        flag("auto-compaction-mode", "periodic".into());
        flag("auto-compaction-retention", "1h".into());
        // The master logs what etcd says; warnings and errors are what matter there.
        flag("log-level", "warn".into());
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn member(pace: Duration) -> Member {
        Member {
            name: "m1".into(),
            data_dir: "/d".into(),
            client_url: "https://10.0.0.1:2379".into(),
            peer_url: "https://10.0.0.1:2380".into(),
            initial_cluster: vec![("m1".into(), "https://10.0.0.1:2380".into())],
            state: ClusterState::New,
            tls: MemberTls {
                ca: "/ca".into(),
                cert: "/c".into(),
                key: "/k".into(),
            },
            pace,
        }
    }

    #[test]
    fn etcd_timing_follows_the_lease_and_is_never_faster_than_at_one_second() {
        assert_eq!(member(Duration::from_secs(1)).timing(), (50, 500));
        assert_eq!(member(Duration::from_millis(200)).timing(), (50, 500));
        assert_eq!(member(Duration::from_secs(6)).timing(), (300, 3000));
        let args = member(Duration::from_secs(6)).args();
        assert!(
            args.contains(&"--heartbeat-interval=300".into()),
            "{args:?}"
        );
        assert!(args.contains(&"--election-timeout=3000".into()), "{args:?}");
    }
}
