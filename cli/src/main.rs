//! `cloudos`: the CloudOS command line, for an admin's laptop or any machine that can reach
//! the master. `cloudos login` joins as an admin with a token; every other command talks
//! to the master over mTLS with the stored credentials (see `config.rs`).

mod commands;
mod config;
mod format;
mod stack;
mod table;

use cloudos_cluster::health::{HealthCheck, Probe};
use cloudos_cluster::revision::PolicyChange;
use cloudos_cluster::volume::VolumeMount;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use cloudos_cluster::workload::{self, NetworkMode, PortMapping, ResourceRequest, WorkloadSpec};
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
    /// Log in to the cluster with a login token and store the credentials.
    Login {
        /// A login token (`cloudos user add`; the master prints the first admin's at its
        /// first start).
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
    /// The busiest nodes and running tasks now, by CPU (memory, load, I/O beside).
    Top,
    /// Nodes of the cluster.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Join tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The people who use the cluster, and their roles.
    #[command(subcommand)]
    User(UserCommand),
    /// API keys for automation (`Authorization: Bearer KEY` on the same API).
    #[command(subcommand, name = "apikey")]
    ApiKey(ApiKeyCommand),
    /// Open the web dashboard in your browser, logged in (a one-time link).
    Dashboard {
        /// Print the link instead of opening a browser.
        #[arg(long)]
        print: bool,
    },
    /// A shell completion script on stdout: `source <(cloudos completion bash)`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write a man page per command (cloudos.1, cloudos-user-add.1, …) into DIR.
    #[command(hide = true)]
    Man { dir: PathBuf },
    /// Every change made through the API: who, from where, what, when and the result.
    Audit {
        /// An RFC 3339 time, or a span back from now such as 1h or 7d.
        #[arg(long)]
        since: Option<String>,
        /// Only this user's changes (`key:NAME` for an API key's).
        #[arg(long)]
        user: Option<String>,
        /// The newest this many (default 200).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Signed update bundles the master keeps for its nodes.
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// Masters advertising on this LAN (mDNS).
    Discover {
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Run a task to completion: `cloudos run [OPTIONS] IMAGE [-- COMMAND…]`; prints its id.
    Run {
        #[command(flatten)]
        spec: SpecArgs,
        /// New runs when its node dies (or it cannot start there).
        #[arg(long, default_value_t = 0)]
        retries: u32,
        /// Stop the task and fail it when it has run this long (`30s`, `10m`, `1h30m`),
        /// counted from its first start: the queue and the image pull do not count.
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
        /// A file or directory copied into the container's /input (as /input/NAME) before
        /// it starts; repeat for more (64 MiB in all).
        #[arg(long, value_name = "PATH")]
        input: Vec<PathBuf>,
        /// Show the pull, stream the logs, exit with the task's exit code.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Tasks and services: state, node, age, exit code, why they wait.
    Ps {
        /// Every task the master keeps, also those that ended more than an hour ago, and
        /// what it keeps (finished tasks are deleted after a while; see `nodeos master
        /// --keep-finished`).
        #[arg(long, short = 'a')]
        all: bool,
    },
    /// A task's (or replica's) stdout and stderr.
    Logs {
        id: String,
        /// Keep streaming until the task ends.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Stop a task.
    Cancel { id: String },
    /// Download what a task wrote to /output into PATH (default ./ID-output; `-`: tar to stdout).
    Output { id: String, path: Option<PathBuf> },
    /// Keep N replicas of a container running: `cloudos deploy NAME [OPTIONS] IMAGE [-- COMMAND…]`.
    /// On an existing service with another spec: a rolling update to a new revision, which
    /// goes back by itself if its replicas fail.
    Deploy {
        name: String,
        /// How many (default: as the service has it, 1 for a new one).
        #[arg(long)]
        replicas: Option<u32>,
        /// Replicas an update may run above the count (default 1).
        #[arg(long)]
        max_surge: Option<u32>,
        /// Replicas an update may take out of service below the count (default 0).
        #[arg(long)]
        max_unavailable: Option<u32>,
        /// How long a new replica must run (and pass its check) before the next old one
        /// leaves; one that exits within it fails the update (default 5s).
        #[arg(long, value_parser = parse_duration)]
        update_monitor: Option<Duration>,
        /// Follow the update until every replica runs the new revision; fail if it was
        /// rolled back.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Update a service back to the previous revision that did not fail (or to --to N).
    Rollback {
        name: String,
        /// The revision whose spec to go back to (`cloudos history` lists them).
        #[arg(long)]
        to: Option<u32>,
        /// Follow the update until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// The revisions a service keeps: when, which image, why, and whether it failed.
    History { name: String },
    /// Make the services and tasks of a stack file be (created, updated or left as they
    /// are); with --dry-run only say what would change.
    Apply {
        /// The stack file (TOML; `cloudos export` writes one).
        #[arg(long, short = 'f', value_name = "FILE")]
        file: PathBuf,
        #[arg(long)]
        dry_run: bool,
        /// Also delete the services the file does not name.
        #[arg(long)]
        prune: bool,
    },
    /// Write the services as a stack file (to FILE, or standard output).
    Export { file: Option<PathBuf> },
    /// Change a service's number of replicas.
    Scale { name: String, replicas: u32 },
    /// Stop a service's replicas and forget it.
    Delete { name: String },
    /// Upgrade the cluster to a kept release, a batch of compute nodes at a time (cordon,
    /// drain, upgrade, back Ready, uncordon), then the master; or follow, resume or abort
    /// the rollout.
    Upgrade(UpgradeArgs),
    /// Backups of the master's state (restore one with `nodeos master --restore FILE`).
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Named volumes (`--volume NAME:/path`): each is on the node that holds its data.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Secrets (`--secret NAME`): sealed on the master, sent only to the nodes that run
    /// work using them, never shown again.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// The cluster's credentials for private registries, handed only to the nodes that
    /// pull from them (a node's registries.toml still wins).
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// The cluster's masters, when it has several (`cloudos status` lists them).
    #[command(subcommand)]
    Master(MasterCommand),
}

#[derive(Debug, Subcommand)]
enum MasterCommand {
    /// Remove master NAME from the masters: its etcd member leaves the cluster and it stops.
    /// Refused when the others would be left without a quorum.
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
enum RegistryCommand {
    /// Log the cluster in to REGISTRY (HOST or HOST:PORT, as image references name it),
    /// the password or token read from standard input. Again: replaces.
    Login {
        registry: String,
        /// Log in as USER with the password on standard input.
        #[arg(
            long,
            short = 'u',
            value_name = "USER",
            conflicts_with = "token_stdin",
            required_unless_present = "token_stdin"
        )]
        username: Option<String>,
        /// The password comes on standard input (the only way: never an argument).
        #[arg(long, requires = "username")]
        password_stdin: bool,
        /// A bearer token comes on standard input instead of a user and password.
        #[arg(long)]
        token_stdin: bool,
    },
    /// The registries the cluster is logged in to, and as whom; never a password.
    List,
    /// Forget the cluster's credentials for REGISTRY.
    Logout { registry: String },
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Make a secret from a file (`-` for standard input) or a literal value.
    Create {
        name: String,
        /// The file that holds the value; `-` reads standard input.
        #[arg(
            long,
            short = 'f',
            value_name = "FILE",
            conflicts_with = "from_literal",
            required_unless_present = "from_literal"
        )]
        file: Option<PathBuf>,
        /// The value itself (it stays in your shell's history: prefer -f).
        #[arg(long, value_name = "VALUE")]
        from_literal: Option<String>,
    },
    /// Each secret's name, size and users; never a value.
    List,
    /// Forget a secret; refused while work names it.
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
enum VolumeCommand {
    /// Make a named volume before any work uses it, to give it a size limit. Work that
    /// names a volume makes it anyway, without a limit.
    Create {
        name: String,
        /// Most it may hold (500Mi, 10Gi, 2G): writes beyond fail with "Disk quota
        /// exceeded". Needs project quotas on the node's data partition (a current
        /// install has them).
        #[arg(long, value_parser = parse_size_limit)]
        size: Option<u64>,
    },
    /// Change a volume's size limit (`none` lifts it); its node applies it at once.
    Resize {
        name: String,
        /// 500Mi, 10Gi, 2G, or none.
        #[arg(value_parser = parse_size_or_none)]
        size: SizeOrNone,
    },
    /// Each volume, the node it is on, its size limit, and what uses it.
    List,
    /// Forget a volume and delete its data on its node; refused while work uses it.
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
enum BackupCommand {
    /// Write an encrypted backup of the master's state (CA and its key, tokens, nodes,
    /// admins, workloads, task logs, releases) to FILE (0600). The passphrase is asked for
    /// without echo, or read from --passphrase-file (its first line).
    Create {
        /// Where to write the backup (`-o` is the output format, so FILE is positional).
        file: PathBuf,
        /// Read the passphrase from this file instead of asking for it.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
}

/// What to run, shared by `run` and `deploy`.
#[derive(Debug, clap::Args)]
struct SpecArgs {
    /// CPU to reserve and limit to: millicores (500m) or cores (2, 0.5).
    #[arg(long, value_parser = parse_cpu)]
    cpu: Option<u64>,
    /// Memory to reserve and limit to: 64Mi, 1Gi, 512M.
    #[arg(long, value_parser = parse_memory)]
    memory: Option<u64>,
    /// Most processes the container may have (default 4096).
    #[arg(long)]
    pids: Option<u64>,
    /// KEY=VALUE in the container's environment; repeat for more. KEY=secret:NAME takes
    /// the value of secret NAME (which the spec names, never shows).
    #[arg(long = "env", short = 'e', value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Only nodes with this label (key=value); repeat for more.
    #[arg(long = "node-selector", value_parser = parse_selector)]
    node_selector: Vec<(String, String)>,
    /// Working directory inside the container.
    #[arg(long)]
    workdir: Option<String>,
    /// UID or UID:GID to run as.
    #[arg(long)]
    user: Option<String>,
    /// Replace the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// `bridge` (the default: an address of its own on the node's bridge, with outbound
    /// NAT), `host` (the node's network) or `none` (loopback only).
    #[arg(long, default_value = "bridge", value_parser = parse_network)]
    network: NetworkMode,
    /// HOST:CONTAINER[/udp]: the node's port HOST leads to the container's port
    /// CONTAINER (bridge network); repeat for more.
    #[arg(long = "publish", short = 'p', value_parser = parse_publish)]
    publish: Vec<PortMapping>,
    /// Mount the container's root read-only.
    #[arg(long)]
    read_only: bool,
    /// NAME:/path[:ro] (a named volume on the node that holds it, made on first use) or
    /// /host/path:/path[:ro] (a directory of the node, if its admin allows it); repeat for
    /// more.
    #[arg(long, short = 'v', value_name = "SOURCE:/path[:ro]", value_parser = parse_volume)]
    volume: Vec<VolumeMount>,
    /// A secret (`cloudos secret create`) the container reads as /run/secrets/NAME (mode
    /// 0400, on a memory file system of the node); repeat for more.
    #[arg(long, value_name = "NAME")]
    secret: Vec<String>,
    /// Health check: `GET /PATH` on the container's PORT passes with a 2xx or 3xx
    /// (`8080/healthz`; `80` for `/`).
    #[arg(long, value_name = "PORT[/PATH]", value_parser = parse_health_http, conflicts_with_all = ["health_tcp", "health_cmd"])]
    health_http: Option<Probe>,
    /// Health check: the container's PORT accepts a TCP connection.
    #[arg(long, value_name = "PORT", value_parser = parse_health_tcp, conflicts_with = "health_cmd")]
    health_tcp: Option<Probe>,
    /// Health check: `sh -c COMMAND` inside the container exits 0 (it runs as the
    /// container's user, with its environment; the image needs /bin/sh).
    #[arg(long, value_name = "COMMAND", value_parser = parse_health_cmd)]
    health_cmd: Option<Probe>,
    /// Time between health probes (default 5s).
    #[arg(long, value_parser = parse_duration)]
    health_interval: Option<Duration>,
    /// A probe that takes longer fails (default 2s).
    #[arg(long, value_parser = parse_duration)]
    health_timeout: Option<Duration>,
    /// Failed probes in a row that make it unhealthy (default 3).
    #[arg(long)]
    health_retries: Option<u32>,
    /// Failures this soon after the start do not count (default 0s).
    #[arg(long, value_parser = parse_duration)]
    health_start_period: Option<Duration>,
    /// The image, such as registry.lan:5000/busybox:1.
    image: String,
    /// The command, after `--` (default: the image's).
    #[arg(last = true)]
    command: Vec<String>,
}

impl SpecArgs {
    /// The health check the flags describe: none without a probe (the times alone mean
    /// nothing).
    fn health(&self) -> Option<HealthCheck> {
        let probe = self
            .health_http
            .clone()
            .or(self.health_tcp.clone())
            .or(self.health_cmd.clone())?;
        let secs = |d: Option<Duration>, default: u32| {
            d.map_or(default, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        };
        let mut check = HealthCheck::new(probe);
        check.interval_secs = secs(self.health_interval, check.interval_secs);
        check.timeout_secs = secs(self.health_timeout, check.timeout_secs);
        check.retries = self.health_retries.unwrap_or(check.retries);
        check.start_period_secs = secs(self.health_start_period, 0);
        Some(check)
    }

    fn into_spec(self) -> WorkloadSpec {
        let defaults = ResourceRequest::default();
        let mut spec = WorkloadSpec {
            input: None,
            health: self.health(),
            volumes: self.volume,
            secrets: self.secret,
            image: self.image,
            command: self.command,
            entrypoint: self.entrypoint.map(|e| vec![e]),
            env: Default::default(),
            secret_env: Default::default(),
            workdir: self.workdir,
            user: self.user,
            resources: ResourceRequest {
                cpu_millicores: self.cpu.unwrap_or(defaults.cpu_millicores),
                memory_bytes: self.memory.unwrap_or(defaults.memory_bytes),
                pids: self.pids,
            },
            node_selector: self.node_selector.into_iter().collect(),
            network: self.network,
            publish: self.publish,
            readonly_root: self.read_only,
            // The master reads them from the registry.
            platforms: Vec::new(),
        };
        // `KEY=secret:NAME` takes the secret's value (the spec holds only its name).
        spec.set_env(self.env);
        spec
    }
}

fn parse_health_http(value: &str) -> Result<Probe, String> {
    cloudos_cluster::health::parse_http(value).map_err(|e| e.to_string())
}

fn parse_health_cmd(value: &str) -> Result<Probe, String> {
    cloudos_cluster::health::parse_cmd(value).map_err(|e| e.to_string())
}

fn parse_health_tcp(value: &str) -> Result<Probe, String> {
    cloudos_cluster::health::parse_tcp(value).map_err(|e| e.to_string())
}

fn parse_cpu(value: &str) -> Result<u64, String> {
    workload::parse_cpu(value).map_err(|e| e.to_string())
}

fn parse_size_limit(value: &str) -> Result<u64, String> {
    cloudos_cluster::volume::parse_size_limit(value).map_err(|e| e.to_string())
}

/// A size, or `none`.
#[derive(Debug, Clone, Copy)]
struct SizeOrNone(Option<u64>);

fn parse_size_or_none(value: &str) -> Result<SizeOrNone, String> {
    if value == "none" {
        return Ok(SizeOrNone(None));
    }
    parse_size_limit(value).map(|bytes| SizeOrNone(Some(bytes)))
}

fn parse_memory(value: &str) -> Result<u64, String> {
    workload::parse_memory(value).map_err(|e| e.to_string())
}

fn parse_env(value: &str) -> Result<(String, String), String> {
    workload::parse_env(value).map_err(|e| e.to_string())
}

fn parse_selector(value: &str) -> Result<(String, String), String> {
    workload::parse_selector(value).map_err(|e| e.to_string())
}

fn parse_network(value: &str) -> Result<NetworkMode, String> {
    value.parse()
}

fn parse_volume(value: &str) -> Result<VolumeMount, String> {
    cloudos_cluster::volume::parse_volume(value).map_err(|e| e.to_string())
}

fn parse_publish(value: &str) -> Result<PortMapping, String> {
    value
        .parse()
        .map_err(|e: workload::PublishError| e.to_string())
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// All nodes: NAME ROLE ADDRESS ARCH STATE CPU MEM AGE.
    List,
    /// One node in detail, with its telemetry.
    Show { name: String },
    /// Set (KEY=VALUE) or remove (KEY-) the labels selectors match; only admins set
    /// them, what a node reports of itself is shown apart.
    Label {
        name: String,
        changes: Vec<String>,
        /// Copy the labels the node reports into its labels.
        #[arg(long)]
        approve_reported: bool,
    },
    /// Evict a node and revoke its certificates.
    Remove { name: String },
    /// Place no new work on a node; what runs there keeps running.
    Cordon { name: String },
    /// Let a cordoned node take new work again.
    Uncordon { name: String },
    /// Cordon a node and move everything off it: service replicas start elsewhere before
    /// they stop there; tasks may finish. Returns once the node runs nothing.
    Drain {
        name: String,
        /// How long tasks may run on (then they are stopped: retried elsewhere if they
        /// have retries left, else lost) and replicas may wait for room elsewhere.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Reboot a node (a CloudOS appliance) and wait until it is back Ready.
    Reboot {
        name: String,
        /// Return once the node was asked, without waiting for it.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the node to come back.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Switch a node to the system in its other slot and reboot it; waits until it is back
    /// Ready with that slot confirmed (a system that does not come up gives way to the
    /// current one again).
    Rollback {
        name: String,
        /// Return once the node was told.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the node to come back.
        #[arg(long, default_value = "15m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Install a kept release on one node (`cloudos release add` it first): the node
    /// checks it, writes its other system slot and reboots into it; waits until it is back.
    Upgrade {
        name: String,
        #[arg(long = "to", value_name = "VERSION")]
        version: String,
        /// Also an older version, or the same one again.
        #[arg(long)]
        allow_downgrade: bool,
        /// Try again a release this node already failed to come up with.
        #[arg(long)]
        retry_failed: bool,
        /// How long to wait for the node to come back on the new version.
        #[arg(long, default_value = "15m", value_parser = parse_duration)]
        timeout: Duration,
        /// Return once the node was told.
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct UpgradeArgs {
    #[command(subcommand)]
    command: Option<UpgradeCommand>,
    /// The release to go to (`cloudos release list`).
    #[arg(long = "to", value_name = "VERSION")]
    version: Option<String>,
    /// Only compute nodes with this label (key=value); repeat for more.
    #[arg(long = "nodes", value_name = "KEY=VALUE", value_parser = parse_selector)]
    nodes: Vec<(String, String)>,
    /// How many compute nodes may be away (drained, rebooting) at once.
    #[arg(long, default_value_t = 1)]
    max_unavailable: u32,
    /// Also an older version, or the same one again.
    #[arg(long)]
    allow_downgrade: bool,
    /// Send nodes into a release they already failed to come up with.
    #[arg(long)]
    retry_failed: bool,
    /// Upgrade only the compute nodes, not the master.
    #[arg(long)]
    skip_master: bool,
    /// How long each drain lets tasks finish (and replicas find room elsewhere).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// How long one node may take from the upgrade to Ready on the version.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    node_timeout: Duration,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Debug, Clone, Copy, clap::Args)]
struct WaitArgs {
    /// Return at once; the master goes on (follow it with `cloudos upgrade status`).
    #[arg(long, global = true)]
    no_wait: bool,
    /// How long to follow the rollout.
    #[arg(long, global = true, default_value = "2h", value_parser = parse_duration)]
    timeout: Duration,
}

impl WaitArgs {
    fn wait(self) -> Option<Duration> {
        (!self.no_wait).then_some(self.timeout)
    }
}

#[derive(Debug, Subcommand)]
enum UpgradeCommand {
    /// Every node's version, slot and last upgrade, and the rollout's steps.
    Status,
    /// Go on with a failed or aborted rollout; its failed nodes are left out unless
    /// --retry-failed.
    Resume {
        #[arg(long)]
        retry_failed: bool,
    },
    /// Start no more nodes; nodes under way finish.
    Abort,
}

#[derive(Debug, Subcommand)]
enum ReleaseCommand {
    /// Upload a bundle (`out/cloudos-VERSION-ARCH.bundle` from the build); the master
    /// checks its signature and every part before it keeps it.
    Add { file: PathBuf },
    /// The kept releases: VERSION ARCH SIZE KEY, and the version the master runs.
    List,
    /// Download a kept release (the master's own among them) into a file, checked against
    /// the release keys this `cloudos` trusts before it is kept.
    Get {
        version: String,
        /// Where to write the bundle (`-o` is the output format, so FILE is positional).
        file: PathBuf,
        /// x86_64 or aarch64; the architecture `cloudos` runs on when not given.
        #[arg(long)]
        arch: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Make a one-use login for a person; prints its token (only this once).
    Add {
        name: String,
        /// admin (everything), operator (runs and stops work) or viewer (reads).
        #[arg(long, value_parser = parse_user_role)]
        role: Role,
        /// How long the login stays valid.
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
    /// Everyone on record: NAME ROLE FROM TOKEN SERIAL AGE.
    List,
    /// Change a user's role; it applies from their next request.
    Role {
        name: String,
        #[arg(value_parser = parse_user_role)]
        role: Role,
    },
    /// Remove a user: every certificate of theirs stops working (a lost laptop, someone
    /// who left).
    Remove { name: String },
    /// Set your own password for the dashboard (asked on the terminal, or one line on
    /// stdin).
    Password,
}

#[derive(Debug, Subcommand)]
enum ApiKeyCommand {
    /// Make a key; prints it (only this once).
    Create {
        /// What it is for, such as ci-deploy.
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = parse_user_role)]
        role: Role,
        /// Lifetime such as 30d; at most 365d.
        #[arg(long, default_value = "30d")]
        ttl: String,
    },
    /// All keys (never their secrets): ID NAME ROLE BY AGE EXPIRES STATE.
    List,
    /// Revoke a key by its id; it stops working at once.
    Revoke { id: String },
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
        /// A label (key=value) every node joining with it gets: the labels selectors
        /// match; repeat for more.
        #[arg(long = "label", value_parser = parse_selector)]
        labels: Vec<(String, String)>,
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

fn parse_user_role(value: &str) -> Result<Role, String> {
    match parse_role(value)? {
        role if role.is_user() => Ok(role),
        role => Err(format!(
            "a user's role is admin, operator or viewer, not {role}"
        )),
    }
}

fn parse_role(value: &str) -> Result<Role, String> {
    value
        .parse()
        .map_err(|e: cloudos_cluster::identity::IdentityError| e.to_string())
}

/// `cloudos upgrade …`: a subcommand, or `--to VERSION` to start a rollout.
async fn upgrade(ctx: &Ctx, args: UpgradeArgs) -> anyhow::Result<()> {
    let wait = args.wait.wait();
    match (args.command, args.version) {
        (Some(UpgradeCommand::Status), _) => commands::rollout::status(ctx).await,
        (Some(UpgradeCommand::Resume { retry_failed }), _) => {
            commands::rollout::resume(ctx, retry_failed, wait).await
        }
        (Some(UpgradeCommand::Abort), _) => commands::rollout::abort(ctx, wait).await,
        (None, None) => anyhow::bail!(
            "say which release: `cloudos upgrade --to VERSION` (see `cloudos release list`), or `cloudos upgrade status`"
        ),
        (None, Some(version)) => {
            let request = cloudos_cluster::rollout::RolloutRequest {
                version,
                nodes: args.nodes.into_iter().collect(),
                max_unavailable: args.max_unavailable,
                allow_downgrade: args.allow_downgrade,
                retry_failed: args.retry_failed,
                drain_timeout_secs: args.drain_timeout.as_secs(),
                node_timeout_secs: args.node_timeout.as_secs(),
                skip_master: args.skip_master,
            };
            commands::rollout::start(ctx, &request, wait).await
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let ctx = Ctx {
        config_dir: config::dir_from_env(cli.config.as_deref())?,
        output: cli.output,
    };
    match cli.command {
        Command::Completion { shell } => {
            // Into memory first: the generator panics on a write error (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "cloudos", &mut script);
            use std::io::Write as _;
            match std::io::stdout().write_all(&script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
        Command::Man { dir } => commands::manual::write(Cli::command(), &dir),
        Command::Login {
            token,
            master,
            name,
            discover_timeout,
        } => commands::login::run(&ctx, &token, master, name, discover_timeout).await,
        Command::Status => commands::status::run(&ctx).await,
        Command::Top => commands::top::run(&ctx).await,
        Command::Node(NodeCommand::List) => commands::nodes::list(&ctx).await,
        Command::Node(NodeCommand::Show { name }) => commands::nodes::show(&ctx, &name).await,
        Command::Node(NodeCommand::Remove { name }) => commands::nodes::remove(&ctx, &name).await,
        Command::Node(NodeCommand::Cordon { name }) => {
            commands::nodeops::cordon(&ctx, &name, true).await
        }
        Command::Node(NodeCommand::Uncordon { name }) => {
            commands::nodeops::cordon(&ctx, &name, false).await
        }
        Command::Node(NodeCommand::Drain { name, timeout }) => {
            commands::nodeops::drain(&ctx, &name, timeout).await
        }
        Command::Node(NodeCommand::Reboot {
            name,
            no_wait,
            timeout,
        }) => commands::nodeops::reboot(&ctx, &name, !no_wait, timeout).await,
        Command::Node(NodeCommand::Label {
            name,
            changes,
            approve_reported,
        }) => commands::nodes::label(&ctx, &name, &changes, approve_reported).await,
        Command::Node(NodeCommand::Upgrade {
            name,
            version,
            allow_downgrade,
            retry_failed,
            timeout,
            no_wait,
        }) => {
            let wait = (!no_wait).then_some(timeout);
            commands::upgrade::node(&ctx, &name, &version, allow_downgrade, retry_failed, wait)
                .await
        }
        Command::Node(NodeCommand::Rollback {
            name,
            no_wait,
            timeout,
        }) => commands::upgrade::rollback(&ctx, &name, (!no_wait).then_some(timeout)).await,
        Command::Upgrade(args) => upgrade(&ctx, args).await,
        Command::User(UserCommand::Add { name, role, ttl }) => {
            commands::users::add(&ctx, &name, role, Some(ttl)).await
        }
        Command::User(UserCommand::List) => commands::users::list(&ctx).await,
        Command::User(UserCommand::Role { name, role }) => {
            commands::users::role(&ctx, &name, role).await
        }
        Command::User(UserCommand::Remove { name }) => commands::users::remove(&ctx, &name).await,
        Command::User(UserCommand::Password) => commands::users::password(&ctx).await,
        Command::Dashboard { print } => commands::users::dashboard(&ctx, print).await,
        Command::ApiKey(ApiKeyCommand::Create { name, role, ttl }) => {
            commands::apikeys::create(&ctx, &name, role, &ttl).await
        }
        Command::ApiKey(ApiKeyCommand::List) => commands::apikeys::list(&ctx).await,
        Command::ApiKey(ApiKeyCommand::Revoke { id }) => commands::apikeys::revoke(&ctx, &id).await,
        Command::Audit { since, user, limit } => {
            commands::audit::run(&ctx, since.as_deref(), user.as_deref(), limit).await
        }
        Command::Release(ReleaseCommand::Add { file }) => {
            commands::releases::add(&ctx, &file).await
        }
        Command::Release(ReleaseCommand::List) => commands::releases::list(&ctx).await,
        Command::Release(ReleaseCommand::Get {
            version,
            file,
            arch,
        }) => {
            let arch = match arch {
                Some(arch) => arch,
                None => cloudos_release::Arch::running()
                    .map(|a| a.as_str().to_owned())
                    .ok_or_else(|| anyhow::anyhow!("this machine's architecture has no CloudOS releases: name one with --arch"))?,
            };
            commands::releases::get(&ctx, &version, &arch, &file).await
        }
        Command::Token(TokenCommand::Create {
            role,
            ttl,
            uses,
            description,
            labels,
        }) => {
            let labels = labels.into_iter().collect();
            commands::tokens::create(&ctx, role, &ttl, uses, description, labels).await
        }
        Command::Token(TokenCommand::List) => commands::tokens::list(&ctx).await,
        Command::Token(TokenCommand::Revoke { id }) => commands::tokens::revoke(&ctx, &id).await,
        Command::Discover { timeout } => commands::discover::run(&ctx, timeout).await,
        Command::Run {
            spec,
            retries,
            timeout,
            input,
            follow,
        } => {
            let run = commands::workloads::Run {
                retries,
                timeout,
                input,
                follow,
            };
            commands::workloads::run(&ctx, spec.into_spec(), run).await
        }
        Command::Ps { all } => commands::workloads::ps(&ctx, all).await,
        Command::Logs { id, follow } => commands::workloads::logs(&ctx, &id, follow).await,
        Command::Cancel { id } => commands::workloads::cancel(&ctx, &id).await,
        Command::Output { id, path } => commands::workloads::output(&ctx, &id, path).await,
        Command::Deploy {
            name,
            replicas,
            max_surge,
            max_unavailable,
            update_monitor,
            wait,
            spec,
        } => {
            let deploy = commands::services::Deploy {
                name,
                replicas,
                policy: PolicyChange {
                    max_surge,
                    max_unavailable,
                    monitor_secs: update_monitor.map(|d| d.as_secs()),
                },
                wait,
            };
            commands::services::deploy(&ctx, deploy, spec.into_spec()).await
        }
        Command::Rollback { name, to, wait } => {
            commands::services::rollback(&ctx, &name, to, wait).await
        }
        Command::History { name } => commands::services::history(&ctx, &name).await,
        Command::Apply {
            file,
            dry_run,
            prune,
        } => commands::stack::apply(&ctx, &file, dry_run, prune).await,
        Command::Export { file } => commands::stack::export(&ctx, file.as_deref()).await,
        Command::Scale { name, replicas } => commands::services::scale(&ctx, &name, replicas).await,
        Command::Delete { name } => commands::services::delete(&ctx, &name).await,
        Command::Secret(SecretCommand::Create {
            name,
            file,
            from_literal,
        }) => {
            let source = match (&file, from_literal) {
                (Some(path), _) => commands::secrets::Source::File(path),
                (None, Some(value)) => commands::secrets::Source::Literal(value),
                (None, None) => anyhow::bail!("give the value with -f FILE or --from-literal"),
            };
            commands::secrets::create(&ctx, &name, source).await
        }
        Command::Secret(SecretCommand::List) => commands::secrets::list(&ctx).await,
        Command::Secret(SecretCommand::Rm { name }) => commands::secrets::remove(&ctx, &name).await,
        Command::Master(MasterCommand::Remove { name }) => {
            commands::masters::remove(&ctx, &name).await
        }
        Command::Registry(RegistryCommand::Login {
            registry,
            username,
            password_stdin,
            token_stdin: _,
        }) => {
            if username.is_some() && !password_stdin {
                anyhow::bail!(
                    "give the password on standard input with --password-stdin (never as an argument)"
                );
            }
            commands::registries::login(&ctx, &registry, username).await
        }
        Command::Registry(RegistryCommand::List) => commands::registries::list(&ctx).await,
        Command::Registry(RegistryCommand::Logout { registry }) => {
            commands::registries::logout(&ctx, &registry).await
        }
        Command::Volume(VolumeCommand::Create { name, size }) => {
            commands::volumes::create(&ctx, &name, size).await
        }
        Command::Volume(VolumeCommand::Resize { name, size }) => {
            commands::volumes::resize(&ctx, &name, size.0).await
        }
        Command::Volume(VolumeCommand::List) => commands::volumes::list(&ctx).await,
        Command::Volume(VolumeCommand::Rm { name }) => commands::volumes::remove(&ctx, &name).await,
        Command::Backup(BackupCommand::Create {
            file,
            passphrase_file,
        }) => commands::backup::create(&ctx, &file, passphrase_file.as_deref()).await,
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
    fn completions_know_every_command_and_bash_reads_them() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "cloudos", &mut script);
            let script = String::from_utf8(script).expect("utf-8");
            for word in ["apikey", "audit", "user", "completion", "deploy"] {
                assert!(script.contains(word), "{shell}: no {word}");
            }
            if shell == clap_complete::Shell::Bash {
                let dir = tempfile::tempdir().expect("tmp");
                let file = dir.path().join("cloudos.bash");
                std::fs::write(&file, &script).expect("write");
                let checked = std::process::Command::new("bash")
                    .arg("-n")
                    .arg(&file)
                    .output()
                    .expect("bash");
                assert!(
                    checked.status.success(),
                    "{}",
                    String::from_utf8_lossy(&checked.stderr)
                );
            }
        }
    }

    #[test]
    fn every_command_has_a_man_page() {
        let dir = tempfile::tempdir().expect("tmp");
        commands::manual::write(Cli::command(), dir.path()).expect("man pages");
        fn expect(command: &clap::Command, name: &str, dir: &std::path::Path) {
            let page = std::fs::read_to_string(dir.join(format!("{name}.1")))
                .unwrap_or_else(|e| panic!("{name}.1: {e}"));
            assert!(
                page.starts_with(".ie") || page.contains(".TH"),
                "{name}.1 is not a man page"
            );
            for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
                expect(sub, &format!("{name}-{}", sub.get_name()), dir);
            }
        }
        expect(&Cli::command(), "cloudos", dir.path());
        let add = std::fs::read_to_string(dir.path().join("cloudos-user-add.1")).expect("page");
        assert!(add.contains("viewer"), "{add}");
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
    fn run_takes_resources_and_a_command() {
        let cli = Cli::try_parse_from([
            "cloudos",
            "run",
            "--cpu",
            "500m",
            "--memory",
            "64Mi",
            "--pids",
            "64",
            "-e",
            "A=1",
            "--node-selector",
            "zone=a",
            "--network",
            "bridge",
            "-p",
            "8080:80",
            "--publish",
            "53:53/udp",
            "reg:5000/busybox:1",
            "--",
            "sh",
            "-c",
            "echo hi",
        ])
        .expect("parse");
        let Command::Run { spec, .. } = cli.command else {
            panic!("not run")
        };
        let spec = spec.into_spec();
        assert_eq!(spec.resources.cpu_millicores, 500);
        assert_eq!(spec.resources.memory_bytes, 64 << 20);
        assert_eq!(spec.resources.pids, Some(64));
        assert_eq!(spec.network, NetworkMode::Bridge);
        let published: Vec<String> = spec.publish.iter().map(|p| p.to_string()).collect();
        assert_eq!(published, ["8080:80/tcp", "53:53/udp"]);
        assert_eq!(spec.command, ["sh", "-c", "echo hi"]);
        assert_eq!(spec.env.get("A").map(String::as_str), Some("1"));
        assert_eq!(
            spec.node_selector.get("zone").map(String::as_str),
            Some("a")
        );
        for bad in [
            &["cloudos", "run", "--cpu=-1", "img"][..],
            &["cloudos", "run", "--memory", "lots", "img"],
            &["cloudos", "run", "--memory", "1Ki", "img"],
            &["cloudos", "run", "-e", "1X=2", "img"],
            &["cloudos", "run", "--network", "overlay", "img"],
            &["cloudos", "run", "--publish", "80", "img"],
            &["cloudos", "run"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deploy_takes_a_health_check() {
        let cli = Cli::try_parse_from([
            "cloudos",
            "deploy",
            "web",
            "--health-http",
            "8080/healthz",
            "--health-interval",
            "2s",
            "--health-retries",
            "2",
            "img",
        ])
        .expect("parse");
        let Command::Deploy { spec, .. } = cli.command else {
            panic!("not deploy")
        };
        let check = spec.into_spec().health.expect("a check");
        assert_eq!(
            check.probe,
            Probe::Http {
                port: 8080,
                path: "/healthz".into()
            }
        );
        assert_eq!((check.interval_secs, check.timeout_secs), (2, 2));
        assert_eq!((check.retries, check.start_period_secs), (2, 0));
        let plain =
            Cli::try_parse_from(["cloudos", "deploy", "web", "--health-interval", "9s", "img"])
                .expect("parse");
        let Command::Deploy { spec, .. } = plain.command else {
            panic!("not deploy")
        };
        assert_eq!(
            spec.into_spec().health,
            None,
            "times without a probe check nothing"
        );
        for bad in [
            &[
                "cloudos",
                "deploy",
                "web",
                "--health-http",
                "x/healthz",
                "img",
            ][..],
            &["cloudos", "deploy", "web", "--health-tcp", "0", "img"],
            &[
                "cloudos",
                "deploy",
                "web",
                "--health-http",
                "80",
                "--health-tcp",
                "80",
                "img",
            ],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
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
