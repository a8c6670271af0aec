//! The dashboard's pages, rendered on the master from its live state (maud: HTML checked
//! at compile time, every value escaped). A page shows a user only the buttons their role
//! may use; the API checks again whatever a page sends.

use cloudos_cluster::api::{ApiKeyInfo, AuditEntry, NodeInfo, NodeState, TokenInfo, UserInfo};
use cloudos_cluster::workload::{ServiceInfo, TaskInfo, TaskState};
use cloudos_cluster::Role;
use maud::{html, Markup, DOCTYPE};
use time::OffsetDateTime;

/// Who looks at a page: the user, their role and their session's CSRF token.
pub struct Viewer<'a> {
    pub name: &'a str,
    pub role: Role,
    pub csrf: &'a str,
}

impl Viewer<'_> {
    fn may(&self, needed: Role) -> bool {
        self.role.grants(needed)
    }
}

/// The pages, for the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Overview,
    Nodes,
    Workloads,
    Tokens,
    People,
    Upgrades,
    Other,
}

fn layout(
    viewer: &Viewer<'_>,
    page: Page,
    title: &str,
    refresh: Option<u32>,
    body: Markup,
) -> Markup {
    let link = |p: Page, href: &str, text: &str| {
        html! {
            @if p == page { a href=(href) aria-current="page" { (text) } }
            @else { a href=(href) { (text) } }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf-token" content=(viewer.csrf);
                title { (title) " · CloudOS" }
                link rel="stylesheet" href="/ui/app.css";
                script src="/ui/app.js" defer {}
            }
            body {
                header {
                    span.brand { "CloudOS" }
                    nav aria-label="pages" {
                        (link(Page::Overview, "/", "Overview"))
                        (link(Page::Nodes, "/ui/nodes", "Nodes"))
                        (link(Page::Workloads, "/ui/workloads", "Tasks and services"))
                        (link(Page::Upgrades, "/ui/upgrades", "Upgrades"))
                        @if viewer.may(Role::Admin) {
                            (link(Page::Tokens, "/ui/tokens", "Tokens"))
                            (link(Page::People, "/ui/people", "People"))
                        }
                    }
                    span.who { (viewer.name) " (" (viewer.role) ")" }
                    form.inline method="post" action="/ui/logout" {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        button type="submit" { "Log out" }
                    }
                }
                @if let Some(seconds) = refresh {
                    main data-refresh=(seconds) { h1 { (title) } p #status role="status" {} (body) }
                } @else {
                    main { h1 { (title) } p #status role="status" {} (body) }
                }
            }
        }
    }
}

fn state_class(text: &str) -> String {
    text.replace(['_', ' '], "").to_ascii_lowercase()
}

fn node_state(n: &NodeInfo) -> &'static str {
    match (n.state, n.unschedulable) {
        (NodeState::Ready, false) => "Ready",
        (NodeState::Ready, true) => "Ready, cordoned",
        (_, true) => "NotReady, cordoned",
        _ => "NotReady",
    }
}

fn ago(then: OffsetDateTime, now: OffsetDateTime) -> String {
    let secs = (now - then).whole_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// The cluster at a glance: nodes by state, capacity used, what waits and why, recent
/// failures.
pub fn overview(
    viewer: &Viewer<'_>,
    cluster: &str,
    nodes: &[NodeInfo],
    tasks: &[TaskInfo],
    now: OffsetDateTime,
) -> Markup {
    let machines: Vec<&NodeInfo> = nodes.iter().filter(|n| !n.role.is_user()).collect();
    let ready = machines
        .iter()
        .filter(|n| n.state == NodeState::Ready)
        .count();
    let (cpu, mem_used, mem_total) =
        machines
            .iter()
            .filter_map(|n| n.telemetry.as_ref())
            .fold((0.0, 0, 0), |(c, u, t), tel| {
                // A busy fraction of the node's CPUs, as cores.
                let cores = tel.cpu_usage * tel.capacity.cpu_millicores as f64 / 1000.0;
                (c + cores, u + tel.mem_used_bytes, t + tel.mem_total_bytes)
            });
    let waiting: Vec<&TaskInfo> = tasks
        .iter()
        .filter(|t| t.state == TaskState::Queued)
        .collect();
    let mut failures: Vec<&TaskInfo> = tasks
        .iter()
        .filter(|t| matches!(t.state, TaskState::Failed | TaskState::Lost))
        .collect();
    failures.sort_by_key(|t| std::cmp::Reverse(t.finished_at));
    failures.truncate(10);
    let body = html! {
        div.cards {
            div.card { div.n #nodes-ready { (ready) " / " (machines.len()) } div { "nodes Ready" } }
            div.card { div.n { (machines.len() - ready) } div { "nodes NotReady" } }
            div.card { div.n { (format!("{cpu:.2}")) } div { "CPU cores busy" } }
            div.card { div.n { (gib(mem_used)) } div { "of " (gib(mem_total)) " memory used" } }
            div.card { div.n { (tasks.iter().filter(|t| t.state == TaskState::Running).count()) } div { "running" } }
            div.card { div.n { (waiting.len()) } div { "waiting" } }
        }
        h2 { "Waiting, and why" }
        @if waiting.is_empty() { p.muted { "Nothing waits." } }
        @else {
            table { thead { tr { th { "Task" } th { "Image" } th { "Why" } } }
                tbody { @for t in &waiting {
                    tr { td { a href={"/ui/tasks/" (t.id)} { (t.id) } } td { (t.spec.image) }
                         td { (t.reason.as_deref().unwrap_or("")) } }
                } }
            }
        }
        h2 { "Recent failures" }
        @if failures.is_empty() { p.muted { "None." } }
        @else {
            table { thead { tr { th { "Task" } th { "State" } th { "When" } th { "Why" } } }
                tbody { @for t in &failures {
                    tr { td { a href={"/ui/tasks/" (t.id)} { (t.id) } }
                         td class=(state_class(&t.state.to_string())) { (t.state) }
                         td { (t.finished_at.map(|f| ago(f, now)).unwrap_or_default()) }
                         td { (t.reason.as_deref().unwrap_or("")) } }
                } }
            }
        }
    };
    layout(viewer, Page::Overview, cluster, Some(5), body)
}

pub fn nodes(viewer: &Viewer<'_>, nodes: &[NodeInfo], now: OffsetDateTime) -> Markup {
    let body = html! {
        table #nodes {
            thead { tr { th { "Name" } th { "Role" } th { "State" } th { "Address" } th { "Arch" }
                th { "CPU" } th { "Memory" } th { "Load" } th { "Seen" } th { "Labels" }
                @if viewer.may(Role::Admin) { th { "Actions" } } } }
            tbody { @for n in nodes.iter().filter(|n| !n.role.is_user()) {
                tr data-node=(n.name) {
                    td { a href={"/ui/nodes/" (n.name)} { (n.name) } } td { (n.role) }
                    td class=(state_class(node_state(n))) { (node_state(n)) }
                    td { (n.address) } td { (n.arch) }
                    @if let Some(t) = &n.telemetry {
                        td { (format!("{:.0} %", t.cpu_usage * 100.0)) }
                        td { (gib(t.mem_used_bytes)) " / " (gib(t.mem_total_bytes)) }
                        td { (format!("{:.2}", t.load1)) }
                    } @else { td {} td {} td {} }
                    td { (ago(n.last_seen, now)) }
                    td { @for (k, v) in &n.labels { span { (k) "=" (v) " " } } }
                    @if viewer.may(Role::Admin) {
                        td {
                            @if n.unschedulable {
                                button data-path={"/v1/nodes/" (n.name) "/uncordon"} { "Uncordon" }
                            } @else {
                                button data-path={"/v1/nodes/" (n.name) "/cordon"} { "Cordon" }
                            }
                        }
                    }
                }
            } }
        }
    };
    layout(viewer, Page::Nodes, "Nodes", Some(5), body)
}

/// A line chart of `points` (`(unix seconds, value)`, values within `0..=max`) as
/// inline SVG: no script, and the page's CSP allows it.
fn chart(id: &str, title: &str, points: &[(i64, f64)], max: f64, unit: &str) -> Markup {
    const W: f64 = 600.0;
    const H: f64 = 120.0;
    let (first, last) = match (points.first(), points.last()) {
        (Some(f), Some(l)) => (f.0, l.0.max(f.0 + 1)),
        _ => (0, 1),
    };
    let span = (last - first) as f64;
    let line: Vec<String> = points
        .iter()
        .map(|(t, v)| {
            let x = (t - first) as f64 / span * W;
            let y = H - (v / max).clamp(0.0, 1.0) * H;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let latest = points.last().map(|p| p.1).unwrap_or_default();
    html! {
        figure.chart id=(id) {
            figcaption { (title) ": " strong { (format!("{latest:.1}")) " " (unit) } " now" }
            @if points.is_empty() {
                p.muted { "No data yet: a point is taken every minute." }
            } @else {
                svg viewBox={"0 0 " (W) " " (H)} width="100%" height="120" role="img"
                    aria-label=(format!("{title}, {} points", points.len())) {
                    rect x="0" y="0" width=(W) height=(H) fill="none" stroke="currentColor" stroke-opacity="0.2" {}
                    polyline fill="none" stroke="currentColor" stroke-width="2" points=(line.join(" ")) {}
                }
            }
        }
    }
}

/// One node: what it is, and its measurements over `range`.
pub fn node(
    viewer: &Viewer<'_>,
    n: &NodeInfo,
    history: &cloudos_cluster::api::NodeHistory,
    range: &str,
    now: OffsetDateTime,
) -> Markup {
    let cpu: Vec<(i64, f64)> = history
        .points
        .iter()
        .map(|p| (p.at.unix_timestamp(), p.cpu_usage * 100.0))
        .collect();
    let mem: Vec<(i64, f64)> = history
        .points
        .iter()
        .filter(|p| p.mem_total_bytes > 0)
        .map(|p| {
            (
                p.at.unix_timestamp(),
                p.mem_used_bytes as f64 / p.mem_total_bytes as f64 * 100.0,
            )
        })
        .collect();
    let load: Vec<(i64, f64)> = history
        .points
        .iter()
        .map(|p| (p.at.unix_timestamp(), p.load1))
        .collect();
    let load_max = load.iter().map(|p| p.1).fold(1.0, f64::max);
    let net: Vec<(i64, f64)> = history
        .points
        .iter()
        .map(|p| {
            (
                p.at.unix_timestamp(),
                (p.net_rx_bytes_per_sec + p.net_tx_bytes_per_sec) / 1024.0,
            )
        })
        .collect();
    let net_max = net.iter().map(|p| p.1).fold(1.0, f64::max);
    let body = html! {
        table {
            tbody {
                tr { th { "State" } td class=(state_class(node_state(n))) { (node_state(n)) } }
                tr { th { "Role" } td { (n.role) } }
                tr { th { "Address" } td { (n.address) } }
                tr { th { "Arch" } td { (n.arch) } }
                @if let Some(t) = &n.telemetry {
                    tr { th { "Version" } td { (t.nodeos_version) } }
                    tr { th { "Kernel" } td { (t.kernel) } }
                    tr { th { "Clock" } td { (t.clock_skew_secs.map(|s| format!("{s:+.2} s from the master's")).unwrap_or_default()) } }
                }
                tr { th { "Seen" } td { (ago(n.last_seen, now)) " ago" } }
                tr { th { "Labels" } td { @for (k, v) in &n.labels { span { (k) "=" (v) " " } } } }
            }
        }
        nav aria-label="range" {
            @for (r, label) in [("1h", "last hour"), ("24h", "last day"), ("30d", "last month")] {
                @if r == range { a href={"?range=" (r)} aria-current="page" { (label) } }
                @else { a href={"?range=" (r)} { (label) } }
            }
        }
        (chart("cpu-chart", "CPU", &cpu, 100.0, "%"))
        (chart("memory-chart", "Memory", &mem, 100.0, "%"))
        (chart("load-chart", "Load", &load, load_max, ""))
        (chart("network-chart", "Network", &net, net_max, "KiB/s"))
    };
    layout(
        viewer,
        Page::Nodes,
        &format!("Node {}", n.name),
        Some(60),
        body,
    )
}

pub fn workloads(viewer: &Viewer<'_>, tasks: &[TaskInfo], services: &[ServiceInfo]) -> Markup {
    let operator = viewer.may(Role::Operator);
    let body = html! {
        @if operator {
            h2 { "Run a task" }
            form.inline data-api="task" data-path="/v1/tasks" data-then="task" {
                label for="image" { "Image" }
                input #image name="image" required placeholder="registry:5000/busybox:1" size="30";
                label for="command" { "Command" }
                input #command name="command" placeholder="echo hello" size="30";
                button type="submit" { "Run" }
            }
        }
        h2 { "Services" }
        table #services {
            thead { tr { th { "Name" } th { "Image" } th { "Replicas" } th { "Revision" }
                @if operator { th { "Actions" } } } }
            tbody { @for s in services {
                tr data-service=(s.name) {
                    td { (s.name) } td { (s.spec.image) }
                    td { (s.running) " / " (s.replicas) " running" }
                    td { (s.revision) }
                    @if operator {
                        td {
                            form.inline data-api="scale" data-path={"/v1/services/" (s.name) "/scale"} {
                                label for={"replicas-" (s.name)} { "Replicas" }
                                input id={"replicas-" (s.name)} name="replicas" type="number" min="0" max="1000" value=(s.replicas) size="4";
                                button type="submit" { "Scale" }
                            }
                            @if s.revision > 1 {
                                button data-path={"/v1/services/" (s.name) "/rollback"} data-body="{}" { "Roll back" }
                            }
                            button.danger data-method="DELETE" data-path={"/v1/services/" (s.name)}
                                data-confirm={"Delete service " (s.name) "?"} { "Delete" }
                        }
                    }
                }
            } }
        }
        h2 { "Tasks" }
        table #tasks {
            thead { tr { th { "Task" } th { "Image" } th { "State" } th { "Node" } th { "Why" }
                @if operator { th { "Actions" } } } }
            tbody { @for t in tasks.iter().filter(|t| t.service.is_none()) {
                tr data-task=(t.id) {
                    td { a href={"/ui/tasks/" (t.id)} { (t.id) } }
                    td { (t.spec.image) }
                    td class=(state_class(&t.state.to_string())) { (t.state) }
                    td { (t.node.as_deref().unwrap_or("")) }
                    td { (t.reason.as_deref().unwrap_or("")) }
                    @if operator {
                        td { @if !t.state.is_final() {
                            button.danger data-path={"/v1/tasks/" (t.id) "/cancel"} { "Cancel" }
                        } }
                    }
                }
            } }
        }
    };
    layout(viewer, Page::Workloads, "Tasks and services", Some(5), body)
}

pub fn task(viewer: &Viewer<'_>, t: &TaskInfo) -> Markup {
    let body = html! {
        table {
            tbody {
                tr { th { "Image" } td { (t.spec.image) } }
                tr { th { "Command" } td { code { (t.spec.command.join(" ")) } } }
                tr { th { "State" } td #task-state class=(state_class(&t.state.to_string())) { (t.state) } }
                tr { th { "Node" } td { (t.node.as_deref().unwrap_or("")) } }
                tr { th { "Why" } td { (t.reason.as_deref().unwrap_or("")) } }
                tr { th { "Exit code" } td { (t.exit_code.map(|c| c.to_string()).unwrap_or_default()) } }
            }
        }
        @if viewer.may(Role::Operator) && !t.state.is_final() {
            button.danger data-path={"/v1/tasks/" (t.id) "/cancel"} { "Cancel" }
        }
        h2 { "Logs" }
        pre.logs #logs data-task=(t.id) aria-live="polite" {}
    };
    layout(
        viewer,
        Page::Workloads,
        &format!("Task {}", t.id),
        None,
        body,
    )
}

/// `install_line`: the curl line for a compute token without the token, which the page
/// adds when one is made.
pub fn tokens(
    viewer: &Viewer<'_>,
    tokens: &[TokenInfo],
    install_line: &str,
    now: OffsetDateTime,
) -> Markup {
    let body = html! {
        h2 { "Create a token" }
        form.inline data-api="token" data-path="/v1/tokens" data-then="secret" {
            label for="role" { "Role" }
            select #role name="role" { option value="compute" { "compute" } option value="master" { "master" } }
            label for="ttl" { "Lifetime" } input #ttl name="ttl" value="24h" size="6";
            label for="uses" { "Uses" } input #uses name="uses" type="number" min="1" size="4";
            button type="submit" { "Create" }
        }
        div #secret hidden {
            p { "The token, shown only now. A machine with Linux and systemd joins with:" }
            p.secret #install-line { (install_line) code {} }
            button type="button" data-copy="install-line" { "Copy" }
        }
        h2 { "Tokens" }
        table #tokens {
            thead { tr { th { "Id" } th { "Role" } th { "Uses left" } th { "Expires" } th { "State" } th { "Description" } th { "Actions" } } }
            tbody { @for t in tokens {
                @let state = if t.revoked { "revoked" } else if t.expires_at.is_some_and(|e| e <= now) { "expired" } else { "active" };
                tr {
                    td { (t.id.as_str()) } td { (t.role) }
                    td { (t.uses_left.map(|u| u.to_string()).unwrap_or_else(|| "unlimited".into())) }
                    td { (t.expires_at.map(|e| e.to_string()).unwrap_or_else(|| "never".into())) }
                    td class=(state) { (state) } td { (t.description) }
                    td { @if state == "active" {
                        button.danger data-method="DELETE" data-path={"/v1/tokens/" (t.id.as_str())} { "Revoke" }
                    } }
                }
            } }
        }
    };
    layout(viewer, Page::Tokens, "Tokens", None, body)
}

pub fn people(
    viewer: &Viewer<'_>,
    users: &[UserInfo],
    keys: &[ApiKeyInfo],
    audit: &[AuditEntry],
    now: OffsetDateTime,
) -> Markup {
    let roles = [Role::Admin, Role::Operator, Role::Viewer];
    let body = html! {
        h2 { "Users" }
        form.inline data-api="user" data-path="/v1/users" data-then="secret" {
            label for="user-name" { "Name" } input #user-name name="name" required size="16";
            label for="user-role" { "Role" }
            select #user-role name="role" { @for r in roles { option value=(r) { (r) } } }
            button type="submit" { "Add" }
        }
        div #secret hidden { p { "Their one-use login token, shown only now:" } p.secret #new-secret { code {} }
            button type="button" data-copy="new-secret" { "Copy" } }
        table #users {
            thead { tr { th { "Name" } th { "Role" } th { "From" } th { "Since" } th { "Actions" } } }
            tbody { @for u in users {
                tr data-user=(u.name) {
                    td { (u.name) } td { (u.role) } td { (u.address) } td { (ago(u.joined_at, now)) }
                    td {
                        form.inline data-api="role" data-method="PUT" data-path={"/v1/users/" (u.name)} {
                            label for={"role-" (u.name)} { "Role" }
                            select id={"role-" (u.name)} name="role" { @for r in roles {
                                @if r == u.role { option value=(r) selected { (r) } } @else { option value=(r) { (r) } }
                            } }
                            button type="submit" { "Set" }
                        }
                        button.danger data-method="DELETE" data-path={"/v1/users/" (u.name)}
                            data-confirm={"Remove " (u.name) "? Their certificates stop working."} { "Remove" }
                    }
                }
            } }
        }
        h2 { "API keys" }
        form.inline data-api="apikey" data-path="/v1/apikeys" data-then="secret" {
            label for="key-name" { "Name" } input #key-name name="name" required size="16";
            label for="key-role" { "Role" }
            select #key-role name="role" { @for r in roles { option value=(r) { (r) } } }
            label for="key-ttl" { "Lifetime" } input #key-ttl name="ttl" value="30d" size="6";
            button type="submit" { "Create" }
        }
        table #keys {
            thead { tr { th { "Id" } th { "Name" } th { "Role" } th { "By" } th { "Expires" } th { "State" } th { "Actions" } } }
            tbody { @for k in keys {
                @let state = if k.revoked { "revoked" } else if k.expires_at <= now { "expired" } else { "active" };
                tr { td { (k.id) } td { (k.name) } td { (k.role) } td { (k.created_by) } td { (k.expires_at.to_string()) }
                     td class=(state) { (state) }
                     td { @if state == "active" {
                        button.danger data-method="DELETE" data-path={"/v1/apikeys/" (k.id)} { "Revoke" } } } }
            } }
        }
        h2 { "Audit log" }
        table #audit {
            thead { tr { th { "When" } th { "Who" } th { "Role" } th { "From" } th { "What" } th { "Result" } } }
            tbody { @for e in audit.iter().rev() {
                tr { td { (ago(e.at, now)) " ago" } td { (e.who) }
                     td { (e.role.map(|r| r.to_string()).unwrap_or_default()) } td { (e.from) }
                     td { code { (e.method) " " (e.path) } } td { (e.status) } }
            } }
        }
    };
    layout(viewer, Page::People, "People", None, body)
}

/// An enum's name as the API writes it (`running`, `draining`).
fn api_word<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Releases the master keeps, the rollout under way, and what each node runs; admins
/// start, resume and abort rollouts here.
pub fn upgrades(
    viewer: &Viewer<'_>,
    releases: &cloudos_cluster::api::ReleaseList,
    status: &cloudos_cluster::rollout::UpgradeStatus,
) -> Markup {
    let admin = viewer.may(Role::Admin);
    let body = html! {
        p { "This master runs " strong #running-version { (releases.running) } "." }
        h2 { "Releases kept" }
        @if releases.releases.is_empty() {
            p.muted { "None: add one with " code { "cloudos release add FILE" } "." }
        } @else {
            table #releases {
                thead { tr { th { "Version" } th { "Arch" } th { "Size" } th { "Signed by" }
                    @if admin { th { "Actions" } } } }
                tbody { @for r in &releases.releases {
                    tr {
                        td { (r.version) } td { (r.arch) } td { (format!("{:.1} MB", r.size as f64 / 1e6)) }
                        td { code { (r.key) } }
                        @if admin { td {
                            button data-path="/v1/rollout" data-body=(serde_json::json!({ "version": r.version }).to_string())
                                data-confirm={"Upgrade the cluster to " (r.version) ", a few nodes at a time?"} { "Upgrade to " (r.version) }
                        } }
                    }
                } }
            }
        }
        h2 { "Rollout" }
        @if let Some(rollout) = &status.rollout {
            p #rollout-phase { "To " strong { (rollout.request.version) } ": " span class=(api_word(&rollout.phase)) { (api_word(&rollout.phase)) }
              ", started by " (rollout.by) "." @if let Some(why) = &rollout.reason { " " (why) } }
            @if admin {
                button data-path="/v1/rollout/resume" data-body="{}" { "Resume" }
                " "
                button.danger data-path="/v1/rollout/abort" { "Abort" }
            }
            table #rollout-nodes {
                thead { tr { th { "Node" } th { "Step" } th { "From" } } }
                tbody { @for n in &rollout.nodes {
                    tr { td { (n.name) } td { (api_word(&n.step)) } td { (n.from.as_deref().unwrap_or("")) } }
                } }
            }
        } @else {
            p.muted { "No rollout has run." }
        }
        h2 { "What each node runs" }
        table #systems {
            thead { tr { th { "Node" } th { "Role" } th { "State" } th { "Version" } th { "Slot" } th { "Confirmed" } th { "Upgrade" } } }
            tbody { @for n in &status.nodes {
                tr { td { (n.name) } td { (n.role) } td { (n.state) }
                     td { (n.version.as_deref().unwrap_or("")) } td { (n.slot.as_deref().unwrap_or("")) }
                     td { (if n.confirmed { "yes" } else { "no" }) } td { (n.upgrade.as_deref().unwrap_or("")) } }
            } }
        }
    };
    layout(viewer, Page::Upgrades, "Upgrades", Some(10), body)
}

/// The login page: a name and password, or the one-time link `cloudos dashboard` opens.
pub fn login(token: &str, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Log in · CloudOS" }
                link rel="stylesheet" href="/ui/app.css";
            }
            body { main.login {
                h1 { "CloudOS" }
                @if let Some(error) = error { p.error role="alert" { (error) } }
                form method="post" action="/ui/login" {
                    input type="hidden" name="login" value=(token);
                    label for="name" { "Name" } input #name name="name" autocomplete="username" required;
                    label for="password" { "Password" }
                    input #password name="password" type="password" autocomplete="current-password" required;
                    p { button type="submit" { "Log in" } }
                }
                p.muted { "Or run " code { "cloudos dashboard" } " on a machine where you are logged in." }
                p.muted { "Set a password with " code { "cloudos user password" } "." }
            } }
        }
    }
}

/// An empty page that says why it cannot show more.
pub fn not_found(viewer: &Viewer<'_>, what: &str) -> Markup {
    layout(
        viewer,
        Page::Other,
        "Not found",
        None,
        html! { p { (what) } },
    )
}
