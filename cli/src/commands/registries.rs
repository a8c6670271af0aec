//! `cloudos registry login|list|logout`: the cluster's credentials for a private
//! registry, sent to the master once and handed by it only to the nodes that pull from
//! that registry. The password or token is read from standard input, never an argument
//! (arguments show in `ps` and in shell history).

use std::io::Read as _;

use anyhow::{bail, Context as _};
use cloudos_cluster::registry::{RegistryAuth, RegistryList, RegistryLogin};
use time::OffsetDateTime;

use super::Ctx;
use crate::format;
use crate::table::Table;

/// Logs in as `username` with the password on standard input, or with the token there
/// when `username` is `None`.
pub async fn login(ctx: &Ctx, registry: &str, username: Option<String>) -> anyhow::Result<()> {
    let mut text = String::new();
    std::io::stdin()
        .take(8192)
        .read_to_string(&mut text)
        .context("reading the password or token from standard input")?;
    // `echo pw |` ends with a newline that is not part of the password.
    let value = text.strip_suffix('\n').unwrap_or(&text);
    let value = value.strip_suffix('\r').unwrap_or(value).to_owned();
    if value.is_empty() {
        bail!("standard input held no password or token");
    }
    let auth = match username {
        Some(username) => RegistryAuth::Basic {
            username,
            password: value,
        },
        None => RegistryAuth::Token { token: value },
    };
    let login = RegistryLogin {
        registry: registry.to_owned(),
        auth,
    };
    login.validate()?;
    let info = ctx.client().await?.registry_login(&login).await?;
    println!(
        "the cluster is logged in to {}{}; nodes pull from it with these credentials unless their registries.toml says otherwise",
        info.registry,
        info.username
            .map(|u| format!(" as {u}"))
            .unwrap_or_default()
    );
    Ok(())
}

pub async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let registries = ctx.client().await?.registries().await?;
    let now = OffsetDateTime::now_utc();
    ctx.print(&registries, |r| render(r, now))
}

pub async fn logout(ctx: &Ctx, registry: &str) -> anyhow::Result<()> {
    ctx.client().await?.registry_logout(registry).await?;
    println!("the cluster is logged out of {registry}");
    Ok(())
}

fn render(list: &RegistryList, now: OffsetDateTime) -> String {
    let mut table = Table::new(&["REGISTRY", "USER", "AGE"]);
    for r in &list.registries {
        table.row(vec![
            r.registry.clone(),
            r.username.clone().unwrap_or_else(|| "(token)".into()),
            format::age(r.created_at, now),
        ]);
    }
    table.render()
}
