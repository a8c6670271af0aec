//! A master joins the masters (`POST /v1/masters/join`, a token of role master).
//!
//! - To a master on its own: the cluster gets its etcd CA (kept in the state), this
//!   master writes its own `ha.json` (its etcd member and the new one start a new etcd
//!   cluster together; it moves its embedded store into etcd, [`Founding::Migrate`]),
//!   answers, and restarts itself into a master among several ([`restart_soon`]).
//! - To the leader of several: the new master is added to the etcd cluster as a member
//!   and told the members to join.
//!
//! Either way the new master gets its etcd certificate (from its CSR: its key stays
//! with it), the etcd CA's certificate and the cluster CA's. It reads everything else,
//! the cluster CA's key included, from etcd once it is a member: the key travels only
//! inside etcd's mutually authenticated TLS 1.3 and rests in etcd's data directory (0700)
//! on the masters' data partitions, as it rested in the embedded store before.
//!
//! The token is checked first and its use taken last, once the new master was added: a
//! refusal of etcd (it adds no member to a cluster whose members did not all answer
//! lately) leaves the token usable for the joiner's retry. Two masters racing with a
//! one-use token both pass the check; the one whose use is refused at the end is
//! removed from etcd again (or, on a master on its own, its `ha.json` forgotten).

use std::net::{IpAddr, SocketAddr};

use cloudos_cluster::api::{
    MasterJoinRequest, MasterJoinResponse, ETCD_CLIENT_PORT, ETCD_PEER_PORT,
};
use cloudos_cluster::identity::validate_join_name;
use cloudos_cluster::token::{self, TokenError};
use cloudos_cluster::{ClusterCa, Role};
use cloudos_store::{EtcdCaRecord, StoreError};
use time::OffsetDateTime;

use super::file::{Founding, HaFile, MemberFile};
use crate::error::ApiError;
use crate::state::MasterState;

/// How long etcd certificates are valid. They are renewed by re-joining for now: see
/// docs/design.md decision 69.
const ETCD_CERT_LIFETIME: time::Duration = time::Duration::days(3650);

/// What happened: the answer, and whether this master must restart into HA.
pub struct Admitted {
    pub response: MasterJoinResponse,
    pub restart: bool,
}

pub fn client_url(ip: IpAddr) -> String {
    format!("https://{}", SocketAddr::new(ip, ETCD_CLIENT_PORT))
}

pub fn peer_url(ip: IpAddr) -> String {
    format!("https://{}", SocketAddr::new(ip, ETCD_PEER_PORT))
}

/// Admits the master of `req`. `local_ip` is the address the request came in on: a
/// master on its own is reached by the others there.
pub fn admit(
    state: &MasterState,
    req: MasterJoinRequest,
    local_ip: Option<IpAddr>,
) -> Result<Admitted, ApiError> {
    let reserved: Vec<String> = std::iter::once(state.config.node_name.clone())
        .chain(state.config.tls_san.iter().cloned())
        .collect();
    validate_join_name(&req.name, &reserved)?;
    if req.address.is_unspecified() || req.address.is_loopback() {
        return Err(ApiError::BadRequest(format!(
            "a joining master's address must be one the other masters reach, not {}",
            req.address
        )));
    }
    let now = OffsetDateTime::now_utc();
    let record = state
        .store
        .get_token(req.token_id.as_str())?
        .ok_or_else(|| TokenError::UnknownId {
            id: req.token_id.to_string(),
        })?;
    token::verify_for_role(&record, &req.token_secret, now, Role::Master)?;
    let etcd_ca = etcd_ca(state, now)?;
    let cert = etcd_ca.sign_etcd_csr(
        &req.etcd_csr_pem,
        &req.name,
        &[req.address],
        ETCD_CERT_LIFETIME,
        now,
    )?;
    let joiner = (req.name.clone(), peer_url(req.address));
    let (endpoints, initial_cluster, existing, restart) = match &state.etcd {
        // The leader of several: the new master becomes an etcd member.
        Some(etcd) => {
            let members = add_member(etcd, &joiner.1)?;
            let mut endpoints = Vec::new();
            let mut initial = Vec::new();
            for m in &members {
                let Some(peer) = m.peer_urls.first() else {
                    continue;
                };
                if *peer == joiner.1 {
                    continue;
                }
                initial.push((m.name.clone(), peer.clone()));
                endpoints.extend(m.client_urls.iter().cloned());
            }
            initial.push(joiner.clone());
            endpoints.push(client_url(req.address));
            (endpoints, initial, true, false)
        }
        // On its own: this master and the new one start etcd together.
        None => {
            let ip = local_ip.ok_or_else(|| {
                ApiError::Internal(
                    "cannot tell which of its addresses the joining master reached".into(),
                )
            })?;
            let me = (state.config.node_name.clone(), peer_url(ip));
            let initial = vec![me.clone(), joiner.clone()];
            let endpoints = vec![client_url(ip), client_url(req.address)];
            write_own_file(state, &etcd_ca, ip, &initial, &endpoints, now)?;
            (endpoints, initial, false, true)
        }
    };
    // The use is taken last: see the module's documentation.
    if let Err(e) = state.store.consume_token(
        req.token_id.as_str(),
        &req.token_secret,
        now,
        Some(Role::Master),
    ) {
        undo(state, &joiner.1);
        return Err(e.into());
    }
    log::info!(
        "master {} ({}) joins the masters ({})",
        req.name,
        req.address,
        if existing {
            "a new etcd member"
        } else {
            "etcd starts on both; this master restarts on it"
        }
    );
    Ok(Admitted {
        response: MasterJoinResponse {
            cluster_name: state.cluster_name.clone(),
            ca_pem: state.ca.cert_pem().to_owned(),
            etcd_ca_pem: etcd_ca.cert_pem().to_owned(),
            etcd_cert_pem: cert.cert_pem,
            endpoints,
            initial_cluster,
            existing,
        },
        restart,
    })
}

/// Adds the member at `peer_url`. etcd refuses while some member has not answered for a
/// few seconds (a master that just started): asked again for up to [`ADD_MEMBER_FOR`].
fn add_member(
    etcd: &cloudos_store::EtcdStore,
    peer_url: &str,
) -> Result<Vec<cloudos_store::etcd::members::MemberInfo>, ApiError> {
    let deadline = std::time::Instant::now() + ADD_MEMBER_FOR;
    loop {
        match etcd.add_member(peer_url) {
            Ok(members) => return Ok(members),
            Err(e @ StoreError::Unavailable { .. }) if std::time::Instant::now() < deadline => {
                log::info!("adding an etcd member: {e}; asking again");
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// How long the leader asks etcd to add a member before it answers the joiner.
const ADD_MEMBER_FOR: std::time::Duration = std::time::Duration::from_secs(15);

/// Takes back a join whose token use was refused at the end.
fn undo(state: &MasterState, peer_url: &str) {
    match &state.etcd {
        Some(etcd) => {
            let added = etcd.members().ok().and_then(|ms| {
                ms.into_iter()
                    .find(|m| m.peer_urls.iter().any(|u| u == peer_url))
            });
            if let Some(member) = added {
                if let Err(e) = etcd.remove_member(member.id) {
                    log::error!("cannot remove the etcd member at {peer_url} again: {e}");
                }
            }
        }
        None => {
            let _ = std::fs::remove_file(HaFile::path(&state.config.data_dir));
        }
    }
}

/// The cluster's etcd CA, made and kept in the state the first time.
fn etcd_ca(state: &MasterState, now: OffsetDateTime) -> Result<ClusterCa, ApiError> {
    let record = match state.store.etcd_ca()? {
        Some(record) => record,
        None => {
            let ca = ClusterCa::create_etcd(&state.cluster_name, now)?;
            state.store.init_etcd_ca(&EtcdCaRecord {
                cert_pem: ca.cert_pem().to_owned(),
                key_pem: ca.key_pem(),
            })?
        }
    };
    Ok(ClusterCa::load(&record.cert_pem, &record.key_pem)?)
}

/// This master's own `ha.json`, for the master on its own that gets a second one.
fn write_own_file(
    state: &MasterState,
    etcd_ca: &ClusterCa,
    ip: IpAddr,
    initial: &[(String, String)],
    endpoints: &[String],
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    let name = &state.config.node_name;
    let cert = etcd_ca.issue_etcd_member_cert(name, &[ip], ETCD_CERT_LIFETIME, now)?;
    let file = HaFile {
        endpoints: endpoints.to_vec(),
        etcd_ca_pem: etcd_ca.cert_pem().to_owned(),
        cert_pem: cert.cert_pem,
        key_pem: cert.key_pem,
        advertise: SocketAddr::new(ip, state.local_addr.port()).to_string(),
        member: Some(MemberFile {
            name: name.clone(),
            client_url: client_url(ip),
            peer_url: peer_url(ip),
            initial_cluster: initial.to_vec(),
            existing: false,
        }),
        founding: Founding::Migrate,
        lease_secs: None,
        removed: false,
    };
    file.save(&state.config.data_dir)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Restarts this master a moment from now (after its answer has gone out) by executing
/// itself again, same arguments, same process id: it comes back as a master among
/// several, from the `ha.json` it just wrote. The same pid keeps PID 1's supervisor,
/// systemd and a test's handle on it.
pub fn restart_soon() {
    std::thread::spawn(|| {
        std::thread::sleep(std::time::Duration::from_secs(1));
        log::info!("restarting to run among several masters");
        let args: Vec<std::ffi::CString> = std::env::args_os()
            .filter_map(|a| std::ffi::CString::new(a.into_encoded_bytes()).ok())
            .collect();
        let exe = c"/proc/self/exe";
        let err = nix::unistd::execv(exe, &args);
        log::error!("cannot restart ({err:?}); exiting for the supervisor to start it again");
        std::process::exit(75);
    });
}
