//! Attacks on the master's state, against the real master: a full data partition (writes
//! fail loudly, nothing half-done), a damaged record (quarantined, the rest served), a
//! token TTL made to overflow, and a node that floods a task's log.

use std::path::{Path, PathBuf};
use std::process::Command;

use cloudos_cluster::api::{AgentMessage, ErrorCode, Heartbeat, MasterMessage, Telemetry};
use cloudos_cluster::workload::{LogChunk, LogLine, LogStream, TaskInfo};
use cloudos_master::workloads::truncation_marker;
use cloudos_store::Table;
use cloudos_store::{RedbStore, Store};

use super::*;

/// A tmpfs of `size` mounted on `dir` for one test (the tests run as root), unmounted and
/// removed when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&dir).expect("mount point");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a tmpfs on {}", dir.display());
        Tmpfs(dir)
    }

    /// Fills it with one file, all but `spare` bytes; returns that file.
    fn fill(&self, spare: u64) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let block = vec![0x5a_u8; 64 << 10];
        while file.write_all(&block).is_ok() {}
        let full = file.metadata().expect("filler size").len();
        file.set_len(full.saturating_sub(spare))
            .expect("leave some room");
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn task_body(n: usize) -> String {
    serde_json::json!({
        "spec": {"image": "127.0.0.1:9/none:1", "command": ["true"], "env": {"N": n.to_string()}},
    })
    .to_string()
}

async fn task_ids(m: &TestMaster, a: &Client) -> Vec<String> {
    let reply = call(a, m.addr, "GET", "/v1/tasks", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mut ids: Vec<String> = reply
        .json::<Vec<TaskInfo>>()
        .into_iter()
        .map(|t| t.id)
        .collect();
    ids.sort();
    ids
}

/// The attacker fills the master's data partition (any process that can write there, or
/// a flood of task output). Every write from then on must fail loudly: the API answers
/// 5xx, and neither memory nor the store holds half of an operation. After space comes
/// back, a restarted master holds exactly what the API acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_makes_writes_fail_loudly_and_changes_nothing() {
    let disk = Tmpfs::mount(common::temp_dir("full-disk"), "12m");
    let mut m = start_master(&disk.0);
    let admin = join_admin(&m).await;
    let a = admin.client(src(1));
    let token = compute_token(&m, &a).await;
    let tokens_before = tokens(&m, &a).await;

    // A little room left: some writes are acknowledged, then the disk is full.
    let filler = disk.fill(512 << 10);
    let mut kept = Vec::new();
    let mut refused = None;
    for n in 0..3000 {
        let reply = call(&a, m.addr, "POST", "/v1/tasks", Some(task_body(n))).await;
        if reply.status != 200 {
            refused = Some(reply);
            break;
        }
        kept.push(reply.json::<TaskInfo>().id);
    }
    let refused = refused.expect("a full disk refuses a write");
    assert!(!kept.is_empty(), "the writes that fit were acknowledged");
    assert_error(&refused, 500, ErrorCode::Internal, "state store");
    kept.sort();
    assert_eq!(
        task_ids(&m, &a).await,
        kept,
        "memory holds only what was stored"
    );

    // A join now: refused, and no node appears; the token's use is not taken.
    let reply = try_join(&m, src(2), &token, "n1")
        .await
        .err()
        .expect("refused");
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert_eq!(nodes(&m, &a).await, vec![], "no node in memory");
    // Nor a token.
    let reply = call(
        &a,
        m.addr,
        "POST",
        "/v1/tokens",
        Some(r#"{"role":"compute","ttl":"1h"}"#.into()),
    )
    .await;
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert_eq!(task_ids(&m, &a).await, kept, "still unchanged");
    m.stop();

    // Space again: the restarted master has exactly what was acknowledged.
    std::fs::remove_file(filler).expect("free the disk");
    let mut m = start_master(&disk.0);
    assert_eq!(task_ids(&m, &a).await, kept);
    assert_eq!(
        tokens(&m, &a).await,
        tokens_before,
        "no token made, no use taken"
    );
    assert_eq!(nodes(&m, &a).await, vec![]);
    join(&m, src(2), &token, "n1").await;
    m.stop();
}

/// Damage on disk (a bit flip, a bug of an older version) in one record must not keep the
/// master down: it starts, moves the record to the quarantine table, and serves the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_is_quarantined_and_the_master_serves_the_rest() {
    let dir = common::temp_dir("quarantine");
    let mut m = start_master(&dir);
    let admin = join_admin(&m).await;
    let a = admin.client(src(1));
    let good = compute_token(&m, &a).await;
    let doomed: Token = compute_token(&m, &a).await.parse().expect("token");
    join(&m, src(2), &good, "n1").await;
    m.stop();

    let path = dir.join("master/state.redb");
    {
        let store = RedbStore::open(&path).expect("open the file");
        store
            .put_raw(
                Table::Tokens,
                doomed.id().as_str(),
                b"{\"id\": 12, \"salt\"",
            )
            .expect("damage");
        store
            .put_raw(Table::Nodes, "ghost", &[0xde, 0xad, 0xbe, 0xef])
            .expect("damage");
    }

    let mut m = start_master(&dir);
    let ids: Vec<String> = tokens(&m, &a)
        .await
        .into_iter()
        .map(|t| t.id.to_string())
        .collect();
    let good: Token = good.parse().expect("token");
    assert!(ids.contains(&good.id().to_string()), "{ids:?}");
    assert!(!ids.contains(&doomed.id().to_string()), "{ids:?}");
    let names: Vec<String> = nodes(&m, &a).await.into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["n1"]);
    // The damaged token cannot be used, and says so as an unknown one.
    let reply = try_join(&m, src(3), &doomed.to_string(), "n2")
        .await
        .err()
        .expect("refused");
    assert_error(&reply, 401, ErrorCode::Unauthenticated, "no token with id");
    m.stop();

    let store = RedbStore::open(&path).expect("open the file");
    let mut moved: Vec<(String, String)> = store
        .quarantined()
        .expect("quarantine")
        .into_iter()
        .map(|q| (q.table, q.key))
        .collect();
    moved.sort();
    assert_eq!(
        moved,
        [
            ("nodes".to_owned(), "ghost".to_owned()),
            ("tokens".to_owned(), doomed.id().to_string()),
        ]
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An admin's client (or a stolen admin certificate) asks for a token whose TTL overflows
/// the calendar: it used to be stored as "never expires". Refused, and nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_ttl_that_overflows_is_refused() {
    let f = fixture("ttl-overflow").await;
    let (m, a) = (&f.m, &f.a);
    let before = tokens(m, a).await;
    let attacks = [
        (
            r#"{"role":"compute","ttl":"18446744073709551615s"}"#,
            "too large",
        ),
        (
            r#"{"role":"compute","ttl":"9223372036854775807s"}"#,
            "at most 365d",
        ),
        (r#"{"role":"compute","ttl":"99999999w"}"#, "at most 365d"),
        (r#"{"role":"compute","ttl":"366d"}"#, "at most 365d"),
        (r#"{"role":"admin","ttl":"8d"}"#, "at most 7d"),
        (r#"{"role":"admin"}"#, "must expire"),
    ];
    for (body, says) in attacks {
        let reply = call(a, m.addr, "POST", "/v1/tokens", Some(body.into())).await;
        assert_error(&reply, 400, ErrorCode::BadRequest, says);
    }
    assert_eq!(tokens(m, a).await, before, "no token stored");
    let year = create_token(m, a, serde_json::json!({"role": "compute", "ttl": "365d"})).await;
    assert!(year.info.expires_at.is_some());
}

/// A node (or the container it runs) floods a task's log. The master keeps the head up to
/// the cap, ends it with a marker line, and drops the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_flooding_a_log_is_capped_keeping_the_head() {
    const CAP: u64 = 64 << 10;
    let dir = common::temp_dir("log-flood");
    let mut config = common::config(
        &dir,
        "127.0.0.1:0".parse().expect("addr"),
        HEARTBEAT,
        // The fake node sends one heartbeat: it must stay Ready while the test runs.
        Duration::from_secs(60),
    );
    config.retention.log_cap = CAP;
    let m = TestMaster::start(config, 2);
    let admin = join_admin(&m).await;
    let a = admin.client(src(1));
    let f = Fixture { m, dir, admin, a };
    let (_node, mut ws) = connected_node(&f, "n1").await;
    let capacity = AgentMessage::Heartbeat(Heartbeat {
        usage: Default::default(),
        seq: 1,
        sent_at: time::OffsetDateTime::now_utc(),
        telemetry: Telemetry {
            capacity: cloudos_cluster::api::Capacity {
                cpu_millicores: 4000,
                memory_bytes: 8 << 30,
            },
            ..Telemetry::default()
        },
        runs: Vec::new(),
    });
    send(&mut ws, &capacity).await;
    wait_state(&f.m, &f.a, "n1", NodeState::Ready).await;
    let reply = call(&f.a, f.m.addr, "POST", "/v1/tasks", Some(task_body(0))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let task: TaskInfo = reply.json();
    let run = loop {
        match receive(&mut ws).await {
            Some(MasterMessage::Assign(assignment)) => break assignment.run,
            Some(_) => continue,
            None => panic!("connection closed before the assignment"),
        }
    };

    // The flood: 4 MiB on stdout and 4 MiB on stderr, each chunk marked with its number.
    let mut offsets = [0u64; 2];
    for n in 0..256u32 {
        for (i, stream) in [LogStream::Stdout, LogStream::Stderr]
            .into_iter()
            .enumerate()
        {
            let data = format!("{n:08}{}\n", "x".repeat(16 * 1024 - 9));
            let chunk = LogChunk {
                run: run.clone(),
                stream,
                offset: offsets[i],
                data,
            };
            offsets[i] += chunk.data.len() as u64;
            send(&mut ws, &AgentMessage::Log(chunk)).await;
        }
    }

    let marker = truncation_marker(CAP);
    let logs = dir_of_logs(&f.dir, &task.id);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (stdout, stderr) = loop {
        let (stdout, stderr) = task_logs(&f, &task.id).await;
        if stdout.contains(&marker) || stderr.contains(&marker) {
            break (stdout, stderr);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log never reached its cap"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Wait for the rest of the flood to arrive, and check that none of it was kept.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (stdout_after, stderr_after) = task_logs(&f, &task.id).await;
    assert_eq!(
        (stdout_after, stderr_after),
        (stdout.clone(), stderr.clone())
    );
    let kept = (stdout.len() + stderr.len()) as u64;
    assert!(kept <= CAP + marker.len() as u64, "{kept} bytes kept");
    assert!(kept >= CAP, "the cap's worth is kept: {kept}");
    assert!(stdout.starts_with("00000000x"), "the head is kept");
    let on_disk: u64 = ["stdout", "stderr"]
        .iter()
        .map(|s| {
            std::fs::metadata(logs.join(s))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(on_disk, kept);
}

fn dir_of_logs(data: &Path, task: &str) -> PathBuf {
    data.join("master/workloads/logs").join(task)
}

/// The task's stdout and stderr as the API gives them.
async fn task_logs(f: &Fixture, id: &str) -> (String, String) {
    let reply = call(&f.a, f.m.addr, "GET", &format!("/v1/tasks/{id}/logs"), None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (mut out, mut err) = (String::new(), String::new());
    for line in reply.body.lines() {
        let line: LogLine = serde_json::from_str(line).expect("log line");
        match line.stream {
            LogStream::Stdout => out.push_str(&line.data),
            LogStream::Stderr => err.push_str(&line.data),
        }
    }
    (out, err)
}

/// The master acknowledged a create, then crashed before its answer reached the CLI,
/// which sends the same request again once the master is back. The request id makes
/// that retry return what the first one made: one task, one service, never two. The
/// same id with another spec, and an id that is not one, are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_sent_again_after_a_master_restart_makes_nothing_twice() {
    let dir = common::temp_dir("request-ids");
    let mut m = start_master(&dir);
    let admin = join_admin(&m).await;
    let a = admin.client(src(1));
    let with_id = |n: usize, id: &str| {
        let mut body: serde_json::Value = serde_json::from_str(&task_body(n)).expect("JSON");
        body["request_id"] = id.into();
        body.to_string()
    };
    let post = |m: &TestMaster, path: &'static str, body: String| {
        let (client, addr) = (a.clone(), m.addr);
        async move { call(&client, addr, "POST", path, Some(body)).await }
    };
    let service = serde_json::json!({
        "name": "web",
        "spec": {"image": "127.0.0.1:9/none:1", "command": ["true"]},
        "replicas": 1,
        "request_id": "deploy-0123456789",
    })
    .to_string();
    let reply = post(&m, "/v1/tasks", with_id(1, "run-0123456789")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let first = reply.json::<TaskInfo>().id;
    let reply = post(&m, "/v1/services", service.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    m.stop();

    let mut m = start_master(&dir);
    let reply = post(&m, "/v1/tasks", with_id(1, "run-0123456789")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json::<TaskInfo>().id,
        first,
        "the retry got the same task"
    );
    let tasks = |ids: Vec<String>| -> Vec<String> {
        // Tasks, not the service's replica (made when the scheduler passes).
        ids.into_iter().filter(|id| id.starts_with("t-")).collect()
    };
    assert_eq!(
        tasks(task_ids(&m, &a).await),
        std::slice::from_ref(&first),
        "and no second one"
    );
    let reply = post(&m, "/v1/services", service.clone()).await;
    assert_eq!(reply.status, 200, "the retried deploy: {}", reply.body);

    let reply = call(
        &a,
        m.addr,
        "POST",
        "/v1/tasks",
        Some(with_id(2, "run-0123456789")),
    )
    .await;
    assert_error(
        &reply,
        409,
        ErrorCode::Conflict,
        &format!("made task {first}"),
    );
    let reply = post(&m, "/v1/tasks", with_id(1, "short")).await;
    assert_error(&reply, 400, ErrorCode::BadRequest, "request id");
    let other = service.replace("deploy-0123456789", "deploy-9876543210");
    let reply = post(&m, "/v1/services", other).await;
    assert_error(&reply, 409, ErrorCode::Conflict, "exists already");
    assert_eq!(tasks(task_ids(&m, &a).await), [first], "still one task");
    let reply = call(&a, m.addr, "GET", "/v1/services", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let services: Vec<serde_json::Value> = reply.json();
    assert_eq!(services.len(), 1, "one service: {services:?}");
    m.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
