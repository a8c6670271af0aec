//! `cloudos apply -f stack.toml [--dry-run]` and `cloudos export`: a stack file's services
//! and tasks made to be, and the services there are written as one (decision 66).

use std::path::Path;

use anyhow::{bail, Context as _};
use cloudos_cluster::revision::{PolicyChange, ServiceDeployRequest};
use cloudos_cluster::workload::{
    new_request_id, ServiceInfo, TaskCreateRequest, WorkloadList, WorkloadSpec,
};

use super::Ctx;
use crate::stack::{self, Stack};

/// What applying a stack does to one of its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Create,
    /// The fields that differ, in words.
    Update(Vec<String>),
    Unchanged,
    /// A service the file does not name (`--prune`).
    Delete,
}

/// `cloudos apply`: says what changes, then (unless `dry_run`) makes it so. Services not
/// in the file are left alone, or deleted with `prune`; a task runs once for its name and
/// spec (while the master keeps it: applying again finds it).
pub async fn apply(ctx: &Ctx, file: &Path, dry_run: bool, prune: bool) -> anyhow::Result<()> {
    let text = read(file)?;
    let stack = stack::parse(&file.display().to_string(), &text)?;
    let client = ctx.client().await?;
    // References first: nothing changes when one is missing.
    let secrets = client.secrets().await?;
    let named = stack
        .services
        .iter()
        .map(|(n, s, _)| ("service", n, s))
        .chain(stack.tasks.iter().map(|(n, s, _, _)| ("task", n, s)));
    for (kind, name, spec) in named {
        if let Some(missing) = spec
            .secret_names()
            .into_iter()
            .find(|s| !secrets.secrets.iter().any(|k| k.name == *s))
        {
            bail!(
                "{}: {kind}.{name} names secret {missing}, which does not exist; `cloudos secret create {missing} -f FILE` first",
                file.display()
            );
        }
    }
    let current = client.workloads().await?;
    let plan = plan(&stack, &current, prune);
    for (what, change) in &plan {
        println!("{}", say(what, change));
    }
    if dry_run {
        println!("(dry run: nothing was changed)");
        return Ok(());
    }
    for (service, spec, replicas) in &stack.services {
        let key = format!("service {service}");
        if plan
            .iter()
            .any(|(w, c)| *w == key && *c == Change::Unchanged)
        {
            continue;
        }
        let request = ServiceDeployRequest {
            spec: spec.clone(),
            replicas: Some(*replicas),
            policy: PolicyChange::default(),
            request_id: Some(new_request_id()?),
        };
        client
            .deploy_service(service, &request)
            .await
            .with_context(|| format!("service {service}"))?;
    }
    for (what, change) in &plan {
        if let (Change::Delete, Some(service)) = (change, what.strip_prefix("service ")) {
            client
                .delete_service(service)
                .await
                .with_context(|| format!("service {service}"))?;
        }
    }
    for (task, spec, retries, timeout) in &stack.tasks {
        let request = TaskCreateRequest {
            spec: spec.clone(),
            retries: *retries,
            request_id: Some(stack::task_request_id(task, spec, *retries, *timeout)),
            timeout_secs: *timeout,
        };
        let made = client
            .create_task(&request)
            .await
            .with_context(|| format!("task {task}"))?;
        println!("task {task} is {}", made.id);
    }
    Ok(())
}

/// `cloudos export`: the services, and the tasks a stack made, as a stack file, to `file` or standard output (`-`).
pub async fn export(ctx: &Ctx, file: Option<&Path>) -> anyhow::Result<()> {
    let workloads = ctx.client().await?.workloads().await?;
    let (services, tasks) = (&workloads.services, &workloads.tasks);
    let text = stack::export(services, tasks)?;
    match file {
        Some(path) if path != Path::new("-") => {
            std::fs::write(path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "{} services and {} tasks written to {}",
                services.len(),
                stack::exported_tasks(tasks).len(),
                path.display()
            );
        }
        _ => print!("{text}"),
    }
    Ok(())
}

fn read(file: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

/// The change each entry of `stack` makes to `current`: services, then tasks, by name,
/// then (with `prune`) the services the file does not name.
fn plan(stack: &Stack, current: &WorkloadList, prune: bool) -> Vec<(String, Change)> {
    let mut plan = Vec::new();
    for (name, spec, replicas) in &stack.services {
        let change = match current.services.iter().find(|s| s.name == *name) {
            None => Change::Create,
            Some(s) => match differences(s, spec, *replicas) {
                d if d.is_empty() => Change::Unchanged,
                d => Change::Update(d),
            },
        };
        plan.push((format!("service {name}"), change));
    }
    for (name, spec, retries, timeout) in &stack.tasks {
        let id = stack::task_request_id(name, spec, *retries, *timeout);
        let made = current
            .tasks
            .iter()
            .any(|t| t.request_id.as_deref() == Some(id.as_str()));
        let change = if made {
            Change::Unchanged
        } else {
            Change::Create
        };
        plan.push((format!("task {name}"), change));
    }
    if prune {
        for s in &current.services {
            if !stack.services.iter().any(|(name, _, _)| *name == s.name) {
                plan.push((format!("service {}", s.name), Change::Delete));
            }
        }
    }
    plan
}

/// What differs between a service and what the file asks, field by field (the
/// architectures the master read from the registry are not the file's).
fn differences(s: &ServiceInfo, spec: &WorkloadSpec, replicas: u32) -> Vec<String> {
    let fields = |spec: &WorkloadSpec| {
        let mut value = serde_json::to_value(spec).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.remove("platforms");
        }
        value
    };
    let (have, want) = (fields(&s.spec), fields(spec));
    let mut out = Vec::new();
    if s.replicas != replicas {
        out.push(format!("replicas {} → {replicas}", s.replicas));
    }
    let keys: std::collections::BTreeSet<&String> = have
        .as_object()
        .into_iter()
        .chain(want.as_object())
        .flat_map(|o| o.keys())
        .collect();
    for key in keys {
        let (a, b) = (&have[key.as_str()], &want[key.as_str()]);
        if a == b {
            continue;
        }
        out.push(match (a, b) {
            (serde_json::Value::String(a), serde_json::Value::String(b)) => {
                format!("{key} {a} → {b}")
            }
            _ => format!("{key} changed"),
        });
    }
    out
}

fn say(what: &str, change: &Change) -> String {
    match change {
        Change::Create => format!("+ {what}: created"),
        Change::Update(d) => format!("~ {what}: {}", d.join("; ")),
        Change::Unchanged => format!("= {what}: unchanged"),
        Change::Delete => format!("- {what}: deleted (not in the file)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_says_what_is_made_changed_and_left() {
        let text = r#"
[service.web]
image = "reg/web:2"
replicas = 3
[service.db]
image = "reg/db:1"
[service.new]
image = "reg/new:1"
[task.once]
image = "reg/tools:1"
"#;
        let stack = stack::parse("s.toml", text).unwrap();
        let spec_of = |name: &str| {
            let (_, spec, _) = stack.services.iter().find(|(n, _, _)| n == name).unwrap();
            spec.clone()
        };
        let mut web_now = spec_of("web");
        web_now.image = "reg/web:1".into();
        web_now.platforms = vec!["amd64".into()];
        let mut db_now = spec_of("db");
        db_now.platforms = vec!["amd64".into()];
        let (task, spec, retries, timeout) = stack.tasks[0].clone();
        let mut made = cloudos_cluster::workload::TaskInfo::queued(
            "t-1".into(),
            spec.clone(),
            None,
            0,
            time::OffsetDateTime::UNIX_EPOCH,
        );
        made.request_id = Some(stack::task_request_id(&task, &spec, retries, timeout));
        let current = WorkloadList {
            tasks: vec![made],
            services: vec![
                stack::service_info("web", web_now, 2),
                stack::service_info("db", db_now, 1),
            ],
            retention: None,
        };
        let lines: Vec<String> = plan(&stack, &current, false)
            .iter()
            .map(|(w, c)| say(w, c))
            .collect();
        assert_eq!(
            lines,
            [
                "= service db: unchanged",
                "+ service new: created",
                "~ service web: replicas 2 → 3; image reg/web:1 → reg/web:2",
                "= task once: unchanged",
            ]
        );
        // With --prune, a service the file does not name goes.
        let mut more = current.clone();
        let old = stack::service_info("old", WorkloadSpec::new("reg/old:1"), 1);
        more.services.push(old);
        let pruned = plan(&stack, &more, true);
        assert_eq!(
            pruned.last().map(|(w, c)| say(w, c)).as_deref(),
            Some("- service old: deleted (not in the file)")
        );
        assert!(!plan(&stack, &more, false)
            .iter()
            .any(|(_, c)| *c == Change::Delete));
    }
}
