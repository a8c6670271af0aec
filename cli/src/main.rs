//! `cloudos`: the CloudOS command line, for an admin's laptop or any machine that can reach
//! the master. `cloudos login` joins as an admin with a token; every other command talks
//! to the master over mTLS with the stored credentials (see `config.rs`).

mod commands;
mod config;
mod format;
mod table;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use cloudos_cluster::Role;

use commands::{Ctx, Output};

#[derive(Debug, Parser)]
#[command(name = "cloudos", version, about = "Manage a CloudOS cluster")]
struct Cli {
    /// Directory with the credentials (default: $XDG_CONFIG_HOME/cloudos or ~/.config/cloudos).
    #[arg(long, global = true, value_name = "DIR", env = "CLOUDOS_CONFIG")]
    config: Option<PathBuf>,
    /// How to print results.
    #[arg(long, short = 'o', global = true, value_enum, default_value = "table")]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Join the cluster as an admin with a token and store the credentials.
    Login {
        /// An admin token (the master prints one at its first start).
        #[arg(long, env = "CLOUDOS_TOKEN", hide_env_values = true)]
        token: String,
        /// The master's host:port; found by mDNS when left out.
        #[arg(long, value_name = "HOST:PORT")]
        master: Option<String>,
        /// Your name in the cluster (default: USER-HOST).
        #[arg(long)]
        name: Option<String>,
        /// How long to look for masters on the LAN.
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        discover_timeout: Duration,
    },
    /// The cluster at a glance.
    Status,
    /// Nodes of the cluster.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Join tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Masters advertising on this LAN (mDNS).
    Discover {
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// All nodes: NAME ROLE ADDRESS ARCH STATE CPU MEM AGE.
    List,
    /// One node in detail, with its telemetry.
    Show { name: String },
    /// Evict a node and revoke its certificate.
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token; prints it (only this once).
    Create {
        #[arg(long, default_value = "compute", value_parser = parse_role)]
        role: Role,
        /// Lifetime such as 30m, 24h, 7d; `never` for none.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// How many joins it allows (default: unlimited).
        #[arg(long)]
        uses: Option<u32>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// All tokens (never their secrets).
    List,
    /// Revoke a token by its id.
    Revoke { id: String },
}

fn parse_duration(value: &str) -> Result<Duration, String> {
    let d = cloudos_cluster::token::parse_ttl(value).map_err(|e| e.to_string())?;
    Ok(d.unsigned_abs())
}

fn parse_role(value: &str) -> Result<Role, String> {
    value
        .parse()
        .map_err(|e: cloudos_cluster::identity::IdentityError| e.to_string())
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let ctx = Ctx {
        config_dir: config::dir_from_env(cli.config.as_deref())?,
        output: cli.output,
    };
    match cli.command {
        Command::Login {
            token,
            master,
            name,
            discover_timeout,
        } => commands::login::run(&ctx, &token, master, name, discover_timeout).await,
        Command::Status => commands::status::run(&ctx).await,
        Command::Node(NodeCommand::List) => commands::nodes::list(&ctx).await,
        Command::Node(NodeCommand::Show { name }) => commands::nodes::show(&ctx, &name).await,
        Command::Node(NodeCommand::Remove { name }) => commands::nodes::remove(&ctx, &name).await,
        Command::Token(TokenCommand::Create {
            role,
            ttl,
            uses,
            description,
        }) => commands::tokens::create(&ctx, role, &ttl, uses, description).await,
        Command::Token(TokenCommand::List) => commands::tokens::list(&ctx).await,
        Command::Token(TokenCommand::Revoke { id }) => commands::tokens::revoke(&ctx, &id).await,
        Command::Discover { timeout } => commands::discover::run(&ctx, timeout).await,
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(dispatch(cli)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn arguments_parse() {
        let cli = Cli::try_parse_from([
            "cloudos", "--output", "json", "token", "create", "--role", "admin", "--ttl", "1h",
            "--uses", "2",
        ])
        .expect("parse");
        assert_eq!(cli.output, Output::Json);
        match cli.command {
            Command::Token(TokenCommand::Create {
                role, ttl, uses, ..
            }) => {
                assert_eq!((role, ttl.as_str(), uses), (Role::Admin, "1h", Some(2)));
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from([
            "cloudos", "node", "list", "-o", "table", "--config", "/tmp/c",
        ])
        .expect("parse");
        assert_eq!(cli.config, Some(PathBuf::from("/tmp/c")));
        let cli = Cli::try_parse_from(["cloudos", "discover", "--timeout", "500s"]).expect("parse");
        assert!(
            matches!(cli.command, Command::Discover { timeout } if timeout == Duration::from_secs(500))
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        for args in [
            &["cloudos", "token", "create", "--role", "boss"][..],
            &["cloudos", "discover", "--timeout", "3"],
            &["cloudos", "node", "show"],
            &["cloudos", "-o", "yaml", "status"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }
}
