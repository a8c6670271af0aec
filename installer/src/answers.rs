//! The answer file: everything a person decides during an install, as TOML.
//!
//! Owns parsing, validation and the two renderings (the answer file itself and the
//! `config.toml` the installed node reads, which the node settings model `cloudos_settings`
//! writes; the values the node reads are checked by that model's rules). The wizard builds
//! the same [`Answers`], so an interactive install and an unattended one are the same value
//! from here on. Fetching an answer file is not done here: [`Source`] only says where it is.
//!
//! ```toml
//! mode = "compute"
//! hostname = "rack1-n3"
//! disk = "/dev/vda"
//! wipe = true
//! token = "cloudos1_…"
//! master = "10.0.0.1"          # optional: absent means found by mDNS
//! labels = ["zone=a"]
//!
//! [network]
//! mode = "static"
//! address = "10.0.0.5/24"
//! gateway = "10.0.0.1"
//! dns = ["10.0.0.1"]
//! ```
//!
//! A master added to the masters of a running cluster (`mode = "add-master"`): a token of
//! role master (`cloudos token create --role master --ttl 1h`) and a master's address.
//! The master joins at its first start; the token stays in its `config.toml` until then.
//!
//! A master restored from a backup (`cloudos backup create`) instead of a new cluster: the
//! backup and a file whose first line is its passphrase, each `/path` on the live system or
//! `LABEL=NAME:/path` on a partition (a USB stick, the config disk). Give it the address the
//! old master had: the nodes dial it.
//!
//! ```toml
//! mode = "restore"
//! hostname = "cloudos-master"
//! disk = "/dev/vda"
//! wipe = true
//! backup = "LABEL=CLOUDOS-CFG:/lab.age"
//! passphrase_file = "LABEL=CLOUDOS-CFG:/lab.pass"
//!
//! [network]
//! mode = "static"
//! address = "10.0.0.2/24"
//! ```
//!
//! Unknown keys are errors, not warnings: a typo such as `hostnmae` in an unattended install
//! would otherwise silently install a node with the wrong name.

use std::fmt;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::str::FromStr;

pub use cloudos_cluster::parse_master_address;
use cloudos_cluster::Token;
use cloudos_settings::{values, NetMode, NetSettings, NodeRole, Secret, Settings};
use serde::Deserialize;
use toml::Spanned;

use crate::restore::{parse_backup_source, PassphraseSource, RestoreAnswers};

/// The cluster name a master gets when the answer file names none.
pub const DEFAULT_CLUSTER: &str = "cloudos";
/// The master's API port when `master` names only a host (as `nodeos` settings assume).
pub use cloudos_cluster::client::DEFAULT_API_PORT;
/// The file system label of a second disk that carries an answer file.
pub const CONFIG_DISK_LABEL: &str = "CLOUDOS-CFG";
/// Where the answer file sits on the [`CONFIG_DISK_LABEL`] disk.
pub const CONFIG_DISK_PATH: &str = "/install.toml";

/// An install: what to install, where, and as what. Made by [`Answers::from_toml`] or by
/// the wizard once the wipe is confirmed; [`crate::validate`] checks it against the machine.
///
/// `Debug` never shows the join token's secret ([`Token`]'s own `Debug` redacts it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answers {
    /// Lowercase RFC 1123 host name.
    pub hostname: String,
    pub network: NetworkAnswers,
    /// The target disk, a device path such as `/dev/vda`.
    pub disk: String,
    pub role: RoleAnswers,
    /// Node labels, each `key=value`.
    pub labels: Vec<String>,
    /// Registries reached over plain HTTP, each `host:port`.
    pub insecure_registries: Vec<String>,
}

/// What the node becomes, with what that role needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleAnswers {
    /// Creates a new cluster of this name; with `workloads`, the master's machine runs
    /// workloads too (a cluster of one machine to start with).
    Master { cluster: String, workloads: bool },
    /// Joins a master with a token; `master` is `host:port`, `None` means found by mDNS.
    Compute {
        token: Token,
        master: Option<String>,
    },
    /// A master that restores this backup (its cluster, CA, nodes, admins) instead of
    /// creating a cluster.
    Restore(RestoreAnswers),
    /// A master added to the masters of a running cluster: at its first start it joins
    /// the master at `master` (`host:port`) with `token`, of role master.
    AddMaster { token: Token, master: String },
}

impl RoleAnswers {
    /// `master`, `compute` or `restore`, as the answer file's `mode`.
    pub fn name(&self) -> &'static str {
        match self {
            RoleAnswers::Master { .. } => "master",
            RoleAnswers::Compute { .. } => "compute",
            RoleAnswers::Restore(_) => "restore",
            RoleAnswers::AddMaster { .. } => "add-master",
        }
    }
}

/// The installed node's network. DNS servers only go with a static address: DHCP brings
/// its own, and `nodeos` ignores configured ones under DHCP.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NetworkAnswers {
    #[default]
    Dhcp,
    Static {
        address: Ipv4Cidr,
        gateway: Option<Ipv4Addr>,
        dns: Vec<Ipv4Addr>,
    },
}

pub use cloudos_cluster::Ipv4Cidr;

/// What is wrong with an answer file. Each variant names the key, and the line when the
/// file has one, so the person can fix the file without guessing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// Not TOML, an unknown key, or a value of the wrong type; toml's message names the
    /// line, the column and the key.
    #[error("the answer file is not valid: {0}")]
    Syntax(String),
    #[error("`{key}` is required: {hint}")]
    Missing {
        key: &'static str,
        hint: &'static str,
    },
    #[error("{at}`{key}` {why}", at = at_line(*line))]
    Invalid {
        key: &'static str,
        why: String,
        line: Option<usize>,
    },
    #[error(
        "{at}`wipe = true` is required: installing erases everything on {disk}; add \
         `wipe = true` to the answer file to confirm",
        at = at_line(*line)
    )]
    WipeNotConfirmed { disk: String, line: Option<usize> },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!("line {l}: ")).unwrap_or_default()
}

/// The answer file as written; checked into [`Answers`] by [`Answers::from_toml`]. Every
/// value is `Spanned` so a validation error can name its line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnswers {
    mode: Option<Spanned<String>>,
    hostname: Option<Spanned<String>>,
    network: Option<RawNetwork>,
    disk: Option<Spanned<String>>,
    wipe: Option<Spanned<bool>>,
    token: Option<Spanned<String>>,
    master: Option<Spanned<String>>,
    cluster: Option<Spanned<String>>,
    workloads: Option<Spanned<bool>>,
    labels: Option<Spanned<Vec<String>>>,
    insecure_registries: Option<Spanned<Vec<String>>>,
    backup: Option<Spanned<String>>,
    passphrase_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    mode: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    gateway: Option<Spanned<String>>,
    dns: Option<Spanned<Vec<String>>>,
}

impl Answers {
    /// Parses and checks an answer file. Nothing is looked up on the machine here; that is
    /// [`crate::validate`]'s job, shared with the wizard.
    pub fn from_toml(text: &str) -> Result<Answers, AnswerError> {
        let mut raw: RawAnswers =
            toml::from_str(text).map_err(|e| AnswerError::Syntax(e.to_string().trim().into()))?;
        let role_keys = RoleKeys::of(&raw);
        let line = |span: std::ops::Range<usize>| Some(line_of(text, span.start));
        let invalid = |key: &'static str, why: String, span| AnswerError::Invalid {
            key,
            why,
            line: line(span),
        };

        let mode = raw.mode.ok_or(AnswerError::Missing {
            key: "mode",
            hint: "write mode = \"master\", mode = \"compute\", mode = \"restore\" or \
                   mode = \"add-master\"",
        })?;
        let mode_name = mode.get_ref().as_str();
        if !["master", "compute", "restore", "add-master"].contains(&mode_name) {
            return Err(invalid(
                "mode",
                format!(
                    "is {mode_name:?}; use \"master\", \"compute\", \"restore\" or \
                     \"add-master\""
                ),
                mode.span(),
            ));
        }

        let hostname = raw.hostname.ok_or(AnswerError::Missing {
            key: "hostname",
            hint:
                "the node's name, letters, digits and inner hyphens, as in hostname = \"rack1-n3\"",
        })?;
        let hostname = check_hostname(hostname.get_ref())
            .map_err(|why| invalid("hostname", why, hostname.span()))?;

        let disk = raw.disk.ok_or(AnswerError::Missing {
            key: "disk",
            hint: "the disk to install to, as in disk = \"/dev/vda\"",
        })?;
        let disk =
            check_disk_path(disk.get_ref()).map_err(|why| invalid("disk", why, disk.span()))?;

        // An explicit yes, never a default: this file erases a disk without anyone watching.
        match &raw.wipe {
            Some(wipe) if *wipe.get_ref() => {}
            Some(wipe) => {
                return Err(AnswerError::WipeNotConfirmed {
                    disk,
                    line: line(wipe.span()),
                })
            }
            None => return Err(AnswerError::WipeNotConfirmed { disk, line: None }),
        }

        let network = match raw.network.take() {
            None => NetworkAnswers::Dhcp,
            Some(net) => check_network(net, &invalid)?,
        };

        // Keys of the other role are refused rather than ignored: a master given a token was
        // most likely meant to be a compute node.
        let only_for = |key: &'static str, role: &str, span| {
            invalid(key, format!("is only used with mode = \"{role}\""), span)
        };
        let role = match mode_name {
            "master" => {
                role_keys
                    .refuse(&["token", "master", "backup", "passphrase_file"])
                    .map_err(|(key, role, span)| only_for(key, role, span))?;
                let cluster = match &raw.cluster {
                    None => DEFAULT_CLUSTER.to_owned(),
                    Some(c) => check_cluster_name(c.get_ref())
                        .map_err(|why| invalid("cluster", why, c.span()))?,
                };
                // Off unless said: an unattended install does what its file says, and a
                // file written before this key made a master only.
                let workloads = raw.workloads.as_ref().is_some_and(|w| *w.get_ref());
                RoleAnswers::Master { cluster, workloads }
            }
            "restore" => {
                // The cluster and its name come from the backup.
                role_keys
                    .refuse(&["token", "master", "cluster", "workloads"])
                    .map_err(|(key, role, span)| only_for(key, role, span))?;
                let backup = raw.backup.as_ref().ok_or(AnswerError::Missing {
                    key: "backup",
                    hint: "the backup to restore (`cloudos backup create`), as in \
                           backup = \"LABEL=CLOUDOS-CFG:/lab.age\" or backup = \"/path\"",
                })?;
                let backup = parse_backup_source(backup.get_ref())
                    .map_err(|why| invalid("backup", why, backup.span()))?;
                let pass = raw.passphrase_file.as_ref().ok_or(AnswerError::Missing {
                    key: "passphrase_file",
                    hint: "a file whose first line is the backup's passphrase, as in \
                           passphrase_file = \"LABEL=CLOUDOS-CFG:/lab.pass\"",
                })?;
                let pass = parse_backup_source(pass.get_ref())
                    .map_err(|why| invalid("passphrase_file", why, pass.span()))?;
                RoleAnswers::Restore(RestoreAnswers {
                    backup,
                    passphrase: PassphraseSource::File(pass),
                })
            }
            "add-master" => {
                // The cluster, its name and its masters' settings come from the masters.
                role_keys
                    .refuse(&["cluster", "workloads", "backup", "passphrase_file"])
                    .map_err(|(key, role, span)| only_for(key, role, span))?;
                let token = raw.token.ok_or(AnswerError::Missing {
                    key: "token",
                    hint: "a master joins the masters with a token of role master; create one \
                           with `cloudos token create --role master --ttl 1h`",
                })?;
                let parsed = check_token(token.get_ref())
                    .map_err(|why| invalid("token", why, token.span()))?;
                let master = raw.master.as_ref().ok_or(AnswerError::Missing {
                    key: "master",
                    hint: "the address of a master of the cluster, as in \
                           master = \"10.0.0.1:9443\"",
                })?;
                let master = parse_master_address(master.get_ref())
                    .map_err(|why| invalid("master", why, master.span()))?;
                RoleAnswers::AddMaster {
                    token: parsed,
                    master,
                }
            }
            _ => {
                role_keys
                    .refuse(&["cluster", "workloads", "backup", "passphrase_file"])
                    .map_err(|(key, role, span)| only_for(key, role, span))?;
                let token = raw.token.ok_or(AnswerError::Missing {
                    key: "token",
                    hint: "a compute node joins with a token; create one on the master with \
                           `cloudos token create`",
                })?;
                let parsed = check_token(token.get_ref())
                    .map_err(|why| invalid("token", why, token.span()))?;
                let master = match &raw.master {
                    None => None,
                    Some(m) => Some(
                        parse_master_address(m.get_ref())
                            .map_err(|why| invalid("master", why, m.span()))?,
                    ),
                };
                RoleAnswers::Compute {
                    token: parsed,
                    master,
                }
            }
        };

        let labels = match raw.labels {
            None => Vec::new(),
            Some(l) => {
                let span = l.span();
                check_labels(l.into_inner()).map_err(|why| invalid("labels", why, span))?
            }
        };
        let insecure_registries = match raw.insecure_registries {
            None => Vec::new(),
            Some(r) => {
                let span = r.span();
                check_registries(r.into_inner())
                    .map_err(|why| invalid("insecure_registries", why, span))?
            }
        };

        Ok(Answers {
            hostname,
            network,
            disk,
            role,
            labels,
            insecure_registries,
        })
    }

    /// The answer file for these answers, which [`Answers::from_toml`] reads back as equal.
    /// It holds the join token in clear: treat it like the token itself.
    pub fn to_answer_toml(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "mode = {}", toml_string(self.role.name()));
        let _ = writeln!(text, "hostname = {}", toml_string(&self.hostname));
        let _ = writeln!(text, "disk = {}", toml_string(&self.disk));
        let _ = writeln!(text, "wipe = true");
        match &self.role {
            RoleAnswers::Master { cluster, workloads } => {
                let _ = writeln!(text, "cluster = {}", toml_string(cluster));
                if *workloads {
                    let _ = writeln!(text, "workloads = true");
                }
            }
            RoleAnswers::Compute { token, master } => {
                let _ = writeln!(text, "token = {}", toml_string(&token.to_string()));
                if let Some(master) = master {
                    let _ = writeln!(text, "master = {}", toml_string(master));
                }
            }
            RoleAnswers::AddMaster { token, master } => {
                let _ = writeln!(text, "token = {}", toml_string(&token.to_string()));
                let _ = writeln!(text, "master = {}", toml_string(master));
            }
            RoleAnswers::Restore(restore) => {
                let _ = writeln!(text, "backup = {}", toml_string(&restore.backup));
                // A typed passphrase is never written; a file is named.
                if let PassphraseSource::File(file) = &restore.passphrase {
                    let _ = writeln!(text, "passphrase_file = {}", toml_string(file));
                }
            }
        }
        if !self.labels.is_empty() {
            let _ = writeln!(text, "labels = {}", toml_list(&self.labels));
        }
        if !self.insecure_registries.is_empty() {
            let _ = writeln!(
                text,
                "insecure_registries = {}",
                toml_list(&self.insecure_registries)
            );
        }
        let _ = writeln!(text, "\n[network]");
        match &self.network {
            NetworkAnswers::Dhcp => {
                let _ = writeln!(text, "mode = \"dhcp\"");
            }
            NetworkAnswers::Static {
                address,
                gateway,
                dns,
            } => {
                let _ = writeln!(text, "mode = \"static\"");
                let _ = writeln!(text, "address = {}", toml_string(&address.to_string()));
                if let Some(gateway) = gateway {
                    let _ = writeln!(text, "gateway = {}", toml_string(&gateway.to_string()));
                }
                if !dns.is_empty() {
                    let dns: Vec<String> = dns.iter().map(Ipv4Addr::to_string).collect();
                    let _ = writeln!(text, "dns = {}", toml_list(&dns));
                }
            }
        }
        text
    }

    /// These answers as node settings, the join token included: what the installed node
    /// is to run with. Labels are read as [`Answers::from_toml`] checked them.
    pub fn node_settings(&self) -> Settings {
        let mut settings = Settings {
            role: match self.role {
                RoleAnswers::Master { .. }
                | RoleAnswers::Restore(_)
                | RoleAnswers::AddMaster { .. } => NodeRole::Master,
                RoleAnswers::Compute { .. } => NodeRole::Compute,
            },
            hostname: Some(self.hostname.clone()),
            labels: self
                .labels
                .iter()
                .filter_map(|label| values::parse_label(label))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            insecure_registries: self.insecure_registries.clone(),
            ..Settings::default()
        };
        if let NetworkAnswers::Static {
            address,
            gateway,
            dns,
        } = &self.network
        {
            settings.net = NetSettings {
                mode: NetMode::Static,
                iface: None,
                address: Some(*address),
                gateway: *gateway,
                dns: dns.clone(),
            };
        }
        match &self.role {
            RoleAnswers::Master { cluster, workloads } => {
                settings.cluster = Some(cluster.clone());
                settings.workloads = *workloads;
            }
            RoleAnswers::Compute { token, master } => {
                settings.token = Some(Secret::new(token.to_string()));
                settings.master = master.clone();
            }
            RoleAnswers::AddMaster { token, master } => {
                settings.token = Some(Secret::new(token.to_string()));
                settings.master = Some(master.clone());
            }
            // Restored into the data partition at install time: the settings need not
            // name the backup, and the master reads its cluster from the restored store.
            RoleAnswers::Restore(_) => {}
        }
        settings
    }

    /// The `config.toml` the installed node reads from its data partition, written by the
    /// node settings model (`role`, `hostname`, `net`, …; lists joined by commas, as the
    /// host install's `render_config` writes them). The join token is not written here:
    /// the disk install adds it last (the node's first start joins with it, then deletes
    /// it from the file), and a copy of the file must not carry it.
    /// `net` is written even for DHCP, the default: it is what the person chose.
    pub fn to_settings_toml(&self) -> String {
        let mut settings = self.node_settings();
        settings.token = None;
        settings.to_toml(
            "# CloudOS node settings, written by the installer.\n\
             # Same keys as the kernel command line's cloudos.* keys, without the prefix.\n",
            &["role", "net"],
        )
    }
}

/// Where the keys that belong to one role are in the file, if they are there: keys of
/// another role are refused rather than ignored (a master given a token was most likely
/// meant to be a compute node).
struct RoleKeys(Vec<(&'static str, &'static str, Option<std::ops::Range<usize>>)>);

impl RoleKeys {
    fn of(raw: &RawAnswers) -> RoleKeys {
        let span = |v: &Option<Spanned<String>>| v.as_ref().map(Spanned::span);
        RoleKeys(vec![
            ("token", "compute", span(&raw.token)),
            ("master", "compute", span(&raw.master)),
            ("cluster", "master", span(&raw.cluster)),
            (
                "workloads",
                "master",
                raw.workloads.as_ref().map(Spanned::span),
            ),
            ("backup", "restore", span(&raw.backup)),
            ("passphrase_file", "restore", span(&raw.passphrase_file)),
        ])
    }

    /// The first of `keys` the file has, with the mode that uses it and its place.
    fn refuse(
        &self,
        keys: &[&str],
    ) -> Result<(), (&'static str, &'static str, std::ops::Range<usize>)> {
        for (key, role, span) in &self.0 {
            if let (true, Some(span)) = (keys.contains(key), span) {
                return Err((key, role, span.clone()));
            }
        }
        Ok(())
    }
}

/// 1-based line of a byte offset, for error messages.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

fn toml_list(values: &[String]) -> String {
    let items: Vec<String> = values.iter().map(|v| toml_string(v)).collect();
    format!("[{}]", items.join(", "))
}

fn check_network(
    net: RawNetwork,
    invalid: &dyn Fn(&'static str, String, std::ops::Range<usize>) -> AnswerError,
) -> Result<NetworkAnswers, AnswerError> {
    let is_static = match &net.mode {
        None => false,
        Some(mode) => match mode.get_ref().as_str() {
            "dhcp" => false,
            "static" => true,
            other => {
                return Err(invalid(
                    "network.mode",
                    format!("is {other:?}; use \"dhcp\" or \"static\""),
                    mode.span(),
                ))
            }
        },
    };
    if !is_static {
        let dhcp_only = |key, span| {
            invalid(
                key,
                "is only used with mode = \"static\" in [network]; DHCP supplies it".into(),
                span,
            )
        };
        if let Some(a) = &net.address {
            return Err(dhcp_only("network.address", a.span()));
        }
        if let Some(g) = &net.gateway {
            return Err(dhcp_only("network.gateway", g.span()));
        }
        if let Some(d) = &net.dns {
            return Err(dhcp_only("network.dns", d.span()));
        }
        return Ok(NetworkAnswers::Dhcp);
    }
    let address = net.address.ok_or(AnswerError::Missing {
        key: "network.address",
        hint: "a static network needs the node's address with its prefix, as in \
               address = \"10.0.0.5/24\"",
    })?;
    let address = address
        .get_ref()
        .parse()
        .map_err(|why| invalid("network.address", why, address.span()))?;
    let gateway = match &net.gateway {
        None => None,
        Some(g) => {
            Some(parse_ipv4(g.get_ref()).map_err(|why| invalid("network.gateway", why, g.span()))?)
        }
    };
    let dns = match &net.dns {
        None => Vec::new(),
        Some(d) => d
            .get_ref()
            .iter()
            .map(|s| parse_ipv4(s))
            .collect::<Result<_, _>>()
            .map_err(|why| invalid("network.dns", why, d.span()))?,
    };
    Ok(NetworkAnswers::Static {
        address,
        gateway,
        dns,
    })
}

/// A host name as the node settings accept it, lowercased as they store it.
pub fn check_hostname(name: &str) -> Result<String, String> {
    values::parse_hostname(name.trim())
}

/// A cluster name: the host name rule, lowercased (it ends up in certificates).
pub fn check_cluster_name(name: &str) -> Result<String, String> {
    values::parse_cluster_name(name.trim())
}

/// A join token's format (not whether a master accepts it). The message never repeats the
/// token: it is shown on a console.
pub fn check_token(text: &str) -> Result<Token, String> {
    text.parse::<Token>().map_err(|e| {
        format!("is not a CloudOS join token ({e}); create one on the master with `cloudos token create`")
    })
}

/// `host`, `host:port` or `[v6]:port` → `host:port`, the rule of the `master` node setting.
fn parse_ipv4(value: &str) -> Result<Ipv4Addr, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not an IPv4 address"))
}

/// A device path under `/dev`, which is all the disk list offers.
fn check_disk_path(path: &str) -> Result<String, String> {
    let name = path.strip_prefix("/dev/").unwrap_or("");
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_/".contains(&b))
        && !name.split('/').any(|p| p.is_empty() || p == "..");
    if ok {
        Ok(path.to_owned())
    } else {
        Err(format!(
            "{path:?} is not a disk's device path, as in \"/dev/vda\" or \"/dev/nvme0n1\""
        ))
    }
}

/// `key=value` each, as the node settings' `labels` accept them (so no commas: the
/// settings file joins the list with them).
fn check_labels(labels: Vec<String>) -> Result<Vec<String>, String> {
    match labels.iter().find(|l| values::parse_label(l).is_none()) {
        Some(bad) => Err(format!("has {bad:?}, which is not {}", values::LABEL_FORM)),
        None => Ok(labels),
    }
}

/// `host:port` each, as the node settings' `insecure_registries` accept them.
fn check_registries(registries: Vec<String>) -> Result<Vec<String>, String> {
    match registries.iter().find(|r| !values::is_registry(r)) {
        Some(bad) => Err(format!(
            "has {bad:?}, which is not {}",
            values::REGISTRY_FORM
        )),
        None => Ok(registries),
    }
}

/// Where the answer file of an unattended install comes from: the value of
/// `cloudos.install=` on the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Downloaded over HTTP or HTTPS.
    Url(String),
    /// A file on the partition whose file system carries `label`; `path` is absolute
    /// inside that file system.
    Labelled { label: String, path: String },
}

impl Source {
    /// The answer file on a second disk labelled [`CONFIG_DISK_LABEL`], looked for when the
    /// command line names none.
    pub fn config_disk() -> Source {
        Source::Labelled {
            label: CONFIG_DISK_LABEL.into(),
            path: CONFIG_DISK_PATH.into(),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Url(url) => f.write_str(url),
            Source::Labelled { label, path } => write!(f, "LABEL={label}:{path}"),
        }
    }
}

/// A `cloudos.install=` value that is neither form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cloudos.install={value:?} {why}; use an http:// or https:// URL, or LABEL=NAME:/path \
     for a file on a labelled partition"
)]
pub struct SourceError {
    pub value: String,
    pub why: &'static str,
}

impl FromStr for Source {
    type Err = SourceError;

    fn from_str(value: &str) -> Result<Self, SourceError> {
        let err = |why| SourceError {
            value: value.to_owned(),
            why,
        };
        let lower = value.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let rest = &value[value.find("://").map_or(0, |i| i + 3)..];
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            if host.is_empty() {
                return Err(err("has no host"));
            }
            if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(err("contains a space or a control character"));
            }
            return Ok(Source::Url(value.to_owned()));
        }
        let Some(rest) = value.strip_prefix("LABEL=") else {
            return Err(err("is not a URL or a LABEL="));
        };
        let Some((label, path)) = rest.split_once(':') else {
            return Err(err("has no :/path after the label"));
        };
        // FAT labels are at most 11 characters, ext4 16; blkid shows what is there.
        if label.is_empty() || label.len() > 16 || label.chars().any(|c| c.is_whitespace()) {
            return Err(err("has an empty, long or spaced label"));
        }
        if !path.starts_with('/') || path.split('/').any(|p| p == "..") || path.len() < 2 {
            return Err(err("needs an absolute path to a file, without .."));
        }
        Ok(Source::Labelled {
            label: label.to_owned(),
            path: path.to_owned(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A well-formed token for tests; its secret is `aaaa…`.
    pub(crate) fn token_for_pin(pin_hex: &str) -> String {
        format!("cloudos1_abcdef_{}_{pin_hex}", "a".repeat(32))
    }

    pub(crate) fn a_token() -> String {
        token_for_pin(&"5a".repeat(32))
    }

    fn compute_file() -> String {
        format!(
            "mode = \"compute\"\nhostname = \"Rack1-N3\"\ndisk = \"/dev/vda\"\nwipe = true\n\
             token = \"{}\"\nmaster = \"10.0.0.1\"\nlabels = [\"zone=a\", \"disk=ssd\"]\n\
             insecure_registries = [\"10.0.0.1:5000\"]\n\n[network]\nmode = \"static\"\n\
             address = \"10.0.0.5/24\"\ngateway = \"10.0.0.1\"\ndns = [\"10.0.0.53\", \"1.1.1.1\"]\n",
            a_token()
        )
    }

    #[test]
    fn a_compute_file_is_read_whole() {
        let a = Answers::from_toml(&compute_file()).expect("valid");
        assert_eq!(a.hostname, "rack1-n3");
        assert_eq!(a.disk, "/dev/vda");
        assert_eq!(a.labels, ["zone=a", "disk=ssd"]);
        assert_eq!(a.insecure_registries, ["10.0.0.1:5000"]);
        let RoleAnswers::Compute { token, master } = &a.role else {
            panic!("not compute: {a:?}")
        };
        assert_eq!(token.to_string(), a_token());
        assert_eq!(master.as_deref(), Some("10.0.0.1:9443"));
        assert_eq!(
            a.network,
            NetworkAnswers::Static {
                address: "10.0.0.5/24".parse().unwrap(),
                gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
                dns: vec![Ipv4Addr::new(10, 0, 0, 53), Ipv4Addr::new(1, 1, 1, 1)],
            }
        );
    }

    #[test]
    fn an_added_master_keeps_its_token_for_its_first_start_and_needs_a_master() {
        let file = format!(
            "mode = \"add-master\"\nhostname = \"m2\"\ndisk = \"/dev/vda\"\nwipe = true\n\
             token = \"{}\"\nmaster = \"10.0.0.1\"\n",
            a_token()
        );
        let a = Answers::from_toml(&file).expect("valid");
        let RoleAnswers::AddMaster { token, master } = &a.role else {
            panic!("not an added master: {a:?}")
        };
        assert_eq!(token.to_string(), a_token());
        assert_eq!(master, "10.0.0.1:9443");
        assert_eq!(Answers::from_toml(&a.to_answer_toml()).expect("again"), a);
        // The installed node's settings: a master that joins with the token at first start.
        let settings = a.node_settings();
        assert_eq!(settings.role, NodeRole::Master);
        assert_eq!(
            settings.token.as_ref().map(|t| t.expose()),
            Some(a_token().as_str())
        );
        assert_eq!(settings.master.as_deref(), Some("10.0.0.1:9443"));
        let text = a.to_settings_toml();
        assert!(text.contains("master = \"10.0.0.1:9443\""), "{text}");
        assert!(!text.contains(&a_token()), "{text}");
        // Without a master, or with a new cluster's keys: refused, with the key named.
        let no_master = file.replace("master = \"10.0.0.1\"\n", "");
        let err = Answers::from_toml(&no_master).unwrap_err();
        assert!(
            matches!(err, AnswerError::Missing { key: "master", .. }),
            "{err}"
        );
        let err = Answers::from_toml(&format!("{file}cluster = \"lab\"\n")).unwrap_err();
        assert!(err.to_string().contains("cluster"), "{err}");
    }

    #[test]
    fn a_minimal_master_gets_the_defaults() {
        let a = Answers::from_toml(
            "mode = \"master\"\nhostname = \"m1\"\ndisk = \"/dev/nvme0n1\"\nwipe = true\n",
        )
        .expect("valid");
        assert_eq!(
            a.role,
            RoleAnswers::Master {
                cluster: DEFAULT_CLUSTER.into(),
                workloads: false,
            }
        );
        assert_eq!(a.network, NetworkAnswers::Dhcp);
        assert!(a.labels.is_empty() && a.insecure_registries.is_empty());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let a = Answers::from_toml(&compute_file()).expect("valid");
        let shown = format!("{a:?}");
        assert!(!shown.contains(&"a".repeat(32)), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn the_answer_file_round_trips() {
        for text in [
            compute_file(),
            "mode = \"master\"\nhostname = \"m1\"\ndisk = \"/dev/sda\"\nwipe = true\ncluster = \"Lab\"\n"
                .into(),
            "mode = \"master\"\nhostname = \"m1\"\ndisk = \"/dev/sda\"\nwipe = true\nworkloads = true\n"
                .into(),
        ] {
            let a = Answers::from_toml(&text).expect("valid");
            let again = Answers::from_toml(&a.to_answer_toml()).expect("rendered is valid");
            assert_eq!(again, a);
            // The installed node's settings say it: `workloads = on` for that one only.
            assert_eq!(a.node_settings().workloads, text.contains("workloads"));
        }
    }

    #[test]
    fn bad_files_name_the_key_and_line() {
        let token = a_token();
        let base = "mode = \"master\"\nhostname = \"m1\"\ndisk = \"/dev/vda\"\nwipe = true\n";
        let compute = "mode = \"compute\"\nhostname = \"c1\"\ndisk = \"/dev/vda\"\nwipe = true\n";
        let cases: Vec<(String, &[&str])> = vec![
            (
                base.replace("hostname", "hostnmae"),
                &["unknown field `hostnmae`", "line 2"],
            ),
            (
                format!("{base}[network]\nmdoe = \"dhcp\"\n"),
                &["unknown field `mdoe`", "line 6"],
            ),
            (base.replace("wipe = true", "wipe = \"yes\""), &["line 4", "wipe"]),
            ("not toml at all".into(), &["not valid"]),
            (
                base.replace("mode = \"master\"\n", ""),
                &["`mode` is required", "\"master\", mode = \"compute\", mode = \"restore\" or"],
            ),
            (
                base.replace("\"master\"", "\"worker\""),
                &["line 1: `mode` is \"worker\""],
            ),
            (
                base.replace("\"m1\"", "\"-bad-\""),
                &["line 2: `hostname`", "not a valid host name"],
            ),
            (
                base.replace("\"m1\"", "\"a_b\""),
                &["line 2: `hostname`", "not a valid host name"],
            ),
            (base.replace("hostname = \"m1\"\n", ""), &["`hostname` is required"]),
            (base.replace("disk = \"/dev/vda\"\n", ""), &["`disk` is required"]),
            (
                base.replace("\"/dev/vda\"", "\"vda\""),
                &["line 3: `disk`", "device path"],
            ),
            (
                base.replace("\"/dev/vda\"", "\"/dev/../etc/passwd\""),
                &["`disk`", "device path"],
            ),
            (
                base.replace("wipe = true\n", ""),
                &["`wipe = true` is required", "erases everything on /dev/vda"],
            ),
            (
                base.replace("wipe = true", "wipe = false"),
                &["line 4: `wipe = true` is required"],
            ),
            (
                format!("{base}cluster = \"no_good\"\n"),
                &["line 5: `cluster`", "not a valid cluster name"],
            ),
            (
                format!("{base}token = \"{token}\"\n"),
                &["line 5: `token` is only used with mode = \"compute\""],
            ),
            (
                format!("{base}master = \"10.0.0.1\"\n"),
                &["`master` is only used with mode = \"compute\""],
            ),
            (
                format!("{compute}token = \"{token}\"\nworkloads = true\n"),
                &["line 6: `workloads` is only used with mode = \"master\""],
            ),
            (
                format!("{base}workloads = \"yes\"\n"),
                &["line 5", "workloads"],
            ),
            (compute.into(), &["`token` is required", "cloudos token create"]),
            (
                format!("{compute}token = \"cloudos1_abcdef_secretsecret\"\n"),
                &["line 5: `token` is not a CloudOS join token", "3 parts"],
            ),
            (
                format!("{compute}token = \"{token}\"\ncluster = \"x\"\n"),
                &["line 6: `cluster` is only used with mode = \"master\""],
            ),
            (
                format!("{compute}token = \"{token}\"\nmaster = \"host:99999\"\n"),
                &["line 6: `master`", "port"],
            ),
            (
                format!("{base}[network]\nmode = \"static\"\n"),
                &["`network.address` is required", "10.0.0.5/24"],
            ),
            (
                format!("{base}[network]\nmode = \"wifi\"\n"),
                &["line 6: `network.mode` is \"wifi\""],
            ),
            (
                format!("{base}[network]\nmode = \"static\"\naddress = \"10.0.0.5\"\n"),
                &["line 7: `network.address`", "prefix length"],
            ),
            (
                format!(
                    "{base}[network]\nmode = \"static\"\naddress = \"10.0.0.5/24\"\ngateway = \"gw\"\n"
                ),
                &["line 8: `network.gateway`", "not an IPv4 address"],
            ),
            (
                format!("{base}[network]\ndns = [\"1.1.1.1\"]\n"),
                &["line 6: `network.dns` is only used with mode = \"static\""],
            ),
            (
                format!("{base}labels = [\"zone\"]\n"),
                &["line 5: `labels`", "key=value"],
            ),
            (
                format!("{base}insecure_registries = [\"reg\"]\n"),
                &["line 5: `insecure_registries`", "host:port"],
            ),
        ];
        for (text, wanted) in cases {
            let err = Answers::from_toml(&text).expect_err(&text).to_string();
            for want in wanted {
                assert!(err.contains(want), "{text}\n→ {err}\nwanted {want:?}");
            }
            assert!(!err.contains("secretsecret"), "{err}");
        }
    }

    pub(crate) const RESTORE: &str = "mode = \"restore\"\nhostname = \"m1\"\ndisk = \"/dev/vda\"\n\
        wipe = true\nbackup = \"LABEL=CLOUDOS-CFG:/lab.age\"\n\
        passphrase_file = \"LABEL=CLOUDOS-CFG:/pass\"\n";

    #[test]
    fn a_restore_file_is_read_and_round_trips() {
        let a = Answers::from_toml(RESTORE).expect("valid");
        assert_eq!(
            a.role,
            RoleAnswers::Restore(RestoreAnswers {
                backup: "LABEL=CLOUDOS-CFG:/lab.age".into(),
                passphrase: PassphraseSource::File("LABEL=CLOUDOS-CFG:/pass".into()),
            })
        );
        assert_eq!(Answers::from_toml(&a.to_answer_toml()).expect("again"), a);
        // A master: no backup or passphrase in its settings (restored at install time).
        let text = a.to_settings_toml();
        assert!(text.contains("role = \"master\""), "{text}");
        assert!(
            !text.contains("restore") && !text.contains("pass"),
            "{text}"
        );
        let plain =
            Answers::from_toml(&RESTORE.replace("LABEL=CLOUDOS-CFG:", "")).expect("plain paths");
        let RoleAnswers::Restore(r) = plain.role else {
            panic!("not a restore")
        };
        assert_eq!(r.backup, "/lab.age");
    }

    #[test]
    fn a_restore_file_missing_or_mixing_keys_is_refused() {
        let cases: Vec<(String, &[&str])> = vec![
            (
                RESTORE.replace("backup = \"LABEL=CLOUDOS-CFG:/lab.age\"\n", ""),
                &["`backup` is required", "cloudos backup create"],
            ),
            (
                RESTORE.replace("passphrase_file = \"LABEL=CLOUDOS-CFG:/pass\"\n", ""),
                &["`passphrase_file` is required", "first line"],
            ),
            (
                RESTORE.replace("\"LABEL=CLOUDOS-CFG:/lab.age\"", "\"lab.age\""),
                &["line 5: `backup`", "neither /path nor LABEL=NAME:/path"],
            ),
            (
                RESTORE.replace("\"LABEL=CLOUDOS-CFG:/pass\"", "\"LABEL=:/pass\""),
                &["line 6: `passphrase_file`", "LABEL=NAME:/path"],
            ),
            (
                format!("{RESTORE}cluster = \"lab\"\n"),
                &["line 7: `cluster` is only used with mode = \"master\""],
            ),
            (
                format!("{RESTORE}token = \"{}\"\n", a_token()),
                &["line 7: `token` is only used with mode = \"compute\""],
            ),
            (
                RESTORE.replace("\"restore\"", "\"master\""),
                &["line 5: `backup` is only used with mode = \"restore\""],
            ),
            (
                format!("{RESTORE}passphrase = \"in clear\"\n"),
                &["unknown field `passphrase`"],
            ),
        ];
        for (text, wanted) in cases {
            let err = Answers::from_toml(&text).expect_err(&text).to_string();
            for want in wanted {
                assert!(err.contains(want), "{text}\n-> {err}\nwanted {want:?}");
            }
        }
    }

    #[test]
    fn the_settings_file_uses_the_node_keys_and_never_the_token() {
        // The keys and value shapes the node settings read (`cloudos_settings::KEYS`): every
        // value a string, lists joined with commas.
        const NODE_KEYS: &[&str] = &[
            "role",
            "hostname",
            "net",
            "address",
            "gateway",
            "dns",
            "master",
            "cluster",
            "labels",
            "insecure_registries",
        ];
        let a = Answers::from_toml(&compute_file()).expect("valid");
        let text = a.to_settings_toml();
        assert!(
            !text.contains("token") && !text.contains(&"a".repeat(32)),
            "{text}"
        );
        let table: toml::Table = text.parse().expect("valid TOML");
        for (key, value) in &table {
            assert!(NODE_KEYS.contains(&key.as_str()), "{key}");
            assert!(value.is_str(), "{key} = {value}");
        }
        let get = |k: &str| table.get(k).and_then(|v| v.as_str());
        assert_eq!(get("role"), Some("compute"));
        assert_eq!(get("hostname"), Some("rack1-n3"));
        assert_eq!(get("net"), Some("static"));
        assert_eq!(get("address"), Some("10.0.0.5/24"));
        assert_eq!(get("gateway"), Some("10.0.0.1"));
        assert_eq!(get("dns"), Some("10.0.0.53,1.1.1.1"));
        assert_eq!(get("master"), Some("10.0.0.1:9443"));
        // The node keeps labels by key, and the file lists them in that order.
        assert_eq!(get("labels"), Some("disk=ssd,zone=a"));
        assert_eq!(get("insecure_registries"), Some("10.0.0.1:5000"));
        assert_eq!(get("cluster"), None);

        let m = Answers::from_toml(
            "mode = \"master\"\nhostname = \"m1\"\ndisk = \"/dev/vda\"\nwipe = true\ncluster = \"Prod-EU\"\n",
        )
        .expect("valid");
        let table: toml::Table = m.to_settings_toml().parse().expect("valid TOML");
        assert_eq!(
            table.get("cluster").and_then(|v| v.as_str()),
            Some("prod-eu")
        );
        assert_eq!(table.get("net").and_then(|v| v.as_str()), Some("dhcp"));
        assert_eq!(table.get("master"), None);
    }

    #[test]
    fn the_settings_file_reads_back_as_the_answers_settings() {
        let compute = Answers::from_toml(&compute_file()).expect("valid");
        let master = Answers::from_toml(
            "mode = \"master\"\nhostname = \"m1\"\ndisk = \"/dev/vda\"\nwipe = true\n",
        )
        .expect("valid");
        for answers in [compute, master] {
            let text = answers.to_settings_toml();
            let (read, warnings) = Settings::load(Some(&text), "");
            assert!(warnings.is_empty(), "{text}: {warnings:?}");
            let mut wanted = answers.node_settings();
            wanted.token = None;
            assert_eq!(read, wanted, "{text}");
        }
        let master = Answers::from_toml(
            "mode = \"master\"\nhostname = \"m1\"\ndisk = \"/dev/vda\"\nwipe = true\n",
        )
        .expect("valid");
        assert_eq!(
            master.to_settings_toml(),
            "# CloudOS node settings, written by the installer.\n\
             # Same keys as the kernel command line's cloudos.* keys, without the prefix.\n\
             role = \"master\"\nhostname = \"m1\"\nnet = \"dhcp\"\ncluster = \"cloudos\"\n"
        );
    }

    #[test]
    fn sources() {
        let ok = [
            (
                "http://10.0.0.1:8080/a.toml",
                Source::Url("http://10.0.0.1:8080/a.toml".into()),
            ),
            (
                "https://example.org/x",
                Source::Url("https://example.org/x".into()),
            ),
            ("LABEL=CLOUDOS-CFG:/install.toml", Source::config_disk()),
            (
                "LABEL=usb:/cfg/node-1.toml",
                Source::Labelled {
                    label: "usb".into(),
                    path: "/cfg/node-1.toml".into(),
                },
            ),
        ];
        for (input, want) in ok {
            let got: Source = input.parse().expect(input);
            assert_eq!(got, want);
            assert_eq!(got.to_string(), input);
        }
        let bad = [
            ("ftp://host/a", "not a URL or a LABEL="),
            ("http:///a", "has no host"),
            ("LABEL=x", "no :/path"),
            ("LABEL=:/a", "label"),
            ("LABEL=x:a.toml", "absolute path"),
            ("LABEL=x:/../etc/shadow", "absolute path"),
            ("/install.toml", "not a URL"),
        ];
        for (input, want) in bad {
            let err = input.parse::<Source>().expect_err(input).to_string();
            assert!(
                err.contains(want) && err.contains("LABEL=NAME:/path"),
                "{input}: {err}"
            );
        }
    }
}
