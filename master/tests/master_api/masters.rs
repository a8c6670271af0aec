//! A master joining the masters (`POST /v1/masters/join`), attacked: a token of another
//! role, a used-up one, a name clients trust for this master, an address no master can
//! reach. Each is refused, nothing is written (no `ha.json`, no etcd CA), and a refusal
//! after the token check leaves the token usable. The successful path, which restarts the
//! master, is `tests/tests/ha_netns.rs`.

use super::*;
use cloudos_cluster::api::MasterJoinRequest;

fn master_join_body(token: &str, name: &str, address: &str) -> String {
    let token: Token = token.parse().expect("token parses");
    let key = NodeKey::generate().expect("key");
    serde_json::to_string(&MasterJoinRequest {
        token_id: token.id().clone(),
        token_secret: token.secret().to_owned(),
        name: name.to_owned(),
        address: address.parse().expect("address"),
        api_port: 9443,
        etcd_csr_pem: key.csr_pem(name).expect("csr"),
    })
    .expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_master_join_without_a_master_token_or_with_a_bad_request_changes_nothing() {
    let f = fixture("master-join").await;
    let (m, a) = (&f.m, &f.a);
    let compute = compute_token(m, a).await;
    let admin = create_token(m, a, serde_json::json!({"role": "admin", "ttl": "1h"}))
        .await
        .token;
    let master = create_token(
        m,
        a,
        serde_json::json!({"role": "master", "uses": 1, "ttl": "1h"}),
    )
    .await
    .token;
    let cases: Vec<(&str, String, &str, &str, u16, &str)> = vec![
        (
            "a compute token",
            compute.clone(),
            "m2",
            "10.0.0.2",
            403,
            "role",
        ),
        (
            "an admin token",
            admin.clone(),
            "m2",
            "10.0.0.2",
            403,
            "role",
        ),
        // The master's own name: clients trust it for this master.
        (
            "this master's name",
            master.clone(),
            "master-1",
            "10.0.0.2",
            400,
            "master-1",
        ),
        (
            "a loopback address",
            master.clone(),
            "m2",
            "127.0.0.1",
            400,
            "reach",
        ),
    ];
    for (i, (what, token, name, address, status, says)) in cases.into_iter().enumerate() {
        let from = src(60 + u8::try_from(i).expect("small"));
        let reply = call(
            &pinned(m.pin, from),
            m.addr,
            "POST",
            "/v1/masters/join",
            Some(master_join_body(&token, name, address)),
        )
        .await;
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
        assert!(reply.body.contains(says), "{what}: {}", reply.body);
        assert!(
            !reply.body.contains("PRIVATE KEY"),
            "{what}: {}",
            reply.body
        );
    }
    assert!(
        !f.dir.join("state/master/ha.json").exists() && !f.dir.join("master/ha.json").exists(),
        "a refused join wrote this master's place among masters"
    );
    // The master token was checked but never used: its one use is left.
    let listed = tokens(m, a).await;
    let token: Token = master.parse().expect("token");
    let info = listed
        .iter()
        .find(|t| t.id == *token.id())
        .expect("the master token is listed");
    assert_eq!(info.uses_left, Some(1), "{info:?}");
}
