//! `cloudos status`.

use cloudos_cluster::api::ClusterStatus;

use super::Ctx;
use crate::format;
use crate::table::fields;

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let status = ctx.client().await?.status().await?;
    ctx.remember_masters(&status.masters);
    ctx.print(&status, render)
}

pub fn render(s: &ClusterStatus) -> String {
    let mut lines = vec![
        ("cluster", s.cluster_name.clone()),
        ("CA pin", s.ca_pin.clone()),
        ("master", s.master_name.clone()),
        ("API", s.api_address.clone()),
        ("version", s.master_version.clone()),
        ("uptime", format::duration_secs(s.uptime_secs)),
        (
            "nodes ready",
            format!("{}/{}", s.nodes_ready, s.nodes_total),
        ),
    ];
    if !s.masters.is_empty() {
        lines.push(("masters", s.masters.join(", ")));
    }
    if !s.etcd.is_empty() {
        let members: Vec<String> = s
            .etcd
            .iter()
            .map(|m| {
                let name = if m.name.is_empty() {
                    "(not started)"
                } else {
                    &m.name
                };
                let state = if m.answering {
                    "answering"
                } else {
                    "NOT ANSWERING"
                };
                format!("{name} {} {state}", m.client_url)
            })
            .collect();
        lines.push(("etcd", members.join("; ")));
    }
    fields(&lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fields() {
        let s = ClusterStatus {
            cluster_name: "lab".into(),
            ca_pin: "sha256:ab".into(),
            master_name: "master-1".into(),
            master_version: "0.1.0".into(),
            api_address: "10.0.0.5:9443".into(),
            uptime_secs: 7200,
            nodes_total: 3,
            nodes_ready: 2,
            masters: Vec::new(),
            etcd: Vec::new(),
        };
        let text = render(&s);
        assert!(text.starts_with("cluster:      lab\n"), "{text}");
        assert!(
            text.contains("uptime:       2h\n") && text.ends_with("nodes ready:  2/3\n"),
            "{text}"
        );
    }
}
