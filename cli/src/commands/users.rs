//! `cloudos user add|list|role|remove`: the people who use the cluster and their roles.

use cloudos_cluster::api::{UserAddRequest, UserInfo};
use cloudos_cluster::Role;
use time::OffsetDateTime;

use super::{Ctx, Output};
use crate::format;
use crate::table::Table;

pub async fn add(ctx: &Ctx, name: &str, role: Role, ttl: Option<String>) -> anyhow::Result<()> {
    let request = UserAddRequest {
        name: name.to_owned(),
        role,
        ttl,
    };
    let created = ctx.client().await?.add_user(&request).await?;
    match ctx.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&created)?),
        Output::Table => {
            // The token alone on stdout, so it can be piped to the person; the rest is for
            // the admin reading.
            println!("{}", created.token);
            let until = created
                .info
                .expires_at
                .map(|t| format!(" until {}", format::timestamp(t)))
                .unwrap_or_default();
            eprintln!(
                "a one-use login for {name} as {role}{until}; they run: cloudos login --name {name} --token TOKEN"
            );
        }
    }
    Ok(())
}

pub async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let users = ctx.client().await?.users().await?;
    let now = OffsetDateTime::now_utc();
    ctx.print(&users, |u| render_list(u, now))
}

pub async fn role(ctx: &Ctx, name: &str, role: Role) -> anyhow::Result<()> {
    let user = ctx.client().await?.set_user_role(name, role).await?;
    ctx.print(&user, |u| format!("user {} is now {}", u.name, u.role))
}

/// `cloudos user password`: your own dashboard password, asked twice on a terminal or read
/// as one line from stdin (for scripts); never an argument, which `ps` would show.
pub async fn password(ctx: &Ctx) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let password = if std::io::stdin().is_terminal() {
        dialoguer::Password::new()
            .with_prompt("dashboard password (12 characters or more)")
            .with_confirmation("again", "the two differ")
            .interact()?
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    let user = ctx.client().await?.set_password(&password).await?;
    println!(
        "{}: dashboard password set; your other dashboard sessions ended",
        user.name
    );
    Ok(())
}

/// `cloudos dashboard`: opens the dashboard in the browser, logged in (a one-time link), or
/// prints the link with `--print`.
pub async fn dashboard(ctx: &Ctx, print: bool) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let link = client.dashboard_link().await?;
    let url = format!("https://{}{}", client.address(), link.path);
    if print {
        println!("{url}");
        return Ok(());
    }
    eprintln!("opening {url} (one use, within two minutes)");
    let opened = std::process::Command::new("xdg-open")
        .arg(&url)
        .status()
        .or_else(|_| std::process::Command::new("open").arg(&url).status());
    match opened {
        Ok(status) if status.success() => Ok(()),
        _ => {
            println!("{url}");
            anyhow::bail!("no browser could be opened; open the link above (it works once)")
        }
    }
}

pub async fn remove(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    ctx.client().await?.remove_user(name).await?;
    println!("user {name} removed; their certificates no longer work");
    Ok(())
}

pub fn render_list(users: &Vec<UserInfo>, now: OffsetDateTime) -> String {
    let mut table = Table::new(&["NAME", "ROLE", "FROM", "TOKEN", "SERIAL", "AGE"]);
    for u in users {
        table.row(vec![
            u.name.clone(),
            u.role.to_string(),
            u.address.clone(),
            u.token_id.clone(),
            u.cert_serial.to_string(),
            format::age(u.joined_at, now),
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
    fn users_table() {
        let now = datetime!(2026-03-02 10:00 UTC);
        let users = vec![UserInfo {
            name: "alice".into(),
            role: Role::Viewer,
            address: "10.0.0.9".into(),
            cert_serial: CertSerial::from_bytes(&[0xab, 0x01]),
            pending_serial: None,
            token_id: "abc123".into(),
            joined_at: datetime!(2026-03-01 10:00 UTC),
        }];
        let text = render_list(&users, now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("NAME") && lines[0].contains("ROLE"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("alice") && lines[1].contains("viewer"),
            "{text}"
        );
        assert!(
            lines[1].contains("ab01") && lines[1].contains("abc123"),
            "{text}"
        );
    }
}
