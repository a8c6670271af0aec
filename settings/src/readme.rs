//! The README's settings table, rendered from the key table.
//!
//! README.md holds the table between [`BEGIN`] and [`END`]; a test fails when it differs
//! from [`markdown_table`]. After changing a key, rewrite it with
//! `CLOUDOS_WRITE_README=1 cargo test -p cloudos-settings readme`.

use crate::keys::KEYS;
use crate::load::PREFIX;

/// The line before the generated table in README.md.
pub const BEGIN: &str =
    "<!-- settings table: generated from settings/src/keys.rs, see settings/src/readme.rs -->";
/// The line after it.
pub const END: &str = "<!-- end of settings table -->";

/// The Markdown table of the listed keys: key, values, default.
pub fn markdown_table() -> String {
    let mut table = String::from("| key | values | default |\n|---|---|---|\n");
    for key in KEYS.iter().filter(|k| k.listed) {
        // An empty default is an empty cell, `| |`, as the table was first written by hand.
        let default = match key.default {
            "" => String::new(),
            text => format!(" {text}"),
        };
        table.push_str(&format!(
            "| `{PREFIX}{}` | {} |{default} |\n",
            key.name, key.help
        ));
    }
    table
}

/// `readme` with the text between the markers replaced by the table, or `None` when the
/// markers are missing.
pub fn with_table(readme: &str) -> Option<String> {
    let start = readme.find(BEGIN)? + BEGIN.len();
    let end = start + readme[start..].find(END)?;
    Some(format!(
        "{}\n\n{}\n{}",
        &readme[..start],
        markdown_table(),
        &readme[end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_table_is_the_key_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = std::fs::read_to_string(&path).expect("README.md");
        let wanted = with_table(&readme).unwrap_or_else(|| {
            panic!("README.md has no settings table between {BEGIN:?} and {END:?}")
        });
        if readme == wanted {
            return;
        }
        if std::env::var_os("CLOUDOS_WRITE_README").is_some() {
            std::fs::write(&path, wanted).expect("write README.md");
            return;
        }
        panic!(
            "README.md's settings table differs from settings/src/keys.rs; rewrite it with \
             `CLOUDOS_WRITE_README=1 cargo test -p cloudos-settings readme`, and it will read:\n{}",
            markdown_table()
        );
    }

    #[test]
    fn every_listed_key_has_a_row() {
        let table = markdown_table();
        assert!(table.contains("| `cloudos.role` | `master`, `compute`, `none` | `none` |\n"));
        assert!(table.contains("| `cloudos.address` | `10.0.0.5/24` (with `net=static`) | |\n"));
        assert!(!table.contains("cloudos.slot"));
    }
}
