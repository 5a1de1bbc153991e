//! The sandbox's PID 1. It runs inside the container, after every control
//! (namespaces, mounts, capabilities, no_new_privs, seccomp) is in place,
//! and does three jobs a bare agent process would not:
//! - forwards the signals the supervisor sends (the kernel drops signals to
//!   a namespace's init unless it installed a handler, so `sleep` as PID 1
//!   would ignore Ctrl-C);
//! - reaps orphaned processes, so zombies do not pile up in long sessions;
//! - reports "not found" as exit code 127 and "cannot execute" as 126, as
//!   docker does, with a message naming the command.

use std::ffi::CString;

use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::errno::Errno;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, sigaction};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use oci_spec::runtime::Spec;
use std::os::unix::ffi::OsStrExt;

use crate::lookup::Lookup;

/// Signals PID 1 passes on to the agent.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGALRM,
];

#[derive(Clone)]
pub struct AgentInit {
    /// The agent gets the terminal's foreground process group.
    pub tty: bool,
    /// Confine the sandbox to its own abstract unix sockets (Landlock).
    pub scope_abstract_unix: bool,
    /// For `exec`: the session's seccomp filter, installed here because
    /// libcontainer's tenant builder rebuilds the process's Linux settings
    /// without it (an exec'd process ran unfiltered). `None` for the
    /// session itself, which the runtime filters.
    pub exec_seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
}

extern "C" fn noop(_: libc::c_int) {}

impl Executor for AgentInit {
    fn validate(&self, _spec: &Spec) -> Result<(), ExecutorValidationError> {
        // Lookup happens at exec time, so that a missing command becomes
        // exit code 127 rather than a launcher failure.
        Ok(())
    }

    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let args: Vec<String> = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .filter(|a| !a.is_empty())
            .ok_or(ExecutorError::InvalidArg)?;
        let argv: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_bytes()).map_err(|_| ExecutorError::InvalidArg))
            .collect::<Result<_, _>>()?;

        if let Some(filter) = &self.exec_seccomp {
            // no_new_privs is already set (the spec's process asks for it),
            // so an unprivileged process may install the filter.
            if let Err(e) = libcontainer::seccomp::initialize_seccomp(filter) {
                let msg = format!("agentctl: cannot install the session's seccomp filter: {e}\n");
                let _ = nix::unistd::write(std::io::stderr(), msg.as_bytes());
                exit(crate::LAUNCHER_FAILURE)
            }
        }
        // An exec's bare command name is looked up only where the agent
        // cannot have put it (the user typed it, and means the system's).
        let lookup = self.exec_seccomp.is_some();
        run_as_init(&argv, self.tty, self.scope_abstract_unix, lookup)
    }
}

/// Becomes the sandbox's PID 1 for `argv`: forks the agent, forwards
/// signals to it, reaps orphans, and exits with the agent's status. Also
/// the body of `agentctl __init`, which the Docker backend runs as PID 1 of
/// host-root containers.
///
/// With `scope_abstract_unix`, PID 1 confines itself (and so everything it
/// starts) with Landlock before the agent exists; if that fails the agent
/// never starts: the launcher asked for it because the kernel has it.
///
/// With `safe_lookup`, a bare command name resolves only to a file whose
/// path the agent cannot change ([`crate::lookup`]).
pub fn run_as_init(argv: &[CString], tty: bool, scope_abstract_unix: bool, safe_lookup: bool) -> ! {
    // Nothing of the helper's may live on inside the sandbox: not its
    // session lock (which says whether the session is supervised), not its
    // status pipe (which reports the exit code). The agent gets stdio only.
    // SAFETY: close_range on descriptors this process no longer needs.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if scope_abstract_unix && let Err(e) = sandbox::landlock::scope_abstract_unix_sockets() {
        let msg = format!(
            "agentctl: cannot keep the sandbox away from the host's abstract unix sockets (Landlock): {}\n",
            e.desc()
        );
        let _ = nix::unistd::write(std::io::stderr(), msg.as_bytes());
        exit(crate::LAUNCHER_FAILURE)
    }
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    // A real handler, not SIG_DFL: the kernel discards signals sent to a
    // namespace's init that would take the default action.
    let action = SigAction::new(
        SigHandler::Handler(noop),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for s in FORWARDED {
        // SAFETY: `noop` is async-signal-safe; it does nothing.
        let _ = unsafe { sigaction(*s, &action) };
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);

    // SAFETY: this process is single-threaded (a fresh fork of the
    // single-threaded helper, or a fresh exec), so the child may run
    // arbitrary code.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => run_agent(argv, tty, safe_lookup),
        Ok(ForkResult::Parent { child }) => supervise(child, &set),
        Err(e) => {
            let msg = format!("agentctl: cannot start the agent: {e}\n");
            let _ = nix::unistd::write(std::io::stderr(), msg.as_bytes());
            exit(126)
        }
    }
}

fn run_agent(argv: &[CString], tty: bool, safe_lookup: bool) -> ! {
    if tty {
        // Own process group in the foreground of the terminal, so Ctrl-C
        // reaches the agent and its children, not PID 1.
        let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
        // SAFETY: ignoring SIGTTOU, so that taking the foreground from a
        // background group does not stop this process.
        let _ = unsafe { sigaction(Signal::SIGTTOU, &ignore) };
        let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
        let _ = nix::unistd::tcsetpgrp(std::io::stdin(), nix::unistd::getpid());
        let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        // SAFETY: restoring the default disposition.
        let _ = unsafe { sigaction(Signal::SIGTTOU, &default) };
    }
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for s in FORWARDED {
        // SAFETY: restoring the default disposition.
        let _ = unsafe { sigaction(*s, &default) };
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);

    let name = argv[0].to_string_lossy();
    let err = if safe_lookup && !argv[0].as_bytes().contains(&b'/') {
        let path = std::env::var("PATH").unwrap_or_default();
        match crate::lookup::find_command(&name, &path) {
            Lookup::Found(file) => match CString::new(file.as_os_str().as_bytes()) {
                Ok(file) => nix::unistd::execv(&file, argv).unwrap_err(),
                Err(_) => Errno::ENOENT,
            },
            Lookup::OnlyWritable(dirs) => {
                let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                let msg = format!(
                    "agentctl: {name}: found only in {}, where the agent can write; not run. Give its full path (agentctl exec <id> -- {}/{name}) if you trust it\n",
                    dirs.join(", "),
                    dirs[0]
                );
                let _ = nix::unistd::write(std::io::stderr(), msg.as_bytes());
                exit(127)
            }
            Lookup::NotFound => Errno::ENOENT,
        }
    } else {
        nix::unistd::execvp(&argv[0], argv).unwrap_err()
    };
    let (code, what) = match err {
        Errno::ENOENT | Errno::ENOTDIR => (127, "command not found".to_string()),
        Errno::EACCES | Errno::EPERM => (126, "permission denied".to_string()),
        Errno::ENOEXEC => (126, "not an executable".to_string()),
        e => (126, format!("cannot execute: {}", e.desc())),
    };
    let msg = format!("agentctl: {name}: {what}\n");
    let _ = nix::unistd::write(std::io::stderr(), msg.as_bytes());
    // SAFETY: _exit is always safe; it skips atexit handlers of the
    // forked copy of PID 1.
    unsafe { libc::_exit(code) }
}

fn supervise(child: Pid, set: &SigSet) -> ! {
    loop {
        let Ok(sig) = set.wait() else { continue };
        if sig != Signal::SIGCHLD {
            let _ = nix::sys::signal::kill(child, sig);
            continue;
        }
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => exit(code),
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => exit(128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: see above.
    unsafe { libc::_exit(code) }
}
