//! systemd's D-Bus API (org.freedesktop.systemd1) for the host install: link, enable and
//! start a unit and wait until it is active; stop, disable and forget it on uninstall.
//! Everything systemctl would do for us, without depending on systemctl's output format.

use std::time::{Duration, Instant};

use zbus::proxy::CacheProperties;
use zbus::zvariant::OwnedObjectPath;

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("cannot reach systemd over D-Bus ({0}); is dbus running (`systemctl status dbus`)?")]
    Connect(zbus::Error),
    #[error("systemd refused to {action} {unit}: {source}")]
    Call {
        action: &'static str,
        unit: String,
        #[source]
        source: zbus::Error,
    },
    #[error("{unit} did not start: it is {state}; see `journalctl -u {unit}`")]
    Failed { unit: String, state: String },
    #[error("{unit} is still {state} after {waited:?}; see `journalctl -u {unit}`")]
    Timeout {
        unit: String,
        state: String,
        waited: Duration,
    },
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn link_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Vec<(String, String, String)>)>;
    fn disable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    fn reload(&self) -> zbus::Result<()>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
trait Service {
    #[zbus(property)]
    fn result(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn exec_main_status(&self) -> zbus::Result<i32>;
    #[zbus(property)]
    fn exec_main_start_timestamp(&self) -> zbus::Result<u64>;
}

/// A connection to the system's service manager.
pub struct Systemd {
    connection: zbus::Connection,
    manager: ManagerProxy<'static>,
}

impl Systemd {
    pub async fn connect() -> Result<Systemd, SystemdError> {
        let connection = zbus::Connection::system()
            .await
            .map_err(SystemdError::Connect)?;
        let manager = ManagerProxy::new(&connection)
            .await
            .map_err(SystemdError::Connect)?;
        Ok(Systemd {
            connection,
            manager,
        })
    }

    /// Links `unit_file` (outside systemd's search path) into it, enables it, makes systemd
    /// read it, and (re)starts it: a running old version is replaced (an upgrade).
    pub async fn install_and_start(&self, unit_file: &str, unit: &str) -> Result<(), SystemdError> {
        let call = |action| refused(action, unit);
        self.manager
            .link_unit_files(&[unit_file], false, true)
            .await
            .map_err(call("link"))?;
        self.manager
            .enable_unit_files(&[unit], false, true)
            .await
            .map_err(call("enable"))?;
        self.manager.reload().await.map_err(call("reload for"))?;
        // A unit that failed before (an earlier attempt) would otherwise keep its state.
        let _ = self.manager.reset_failed_unit(unit).await;
        self.manager
            .restart_unit(unit, "replace")
            .await
            .map_err(call("start"))?;
        Ok(())
    }

    /// Links `unit_file` into systemd's search path without enabling it (a unit that only
    /// another unit starts, as `OnFailure=` does), and makes systemd read it.
    pub async fn link(&self, unit_file: &str, unit: &str) -> Result<(), SystemdError> {
        let call = |action| refused(action, unit);
        self.manager
            .link_unit_files(&[unit_file], false, true)
            .await
            .map_err(call("link"))?;
        self.manager.reload().await.map_err(call("reload for"))
    }

    /// Asks systemd to restart `unit` and returns once the job is queued. The caller may be
    /// the unit's own main process: the job is systemd's and outlives it (the stop reaches
    /// it as SIGTERM). A unit that failed, or hit its start limit, is reset first.
    pub async fn restart(&self, unit: &str) -> Result<(), SystemdError> {
        let _ = self.manager.reset_failed_unit(unit).await;
        self.manager
            .restart_unit(unit, "replace")
            .await
            .map_err(refused("restart", unit))?;
        Ok(())
    }

    async fn service(&self, unit: &str) -> Result<ServiceProxy<'static>, SystemdError> {
        let call = |action| refused(action, unit);
        let path = self.manager.load_unit(unit).await.map_err(call("load"))?;
        ServiceProxy::builder(&self.connection)
            .path(path)
            .map_err(call("inspect"))?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(call("inspect"))
    }

    /// How `unit` (a service) last ended, in words: `exit-code, status 70` or
    /// `start-limit-hit, status 70`.
    pub async fn service_result(&self, unit: &str) -> Result<String, SystemdError> {
        let proxy = self.service(unit).await?;
        let call = |action| refused(action, unit);
        let result = proxy.result().await.map_err(call("inspect"))?;
        let status = proxy.exec_main_status().await.map_err(call("inspect"))?;
        Ok(format!("{result}, status {status}"))
    }

    /// When the last main process of `unit` started (microseconds since the epoch; 0 when
    /// it never did).
    pub async fn main_started_us(&self, unit: &str) -> Result<u64, SystemdError> {
        let proxy = self.service(unit).await?;
        proxy
            .exec_main_start_timestamp()
            .await
            .map_err(refused("inspect", unit))
    }

    /// Waits until `unit` is active; a unit that fails (or keeps failing and restarting)
    /// is an error naming the journal to read.
    pub async fn wait_active(&self, unit: &str, timeout: Duration) -> Result<(), SystemdError> {
        let start = Instant::now();
        let mut state = String::from("unknown");
        while start.elapsed() < timeout {
            let (active, sub) = self.state(unit).await?;
            match active.as_str() {
                "active" => return Ok(()),
                "failed" => {
                    return Err(SystemdError::Failed {
                        unit: unit.to_owned(),
                        state: format!("{active} ({sub})"),
                    })
                }
                // `auto-restart`: it exited and systemd will try again; worth waiting for,
                // but a unit that keeps doing it will time out with that state named.
                _ => state = format!("{active} ({sub})"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(SystemdError::Timeout {
            unit: unit.to_owned(),
            state,
            waited: timeout,
        })
    }

    /// `(ActiveState, SubState)` of `unit`.
    pub async fn state(&self, unit: &str) -> Result<(String, String), SystemdError> {
        let call = |action| refused(action, unit);
        let path = self.manager.load_unit(unit).await.map_err(call("load"))?;
        let proxy = UnitProxy::builder(&self.connection)
            .path(path)
            .map_err(call("inspect"))?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(call("inspect"))?;
        let active = proxy.active_state().await.map_err(call("inspect"))?;
        let sub = proxy.sub_state().await.map_err(call("inspect"))?;
        Ok((active, sub))
    }

    /// Stops `unit` and every process left in its cgroup, then disables and unlinks it.
    /// A unit that is not there is not an error: uninstall may run twice.
    pub async fn stop_and_remove(&self, unit: &str) -> Result<(), SystemdError> {
        let call = |action| refused(action, unit);
        if let Err(e) = self.manager.stop_unit(unit, "replace").await {
            if !is_no_such_unit(&e) {
                return Err(call("stop")(e));
            }
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            let (active, _) = self.state(unit).await?;
            if active == "inactive" || active == "failed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // KillUnit on a stopped unit fails ("not loaded"/"no processes"): nothing to kill.
        let _ = self.manager.kill_unit(unit, "all", libc::SIGKILL).await;
        let _ = self.manager.reset_failed_unit(unit).await;
        self.manager
            .disable_unit_files(&[unit], false)
            .await
            .map_err(call("disable"))?;
        self.manager
            .reload()
            .await
            .map_err(call("reload after removing"))?;
        Ok(())
    }

    /// Stops a slice (its cgroup goes with it); one that is not there is not an error.
    pub async fn stop_slice(&self, slice: &str) -> Result<(), SystemdError> {
        match self.manager.stop_unit(slice, "replace").await {
            Ok(_) => {}
            Err(e) if is_no_such_unit(&e) => return Ok(()),
            Err(e) => return Err(refused("stop", slice)(e)),
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.state(slice).await?.0 != "deactivating" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

/// Maps a failed call to [`SystemdError::Call`] naming what was asked of which unit.
fn refused(action: &'static str, unit: &str) -> impl FnOnce(zbus::Error) -> SystemdError {
    let unit = unit.to_owned();
    move |source| SystemdError::Call {
        action,
        unit,
        source,
    }
}

fn is_no_such_unit(e: &zbus::Error) -> bool {
    matches!(e, zbus::Error::MethodError(name, _, _)
        if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit")
}
