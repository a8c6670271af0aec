//! The services PID 1 supervises, each run as `nodeos svc NAME` in its own
//! process. This module owns the list, the dependency order and the shared
//! start-up of a service process (logging, settings, injected faults); each
//! service's work lives in its own module.

pub mod console;
pub mod devices;
pub mod limits;
pub mod power;

use crate::settings::{NodeRole, Settings};
use crate::supervisor::ServiceSpec;

/// Set by the supervisor: which start of the service this is (1 for the first).
pub const ATTEMPT_ENV: &str = "NODEOS_ATTEMPT";

/// The services of a node with this role, in no particular order: the
/// supervisor sorts them. The base services start together: PID 1 has loaded
/// the drivers they need, and a device that comes later reaches `net` (as a
/// link event) and `power` (it looks for new input devices) without `devices`.
/// A master that runs `workloads` runs the agent too, after the master: the agent
/// joins its own machine's master with the token the master leaves it.
pub fn specs(role: NodeRole, workloads: bool) -> Vec<ServiceSpec> {
    let mut specs = vec![
        ServiceSpec {
            name: "devices",
            depends_on: &[],
        },
        ServiceSpec {
            name: "net",
            depends_on: &[],
        },
        ServiceSpec {
            name: "power",
            depends_on: &[],
        },
        ServiceSpec {
            name: "console",
            depends_on: &[],
        },
        ServiceSpec {
            name: "clock",
            depends_on: &[],
        },
    ];
    match role {
        NodeRole::Master => {
            specs.push(ServiceSpec {
                name: "master",
                depends_on: &["net"],
            });
            if workloads {
                specs.push(ServiceSpec {
                    name: "agent",
                    depends_on: &["master"],
                });
            }
        }
        NodeRole::Compute => specs.push(ServiceSpec {
            name: "agent",
            depends_on: &["net"],
        }),
        NodeRole::None => {}
    }
    specs
}

/// Entry point of `nodeos svc NAME`.
pub fn run(name: &str) -> anyhow::Result<()> {
    let cmdline = crate::settings::boot_cmdline();
    let config = std::fs::read_to_string(crate::settings::CONFIG_FILE).ok();
    let (settings, _warnings) = Settings::load(config.as_deref(), &cmdline);
    crate::logging::init_for_service(settings.debug);
    inject_crash_if_asked(name, &settings);
    if matches!(name, "master" | "agent") {
        // These hold a connection per node or client; PID 1's 1024 files would run out.
        limits::raise_open_files(limits::OPEN_FILES);
    }
    match name {
        "devices" => devices::run(),
        "power" => power::run(),
        "console" => console::run(),
        "clock" => crate::clock::service::run(&settings),
        "master" => crate::roles::master::run_service(&settings),
        "agent" => crate::roles::agent::run_service(&settings),
        "net" => {
            let hostname = nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "cloudos".into());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::net::run(&settings.net, &hostname))
        }
        other => anyhow::bail!("no service named {other:?}"),
    }
}

/// `cloudos.fault=crash:NAME:N` makes a service crash on its first N starts,
/// the way a real bug would: with a panic.
fn inject_crash_if_asked(name: &str, settings: &Settings) {
    let times = settings.injected_crashes(name);
    let attempt: u32 = std::env::var(ATTEMPT_ENV)
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    if attempt <= times {
        log::error!("crashing on purpose (cloudos.fault, start {attempt} of {times})");
        panic!("injected crash of service {name}");
    }
}
