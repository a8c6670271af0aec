//! Stack files (decision 66): services and tasks in one TOML file, as `cloudos apply`
//! reads them and `cloudos export` writes them. The schema is the flags of `cloudos
//! deploy` and `cloudos run`, spelled as keys:
//!
//! ```toml
//! [service.web]
//! image = "registry.lan:5000/web:2"
//! replicas = 2
//! command = ["httpd", "-f", "-p", "80", "-h", "/www"]
//! publish = ["8080:80"]
//! volumes = ["data:/data"]
//! secrets = ["tls-key"]
//! health_http = "80/healthz"
//!
//! [task.migrate]
//! image = "registry.lan:5000/tools:1"
//! command = ["migrate", "--up"]
//! ```
//!
//! Every error names the key and the line it is on.

use std::collections::BTreeMap;

use cloudos_cluster::health::{parse_cmd, parse_http, parse_tcp, HealthCheck, Probe};
use cloudos_cluster::volume::parse_volume;
use cloudos_cluster::workload::{
    parse_cpu, parse_memory, NetworkMode, ResourceRequest, ServiceInfo, TaskInfo, WorkloadSpec,
};
use serde::{Deserialize, Serialize};

/// A stack file as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackFile {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service: BTreeMap<String, Entry>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub task: BTreeMap<String, Entry>,
}

/// One service or task: `cloudos deploy` and `cloudos run`'s flags as keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_http: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_tcp: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_interval_secs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_timeout_secs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_start_period_secs: Option<u32>,
    /// Services only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Tasks only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Tasks only: the deadline in seconds (`cloudos run --timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

/// A stack file that parsed and checked: each name with its spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    pub services: Vec<(String, WorkloadSpec, u32)>,
    /// `(name, spec, retries, timeout)`.
    pub tasks: Vec<(String, WorkloadSpec, u32, Option<u64>)>,
}

/// Why a stack file is refused: what, and the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {why}")]
pub struct StackError {
    pub file: String,
    pub line: usize,
    pub why: String,
}

/// Parses and checks stack file `text` (named `file` in errors).
pub fn parse(file: &str, text: &str) -> Result<Stack, StackError> {
    let raw: StackFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_at(text, s.start));
        StackError {
            file: file.to_owned(),
            line,
            why: e.message().to_owned(),
        }
    })?;
    let fail = |kind: &str, name: &str, key: &str, why: String| StackError {
        file: file.to_owned(),
        line: line_of(text, kind, name, key),
        why: format!("{kind}.{name}: {why}"),
    };
    let mut stack = Stack {
        services: Vec::new(),
        tasks: Vec::new(),
    };
    for (name, entry) in &raw.service {
        cloudos_cluster::workload::validate_service_name(name)
            .map_err(|e| fail("service", name, "", e.to_string()))?;
        for (key, set) in [
            ("retries", entry.retries.is_some()),
            ("timeout_secs", entry.timeout_secs.is_some()),
        ] {
            if set {
                return Err(fail(
                    "service",
                    name,
                    key,
                    format!("{key} is a task's, not a service's"),
                ));
            }
        }
        let spec = entry
            .spec()
            .map_err(|(key, why)| fail("service", name, key, why))?;
        stack
            .services
            .push((name.clone(), spec, entry.replicas.unwrap_or(1)));
    }
    for (name, entry) in &raw.task {
        // A task's name goes into its request id, under the rule of a service's.
        cloudos_cluster::workload::validate_service_name(name)
            .map_err(|e| fail("task", name, "", e.to_string().replace("service", "task")))?;
        if entry.replicas.is_some() {
            return Err(fail(
                "task",
                name,
                "replicas",
                "replicas is a service's, not a task's".into(),
            ));
        }
        let spec = entry
            .spec()
            .map_err(|(key, why)| fail("task", name, key, why))?;
        stack.tasks.push((
            name.clone(),
            spec,
            entry.retries.unwrap_or(0),
            entry.timeout_secs,
        ));
    }
    Ok(stack)
}

impl Entry {
    /// The spec this entry asks for; an error names the key.
    fn spec(&self) -> Result<WorkloadSpec, (&'static str, String)> {
        let defaults = ResourceRequest::default();
        let network = match &self.network {
            Some(n) => n.parse().map_err(|e: String| ("network", e))?,
            None => NetworkMode::Bridge,
        };
        let mut spec = WorkloadSpec {
            command: self.command.clone(),
            entrypoint: self.entrypoint.clone().map(|e| vec![e]),
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            resources: ResourceRequest {
                cpu_millicores: match &self.cpu {
                    Some(c) => parse_cpu(c).map_err(|e| ("cpu", e.to_string()))?,
                    None => defaults.cpu_millicores,
                },
                memory_bytes: match &self.memory {
                    Some(m) => parse_memory(m).map_err(|e| ("memory", e.to_string()))?,
                    None => defaults.memory_bytes,
                },
                pids: self.pids,
            },
            node_selector: self.node_selector.clone(),
            network,
            publish: self
                .publish
                .iter()
                .map(|p| p.parse())
                .collect::<Result<_, cloudos_cluster::workload::PublishError>>()
                .map_err(|e| ("publish", e.to_string()))?,
            readonly_root: self.read_only,
            volumes: self
                .volumes
                .iter()
                .map(|v| parse_volume(v))
                .collect::<Result<_, _>>()
                .map_err(|e| ("volumes", e.to_string()))?,
            secrets: self.secrets.clone(),
            health: self.health().map_err(|why| ("health_http", why))?,
            ..WorkloadSpec::new(self.image.clone())
        };
        // `KEY = "secret:NAME"` takes the secret's value, as `--env` does.
        spec.set_env(self.env.clone());
        spec.validate().map_err(|e| ("image", e.to_string()))?;
        Ok(spec)
    }

    fn health(&self) -> Result<Option<HealthCheck>, String> {
        let probe = match (&self.health_http, self.health_tcp, &self.health_cmd) {
            (Some(http), None, None) => parse_http(http).map_err(|e| e.to_string())?,
            (None, Some(port), None) => parse_tcp(&port.to_string()).map_err(|e| e.to_string())?,
            (None, None, Some(cmd)) => parse_cmd(cmd).map_err(|e| e.to_string())?,
            (None, None, None) => return Ok(None),
            _ => return Err("give one of health_http, health_tcp and health_cmd".into()),
        };
        let mut check = HealthCheck::new(probe);
        check.interval_secs = self.health_interval_secs.unwrap_or(check.interval_secs);
        check.timeout_secs = self.health_timeout_secs.unwrap_or(check.timeout_secs);
        check.retries = self.health_retries.unwrap_or(check.retries);
        check.start_period_secs = self.health_start_period_secs.unwrap_or(0);
        Ok(Some(check))
    }

    /// The entry that asks for `spec` (what `export` writes).
    pub fn of(spec: &WorkloadSpec) -> Entry {
        let defaults = ResourceRequest::default();
        let r = &spec.resources;
        let (mut health_http, mut health_tcp, mut health_cmd) = (None, None, None);
        match spec.health.as_ref().map(|h| &h.probe) {
            Some(Probe::Http { port, path }) => health_http = Some(format!("{port}{path}")),
            Some(Probe::Tcp { port }) => health_tcp = Some(*port),
            Some(Probe::Cmd { command }) => health_cmd = Some(command.clone()),
            None => {}
        }
        let check = spec.health.as_ref();
        Entry {
            image: spec.image.clone(),
            command: spec.command.clone(),
            entrypoint: spec.entrypoint.as_ref().and_then(|e| e.first().cloned()),
            env: spec.env_pairs(),
            cpu: (r.cpu_millicores != defaults.cpu_millicores)
                .then(|| format!("{}m", r.cpu_millicores)),
            memory: (r.memory_bytes != defaults.memory_bytes).then(|| r.memory_bytes.to_string()),
            pids: r.pids,
            node_selector: spec.node_selector.clone(),
            network: (spec.network != NetworkMode::Bridge)
                .then(|| spec.network.as_str().to_owned()),
            publish: spec.publish.iter().map(ToString::to_string).collect(),
            read_only: spec.readonly_root,
            workdir: spec.workdir.clone(),
            user: spec.user.clone(),
            volumes: spec.volumes.iter().map(ToString::to_string).collect(),
            secrets: spec.secrets.clone(),
            health_http,
            health_tcp,
            health_cmd,
            health_interval_secs: check.map(|h| h.interval_secs),
            health_timeout_secs: check.map(|h| h.timeout_secs),
            health_retries: check.map(|h| h.retries),
            health_start_period_secs: check.map(|h| h.start_period_secs),
            ..Entry::default()
        }
    }
}

/// How a stack's tasks' request ids begin.
const TASK_ID_PREFIX: &str = "stack-";

/// A task's request id from its name and what it asks: the same entry applied again is
/// the same request, which the master answers with the task it made. The name is in it
/// (`stack-NAME-HASH`), so `export` can write the task back under its name.
pub fn task_request_id(
    name: &str,
    spec: &WorkloadSpec,
    retries: u32,
    timeout: Option<u64>,
) -> String {
    let spec = serde_json::to_vec(spec).unwrap_or_default();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        name.as_bytes(),
        &spec,
        &retries.to_le_bytes(),
        &timeout.unwrap_or(0).to_le_bytes(),
    ] {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part);
    }
    let digest = ctx.finish();
    // 64 bits: the id names the entry too, and the whole stays within 64 characters.
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{TASK_ID_PREFIX}{name}-{hex}")
}

/// The tasks a stack made (their request id is [`task_request_id`]'s, checked), by name:
/// the latest of each name.
pub fn exported_tasks(tasks: &[TaskInfo]) -> BTreeMap<&str, &TaskInfo> {
    let mut found: BTreeMap<&str, &TaskInfo> = BTreeMap::new();
    for t in tasks {
        let Some(id) = t.request_id.as_deref() else {
            continue;
        };
        let Some((name, _)) = id
            .strip_prefix(TASK_ID_PREFIX)
            .and_then(|rest| rest.rsplit_once('-'))
        else {
            continue;
        };
        // The master fills in the image's platforms; the stack's spec had none.
        let asked = WorkloadSpec {
            platforms: Vec::new(),
            ..t.spec.clone()
        };
        if task_request_id(name, &asked, t.retries, t.timeout_secs) != id {
            continue;
        }
        match found.get(name) {
            Some(kept) if kept.created_at >= t.created_at => {}
            _ => {
                found.insert(name, t);
            }
        }
    }
    found
}

/// The stack file of `services` and of the tasks a stack made (what `cloudos export`
/// writes): applied to the same cluster, it changes nothing.
pub fn export(services: &[ServiceInfo], tasks: &[TaskInfo]) -> Result<String, toml::ser::Error> {
    let mut file = StackFile::default();
    for s in services {
        let mut entry = Entry::of(&s.spec);
        entry.replicas = Some(s.replicas);
        file.service.insert(s.name.clone(), entry);
    }
    for (name, t) in exported_tasks(tasks) {
        let mut entry = Entry::of(&t.spec);
        entry.retries = (t.retries > 0).then_some(t.retries);
        entry.timeout_secs = t.timeout_secs;
        file.task.insert(name.to_owned(), entry);
    }
    toml::to_string(&file)
}

/// The 1-based line of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line of `key` in table `[kind.name]` of `text`; the table's own line when the key
/// is not written there (or `key` is empty), 1 when neither is found.
fn line_of(text: &str, kind: &str, name: &str, key: &str) -> usize {
    let header = format!("[{kind}.{name}]");
    let mut table_line = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            if table_line.is_some() {
                break;
            }
            if line == header {
                table_line = Some(i + 1);
            }
            continue;
        }
        let written = line
            .split_once('=')
            .is_some_and(|(k, _)| !key.is_empty() && k.trim() == key);
        if table_line.is_some() && written {
            return i + 1;
        }
    }
    table_line.unwrap_or(1)
}

/// A service with `spec` and `replicas`, all running, as the master shows it.
#[cfg(test)]
pub(crate) fn service_info(name: &str, spec: WorkloadSpec, replicas: u32) -> ServiceInfo {
    ServiceInfo {
        name: name.into(),
        spec,
        address: None,
        replicas,
        running: replicas,
        instances: Vec::new(),
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        revision: 1,
        revisions: Vec::new(),
        policy: Default::default(),
        update: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STACK: &str = r#"
[service.web]
image = "reg:5000/web:2"
replicas = 2
command = ["httpd", "-f", "-p", "80", "-h", "/www"]
publish = ["8080:80"]
volumes = ["data:/data"]
secrets = ["tls-key"]
health_http = "80/healthz"
health_interval_secs = 1
health_timeout_secs = 1
cpu = "250m"

[task.migrate]
image = "reg:5000/tools:1"
command = ["migrate"]
retries = 2
"#;

    #[test]
    fn a_stack_parses_into_the_specs_deploy_and_run_would_make() {
        let stack = parse("stack.toml", STACK).unwrap();
        let (name, spec, replicas) = &stack.services[0];
        assert_eq!((name.as_str(), *replicas), ("web", 2));
        assert_eq!(spec.resources.cpu_millicores, 250);
        assert_eq!(spec.publish[0].to_string(), "8080:80/tcp");
        assert_eq!(spec.volumes[0].volume(), Some("data"));
        assert_eq!(spec.health.as_ref().map(|h| h.interval_secs), Some(1));
        assert_eq!(stack.tasks[0].0, "migrate");
        assert_eq!(stack.tasks[0].2, 2);
    }

    #[test]
    fn errors_name_the_key_and_its_line() {
        let bad_cpu = STACK.replace("cpu = \"250m\"", "cpu = \"lots\"");
        let err = parse("s.toml", &bad_cpu).unwrap_err().to_string();
        assert!(
            err.starts_with("s.toml:12: service.web: invalid CPU"),
            "{err}"
        );
        let typo = STACK.replace("replicas = 2", "replica = 2");
        let err = parse("s.toml", &typo).unwrap_err().to_string();
        assert!(
            err.starts_with("s.toml:4: unknown field `replica`"),
            "{err}"
        );
        let task_replicas = STACK.replace("retries = 2", "replicas = 2");
        let err = parse("s.toml", &task_replicas).unwrap_err().to_string();
        assert!(
            err.starts_with("s.toml:17: task.migrate: replicas is a service's"),
            "{err}"
        );
        let bad_volume = STACK.replace("data:/data", "data:relative");
        let err = parse("s.toml", &bad_volume).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:7: service.web:"), "{err}");
        let not_toml = "[service.web\nimage = 1";
        let err = parse("s.toml", not_toml).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:1:"), "{err}");
    }

    #[test]
    fn an_exported_stack_applies_to_the_same_specs() {
        let stack = parse("stack.toml", STACK).unwrap();
        let (name, spec, replicas) = stack.services[0].clone();
        let info = service_info(&name, spec.clone(), replicas);
        let (task, task_spec, retries, timeout) = stack.tasks[0].clone();
        let mut made = TaskInfo::queued(
            "t-1".into(),
            WorkloadSpec {
                platforms: vec!["amd64".into()],
                ..task_spec.clone()
            },
            None,
            retries,
            time::OffsetDateTime::UNIX_EPOCH,
        );
        made.request_id = Some(task_request_id(&task, &task_spec, retries, timeout));
        // A task no stack made, and one whose id names a stack's but not its spec, stay out.
        let by_hand = TaskInfo::queued(
            "t-2".into(),
            WorkloadSpec::new("reg/x:1"),
            None,
            0,
            time::OffsetDateTime::UNIX_EPOCH,
        );
        let mut forged = by_hand.clone();
        forged.request_id = Some("stack-other-0123456789abcdef".into());
        let text = export(&[info], &[made, by_hand, forged]).unwrap();
        let again = parse("export.toml", &text).unwrap();
        assert_eq!(again.services, vec![("web".to_owned(), spec, 2)], "{text}");
        assert_eq!(
            again.tasks,
            vec![("migrate".to_owned(), task_spec, 2, None)],
            "{text}"
        );
    }

    #[test]
    fn a_task_request_id_is_its_name_and_spec() {
        let spec = WorkloadSpec::new("reg/x:1");
        let id = task_request_id("a", &spec, 0, None);
        assert!(id.starts_with("stack-a-"), "{id}");
        assert_eq!(id, task_request_id("a", &spec, 0, None));
        assert_ne!(id, task_request_id("b", &spec, 0, None));
        assert_ne!(id, task_request_id("a", &spec, 1, None));
        cloudos_cluster::workload::validate_request_id(&id).unwrap();
        let longest = "a".repeat(40);
        cloudos_cluster::workload::validate_request_id(&task_request_id(&longest, &spec, 0, None))
            .unwrap();
        let bad = STACK.replace("[task.migrate]", "[task.Migrate_Now]");
        let err = parse("s.toml", &bad).unwrap_err().to_string();
        assert!(err.contains("task.Migrate_Now"), "{err}");
    }
}
