//! The web dashboard in a real browser: Debian's headless Chromium, driven through
//! WebDriver, against a real master with a real agent and registry in the namespace lab
//! (see `cloudos_tests::browser`). Screenshots of each page go to
//! `target/test-artifacts/dashboard/`.
//!
//! Needs root (network namespaces), chromium and chromedriver: skipped without them, or
//! failed under `CLOUDOS_STRICT=1` (scripts/test.sh).

use std::time::{Duration, Instant};

use cloudos_tests::browser::{self, Driver};
use cloudos_tests::lab::{busybox_registry, Lab};
use fantoccini::{Client, Locator};
use tokio::runtime::Runtime;

const REGISTRY: &str = "10.77.0.1:5000";
const BUSYBOX: &str = "10.77.0.1:5000/lab/busybox:1";

/// Waits until `check` gives a value, reading again every 250 ms, for up to 30 s; the
/// failure says where the browser was and what it showed.
fn eventually<T>(
    rt: &Runtime,
    c: &Client,
    what: &str,
    mut check: impl FnMut(&Runtime) -> Option<T>,
) -> T {
    let deadline = Instant::now() + cloudos_tests::scaled(Duration::from_secs(30));
    loop {
        if let Some(value) = check(rt) {
            return value;
        }
        if Instant::now() >= deadline {
            let url = rt
                .block_on(c.current_url())
                .map(|u| u.to_string())
                .unwrap_or_default();
            let page = text(rt, c, "body").unwrap_or_default();
            panic!("{what}: not seen in time; at {url}:\n{page}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn text(rt: &Runtime, c: &Client, css: &str) -> Option<String> {
    let element = rt.block_on(c.find(Locator::Css(css))).ok()?;
    rt.block_on(element.text()).ok()
}

fn count(rt: &Runtime, c: &Client, css: &str) -> usize {
    rt.block_on(c.find_all(Locator::Css(css)))
        .map(|all| all.len())
        .unwrap_or_default()
}

/// A request the page's own script could make, with or without the page's CSRF token:
/// its HTTP status.
fn fetch_status(rt: &Runtime, c: &Client, method: &str, path: &str, body: &str, csrf: bool) -> u16 {
    let script = r#"
        const [method, path, body, withCsrf, done] = arguments;
        const token = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
        const headers = { "content-type": "application/json" };
        if (withCsrf) headers["x-cloudos-csrf"] = token;
        fetch(path, { method, headers, body: body || undefined, credentials: "same-origin" })
            .then((r) => done(r.status), () => done(0));
    "#;
    let args = vec![method.into(), path.into(), body.into(), csrf.into()];
    let value = rt
        .block_on(c.execute_async(script, args))
        .expect("the page's fetch");
    value.as_u64().unwrap_or_default() as u16
}

/// Runs `browse`; when it fails, the master's log goes with the failure.
fn with_master_log<T>(cluster: &cloudos_tests::lab::Cluster<'_>, browse: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(browse)) {
        Ok(value) => value,
        Err(panic) => {
            eprintln!("the master's log:\n{}", cluster.master.log());
            std::panic::resume_unwind(panic)
        }
    }
}

#[test]
fn people_use_the_cluster_from_a_browser_and_the_dashboard_refuses_what_their_role_does_not_allow()
{
    let Some(lab) = Lab::new() else { return };
    let Some(driver) = Driver::start(&lab.net) else {
        return;
    };
    let _registry = busybox_registry(&lab.net, REGISTRY);
    // A history point a second, so the node's charts have data within the test.
    let cluster = lab.cluster(&["--history-interval", "1s"]);
    let alice = &cluster.alice;
    let token = alice.token("compute", &["--ttl", "1h"]);
    let host = lab.host(3);
    let _agent = cluster.compute("node-3", &host, &token, &[REGISTRY]);
    let out = alice.run(&["deploy", "web", BUSYBOX, "--", "sleep", "3600"]);
    assert!(out.status.success(), "{out:?}");
    let master = cluster.master.addr.clone();
    let pin = browser::spki_pin(&lab.net, &master);
    let shots = browser::artifacts("dashboard");

    // Alice (admin) opens the dashboard with the one-time link `cloudos dashboard` makes.
    let link = alice.run(&["dashboard", "--print"]);
    assert!(link.status.success(), "{link:?}");
    let link = String::from_utf8_lossy(&link.stdout).trim().to_owned();
    assert!(
        link.starts_with(&format!("https://{master}/ui/link/")),
        "{link}"
    );
    let (m, l, s) = (master.clone(), link.clone(), shots.clone());
    with_master_log(&cluster, || {
        driver.browse(&pin, &lab.path("alice-browser"), move |rt, c| {
            rt.block_on(c.goto(&l)).expect("open the link");
            // The cluster at a glance: one node, Ready.
            let ready = eventually(rt, c, "the overview", |rt| text(rt, c, "#nodes-ready"));
            assert_eq!(ready, "1 / 1");
            browser::screenshot(rt, c, &s.join("overview.png"));
            // The link worked once; a second use is refused.
            rt.block_on(c.goto(&l)).expect("the link again");
            assert!(text(rt, c, "p.error").is_some_and(|t| t.contains("used already")));

            rt.block_on(c.goto(&format!("https://{m}/ui/nodes")))
                .expect("nodes");
            let row = eventually(rt, c, "node-3's row", |rt| {
                text(rt, c, "tr[data-node='node-3']")
            });
            assert!(row.contains("Ready"), "{row}");
            browser::screenshot(rt, c, &s.join("nodes.png"));

            // The node's page charts its measurements.
            rt.block_on(c.goto(&format!("https://{m}/ui/nodes/node-3")))
                .expect("node-3");
            let chart = eventually(rt, c, "a CPU chart with data", |rt| {
                // A point a second: read the page again until it has two.
                rt.block_on(c.refresh()).ok()?;
                rt.block_on(c.find(Locator::Css("#cpu-chart svg"))).ok()?;
                let label = rt
                    .block_on(async {
                        c.find(Locator::Css("#cpu-chart svg"))
                            .await?
                            .attr("aria-label")
                            .await
                    })
                    .ok()??;
                let points: usize = label.split(", ").nth(1)?.split(' ').next()?.parse().ok()?;
                (points >= 2).then_some(label)
            });
            assert!(chart.starts_with("CPU"), "{chart}");
            assert!(count(rt, c, "#memory-chart svg polyline") == 1);
            browser::screenshot(rt, c, &s.join("node.png"));

            // Run a task from the page and watch its logs stream in.
            rt.block_on(c.goto(&format!("https://{m}/ui/workloads")))
                .expect("workloads");
            let image = rt
                .block_on(c.find(Locator::Css("#image")))
                .expect("image field");
            rt.block_on(image.send_keys(BUSYBOX))
                .expect("type the image");
            let command = rt
                .block_on(c.find(Locator::Css("#command")))
                .expect("command field");
            rt.block_on(command.send_keys("echo hello-from-the-browser"))
                .expect("type the command");
            let run = rt
                .block_on(c.find(Locator::Css("form[data-api='task'] button[type='submit']")))
                .expect("the Run button");
            rt.block_on(run.click()).expect("run");
            eventually(rt, c, "the task's logs", |rt| {
                text(rt, c, "pre.logs").filter(|t| t.contains("hello-from-the-browser"))
            });
            browser::screenshot(rt, c, &s.join("task.png"));

            // Scale the service to two replicas from the page.
            rt.block_on(c.goto(&format!("https://{m}/ui/workloads")))
                .expect("workloads");
            let replicas = rt
                .block_on(c.find(Locator::Css("#replicas-web")))
                .expect("replicas");
            rt.block_on(replicas.clear()).expect("clear");
            rt.block_on(replicas.send_keys("2")).expect("type 2");
            let scale = rt
                .block_on(c.find(Locator::Css(
                    "tr[data-service='web'] form button[type='submit']",
                )))
                .expect("the Scale button");
            rt.block_on(scale.click()).expect("scale");
            eventually(rt, c, "two replicas of web", |rt| {
                text(rt, c, "tr[data-service='web']").filter(|t| t.contains("/ 2 running"))
            });
            browser::screenshot(rt, c, &s.join("workloads.png"));

            // A change without the page's CSRF token is refused, with it accepted.
            let cancel_body = "";
            assert_eq!(
                fetch_status(
                    rt,
                    c,
                    "POST",
                    "/v1/tasks",
                    r#"{"spec":{"image":"x/y:1"}}"#,
                    false
                ),
                403
            );
            assert_ne!(
                fetch_status(rt, c, "GET", "/v1/nodes", cancel_body, false),
                403
            );

            // What each node runs, and the releases kept (none here).
            rt.block_on(c.goto(&format!("https://{m}/ui/upgrades")))
                .expect("upgrades");
            let running = eventually(rt, c, "the running version", |rt| {
                text(rt, c, "#running-version")
            });
            assert!(!running.is_empty());
            assert!(text(rt, c, "#systems").is_some_and(|t| t.contains("node-3")));
            browser::screenshot(rt, c, &s.join("upgrades.png"));

            // Admin pages.
            rt.block_on(c.goto(&format!("https://{m}/ui/people")))
                .expect("people");
            eventually(rt, c, "alice in the users", |rt| {
                text(rt, c, "tr[data-user='alice']")
            });
            browser::screenshot(rt, c, &s.join("people.png"));
            rt.block_on(c.goto(&format!("https://{m}/ui/tokens")))
                .expect("tokens");
            eventually(rt, c, "the token list", |rt| text(rt, c, "#tokens"));
            browser::screenshot(rt, c, &s.join("tokens.png"));

            // Logged out, the session is refused by the API too.
            let logout = rt
                .block_on(c.find(Locator::Css("header form button[type='submit']")))
                .expect("the Log out button");
            rt.block_on(logout.click()).expect("log out");
            eventually(rt, c, "the login page", |rt| text(rt, c, "main.login h1"));
            assert_eq!(fetch_status(rt, c, "GET", "/v1/nodes", "", false), 401);
            rt.block_on(c.goto(&format!("https://{m}/")))
                .expect("back to /");
            assert!(
                text(rt, c, "main.login").is_some(),
                "a logged-out browser sees the login page"
            );
        })
    });
    let ps = alice.json(&["ps", "-o", "json"]);
    let web = ps["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "web"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(web["replicas"], 2, "{ps}");

    // Vic, a viewer, logs in with a password: sees no buttons, and a forged change is
    // refused by the API.
    let vic_login = alice.run(&["user", "add", "vic", "--role", "viewer"]);
    assert!(vic_login.status.success(), "{vic_login:?}");
    let vic_token = String::from_utf8_lossy(&vic_login.stdout).trim().to_owned();
    let vic = lab.admin("vic");
    vic.log_in(&vic_token, &master);
    vic.ok_with_input(&["user", "password"], "a long viewer passphrase\n");
    let (m, s) = (master.clone(), shots.clone());
    with_master_log(&cluster, || {
        driver.browse(&pin, &lab.path("vic-browser"), move |rt, c| {
            rt.block_on(c.goto(&format!("https://{m}/"))).expect("open");
            eventually(rt, c, "the login page", |rt| text(rt, c, "main.login"));
            // A wrong password first, then the right one.
            for (password, then) in [
                ("not the passphrase", "p.error"),
                ("a long viewer passphrase", "#nodes-ready"),
            ] {
                let form = rt
                    .block_on(c.form(Locator::Css("main.login form")))
                    .expect("login form");
                rt.block_on(form.set_by_name("name", "vic")).expect("name");
                rt.block_on(form.set_by_name("password", password))
                    .expect("password");
                rt.block_on(form.submit()).expect("submit");
                eventually(rt, c, then, |rt| text(rt, c, then));
            }
            rt.block_on(c.goto(&format!("https://{m}/ui/workloads")))
                .expect("workloads");
            eventually(rt, c, "the task list", |rt| text(rt, c, "#tasks"));
            browser::screenshot(rt, c, &s.join("workloads-viewer.png"));
            assert_eq!(
                count(rt, c, "button.danger"),
                0,
                "a viewer sees no cancel or delete"
            );
            assert_eq!(
                count(rt, c, "form[data-api]"),
                0,
                "a viewer sees no run or scale form"
            );
            assert_eq!(
                count(rt, c, "a[href='/ui/people']"),
                0,
                "a viewer sees no admin page"
            );
            // A forged change, with the session's own CSRF token: the role decides.
            assert_eq!(
                fetch_status(
                    rt,
                    c,
                    "POST",
                    "/v1/services/web/scale",
                    r#"{"replicas":0}"#,
                    true
                ),
                403
            );
            rt.block_on(c.goto(&format!("https://{m}/ui/people")))
                .expect("people");
            assert!(text(rt, c, "main").is_some_and(|t| t.contains("for admins")));
        })
    });
    let ps = alice.json(&["ps", "-o", "json"]);
    assert!(
        ps["services"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"] == "web" && s["replicas"] == 2)),
        "the viewer's forged scale changed nothing: {ps}"
    );
    drop(driver);
}

/// What one browser visit measured (milliseconds and bytes).
struct Visit {
    overview_fcp_ms: f64,
    overview_bytes: f64,
    nodes_page_ms: f64,
    nodes_api_ms: f64,
    rows: usize,
    /// A node's page with its month chart (744 hourly points when history is kept).
    month_chart_ms: f64,
}

/// One visit in a fresh browser: the overview's first contentful paint and the bytes of
/// that first load (page, script, stylesheet), then the node list page to its
/// DOMContentLoaded against the same list from the JSON API (the peer, fetched by the
/// page itself).
fn visit(rt: &Runtime, c: &Client, link: &str, master: &str) -> Visit {
    rt.block_on(c.goto(link)).expect("open the link");
    eventually(rt, c, "the overview", |rt| text(rt, c, "#nodes-ready"));
    let number = |script: &str| -> f64 {
        rt.block_on(c.execute(script, vec![]))
            .expect("a measurement")
            .as_f64()
            .unwrap_or(f64::NAN)
    };
    // The paint entry may come a moment after the load.
    let fcp = (0..20)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            number("const e = performance.getEntriesByName('first-contentful-paint')[0]; return e ? e.startTime : -1;")
        })
        .find(|v| *v >= 0.0)
        .unwrap_or(f64::NAN);
    let bytes = number(
        "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')).reduce((s, e) => s + (e.transferSize || e.encodedBodySize || 0), 0);",
    );
    rt.block_on(c.goto(&format!("https://{master}/ui/nodes")))
        .expect("nodes");
    let page = number("const n = performance.getEntriesByType('navigation')[0]; return n.domContentLoadedEventEnd - n.startTime;");
    let rows = count(rt, c, "#nodes tbody tr");
    let api = rt
        .block_on(c.execute_async(
            "const done = arguments[0]; const t = performance.now(); fetch('/v1/nodes').then((r) => r.json()).then(() => done(performance.now() - t), () => done(-1));",
            vec![],
        ))
        .expect("the API's list")
        .as_f64()
        .unwrap_or(f64::NAN);
    rt.block_on(c.goto(&format!("https://{master}/ui/nodes/sim-000?range=30d")))
        .expect("a node's month");
    let month = number("const n = performance.getEntriesByType('navigation')[0]; return n.domContentLoadedEventEnd - n.startTime;");
    Visit {
        month_chart_ms: month,
        overview_fcp_ms: fcp,
        overview_bytes: bytes,
        nodes_page_ms: page,
        nodes_api_ms: api,
        rows,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// A month of history for `node`: an hourly mean for 31 days and a point a minute for
/// the last day, as the master would have kept them.
fn a_month_of(
    node: &str,
    now: time::OffsetDateTime,
) -> (
    Vec<cloudos_cluster::api::HistoryPoint>,
    Vec<cloudos_cluster::api::HistoryPoint>,
) {
    let point = |at: time::OffsetDateTime, i: i64| cloudos_cluster::api::HistoryPoint {
        at,
        cpu_usage: (i % 100) as f64 / 100.0,
        cpu_cores: (i % 100) as f64 / 50.0,
        mem_used_bytes: 1 << 30,
        mem_total_bytes: 4 << 30,
        disk_used_bytes: 10 << 30,
        disk_total_bytes: 100 << 30,
        net_rx_bytes_per_sec: 1000.0 + i as f64,
        net_tx_bytes_per_sec: 500.0,
        load1: 0.5,
    };
    let _ = node; // every node measures the same
    let fine = (0..1440)
        .map(|m| point(now - time::Duration::minutes(1440 - m), m))
        .collect();
    let coarse = (0..744)
        .map(|h| point(now - time::Duration::hours(744 - h), h))
        .collect();
    (fine, coarse)
}

#[test]
#[ignore = "a benchmark: scripts/bench-dashboard.sh"]
fn dashboard_bench() {
    const NODES: usize = 100;
    let Some(lab) = Lab::new() else { return };
    let Some(driver) = Driver::start(&lab.net) else {
        return;
    };
    let runs = cloudos_tests::bench::runs(5);
    let mut cluster = lab.cluster(&[]);
    // A hundred nodes join (each its own key and certificate); they stay NotReady, which
    // the list shows like any other state.
    let token = cluster
        .alice
        .token("compute", &["--ttl", "1h", "--uses", "200"]);
    let master = cluster.master.addr.clone();
    let (m, t) = (master.clone(), token.clone());
    lab.net.inside(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let token: cloudos_cluster::Token = t.parse().expect("token");
        for i in 0..NODES {
            rt.block_on(cloudos_cluster::client::join(
                &m,
                &token,
                &format!("sim-{i:03}"),
                "x86_64",
                &Default::default(),
                None,
            ))
            .expect("a simulated node joins");
        }
    });
    let rss = |cluster: &cloudos_tests::lab::Cluster<'_>| {
        let pid = cluster.master.proc.pid().expect("the master runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(f64::NAN)
            / 1024.0
    };
    let measure = |cluster: &cloudos_tests::lab::Cluster<'_>, label: &str| -> Vec<Visit> {
        // A master makes a new serving key at each start: pin the current one.
        let pin = browser::spki_pin(&lab.net, &master);
        (0..runs)
            .map(|run| {
                let link = cluster
                    .alice
                    .ok(&["dashboard", "--print"])
                    .trim()
                    .to_owned();
                let m = master.clone();
                let profile = lab.path(&format!("bench-{label}-{run}"));
                driver.browse(&pin, &profile, move |rt, c| visit(rt, c, &link, &m))
            })
            .collect()
    };
    let empty = measure(&cluster, "empty");
    let rss_empty = rss(&cluster);

    // A month of history for every node, written into the master's store while it is
    // stopped; then the master again, and its memory after serving the node pages.
    let data = lab.path("master");
    cluster.master.proc.stop_with(libc::SIGTERM);
    {
        let store =
            cloudos_store::RedbStore::open(data.join("master/state.redb")).expect("the store");
        let now = time::OffsetDateTime::now_utc();
        for i in 0..NODES {
            let node = format!("sim-{i:03}");
            let (fine, coarse) = a_month_of(&node, now);
            cloudos_master::history::backfill(&store, &node, &fine, &coarse).expect("backfill");
        }
    }
    let host = &cluster.host;
    cluster.master = lab.master("master-1", host, &data, &[]);
    let rss_restarted = rss(&cluster);
    let with_history = measure(&cluster, "history");
    let rss_history = rss(&cluster);
    assert!(
        empty.iter().chain(&with_history).all(|v| v.rows == NODES),
        "the list shows every node"
    );

    let col = |visits: &[Visit], f: fn(&Visit) -> f64| median(visits.iter().map(f).collect());
    println!("BENCH-TABLE-BEGIN");
    println!("| measure ({NODES} nodes, median of {runs}, headless Chromium in the lab) | value |");
    println!("|---|---|");
    println!(
        "| overview: first contentful paint | {:.0} ms |",
        col(&empty, |v| v.overview_fcp_ms)
    );
    println!(
        "| overview: bytes on first load (page, script, stylesheet) | {:.1} KB |",
        col(&empty, |v| v.overview_bytes) / 1000.0
    );
    let page = col(&empty, |v| v.nodes_page_ms);
    let api = col(&empty, |v| v.nodes_api_ms);
    println!("| node list page to DOMContentLoaded | {page:.0} ms |");
    println!("| peer: the same list from the JSON API (`GET /v1/nodes`, fetched by the page) | {api:.0} ms ({:.1}×) |", page / api);
    println!(
        "| node list page with a month of history kept | {:.0} ms |",
        col(&with_history, |v| v.nodes_page_ms)
    );
    println!(
        "| a node's page with its month chart (744 hourly points) | {:.0} ms |",
        col(&with_history, |v| v.month_chart_ms)
    );
    println!("| master RSS (debug build), no history | {rss_empty:.1} MiB |");
    println!(
        "| master RSS (debug build), started again on a month of history for {NODES} nodes | {rss_restarted:.1} MiB |"
    );
    println!("| the same after the visits above | {rss_history:.1} MiB |");
    println!("BENCH-TABLE-END");
}
