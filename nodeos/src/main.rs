//! `nodeos`: PID 1 when the kernel starts it, a service when PID 1 re-executes
//! it as `nodeos svc NAME`, and a small tool otherwise.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "nodeos", version, about = "CloudOS node userland")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run as the init process (what the kernel does at boot).
    Init,
    /// Services, networking and versions of this node.
    Status {
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = nodeos::status::CONTROL_SOCKET)]
        socket: String,
    },
    /// The most recent lines of this node's log.
    Logs {
        #[arg(short = 'n', long, default_value_t = 200)]
        lines: usize,
        #[arg(long, default_value = nodeos::status::CONTROL_SOCKET)]
        socket: String,
    },
    /// Run a cluster master in the foreground (outside PID 1).
    Master(nodeos::master::MasterArgs),
    /// Run a compute node's agent in the foreground (outside PID 1).
    Agent(nodeos::agent::AgentArgs),
    /// Run one supervised service (used by PID 1).
    #[command(hide = true)]
    Svc { name: String },
    /// Watch over one container (started by the agent's runtime).
    #[command(hide = true)]
    Shim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    // The kernel starts us as /init with no arguments; never let argument
    // parsing (or anything else) stand between PID 1 and the boot.
    if std::process::id() == 1 {
        nodeos::init::main();
    }
    let args: Vec<String> = std::env::args().collect();
    let invoked_as = args
        .first()
        .and_then(|a| a.rsplit('/').next())
        .unwrap_or_default();
    if invoked_as == "modprobe" {
        std::process::exit(nodeos::kmod::modprobe::main(&args));
    }
    let cli = Cli::parse();
    match cli.command {
        None | Some(Command::Init) => anyhow::bail!(
            "nodeos init must run as PID 1 (it is process {})",
            std::process::id()
        ),
        Some(Command::Svc { name }) => nodeos::services::run(&name),
        Some(Command::Shim { args }) => std::process::exit(cloudos_runtime::shim_main(&args)),
        Some(Command::Master(args)) => nodeos::master::main(args),
        Some(Command::Agent(args)) => nodeos::agent::main(args),
        Some(Command::Status { json, socket }) => {
            nodeos::logging::init_for_tool(false);
            let report = nodeos::status::fetch_status(&socket)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(())
        }
        Some(Command::Logs { lines, socket }) => {
            for line in nodeos::status::fetch_logs(&socket, lines)? {
                println!("{line}");
            }
            Ok(())
        }
    }
}
