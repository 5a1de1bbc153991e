//! The sandbox's seccomp filter, as backend-neutral data.
//!
//! It is an allowlist: anything not named fails with EPERM. It is at least
//! as strict as Docker's default profile for a container without
//! capabilities, and stricter in a few places:
//! - `unshare`, `setns`, `mount` and the new mount API are refused, and
//!   `clone` may not ask for a new user namespace, so the agent cannot build
//!   itself a namespace where it holds capabilities again;
//! - `clone3` answers ENOSYS, because its flags sit in memory where seccomp
//!   cannot see them; libc then falls back to `clone`;
//! - io_uring is refused, since it performs syscalls the filter never sees;
//! - `ioctl(TIOCSTI)` is refused, so nothing can type into a terminal;
//! - AF_VSOCK sockets are refused, so nothing can talk to a hypervisor.
//!
//! Conditions compare the full 64-bit register with `==`, `!=` and `<`, or
//! a masked part of it (`arg & mask == value`). The kernel reads `int` and
//! `unsigned int` arguments (socket's domain, ioctl's request) from the low
//! 32 bits only, so a rule on such an argument must not look at the high
//! ones: `socket(0x1_0000_0028)` is an AF_VSOCK socket to the kernel, and a
//! 64-bit `!= 40` let it through. "The low 32 bits differ from X" is
//! written as one allow rule per bit, each a masked comparison of one bit
//! against X's (rules for a call are alternatives: the call passes when any
//! bit differs). Runtimes disagree on which of OCI's `value`/`valueTwo` is
//! the mask: the backends write [`Op::MaskedEq`] for each runtime they
//! feed, and tests run the same attack under every one.

use serde::Serialize;

/// What the kernel does with a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Action {
    Allow,
    Errno(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    /// `arg & mask == value`.
    MaskedEq {
        mask: u64,
    },
}

impl ArgCheck {
    /// Whether the condition holds for the register value `arg`, as the
    /// kernel's filter evaluates it.
    pub fn holds(&self, arg: u64) -> bool {
        match self.op {
            Op::Eq => arg == self.value,
            Op::Ne => arg != self.value,
            Op::Lt => arg < self.value,
            Op::MaskedEq { mask } => arg & mask == self.value,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ArgCheck {
    pub index: u32,
    pub op: Op,
    pub value: u64,
}

/// One rule: the calls it covers, what happens, and the conditions (all of
/// which must hold).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub names: Vec<&'static str>,
    pub action: Action,
    pub args: Vec<ArgCheck>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SeccompProfile {
    /// Errno returned for every call no rule allows.
    pub default_errno: u32,
    pub rules: Vec<Rule>,
}

pub const EPERM: u32 = 1;
pub const ENOSYS: u32 = 38;

const CLONE_NEWUSER: u64 = 0x1000_0000;
const TIOCSTI: u64 = 0x5412;
const AF_VSOCK: u64 = 40;

/// Calls allowed without conditions.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "get_mempolicy",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioprio_get",
    "ioprio_set",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "process_vm_readv",
    "process_vm_writev",
    "pselect6",
    "pselect6_time64",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Calls that are never allowed, listed so tests can prove they stay out of
/// the allowlist. Not exhaustive: the default action refuses everything
/// else too.
pub const NEVER_ALLOWED: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "chroot",
    "clock_adjtime",
    "clock_settime",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pidfd_getfd",
    "pivot_root",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setdomainname",
    "sethostname",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "syslog",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vhangup",
    "vm86",
    "vm86old",
];

/// Rules that allow `name` unless the low 32 bits of argument `index`
/// equal `value`: one rule per bit, each matching when that bit differs
/// from `value`'s, whatever the high 32 bits hold.
fn allow_unless_low32(name: &'static str, index: u32, value: u64) -> Vec<Rule> {
    (0..32)
        .map(|bit| {
            let mask = 1u64 << bit;
            Rule {
                names: vec![name],
                action: Action::Allow,
                args: vec![ArgCheck {
                    index,
                    op: Op::MaskedEq { mask },
                    value: !value & mask,
                }],
            }
        })
        .collect()
}

impl SeccompProfile {
    /// What the filter does with `name` called with these register
    /// values: the first matching rule's action, else the default. (The
    /// profile never gives one call two actions, so order is moot.)
    pub fn decide(&self, name: &str, args: &[u64; 6]) -> Action {
        self.rules
            .iter()
            .filter(|r| r.names.contains(&name))
            .find(|r| r.args.iter().all(|a| a.holds(args[a.index as usize])))
            .map(|r| r.action)
            .unwrap_or(Action::Errno(self.default_errno))
    }
}

/// The profile every sandbox runs with.
pub fn default_profile() -> SeccompProfile {
    let mut rules = vec![Rule {
        names: ALLOWED.to_vec(),
        action: Action::Allow,
        args: Vec::new(),
    }];
    // Threads, fork and vfork all pass flags below CLONE_NEWUSER. The other
    // namespace flags below it need CAP_SYS_ADMIN, which the sandbox lacks.
    rules.push(Rule {
        names: vec!["clone"],
        action: Action::Allow,
        args: vec![ArgCheck {
            index: 0,
            op: Op::Lt,
            value: CLONE_NEWUSER,
        }],
    });
    rules.push(Rule {
        names: vec!["clone3"],
        action: Action::Errno(ENOSYS),
        args: Vec::new(),
    });
    // ioctl's request is an `unsigned int` and socket's domain an `int` to
    // the kernel: only their low 32 bits count.
    rules.extend(allow_unless_low32("ioctl", 1, TIOCSTI));
    rules.extend(allow_unless_low32("socket", 0, AF_VSOCK));
    // personality() only with the values programs use to query or to ask
    // for the standard Linux personality.
    for value in [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff] {
        rules.push(Rule {
            names: vec!["personality"],
            action: Action::Allow,
            args: vec![ArgCheck {
                index: 0,
                op: Op::Eq,
                value,
            }],
        });
    }
    SeccompProfile {
        default_errno: EPERM,
        rules,
    }
}

/// The profile in the JSON form the Docker Engine takes in
/// `--security-opt seccomp=...` (and runc reads). Here, beside the profile,
/// so that the Docker backend writes it and the socket proxy recognises
/// it, from one definition. Pure.
pub fn docker_json(profile: &SeccompProfile) -> String {
    use serde_json::{Value, json};
    let arch = if cfg!(target_arch = "aarch64") {
        "SCMP_ARCH_AARCH64"
    } else {
        "SCMP_ARCH_X86_64"
    };
    let syscalls: Vec<Value> = profile
        .rules
        .iter()
        .map(|r| {
            let mut rule = json!({ "names": r.names });
            match r.action {
                Action::Allow => rule["action"] = "SCMP_ACT_ALLOW".into(),
                Action::Errno(e) => {
                    rule["action"] = "SCMP_ACT_ERRNO".into();
                    rule["errnoRet"] = e.into();
                }
            }
            if !r.args.is_empty() {
                rule["args"] = r
                    .args
                    .iter()
                    .map(|a| {
                        // Docker hands the profile to runc, which reads a
                        // masked comparison's mask from `value` and its
                        // datum from `valueTwo` (libseccomp's order).
                        let (value, value_two, op) = match a.op {
                            Op::Eq => (a.value, 0, "SCMP_CMP_EQ"),
                            Op::Ne => (a.value, 0, "SCMP_CMP_NE"),
                            Op::Lt => (a.value, 0, "SCMP_CMP_LT"),
                            Op::MaskedEq { mask } => (mask, a.value, "SCMP_CMP_MASKED_EQ"),
                        };
                        json!({
                            "index": a.index,
                            "value": value,
                            "valueTwo": value_two,
                            "op": op,
                        })
                    })
                    .collect();
            }
            rule
        })
        .collect();
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": profile.default_errno,
        "architectures": [arch],
        "syscalls": syscalls,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_calls_are_not_allowed() {
        let p = default_profile();
        for name in NEVER_ALLOWED {
            for rule in &p.rules {
                assert!(
                    !(rule.names.contains(name) && rule.action == Action::Allow),
                    "{name} must not be allowed"
                );
            }
        }
    }

    #[test]
    fn allowlist_has_no_duplicates() {
        let mut names = ALLOWED.to_vec();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    #[test]
    fn thirty_two_bit_arguments_ignore_the_high_bits() {
        let p = default_profile();
        let refused = Action::Errno(EPERM);
        for high in [0u64, 1 << 32, 0xffff_ffff_0000_0000, 0x8000_0000_0000_0000] {
            let vsock = [high | AF_VSOCK, 1, 0, 0, 0, 0];
            assert_eq!(p.decide("socket", &vsock), refused, "{high:#x}");
            let tiocsti = [0, high | TIOCSTI, 0, 0, 0, 0];
            assert_eq!(p.decide("ioctl", &tiocsti), refused, "{high:#x}");
        }
        for domain in [1u64, 2, 10, 16, 17, 41, 39, 0x28 ^ 0x8000_0000] {
            assert_eq!(p.decide("socket", &[domain, 1, 0, 0, 0, 0]), Action::Allow);
        }
        // Requests glibc sign-extends (bit 31 set) still pass.
        for req in [0x5401u64, 0x5413, 0x8004_5430, 0xffff_ffff_8004_5430] {
            assert_eq!(p.decide("ioctl", &[0, req, 0, 0, 0, 0]), Action::Allow);
        }
        // A walk over many values: refused exactly when the low half matches.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for (call, i, bad) in [("socket", 0, AF_VSOCK), ("ioctl", 1, TIOCSTI)] {
                for v in [x, (x & !0xffff_ffff) | bad] {
                    let mut args = [0u64; 6];
                    args[i] = v;
                    let want = if v & 0xffff_ffff == bad {
                        refused
                    } else {
                        Action::Allow
                    };
                    assert_eq!(p.decide(call, &args), want, "{call} {v:#x}");
                }
            }
        }
    }

    #[test]
    fn conditional_calls_are_not_also_unconditional() {
        for name in ["clone", "clone3", "ioctl", "socket", "personality"] {
            assert!(!ALLOWED.contains(&name), "{name} is filtered by argument");
        }
    }
}
