//! `nodeos master --join TOKEN --master HOST:PORT`: a master joins the masters of a
//! running cluster at its first start. It makes its etcd key here (the key never leaves
//! this machine), asks the master it was pointed at, and writes `<data>/master/ha.json`
//! from the answer; every later start reads that file and needs no token.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;

use anyhow::Context as _;
use cloudos_cluster::api::MasterJoinRequest;
use cloudos_cluster::pki::NodeKey;
use cloudos_cluster::Token;
use cloudos_master::ha::file::{Founding, HaFile, MemberFile};
use cloudos_master::ha::grow::{client_url, peer_url};

/// How long a joining master keeps asking while the masters answer "not now".
const JOIN_FOR: std::time::Duration = std::time::Duration::from_secs(120);

/// Joins the masters unless this master already has its `ha.json`.
pub fn join_if_new(
    data_dir: &Path,
    name: &str,
    token: &str,
    master: &str,
    advertise: Option<IpAddr>,
    api_port: u16,
) -> anyhow::Result<()> {
    if HaFile::load(data_dir)?.is_some() {
        log::info!("this master has joined the masters before; --join is not needed again");
        return Ok(());
    }
    // A master with a cluster of its own would leave it behind: refused, nothing changed.
    let own = data_dir.join("master").join("state.redb");
    if own.exists() {
        anyhow::bail!(
            "this master already holds a cluster of its own ({}): it cannot join another \
             cluster's masters; add a master from a fresh data partition",
            own.display()
        );
    }
    let token: Token = token.trim().parse().context("the master token")?;
    let address = match advertise {
        Some(ip) => ip,
        None => route_when_up(master)?,
    };
    let key = NodeKey::generate()?;
    let request = MasterJoinRequest {
        token_id: token.id().clone(),
        token_secret: token.secret().to_owned(),
        name: name.to_owned(),
        address,
        api_port,
        etcd_csr_pem: key.csr_pem(name)?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The masters may not take a member at once (etcd waits until every member answered
    // for a few seconds, and a leader may just be being elected): ask again for a while.
    let deadline = std::time::Instant::now() + JOIN_FOR;
    let answer = loop {
        let asked = cloudos_cluster::client::join_masters(master, &token, &request);
        match runtime.block_on(asked) {
            Ok(answer) => break answer,
            Err(e) if e.is_retryable() && std::time::Instant::now() < deadline => {
                log::info!("joining the masters at {master}: {e}; asking again");
                std::thread::sleep(std::time::Duration::from_secs(2));
            }
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("joining the masters at {master}"))
                );
            }
        }
    };
    let file = HaFile {
        endpoints: answer.endpoints,
        etcd_ca_pem: answer.etcd_ca_pem,
        cert_pem: answer.etcd_cert_pem,
        key_pem: key.to_pem(),
        advertise: SocketAddr::new(address, api_port).to_string(),
        member: Some(MemberFile {
            name: name.to_owned(),
            client_url: client_url(address),
            peer_url: peer_url(address),
            initial_cluster: answer.initial_cluster,
            existing: answer.existing,
        }),
        founding: Founding::Join,
        lease_secs: None,
        removed: false,
    };
    file.save(data_dir)?;
    log::info!(
        "joined the masters of cluster {:?} at {master} as {name} ({address})",
        answer.cluster_name
    );
    Ok(())
}

/// [`route_to`], waiting up to [`JOIN_FOR`] for a route: at boot the network may not have
/// its address yet (DHCP).
fn route_when_up(master: &str) -> anyhow::Result<IpAddr> {
    let deadline = std::time::Instant::now() + JOIN_FOR;
    loop {
        match route_to(master) {
            Ok(ip) => return Ok(ip),
            Err(e) if std::time::Instant::now() < deadline => {
                log::debug!("no route to {master} yet: {e:#}");
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            Err(e) => {
                return Err(e.context(format!("finding this machine's address towards {master}")))
            }
        }
    }
}

/// This machine's address on the way to `master` (`host:port`): the source address the
/// kernel picks for it. Nothing is sent.
fn route_to(master: &str) -> anyhow::Result<IpAddr> {
    let target: SocketAddr = master
        .parse()
        .or_else(|_| {
            std::net::ToSocketAddrs::to_socket_addrs(master)
                .ok()
                .and_then(|mut a| a.next())
                .ok_or(())
        })
        .map_err(|()| anyhow::anyhow!("`{master}` is not a master address (host:port)"))?;
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(target)?;
    Ok(socket.local_addr()?.ip())
}
