//! The version a binary reports, stamped into it after it is built.
//!
//! `nodeos` holds a fixed-size field, a marker followed by the version as NUL-padded text,
//! and reads its version from there at run time. The build writes the release's version
//! into that field of the linked binary (`mkrelease stamp`), so the binary that was tested
//! is the one that ships, under the version it ships as, without compiling again; the test
//! of upgrades makes its second release the same way, in seconds. Unstamped, the field
//! holds the crate's version.

use std::sync::OnceLock;

use semver::Version;

const MARK: [u8; 22] = *b"CLOUDOS-VERSION-STAMP:";
/// Room for the version text and at least one NUL.
const FIELD: usize = 64;
const LEN: usize = MARK.len() + FIELD;
const BUILT: &str = env!("CARGO_PKG_VERSION");

/// Kept in the binary even though only [`version`] reads it, and read through a volatile
/// load so that the compiler cannot fold the build-time text into its readers: the bytes in
/// the file are rewritten after linking.
#[used]
static STAMP: [u8; LEN] = initial();

const fn initial() -> [u8; LEN] {
    let mut out = [0u8; LEN];
    let mut i = 0;
    while i < MARK.len() {
        out[i] = MARK[i];
        i += 1;
    }
    let version = BUILT.as_bytes();
    let mut j = 0;
    while j < version.len() && j < FIELD - 1 {
        out[MARK.len() + j] = version[j];
        j += 1;
    }
    out
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StampError {
    #[error("no version stamp in the binary (is it nodeos?)")]
    Missing,
    #[error("the version stamp appears {0} times in the binary; expected once")]
    Ambiguous(usize),
    #[error("version {0} is longer than the stamp's {max} bytes", max = FIELD - 1)]
    TooLong(String),
    #[error("the binary's version stamp holds no valid version")]
    Garbled,
}

/// The version of the running binary.
pub fn version() -> &'static Version {
    static VERSION: OnceLock<Version> = OnceLock::new();
    VERSION.get_or_init(|| {
        // SAFETY: STAMP is an initialised static array that nothing writes at run time;
        // the volatile read only keeps the compiler from assuming its build-time value.
        let bytes = unsafe { std::ptr::read_volatile(&STAMP) };
        parse_field(&bytes[MARK.len()..])
            .or_else(|| Version::parse(BUILT).ok())
            .unwrap_or_else(|| Version::new(0, 0, 0))
    })
}

/// [`version`] as text, for places that want a `&'static str` (a command's `--version`).
pub fn version_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| version().to_string())
}

fn parse_field(field: &[u8]) -> Option<Version> {
    let end = field.iter().position(|b| *b == 0)?;
    let text = std::str::from_utf8(&field[..end]).ok()?;
    Version::parse(text).ok()
}

/// Where the one stamp field of `binary` starts (after the marker).
fn locate(binary: &[u8]) -> Result<usize, StampError> {
    let found: Vec<usize> = binary
        .windows(MARK.len())
        .enumerate()
        .filter(|(_, w)| *w == MARK)
        .map(|(at, _)| at + MARK.len())
        .filter(|at| binary.len() >= at + FIELD)
        .collect();
    match found.as_slice() {
        [] => Err(StampError::Missing),
        [one] => Ok(*one),
        many => Err(StampError::Ambiguous(many.len())),
    }
}

/// The version stamped into `binary`.
pub fn read(binary: &[u8]) -> Result<Version, StampError> {
    let at = locate(binary)?;
    parse_field(&binary[at..at + FIELD]).ok_or(StampError::Garbled)
}

/// Writes `version` into the stamp field of `binary`.
pub fn write(binary: &mut [u8], version: &Version) -> Result<(), StampError> {
    let text = version.to_string();
    if text.len() > FIELD - 1 {
        return Err(StampError::TooLong(text));
    }
    let at = locate(binary)?;
    let field = &mut binary[at..at + FIELD];
    field.fill(0);
    field[..text.len()].copy_from_slice(text.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_binary() -> Vec<u8> {
        let mut bytes = b"\x7fELF some code".to_vec();
        bytes.extend_from_slice(&initial());
        bytes.extend_from_slice(b"more code");
        bytes
    }

    #[test]
    fn an_unstamped_binary_reports_the_crate_version() {
        assert_eq!(version().to_string(), BUILT);
        assert_eq!(read(&fake_binary()).unwrap().to_string(), BUILT);
    }

    #[test]
    fn stamping_rewrites_only_the_field() {
        let mut bytes = fake_binary();
        let before = bytes.len();
        let v = Version::parse("2.1.0-rc.1+build.7").unwrap();
        write(&mut bytes, &v).unwrap();
        assert_eq!(read(&bytes).unwrap(), v);
        assert_eq!(bytes.len(), before);
        assert!(bytes.starts_with(b"\x7fELF some code"));
        assert!(bytes.ends_with(b"more code"));
        // Back to a shorter version: no tail of the longer one is left.
        write(&mut bytes, &Version::new(3, 0, 0)).unwrap();
        assert_eq!(read(&bytes).unwrap(), Version::new(3, 0, 0));
    }

    #[test]
    fn no_field_two_fields_or_a_version_too_long_are_errors() {
        assert_eq!(read(b"no stamp here"), Err(StampError::Missing));
        let mut two = fake_binary();
        two.extend_from_slice(&initial());
        assert_eq!(
            write(&mut two, &Version::new(1, 0, 0)),
            Err(StampError::Ambiguous(2))
        );
        let long = Version::parse(&format!("1.0.0-{}", "a".repeat(70))).unwrap();
        assert!(matches!(
            write(&mut fake_binary(), &long),
            Err(StampError::TooLong(_))
        ));
    }
}
