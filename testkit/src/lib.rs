//! What a test needs from the machine it runs on — root, a program on PATH, a file a build
//! makes — said one way for the tests of every crate, and what happens when it is missing.
//!
//! Outside strict mode a test whose prerequisite is missing is skipped: it returns at once
//! and says so on the terminal, written straight to stderr past libtest's output capture,
//! so the skip shows even though the test is reported as passed. With `CLOUDOS_STRICT=1`,
//! which `scripts/test.sh` (and so CI) sets, the same test fails and says what to install
//! or build: a run can never go green because a package is missing.
//!
//! ```
//! use cloudos_testkit::{program, require, root};
//!
//! // In a test: returns early (or fails, in strict mode) unless both are there.
//! fn pulls_from_a_real_registry() {
//!     require!(root("network namespaces"));
//!     let registry = require!(program("docker-registry", "apt-get install docker-registry"));
//!     assert!(registry.is_absolute());
//! }
//! ```
//!
//! Owns the checks and the skip-or-fail decision only; fixtures live with the tests.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// The environment variable that turns skips into failures (any value but empty or `0`).
pub const STRICT_ENV: &str = "CLOUDOS_STRICT";

/// Where [`program`] also looks: a root shell's PATH often lacks the sbin directories,
/// where iproute2 and friends live.
const SYSTEM_DIRS: [&str; 5] = ["/usr/local/bin", "/usr/bin", "/usr/sbin", "/bin", "/sbin"];

/// A prerequisite the machine lacks: what the test needs, and how to get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// What is needed, e.g. `root (network namespaces)` or `docker-registry`.
    pub need: String,
    /// How to get it, e.g. `apt-get install docker-registry (scripts/deps.sh)`.
    pub fix: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "needs {}: {}", self.need, self.fix)
    }
}

/// Root, for `purpose` (e.g. "network namespaces").
pub fn root(purpose: &str) -> Result<(), Missing> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        Ok(())
    } else {
        Err(Missing {
            need: format!("root ({purpose})"),
            fix: "run the tests as root, as scripts/test.sh does".to_owned(),
        })
    }
}

/// The executable `name`, looked up on PATH and then in the system's bin and sbin
/// directories; `fix` says how to install it. Returns its path.
pub fn program(name: &str, fix: &str) -> Result<PathBuf, Missing> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SYSTEM_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| Missing {
            need: name.to_owned(),
            fix: fix.to_owned(),
        })
}

/// The file `path` (a package's file or a build's output); `fix` says what makes it.
pub fn file(path: &Path, fix: &str) -> Result<(), Missing> {
    if path.is_file() {
        Ok(())
    } else {
        Err(Missing {
            need: path.display().to_string(),
            fix: fix.to_owned(),
        })
    }
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether `CLOUDOS_STRICT` asks for failures instead of skips.
pub fn strict() -> bool {
    strict_value(std::env::var_os(STRICT_ENV).as_deref())
}

fn strict_value(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != std::ffi::OsStr::new("0"))
}

/// What to do about `missing` in the current test: in strict mode fail it (panic) with
/// what to install or build; otherwise print that it is skipped, and the caller returns.
/// [`require!`] calls this; call it directly where a check is not a `Result`.
#[track_caller]
pub fn skip(missing: &Missing) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    if strict() {
        panic!("{}", failure_message(test, missing));
    }
    // Straight to the stream, not through eprintln!: libtest captures only the print
    // macros, and a skip must be seen.
    let _ = std::io::stderr().write_all(skip_message(test, missing).as_bytes());
}

fn failure_message(test: &str, missing: &Missing) -> String {
    format!("{test} {missing} ({STRICT_ENV} is set, so a missing prerequisite fails the test)")
}

fn skip_message(test: &str, missing: &Missing) -> String {
    format!("skipped {test}: {missing} (with {STRICT_ENV}=1 this fails)\n")
}

/// `require!(check)`: the value of an `Ok` check, or — when the check says something is
/// [`Missing`] — [`skip`] (which fails the test in strict mode) and return from the
/// calling function with `Default::default()` (`()` from a test, `None` from a helper
/// that returns an `Option`).
#[macro_export]
macro_rules! require {
    ($check:expr) => {
        match $check {
            ::core::result::Result::Ok(found) => found,
            ::core::result::Result::Err(missing) => {
                $crate::skip(&missing);
                return ::core::default::Default::default();
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn strict_is_any_value_but_empty_or_zero() {
        for (value, want) in [
            (None, false),
            (Some(""), false),
            (Some("0"), false),
            (Some("1"), true),
            (Some("yes"), true),
        ] {
            assert_eq!(strict_value(value.map(OsStr::new)), want, "{value:?}");
        }
    }

    #[test]
    fn messages_say_what_is_missing_and_how_to_get_it() {
        let missing = Missing {
            need: "docker-registry".into(),
            fix: "apt-get install docker-registry".into(),
        };
        assert_eq!(
            skip_message("pulls", &missing),
            "skipped pulls: needs docker-registry: apt-get install docker-registry \
             (with CLOUDOS_STRICT=1 this fails)\n"
        );
        assert_eq!(
            failure_message("pulls", &missing),
            "pulls needs docker-registry: apt-get install docker-registry \
             (CLOUDOS_STRICT is set, so a missing prerequisite fails the test)"
        );
    }

    #[test]
    fn programs_are_found_on_path_or_in_the_system_dirs() {
        let sh = program("sh", "apt-get install dash").expect("sh");
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{sh:?}");
        let missing = program("cloudos-no-such-tool", "build it").unwrap_err();
        assert_eq!(missing.need, "cloudos-no-such-tool");
        assert_eq!(missing.fix, "build it");
    }

    #[test]
    fn files_must_be_regular_files() {
        assert!(file(Path::new("/proc/self/status"), "").is_ok());
        let missing = file(Path::new("/"), "make it").unwrap_err();
        assert_eq!(missing.to_string(), "needs /: make it");
    }

    #[test]
    fn require_yields_the_value_or_returns_the_default() {
        fn found() -> Option<u32> {
            let n = require!(Ok::<u32, Missing>(7));
            Some(n)
        }
        fn not_found() -> Option<u32> {
            let n = require!(Err::<u32, Missing>(Missing {
                need: "x".into(),
                fix: "y".into(),
            }));
            Some(n)
        }
        assert_eq!(found(), Some(7));
        if strict() {
            let caught = std::panic::catch_unwind(not_found);
            assert!(caught.is_err(), "strict mode fails the test");
        } else {
            assert_eq!(not_found(), None);
        }
    }
}
