//! The curl line that makes a Linux machine with systemd a node: the CLI prints it after
//! `cloudos token create`, the dashboard shows it with a copy button.

/// The install line: fetches install.sh and runs it only if its SHA-256 is the one of
/// `script` (what this master serves, read over the admin's verified connection), else
/// says so and runs nothing. `-k` is needed because the host has no way to verify the
/// master yet; the pin makes it harmless. Everything after is the script's job (see
/// `scripts/cloud-install.sh`, which explains why the script and not the serving key is pinned).
///
/// The script text goes through a shell variable: `$(…)` drops trailing newlines and
/// `printf "%s\n"` puts one back, so the digest is of `script` with exactly one final
/// newline, and what is hashed is byte for byte what runs. `sh -c '…'` makes the line
/// plain single-quoted text to the login shell (bash, zsh and fish read it alike), lets
/// options be appended to it, and lets `sudo` be put in front.
pub fn install_line(master: &str, token: &str, script: &[u8]) -> String {
    let sha256 = script_sha256(script);
    format!(
        "sh -c 's=$(curl -fsSk https://{master}/install.sh) || exit; \
         h=$(printf \"%s\\n\" \"$s\" | sha256sum); [ \"$h\" = \"{sha256}  -\" ] || \
         {{ echo \"cloudos-install: the install.sh from {master} is not the one this line pins \
         (its sha256 is ${{h%% *}}): changed on the way or on the master; nothing was run\" >&2; \
         exit 1; }}; sh -c \"$s\" cloudos-install \"$@\"' \
         cloudos-install --master {master} --token {token}"
    )
}

/// The SHA-256 (hex) the install line checks: of `script` with one final newline.
pub fn script_sha256(script: &[u8]) -> String {
    let end = script
        .iter()
        .rposition(|&b| b != b'\n')
        .map_or(0, |last| last + 1);
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(&script[..end]);
    context.update(b"\n");
    context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
