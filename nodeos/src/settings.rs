//! Node settings: the `cloudos.*` keys of the kernel command line and the
//! optional `config.toml` on the data partition.
//!
//! The model, its key table, the reader and the writers live in `cloudos_settings`, one home
//! for every key; this module re-exports them under the path the rest of `nodeos` uses and
//! owns the one thing that touches the system: dropping the join token from the settings
//! file once it has been used.

pub use cloudos_settings::*;

/// The master's API port when `cloudos.master` names only a host.
pub use cloudos_cluster::client::DEFAULT_API_PORT;

/// RFC 1123 host name; the rule lives in `cloudos_cluster` so the installer checks names
/// exactly as these settings do.
pub use cloudos_cluster::validate_hostname;

/// Settings an image carries as defaults (`scripts/build.sh --image-cmdline`): `cloudos.*`
/// words read as if they came first on the kernel command line, so what the boot loader
/// passes wins. Part of the initramfs, so as trusted (and as signed) as the OS itself.
pub const IMAGE_CMDLINE: &str = "/etc/cloudos/cmdline";

/// The command line the boot settings are read from: the image's defaults, then the
/// kernel's own.
pub fn boot_cmdline() -> String {
    let image = std::fs::read_to_string(IMAGE_CMDLINE).unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    joined_cmdline(&image, &kernel)
}

fn joined_cmdline(image: &str, kernel: &str) -> String {
    format!("{} {}", image.trim(), kernel.trim())
        .trim()
        .to_owned()
}

/// Removes the join token from the settings file at `path`, once the node has joined and
/// its identity replaces it. A failure is logged: the node works either way.
pub fn forget_token_in(path: &std::path::Path) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let Some(rest) = without_token(&text) else {
        return;
    };
    match cloudos_cluster::files::write_private(path, rest.as_bytes()) {
        Ok(()) => log::info!(
            "joined: the join token is no longer kept in {}",
            path.display()
        ),
        Err(e) => log::warn!("cannot remove the join token from {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_command_line_wins_over_the_image_defaults() {
        let line = joined_cmdline(
            "cloudos.hostname=image cloudos.debug\n",
            "quiet cloudos.hostname=grub\n",
        );
        assert_eq!(
            line,
            "cloudos.hostname=image cloudos.debug quiet cloudos.hostname=grub"
        );
        let (settings, _) = Settings::load(None, &line);
        assert_eq!(settings.hostname.as_deref(), Some("grub"));
        assert!(settings.debug);
        assert_eq!(joined_cmdline("", "quiet"), "quiet");
    }

    #[test]
    fn forgetting_the_token_keeps_the_other_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let text = "role = \"compute\"\ntoken = \"cloudos1_abc_secret_pin\"\nhostname = \"c1\"\n";
        std::fs::write(&path, text).unwrap();
        forget_token_in(&path);
        let rest = std::fs::read_to_string(&path).unwrap();
        assert_eq!(rest, "role = \"compute\"\nhostname = \"c1\"\n");
        // Nothing to forget: the file is left alone, and a missing file is no error.
        forget_token_in(&path);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), rest);
        forget_token_in(&dir.path().join("absent.toml"));
    }
}
