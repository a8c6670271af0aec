//! One run's life on the node: pull, start, watch (with its logs tailed to the master),
//! collect `/output`, clean up, report. Replicas start again after an exit, with a backoff
//! that doubles up to a minute and resets once a container stayed up for a while.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudos_cluster::backoff::Backoff;
use cloudos_cluster::health::Health;
use cloudos_cluster::workload::{NetworkMode, PullProgress, RunAssignment, RunState};
use cloudos_runtime::{ContainerSpec, ExitStatus, RuntimeError};
use tokio::sync::watch;

use super::spec::{container_spec, Mounts};
use super::{credentials, health, image, input, logs, output, secrets, volumes, Shared};

/// How long a container has after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often a waiting run looks for a stop request.
const WAIT_SLICE: Duration = Duration::from_millis(300);
/// Pull progress reports at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// 0.5 s, 1 s, 2 s … 60 s between restarts of a replica that keeps exiting.
const RESTART_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(60),
};
/// A replica that ran this long before exiting starts again without waiting.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

pub(super) async fn run(
    shared: Arc<Shared>,
    assignment: RunAssignment,
    mut stop: watch::Receiver<bool>,
    log_from: watch::Receiver<(u64, u64)>,
) {
    let run = assignment.run.clone();
    let final_state = run_inner(&shared, &assignment, &mut stop, log_from).await;
    if let Some(state) = final_state {
        match &state {
            RunState::Failed { reason } => log::warn!("run {run} failed: {reason}"),
            other => log::info!("run {run} ended: {other:?}"),
        }
        shared.report(&run, state).await;
    }
}

/// Returns the state to report last (`None` when it was reported already).
async fn run_inner(
    shared: &Arc<Shared>,
    a: &RunAssignment,
    stop: &mut watch::Receiver<bool>,
    log_from: watch::Receiver<(u64, u64)>,
) -> Option<RunState> {
    let failed = |reason: String| Some(RunState::Failed { reason });
    // The run id names a directory under the data partition and the container: check it
    // before it touches a path (the master is trusted, but a bug there must not reach here).
    if let Err(RuntimeError::InvalidId { why, .. }) = cloudos_runtime::validate_id(&a.run) {
        let shown: String = a.run.chars().take(80).collect();
        return failed(format!("refusing run id {shown:?}: {why}"));
    }
    let images = match &shared.images {
        Ok(store) => store.clone(),
        Err(e) => return failed(e.clone()),
    };
    if let Err(e) = &shared.runtime {
        return failed(e.clone());
    }
    // Progress: sent from the pull's callback without waiting (dropped when the outbox
    // is full: the next one says the same, more up to date).
    let mut last_progress = Instant::now() - PROGRESS_EVERY;
    let progress = |p: PullProgress| {
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            let report = cloudos_cluster::workload::RunReport {
                run: a.run.clone(),
                state: RunState::Pulling { progress: p },
            };
            let _ = shared
                .outbox
                .try_send(cloudos_cluster::api::AgentMessage::Run(report));
        }
    };
    let pull = match credentials::for_image(
        &shared.config.data_dir,
        &a.spec.image,
        a.registry_auth.as_ref(),
    ) {
        Ok(credentials) => cloudos_oci::PullConfig {
            credentials,
            ..shared.pull.clone()
        },
        Err(reason) => return failed(reason),
    };
    let prepared = tokio::select! {
        prepared = image::prepare(&images, &pull, &a.spec.image, progress) => prepared,
        _ = stop.wait_for(|s| *s) => return Some(RunState::Stopped),
    };
    let prepared = match prepared {
        Ok(p) => p,
        Err(reason) => return failed(reason),
    };
    let output_dir = shared.config.data_dir.join("outputs").join(&a.run);
    // The task's input files, fetched before anything else is made for the run.
    let input = match &a.spec.input {
        Some(digest) => {
            let owner = match image::user(&a.spec, &prepared.config) {
                Ok(owner) => owner.unwrap_or((0, 0)),
                Err(reason) => return failed(reason),
            };
            match input::fetch(shared, &a.run, digest, owner).await {
                Ok(bind) => Some(bind),
                Err(reason) => return failed(reason),
            }
        }
        None => None,
    };
    // On the bridge the run gets its namespace and address once: a replica that restarts
    // keeps them.
    let attachment = if a.spec.network == NetworkMode::Bridge {
        match shared.network.attach(&a.run, &a.spec.publish).await {
            Ok(attachment) => Some(attachment),
            Err(reason) => return failed(reason),
        }
    } else {
        None
    };
    let binds = volumes::binds(
        &shared.config.data_dir,
        &shared.config.volume_host_paths,
        &a.spec.volumes,
        &a.volume_limits,
    )
    .and_then(|mut binds| {
        binds.extend(input);
        let secrets = run_secrets(shared, a, &prepared.config)?;
        binds.extend(secrets.bind);
        Ok(Mounts {
            binds,
            env_files: secrets.env_files,
        })
    });
    let spec = binds.and_then(|mounts| {
        container_spec(
            &a.run,
            &a.spec,
            &prepared.layers,
            &prepared.config,
            &output_dir,
            attachment
                .as_ref()
                .map(|at| (at.netns.as_path(), at.resolv_conf.as_deref())),
            mounts,
        )
    });
    let end = match spec {
        Ok(spec) => {
            let address = attachment.as_ref().map(|at| at.address);
            containers(shared, a, (spec, address), &output_dir, stop, log_from).await
        }
        Err(reason) => failed(reason),
    };
    if let Some(attachment) = &attachment {
        shared.network.detach(attachment).await;
    }
    secrets::unmount(&shared.config.data_dir, &a.run);
    input::remove(&shared.config.data_dir, &a.run);
    end
}

/// The run's secrets, on a memory file system of its own, owned by the container's user;
/// every secret the spec names must have come with the assignment.
fn run_secrets(
    shared: &Shared,
    a: &RunAssignment,
    config: &image::ImageRunConfig,
) -> Result<secrets::Mounted, String> {
    if a.spec.secret_names().is_empty() {
        return Ok(secrets::Mounted::default());
    }
    let owner = image::user(&a.spec, config)?.unwrap_or((0, 0));
    let wanted = secrets::Wanted {
        files: &a.spec.secrets,
        env: &a.spec.secret_env,
    };
    secrets::mount_for(&shared.config.data_dir, &a.run, &a.secrets, &wanted, owner)
}

/// Starts the run's container, and again after each exit of a replica, until the run is
/// over; returns its last state as [`run_inner`] does.
async fn containers(
    shared: &Arc<Shared>,
    a: &RunAssignment,
    (spec, address): (ContainerSpec, Option<std::net::Ipv4Addr>),
    output_dir: &PathBuf,
    stop: &mut watch::Receiver<bool>,
    log_from: watch::Receiver<(u64, u64)>,
) -> Option<RunState> {
    let failed = |reason: String| Some(RunState::Failed { reason });
    let mut restarts = 0u32;
    let mut retry = RESTART_BACKOFF.start();
    loop {
        if let Err(e) = fresh_dir(output_dir) {
            return failed(format!("cannot prepare {}: {e}", output_dir.display()));
        }
        let started = blocking(shared, {
            let spec = spec.clone();
            move |rt| {
                // A container of this run left by a crash of ours would block the name.
                let _ = rt.delete(&spec.id);
                rt.start(&spec)
            }
        })
        .await;
        if let Err(e) = started {
            let _ = blocking(shared, {
                let id = a.run.clone();
                move |rt| rt.delete(&id)
            })
            .await;
            let _ = std::fs::remove_dir_all(output_dir);
            return failed(start_error(&e));
        }
        let up_since = Instant::now();
        // A check starts out *starting*: out of the rotation until its first pass.
        let health = a.spec.health.as_ref().map(|_| Health::Starting);
        shared
            .report(
                &a.run,
                RunState::Running {
                    health_reason: None,
                    restarts,
                    address,
                    health,
                },
            )
            .await;
        let paths = match &shared.runtime {
            Ok(rt) => rt.log_paths(&a.run),
            Err(e) => return failed(e.clone()),
        };
        let (done_tx, done_rx) = watch::channel(false);
        let (kill_tx, mut kill) = watch::channel(false);
        let prober = a.spec.health.clone().map(|check| {
            let w = health::Watch {
                run: a.run.clone(),
                restarts,
                address,
                network: a.spec.network,
                check,
            };
            tokio::spawn(health::watch(
                Arc::clone(shared),
                w,
                kill_tx,
                done_rx.clone(),
            ))
        });
        let tailer = tokio::spawn(logs::tail(
            Arc::clone(shared),
            a.run.clone(),
            paths,
            log_from.clone(),
            done_rx,
        ));
        let status = wait(shared, &a.run, stop, &mut kill).await;
        let _ = done_tx.send(true);
        let _ = tailer.await;
        if let Some(prober) = prober {
            let _ = prober.await;
        }
        let stopped = *stop.borrow();
        let unhealthy = *kill.borrow();
        let output_bytes = if stopped {
            None
        } else {
            output::collect(shared, &a.run, output_dir).await
        };
        let _ = blocking(shared, {
            let id = a.run.clone();
            move |rt| rt.delete(&id)
        })
        .await;
        let _ = std::fs::remove_dir_all(output_dir);
        if stopped {
            return Some(RunState::Stopped);
        }
        let exited = match status {
            Ok(s) => exited(&s, output_bytes),
            Err(e) => return failed(format!("lost track of the container: {e}")),
        };
        if !a.restart {
            if unhealthy {
                return failed("stopped by its node: its health check failed".into());
            }
            return Some(exited);
        }
        shared.report(&a.run, exited).await;
        let delay = retry.after_exit(up_since.elapsed(), HEALTHY_RUN);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return Some(RunState::Stopped),
        }
        restarts += 1;
    }
}

fn exited(s: &ExitStatus, output_bytes: Option<u64>) -> RunState {
    RunState::Exited {
        code: s.code,
        signal: s.signal,
        oom_killed: s.oom_killed,
        output_bytes,
    }
}

fn start_error(e: &RuntimeError) -> String {
    match e {
        RuntimeError::CommandNotFound { command, .. } => {
            format!("{command} does not exist in the image")
        }
        other => format!("cannot start the container: {other}"),
    }
}

/// Waits for the container to end; a stop request (the master's `stop`, or `kill` from
/// its failed health check) sends SIGTERM, then SIGKILL.
async fn wait(
    shared: &Arc<Shared>,
    id: &str,
    stop: &mut watch::Receiver<bool>,
    kill: &mut watch::Receiver<bool>,
) -> Result<ExitStatus, RuntimeError> {
    let mut term_sent: Option<Instant> = None;
    let mut kill_sent = false;
    loop {
        if *stop.borrow() || *kill.borrow() {
            let signal = match term_sent {
                None => Some(libc::SIGTERM),
                Some(at) if at.elapsed() >= STOP_GRACE && !kill_sent => Some(libc::SIGKILL),
                _ => None,
            };
            if let Some(signal) = signal {
                let id = id.to_owned();
                let _ = blocking(shared, move |rt| rt.kill(&id, signal)).await;
                if signal == libc::SIGTERM {
                    term_sent = Some(Instant::now());
                } else {
                    kill_sent = true;
                }
            }
        }
        let waited = {
            let id = id.to_owned();
            blocking(shared, move |rt| rt.wait(&id, Some(WAIT_SLICE))).await
        };
        match waited {
            Err(RuntimeError::WaitTimeout { .. }) => continue,
            other => return other,
        }
    }
}

/// Runs `f` on the runtime off the async thread.
pub(super) async fn blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&cloudos_runtime::Runtime) -> Result<T, RuntimeError> + Send + 'static,
) -> Result<T, RuntimeError> {
    let shared = Arc::clone(shared);
    match tokio::task::spawn_blocking(move || match &shared.runtime {
        Ok(rt) => f(rt),
        Err(e) => Err(RuntimeError::StartFailed {
            id: String::new(),
            message: e.clone(),
        }),
    })
    .await
    {
        Ok(result) => result,
        Err(e) => Err(RuntimeError::StartFailed {
            id: String::new(),
            message: format!("runtime task failed: {e}"),
        }),
    }
}

fn fresh_dir(dir: &PathBuf) -> std::io::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cloudos_cluster::api::{AgentMessage, MasterMessage};
    use cloudos_cluster::workload::{RunAssignment, RunState};

    use super::super::{Executor, ExecutorConfig};
    use super::{HEALTHY_RUN, RESTART_BACKOFF};

    #[test]
    fn replicas_restart_after_half_a_second_doubling_to_a_minute() {
        let mut retry = RESTART_BACKOFF.start();
        let crash = Duration::from_millis(10);
        let ms: Vec<u128> = (0..9)
            .map(|_| retry.after_exit(crash, HEALTHY_RUN).as_millis())
            .collect();
        assert_eq!(
            ms,
            [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]
        );
        assert_eq!(
            retry.after_exit(HEALTHY_RUN, HEALTHY_RUN),
            Duration::from_millis(500),
            "thirty seconds up resets the delay"
        );
    }

    /// A master (or someone who took its place) assigns a run whose id walks out of the
    /// data partition: the run fails at once and nothing is created outside.
    #[tokio::test]
    async fn a_run_id_that_is_a_path_is_refused_before_it_touches_one() {
        let root = tempfile::tempdir().expect("tempdir");
        let data = root.path().join("data");
        let (executor, mut outbox) = Executor::new(ExecutorConfig {
            volume_host_paths: Vec::new(),
            data_dir: data.clone(),
            shim: cloudos_runtime::ShimCommand {
                program: "/bin/false".into(),
                args_prefix: Vec::new(),
            },
            insecure_registries: Vec::new(),
            container_node_ports: Vec::new(),
            resolv_conf: None,
            mesh_endpoint: None,
        });
        let run = "../../escaped";
        let assignment: RunAssignment = serde_json::from_value(serde_json::json!({
            "run": run,
            "spec": {"image": "busybox:1"},
            "restart": false,
        }))
        .expect("assignment");
        executor.handle(MasterMessage::Assign(Box::new(assignment)));
        let report = loop {
            let message = tokio::time::timeout(std::time::Duration::from_secs(10), outbox.recv())
                .await
                .expect("a report")
                .expect("outbox open");
            if let AgentMessage::Run(report) = message {
                if report.state.is_final(false) {
                    break report;
                }
            }
        };
        assert_eq!(report.run, run);
        match report.state {
            RunState::Failed { reason } => assert!(reason.contains("refusing run id"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(!root.path().join("escaped").exists());
        assert!(!data.join("outputs").exists(), "no output directory made");
    }
}
