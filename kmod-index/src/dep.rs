//! `modules.dep`: one line per module, `path: dependency-path …`, a module's direct
//! dependencies listed with the deepest last. Answers where a module's file is and in
//! which order a set of modules loads (dependencies first, each once).

use std::collections::{HashMap, HashSet};

use crate::name::{module_name, normalize};

/// A line of `modules.dep` that is not `path: dependencies`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("modules.dep line {line}: no ':' in {text:?}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub text: String,
}

/// A module, asked for or named as a dependency, that `modules.dep` has no line for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("module {0} is not in modules.dep")]
pub struct UnknownModule(pub String);

/// The parsed `modules.dep`. Names given to its methods may use `-` or `_`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Deps {
    /// Canonical name -> (path as written, relative to the index's directory; direct
    /// dependencies' canonical names, in file order).
    entries: HashMap<String, (String, Vec<String>)>,
}

type Entry = (String, (String, Vec<String>));

impl Deps {
    /// Every line must be a module's (blank lines and `#` comments aside): for the image
    /// builder, where a damaged index must stop the build.
    pub fn parse(text: &str) -> Result<Deps, ParseError> {
        Ok(Deps {
            entries: entries(text).collect::<Result<_, _>>()?,
        })
    }

    /// Lines that are not a module's are skipped: for the node, where one damaged line
    /// must not keep every other module from loading.
    pub fn parse_lenient(text: &str) -> Deps {
        Deps {
            entries: entries(text).filter_map(Result::ok).collect(),
        }
    }

    pub fn contains(&self, module: &str) -> bool {
        self.entries.contains_key(&normalize(module))
    }

    /// The module's file, relative to the index's directory, as `modules.dep` writes it.
    pub fn path(&self, module: &str) -> Option<&str> {
        self.entries
            .get(&normalize(module))
            .map(|(path, _)| path.as_str())
    }

    /// The modules of `roots` and everything they need, dependencies before the modules
    /// that need them (a valid `insmod` order), each once, in canonical names. A cycle
    /// (which depmod never writes) ends instead of recursing forever.
    pub fn load_order<S: AsRef<str>>(&self, roots: &[S]) -> Result<Vec<String>, UnknownModule> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for root in roots {
            self.visit(&normalize(root.as_ref()), &mut seen, &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        module: &str,
        seen: &mut HashSet<String>,
        order: &mut Vec<String>,
    ) -> Result<(), UnknownModule> {
        // Marking before recursing makes a cycle terminate.
        if !seen.insert(module.to_string()) {
            return Ok(());
        }
        let (_, deps) = self
            .entries
            .get(module)
            .ok_or_else(|| UnknownModule(module.to_string()))?;
        // The deepest dependency is listed last, so walking them in reverse loads the
        // most basic ones first (as modprobe does).
        for dep in deps.iter().rev() {
            self.visit(dep, seen, order)?;
        }
        order.push(module.to_string());
        Ok(())
    }
}

/// The module lines of `text`, each a parsed entry or the error for a line that is not.
fn entries(text: &str) -> impl Iterator<Item = Result<Entry, ParseError>> + '_ {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let Some((path, deps)) = line.split_once(':') else {
            return Some(Err(ParseError {
                line: i + 1,
                text: line.to_string(),
            }));
        };
        let deps = deps.split_whitespace().map(module_name).collect();
        Some(Ok((module_name(path), (path.trim().to_string(), deps))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/char/hw_random/virtio-rng.ko:
kernel/drivers/usb/storage/usb-storage.ko: kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_common.ko:
kernel/fs/ext4/ext4.ko.zst: kernel/fs/jbd2/jbd2.ko.zst kernel/fs/mbcache.ko.zst kernel/lib/crc16.ko.zst
kernel/fs/jbd2/jbd2.ko.zst:
kernel/fs/mbcache.ko.zst:
kernel/lib/crc16.ko.zst:
kernel/cycle/a.ko: kernel/cycle/b.ko
kernel/cycle/b.ko: kernel/cycle/a.ko
kernel/broken/needs_ghost.ko: kernel/broken/ghost.ko
";

    fn deps() -> Deps {
        Deps::parse(DEP).expect("parses")
    }

    #[test]
    fn load_order_table() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["virtio_net"], &["failover", "net_failover", "virtio_net"]),
            (
                &["virtio_pci"],
                &[
                    "virtio_pci_modern_dev",
                    "virtio_pci_legacy_dev",
                    "virtio_pci",
                ],
            ),
            (&["ext4"], &["crc16", "mbcache", "jbd2", "ext4"]),
            // `-` and `_` name the same module.
            (&["usb-storage"], &["scsi_common", "usb_storage"]),
            (&["virtio-rng"], &["virtio_rng"]),
            // A module asked for after its dependents is not repeated.
            (
                &["virtio_net", "failover", "virtio-rng"],
                &["failover", "net_failover", "virtio_net", "virtio_rng"],
            ),
            // A cycle ends.
            (&["a"], &["b", "a"]),
            (&[], &[]),
        ];
        let deps = deps();
        for (roots, want) in cases {
            assert_eq!(deps.load_order(roots).expect("known"), *want, "{roots:?}");
        }
    }

    #[test]
    fn unknown_modules_are_named() {
        let deps = deps();
        assert_eq!(
            deps.load_order(&["virtio_net", "no-such"]),
            Err(UnknownModule("no_such".into()))
        );
        assert_eq!(
            deps.load_order(&["needs_ghost"]),
            Err(UnknownModule("ghost".into())),
            "a dependency without a line of its own"
        );
        assert_eq!(
            UnknownModule("nope".into()).to_string(),
            "module nope is not in modules.dep"
        );
    }

    #[test]
    fn paths_as_written() {
        let deps = deps();
        assert_eq!(deps.path("ext4"), Some("kernel/fs/ext4/ext4.ko.zst"));
        assert_eq!(
            deps.path("usb-storage"),
            Some("kernel/drivers/usb/storage/usb-storage.ko")
        );
        assert_eq!(deps.path("nope"), None);
        assert!(deps.contains("virtio-net") && !deps.contains("e1000"));
    }

    #[test]
    fn damaged_lines_stop_the_strict_parse_and_are_skipped_by_the_lenient_one() {
        let text =
            "# written by hand\n\nkernel/a.ko:\nthis line is damaged\nkernel/b.ko: kernel/a.ko\n";
        let err = Deps::parse(text).unwrap_err();
        assert_eq!(
            err,
            ParseError {
                line: 4,
                text: "this line is damaged".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "modules.dep line 4: no ':' in \"this line is damaged\""
        );
        let lenient = Deps::parse_lenient(text);
        assert_eq!(lenient.load_order(&["b"]), Ok(vec!["a".into(), "b".into()]));
        assert!(!lenient.contains("this line is damaged"));
        assert_eq!(
            Deps::parse_lenient(DEP),
            deps(),
            "the same index when nothing is damaged"
        );
    }
}
