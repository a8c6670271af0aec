//! Small helpers shared by the modules: randomness, hashing, hex and time formatting, and
//! excerpts of untrusted text.

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The operating system's random generator failed; nothing secure can be made without it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the system random number generator failed; check that /dev/urandom or getrandom(2) works")]
pub struct RandomError;

/// A name that is also a file name on a node or in a container (volumes, secrets): 1 to 63
/// of `a-z 0-9 _ . -`, starting with a letter or digit (so never `.` or `..`).
pub(crate) fn is_file_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    first_ok
        && name.len() <= 63
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
}

/// Fills a buffer of `N` bytes from the system's secure random generator.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut buf = [0u8; N];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| RandomError)?;
    Ok(buf)
}

pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

/// Decodes lowercase or uppercase hex; `None` on odd length or a non-hex character.
pub(crate) fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

/// RFC 3339 for messages and logs; falls back to the Unix time so formatting never fails.
pub(crate) fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| format!("@{}", t.unix_timestamp()))
}

/// `text` safe to show a person: at most `max_chars` characters (the rest counted, not
/// shown), with control characters and bidirectional overrides escaped (`\u{1b}`), so text
/// a client sent cannot flood an answer or a log, or rewrite a terminal.
pub fn excerpt(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 2));
    let mut chars = text.chars();
    for c in chars.by_ref().take(max_chars) {
        let hides = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || hides {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    let rest = chars.count();
    if rest > 0 {
        out.push_str(&format!("… ({rest} more characters)"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let cases: &[&[u8]] = &[b"", b"\x00", b"\xff\x10abc"];
        for case in cases {
            assert_eq!(from_hex(&to_hex(case)).as_deref(), Some(*case));
        }
    }

    #[test]
    fn hex_rejects_bad_input() {
        for bad in ["a", "zz", "0g", "é0"] {
            assert_eq!(from_hex(bad), None, "{bad}");
        }
    }

    #[test]
    fn sha256_matches_known_vector() {
        assert_eq!(
            to_hex(&sha256(&[b"ab", b"c"])),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn random_bytes_differ() {
        let a = random_bytes::<16>().ok();
        let b = random_bytes::<16>().ok();
        assert!(a.is_some());
        assert_ne!(a, b);
    }

    #[test]
    fn excerpts_are_bounded_and_escape_what_rewrites_a_terminal() {
        assert_eq!(excerpt("abc", 5), "abc");
        assert_eq!(excerpt("abcdefgh", 3), "abc… (5 more characters)");
        assert_eq!(excerpt("a\u{1b}[2Jb\n", 10), "a\\u{1b}[2Jb\\u{a}");
        assert_eq!(excerpt("x\u{202e}y", 10), "x\\u{202e}y");
        assert_eq!(excerpt("héllo wörld", 20), "héllo wörld");
        let huge = "a".repeat(1 << 20);
        assert!(excerpt(&huge, 64).len() < 100);
    }
}
