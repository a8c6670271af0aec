//! Registry credentials of the node, from `<data>/registries.toml`, read at each pull so
//! that a change needs no restart. The file never leaves the node and its secrets are never
//! logged (`Credentials` prints `***`):
//!
//! ```toml
//! ["registry.example.com"]
//! username = "ci"
//! password = "…"
//!
//! ["10.88.0.1:5000"]
//! token = "…"          # sent as `Authorization: Bearer …`
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use cloudos_oci::Credentials;
use serde::Deserialize;

pub const FILE: &str = "registries.toml";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    username: Option<String>,
    password: Option<String>,
    token: Option<String>,
}

/// The registry part of an image reference: the first path component when it looks like a
/// host (has a `.` or `:`, or is `localhost`), else Docker Hub.
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// The credentials for `image`'s registry; anonymous when the file has none for it.
pub fn for_image(data_dir: &Path, image: &str) -> Result<Credentials, String> {
    let path = data_dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Credentials::Anonymous),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    parse(&text, registry_of(image)).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse(text: &str, registry: &str) -> Result<Credentials, String> {
    let entries: BTreeMap<String, Entry> =
        toml::from_str(text).map_err(|e| e.message().to_owned())?;
    let Some(entry) = entries.get(registry) else {
        return Ok(Credentials::Anonymous);
    };
    match (&entry.username, &entry.password, &entry.token) {
        (Some(username), Some(password), None) => Ok(Credentials::Basic {
            username: username.clone(),
            password: password.clone(),
        }),
        (None, None, Some(token)) => Ok(Credentials::Bearer(token.clone())),
        _ => Err(format!(
            "[\"{registry}\"] needs either username and password, or token"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_of_references() {
        assert_eq!(
            registry_of("10.88.0.1:5000/lab/busybox:1"),
            "10.88.0.1:5000"
        );
        assert_eq!(registry_of("ghcr.io/org/app:2"), "ghcr.io");
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(registry_of("library/busybox"), "docker.io");
        assert_eq!(registry_of("busybox"), "docker.io");
    }

    #[test]
    fn entries_parse_and_typos_are_errors() {
        let text = "[\"r:5000\"]\nusername = \"u\"\npassword = \"p\"\n[\"t.io\"]\ntoken = \"x\"\n";
        assert!(matches!(
            parse(text, "r:5000"),
            Ok(Credentials::Basic { .. })
        ));
        assert!(matches!(parse(text, "t.io"), Ok(Credentials::Bearer(_))));
        assert!(matches!(parse(text, "other"), Ok(Credentials::Anonymous)));
        let half = "[\"r\"]\nusername = \"u\"\n";
        assert!(parse(half, "r")
            .unwrap_err()
            .contains("either username and password"));
        let typo = "[\"r\"]\nuser = \"u\"\npassword = \"p\"\n";
        assert!(parse(typo, "r").unwrap_err().contains("unknown field"));
    }
}
