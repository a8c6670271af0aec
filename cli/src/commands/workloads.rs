//! `cloudos run|ps|logs|cancel|output`: tasks, and `ps` of services (their other
//! commands are `services`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use cloudos_cluster::client::{ApiClient, ClientError};
use cloudos_cluster::health::Health;
use cloudos_cluster::units::{format_bytes, format_cpu};
use cloudos_cluster::workload::{
    new_request_id, LogStream, RetentionInfo, TaskCreateRequest, TaskInfo, TaskState, WorkloadList,
    WorkloadSpec,
};
use time::OffsetDateTime;

use super::Ctx;
use crate::format;
use crate::table::Table;

/// How often `run --follow` looks at a task that is still pulling.
const POLL: Duration = Duration::from_millis(500);
/// How long a create is sent again while the master cannot answer (a master restarts in
/// seconds).
const SUBMIT_PATIENCE: Duration = Duration::from_secs(60);

/// Sends a create until the master answers. Each try carries the same request id, which
/// the master turns into the task or service the first try made, never a second one: an
/// answer lost in a master's crash or a dropped connection costs only the retry.
pub(super) async fn submit<T, F, Fut>(what: &str, mut send: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let deadline = std::time::Instant::now() + SUBMIT_PATIENCE;
    let mut pause = Duration::from_millis(500);
    loop {
        match send().await {
            Err(e) if e.is_retryable() && std::time::Instant::now() + pause < deadline => {
                eprintln!(
                    "{what}: {e}; sending the same request again in {:.1}s",
                    pause.as_secs_f64()
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(8));
            }
            answer => return answer,
        }
    }
}

/// `cloudos run`: queues the task and prints its id; with `follow`, shows the pull's
/// progress, streams the logs and exits with the task's exit code.
/// `cloudos run`'s task options besides the spec.
pub struct Run {
    pub retries: u32,
    pub timeout: Option<Duration>,
    /// Copied into the container's `/input` before it starts.
    pub input: Vec<std::path::PathBuf>,
    pub follow: bool,
}

pub async fn run(ctx: &Ctx, mut spec: WorkloadSpec, run: Run) -> anyhow::Result<()> {
    let Run {
        retries,
        timeout,
        input,
        follow,
    } = run;
    spec.validate()?;
    let timeout_secs = timeout.map(|t| t.as_secs());
    if let Some(secs) = timeout_secs {
        cloudos_cluster::workload::validate_timeout(secs)?;
    }
    let client = ctx.client().await?;
    if !input.is_empty() {
        spec.input = Some(super::input::upload(&client, &input).await?);
    }
    let request = TaskCreateRequest {
        spec,
        retries,
        request_id: Some(new_request_id()?),
        timeout_secs,
    };
    let task = submit("run", || client.create_task(&request)).await?;
    if !follow {
        return ctx.print(&task, |t| format!("{}\n", t.id));
    }
    eprintln!("task {} queued", task.id);
    let task = wait_until_started(&client, &task.id).await?;
    if task.state == TaskState::Running || task.state.is_final() {
        stream_logs(&client, &task.id, true).await?;
    }
    let done = client.task(&task.id).await?;
    finish(&done)
}

/// Shows the queue reason and the pull as a progress bar until the task runs or ends.
async fn wait_until_started(client: &ApiClient, id: &str) -> anyhow::Result<TaskInfo> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut last_reason = None;
    loop {
        let task = client.task(id).await?;
        match task.state {
            TaskState::Queued => {
                let said = (task.queue_position, task.reason.clone());
                if Some(&said) != last_reason.as_ref() {
                    if let Some(r) = &task.reason {
                        let place = task
                            .queue_position
                            .map(|p| format!(" (#{p} in the queue)"))
                            .unwrap_or_default();
                        bar.suspend(|| eprintln!("queued{place}: {r}"));
                    }
                    last_reason = Some(said);
                }
            }
            TaskState::Pulling => {
                let p = task.pull.unwrap_or_default();
                bar.set_message("pulling");
                bar.set_length(p.total_bytes.max(1));
                bar.set_position(p.done_bytes);
            }
            _ => {
                bar.finish_and_clear();
                return Ok(task);
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Prints how the task ended and exits with its code, as a shell would.
fn finish(task: &TaskInfo) -> anyhow::Result<()> {
    match task.state {
        TaskState::Succeeded => Ok(()),
        TaskState::Failed
            if task.exit_code.is_some() && task.signal.is_none() && !task.oom_killed =>
        {
            let _ = std::io::stdout().flush();
            std::process::exit(task.exit_code.unwrap_or(1));
        }
        other => bail!(
            "task {} {other}{}",
            task.id,
            task.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
    }
}

async fn stream_logs(client: &ApiClient, id: &str, follow: bool) -> anyhow::Result<()> {
    client
        .task_logs(id, follow, |line| {
            let _ = match line.stream {
                LogStream::Stdout => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(line.data.as_bytes())
                        .and_then(|_| out.flush())
                }
                LogStream::Stderr => {
                    let mut err = std::io::stderr().lock();
                    err.write_all(line.data.as_bytes())
                        .and_then(|_| err.flush())
                }
            };
        })
        .await?;
    Ok(())
}

pub async fn logs(ctx: &Ctx, id: &str, follow: bool) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    stream_logs(&client, id, follow).await
}

pub async fn cancel(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let task = ctx.client().await?.cancel_task(id).await?;
    ctx.print(&task, |t| format!("task {} is {}\n", t.id, t.state))
}

/// `cloudos output ID [PATH]`: the task's `/output` unpacked into PATH (default
/// `./ID-output`), or the tar archive itself on stdout for PATH `-`.
pub async fn output(ctx: &Ctx, id: &str, path: Option<PathBuf>) -> anyhow::Result<()> {
    let tar = ctx.client().await?.task_output(id).await?;
    let target = path.unwrap_or_else(|| PathBuf::from(format!("{id}-output")));
    if target == Path::new("-") {
        std::io::stdout().write_all(&tar)?;
        return Ok(());
    }
    let count = unpack(&tar, &target)?;
    eprintln!(
        "{count} entries of task {id}'s /output in {}",
        target.display()
    );
    Ok(())
}

/// Unpacks into `target`, refusing entries that would land outside it.
fn unpack(tar: &[u8], target: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    let mut archive = tar::Archive::new(tar);
    archive.set_preserve_permissions(false);
    let mut count = 0;
    for entry in archive.entries().context("not a tar archive")? {
        let mut entry = entry.context("a damaged tar entry")?;
        // unpack_in refuses absolute paths and `..`; false means it skipped the entry.
        if !entry.unpack_in(target).context("cannot write an entry")? {
            bail!("the archive holds a path outside the output directory");
        }
        count += 1;
    }
    Ok(count)
}

pub async fn ps(ctx: &Ctx, all: bool) -> anyhow::Result<()> {
    let mut workloads = ctx.client().await?.workloads().await?;
    if !all {
        // Finished tasks older than an hour clutter the list; --all shows them.
        let cutoff = OffsetDateTime::now_utc() - time::Duration::hours(1);
        workloads
            .tasks
            .retain(|t| !t.state.is_final() || t.finished_at.is_none_or(|f| f > cutoff));
    }
    let now = OffsetDateTime::now_utc();
    ctx.print(&workloads, |w| {
        let mut text = render_ps(w, now);
        if let (true, Some(r)) = (all, &w.retention) {
            text.push('\n');
            text.push_str(&retention_line(r));
        }
        text
    })
}

/// What the master keeps, under `cloudos ps -a`.
pub fn retention_line(r: &RetentionInfo) -> String {
    format!(
        "the master keeps finished tasks for {} (at most {}), their logs and outputs within \
         {} ({} used), and each task's log up to {}\n",
        format::duration_secs(r.keep_finished_secs),
        r.max_finished,
        format_bytes(r.files_budget_bytes),
        format_bytes(r.files_bytes),
        format_bytes(r.log_cap_bytes),
    )
}

fn exit_text(t: &TaskInfo) -> String {
    match (t.exit_code, t.signal, t.oom_killed) {
        (_, _, true) => "OOM".into(),
        (_, Some(sig), _) => format!("sig {sig}"),
        (Some(code), None, _) => code.to_string(),
        (None, None, _) => "-".into(),
    }
}

pub(super) fn state_text(t: &TaskInfo) -> String {
    match (t.state, t.pull) {
        (TaskState::Pulling, Some(p)) if p.total_bytes > 0 => {
            format!("pulling {}%", p.done_bytes * 100 / p.total_bytes)
        }
        // An update took it out of the rotation; it stops in a moment.
        (TaskState::Running, _) if t.leaving_since.is_some() => "running (leaving)".into(),
        (TaskState::Running, _) if t.health.is_some() => {
            format!("running ({})", t.health.unwrap_or(Health::Starting))
        }
        // Its place in the queue: 1 goes next.
        (TaskState::Queued, _) if t.queue_position.is_some() => {
            format!("queued #{}", t.queue_position.unwrap_or_default())
        }
        (state, _) => state.to_string(),
    }
}

/// CPU and memory of a running task, as its node's last heartbeat said; `-` otherwise.
fn usage_text(t: &TaskInfo) -> (String, String) {
    match t.usage {
        Some(u) => (format_cpu(u.cpu_millicores), format_bytes(u.memory_bytes)),
        None => ("-".into(), "-".into()),
    }
}

pub fn render_ps(w: &WorkloadList, now: OffsetDateTime) -> String {
    let mut out = String::new();
    let mut table = Table::new(&[
        "ID", "IMAGE", "STATE", "NODE", "CPU", "MEM", "AGE", "EXIT", "REASON",
    ]);
    for t in &w.tasks {
        let (cpu, mem) = usage_text(t);
        table.row(vec![
            t.id.clone(),
            t.spec.image.clone(),
            state_text(t),
            t.node.clone().unwrap_or_else(|| "-".into()),
            cpu,
            mem,
            format::age(t.created_at, now),
            exit_text(t),
            t.reason.clone().unwrap_or_default(),
        ]);
    }
    out.push_str(&table.render());
    if !w.services.is_empty() {
        out.push('\n');
        let mut table = Table::new(&["SERVICE", "IMAGE", "READY", "REVISION", "AGE"]);
        for s in &w.services {
            let revision = match &s.update {
                Some(u) if u.rollback => format!("{} (rolling back from {})", s.revision, u.from),
                Some(u) => format!("{} (updating from {})", s.revision, u.from),
                None => s.revision.to_string(),
            };
            table.row(vec![
                s.name.clone(),
                s.spec.image.clone(),
                format!("{}/{}", s.running, s.replicas),
                revision,
                format::age(s.created_at, now),
            ]);
        }
        out.push_str(&table.render());
        out.push('\n');
        let mut table = Table::new(&[
            "REPLICA", "STATE", "REV", "NODE", "CPU", "MEM", "RESTARTS", "REASON",
        ]);
        for t in w.services.iter().flat_map(|s| &s.instances) {
            let (cpu, mem) = usage_text(t);
            table.row(vec![
                t.id.clone(),
                state_text(t),
                t.revision.map_or_else(|| "-".into(), |r| r.to_string()),
                t.node.clone().unwrap_or_else(|| "-".into()),
                cpu,
                mem,
                t.restarts.to_string(),
                t.reason.clone().unwrap_or_default(),
            ]);
        }
        out.push_str(&table.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_cluster::workload::PullProgress;
    use time::macros::datetime;

    /// A lost answer is sent again (the same request: the closure is the request); a
    /// refusal is final at once.
    #[test]
    fn a_create_is_sent_again_until_the_master_answers() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let tries = std::cell::Cell::new(0);
        let answer = runtime.block_on(submit("run", || {
            tries.set(tries.get() + 1);
            let n = tries.get();
            async move {
                match n {
                    1 | 2 => Err(ClientError::Unreachable {
                        addr: "10.0.0.5:9443".into(),
                        reason: "connection reset".into(),
                    }),
                    _ => Ok(n),
                }
            }
        }));
        assert_eq!(answer.unwrap(), 3);
        tries.set(0);
        let refused = runtime.block_on(submit("run", || {
            tries.set(tries.get() + 1);
            async {
                Err::<(), _>(ClientError::Refused {
                    status: 409,
                    code: None,
                    message: "no".into(),
                })
            }
        }));
        assert!(refused.is_err());
        assert_eq!(tries.get(), 1, "a refusal is not sent again");
    }

    fn task(id: &str, state: TaskState) -> TaskInfo {
        let mut t = TaskInfo::queued(
            id.into(),
            WorkloadSpec::new("r:5000/busybox:1"),
            None,
            0,
            datetime!(2026-12-02 10:00 UTC),
        );
        t.state = state;
        t.node = Some("node-1".into());
        t.reason = None;
        t
    }

    #[test]
    fn ps_all_says_what_the_master_keeps() {
        let line = retention_line(&RetentionInfo {
            keep_finished_secs: 7 * 86_400,
            max_finished: 1000,
            files_budget_bytes: 1 << 30,
            files_bytes: 3 << 20,
            log_cap_bytes: 16 << 20,
        });
        assert_eq!(
            line,
            "the master keeps finished tasks for 7d (at most 1000), their logs and outputs \
             within 1Gi (3Mi used), and each task's log up to 16Mi\n"
        );
    }

    #[test]
    fn ps_shows_state_node_age_and_exit() {
        let mut done = task("t-1", TaskState::Failed);
        done.exit_code = Some(3);
        done.usage = None;
        let mut running = task("t-4", TaskState::Running);
        running.usage = Some(cloudos_cluster::workload::TaskUsage {
            cpu_millicores: 250,
            memory_bytes: 12 << 20,
            ..Default::default()
        });
        let mut pulling = task("t-2", TaskState::Pulling);
        pulling.pull = Some(PullProgress {
            done_bytes: 50,
            total_bytes: 200,
        });
        let mut queued = task("t-3", TaskState::Queued);
        queued.node = None;
        queued.reason = Some("no node fits: 1 lacks memory".into());
        let w = WorkloadList {
            tasks: vec![done, pulling, queued, running],
            services: vec![],
            retention: None,
        };
        let text = render_ps(&w, datetime!(2026-12-02 10:05 UTC));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID"), "{text}");
        assert!(
            lines[1].contains("failed") && lines[1].trim_end().ends_with(" 3"),
            "{text}"
        );
        assert!(lines[2].contains("pulling 25%"), "{text}");
        assert!(
            lines[3].contains("queued") && lines[3].contains("lacks memory"),
            "{text}"
        );
        assert!(lines[1].contains("5m"), "{text}");
        assert!(
            lines[4].contains("running")
                && lines[4].contains("250m  ")
                && lines[4].contains("12Mi"),
            "{text}"
        );
    }

    #[test]
    fn output_archives_cannot_escape() {
        let dir = std::env::temp_dir().join(format!("cloudos-out-{}", std::process::id()));
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "result.txt", &b"42"[..])
            .unwrap();
        let good = builder.into_inner().unwrap();
        assert_eq!(unpack(&good, &dir).unwrap(), 1);
        assert_eq!(std::fs::read(dir.join("result.txt")).unwrap(), b"42");

        let mut evil = good.clone();
        // Rewrite the name field to climb out of the target.
        evil[..10].copy_from_slice(b"../esc.txt");
        let mut h = tar::Header::from_byte_slice(&evil[..512]).clone();
        h.set_cksum();
        evil[..512].copy_from_slice(h.as_bytes());
        assert!(unpack(&evil, &dir).is_err());
        assert!(!dir.parent().unwrap().join("esc.txt").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
