//! `cloudos discover`: the masters advertising `_cloudos._tcp` on this LAN.

use std::time::Duration;

use cloudos_discovery::{browse_report, BrowseReport};
use serde::Serialize;

use super::Ctx;
use crate::table::Table;

/// The JSON form (the discovery crate's types are not serializable).
#[derive(Debug, Serialize)]
pub struct Found {
    pub masters: Vec<FoundMaster>,
    pub skipped: Vec<FoundSkipped>,
}

#[derive(Debug, Serialize)]
pub struct FoundMaster {
    pub name: String,
    pub cluster: String,
    pub host: String,
    pub addresses: Vec<String>,
    pub port: u16,
    pub pin_prefix: String,
    pub version: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct FoundSkipped {
    pub name: String,
    pub reason: String,
}

impl From<BrowseReport> for Found {
    fn from(r: BrowseReport) -> Self {
        Found {
            masters: r
                .masters
                .into_iter()
                .map(|m| FoundMaster {
                    name: m.instance,
                    cluster: m.cluster,
                    host: m.host,
                    addresses: m.addresses.iter().map(ToString::to_string).collect(),
                    port: m.port,
                    pin_prefix: m.pin_prefix,
                    version: m.version,
                })
                .collect(),
            skipped: r
                .skipped
                .into_iter()
                .map(|s| FoundSkipped {
                    name: s.instance,
                    reason: s.reason,
                })
                .collect(),
        }
    }
}

/// Browses in a blocking task (mdns-sd blocks for the whole timeout).
pub async fn browse(timeout: Duration) -> anyhow::Result<BrowseReport> {
    Ok(tokio::task::spawn_blocking(move || browse_report(timeout)).await??)
}

pub async fn run(ctx: &Ctx, timeout: Duration) -> anyhow::Result<()> {
    let found = Found::from(browse(timeout).await?);
    ctx.print(&found, render)
}

pub fn render(found: &Found) -> String {
    if found.masters.is_empty() && found.skipped.is_empty() {
        return "no CloudOS master answered on this LAN\n".into();
    }
    let mut table = Table::new(&["NAME", "CLUSTER", "ADDRESS", "PORT", "PIN", "VERSION"]);
    for m in &found.masters {
        table.row(vec![
            m.name.clone(),
            m.cluster.clone(),
            m.addresses
                .first()
                .cloned()
                .unwrap_or_else(|| m.host.clone()),
            m.port.to_string(),
            format!("sha256:{}…", m.pin_prefix),
            m.version.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut out = table.render();
    for s in &found.skipped {
        out.push_str(&format!("skipped {}: {}\n", s.name, s.reason));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_masters_and_skipped() {
        let found = Found {
            masters: vec![FoundMaster {
                name: "master-1".into(),
                cluster: "lab".into(),
                host: "master-1.local.".into(),
                addresses: vec!["10.0.0.5".into(), "fd00::5".into()],
                port: 9443,
                pin_prefix: "0123456789abcdef".into(),
                version: Some("0.1.0".into()),
            }],
            skipped: vec![FoundSkipped {
                name: "odd".into(),
                reason: "no pin".into(),
            }],
        };
        assert_eq!(
            render(&found),
            "NAME       CLUSTER   ADDRESS    PORT   PIN                        VERSION\n\
             master-1   lab       10.0.0.5   9443   sha256:0123456789abcdef…   0.1.0\n\
             skipped odd: no pin\n"
        );
        let none = Found {
            masters: vec![],
            skipped: vec![],
        };
        assert_eq!(render(&none), "no CloudOS master answered on this LAN\n");
    }
}
