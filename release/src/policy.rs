//! Whether a node takes a release: its own architecture always; a newer version unless the
//! admin forces another. Checked after the signature, before any part is read.

use semver::Version;

use super::manifest::{Arch, Manifest};

/// What the admin asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Only a newer version (the default).
    Upgrade,
    /// Any version, older or the same included: the admin forced it (`--allow-downgrade`).
    Force,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("the bundle is for {bundle}, this node is {node}")]
    OtherArch { bundle: Arch, node: Arch },
    #[error("the bundle is version {bundle}, older than the running {running}; a downgrade must be forced (--allow-downgrade)")]
    Older { bundle: Version, running: Version },
    #[error("version {0} is already running; reinstalling it must be forced (--allow-downgrade)")]
    Same(Version),
    #[error("this machine's architecture is not one CloudOS releases for")]
    UnknownArch,
}

pub fn check(
    manifest: &Manifest,
    node: Option<Arch>,
    running: &Version,
    intent: Intent,
) -> Result<(), PolicyError> {
    let node = node.ok_or(PolicyError::UnknownArch)?;
    if manifest.arch != node {
        return Err(PolicyError::OtherArch {
            bundle: manifest.arch,
            node,
        });
    }
    check_version(&manifest.version, running, intent)
}

/// The version half of [`check`], for a node that knows only the version it is asked for:
/// it refuses the same or an older one before it downloads anything.
pub fn check_version(
    version: &Version,
    running: &Version,
    intent: Intent,
) -> Result<(), PolicyError> {
    if intent == Intent::Force {
        return Ok(());
    }
    // Semantic version order: 1.0.0-rc.1 < 1.0.0 < 1.0.1; build metadata is ignored.
    match version.cmp_precedence(running) {
        std::cmp::Ordering::Greater => Ok(()),
        std::cmp::Ordering::Equal => Err(PolicyError::Same(running.clone())),
        std::cmp::Ordering::Less => Err(PolicyError::Older {
            bundle: version.clone(),
            running: running.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Part, FORMAT, PART_NAMES};

    fn manifest(version: &str, arch: Arch) -> Manifest {
        Manifest {
            format: FORMAT,
            version: Version::parse(version).unwrap(),
            arch,
            parts: PART_NAMES
                .iter()
                .map(|n| Part {
                    name: n.to_string(),
                    size: 0,
                    sha256: "0".repeat(64),
                })
                .collect(),
        }
    }

    #[test]
    fn the_rules_in_a_table() {
        let x86 = Some(Arch::X86_64);
        let running = Version::parse("1.2.0").unwrap();
        use Intent::*;
        let cases: &[(&str, Arch, Intent, bool)] = &[
            ("1.3.0", Arch::X86_64, Upgrade, true),
            ("1.2.1-rc.1", Arch::X86_64, Upgrade, true),
            ("1.2.0", Arch::X86_64, Upgrade, false),
            ("1.2.0+other-build", Arch::X86_64, Upgrade, false),
            ("1.1.9", Arch::X86_64, Upgrade, false),
            ("1.2.0-rc.1", Arch::X86_64, Upgrade, false),
            ("1.1.9", Arch::X86_64, Force, true),
            ("1.2.0", Arch::X86_64, Force, true),
            ("1.3.0", Arch::Aarch64, Upgrade, false),
            ("1.3.0", Arch::Aarch64, Force, false),
        ];
        for (version, arch, intent, ok) in cases {
            let got = check(&manifest(version, *arch), x86, &running, *intent);
            assert_eq!(got.is_ok(), *ok, "{version} {arch} {intent:?}: {got:?}");
            // The version half, asked before a download, agrees wherever the arch is right.
            if *arch == Arch::X86_64 {
                let early = check_version(&Version::parse(version).unwrap(), &running, *intent);
                assert_eq!(early.is_ok(), *ok, "{version} {intent:?}: {early:?}");
            }
        }
    }

    #[test]
    fn refusals_name_the_way_out() {
        let running = Version::parse("2.0.0").unwrap();
        let err = check(
            &manifest("1.0.0", Arch::X86_64),
            Some(Arch::X86_64),
            &running,
            Intent::Upgrade,
        )
        .unwrap_err();
        assert!(err.to_string().contains("--allow-downgrade"), "{err}");
        let err = check(
            &manifest("3.0.0", Arch::Aarch64),
            Some(Arch::X86_64),
            &running,
            Intent::Upgrade,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the bundle is for aarch64, this node is x86_64"
        );
    }
}
