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
