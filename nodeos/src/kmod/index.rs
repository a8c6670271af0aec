//! The module index: `modules.alias` and `modules.dep` of one kernel release.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("module {0} is not in modules.dep")]
    UnknownModule(String),
}

/// Module names are written with `-` or `_` interchangeably; the kernel
/// compares them with `-` folded to `_`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a path such as `kernel/drivers/net/virtio_net.ko`.
pub fn module_name_of(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

#[derive(Debug, Default, Clone)]
pub struct ModuleIndex {
    /// Directory that the paths in `modules.dep` are relative to.
    root: PathBuf,
    /// (pattern, module) in file order.
    aliases: Vec<(String, String)>,
    /// Positions in `aliases` by the literal bus prefix of the pattern
    /// (`pci` for `pci:v...`): a modalias can only match patterns of its own
    /// bus, and coldplug looks up every device's modalias, so under an
    /// emulated CPU scanning all ~1100 patterns per device cost a tenth of a
    /// second per pass.
    by_bus: HashMap<String, Vec<usize>>,
    /// Positions of patterns without such a prefix (`acpi*:...`, `fs-ext4`).
    any_bus: Vec<usize>,
    /// module → (relative path, direct dependencies).
    deps: HashMap<String, (String, Vec<String>)>,
}

impl ModuleIndex {
    /// Reads the index under `/lib/modules/<release>`.
    pub fn load(root: &Path) -> Result<ModuleIndex, IndexError> {
        let read = |name: &str| {
            let path = root.join(name);
            std::fs::read_to_string(&path).map_err(|source| IndexError::Read { path, source })
        };
        let mut index = ModuleIndex::parse(&read("modules.alias")?, &read("modules.dep")?);
        index.root = root.to_path_buf();
        Ok(index)
    }

    pub fn parse(alias_text: &str, dep_text: &str) -> ModuleIndex {
        let aliases = alias_text
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                match (words.next(), words.next(), words.next()) {
                    (Some("alias"), Some(pattern), Some(module)) => {
                        Some((pattern.to_string(), normalize(module)))
                    }
                    _ => None,
                }
            })
            .collect();
        let deps = dep_text
            .lines()
            .filter_map(|line| {
                let (path, rest) = line.split_once(':')?;
                let deps = rest.split_whitespace().map(module_name_of).collect();
                Some((module_name_of(path), (path.trim().to_string(), deps)))
            })
            .collect();
        let mut index = ModuleIndex {
            root: PathBuf::new(),
            aliases,
            deps,
            ..ModuleIndex::default()
        };
        for (position, (pattern, _)) in index.aliases.iter().enumerate() {
            match literal_bus(pattern) {
                Some(bus) => index
                    .by_bus
                    .entry(bus.to_string())
                    .or_default()
                    .push(position),
                None => index.any_bus.push(position),
            }
        }
        index
    }

    pub fn contains(&self, module: &str) -> bool {
        self.deps.contains_key(&normalize(module))
    }

    /// Modules whose alias pattern matches `modalias` (an exact module name
    /// also counts, as `modprobe NAME` does), without duplicates, in file order.
    pub fn lookup(&self, modalias: &str) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        if self.contains(modalias) {
            found.push(normalize(modalias));
        }
        let same_bus = modalias
            .split_once(':')
            .and_then(|(bus, _)| self.by_bus.get(bus))
            .map(Vec::as_slice)
            .unwrap_or_default();
        // Both lists are in file order; merged, the result keeps that order.
        let mut positions: Vec<usize> = same_bus.iter().chain(&self.any_bus).copied().collect();
        positions.sort_unstable();
        for position in positions {
            let (pattern, module) = &self.aliases[position];
            if glob_match(pattern.as_bytes(), modalias.as_bytes()) && !found.contains(module) {
                found.push(module.clone());
            }
        }
        found
    }

    /// `module` and everything it needs, dependencies first, each once.
    pub fn load_order(&self, module: &str) -> Result<Vec<String>, IndexError> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        self.visit(&normalize(module), &mut seen, &mut order)?;
        Ok(order)
    }

    fn visit(
        &self,
        module: &str,
        seen: &mut HashSet<String>,
        order: &mut Vec<String>,
    ) -> Result<(), IndexError> {
        // Marking before recursing makes a (malformed) cycle terminate.
        if !seen.insert(module.to_string()) {
            return Ok(());
        }
        let (_, deps) = self
            .deps
            .get(module)
            .ok_or_else(|| IndexError::UnknownModule(module.to_string()))?;
        // modules.dep lists a module's dependencies with the deepest last, so
        // walking them in reverse loads the most basic ones first.
        for dep in deps.iter().rev() {
            self.visit(dep, seen, order)?;
        }
        order.push(module.to_string());
        Ok(())
    }

    /// Absolute path of a module's `.ko` file.
    pub fn path_of(&self, module: &str) -> Result<PathBuf, IndexError> {
        let (path, _) = self
            .deps
            .get(&normalize(module))
            .ok_or_else(|| IndexError::UnknownModule(module.to_string()))?;
        Ok(self.root.join(path))
    }
}

/// The bus of a pattern that starts with a literal `BUS:` (no wildcard
/// before the first colon), which only modaliases of that bus can match.
fn literal_bus(pattern: &str) -> Option<&str> {
    let (bus, _) = pattern.split_once(':')?;
    (!bus.is_empty() && !bus.contains(['*', '?', '[', '\\'])).then_some(bus)
}

/// fnmatch(3) without flags, the matching `modprobe` does on modaliases:
/// `*`, `?` and `[...]` classes (with `!`/`^` negation and ranges).
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, text index).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p + 1, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = match_class(pattern, p, text[t]) {
                        if matched {
                            p = next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        // An unterminated class is a literal '['.
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[start] == b'['`.
/// Returns (matched, index after the class), or None if the class is unterminated.
fn match_class(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(pattern.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &lo = pattern.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&hi| hi != b']') {
            let hi = pattern[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
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
kernel/drivers/input/evdev.ko:
kernel/drivers/acpi/button.ko:
kernel/drivers/usb/storage/usb-storage.ko:
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/crc16.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/cycle/a.ko: kernel/cycle/b.ko
kernel/cycle/b.ko: kernel/cycle/a.ko
";
    const ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias virtio:d00000001v* virtio_net
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias input:b*v*p*e*-e*k*r*a*m*l*s*f*w* evdev
alias acpi*:LNXPWRBN:* button
alias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb_storage
alias fs-ext4 ext4
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
";

    fn index() -> ModuleIndex {
        ModuleIndex::parse(ALIAS, DEP)
    }

    #[test]
    fn modalias_lookup_table() {
        let cases: &[(&str, &[&str])] = &[
            ("virtio:d00000001v00001AF4", &["virtio_net"]),
            (
                "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
                &["virtio_pci"],
            ),
            ("input:b0019v0000p0001e0000-e0,1,k74,ramlsfw", &["evdev"]),
            ("acpi:LNXPWRBN:", &["button"]),
            (
                "usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00",
                &["usb_storage"],
            ),
            ("fs-ext4", &["ext4"]),
            ("ext4", &["ext4"]),
            ("usb-storage", &["usb_storage"]),
            ("pci:v00008086d00001234sv0sd0bc0sc0i0", &[]),
            ("virtio:d00000002v00001AF4", &[]),
        ];
        let index = index();
        for (modalias, expected) in cases {
            assert_eq!(index.lookup(modalias), *expected, "{modalias}");
        }
    }

    #[test]
    fn lookup_by_bus_keeps_file_order_and_wildcard_buses() {
        let index = ModuleIndex::parse(
            "alias pci:v00001AF4* first\nalias p*:v00001AF4* second\nalias pci:v* third\nalias pcie:v* other\n",
            "",
        );
        assert_eq!(
            index.lookup("pci:v00001AF4d00001000"),
            ["first", "second", "third"]
        );
        assert_eq!(index.lookup("pcie:v1"), ["other"]);
        assert_eq!(literal_bus("acpi*:LNXPWRBN:*"), None);
        assert_eq!(literal_bus("fs-ext4"), None);
        assert_eq!(literal_bus("usb:v*"), Some("usb"));
    }

    #[test]
    fn dependencies_come_first() {
        let index = index();
        assert_eq!(
            index.load_order("virtio_net").unwrap(),
            ["failover", "net_failover", "virtio_net"]
        );
        assert_eq!(
            index.load_order("virtio_pci").unwrap(),
            [
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio_pci"
            ]
        );
        assert_eq!(
            index.load_order("ext4").unwrap(),
            ["crc16", "mbcache", "jbd2", "ext4"]
        );
        assert_eq!(index.load_order("usb-storage").unwrap(), ["usb_storage"]);
    }

    #[test]
    fn cycles_terminate_and_unknown_modules_error() {
        let index = index();
        assert_eq!(index.load_order("a").unwrap(), ["b", "a"]);
        assert!(
            matches!(index.load_order("nope"), Err(IndexError::UnknownModule(m)) if m == "nope")
        );
    }

    #[test]
    fn paths_are_under_the_root() {
        let mut index = index();
        index.root = PathBuf::from("/lib/modules/6.1.0-56-amd64");
        assert_eq!(
            index.path_of("ext4").unwrap(),
            Path::new("/lib/modules/6.1.0-56-amd64/kernel/fs/ext4/ext4.ko")
        );
    }

    #[test]
    fn glob_table() {
        let cases = [
            ("abc", "abc", true),
            ("abc", "abd", false),
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("*", "", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[ab]x", "bx", true),
            ("[!ab]x", "bx", false),
            ("[!ab]x", "cx", true),
            ("[a-c]*", "b123", true),
            ("[a-c]*", "d123", false),
            ("a[", "a[", true),
            ("*d*b*", "xxdyyb", true),
            ("*d*b*", "xxbyyd", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                glob_match(pattern.as_bytes(), text.as_bytes()),
                expected,
                "{pattern} ~ {text}"
            );
        }
    }
}
