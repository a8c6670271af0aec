//! The subcommands. Each module fetches what it needs and renders it; rendering is a pure
//! function of the data (tested without a master).

pub mod apikeys;
pub mod audit;
pub mod backup;
pub mod discover;
pub mod input;
pub mod login;
pub mod manual;
pub mod masters;
pub mod nodeops;
pub mod nodes;
pub mod registries;
pub mod releases;
pub mod rollout;
pub mod secrets;
pub mod services;
pub mod stack;
pub mod status;
pub mod tokens;
pub mod top;
pub mod upgrade;
pub mod users;
pub mod volumes;
pub mod workloads;

use std::path::PathBuf;

use anyhow::bail;
use cloudos_cluster::client::ApiClient;
use serde::Serialize;
use time::OffsetDateTime;

use crate::config::Credentials;
use crate::format;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Whether `addr` (`host:port`) accepts a TCP connection within a second.
async fn answers(addr: &str) -> bool {
    let connect = tokio::net::TcpStream::connect(addr.to_owned());
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(1), connect).await,
        Ok(Ok(_))
    )
}

/// What every command gets.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub config_dir: PathBuf,
    pub output: Output,
}

impl Ctx {
    /// The API client of the logged-in user. Renews the client certificate first when it
    /// is two thirds through its life, so an admin who uses the CLI now and then never sees
    /// it expire.
    pub async fn client(&self) -> anyhow::Result<ApiClient> {
        let creds = self.reachable(Credentials::load(&self.config_dir)?).await?;
        let (renew_at, expires_at) = creds.cert_times()?;
        let now = OffsetDateTime::now_utc();
        if now >= expires_at {
            bail!(
                "your client certificate expired at {}; run cloudos login --token TOKEN again",
                format::timestamp(expires_at)
            );
        }
        let client = creds.client()?;
        if now < renew_at {
            return Ok(client);
        }
        match client.renew(&creds.endpoint.user).await {
            Ok(renewed) => {
                let creds = creds.renewed(&renewed);
                creds.save(&self.config_dir)?;
                creds.client()
            }
            // The old certificate still works; say so and go on.
            Err(e) => {
                eprintln!("warning: cannot renew the client certificate yet: {e}");
                Ok(client)
            }
        }
    }

    /// The credentials with a master that answers: the one logged in to, or, when it
    /// does not accept a connection, the first of the other masters that does (kept as
    /// the one to ask from now on).
    async fn reachable(&self, creds: Credentials) -> anyhow::Result<Credentials> {
        if creds.endpoint.masters.is_empty() || answers(&creds.endpoint.endpoint).await {
            return Ok(creds);
        }
        for other in &creds.endpoint.masters {
            let Ok(addr) = other.parse::<cloudos_cluster::client::MasterAddr>() else {
                continue;
            };
            if *other == creds.endpoint.endpoint || !answers(other).await {
                continue;
            }
            eprintln!(
                "the master at {} does not answer; asking the master at {other}",
                creds.endpoint.endpoint
            );
            let mut moved = creds.clone();
            moved.endpoint.endpoint = other.clone();
            // Another master's serving certificate names its own addresses.
            moved.endpoint.master_name = addr.host;
            moved.save(&self.config_dir)?;
            return Ok(moved);
        }
        Ok(creds)
    }

    /// Keeps the masters' addresses a `status` answer listed (nothing when it lists none).
    pub fn remember_masters(&self, masters: &[String]) {
        let Ok(mut creds) = Credentials::load(&self.config_dir) else {
            return;
        };
        if masters.is_empty() || creds.endpoint.masters == masters {
            return;
        }
        creds.endpoint.masters = masters.to_vec();
        if let Err(e) = creds.save(&self.config_dir) {
            eprintln!("warning: cannot keep the masters' addresses: {e}");
        }
    }

    /// Prints `value` as JSON, or the table text.
    pub fn print<T: Serialize>(
        &self,
        value: &T,
        table: impl FnOnce(&T) -> String,
    ) -> anyhow::Result<()> {
        match self.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
            Output::Table => print!("{}", table(value)),
        }
        Ok(())
    }
}
