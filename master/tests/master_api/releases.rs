//! Releases against the real master: an admin keeps a bundle signed by a trusted key, and
//! every attacker is refused with nothing kept: a bundle signed by a stranger's key, a
//! bundle changed after signing, a compute node trying to upload, and a caller without a
//! certificate trying to download.

use cloudos_cluster::api::{ReleaseInfo, ReleaseList};
use cloudos_release::{bundle, Arch, SecretKey, Version, PART_NAMES};

use super::*;

/// The public development key every test build trusts (image/release-keys/README.md).
pub(super) fn dev_key() -> SecretKey {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../image/release-keys/dev.secret"
    );
    SecretKey::parse(&std::fs::read_to_string(path).expect("dev key")).expect("dev key parses")
}

pub(super) fn make_bundle(dir: &Path, key: &SecretKey, version: &str) -> Vec<u8> {
    let parts = PART_NAMES.map(|n| {
        let p = dir.join(format!("{version}-{n}"));
        std::fs::write(&p, format!("{n} of {version}").repeat(5000)).expect("part");
        p
    });
    let mut out = Vec::new();
    bundle::write(
        &mut out,
        key,
        Version::parse(version).expect("version"),
        Arch::X86_64,
        &parts,
    )
    .expect("bundle");
    out
}

pub(super) async fn send(
    client: &Client,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let tls = tls_connect(client, addr).await;
    let (status, _, bytes) = common::http_request(tls, method, path, body).await;
    (status, bytes)
}

async fn listed(m: &TestMaster, admin: &Client) -> ReleaseList {
    let reply = call(admin, m.addr, "GET", "/v1/releases", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_keep_signed_releases_and_attackers_are_refused() {
    let dir = common::temp_dir("releases");
    let m = start_master(&dir);
    let admin = join_admin(&m).await.client(src(1));
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();

    // The admin's signed bundle is kept, listed, and offered to nodes.
    let good = make_bundle(&work, &dev_key(), "0.2.0");
    let (status, body) = send(&admin, m.addr, "POST", "/v1/releases", good.clone()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let info: ReleaseInfo = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (info.version.as_str(), info.arch.as_str()),
        ("0.2.0", "x86_64")
    );
    let list = listed(&m, &admin).await;
    assert_eq!(list.releases, vec![info.clone()]);
    assert_eq!(list.running, cloudos_release::version().to_string());
    assert!(
        list.development_key,
        "a test build trusts the development key, and says so"
    );

    // An attacker with admin rights but without the release key signs with their own.
    let forged = make_bundle(&work, &SecretKey::generate().unwrap(), "6.6.6");
    let (status, body) = send(&admin, m.addr, "POST", "/v1/releases", forged).await;
    let answer = String::from_utf8_lossy(&body);
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("does not trust"), "{answer}");

    // A bundle changed in transit after it was signed: one byte of the kernel part.
    let mut changed = make_bundle(&work, &dev_key(), "0.3.0");
    let at = changed
        .windows(17)
        .position(|w| w == b"vmlinuz of 0.3.0v")
        .expect("kernel part");
    changed[at] ^= 1;
    let (status, body) = send(&admin, m.addr, "POST", "/v1/releases", changed).await;
    let answer = String::from_utf8_lossy(&body);
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("vmlinuz"), "{answer}");
    assert_eq!(
        listed(&m, &admin).await.releases,
        vec![info.clone()],
        "nothing else kept"
    );
    let kept: Vec<_> = std::fs::read_dir(dir.join("master/releases"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        kept,
        ["cloudos-0.2.0-x86_64.bundle"],
        "no upload left behind"
    );

    // A compute node may download the bundle, byte for byte, but not upload one.
    let token = compute_token(&m, &admin).await;
    let node = join(&m, src(2), &token, "node-1").await.client(src(2));
    let (status, bytes) = send(&node, m.addr, "GET", "/v1/releases/0.2.0/x86_64", vec![]).await;
    assert_eq!(status, 200);
    assert_eq!(bytes, good);
    // The role is checked before the body is read, and the master then closes the
    // connection: a body larger than the socket's buffers would meet a broken pipe before
    // the answer is read. The head of the bundle is enough to be refused for the role (a
    // caller that passed it would get 400 for a cut bundle, not 403).
    let head = good[..4096].to_vec();
    let (status, _) = send(&node, m.addr, "POST", "/v1/releases", head).await;
    assert_eq!(status, 403, "a node's certificate cannot add releases");
    let (status, _) = send(&node, m.addr, "GET", "/v1/releases/9.9.9/x86_64", vec![]).await;
    assert_eq!(status, 404);

    // Without a certificate there is nothing to download.
    let stranger = pinned(m.pin, src(3));
    let (status, _) = send(
        &stranger,
        m.addr,
        "GET",
        "/v1/releases/0.2.0/x86_64",
        vec![],
    )
    .await;
    assert_eq!(status, 401);
    drop(m);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_node_is_told_to_upgrade_and_only_an_admin_may_ask() {
    let f = fixture("release-upgrade").await;
    let work = f.dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let (status, body) = send(
        &f.a,
        f.m.addr,
        "POST",
        "/v1/releases",
        make_bundle(&work, &dev_key(), "0.2.0"),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (node, mut ws) = connected_node(&f, "node-1").await;
    let ask = |version: &str| serde_json::json!({ "version": version }).to_string();

    // A release the master does not keep: refused before the node hears of it.
    let reply = call(
        &f.a,
        f.m.addr,
        "POST",
        "/v1/nodes/node-1/upgrade",
        Some(ask("9.9.9")),
    )
    .await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert!(reply.body.contains("cloudos release add"), "{}", reply.body);

    // The node's own certificate cannot order upgrades, of itself or of anyone.
    let reply = call(
        &node.client(src(2)),
        f.m.addr,
        "POST",
        "/v1/nodes/node-1/upgrade",
        Some(ask("0.2.0")),
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.body);

    // The admin asks: the node is told, and only then.
    let reply = call(
        &f.a,
        f.m.addr,
        "POST",
        "/v1/nodes/node-1/upgrade",
        Some(ask("0.2.0")),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let started: cloudos_cluster::api::NodeUpgradeStarted = reply.json();
    assert_eq!(started.node, "node-1");
    let told = loop {
        match receive(&mut ws).await {
            Some(MasterMessage::HeartbeatAck { .. }) => continue,
            other => break other,
        }
    };
    assert_eq!(
        told,
        Some(MasterMessage::Upgrade {
            id: started.id,
            version: "0.2.0".into(),
            allow_downgrade: false
        })
    );

    // A node that is not connected cannot be told.
    let token = compute_token(&f.m, &f.a).await;
    join(&f.m, src(3), &token, "node-2").await;
    let reply = call(
        &f.a,
        f.m.addr,
        "POST",
        "/v1/nodes/node-2/upgrade",
        Some(ask("0.2.0")),
    )
    .await;
    assert_eq!(reply.status, 409, "{}", reply.body);
}
