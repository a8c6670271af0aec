//! `cloudos man DIR`: a man page per command, made from the same definitions as `--help`
//! (clap_mangen), so the pages never drift from the CLI. The build writes them to
//! `out/man/`.

use std::path::Path;

use anyhow::Context as _;

/// Writes `cloudos.1` and one `cloudos-<command>[-<sub>].1` per (sub)command into `dir`;
/// returns how many.
pub fn write(command: clap::Command, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let written = write_tree(command.name("cloudos"), "cloudos", dir)?;
    eprintln!("{written} man pages in {}", dir.display());
    Ok(())
}

fn write_tree(command: clap::Command, name: &str, dir: &Path) -> anyhow::Result<usize> {
    let command = command.name(name.to_owned());
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .with_context(|| format!("cannot render the man page of {name}"))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    let mut written = 1;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let sub_name = format!("{name}-{}", sub.get_name());
        written += write_tree(sub.clone(), &sub_name, dir)?;
    }
    Ok(written)
}
