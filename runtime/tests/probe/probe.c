/*
 * The attacker's tool for runtime/tests/confinement.rs: a static binary that
 * tries, as whatever user it runs as, the syscalls a process breaking out of
 * a container reaches for. Each named check runs in a child of its own (so
 * one check's unshare or keyring change cannot colour the next, and a kill
 * shows up as such) and prints one line: "name=ok", "name=errno:N" or
 * "name=signal:N". "done" ends a run that was never killed.
 *
 *   probe CHECK...     run the checks
 *   probe forkbomb     fork until fork fails, print "forked=N errno=E", hold
 *
 * Built by the test with musl-gcc -static (no kernel headers needed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* 0 or more: it worked; below 0: -errno. */
static long result(long rc) { return rc < 0 ? -errno : rc; }

/* A clone-like call returned: the child leaves at once, the parent reaps it. */
static long reap(long rc) {
    if (rc == 0)
        _exit(0);
    if (rc > 0)
        waitpid((pid_t)rc, NULL, __WALL);
    return rc;
}

static long sock(int domain, int type, int proto) {
    long fd = result(socket(domain, type, proto));
    if (fd >= 0)
        close((int)fd);
    return fd;
}

struct clone_args_v0 {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
};

static long check(const char *name) {
    if (!strcmp(name, "getpid"))
        return result(syscall(SYS_getpid));
    if (!strcmp(name, "socket_tcp"))
        return sock(AF_INET, SOCK_STREAM, 0);
    if (!strcmp(name, "socket_raw_icmp"))
        return sock(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    if (!strcmp(name, "socket_packet"))
        return sock(AF_PACKET, SOCK_RAW, htons(0x0003 /* ETH_P_ALL */));
    if (!strcmp(name, "fork"))
        return reap(result(fork()));
    if (!strcmp(name, "clone_plain"))
        return reap(result(syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0)));
    if (!strcmp(name, "clone_newuser"))
        return reap(result(syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)));
    if (!strcmp(name, "clone3")) {
        struct clone_args_v0 args = {.exit_signal = SIGCHLD};
        return reap(result(syscall(SYS_clone3, &args, sizeof args)));
    }
    if (!strcmp(name, "unshare_user"))
        return result(unshare(CLONE_NEWUSER));
    if (!strcmp(name, "unshare_mount"))
        return result(unshare(CLONE_NEWNS));
    if (!strcmp(name, "keyctl_join"))
        return result(syscall(SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, "cloudos-probe"));
    if (!strcmp(name, "add_key"))
        return result(syscall(SYS_add_key, "user", "cloudos-probe", "x", 1,
                              -2 /* KEY_SPEC_PROCESS_KEYRING */));
    if (!strcmp(name, "userfaultfd"))
        return result(syscall(SYS_userfaultfd, O_CLOEXEC | 1 /* UFFD_USER_MODE_ONLY */));
    if (!strcmp(name, "io_uring_setup")) {
        char params[120] = {0}; /* struct io_uring_params */
        return result(syscall(SYS_io_uring_setup, 1, params));
    }
    if (!strcmp(name, "personality_aslr_off"))
        return result(syscall(SYS_personality, 0x0040000 /* ADDR_NO_RANDOMIZE */));
    if (!strcmp(name, "personality_query"))
        return result(syscall(SYS_personality, 0xffffffffUL));
    if (!strcmp(name, "mount_tmpfs"))
        return result(mount("none", "/tmp", "tmpfs", 0, ""));
    if (!strcmp(name, "kexec_load"))
        return result(syscall(SYS_kexec_load, 0, 0, 0, 0));
    if (!strcmp(name, "reboot_cad_off"))
        return result(syscall(SYS_reboot, 0xfee1dead, 672274793, 0 /* CAD_OFF */, 0));
#ifdef __x86_64__
    if (!strcmp(name, "int80_getpid")) {
        /* The i386 ABI from a 64-bit process: getpid is 20 there. */
        long rc;
        __asm__ volatile("int $0x80" : "=a"(rc) : "a"(20L) : "memory");
        return rc;
    }
    if (!strcmp(name, "x32_getpid"))
        return result(syscall(0x40000000L | SYS_getpid));
#endif
    dprintf(1, "%s=unknown\n", name);
    _exit(3);
}

static void run(const char *name) {
    pid_t child = fork();
    if (child < 0) {
        dprintf(1, "%s=fork-failed:%d\n", name, errno);
        return;
    }
    if (child == 0) {
        long rc = check(name);
        if (rc >= 0)
            dprintf(1, "%s=ok\n", name);
        else
            dprintf(1, "%s=errno:%ld\n", name, -rc);
        _exit(0);
    }
    int status = 0;
    waitpid(child, &status, 0);
    if (WIFSIGNALED(status))
        dprintf(1, "%s=signal:%d\n", name, WTERMSIG(status));
}

static void forkbomb(void) {
    long forked = 0;
    int err = 0;
    for (;;) {
        pid_t p = fork();
        if (p == 0)
            for (;;)
                pause();
        if (p < 0) {
            err = errno;
            break;
        }
        forked++;
    }
    dprintf(1, "forked=%ld errno=%d\n", forked, err);
    for (;;)
        pause();
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "forkbomb"))
        forkbomb();
    for (int i = 1; i < argc; i++)
        run(argv[i]);
    dprintf(1, "done\n");
    return 0;
}
