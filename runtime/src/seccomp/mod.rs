//! The seccomp filter every container runs under, and installing it.
//!
//! The policy is Docker's default profile (moby `profiles/seccomp/default.json`)
//! as it applies to the capability set we grant (see `oci.rs`): an allow list,
//! with every other syscall failing with EPERM. libseccomp does not link into
//! the static musl binary, so the filter is compiled to BPF in pure Rust by
//! `seccompiler` (syscall names are mapped to numbers by its tables for the
//! target architecture) and installed by [`ConfinedExecutor`] in the
//! container's init, after libcontainer has done everything it does in that
//! process, as the last step before execve.
//!
//! Where it differs from Docker's profile:
//! - Syscalls of a foreign ABI (i386 `int 0x80` on x86_64, AArch32 on
//!   aarch64) fail with EPERM; Docker allows them with the same list. 32-bit
//!   binaries therefore do not run in containers.
//! - `getxattrat`, `setxattrat`, `listxattrat` and `removexattrat` (Linux
//!   6.13) are not in seccompiler's syscall tables, so they fail with EPERM.
//! - The rules Docker keys on capabilities we never grant (SYS_ADMIN,
//!   SYS_PTRACE, SYS_BOOT, SYS_MODULE, ...) are left out: those syscalls are
//!   denied. `chroot` is allowed because SYS_CHROOT is granted.

// In the library only for its tests; build.rs compiles it into `COMPILED`.
#[cfg(test)]
mod policy;

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use seccompiler::{sock_filter, BpfProgram};

#[cfg(test)]
use policy::compile;

/// Errors using the filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("{0} is not an architecture the container seccomp filter supports (x86_64, aarch64)")]
    Arch(&'static str),
    #[error("cannot install the container seccomp filter: {0}")]
    Install(seccompiler::Error),
}

// `COMPILED`: the programs of `policy::compile` for the target architecture, written by
// build.rs (empty for an architecture the policy does not support).
include!(concat!(env!("OUT_DIR"), "/seccomp_compiled.rs"));

/// The filters for the architecture this binary is built for, compiled when it was
/// built.
pub fn compile_native() -> Result<Vec<BpfProgram>, SeccompError> {
    if COMPILED.is_empty() {
        return Err(SeccompError::Arch(std::env::consts::ARCH));
    }
    Ok(COMPILED.iter().map(|program| program.to_vec()).collect())
}

/// libcontainer's executor (the last code run in the container's init
/// before the workload) with the seccomp filters installed first: after the
/// start signal, hooks and everything else libcontainer does there, so
/// nothing of the runtime's own has to get past the filter but `execve`.
#[derive(Clone)]
pub struct ConfinedExecutor {
    filters: Vec<BpfProgram>,
}

impl ConfinedExecutor {
    pub fn new(filters: Vec<BpfProgram>) -> Self {
        ConfinedExecutor { filters }
    }
}

impl Executor for ConfinedExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        for program in &self.filters {
            // apply_filter also sets no_new_privs, which the spec asks for anyway
            // and without which an unprivileged process may not install a filter.
            if let Err(e) = seccompiler::apply_filter(program) {
                let e = SeccompError::Install(e);
                // The container's stderr is its log: say why it did not run.
                eprintln!("cloudos: {e}");
                return Err(ExecutorError::Other(e.to_string()));
            }
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::policy::{ALLOW, ALLOW_X86_64};
    use super::*;
    use seccompiler::TargetArch;

    #[test]
    fn compiles_for_every_supported_architecture() {
        for arch in [TargetArch::x86_64, TargetArch::aarch64] {
            let programs = compile(arch).unwrap();
            assert_eq!(programs.len(), 2);
            for p in &programs {
                // Foreign ABIs get EPERM, never a kill.
                assert_eq!(p[2].k, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
                assert!(!p.iter().any(|i| i.code == 0x06
                    && (i.k == libc::SECCOMP_RET_KILL_PROCESS
                        || i.k == libc::SECCOMP_RET_KILL_THREAD)));
            }
        }
        // What build.rs embedded is what the policy compiles to now.
        let native = seccompiler::TargetArch::try_from(std::env::consts::ARCH).unwrap();
        assert_eq!(compile_native().unwrap(), compile(native).unwrap());
    }

    #[test]
    fn x86_only_names_are_not_in_the_common_list() {
        assert!(!ALLOW.iter().any(|n| ALLOW_X86_64.contains(n)));
        // The common list compiles for aarch64, so none of x86's legacy names crept in.
        let mut sorted = ALLOW.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ALLOW.len(), "duplicate names");
    }

    #[test]
    fn escape_tools_are_not_allowed() {
        // The syscalls an attacker in the container reaches for first.
        for name in [
            "unshare",
            "setns",
            "mount",
            "umount2",
            "pivot_root",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "io_uring_setup",
            "kexec_load",
            "reboot",
            "init_module",
            "finit_module",
            "open_by_handle_at",
            "syslog",
            "clone3",
        ] {
            assert!(
                !ALLOW.contains(&name) && !ALLOW_X86_64.contains(&name),
                "{name}"
            );
        }
    }
}
