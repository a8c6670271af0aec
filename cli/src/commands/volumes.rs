//! `cloudos volume list|rm`: named volumes, the node each is on, what uses it.

use cloudos_cluster::volume::VolumeList;
use time::OffsetDateTime;

use super::Ctx;
use crate::format;
use crate::table::Table;

pub async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let volumes = ctx.client().await?.volumes().await?;
    let now = OffsetDateTime::now_utc();
    ctx.print(&volumes, |v| render(v, now))
}

pub async fn remove(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    ctx.client().await?.remove_volume(name).await?;
    println!("volume {name} removed; its node deletes its data");
    Ok(())
}

fn render(list: &VolumeList, now: OffsetDateTime) -> String {
    let mut table = Table::new(&["VOLUME", "NODE", "AGE", "USED BY"]);
    for v in &list.volumes {
        table.row(vec![
            v.name.clone(),
            v.node.clone(),
            format::age(v.created_at, now),
            format::users(&v.used_by),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_cluster::volume::VolumeInfo;
    use time::macros::datetime;

    #[test]
    fn volumes_show_their_node_and_users() {
        let list = VolumeList {
            volumes: vec![
                VolumeInfo {
                    name: "db".into(),
                    node: "node-3".into(),
                    created_at: datetime!(2026-12-07 10:00 UTC),
                    used_by: vec!["service web".into(), "web-r0".into()],
                },
                VolumeInfo {
                    name: "old".into(),
                    node: "node-4".into(),
                    created_at: datetime!(2026-12-06 10:00 UTC),
                    used_by: Vec::new(),
                },
            ],
        };
        let text = render(&list, datetime!(2026-12-07 11:00 UTC));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("VOLUME"), "{text}");
        assert!(
            lines[1].contains("node-3") && lines[1].contains("service web, web-r0"),
            "{text}"
        );
        assert!(
            lines[2].contains("25h") && lines[2].trim_end().ends_with('-'),
            "{text}"
        );
    }
}
