//! Users, roles, API keys and the audit log, against the real master: each boundary is
//! attacked the way a person who holds less than they want would try.

use cloudos_cluster::api::{ApiKeyCreateResponse, AuditEntry, UserInfo};
use cloudos_cluster::workload::{TaskInfo, HIDDEN_VALUE};

use super::*;

/// A one-use login token made by `admin` for user `name` of `role`.
pub(super) async fn user_login(m: &TestMaster, admin: &Client, name: &str, role: Role) -> String {
    let body = serde_json::json!({ "name": name, "role": role });
    let reply = call(admin, m.addr, "POST", "/v1/users", Some(body.to_string())).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json::<TokenCreateResponse>().token
}

/// A new API key `name` of `role`, made by `admin`.
pub(super) async fn api_key(m: &TestMaster, admin: &Client, name: &str, role: Role) -> String {
    let body = serde_json::json!({ "name": name, "role": role, "ttl": "1d" });
    let reply = call(admin, m.addr, "POST", "/v1/apikeys", Some(body.to_string())).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json::<ApiKeyCreateResponse>().key
}

/// The secret the test task's environment refers to ("s3cret-value", base64).
async fn make_secret(m: &TestMaster, admin: &Client) {
    let body = r#"{"name":"api-token","value":"czNjcmV0LXZhbHVl"}"#;
    let reply = call(admin, m.addr, "POST", "/v1/secrets", Some(body.into())).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

fn task_body() -> String {
    serde_json::json!({
        "spec": {
            "image": "registry.invalid/app:1",
            "env": { "DB_PASSWORD": "hunter2", "MODE": "prod" },
            "secret_env": { "TOKEN": "api-token" }
        }
    })
    .to_string()
}

/// The refusal of a join that must fail.
fn refused(result: Result<Credentials, Reply>) -> Reply {
    match result {
        Ok(_) => panic!("the join should have been refused"),
        Err(reply) => reply,
    }
}

/// Every file under `dir`, read whole: where a secret must not be.
fn every_byte_under(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            all.extend(every_byte_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            all.extend(bytes);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_is_for_its_user_once_and_roles_change_and_end_at_once() {
    let f = fixture("users").await;
    let (m, a) = (&f.m, &f.a);
    make_secret(m, a).await;
    let login = user_login(m, a, "vic", Role::Viewer).await;

    // The token is vic's: mallory cannot log in with it, and that attempt uses nothing.
    let stolen = try_join(m, src(7), &login, "mallory").await;
    assert_eq!(refused(stolen).status, 403);
    let vic = join(m, src(6), &login, "vic").await.client(src(6));
    // Once only.
    let again = try_join(m, src(7), &login, "vic").await;
    assert_eq!(refused(again).status, 403);

    // A viewer reads and changes nothing.
    assert_eq!(
        call(&vic, m.addr, "GET", "/v1/nodes", None).await.status,
        200
    );
    let reply = call(&vic, m.addr, "POST", "/v1/tasks", Some(task_body())).await;
    assert_error(&reply, 403, ErrorCode::Forbidden, "viewer");
    let reply = call(
        &vic,
        m.addr,
        "POST",
        "/v1/users",
        Some(r#"{"name":"vic2","role":"admin"}"#.into()),
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    // Nor can a viewer make themselves more with a plain token's login under their name:
    // only an admin makes tokens, and a token of another role cannot take an account.
    let admin_token = create_token(m, a, serde_json::json!({"role": "admin", "ttl": "1h"}))
        .await
        .token;
    let takeover = try_join(m, src(7), &admin_token, "vic").await;
    assert_eq!(refused(takeover).status, 409);

    // Made operator: from the next request on, vic runs work.
    let reply = call(
        a,
        m.addr,
        "PUT",
        "/v1/users/vic",
        Some(r#"{"role":"operator"}"#.into()),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json::<UserInfo>().role, Role::Operator);
    let reply = call(&vic, m.addr, "POST", "/v1/tasks", Some(task_body())).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // An operator manages no people and no tokens.
    for (method, path, body) in [
        ("POST", "/v1/tokens", r#"{"role":"admin","ttl":"1h"}"#),
        ("PUT", "/v1/users/vic", r#"{"role":"admin"}"#),
        (
            "POST",
            "/v1/apikeys",
            r#"{"name":"x","role":"admin","ttl":"1d"}"#,
        ),
        ("DELETE", "/v1/nodes/walker", ""),
    ] {
        let reply = call(&vic, m.addr, method, path, Some(body.into())).await;
        assert_eq!(reply.status, 403, "{method} {path}: {}", reply.body);
    }

    // The last admin cannot leave or step down: nobody could manage people again.
    let reply = call(
        a,
        m.addr,
        "PUT",
        "/v1/users/alice",
        Some(r#"{"role":"viewer"}"#.into()),
    )
    .await;
    assert_error(&reply, 409, ErrorCode::Conflict, "last admin");
    let reply = call(a, m.addr, "DELETE", "/v1/users/alice", None).await;
    assert_error(&reply, 409, ErrorCode::Conflict, "last admin");

    // Removed: vic's certificate stops at once.
    let reply = call(a, m.addr, "DELETE", "/v1/users/vic", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        call(&vic, m.addr, "GET", "/v1/nodes", None).await.status,
        403
    );
    let users: Vec<UserInfo> = call(a, m.addr, "GET", "/v1/users", None).await.json();
    assert_eq!(
        users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        ["alice"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_works_as_its_role_until_revoked_and_is_kept_hashed() {
    let f = fixture("apikeys").await;
    let (m, a) = (&f.m, &f.a);
    make_secret(m, a).await;
    let anonymous = pinned(m.pin, src(5));
    let body = serde_json::json!({ "name": "ci-deploy", "role": "operator", "ttl": "30d" });
    let reply = call(a, m.addr, "POST", "/v1/apikeys", Some(body.to_string())).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let created: ApiKeyCreateResponse = reply.json();
    let key = created.key.clone();
    let ci = anonymous.with_key(&key);

    let reply = call(&ci, m.addr, "POST", "/v1/tasks", Some(task_body())).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        call(&ci, m.addr, "GET", "/v1/nodes", None).await.status,
        200
    );
    let reply = call(
        &ci,
        m.addr,
        "POST",
        "/v1/tokens",
        Some(r#"{"role":"admin","ttl":"1h"}"#.into()),
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    // A key renews no certificate: it has none.
    let reply = call(&ci, m.addr, "POST", "/v1/renew", Some("{}".into())).await;
    assert_eq!(reply.status, 403, "{}", reply.body);

    // Forged keys: the right id with another secret, the wrong prefix, garbage.
    let secret_start = key.rfind('_').expect("secret") + 1;
    let mut forged = key.clone();
    let flipped = if &key[secret_start..=secret_start] == "a" {
        "b"
    } else {
        "a"
    };
    forged.replace_range(secret_start..=secret_start, flipped);
    for bad in [
        forged.as_str(),
        "cloudoskey_aaaaaaaa_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "hunter2",
    ] {
        let reply = call(&anonymous.with_key(bad), m.addr, "GET", "/v1/nodes", None).await;
        assert_eq!(reply.status, 401, "{bad}: {}", reply.body);
    }

    // Listed without its secret; the secret is nowhere on the master's disk or in its log.
    let reply = call(a, m.addr, "GET", "/v1/apikeys", None).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains("ci-deploy") && !reply.body.contains(&key[secret_start..]));
    let secret = &key[secret_start..];
    assert!(
        !contains(&every_byte_under(&f.dir), secret),
        "the key's secret is stored in the clear"
    );

    // Revoked: refused at once.
    let path = format!("/v1/apikeys/{}", created.info.id);
    assert_eq!(call(a, m.addr, "DELETE", &path, None).await.status, 200);
    let reply = call(&ci, m.addr, "GET", "/v1/nodes", None).await;
    assert_error(&reply, 401, ErrorCode::Unauthenticated, "revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_see_environment_values_and_nobody_sees_a_secret() {
    let f = fixture("env-shown").await;
    let (m, a) = (&f.m, &f.a);
    make_secret(m, a).await;
    let reply = call(a, m.addr, "POST", "/v1/tasks", Some(task_body())).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let id = reply.json::<TaskInfo>().id;
    let operator = api_key(m, a, "ops", Role::Operator).await;
    let viewer = api_key(m, a, "look", Role::Viewer).await;
    let anonymous = pinned(m.pin, src(5));
    for (who, client, shown) in [
        ("admin", a.clone(), true),
        ("operator", anonymous.with_key(&operator), false),
        ("viewer", anonymous.with_key(&viewer), false),
    ] {
        for path in [
            format!("/v1/tasks/{id}"),
            "/v1/tasks".into(),
            "/v1/workloads".into(),
        ] {
            let reply = call(&client, m.addr, "GET", &path, None).await;
            assert_eq!(reply.status, 200, "{who} {path}: {}", reply.body);
            assert_eq!(
                reply.body.contains("hunter2"),
                shown,
                "{who} {path}: {}",
                reply.body
            );
            // The variable's name and the secret's name are shown to all; a value never.
            assert!(reply.body.contains("DB_PASSWORD") && reply.body.contains("api-token"));
            assert!(
                !reply.body.contains("s3cret-value") && !reply.body.contains("czNjcmV0LXZhbHVl")
            );
            assert_eq!(reply.body.contains(HIDDEN_VALUE), !shown, "{who} {path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_keeps_every_change_with_who_where_and_the_result() {
    let f = fixture("audit").await;
    let (m, a) = (&f.m, &f.a);
    make_secret(m, a).await;
    let key = api_key(m, a, "auditor-test", Role::Viewer).await;
    let viewer = pinned(m.pin, src(9)).with_key(&key);
    // A change refused, a change made, a read (not a change).
    let reply = call(&viewer, m.addr, "POST", "/v1/tasks", Some(task_body())).await;
    assert_eq!(reply.status, 403);
    let reply = call(a, m.addr, "POST", "/v1/tasks", Some(task_body())).await;
    assert_eq!(reply.status, 200);
    assert_eq!(call(a, m.addr, "GET", "/v1/nodes", None).await.status, 200);

    // The log is written after the answer: give it a moment.
    let mut entries: Vec<AuditEntry> = Vec::new();
    for _ in 0..150 {
        entries = call(a, m.addr, "GET", "/v1/audit", None).await.json();
        if entries.iter().filter(|e| e.path == "/v1/tasks").count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let find = |who: &str, path: &str| {
        entries
            .iter()
            .find(|e| e.who == who && e.path == path)
            .unwrap_or_else(|| panic!("no entry of {who} for {path} in {entries:?}"))
    };
    // The first admin's login, the key's creation, the refusal and the task.
    let login = find("anonymous", "/v1/join");
    assert_eq!((login.method.as_str(), login.status), ("POST", 200));
    assert_eq!(find("alice", "/v1/apikeys").status, 200);
    let refused = find("key:auditor-test", "/v1/tasks");
    assert_eq!(
        (refused.status, refused.role, refused.from.as_str()),
        (403, Some(Role::Viewer), "127.0.0.9")
    );
    let made = find("alice", "/v1/tasks");
    assert_eq!((made.status, made.role), (200, Some(Role::Admin)));
    assert!(made.id > refused.id, "ids follow time");
    assert!(
        !entries.iter().any(|e| e.method == "GET"),
        "reads are not changes"
    );

    // Filters, and the log is for admins only.
    let mine: Vec<AuditEntry> = call(a, m.addr, "GET", "/v1/audit?user=key%3Aauditor-test", None)
        .await
        .json();
    assert_eq!(mine.len(), 1, "{mine:?}");
    let recent: Vec<AuditEntry> = call(a, m.addr, "GET", "/v1/audit?since=1h&limit=1", None)
        .await
        .json();
    assert_eq!(recent.len(), 1);
    let reply = call(a, m.addr, "GET", "/v1/audit?since=yesterday", None).await;
    assert_error(&reply, 400, ErrorCode::BadRequest, "since");
    assert_eq!(
        call(&viewer, m.addr, "GET", "/v1/audit", None).await.status,
        403
    );
    // The entries hold no secret: the key is not in the log.
    let all = call(a, m.addr, "GET", "/v1/audit", None).await.body;
    assert!(!all.contains(&key), "{all}");
}

/// A request with `headers` from `client`: status, headers and body.
async fn call_with(
    client: &Client,
    m: &TestMaster,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let tls = tls_connect(client, m.addr).await;
    let (status, headers, bytes) =
        common::http_request_with(tls, method, path, headers, body.as_bytes().to_vec()).await;
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// A browser's session, attacked without a browser: the one-time link works once, the
/// cookie is `HttpOnly`, `Secure` and `SameSite=Strict`, a change needs the session's CSRF
/// token (a forged one is refused), the session's user's role decides, and removing the
/// user ends the session at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_session_needs_its_csrf_token_and_ends_with_its_user() {
    let f = fixture("sessions").await;
    let (m, a) = (&f.m, &f.a);
    make_secret(m, a).await;
    let login = user_login(m, a, "olga", Role::Operator).await;
    let olga = join(m, src(6), &login, "olga").await.client(src(6));
    let reply = call(&olga, m.addr, "POST", "/v1/dashboard/link", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let link: cloudos_cluster::api::DashboardLink = reply.json();
    let browser = pinned(m.pin, src(7));

    let opened = call_with(&browser, m, "GET", &link.path, &[], "").await;
    assert_eq!(opened.status, 303, "{}", opened.body);
    let set_cookie = opened
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_owned();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().expect("name=value").to_owned();
    // The link is spent.
    let again = call_with(&browser, m, "GET", &link.path, &[], "").await;
    assert_eq!(again.status, 401);

    // The page carries the CSRF token; the API wants it for every change.
    let page = call_with(
        &browser,
        m,
        "GET",
        "/ui/workloads",
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(page.headers.get("content-security-policy").is_some());
    let csrf = page
        .body
        .split(r#"name="csrf-token" content=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the CSRF token in the page")
        .to_owned();
    let read = call_with(&browser, m, "GET", "/v1/tasks", &[("cookie", &cookie)], "").await;
    assert_eq!(read.status, 200);
    let body = task_body();
    for forged in [None, Some("0000")] {
        let mut headers = vec![("cookie", cookie.as_str())];
        if let Some(token) = forged {
            headers.push(("x-cloudos-csrf", token));
        }
        let reply = call_with(&browser, m, "POST", "/v1/tasks", &headers, &body).await;
        assert_eq!(reply.status, 403, "{forged:?}: {}", reply.body);
    }
    let headers = [
        ("cookie", cookie.as_str()),
        ("x-cloudos-csrf", csrf.as_str()),
    ];
    let made = call_with(&browser, m, "POST", "/v1/tasks", &headers, &body).await;
    assert_eq!(made.status, 200, "{}", made.body);
    // An operator's session makes no token; a session sets no password.
    let token = call_with(
        &browser,
        m,
        "POST",
        "/v1/tokens",
        &headers,
        r#"{"role":"compute","ttl":"1h"}"#,
    )
    .await;
    assert_eq!(token.status, 403);
    let password = call_with(
        &browser,
        m,
        "PUT",
        "/v1/password",
        &headers,
        r#"{"password":"a long passphrase"}"#,
    )
    .await;
    assert_eq!(password.status, 403);
    // Another browser's cookie value names nothing.
    let stranger = call_with(
        &browser,
        m,
        "GET",
        "/v1/tasks",
        &[("cookie", "cloudos_session=00")],
        "",
    )
    .await;
    assert_eq!(stranger.status, 401);

    // Olga removed: her session ends with her certificates.
    assert_eq!(
        call(a, m.addr, "DELETE", "/v1/users/olga", None)
            .await
            .status,
        200
    );
    let after = call_with(&browser, m, "GET", "/v1/tasks", &[("cookie", &cookie)], "").await;
    assert!(matches!(after.status, 401 | 403), "{}", after.status);
    let page = call_with(&browser, m, "GET", "/", &[("cookie", &cookie)], "").await;
    assert_eq!(
        page.status, 303,
        "the dashboard sends her to the login page"
    );
}
