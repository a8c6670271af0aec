//! `cloudos apikey create|list|revoke`: bearer keys for automation.

use cloudos_cluster::api::{ApiKeyCreateRequest, ApiKeyInfo};
use cloudos_cluster::Role;
use time::OffsetDateTime;

use super::{Ctx, Output};
use crate::format;
use crate::table::Table;

pub async fn create(ctx: &Ctx, name: &str, role: Role, ttl: &str) -> anyhow::Result<()> {
    let request = ApiKeyCreateRequest {
        name: name.to_owned(),
        role,
        ttl: ttl.to_owned(),
    };
    let created = ctx.client().await?.create_api_key(&request).await?;
    match ctx.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&created)?),
        Output::Table => {
            println!("{}", created.key);
            eprintln!(
                "API key {} ({}) as {} until {}; shown only now. Send it as \
                 `Authorization: Bearer KEY` (the CA to check the master is at /install/ca.pem)",
                created.info.id,
                created.info.name,
                created.info.role,
                format::timestamp(created.info.expires_at)
            );
        }
    }
    Ok(())
}

pub async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let keys = ctx.client().await?.api_keys().await?;
    let now = OffsetDateTime::now_utc();
    ctx.print(&keys, |k| render_keys(k, now))
}

pub async fn revoke(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let key = ctx.client().await?.revoke_api_key(id).await?;
    ctx.print(&key, |k| {
        format!("API key {} ({}) revoked; it no longer works", k.id, k.name)
    })
}

pub fn render_keys(keys: &Vec<ApiKeyInfo>, now: OffsetDateTime) -> String {
    let mut table = Table::new(&["ID", "NAME", "ROLE", "BY", "AGE", "EXPIRES", "STATE"]);
    for k in keys {
        let state = match (k.revoked, k.expires_at <= now) {
            (true, _) => "revoked",
            (false, true) => "expired",
            (false, false) => "active",
        };
        table.row(vec![
            k.id.clone(),
            k.name.clone(),
            k.role.to_string(),
            k.created_by.clone(),
            format::age(k.created_at, now),
            format::timestamp(k.expires_at),
            state.to_owned(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn keys_table() {
        let now = datetime!(2026-12-07 12:00 UTC);
        let key = |id: &str, revoked, expires_at| ApiKeyInfo {
            id: id.into(),
            name: "ci".into(),
            role: Role::Operator,
            created_by: "alice".into(),
            created_at: datetime!(2026-12-01 12:00 UTC),
            expires_at,
            revoked,
        };
        let keys = vec![
            key("aaaaaaaa", false, datetime!(2027-01-01 0:00 UTC)),
            key("bbbbbbbb", true, datetime!(2027-01-01 0:00 UTC)),
            key("cccccccc", false, datetime!(2026-12-02 0:00 UTC)),
        ];
        let text = render_keys(&keys, now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].contains("operator") && lines[1].ends_with("active"),
            "{text}"
        );
        assert!(
            lines[2].ends_with("revoked") && lines[3].ends_with("expired"),
            "{text}"
        );
    }
}
