//! Registry credentials for a pull: the node's own, from `<data>/registries.toml` (read at
//! each pull so that a change needs no restart), or else the cluster's, which come with
//! the assignment (`cloudos registry login`). The node's entry for a registry wins: an
//! override for one machine. The file never leaves the node and no password is ever
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

use cloudos_cluster::registry::{registry_of, RegistryAuth};
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

/// The credentials for `image`'s registry: the node's entry for it, else `cluster`'s,
/// else none.
pub fn for_image(
    data_dir: &Path,
    image: &str,
    cluster: Option<&RegistryAuth>,
) -> Result<Credentials, String> {
    let path = data_dir.join(FILE);
    let own = match std::fs::read_to_string(&path) {
        Ok(text) => {
            parse(&text, registry_of(image)).map_err(|e| format!("{}: {e}", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    Ok(own
        .or_else(|| cluster.cloned().map(Credentials::from))
        .unwrap_or(Credentials::Anonymous))
}

/// The file's entry for `registry`, if it has one.
fn parse(text: &str, registry: &str) -> Result<Option<Credentials>, String> {
    let entries: BTreeMap<String, Entry> =
        toml::from_str(text).map_err(|e| e.message().to_owned())?;
    let Some(entry) = entries.get(registry) else {
        return Ok(None);
    };
    match (&entry.username, &entry.password, &entry.token) {
        (Some(username), Some(password), None) => Ok(Some(Credentials::Basic {
            username: username.clone(),
            password: password.clone(),
        })),
        (None, None, Some(token)) => Ok(Some(Credentials::Bearer(token.clone()))),
        _ => Err(format!(
            "[\"{registry}\"] needs either username and password, or token"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_typos_are_errors() {
        let text = "[\"r:5000\"]\nusername = \"u\"\npassword = \"p\"\n[\"t.io\"]\ntoken = \"x\"\n";
        assert!(matches!(
            parse(text, "r:5000"),
            Ok(Some(Credentials::Basic { .. }))
        ));
        assert!(matches!(
            parse(text, "t.io"),
            Ok(Some(Credentials::Bearer(_)))
        ));
        assert!(matches!(parse(text, "other"), Ok(None)));
        let half = "[\"r\"]\nusername = \"u\"\n";
        assert!(parse(half, "r")
            .unwrap_err()
            .contains("either username and password"));
        let typo = "[\"r\"]\nuser = \"u\"\npassword = \"p\"\n";
        assert!(parse(typo, "r").unwrap_err().contains("unknown field"));
    }

    #[test]
    fn the_nodes_own_entry_wins_over_the_clusters_credentials() {
        let data = tempfile::tempdir().unwrap();
        let cluster = RegistryAuth::Basic {
            username: "cluster".into(),
            password: "pw".into(),
        };
        let user = |c: Credentials| match c {
            Credentials::Basic { username, .. } => username,
            other => format!("{other:?}"),
        };
        let image = "r:5000/team/app:1";
        let got = for_image(data.path(), image, Some(&cluster)).unwrap();
        assert_eq!(user(got), "cluster");
        let got = for_image(data.path(), image, None).unwrap();
        assert_eq!(user(got), "Anonymous");
        let file = "[\"r:5000\"]\nusername = \"node\"\npassword = \"p\"\n";
        std::fs::write(data.path().join(FILE), file).unwrap();
        let got = for_image(data.path(), image, Some(&cluster)).unwrap();
        assert_eq!(user(got), "node");
        // Another registry's entry leaves the cluster's credentials in place.
        let got = for_image(data.path(), "q.io/app", Some(&cluster)).unwrap();
        assert_eq!(user(got), "cluster");
    }
}
