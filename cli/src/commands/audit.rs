//! `cloudos audit`: every change made through the API.

use cloudos_cluster::api::AuditEntry;

use super::Ctx;
use crate::format;
use crate::table::Table;

pub async fn run(
    ctx: &Ctx,
    since: Option<&str>,
    user: Option<&str>,
    limit: Option<usize>,
) -> anyhow::Result<()> {
    let entries = ctx.client().await?.audit(since, user, limit).await?;
    ctx.print(&entries, render_audit)
}

pub fn render_audit(entries: &Vec<AuditEntry>) -> String {
    let mut table = Table::new(&["TIME", "WHO", "ROLE", "FROM", "WHAT", "RESULT"]);
    for e in entries {
        table.row(vec![
            format::timestamp(e.at),
            e.who.clone(),
            e.role.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
            e.from.clone(),
            format!("{} {}", e.method, e.path),
            e.status.to_string(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_cluster::Role;
    use time::macros::datetime;

    #[test]
    fn audit_table() {
        let now = datetime!(2026-12-07 12:00 UTC);
        let entries = vec![AuditEntry {
            id: 1,
            at: now,
            who: "key:ci".into(),
            role: Some(Role::Operator),
            from: "10.0.0.9".into(),
            method: "POST".into(),
            path: "/v1/tasks".into(),
            status: 200,
        }];
        let text = render_audit(&entries);
        assert!(
            text.contains("key:ci") && text.contains("POST /v1/tasks"),
            "{text}"
        );
    }
}
