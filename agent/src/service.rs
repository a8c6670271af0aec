//! The agent as a long-running service, under PID 1 or systemd: the one place that says
//! what happens when the agent stops. Owns no I/O of its own; the caller says how it is
//! stopped and how it reports readiness.

use std::future::Future;

use crate::{run, AgentConfig, AgentError, Outcome};

/// Runs the agent until `stop` resolves. When the agent ends in a state only a person can
/// change (evicted; no token, an expired identity, a refused join), it logs why and waits
/// for `stop` instead of returning: a supervisor restarting it would only get the same
/// answer, over and over. `rejoin_hint` tells the person how to give the node a new token
/// where they are (boot settings, or `install.sh`). Returns an error only for failures a
/// restart may cure (the identity store).
pub async fn serve(
    config: AgentConfig,
    rejoin_hint: &str,
    stop: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    tokio::pin!(stop);
    let ended = tokio::select! {
        ended = run(config) => ended,
        // The caller says why it stops (systemd, a test).
        () = &mut stop => return Ok(()),
    };
    match ended {
        Ok(Outcome::Evicted { reason }) => {
            log::warn!("agent stopped: the master evicted this node ({reason}); {rejoin_hint}")
        }
        Err(e) if e.needs_a_person() => log::error!("agent stopped: {e}"),
        Err(e) => return Err(e),
    }
    stop.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::RETRY_BACKOFF;

    fn config(data_dir: PathBuf) -> AgentConfig {
        AgentConfig {
            volume_host_paths: Vec::new(),
            data_dir,
            token: None,
            master: Some("127.0.0.1:1".into()),
            name: "n1".into(),
            labels: Default::default(),
            discover_timeout: Duration::from_millis(10),
            retry: RETRY_BACKOFF,
            metrics_listen: None,
            insecure_registries: Vec::new(),
            container_node_ports: Vec::new(),
            resolv_conf: None,
            mesh_endpoint: None,
            after_join: None,
            set_clock: None,
            clock_report: None,
            install_release: None,
            system_report: None,
            switch_slot: None,
            reboot: None,
            healthy: None,
        }
    }

    /// No identity and no token: only a person can help, so the service waits for its
    /// stop instead of returning (which would make the supervisor restart it).
    #[tokio::test]
    async fn a_node_without_token_waits_for_its_stop() {
        let dir = std::env::temp_dir().join(format!("agent-serve-{}", std::process::id()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(serve(config(dir.clone()), "give it a token", async {
            let _ = rx.await;
        }));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!served.is_finished(), "returned instead of waiting");
        tx.send(()).expect("stop");
        let result = tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("stops when asked")
            .expect("task");
        assert!(result.is_ok(), "{result:?}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
