//! `modules.alias`: `alias PATTERN MODULE` lines, the patterns fnmatch(3) globs over
//! modaliases (`pci:v00001AF4d…`) or plain names (`fs-ext4`). Answers which modules a
//! device's modalias asks for, in file order, as `modprobe` would.

use std::collections::HashMap;

use crate::name::normalize;

/// The pattern and module of an `alias PATTERN MODULE` line, as written; `None` for any
/// other line (comments, blanks).
pub fn alias_line(line: &str) -> Option<(&str, &str)> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("alias"), Some(pattern), Some(module)) => Some((pattern, module)),
        _ => None,
    }
}

/// The parsed `modules.alias`, indexed for lookups by modalias.
#[derive(Debug, Default, Clone)]
pub struct Aliases {
    /// (pattern, canonical module) in file order.
    entries: Vec<(String, String)>,
    /// Positions in `entries` by the literal bus prefix of the pattern (`pci` for
    /// `pci:v...`): a modalias can only match patterns of its own bus, and coldplug looks
    /// up every device's modalias, so under an emulated CPU scanning all ~1100 patterns
    /// per device cost a tenth of a second per pass.
    by_bus: HashMap<String, Vec<usize>>,
    /// Positions of patterns without such a prefix (`acpi*:...`, `fs-ext4`).
    any_bus: Vec<usize>,
}

impl Aliases {
    /// Lines other than `alias PATTERN MODULE` are skipped.
    pub fn parse(text: &str) -> Aliases {
        let mut aliases = Aliases {
            entries: text
                .lines()
                .filter_map(alias_line)
                .map(|(pattern, module)| (pattern.to_string(), normalize(module)))
                .collect(),
            ..Aliases::default()
        };
        for (position, (pattern, _)) in aliases.entries.iter().enumerate() {
            match literal_bus(pattern) {
                Some(bus) => aliases
                    .by_bus
                    .entry(bus.to_string())
                    .or_default()
                    .push(position),
                None => aliases.any_bus.push(position),
            }
        }
        aliases
    }

    /// The canonical modules whose pattern matches `modalias`, without duplicates, in
    /// file order.
    pub fn matching(&self, modalias: &str) -> Vec<&str> {
        let same_bus = modalias
            .split_once(':')
            .and_then(|(bus, _)| self.by_bus.get(bus))
            .map(Vec::as_slice)
            .unwrap_or_default();
        // Both lists are in file order; merged, the result keeps that order.
        let mut positions: Vec<usize> = same_bus.iter().chain(&self.any_bus).copied().collect();
        positions.sort_unstable();
        let mut found: Vec<&str> = Vec::new();
        for position in positions {
            let (pattern, module) = &self.entries[position];
            if glob_match(pattern.as_bytes(), modalias.as_bytes()) && !found.contains(&&**module) {
                found.push(module);
            }
        }
        found
    }

    /// The module that `name` is literally an alias of (`iso9660` -> `isofs`): what a
    /// person who wrote the alias instead of the module meant.
    pub fn target_of(&self, name: &str) -> Option<&str> {
        let name = normalize(name);
        self.entries
            .iter()
            .find(|(pattern, _)| normalize(pattern) == name)
            .map(|(_, module)| module.as_str())
    }
}

/// The bus of a pattern that starts with a literal `BUS:` (no wildcard before the first
/// colon), which only modaliases of that bus can match.
fn literal_bus(pattern: &str) -> Option<&str> {
    let (bus, _) = pattern.split_once(':')?;
    (!bus.is_empty() && !bus.contains(['*', '?', '[', '\\'])).then_some(bus)
}

/// fnmatch(3) without flags, the matching `modprobe` does on modaliases: `*`, `?` and
/// `[...]` classes (with `!`/`^` negation and ranges).
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

    const ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias virtio:d00000001v* virtio_net
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias input:b*v*p*e*-e*k*r*a*m*l*s*f*w* evdev
alias acpi*:LNXPWRBN:* button
alias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb-storage
alias fs-ext4 ext4
alias iso9660 isofs
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
";

    #[test]
    fn modalias_table() {
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
            ("pci:v00008086d00001234sv0sd0bc0sc0i0", &[]),
            ("virtio:d00000002v00001AF4", &[]),
        ];
        let aliases = Aliases::parse(ALIAS);
        for (modalias, want) in cases {
            assert_eq!(aliases.matching(modalias), *want, "{modalias}");
        }
    }

    #[test]
    fn lookup_by_bus_keeps_file_order_and_wildcard_buses() {
        let aliases = Aliases::parse(
            "alias pci:v00001AF4* first\nalias p*:v00001AF4* second\nalias pci:v* third\nalias pcie:v* other\nalias pci:v0000* first\n",
        );
        assert_eq!(
            aliases.matching("pci:v00001AF4d00001000"),
            ["first", "second", "third"],
            "each module once"
        );
        assert_eq!(aliases.matching("pcie:v1"), ["other"]);
        assert_eq!(literal_bus("acpi*:LNXPWRBN:*"), None);
        assert_eq!(literal_bus("fs-ext4"), None);
        assert_eq!(literal_bus("usb:v*"), Some("usb"));
    }

    #[test]
    fn literal_aliases_name_their_module() {
        let aliases = Aliases::parse(ALIAS);
        assert_eq!(aliases.target_of("iso9660"), Some("isofs"));
        assert_eq!(aliases.target_of("fs-ext4"), Some("ext4"));
        assert_eq!(aliases.target_of("ext4"), None);
        assert_eq!(alias_line("alias fs-ext4 ext4"), Some(("fs-ext4", "ext4")));
        assert_eq!(alias_line("# alias a b"), None);
        assert_eq!(alias_line("alias short"), None);
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
