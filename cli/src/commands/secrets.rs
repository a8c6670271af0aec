//! `cloudos secret create|list|rm`: the value goes to the master once and is never shown
//! again, by the master or here.

use std::io::Read as _;
use std::path::Path;

use anyhow::{bail, Context as _};
use cloudos_cluster::secret::{SecretCreateRequest, SecretList, SecretValue, MAX_SECRET_BYTES};
use time::OffsetDateTime;

use super::Ctx;
use crate::format;
use crate::table::Table;

/// Where a new secret's value comes from.
pub enum Source<'a> {
    /// A file, or standard input for `-`.
    File(&'a Path),
    Literal(String),
}

pub async fn create(ctx: &Ctx, name: &str, source: Source<'_>) -> anyhow::Result<()> {
    let value = match source {
        Source::Literal(text) => text.into_bytes(),
        Source::File(path) if path == Path::new("-") => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .take(MAX_SECRET_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
                .context("reading the secret from standard input")?;
            bytes
        }
        Source::File(path) => {
            let size = std::fs::metadata(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .len();
            if size > MAX_SECRET_BYTES as u64 {
                bail!(
                    "{} is {size} bytes: a secret is at most {MAX_SECRET_BYTES}",
                    path.display()
                );
            }
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
    };
    let request = SecretCreateRequest {
        name: name.to_owned(),
        value: SecretValue(value),
    };
    request.validate()?;
    let info = ctx.client().await?.create_secret(&request).await?;
    println!(
        "secret {} created ({} bytes); containers mount it with --secret {}",
        info.name, info.bytes, info.name
    );
    Ok(())
}

pub async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let secrets = ctx.client().await?.secrets().await?;
    let now = OffsetDateTime::now_utc();
    ctx.print(&secrets, |s| render(s, now))
}

pub async fn remove(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    ctx.client().await?.remove_secret(name).await?;
    println!("secret {name} removed");
    Ok(())
}

fn render(list: &SecretList, now: OffsetDateTime) -> String {
    let mut table = Table::new(&["SECRET", "BYTES", "AGE", "USED BY"]);
    for s in &list.secrets {
        table.row(vec![
            s.name.clone(),
            s.bytes.to_string(),
            format::age(s.created_at, now),
            format::users(&s.used_by),
        ]);
    }
    table.render()
}
