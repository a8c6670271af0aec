//! The container seccomp policy (Docker's default profile as it applies to the capabilities
//! we grant; see the parent module) and its compilation to BPF with seccompiler.
//!
//! Compiled twice: into the library (tests, and a check that the two agree) and by
//! `build.rs`, which compiles it for the target once and embeds the programs, so that no
//! container start pays for compiling them (half a millisecond each, measured).
//! So it uses only what `build.rs` has too: seccompiler, serde_json, libc, thiserror.

use std::collections::HashMap;

use seccompiler::{BpfProgram, TargetArch};
use serde_json::{json, Value};

/// Errors building or installing the filter.
/// Why the policy does not compile (a seccompiler that changed under it).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot compile the container seccomp filter for {arch:?}: {source}")]
    Compile {
        arch: TargetArch,
        source: seccompiler::Error,
    },
    #[error("the compiled seccomp filter does not begin with seccompiler's architecture check; the runtime needs updating for this seccompiler version")]
    UnexpectedLayout,
}

/// Docker's unconditional allow list, the names that exist on both x86_64
/// and aarch64. (Its 32-bit-only names, such as `chown32` or `_llseek`, exist
/// on neither and are left out.)
#[rustfmt::skip]
pub(crate) const ALLOW: &[&str] = &[
    "accept", "accept4", "adjtimex", "bind", "brk", "cachestat", "capget", "capset", "chdir",
    "chroot", "clock_adjtime", "clock_getres", "clock_gettime", "clock_nanosleep", "close",
    "close_range", "connect", "copy_file_range", "dup", "dup3", "epoll_create1", "epoll_ctl",
    "epoll_pwait", "epoll_pwait2", "eventfd2", "execve", "execveat", "exit", "exit_group",
    "faccessat", "faccessat2", "fadvise64", "fallocate", "fanotify_mark", "fchdir", "fchmod",
    "fchmodat", "fchmodat2", "fchown", "fchownat", "fcntl", "fdatasync", "fgetxattr",
    "flistxattr", "flock", "fremovexattr", "fsetxattr", "fstat", "fstatfs", "fsync",
    "ftruncate", "futex", "futex_requeue", "futex_wait", "futex_waitv", "futex_wake",
    "get_robust_list", "getcpu", "getcwd", "getdents64", "getegid", "geteuid", "getgid",
    "getgroups", "getitimer", "getpeername", "getpgid", "getpid", "getppid", "getpriority",
    "getrandom", "getresgid", "getresuid", "getrlimit", "getrusage", "getsid", "getsockname",
    "getsockopt", "gettid", "gettimeofday", "getuid", "getxattr", "inotify_add_watch",
    "inotify_init1", "inotify_rm_watch", "io_cancel", "io_destroy", "io_getevents",
    "io_pgetevents", "io_setup", "io_submit", "ioctl", "ioprio_get", "ioprio_set", "kill",
    "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lgetxattr",
    "linkat", "listen", "listmount", "listxattr", "llistxattr", "lremovexattr", "lseek",
    "lsetxattr", "madvise", "map_shadow_stack", "membarrier", "memfd_create", "memfd_secret",
    "mincore", "mkdirat", "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mprotect",
    "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedsend", "mq_unlink",
    "mremap", "mseal", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
    "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "openat",
    "openat2", "pidfd_open", "pidfd_send_signal", "pipe2", "pkey_alloc", "pkey_free",
    "pkey_mprotect", "ppoll", "prctl", "pread64", "preadv", "preadv2", "prlimit64",
    "process_mrelease", "process_vm_readv", "process_vm_writev", "pselect6", "ptrace",
    "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlinkat", "readv", "recvfrom",
    "recvmmsg", "recvmsg", "remap_file_pages", "removexattr", "renameat", "renameat2",
    "restart_syscall", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask",
    "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_tgsigqueueinfo",
    "sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity", "sched_getattr",
    "sched_getparam", "sched_getscheduler", "sched_rr_get_interval", "sched_setaffinity",
    "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp",
    "semctl", "semget", "semop", "semtimedop", "sendfile", "sendmmsg", "sendmsg", "sendto",
    "set_robust_list", "set_tid_address", "setfsgid", "setfsuid", "setgid", "setgroups",
    "setitimer", "setpgid", "setpriority", "setregid", "setresgid", "setresuid", "setreuid",
    "setrlimit", "setsid", "setsockopt", "setuid", "setxattr", "shmat", "shmctl", "shmdt",
    "shmget", "shutdown", "sigaltstack", "signalfd4", "socketpair", "splice", "statfs",
    "statmount", "statx", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee",
    "tgkill", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
    "timer_settime", "timerfd_create", "timerfd_gettime", "timerfd_settime", "times", "tkill",
    "truncate", "umask", "uname", "unlinkat", "utimensat", "vmsplice", "wait4", "waitid",
    "write", "writev",
];

/// Docker's allow list names that only x86_64 has (the legacy syscalls that
/// aarch64's generic table replaced by their `*at` forms, and x86's own).
#[rustfmt::skip]
pub(crate) const ALLOW_X86_64: &[&str] = &[
    "access", "alarm", "arch_prctl", "chmod", "chown", "creat", "dup2", "epoll_create",
    "epoll_ctl_old", "epoll_wait", "epoll_wait_old", "eventfd", "fork", "futimesat",
    "get_thread_area", "getdents", "getpgrp", "inotify_init", "lchown", "link", "lstat",
    "mkdir", "mknod", "modify_ldt", "open", "pause", "pipe", "poll", "readlink", "rename",
    "rmdir", "select", "set_thread_area", "signalfd", "stat", "symlink", "time", "unlink",
    "uretprobe", "utime", "utimes", "vfork",
];

/// Socket families Docker allows (`socket(domain, ...)`): everything below
/// AF_DECnet (12) and these. Raw sockets of the allowed families are still
/// refused by the kernel: CAP_NET_RAW is not granted.
#[rustfmt::skip]
const SOCKET_FAMILIES: &[u64] = &[
    13, 14, 15, 16, 17, 18, 21, 22, 24, 26, 27, 28, 29, 30, 31, 32, 33, 35, 36, 39, 41, 42, 43,
    44, 45,
];

/// The `personality` values Docker allows: PER_LINUX, UNAME26, PER_LINUX32,
/// UNAME26|PER_LINUX32 and the query 0xffffffff. Everything else (notably
/// ADDR_NO_RANDOMIZE, which turns ASLR off) is refused.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |
/// CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET: `clone` may create no new
/// namespace (Docker allows that only with CAP_SYS_ADMIN).
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

fn names_for(arch: TargetArch) -> Vec<&'static str> {
    let mut names = ALLOW.to_vec();
    if arch == TargetArch::x86_64 {
        names.extend_from_slice(ALLOW_X86_64);
    }
    names
}

/// The allow list in seccompiler's JSON form: one rule per name, and the
/// argument rules for `socket`, `personality` and `clone`.
fn allow_rules(arch: TargetArch) -> Vec<Value> {
    let arg0 = |syscall: &str, op: Value, val: u64| {
        // Dword: these arguments are ints (or flags in the low 32 bits) to the kernel.
        json!({ "syscall": syscall, "args": [{ "index": 0, "type": "dword", "op": op, "val": val }] })
    };
    let mut rules: Vec<Value> = names_for(arch)
        .into_iter()
        .map(|name| json!({ "syscall": name }))
        .collect();
    rules.push(arg0("socket", json!("lt"), 12));
    rules.extend(
        SOCKET_FAMILIES
            .iter()
            .map(|f| arg0("socket", json!("eq"), *f)),
    );
    rules.extend(
        PERSONALITIES
            .iter()
            .map(|p| arg0("personality", json!("eq"), *p)),
    );
    rules.push(arg0(
        "clone",
        json!({ "masked_eq": CLONE_NAMESPACE_FLAGS }),
        0,
    ));
    rules
}

/// The filters to install, in order, for `arch`.
///
/// Two programs: the allow list (default EPERM), then one that answers
/// `clone3` with ENOSYS, as Docker does, so that glibc falls back to `clone`
/// (whose flags the first filter can inspect; clone3's are behind a pointer).
/// Of two filters returning ERRNO the kernel takes the errno of the one
/// installed last, so the second filter's ENOSYS wins for `clone3`.
pub fn compile(arch: TargetArch) -> Result<Vec<BpfProgram>, PolicyError> {
    let eperm = libc::EPERM as u32;
    let description = json!({
        "allow": {
            "mismatch_action": { "errno": eperm },
            "match_action": "allow",
            "filter": allow_rules(arch),
        },
        "clone3": {
            "mismatch_action": "allow",
            "match_action": { "errno": libc::ENOSYS as u32 },
            "filter": [{ "syscall": "clone3" }],
        },
    });
    let compile_err = |source| PolicyError::Compile { arch, source };
    let mut map: HashMap<String, BpfProgram> =
        seccompiler::compile_from_json(description.to_string().as_bytes(), arch)
            .map_err(compile_err)?;
    let mut programs = Vec::with_capacity(2);
    for name in ["allow", "clone3"] {
        let mut program = map.remove(name).ok_or(PolicyError::UnexpectedLayout)?;
        foreign_abi_gets_eperm(&mut program)?;
        programs.push(program);
    }
    Ok(programs)
}

/// seccompiler's programs start by checking the architecture and kill the
/// process on a foreign one (a 32-bit syscall made by a 64-bit process).
/// Denied syscalls must fail, not kill: turn that into EPERM.
fn foreign_abi_gets_eperm(program: &mut BpfProgram) -> Result<(), PolicyError> {
    const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const ARCH_OFFSET: u32 = 4; // offsetof(struct seccomp_data, arch)
    let layout_ok = program.len() > 3
        && program[0].code == 0x20 // BPF_LD | BPF_W | BPF_ABS
        && program[0].k == ARCH_OFFSET
        && program[2].code == BPF_RET_K
        && program[2].k == libc::SECCOMP_RET_KILL_PROCESS;
    if !layout_ok {
        return Err(PolicyError::UnexpectedLayout);
    }
    program[2].k = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    Ok(())
}
