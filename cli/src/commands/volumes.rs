//! `cloudos volume create|resize|list|rm`: named volumes, the node each is on, its size
//! limit, what uses it.

use anyhow::bail;
use cloudos_cluster::units::format_bytes;
use cloudos_cluster::volume::{VolumeChange, VolumeList, VolumeRequest};
use time::OffsetDateTime;

use super::Ctx;
use crate::format;
use crate::table::Table;

pub async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let volumes = ctx.client().await?.volumes().await?;
    let now = OffsetDateTime::now_utc();
    ctx.print(&volumes, |v| render(v, now))
}

pub async fn create(ctx: &Ctx, name: &str, size_limit: Option<u64>) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    // Create never changes a volume there is: `resize` does, on purpose.
    if let Some(there) = client
        .volumes()
        .await?
        .volumes
        .iter()
        .find(|v| v.name == name)
    {
        if there.size_limit == size_limit {
            println!("volume {name} exists already, as asked");
            return Ok(());
        }
        bail!(
            "volume {name} exists already with size limit {}; `cloudos volume resize {name} \
             SIZE` changes it",
            limit_text(there.size_limit)
        );
    }
    let change = client
        .set_volume(name, &VolumeRequest { size_limit })
        .await?;
    println!("{}", said(&change));
    Ok(())
}

pub async fn resize(ctx: &Ctx, name: &str, size_limit: Option<u64>) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    if !client
        .volumes()
        .await?
        .volumes
        .iter()
        .any(|v| v.name == name)
    {
        bail!("no volume {name}; `cloudos volume create {name} --size SIZE` makes one");
    }
    let change = client
        .set_volume(name, &VolumeRequest { size_limit })
        .await?;
    println!("{}", said(&change));
    Ok(())
}

fn limit_text(limit: Option<u64>) -> String {
    limit.map_or_else(|| "none".to_owned(), format_bytes)
}

/// What `create` and `resize` did, in a line.
fn said(change: &VolumeChange) -> String {
    let v = &change.volume;
    let what = if change.created { "created" } else { "changed" };
    let limit = limit_text(v.size_limit);
    match (&v.node, change.sent) {
        (None, _) => format!(
            "volume {} {what}, size limit {limit}; the first work that names it makes it on \
             its node",
            v.name
        ),
        (Some(node), true) => {
            format!(
                "volume {} {what}, size limit {limit}; node {node} applies it now",
                v.name
            )
        }
        (Some(node), false) => format!(
            "volume {} {what}, size limit {limit}; node {node} is away and applies it when \
             work next mounts the volume there",
            v.name
        ),
    }
}

pub async fn remove(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    ctx.client().await?.remove_volume(name).await?;
    println!("volume {name} removed; its node deletes its data");
    Ok(())
}

/// `512Ki of 2Mi` when its node reported what it holds, the limit alone when not, `-`
/// without a limit.
fn size(used: Option<u64>, limit: Option<u64>) -> String {
    match (used, limit) {
        (Some(used), Some(limit)) => format!("{} of {}", format_bytes(used), format_bytes(limit)),
        (None, Some(limit)) => format_bytes(limit),
        _ => "-".into(),
    }
}

fn render(list: &VolumeList, now: OffsetDateTime) -> String {
    let mut table = Table::new(&["VOLUME", "NODE", "SIZE", "AGE", "USED BY"]);
    for v in &list.volumes {
        table.row(vec![
            v.name.clone(),
            v.node.clone().unwrap_or_else(|| "-".into()),
            size(v.used_bytes, v.size_limit),
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
    fn volumes_show_their_node_limit_and_users() {
        let list = VolumeList {
            volumes: vec![
                VolumeInfo {
                    name: "db".into(),
                    node: Some("node-3".into()),
                    created_at: datetime!(2026-12-07 10:00 UTC),
                    size_limit: Some(10 << 30),
                    used_bytes: Some(1536 << 20),
                    used_by: vec!["service web".into(), "web-r0".into()],
                },
                VolumeInfo {
                    name: "old".into(),
                    node: None,
                    created_at: datetime!(2026-12-06 10:00 UTC),
                    size_limit: None,
                    used_bytes: None,
                    used_by: Vec::new(),
                },
            ],
        };
        let text = render(&list, datetime!(2026-12-07 11:00 UTC));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("VOLUME"), "{text}");
        assert!(
            lines[1].contains("node-3")
                && lines[1].contains("1.5Gi of 10Gi")
                && lines[1].contains("service web, web-r0"),
            "{text}"
        );
        // Made by `volume create`, on no node yet: no node, no limit, no users.
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(cells, ["old", "-", "-", "25h", "-"], "{text}");
    }
}
