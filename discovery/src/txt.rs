//! The `_cloudos._tcp` TXT record and the names around it: building it for the
//! advertiser, parsing it for the browser, CA pin prefixes. Pure functions only;
//! no sockets here.
//!
//! Keys (RFC 6763 section 6): `txtvers=1` first, then `cluster`, `pin` (the first
//! 16 hex characters of the CA pin), `port` (API port) and `version` (nodeos).

use crate::DiscoveryError;

/// Longest DNS label we emit. RFC 1035 allows 63 bytes; libmdns asserts a label is
/// shorter than 63, so one byte less keeps it from panicking.
pub const MAX_LABEL: usize = 62;

/// How many hex characters of the CA pin a master advertises.
pub const PIN_PREFIX_LEN: usize = 16;

/// The TXT record format version we write and understand (RFC 6763 section 6.7).
pub const TXT_VERSION: &str = "1";

/// A DNS-SD TXT string is one length byte and at most 255 bytes.
const MAX_TXT_ENTRY: usize = 255;

const PIN_SCHEME: &str = "sha256:";
const PIN_HEX_LEN: usize = 64;

/// The TXT prefix a master advertises for a full CA pin `sha256:<64 hex>`:
/// its first 16 hex characters, lowercase.
pub fn pin_prefix(full_pin: &str) -> Result<String, DiscoveryError> {
    let hex = pin_hex(full_pin).ok_or_else(|| DiscoveryError::InvalidPin(full_pin.to_owned()))?;
    Ok(hex[..PIN_PREFIX_LEN].to_ascii_lowercase())
}

/// The 64 hex characters of a well-formed `sha256:<64 hex>` pin.
pub(crate) fn pin_hex(full_pin: &str) -> Option<&str> {
    let full_pin = full_pin.trim();
    let scheme = full_pin.get(..PIN_SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(PIN_SCHEME) {
        return None;
    }
    let hex = &full_pin[PIN_SCHEME.len()..];
    (hex.len() == PIN_HEX_LEN && is_hex(hex)).then_some(hex)
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks a pin prefix given to the advertiser; returns it lowercase.
pub(crate) fn checked_pin_prefix(prefix: &str) -> Result<String, DiscoveryError> {
    if prefix.len() == PIN_PREFIX_LEN && is_hex(prefix) {
        Ok(prefix.to_ascii_lowercase())
    } else {
        Err(DiscoveryError::InvalidPinPrefix(prefix.to_owned()))
    }
}

/// Checks a DNS-SD instance name. libmdns splits names on dots, so a dot would
/// silently turn one label into two.
pub(crate) fn check_instance(name: &str) -> Result<(), DiscoveryError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_LABEL {
        Some("it is too long")
    } else if name.contains('.') {
        Some("it contains a dot")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(DiscoveryError::InvalidInstance {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks a host name label and returns it lowercase, without a `.local` suffix.
/// Lowercase because libmdns compares names byte for byte when it answers.
pub(crate) fn checked_host(name: &str) -> Result<String, DiscoveryError> {
    let fqdn = name.strip_suffix('.').unwrap_or(name);
    let label = fqdn.strip_suffix(".local").unwrap_or(fqdn);
    let reason = if label.is_empty() {
        Some("it is empty")
    } else if label.len() > MAX_LABEL {
        Some("it is too long")
    } else if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Some("it contains a character other than a letter, digit or hyphen")
    } else if label.starts_with('-') || label.ends_with('-') {
        Some("it starts or ends with a hyphen")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(DiscoveryError::InvalidHost {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(label.to_ascii_lowercase()),
    }
}

/// The TXT strings for one master, `txtvers` first (RFC 6763 section 6.7).
pub(crate) fn build_txt(
    cluster: &str,
    pin_prefix: &str,
    port: u16,
    version: &str,
) -> Result<Vec<String>, DiscoveryError> {
    let entries = [
        ("txtvers", TXT_VERSION.to_owned()),
        ("cluster", cluster.to_owned()),
        ("pin", checked_pin_prefix(pin_prefix)?),
        ("port", port.to_string()),
        ("version", version.to_owned()),
    ];
    entries
        .into_iter()
        .map(|(key, value)| {
            let entry = format!("{key}={value}");
            if entry.len() > MAX_TXT_ENTRY {
                Err(DiscoveryError::TxtTooLong {
                    key,
                    len: entry.len(),
                })
            } else {
                Ok(entry)
            }
        })
        .collect()
}

/// What a `_cloudos._tcp` TXT record says. Keys that were missing or unusable are
/// `None`; each unusable one is listed in `skipped` with the reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterTxt {
    pub txtvers: Option<String>,
    pub cluster: Option<String>,
    /// Lowercase hex, 16 to 64 characters.
    pub pin_prefix: Option<String>,
    pub port: Option<u16>,
    pub version: Option<String>,
    pub skipped: Vec<SkippedKey>,
}

/// A TXT key that was present but could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    pub key: String,
    pub reason: String,
}

/// Parses TXT key/value pairs (as an mDNS library hands them over: the value is
/// `None` for a key without `=`). Tolerant by design: keys are case-insensitive
/// (RFC 6763 section 6.4), the first of a repeated key wins, unknown keys are
/// ignored, and a garbage value is skipped with a reason instead of failing.
pub fn parse_txt<'a, I>(entries: I) -> MasterTxt
where
    I: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
{
    let mut txt = MasterTxt::default();
    let mut seen: Vec<String> = Vec::new();
    for (key, value) in entries {
        let key = key.to_ascii_lowercase();
        let mut skip = |reason: &str| {
            txt.skipped.push(SkippedKey {
                key: key.clone(),
                reason: reason.to_owned(),
            });
        };
        if key.is_empty() {
            skip("empty key");
            continue;
        }
        if !matches!(
            key.as_str(),
            "txtvers" | "cluster" | "pin" | "port" | "version"
        ) {
            continue;
        }
        if seen.contains(&key) {
            skip("repeated key; the first one is used");
            continue;
        }
        seen.push(key.clone());
        let Some(value) = value else {
            skip("no value");
            continue;
        };
        let Ok(value) = std::str::from_utf8(value) else {
            skip("value is not utf-8");
            continue;
        };
        if value.is_empty() {
            skip("empty value");
            continue;
        }
        match key.as_str() {
            "txtvers" => txt.txtvers = Some(value.to_owned()),
            "cluster" => txt.cluster = Some(value.to_owned()),
            "version" => txt.version = Some(value.to_owned()),
            "pin" => {
                if (PIN_PREFIX_LEN..=PIN_HEX_LEN).contains(&value.len()) && is_hex(value) {
                    txt.pin_prefix = Some(value.to_ascii_lowercase());
                } else {
                    skip("expected 16 to 64 hex characters");
                }
            }
            "port" => match value.parse::<u16>() {
                Ok(port) if port != 0 => txt.port = Some(port),
                _ => skip("expected a port number from 1 to 65535"),
            },
            _ => {}
        }
    }
    txt
}

/// Whether an advertised pin prefix is the start of a full pin `sha256:<64 hex>`.
/// A malformed full pin matches nothing.
pub(crate) fn prefix_matches(prefix: &str, full_pin: &str) -> bool {
    let Some(hex) = pin_hex(full_pin) else {
        return false;
    };
    prefix.len() >= PIN_PREFIX_LEN
        && hex
            .get(..prefix.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn pin_prefix_table() {
        let upper = PIN.to_ascii_uppercase();
        let cases: &[(&str, Option<&str>)] = &[
            (PIN, Some("0123456789abcdef")),
            (&upper, Some("0123456789abcdef")),
            (
                " sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\n",
                Some("ffffffffffffffff"),
            ),
            (
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                None,
            ),
            ("sha256:0123", None),
            (
                "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg",
                None,
            ),
            (
                "sha1:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                None,
            ),
            ("", None),
            (
                "sha256:é123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde",
                None,
            ),
        ];
        for (input, want) in cases {
            let got = pin_prefix(input).ok();
            assert_eq!(got.as_deref(), *want, "pin_prefix({input:?})");
        }
    }

    #[test]
    fn prefix_matches_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("0123456789abcdef", PIN, true),
            ("0123456789ABCDEF", PIN, true),
            ("0123456789abcdef0123", PIN, true),
            ("0123456789abcdee", PIN, false),
            ("0123", PIN, false),
            ("", PIN, false),
            ("0123456789abcdef", "sha256:0123456789abcdef", false),
            (
                "0123456789abcdef",
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                false,
            ),
            ("é123456789abcdef", PIN, false),
        ];
        for (prefix, pin, want) in cases {
            assert_eq!(
                prefix_matches(prefix, pin),
                *want,
                "prefix_matches({prefix:?}, {pin:?})"
            );
        }
    }

    #[test]
    fn instance_and_host_names() {
        assert!(check_instance("cloudos master node-1").is_ok());
        assert!(check_instance("").is_err());
        assert!(check_instance("a.b").is_err());
        assert!(check_instance("tab\there").is_err());
        assert!(check_instance(&"x".repeat(MAX_LABEL)).is_ok());
        assert!(check_instance(&"x".repeat(MAX_LABEL + 1)).is_err());

        let hosts: &[(&str, Option<&str>)] = &[
            ("Master-1", Some("master-1")),
            ("master-1.local", Some("master-1")),
            ("master-1.local.", Some("master-1")),
            ("master-1.", Some("master-1")),
            ("", None),
            (".local", None),
            ("-x", None),
            ("x-", None),
            ("a.b", None),
            ("a_b", None),
        ];
        for (input, want) in hosts {
            assert_eq!(
                checked_host(input).ok().as_deref(),
                *want,
                "checked_host({input:?})"
            );
        }
    }

    #[test]
    fn build_txt_orders_and_checks() {
        let txt = build_txt("prod", "0123456789ABCDEF", 6443, "0.1.0").expect("valid txt");
        assert_eq!(
            txt,
            [
                "txtvers=1",
                "cluster=prod",
                "pin=0123456789abcdef",
                "port=6443",
                "version=0.1.0"
            ]
        );
        assert!(matches!(
            build_txt("prod", "0123", 6443, "0.1.0"),
            Err(DiscoveryError::InvalidPinPrefix(_))
        ));
        assert!(matches!(
            build_txt(&"c".repeat(250), "0123456789abcdef", 6443, "0.1.0"),
            Err(DiscoveryError::TxtTooLong { key: "cluster", .. })
        ));
    }

    #[test]
    fn build_then_parse_round_trips() {
        let txt = build_txt("lab", "fedcba9876543210", 8443, "1.2.3").expect("valid txt");
        let pairs: Vec<(&str, Option<&[u8]>)> = txt
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k, Some(v.as_bytes())),
                None => (e.as_str(), None),
            })
            .collect();
        let parsed = parse_txt(pairs);
        assert_eq!(
            parsed,
            MasterTxt {
                txtvers: Some("1".into()),
                cluster: Some("lab".into()),
                pin_prefix: Some("fedcba9876543210".into()),
                port: Some(8443),
                version: Some("1.2.3".into()),
                skipped: vec![],
            }
        );
    }

    fn skipped(key: &str, reason: &str) -> SkippedKey {
        SkippedKey {
            key: key.into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn parse_txt_table() {
        type Pairs = &'static [(&'static str, Option<&'static [u8]>)];
        let cases: &[(&str, Pairs, MasterTxt)] = &[
            ("empty record", &[], MasterTxt::default()),
            (
                "keys are case-insensitive, pin lowercased",
                &[
                    ("CLUSTER", Some(b"prod")),
                    ("Pin", Some(b"ABCDEF0123456789")),
                ],
                MasterTxt {
                    cluster: Some("prod".into()),
                    pin_prefix: Some("abcdef0123456789".into()),
                    ..MasterTxt::default()
                },
            ),
            (
                "first repeated key wins",
                &[("cluster", Some(b"a")), ("cluster", Some(b"b"))],
                MasterTxt {
                    cluster: Some("a".into()),
                    skipped: vec![skipped("cluster", "repeated key; the first one is used")],
                    ..MasterTxt::default()
                },
            ),
            (
                "unknown keys are ignored",
                &[("colour", Some(b"blue")), ("future", None)],
                MasterTxt::default(),
            ),
            (
                "garbage values are skipped with reasons",
                &[
                    ("", Some(b"x")),
                    ("cluster", None),
                    ("version", Some(b"")),
                    ("pin", Some(b"xyz")),
                    ("port", Some(b"99999")),
                    ("txtvers", Some(b"\xff\xfe")),
                ],
                MasterTxt {
                    skipped: vec![
                        skipped("", "empty key"),
                        skipped("cluster", "no value"),
                        skipped("version", "empty value"),
                        skipped("pin", "expected 16 to 64 hex characters"),
                        skipped("port", "expected a port number from 1 to 65535"),
                        skipped("txtvers", "value is not utf-8"),
                    ],
                    ..MasterTxt::default()
                },
            ),
            (
                "port zero and short pin are garbage",
                &[("port", Some(b"0")), ("pin", Some(b"0123456789abcde"))],
                MasterTxt {
                    skipped: vec![
                        skipped("port", "expected a port number from 1 to 65535"),
                        skipped("pin", "expected 16 to 64 hex characters"),
                    ],
                    ..MasterTxt::default()
                },
            ),
            (
                "a full 64-hex pin is accepted as a prefix",
                &[(
                    "pin",
                    Some(b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
                )],
                MasterTxt {
                    pin_prefix: Some(
                        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
                    ),
                    ..MasterTxt::default()
                },
            ),
        ];
        for (name, pairs, want) in cases {
            assert_eq!(&parse_txt(pairs.iter().copied()), want, "{name}");
        }
    }
}
