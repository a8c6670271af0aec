//! `cloudos release add|list|get`: the signed update bundles the master keeps.

use std::path::Path;

use anyhow::Context as _;

use cloudos_cluster::api::{ReleaseInfo, ReleaseList};
use cloudos_cluster::units::format_bytes;

use super::Ctx;
use crate::table::Table;

pub async fn add(ctx: &Ctx, file: &Path) -> anyhow::Result<()> {
    let size = std::fs::metadata(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?
        .len();
    eprintln!("uploading {} ({})…", file.display(), format_bytes(size));
    let info = ctx.client().await?.add_release(file).await?;
    ctx.print(&info, render_added)
}

pub async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let list = ctx.client().await?.releases().await?;
    ctx.print(&list, render_list)
}

/// Downloads a kept release into `output`, and keeps it only once its signature (by a key
/// this build trusts) and every part's hash check out: a file that is there is a good one.
pub async fn get(ctx: &Ctx, version: &str, arch: &str, output: &Path) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let partial = partial_path(output);
    let mut file = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let fetched = client.release_bundle_to(version, arch, &mut file).await;
    drop(file);
    let checked = fetched.map_err(anyhow::Error::from).and_then(|_| {
        let file = std::fs::File::open(&partial)?;
        let verified = cloudos_release::bundle::open(
            std::io::BufReader::new(file),
            &cloudos_release::trusted(),
            |_| Ok(()),
            None,
        )
        .context("the master sent a bundle that does not check out")?;
        std::fs::rename(&partial, output)
            .with_context(|| format!("cannot move the bundle to {}", output.display()))?;
        Ok(verified)
    });
    let verified = match checked {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let size = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "release {} for {} saved to {} ({}, signed by key {})",
        verified.manifest.version,
        verified.manifest.arch,
        output.display(),
        format_bytes(size),
        verified.key
    );
    Ok(())
}

/// Beside `output`, so that the rename is within one file system.
fn partial_path(output: &Path) -> std::path::PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    output.with_file_name(name)
}

pub fn render_added(info: &ReleaseInfo) -> String {
    format!(
        "release {} for {} kept ({}, signed by key {})\n",
        info.version,
        info.arch,
        format_bytes(info.size),
        info.key
    )
}

pub fn render_list(list: &ReleaseList) -> String {
    let mut table = Table::new(&["VERSION", "ARCH", "SIZE", "KEY"]);
    for r in &list.releases {
        table.row(vec![
            r.version.clone(),
            r.arch.clone(),
            format_bytes(r.size),
            r.key.clone(),
        ]);
    }
    let mut out = format!("master runs {}\n", list.running);
    if list.development_key {
        out.push_str(
            "warning: the master trusts the public development key: anyone with the CloudOS \
             sources can sign a release it accepts (see image/release-keys/README.md)\n",
        );
    }
    if list.releases.is_empty() {
        out.push_str("no releases kept; add one with `cloudos release add FILE`\n");
    } else {
        out.push_str(&table.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_shows_versions_and_warns_about_the_development_key() {
        let list = ReleaseList {
            releases: vec![ReleaseInfo {
                version: "0.2.0".into(),
                arch: "x86_64".into(),
                size: 40 << 20,
                key: "df8d518f0ca48a2e".into(),
                file: "cloudos-0.2.0-x86_64.bundle".into(),
            }],
            running: "0.1.0".into(),
            development_key: true,
        };
        let shown = render_list(&list);
        assert!(shown.starts_with("master runs 0.1.0\n"), "{shown}");
        assert!(shown.contains("development key"), "{shown}");
        assert!(shown.contains("0.2.0"), "{shown}");
        assert!(shown.contains("40Mi"), "{shown}");
        let none = ReleaseList {
            releases: vec![],
            running: "0.1.0".into(),
            development_key: false,
        };
        let shown = render_list(&none);
        assert!(!shown.contains("warning"), "{shown}");
        assert!(shown.contains("cloudos release add"), "{shown}");
    }
}
