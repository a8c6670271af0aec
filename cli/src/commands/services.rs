//! `cloudos deploy|scale|rollback|history|delete`: services, and following an update
//! until every replica runs the new revision (or it was rolled back).

use std::time::{Duration, Instant};

use anyhow::bail;
use cloudos_cluster::client::ApiClient;
use cloudos_cluster::revision::{PolicyChange, Revision, ServiceDeployRequest, UpdatePolicy};
use cloudos_cluster::units::{format_bytes, format_cpu};
use cloudos_cluster::workload::{new_request_id, ServiceInfo, TaskState, WorkloadSpec};
use time::OffsetDateTime;

use super::workloads::submit;
use super::Ctx;
use crate::format;
use crate::table::{fields, Table};

/// How often `--wait` looks at the update.
const FOLLOW_POLL: Duration = Duration::from_secs(1);
/// `--wait` gives up after this (the update goes on).
const WAIT_LIMIT: Duration = Duration::from_secs(30 * 60);

/// What `cloudos deploy` asks, besides the spec.
pub struct Deploy {
    pub name: String,
    /// `None`: as the service has it (1 for a new one).
    pub replicas: Option<u32>,
    pub policy: PolicyChange,
    /// Follow the update until it ends.
    pub wait: bool,
}

/// `cloudos deploy`: makes the service, or starts its update to `spec`.
pub async fn deploy(ctx: &Ctx, deploy: Deploy, spec: WorkloadSpec) -> anyhow::Result<()> {
    cloudos_cluster::workload::validate_service_name(&deploy.name)?;
    spec.validate()?;
    UpdatePolicy::default().with(&deploy.policy).validate()?;
    let client = ctx.client().await?;
    let request = ServiceDeployRequest {
        spec,
        replicas: deploy.replicas,
        policy: deploy.policy,
        request_id: Some(new_request_id()?),
    };
    // A deploy sent again asks for the same spec: it changes nothing the second time.
    let service = submit("deploy", || client.deploy_service(&deploy.name, &request)).await?;
    ctx.print(&service, render_service)?;
    match (&service.update, deploy.wait) {
        (Some(update), true) => follow(&client, &service.name, update.to).await,
        _ => Ok(()),
    }
}

/// `cloudos rollback`: an update back to revision `to`, or to the previous good one.
pub async fn rollback(ctx: &Ctx, name: &str, to: Option<u32>, wait: bool) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let service = client.rollback_service(name, to).await?;
    ctx.print(&service, render_service)?;
    if wait {
        follow(&client, name, service.revision).await?;
    }
    Ok(())
}

/// `cloudos history`: the revisions a service keeps.
pub async fn history(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let service = ctx.client().await?.service(name).await?;
    let now = OffsetDateTime::now_utc();
    ctx.print(&service.revisions, |revisions| {
        render_history(revisions, service.revision, now)
    })
}

pub async fn scale(ctx: &Ctx, name: &str, replicas: u32) -> anyhow::Result<()> {
    let service = ctx.client().await?.scale_service(name, replicas).await?;
    ctx.print(&service, render_service)
}

pub async fn delete(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    ctx.client().await?.delete_service(name).await?;
    println!("service {name} deleted; its replicas are stopping");
    Ok(())
}

/// Says how the update to revision `target` goes (on stderr: stdout keeps the service
/// printed) until it ends; an error if it was rolled back or another change overtook it.
async fn follow(client: &ApiClient, name: &str, target: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT_LIMIT;
    let mut said = String::new();
    loop {
        let service = client.service(name).await?;
        let line = progress(&service);
        if line != said {
            eprintln!("{line}");
            said = line;
        }
        if service.update.is_none() {
            return outcome(&service, target);
        }
        if Instant::now() > deadline {
            bail!(
                "service {name} is still updating after {} min; `cloudos ps` shows where it is",
                WAIT_LIMIT.as_secs() / 60
            );
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// One line on an update: how many replicas run the revision it goes to.
fn progress(s: &ServiceInfo) -> String {
    let on = s
        .instances
        .iter()
        .filter(|t| t.revision == Some(s.revision))
        .filter(|t| t.state == TaskState::Running && t.leaving_since.is_none())
        .count();
    match &s.update {
        Some(u) if u.rollback => format!(
            "{}: rolling back from revision {} (to revision {}, an earlier spec): {on}/{} \
             replicas run it",
            s.name, u.from, u.to, s.replicas
        ),
        Some(u) => format!(
            "{}: updating from revision {} to {}: {on}/{} replicas run it",
            s.name, u.from, u.to, s.replicas
        ),
        None => format!(
            "{}: revision {}: {on}/{} replicas run it",
            s.name, s.revision, s.replicas
        ),
    }
}

/// How an update to `target` ended, once the service has none under way.
fn outcome(s: &ServiceInfo, target: u32) -> anyhow::Result<()> {
    let failed = s
        .revisions
        .iter()
        .find(|r| r.number == target)
        .and_then(|r| r.failed.as_deref());
    if let Some(why) = failed {
        bail!(
            "the update of {} to revision {target} failed and was rolled back: {why}; it runs \
             revision {} now",
            s.name,
            s.revision
        );
    }
    if s.revision != target {
        bail!(
            "service {} moved on to revision {} (another deploy or rollback) before revision \
             {target} ran everywhere",
            s.name,
            s.revision
        );
    }
    eprintln!(
        "service {} runs revision {target} on all {} replicas",
        s.name, s.replicas
    );
    Ok(())
}

pub fn render_service(s: &ServiceInfo) -> String {
    let mut rows = vec![
        ("service", s.name.clone()),
        ("image", s.spec.image.clone()),
        (
            "replicas",
            format!("{} ({} running)", s.replicas, s.running),
        ),
        (
            "resources",
            format!(
                "{} CPU, {} memory each",
                format_cpu(s.spec.resources.cpu_millicores),
                format_bytes(s.spec.resources.memory_bytes)
            ),
        ),
        ("revision", s.revision.to_string()),
    ];
    if let Some(u) = &s.update {
        let what = if u.rollback {
            "rolling back"
        } else {
            "updating"
        };
        rows.push((
            "update",
            format!(
                "{what} from revision {} (max surge {}, max unavailable {}, monitor {}s)",
                u.from, s.policy.max_surge, s.policy.max_unavailable, s.policy.monitor_secs
            ),
        ));
    }
    fields(&rows)
}

/// The revisions, oldest first; `*` marks the one the service runs.
pub fn render_history(revisions: &[Revision], current: u32, now: OffsetDateTime) -> String {
    let mut table = Table::new(&["REVISION", "AGE", "IMAGE", "CAUSE"]);
    for r in revisions {
        let mark = if r.number == current { " *" } else { "" };
        let cause = match &r.failed {
            Some(why) => format!("{}; failed: {why}", r.cause),
            None => r.cause.clone(),
        };
        table.row(vec![
            format!("{}{mark}", r.number),
            format::age(r.created_at, now),
            r.spec.image.clone(),
            cause,
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_cluster::revision::Update;
    use time::macros::datetime;

    fn revision(number: u32, image: &str, cause: &str, failed: Option<&str>) -> Revision {
        Revision {
            number,
            spec: WorkloadSpec::new(image),
            created_at: datetime!(2026-12-07 10:00 UTC),
            cause: cause.into(),
            failed: failed.map(str::to_owned),
        }
    }

    #[test]
    fn history_marks_the_current_revision_and_says_why_one_failed() {
        let revisions = [
            revision(1, "reg:5000/web:1", "created", None),
            revision(
                2,
                "reg:5000/web:2",
                "deploy",
                Some("replica web-r2 of revision 2: exited with code 1"),
            ),
            revision(
                3,
                "reg:5000/web:1",
                "automatic rollback to revision 1: …",
                None,
            ),
        ];
        let text = render_history(&revisions, 3, datetime!(2026-12-07 10:05 UTC));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("REVISION"), "{text}");
        assert!(
            lines[2].contains("deploy; failed: replica web-r2 of revision 2: exited with code 1"),
            "{text}"
        );
        assert!(lines[3].starts_with("3 *"), "{text}");
        assert!(
            lines[1].starts_with("1 ") && !lines[1].contains('*'),
            "{text}"
        );
        assert!(lines[1].contains("5m"), "{text}");
    }

    fn service(revision: u32, update: Option<Update>, revisions: Vec<Revision>) -> ServiceInfo {
        ServiceInfo {
            name: "web".into(),
            spec: WorkloadSpec::new("reg:5000/web:1"),
            address: None,
            replicas: 2,
            running: 2,
            instances: Vec::new(),
            created_at: datetime!(2026-12-07 10:00 UTC),
            revision,
            revisions,
            policy: UpdatePolicy::default(),
            update,
        }
    }

    #[test]
    fn a_followed_update_ends_in_success_a_rollback_or_another_change() {
        let done = service(2, None, vec![revision(2, "web:2", "deploy", None)]);
        assert!(outcome(&done, 2).is_ok());
        let back = service(
            3,
            None,
            vec![
                revision(
                    2,
                    "web:2",
                    "deploy",
                    Some("replica web-r2 of revision 2: failed its health check"),
                ),
                revision(3, "web:1", "automatic rollback to revision 1", None),
            ],
        );
        let err = outcome(&back, 2).unwrap_err().to_string();
        assert!(
            err.contains("failed and was rolled back: replica web-r2"),
            "{err}"
        );
        assert!(err.contains("runs revision 3 now"), "{err}");
        let overtaken = service(4, None, vec![revision(3, "web:3", "deploy", None)]);
        let err = outcome(&overtaken, 3).unwrap_err().to_string();
        assert!(err.contains("moved on to revision 4"), "{err}");

        let rolling = service(
            3,
            Some(Update {
                from: 2,
                to: 3,
                started_at: datetime!(2026-12-07 10:00 UTC),
                rollback: true,
            }),
            Vec::new(),
        );
        assert_eq!(
            progress(&rolling),
            "web: rolling back from revision 2 (to revision 3, an earlier spec): 0/2 replicas \
             run it"
        );
    }
}
