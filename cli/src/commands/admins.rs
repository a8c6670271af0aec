//! `cloudos admin list|revoke`: the people with admin certificates.

use cloudos_cluster::api::AdminInfo;
use time::OffsetDateTime;

use super::Ctx;
use crate::format;
use crate::table::Table;

pub async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let admins = ctx.client().await?.admins().await?;
    let now = OffsetDateTime::now_utc();
    ctx.print(&admins, |a| render_list(a, now))
}

pub async fn revoke(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    ctx.client().await?.revoke_admin(name).await?;
    println!("admin {name} revoked; its certificates no longer work");
    Ok(())
}

pub fn render_list(admins: &Vec<AdminInfo>, now: OffsetDateTime) -> String {
    let mut table = Table::new(&["NAME", "FROM", "TOKEN", "SERIAL", "AGE"]);
    for a in admins {
        table.row(vec![
            a.name.clone(),
            a.address.clone(),
            a.token_id.clone(),
            a.cert_serial.to_string(),
            format::age(a.joined_at, now),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_cluster::CertSerial;
    use time::macros::datetime;

    #[test]
    fn admins_table() {
        let now = datetime!(2026-03-02 10:00 UTC);
        let admins = vec![AdminInfo {
            name: "alice".into(),
            address: "10.0.0.9".into(),
            cert_serial: CertSerial::from_bytes(&[0xab, 0x01]),
            pending_serial: None,
            token_id: "abc123".into(),
            joined_at: datetime!(2026-03-01 10:00 UTC),
        }];
        let text = render_list(&admins, now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{text}");
        assert!(
            lines[1].starts_with("alice") && lines[1].contains("10.0.0.9"),
            "{text}"
        );
        assert!(
            lines[1].contains("ab01") && lines[1].contains("abc123"),
            "{text}"
        );
    }
}
