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
    Master(Box<nodeos::roles::master::MasterArgs>),
    /// Run a compute node's agent in the foreground (outside PID 1).
    Agent(nodeos::roles::agent::AgentArgs),
    /// Install this binary on a systemd host as a compute node or master (what install.sh
    /// runs once it has checked this binary).
    Install(nodeos::host::InstallArgs),
    /// Install CloudOS from the live ISO to a disk of this machine: from an answer file,
    /// or with the console wizard.
    InstallDisk(nodeos::diskinstall::InstallDiskArgs),
    /// Remove what `nodeos install` put on this host.
    Uninstall(nodeos::host::UninstallArgs),
    /// Run the role of a host install (what its systemd unit starts).
    Daemon(nodeos::host::DaemonArgs),
    /// Go back to this binary after an upgraded one failed to start (what the rollback
    /// unit of a host install runs, with the previous binary).
    #[command(hide = true)]
    HostRollback(nodeos::host::RollbackArgs),
    /// This node's image store: import OCI image-layout tarballs (sites without a
    /// registry), list what is there.
    #[command(subcommand)]
    Image(ImageCommand),
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

#[derive(Subcommand)]
enum ImageCommand {
    /// Import every named image of an OCI image-layout tarball (plain, gzip or zstd); a
    /// task naming one of them by tag runs it without a registry.
    Import {
        file: std::path::PathBuf,
        #[arg(long, default_value = cloudos_master::config::DEFAULT_DATA_DIR)]
        data_dir: std::path::PathBuf,
    },
    /// The images in the store: name and manifest digest.
    List {
        #[arg(long, default_value = cloudos_master::config::DEFAULT_DATA_DIR)]
        data_dir: std::path::PathBuf,
    },
}

fn image(command: ImageCommand) -> anyhow::Result<()> {
    use anyhow::Context as _;
    match command {
        ImageCommand::Import { file, data_dir } => {
            let store = cloudos_oci::ImageStore::open(data_dir.join("images"))?;
            let archive = std::fs::File::open(&file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            let imported = store.import_layout(archive, &cloudos_oci::Platform::current())?;
            for image in imported {
                println!("{}\t{}", image.name, image.manifest);
            }
        }
        ImageCommand::List { data_dir } => {
            let store = cloudos_oci::ImageStore::open(data_dir.join("images"))?;
            for (name, digest) in store.refs()? {
                println!("{name}\t{digest}");
            }
        }
    }
    Ok(())
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
    // The version is the release stamp, not the crate's (see cloudos_release::stamp).
    let matches = <Cli as clap::CommandFactory>::command()
        .version(cloudos_release::version_text())
        .get_matches();
    let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches)?;
    match cli.command {
        None | Some(Command::Init) => anyhow::bail!(
            "nodeos init must run as PID 1 (it is process {})",
            std::process::id()
        ),
        Some(Command::Svc { name }) => nodeos::services::run(&name),
        Some(Command::Image(command)) => image(command),
        Some(Command::Shim { args }) => std::process::exit(cloudos_runtime::shim_main(&args)),
        Some(Command::Master(args)) => nodeos::roles::master::run_tool(*args),
        Some(Command::Agent(args)) => nodeos::roles::agent::run_tool(args),
        Some(Command::Install(args)) => nodeos::host::install_main(args),
        Some(Command::InstallDisk(args)) => nodeos::diskinstall::install_disk_main(args),
        Some(Command::Uninstall(args)) => nodeos::host::uninstall_main(args),
        Some(Command::Daemon(args)) => nodeos::host::daemon_main(args),
        Some(Command::HostRollback(args)) => nodeos::host::rollback_main(args),
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
