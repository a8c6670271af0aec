//! Container networks between real processes (issue 20): a master and two compute agents,
//! each in its own network namespace on the lab's bridge (10.77.0.0/24), running `bridge`
//! containers from a real registry. Everything a user would check crosses a real wire:
//! a published port answers on each node's address from the admin's laptop (the bridge's
//! namespace), each replica from its own node's subnet; a container reaches the LAN through
//! the node's NAT; a third replica that needs a port every node has given away waits and
//! says why; nothing of a run's network is left when it ends.
//!
//! Needs root (network namespaces): failed under `CLOUDOS_STRICT=1` without it.

use std::time::Duration;

use cloudos_tests::lab::{busybox_registry_with, Lab};

const REGISTRY: &str = "10.77.0.1:5000";
const BUSYBOX: &str = "10.77.0.1:5000/lab/busybox:1";

/// What `wget` from the admin's laptop gets at `url`, if anything.
fn fetch(lab: &Lab, url: &str) -> Option<String> {
    let out = lab
        .net
        // (busybox 1.35's static wget crashes with -T; timeout bounds it instead.)
        .exec(&["timeout", "5", "/bin/busybox", "wget", "-q", "-O", "-", url])
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The node's container subnet, as `cloudos node list` shows it.
fn subnet(lab: &Lab, admin: &cloudos_tests::admin::Admin<'_>, node: &str) -> ipnet::Ipv4Net {
    let info = admin
        .nodes()
        .into_iter()
        .find(|n| n.name == node)
        .unwrap_or_else(|| lab.fail(&format!("{node} is not in the node list")));
    info.subnet
        .as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| lab.fail(&format!("{node} has no container subnet: {info:?}")))
}

/// The runs' network leftovers on a node: its namespaces under the data directory and the
/// veths on its bridge.
fn leftovers(lab: &Lab, host: &cloudos_tests::NetHost, node: &str) -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_dir(lab.path(node).join("network/netns"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let links = host.ip_cmd(&["-o", "link", "show"]).expect("ip link");
    left.extend(
        String::from_utf8_lossy(&links.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .filter(|name| name.starts_with("cv"))
            .map(str::to_owned),
    );
    left
}

#[test]
fn published_replicas_answer_on_every_node_reach_out_through_nat_and_wait_for_a_free_port() {
    let Some(lab) = Lab::new() else { return };
    let _registry = busybox_registry_with(&lab.net, REGISTRY, &[]);
    let cluster = lab.cluster(&[]);
    let alice = &cluster.alice;
    let token = alice.token("compute", &[]);
    let (h3, h4) = (lab.host(3), lab.host(4));
    let _n3 = cluster.compute("node-3", &h3, &token, &[REGISTRY]);
    let _n4 = cluster.compute("node-4", &h4, &token, &[REGISTRY]);
    let (s3, s4) = (subnet(&lab, alice, "node-3"), subnet(&lab, alice, "node-4"));
    assert_ne!(s3, s4, "two nodes share a container subnet");

    // Each replica serves a page naming its own address, on port 80 of its own namespace.
    deploy_web(
        alice,
        &[
            "--replicas",
            "2",
            "--network",
            "bridge",
            "--publish",
            "8080:80",
        ],
        SERVE,
    );
    let page = |node: &str| fetch(&lab, &format!("http://{node}:8080/"));
    let (on3, on4) = lab.wait_for(
        "port 8080 to answer on both nodes",
        Duration::from_secs(60),
        || {
            Some((
                page("10.77.0.3").filter(|p| !p.is_empty())?,
                page("10.77.0.4")?,
            ))
        },
    );
    let address = |page: &str| -> ipnet::Ipv4Net {
        page.parse()
            .unwrap_or_else(|_| lab.fail(&format!("the page is no address: {page:?}")))
    };
    let (a3, a4) = (address(&on3), address(&on4));
    assert!(
        s3.contains(&a3.addr()),
        "node-3 answered from {a3}, not its subnet {s3}"
    );
    assert!(
        s4.contains(&a4.addr()),
        "node-4 answered from {a4}, not its subnet {s4}"
    );
    assert_ne!(
        a3.addr(),
        cloudos_cluster::subnets::gateway(&s3),
        "the replica has the bridge's own address"
    );

    // A bridge container reaches the LAN (the registry on the laptop) through its node.
    let id = alice.run_task(&[
        "--network",
        "bridge",
        BUSYBOX,
        "--",
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://{REGISTRY}/v2/"),
    ]);
    let task = alice.wait_task(&id, &["succeeded", "failed"], Duration::from_secs(60));
    assert_eq!(task["state"], "succeeded", "outbound through NAT: {task}");

    // A third replica: both nodes have 8080/tcp given away, so it waits and says so.
    alice.ok(&["scale", "web", "3"]);
    let reason = alice.wait(
        "the third replica's reason",
        Duration::from_secs(30),
        || {
            let svc = alice.service("web");
            svc["instances"].as_array()?.iter().find_map(|r| {
                let reason = r["reason"].as_str()?;
                (r["state"] == "queued" && reason.contains("host port 8080/tcp taken"))
                    .then(|| reason.to_owned())
            })
        },
    );
    assert!(reason.contains("2 have"), "{reason}");

    // A run that ends leaves no namespace and no veth behind.
    alice.ok(&["delete", "web"]);
    for (host, node) in [(&h3, "node-3"), (&h4, "node-4")] {
        lab.wait_for(
            &format!("{node} to take the replicas' networks down"),
            Duration::from_secs(30),
            || leftovers(&lab, host, node).is_empty().then_some(()),
        );
    }
    assert!(
        page("10.77.0.3").is_none(),
        "port 8080 still answers after the service is gone"
    );
}

/// The page each `serve` replica answers with: its own address, as `ip` prints it.
const SERVE: &str = "mkdir -p /tmp/www && ip -4 -o addr show eth0 | awk '{print $4}' \
                     > /tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www";

/// What a client task on the bridge printed: `script` run by busybox's sh.
fn client(lab: &Lab, alice: &cloudos_tests::admin::Admin<'_>, script: &str) -> String {
    let id = alice.run_task(&["--network", "bridge", BUSYBOX, "--", "sh", "-c", script]);
    let task = alice.wait_task(&id, &["succeeded", "failed"], Duration::from_secs(60));
    let logs = alice.ok(&["logs", &id]);
    if task["state"] != "succeeded" {
        lab.fail(&format!("the client failed: {task}\n{logs}"));
    }
    logs
}

/// The pages of 20 calls to `url`, one connection each.
const CALLS: &str = "for i in $(seq 1 20); do wget -q -O - \"$URL\" || echo failed; done";

/// The addresses `nslookup` printed for `name` (each `Address:` line after its `Name:`
/// line; the server's own lines come first, after `Server:`).
fn looked_up(output: &str, name: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut in_answer = false;
    for line in output.lines() {
        if line.trim().is_empty() || line.starts_with("Server:") {
            in_answer = false;
        } else if let Some(n) = line.strip_prefix("Name:") {
            in_answer = n.trim().trim_end_matches('.') == name;
        } else if let (true, Some(a)) = (in_answer, line.strip_prefix("Address:")) {
            found.push(a.trim().to_owned());
        }
    }
    found.sort();
    found
}

/// `cloudos deploy web FLAGS… BUSYBOX -- sh -c SCRIPT`.
fn deploy_web(alice: &cloudos_tests::admin::Admin<'_>, flags: &[&str], script: &str) {
    let mut args = vec!["deploy", "web"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[BUSYBOX, "--", "sh", "-c", script]);
    alice.ok(&args);
}

/// The lab's registry, a master and one compute node, node-3 (started with the agent's
/// `flags`), Ready. Dropped in the order a test's locals would be: the node first.
struct OneNode<'a> {
    _node: cloudos_tests::process::Proc,
    host: cloudos_tests::NetHost,
    cluster: cloudos_tests::lab::Cluster<'a>,
    _registry: cloudos_tests::registry::Registry,
}

fn one_node<'a>(lab: &'a Lab, flags: &[&str]) -> OneNode<'a> {
    let registry = busybox_registry_with(&lab.net, REGISTRY, &[]);
    let cluster = lab.cluster(&[]);
    let token = cluster.alice.token("compute", &[]);
    let host = lab.host(3);
    let node = cluster.compute_with("node-3", &host, &token, &[REGISTRY], flags);
    OneNode {
        _node: node,
        host,
        cluster,
        _registry: registry,
    }
}

#[test]
fn services_are_found_by_name_balanced_over_their_running_replicas_and_other_names_forwarded() {
    let Some(lab) = Lab::new() else { return };
    // The LAN's own resolver, which knows one printer; the node's DNS forwards to it.
    lab.net
        .start_dns_server(&[("printer.lan.test", "10.77.0.99")])
        .unwrap_or_else(|e| lab.fail(&format!("the LAN's DNS: {e}")));
    let resolv = lab.path("resolv.conf");
    std::fs::write(&resolv, "nameserver 10.77.0.1\nsearch lan.test\n").expect("resolv.conf");
    let resolv_flag = resolv.to_string_lossy().into_owned();
    let lab_node = one_node(&lab, &["--resolv-conf", &resolv_flag]);
    let alice = &lab_node.cluster.alice;

    deploy_web(alice, &["--replicas", "2"], SERVE);
    let replicas: Vec<String> = alice.wait("both replicas to run", Duration::from_secs(60), || {
        let svc = alice.service("web");
        let mut at: Vec<String> = svc["instances"]
            .as_array()?
            .iter()
            .filter(|r| r["state"] == "running")
            .filter_map(|r| r["address"].as_str().map(str::to_owned))
            .collect();
        at.sort();
        (at.len() == 2).then_some(at)
    });
    let vip = alice.service("web")["address"]
        .as_str()
        .unwrap_or_else(|| lab.fail("service web has no address"))
        .to_owned();
    assert!(
        vip.starts_with("10.251."),
        "{vip} is not from the default service range"
    );

    // By its bare name (the search line), over its address: each new connection goes to a
    // replica, and both get some of 20.
    let out = client(
        &lab,
        alice,
        &format!(
            "URL=http://web/; {CALLS}; nslookup web.svc.cloudos; nslookup tasks.web.svc.cloudos; \
             nslookup printer.lan.test; nslookup nothing.svc.cloudos || true"
        ),
    );
    let served: Vec<&str> = out
        .lines()
        .filter(|l| l.parse::<ipnet::Ipv4Net>().is_ok())
        .collect();
    assert_eq!(served.len(), 20, "not every call was answered:\n{out}");
    for replica in &replicas {
        assert!(
            served.iter().any(|p| p.starts_with(&format!("{replica}/"))),
            "replica {replica} got none of 20 calls to the service:\n{out}"
        );
    }
    assert_eq!(looked_up(&out, "web.svc.cloudos"), [vip.as_str()], "{out}");
    assert_eq!(looked_up(&out, "tasks.web.svc.cloudos"), replicas, "{out}");
    // Not the node's to answer: forwarded to the LAN's resolver as it came.
    assert_eq!(looked_up(&out, "printer.lan.test"), ["10.77.0.99"], "{out}");
    assert!(
        out.contains("NXDOMAIN"),
        "an unknown service has a name:\n{out}"
    );

    // Scaled down: the replica that goes leaves the rotation before it is stopped, so no
    // call fails and every one reaches the replica that stays.
    alice.ok(&["scale", "web", "1"]);
    let stays: String = alice.wait("one replica left", Duration::from_secs(30), || {
        let svc = alice.service("web");
        let instances = svc["instances"].as_array()?;
        (instances.len() == 1 && instances[0]["state"] == "running")
            .then(|| instances[0]["address"].as_str().map(str::to_owned))
            .flatten()
    });
    let out = client(&lab, alice, &format!("URL=http://{vip}/; {CALLS}"));
    let served: Vec<&str> = out.lines().collect();
    assert_eq!(served.len(), 20, "{out}");
    assert!(
        served.iter().all(|p| p.starts_with(&format!("{stays}/"))),
        "a call reached a replica that is gone:\n{out}"
    );

    // None left: the service's address is unreachable at once, not sent on to the LAN.
    alice.ok(&["scale", "web", "0"]);
    alice.wait("no replica left", Duration::from_secs(30), || {
        alice.service("web")["instances"]
            .as_array()
            .is_some_and(|i| i.is_empty())
            .then_some(())
    });
    // So is an address of the container range that no node's subnet holds. (Two seconds
    // apart: the kernel sends a host at most one "unreachable" a second, and a refused
    // call waits for the next retry.)
    let out = client(
        &lab,
        alice,
        &format!(
            "timeout 5 wget -q -O - http://{vip}/ 2>&1; echo exit=$?; sleep 2; \
             timeout 5 wget -q -O - http://10.250.200.9/ 2>&1; echo exit=$?"
        ),
    );
    let refused: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("No route to host"))
        .collect();
    if refused.len() != 2 {
        lab.fail(&format!(
            "a service without replicas, or a subnet nobody has, did not refuse at once:\n{out}"
        ));
    }
}

/// The page each `checked` replica serves is its address; only a replica whose address
/// ends in an even number has a `/healthz` to pass its check with. Two fresh replicas on
/// one node get two consecutive addresses: one of each.
const CHECKED: &str = "mkdir -p /tmp/www && A=$(ip -4 -o addr show eth0 | awk '{print $4}') && \
                       echo $A > /tmp/www/index.html && \
                       case ${A%/*} in *[02468]) echo ok > /tmp/www/healthz;; esac && \
                       exec httpd -f -p 80 -h /tmp/www";

/// A health check of `GET /healthz` on port 80 every second: two failures in a row make a
/// replica unhealthy.
const CHECK: [&str; 8] = [
    "--health-http",
    "80/healthz",
    "--health-interval",
    "1s",
    "--health-timeout",
    "1s",
    "--health-retries",
    "2",
];

#[test]
fn a_replica_that_fails_its_health_check_gets_no_connections_and_is_restarted() {
    let Some(lab) = Lab::new() else { return };
    let lab_node = one_node(&lab, &[]);
    let alice = &lab_node.cluster.alice;
    deploy_web(alice, &[&["--replicas", "2"][..], &CHECK].concat(), CHECKED);
    // The even one passes and serves; the odd one never passes: its node stops it after
    // two failed probes, starts it again, and it fails again.
    let (healthy, sick) = alice.wait(
        "one healthy replica, one restarted",
        Duration::from_secs(90),
        || {
            let svc = alice.service("web");
            let instances = svc["instances"].as_array()?.clone();
            let healthy = instances.iter().find(|r| r["health"] == "healthy")?;
            let sick = instances.iter().find(|r| r["id"] != healthy["id"])?;
            (sick["restarts"].as_u64()? >= 1).then(|| (healthy.clone(), sick.clone()))
        },
    );
    let reason = sick["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("health check failed"), "{sick}");
    assert_ne!(sick["health"], "healthy", "{sick}");
    let table = alice.ok(&["ps"]);
    assert!(table.contains("running (healthy)"), "{table}");
    // Every call to the service reaches the healthy replica: the other is never in the
    // rotation, whether starting, unhealthy or stopped.
    let address = healthy["address"].as_str().unwrap_or_default().to_owned();
    let vip = alice.service("web")["address"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let out = client(&lab, alice, &format!("URL=http://{vip}/; {CALLS}"));
    let served: Vec<&str> = out.lines().collect();
    assert_eq!(served.len(), 20, "{out}");
    assert!(
        served.iter().all(|p| p.starts_with(&format!("{address}/"))),
        "a call reached the replica that fails its check:\n{out}"
    );
}

/// `--health-cmd` runs inside the container, as its user and with no network of its own
/// needed: the replica is healthy while its command passes, and once the command fails
/// twice the replica is restarted, the command's exit code and output its reason.
#[test]
fn a_health_command_runs_inside_the_container_and_a_failing_one_restarts_it() {
    let Some(lab) = Lab::new() else { return };
    let lab_node = one_node(&lab, &[]);
    let alice = &lab_node.cluster.alice;
    // Ready for three seconds (only its user can write /tmp/ready: 0700), then not.
    let script = "mkdir -m 700 /tmp/me && touch /tmp/me/ready && sleep 3 && \
                  rm /tmp/me/ready && sleep 100000";
    // CHECK's times: every second, two failures in a row.
    let check = "test \"$(id -u)\" = 1234 && test -f /tmp/me/ready || { echo not ready as $(id -u); exit 3; }";
    let mut args = vec!["deploy", "db", "--network", "none", "--user", "1234"];
    args.extend_from_slice(&["--health-cmd", check]);
    args.extend_from_slice(&CHECK[2..]);
    args.extend_from_slice(&[BUSYBOX, "--", "sh", "-c", script]);
    alice.ok(&args);
    alice.wait("the replica healthy", Duration::from_secs(60), || {
        (alice.service("db")["instances"][0]["health"] == "healthy").then_some(())
    });
    let restarted = alice.wait("the replica restarted", Duration::from_secs(60), || {
        let r = alice.service("db")["instances"][0].clone();
        (r["restarts"].as_u64()? >= 1).then_some(r)
    });
    let reason = restarted["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("health check failed") && reason.contains("exit code 3"),
        "{restarted}"
    );
    assert!(reason.contains("not ready as 1234"), "{restarted}");
}

/// Pushes `lab/web:1`, `:2` and `:3` to the lab's registry: busybox with a page under
/// `/www` that says its version. Version 3 is a broken release: it has no `/healthz`.
fn push_web(lab: &Lab) {
    use cloudos_tests::registry::{host_busybox, Image, Registry};
    let in_net = |program: &str| lab.net.command(program);
    for version in 1..=3 {
        let page = format!("v{version}\n");
        let mut files: Vec<(&str, &[u8])> = vec![("www/index.html", page.as_bytes())];
        if version != 3 {
            files.push(("www/healthz", b"ok\n"));
        }
        let image = Image::busybox("amd64", &host_busybox(), &files).expect("web image");
        Registry::push_to(&in_net, REGISTRY, "lab/web", &version.to_string(), &image)
            .unwrap_or_else(|e| lab.fail(&format!("pushing web:{version}: {e}")));
    }
}

/// `cloudos deploy web FLAGS… lab/web:VERSION`, serving `/www` with [`CHECK`], whatever
/// its exit.
fn deploy_version(
    alice: &cloudos_tests::admin::Admin<'_>,
    version: u32,
    flags: &[&str],
) -> std::process::Output {
    let image = format!("{REGISTRY}/lab/web:{version}");
    let mut args = vec!["deploy", "web"];
    args.extend_from_slice(&CHECK);
    args.extend_from_slice(flags);
    args.extend_from_slice(&[&image, "--", "httpd", "-f", "-p", "80", "-h", "/www"]);
    alice.run(&args)
}

/// Starts a client task on the bridge that calls `http://VIP/` one call after another,
/// each on a new connection, printing each page or `failed`, until cancelled; returns its
/// id once it has printed `first`.
fn start_caller(alice: &cloudos_tests::admin::Admin<'_>, vip: &str, first: &str) -> String {
    let client = alice.run_task(&[
        "--network",
        "bridge",
        BUSYBOX,
        "--",
        "sh",
        "-c",
        &format!(
            "while true; do timeout 5 wget -q -O - http://{vip}/ || echo failed; sleep 0.1; done"
        ),
    ]);
    alice.wait(
        "the client calling the service",
        Duration::from_secs(60),
        || alice.ok(&["logs", &client]).contains(first).then_some(()),
    );
    client
}

/// Cancels a [`start_caller`] client: the answers it printed, and its whole log.
fn stop_caller(alice: &cloudos_tests::admin::Admin<'_>, client: &str) -> (Vec<String>, String) {
    alice.ok(&["cancel", client]);
    let logs = alice.ok(&["logs", client]);
    let answers = logs
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    (answers, logs)
}

/// Issue 21: `cloudos deploy` of a new image on a service with two replicas replaces them
/// one at a time while a client calls the service all along: not one call fails, and the
/// answers go from v1 to v2. A broken v3 (its check never passes) never gets a call, and
/// the update goes back to v2 by itself; `history` says why; `rollback` goes to v1.
#[test]
fn a_rolling_update_serves_throughout_and_a_broken_release_rolls_back_by_itself() {
    let Some(lab) = Lab::new() else { return };
    let lab_node = one_node(&lab, &[]);
    push_web(&lab);
    let alice = &lab_node.cluster.alice;
    let deploy = |version: u32, wait: bool| {
        let flags = ["--replicas", "2", "--update-monitor", "2s", "--wait"];
        deploy_version(alice, version, &flags[..if wait { 5 } else { 4 }])
    };
    let first = deploy(1, false);
    assert!(first.status.success(), "{first:?}");
    alice.wait("two healthy v1 replicas", Duration::from_secs(90), || {
        let svc = alice.service("web");
        let healthy = svc["instances"]
            .as_array()?
            .iter()
            .filter(|r| r["health"] == "healthy")
            .count();
        (healthy == 2).then_some(())
    });
    let vip = alice.service("web")["address"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let client = start_caller(alice, &vip, "v1");

    let update = deploy(2, true);
    let said = String::from_utf8_lossy(&update.stderr);
    assert!(update.status.success(), "the update failed: {said}");
    assert!(
        said.contains("web runs revision 2 on all 2 replicas"),
        "{said}"
    );
    let svc = alice.service("web");
    let images: Vec<&str> = svc["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["spec"]["image"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let v2 = format!("{REGISTRY}/lab/web:2");
    assert_eq!(images, [v2.as_str(), v2.as_str()], "{svc}");

    // v3 never passes its check: the update stops and goes back to v2 by itself.
    let broken = deploy(3, true);
    let said = String::from_utf8_lossy(&broken.stderr);
    assert!(!broken.status.success(), "a broken release updated: {said}");
    assert!(said.contains("failed and was rolled back"), "{said}");
    assert!(
        said.contains("of revision 3: ") && said.contains("health check"),
        "{said}"
    );
    let svc = alice.service("web");
    assert_eq!(svc["revision"], 4, "{svc}");
    assert_eq!(
        svc["spec"]["image"],
        format!("{REGISTRY}/lab/web:2"),
        "{svc}"
    );
    assert!(svc["update"].is_null(), "{svc}");
    let history = alice.ok(&["history", "web"]);
    assert!(history.contains("deploy; failed: replica"), "{history}");
    assert!(
        history.contains("automatic rollback to revision 2"),
        "{history}"
    );

    // Every call was answered, first by v1, then by v2, never by the broken v3.
    let (answers, logs) = stop_caller(alice, &client);
    let count = |page: &str| answers.iter().filter(|a| *a == page).count();
    assert_eq!(
        count("failed"),
        0,
        "calls failed during the update:\n{logs}"
    );
    assert_eq!(count("v3"), 0, "the broken release got calls:\n{logs}");
    assert!(count("v1") > 0 && count("v2") > 0, "{logs}");
    assert_eq!(answers.last().map(String::as_str), Some("v2"), "{logs}");
    eprintln!(
        "{} calls during the update and the rollback: {} by v1, {} by v2, none failed",
        answers.len(),
        count("v1"),
        count("v2")
    );

    // Back to the last good revision before 2: v1.
    let back = alice.run(&["rollback", "web", "--wait"]);
    let said = String::from_utf8_lossy(&back.stderr);
    assert!(back.status.success(), "{said}");
    let svc = alice.service("web");
    assert_eq!(svc["revision"], 5, "{svc}");
    assert_eq!(
        svc["spec"]["image"],
        format!("{REGISTRY}/lab/web:1"),
        "{svc}"
    );
}

/// `scripts/bench-update.sh`: a three-replica service with a check goes from v1 to v2 and
/// back, each a rolling update with the default policy (`deploy --wait`), next to the way
/// before updates: delete the service and deploy it again, until three replicas are healthy.
/// A client calls the service without a pause during each: how long each took and how
/// many calls failed.
#[test]
#[ignore = "benchmark: scripts/bench-update.sh"]
fn update_bench() {
    use std::time::Instant;
    let Some(lab) = Lab::new() else { return };
    let runs = cloudos_tests::bench::runs(3);
    let lab_node = one_node(&lab, &[]);
    push_web(&lab);
    let alice = &lab_node.cluster.alice;
    let deploy = |version: u32, wait: bool| {
        let flags = ["--replicas", "3", "--wait"];
        let out = deploy_version(alice, version, &flags[..if wait { 3 } else { 2 }]);
        if !out.status.success() {
            lab.fail(&format!("the deploy of v{version} failed: {out:?}"));
        }
    };
    let healthy = |n: usize| {
        alice.wait("three healthy replicas", Duration::from_secs(120), || {
            let svc = alice.service("web");
            let up = svc["instances"]
                .as_array()?
                .iter()
                .filter(|r| r["health"] == "healthy")
                .count();
            (up == n).then_some(())
        })
    };
    deploy(1, false);
    healthy(3);
    let vip = || {
        alice.service("web")["address"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let failed = |answers: &[String]| answers.iter().filter(|a| *a == "failed").count();
    let (mut rolling, mut rolling_failed, mut rolling_calls) = (Vec::new(), 0, 0);
    let (mut again, mut again_failed, mut again_calls) = (Vec::new(), 0, 0);
    let mut version = 1;
    for _ in 0..runs {
        version = 3 - version;
        let client = start_caller(alice, &vip(), &format!("v{}", 3 - version));
        let started = Instant::now();
        deploy(version, true);
        rolling.push(started.elapsed());
        let (answers, _) = stop_caller(alice, &client);
        rolling_failed += failed(&answers);
        rolling_calls += answers.len();

        version = 3 - version;
        let client = start_caller(alice, &vip(), &format!("v{}", 3 - version));
        let started = Instant::now();
        alice.ok(&["delete", "web"]);
        deploy(version, false);
        healthy(3);
        again.push(started.elapsed());
        // Calls go on until the new replicas answer.
        alice.wait("the client answered again", Duration::from_secs(60), || {
            let logs = alice.ok(&["logs", &client]);
            logs.lines()
                .last()
                .is_some_and(|l| l.trim() == format!("v{version}"))
                .then_some(())
        });
        let (answers, _) = stop_caller(alice, &client);
        again_failed += failed(&answers);
        again_calls += answers.len();
    }
    let (r, a) = (
        cloudos_tests::bench::median(&mut rolling),
        cloudos_tests::bench::median(&mut again),
    );
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    println!("BENCH-TABLE-BEGIN");
    println!(
        "| 3 replicas with a check (1 s interval), {runs} runs each, netns processes | median time | failed calls |"
    );
    println!("|---|---|---|");
    println!(
        "| rolling update (`deploy --wait`: surge 1, unavailable 0, monitor 5 s) | {} | {rolling_failed} of {rolling_calls} |",
        secs(r)
    );
    println!(
        "| delete and deploy again, until 3 replicas are healthy | {} | {again_failed} of {again_calls} |",
        secs(a)
    );
    println!("BENCH-TABLE-END");
}

/// Polls `f` every 10 ms (a timing's resolution; `Lab::wait_for` polls every 200 ms) for
/// up to 30 s.
fn tight<T>(lab: &Lab, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if std::time::Instant::now() > deadline {
            lab.fail(&format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The addresses node `host`'s DNS (on its bridge's `gateway`) gives for
/// `tasks.web.svc.cloudos`: the replicas in its rotation.
fn node_rotation(host: &cloudos_tests::NetHost, gateway: &str) -> Option<Vec<String>> {
    let out = host
        .command("/bin/busybox")
        .args(["nslookup", "tasks.web.svc.cloudos", gateway])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status
        .success()
        .then(|| looked_up(&text, "tasks.web.svc.cloudos"))
}

/// `scripts/bench-network.sh`: how long a replica whose container dies takes to leave the
/// rotation of its node (the node's DNS and NAT table change together, from one service
/// table), next to how long the master takes to record the exit, in the same runs. A
/// replica serves on port 80 and dies when its CGI `/cgi-bin/die` is called; its node
/// restarts it after its backoff (0.5 s and more), and it comes back before the next run.
#[test]
#[ignore = "benchmark: scripts/bench-network.sh"]
fn rotation_bench() {
    use std::time::Instant;
    let Some(lab) = Lab::new() else { return };
    let runs = cloudos_tests::bench::runs(5);
    let lab_node = one_node(&lab, &[]);
    let (alice, h3) = (&lab_node.cluster.alice, &lab_node.host);
    let gateway = cloudos_cluster::subnets::gateway(&subnet(&lab, alice, "node-3")).to_string();
    // A CGI script that ends the replica: its shell (PID 1 of the container) leaves on
    // SIGTERM through its trap, at once (it waits in `wait`, not in `sleep`).
    let mortal = "mkdir -p /www/cgi-bin && echo up > /www/index.html \
                  && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\nkill -TERM 1\\n' \
                  > /www/cgi-bin/die && chmod +x /www/cgi-bin/die && httpd -p 80 -h /www \
                  && trap 'exit 1' TERM && while :; do sleep 1000 & wait; done";
    deploy_web(alice, &["--replicas", "2"], mortal);
    let mut left = Vec::new();
    let mut recorded = Vec::new();
    for _ in 0..runs {
        let rotation = lab.wait_for(
            "both replicas in the rotation",
            Duration::from_secs(60),
            || node_rotation(h3, &gateway).filter(|r| r.len() == 2),
        );
        let victim = rotation[0].clone();
        let started = Instant::now();
        let killed = h3
            .command("/bin/busybox")
            .args(["wget", "-q", "-O", "/dev/null"])
            .arg(format!("http://{victim}/cgi-bin/die"))
            .output();
        if killed.is_err() {
            lab.fail(&format!("cannot call the CGI of {victim}"));
        }
        let (out_of_rotation, in_the_book) = std::thread::scope(|s| {
            let master = s.spawn(|| {
                tight(&lab, "the master to record the exit", || {
                    let svc = alice.service("web");
                    let held = svc["instances"]
                        .as_array()?
                        .iter()
                        .any(|r| r["address"].as_str() == Some(victim.as_str()));
                    (!held).then(|| started.elapsed())
                })
            });
            let node = tight(&lab, "the replica to leave the rotation", || {
                node_rotation(h3, &gateway)
                    .filter(|r| !r.contains(&victim))
                    .map(|_| started.elapsed())
            });
            (
                node,
                master
                    .join()
                    .unwrap_or_else(|_| lab.fail("the master's poll failed")),
            )
        });
        left.push(out_of_rotation);
        recorded.push(in_the_book);
    }
    let (l, r) = (
        cloudos_tests::bench::median(&mut left),
        cloudos_tests::bench::median(&mut recorded),
    );
    let ms = |d: Duration| format!("{} ms", d.as_millis());
    println!("BENCH-TABLE-BEGIN");
    println!("| a replica's container dies, {runs} runs, netns processes | median |");
    println!("|---|---|");
    println!(
        "| → the master records the exit (polled with `cloudos ps`) | {} |",
        ms(r)
    );
    println!(
        "| → out of its node's rotation (DNS and NAT table; polled with `nslookup`) | {} |",
        ms(l)
    );
    println!("BENCH-TABLE-END");
}

/// Connections per second to `to` from inside the namespace at `netns`, one after another
/// for `secs` seconds: connect, ask for `/` over HTTP/1.0, read the answer to its end.
fn connection_rate(netns: &std::path::Path, to: std::net::SocketAddr, secs: u64) -> f64 {
    use std::io::{Read, Write};
    cloudos_containernet::netns::within(netns, move || {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let mut done = 0u64;
            while started.elapsed() < Duration::from_secs(secs) {
                let call = || -> std::io::Result<()> {
                    let mut stream =
                        std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
                    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
                    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
                    let mut answer = Vec::new();
                    stream.read_to_end(&mut answer)?;
                    if answer.starts_with(b"HTTP/1.") {
                        Ok(())
                    } else {
                        Err(std::io::Error::other("not an HTTP answer"))
                    }
                };
                call().map_err(|e| cloudos_containernet::NetError::Thread(format!("{to}: {e}")))?;
                done += 1;
            }
            Ok(done as f64 / started.elapsed().as_secs_f64())
        })
    })
    .unwrap_or_else(|e| panic!("connections to {to}: {e}"))
}

/// `scripts/bench-network.sh`: connections per second from the LAN to a container through
/// its node's published port (DNAT, conntrack) against straight to the container's own
/// address (routed through the node, no NAT), alternating, in the same run. The server is
/// busybox's httpd, which forks for each connection: what the two differ by is the node's
/// translation.
#[test]
#[ignore = "benchmark: scripts/bench-network.sh"]
fn published_port_bench() {
    let Some(lab) = Lab::new() else { return };
    let runs = cloudos_tests::bench::runs(5);
    let lab_node = one_node(&lab, &[]);
    let alice = &lab_node.cluster.alice;
    deploy_web(alice, &["--publish", "8080:80"], SERVE);
    let container: std::net::Ipv4Addr =
        lab.wait_for("the replica to run", Duration::from_secs(60), || {
            let svc = alice.service("web");
            svc["instances"][0]["address"].as_str()?.parse().ok()
        });
    // The LAN reaches the node's container subnet through the node, as a router would.
    let subnet = subnet(&lab, alice, "node-3").to_string();
    lab.net
        .ip(&["route", "add", &subnet, "via", "10.77.0.3"])
        .unwrap_or_else(|e| lab.fail(&format!("a route to {subnet}: {e}")));
    let laptop = std::path::PathBuf::from(format!("/run/netns/{}", lab.net.name()));
    let published: std::net::SocketAddr = "10.77.0.3:8080".parse().unwrap();
    let direct = std::net::SocketAddr::from((container, 80));
    // Both answer before the clock runs.
    lab.wait_for(
        "the published port to answer",
        Duration::from_secs(30),
        || fetch(&lab, "http://10.77.0.3:8080/").filter(|p| !p.is_empty()),
    );
    let (mut through, mut straight) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        straight.push(connection_rate(&laptop, direct, 3));
        through.push(connection_rate(&laptop, published, 3));
    }
    let (p, d) = (
        cloudos_tests::bench::median(&mut through),
        cloudos_tests::bench::median(&mut straight),
    );
    let ratio = p / d * 100.0;
    let verdict = if ratio >= 80.0 { "met" } else { "missed" };
    println!("BENCH-TABLE-BEGIN");
    println!("| connections per second from the LAN, {runs} runs of 3 s each, netns processes | median |");
    println!("|---|---|");
    println!("| straight to the container's address (routed, no NAT) | {d:.0}/s |");
    println!("| through the node's published port (DNAT) | {p:.0}/s |");
    println!("| published against direct (target ≥ 80 %) | {ratio:.0} %: {verdict} |");
    println!("BENCH-TABLE-END");
}
