//! The build's own time, for the clock floor (`src/clock`): the clock of a node never
//! stays before the time its software was made.
//!
//! Images are built with `SOURCE_DATE_EPOCH` (0 unless set), which is no time at all, so
//! the floor comes from, in order: `SOURCE_DATE_EPOCH` when it is set and after 2000; else
//! the time of the newest commit (`git log -1 --format=%ct`), which is the same for every
//! build of one commit and so keeps builds reproducible; else [`FALLBACK`], a fixed date
//! before any release. It is never the wall clock of the build machine.

use std::process::Command;

/// 2026-12-01T00:00:00Z: older than any build of this code, newer than any clock that
/// needs the floor (1970 on a board without a real-time clock).
const FALLBACK: u64 = 1_796_083_200;
/// A `SOURCE_DATE_EPOCH` before 2000-01-01 (the images' default 0) is not a build time.
const TOO_OLD: u64 = 946_684_800;

fn main() {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=build.rs");
    let from_env = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|t| *t >= TOO_OLD);
    let time = from_env
        .or_else(commit_time)
        .unwrap_or(FALLBACK)
        .max(FALLBACK);
    println!("cargo:rustc-env=CLOUDOS_BUILD_TIME={time}");
}

/// The newest commit's time, and a rerun when HEAD moves (a stale floor is only older,
/// never wrong, so the rerun is a nicety).
fn commit_time() -> Option<u64> {
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    for path in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            if std::path::Path::new(&p).exists() {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(p) = git(&["rev-parse", "--git-path", &branch]) {
            if std::path::Path::new(&p).exists() {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
    git(&["log", "-1", "--format=%ct"])?.parse().ok()
}
