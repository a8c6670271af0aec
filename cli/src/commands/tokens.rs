//! `cloudos token create|list|revoke`.

use anyhow::Context as _;
use cloudos_cluster::api::{TokenCreateRequest, TokenInfo};
use cloudos_cluster::install_line::install_line;
use cloudos_cluster::Role;
use time::OffsetDateTime;

use super::{Ctx, Output};
use crate::format;
use crate::table::Table;

/// `--ttl never` (or `0`) makes a token that does not expire.
pub fn ttl_arg(ttl: &str) -> Option<String> {
    match ttl.trim() {
        "never" | "0" => None,
        other => Some(other.to_owned()),
    }
}

pub async fn create(
    ctx: &Ctx,
    role: Role,
    ttl: &str,
    uses: Option<u32>,
    description: String,
    labels: std::collections::BTreeMap<String, String>,
) -> anyhow::Result<()> {
    // Checked here too so a typo (or a TTL beyond the limits) is reported before any
    // request; the master checks it again.
    let parsed = ttl_arg(ttl)
        .as_deref()
        .map(cloudos_cluster::token::parse_ttl)
        .transpose()?;
    cloudos_cluster::token::check_ttl(role, parsed)?;
    let request = TokenCreateRequest {
        role,
        ttl: ttl_arg(ttl),
        uses,
        description,
        labels,
    };
    let client = ctx.client().await?;
    // Read before the token exists: a token whose line cannot be shown is one to revoke.
    let script = match (ctx.output, role) {
        (Output::Table, Role::Compute) => Some(
            client
                .install_script()
                .await
                .context("cannot read install.sh from the master to pin it in the install line")?,
        ),
        _ => None,
    };
    let created = client.create_token(&request).await?;
    match ctx.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&created)?),
        Output::Table => {
            // The token alone on stdout, so `TOKEN=$(cloudos token create)` works; the rest
            // is for the person reading.
            println!("{}", created.token);
            eprintln!("{}", describe(&created.info));
            if let Some(script) = script {
                eprintln!(
                    "on a Linux machine with systemd, as root (or with sudo in front), this \
                     line makes it a compute node:"
                );
                eprintln!(
                    "  {}",
                    install_line(&client.address(), &created.token, &script)
                );
            }
        }
    }
    Ok(())
}

/// One line about a new token, for stderr.
pub fn describe(info: &TokenInfo) -> String {
    let expires = info
        .expires_at
        .map(|t| format!("expires {}", format::timestamp(t)))
        .unwrap_or_else(|| "never expires".into());
    let uses = info
        .uses_left
        .map(|n| format!("{n} use{}", if n == 1 { "" } else { "s" }))
        .unwrap_or_else(|| "unlimited uses".into());
    format!(
        "token {} for role {}: {expires}, {uses}; it is shown only once",
        info.id, info.role
    )
}

pub async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let tokens = ctx.client().await?.tokens().await?;
    let now = OffsetDateTime::now_utc();
    ctx.print(&tokens, |t| render_list(t, now))
}

pub async fn revoke(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    ctx.client().await?.revoke_token(id).await?;
    println!("token {id} revoked");
    Ok(())
}

fn state(t: &TokenInfo, now: OffsetDateTime) -> &'static str {
    if t.revoked {
        "revoked"
    } else if t.expires_at.is_some_and(|at| at <= now) {
        "expired"
    } else if t.uses_left == Some(0) {
        "used up"
    } else {
        "valid"
    }
}

pub fn render_list(tokens: &Vec<TokenInfo>, now: OffsetDateTime) -> String {
    let mut table = Table::new(&[
        "ID",
        "ROLE",
        "STATE",
        "EXPIRES",
        "USES LEFT",
        "AGE",
        "DESCRIPTION",
    ]);
    for t in tokens {
        table.row(vec![
            t.id.to_string(),
            t.role.to_string(),
            state(t, now).into(),
            t.expires_at
                .map(format::timestamp)
                .unwrap_or_else(|| "never".into()),
            t.uses_left
                .map(|n| n.to_string())
                .unwrap_or_else(|| "unlimited".into()),
            format::age(t.created_at, now),
            t.description.clone(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_cluster::install_line::script_sha256;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-03-01 10:00 UTC);

    fn token(
        id: &str,
        revoked: bool,
        expires: Option<OffsetDateTime>,
        uses: Option<u32>,
    ) -> TokenInfo {
        TokenInfo {
            id: id.parse().expect("id"),
            role: Role::Compute,
            created_at: datetime!(2026-03-01 09:00 UTC),
            expires_at: expires,
            uses_left: uses,
            revoked,
            description: "rack 1".into(),
            labels: Default::default(),
        }
    }

    #[test]
    fn list_shows_state() {
        let tokens = vec![
            token(
                "abcdef",
                false,
                Some(datetime!(2026-03-02 09:00 UTC)),
                Some(3),
            ),
            token("bcdefg", true, None, None),
            token("cdefgh", false, Some(datetime!(2026-03-01 09:30 UTC)), None),
            token("defghj", false, None, Some(0)),
        ];
        let text = render_list(&tokens, NOW);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("ID       ROLE      STATE     EXPIRES"),
            "{text}"
        );
        assert!(
            lines[1].contains("valid")
                && lines[1].contains("2026-03-02T09:00:00Z")
                && lines[1].ends_with("60m   rack 1"),
            "{text}"
        );
        assert!(
            lines[2].contains("revoked")
                && lines[2].contains("never")
                && lines[2].contains("unlimited"),
            "{text}"
        );
        assert!(lines[3].contains("expired"), "{text}");
        assert!(lines[4].contains("used up"), "{text}");
    }

    /// Runs the install line from `shell` (the admin's login shell), with a stand-in `curl`
    /// first on PATH that prints `served` (what the master, or someone in between, sends):
    /// the exit code and everything printed.
    fn run_line(shell: &str, line: &str, served: &str) -> (i32, String) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let body = dir.path().join("served");
        std::fs::write(&body, served).expect("served");
        let curl = dir.path().join("curl");
        std::fs::write(&curl, format!("#!/bin/sh\ncat '{}'\n", body.display())).expect("curl");
        std::fs::set_permissions(&curl, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = std::process::Command::new(shell)
            .arg("-c")
            .arg(format!("{line} --dry-run 2>&1"))
            .env("PATH", path)
            .output()
            .expect("running the line");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    const TOKEN: &str = "cloudos1_abcdef_s3cret_00ff";

    #[test]
    fn the_line_runs_the_pinned_script_with_its_options() {
        // Trailing newlines of the served script do not change what the line checks.
        let script = "#!/bin/sh\necho \"ran with $*\"\n\n";
        let line = install_line("10.0.0.1:9443", TOKEN, script.as_bytes());
        for shell in ["sh", "bash"] {
            let (code, out) = run_line(shell, &line, script);
            assert_eq!(
                (code, out.trim()),
                (
                    0,
                    "ran with --master 10.0.0.1:9443 --token cloudos1_abcdef_s3cret_00ff --dry-run"
                ),
                "{shell}: {line}"
            );
        }
    }

    #[test]
    fn a_changed_script_is_refused_before_it_runs() {
        // The man in the middle of the script download changes one word (or appends a line).
        let script = "#!/bin/sh\necho \"ran with $*\"\n";
        let line = install_line("10.0.0.1:9443", TOKEN, script.as_bytes());
        for served in [
            script.replace("ran", "RAN"),
            format!("{script}echo owned\n"),
        ] {
            let (code, out) = run_line("sh", &line, &served);
            assert_eq!(code, 1, "{out}");
            assert_eq!(
                out.trim(),
                format!(
                    "cloudos-install: the install.sh from 10.0.0.1:9443 is not the one this \
                     line pins (its sha256 is {}): changed on the way or on the master; \
                     nothing was run",
                    script_sha256(served.as_bytes())
                )
            );
        }
    }

    #[test]
    fn ttl_never() {
        assert_eq!(ttl_arg("never"), None);
        assert_eq!(ttl_arg("24h"), Some("24h".into()));
    }

    #[test]
    fn describe_a_new_token() {
        let t = token("abcdef", false, None, Some(1));
        assert_eq!(
            describe(&t),
            "token abcdef for role compute: never expires, 1 use; it is shown only once"
        );
    }
}
