//! The session helper: a single-threaded process that owns one sandbox
//! from creation to cleanup.
//!
//! libcontainer forks without exec and changes the process-wide working
//! directory, so it must not share a process with threads (tokio, the
//! scanner's pool). The launcher writes the bundle and a `helper.json`,
//! then starts this helper by re-executing its own binary. The helper
//! builds the container, checks that its limits took, relays the terminal,
//! forwards signals, waits for the agent, and removes every trace: the
//! container state, the cgroup and the session directory. A detached
//! session is the same helper without a terminal to relay.

use crate::error::{Context as _, NativeError};
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use policy::NetworkMode;
use sandbox::spec::LimitsPlan;
use serde::{Deserialize, Serialize};

use crate::cgroup::{self, CgroupMode, Hierarchy};
use crate::init::{AgentInit, FORWARDED};
use crate::net;
use crate::relay::{self, Relay, SandboxIo};

/// Exit code for failures of agentctl itself, as docker uses.
pub const LAUNCHER_FAILURE: i32 = 125;

/// What the launcher tells the helper, in `<session>/helper.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HelperConfig {
    pub id: String,
    pub session_dir: PathBuf,
    pub bundle: PathBuf,
    /// libcontainer's state directory (its "root path").
    pub state_root: PathBuf,
    pub tty: bool,
    pub network: NetworkMode,
    pub cgroup: CgroupMode,
    pub limits: LimitsPlan,
    /// Rootless: the helper first moves into a user namespace of its own,
    /// mapping the user's (uid, gid) to 0, and builds the sandbox inside
    /// it. The sandbox then needs no user namespace of its own, and the
    /// helper holds the capabilities (in that namespace only) to configure
    /// the sandbox's network, which the runtime makes non-dumpable.
    pub enter_userns: Option<(u32, u32)>,
    /// The paths that must be masked, checked before the agent starts.
    pub masked: Vec<PathBuf>,
    /// An image's unpacked root filesystem: the sandbox's root is an
    /// overlay of it (read-only below, a throwaway layer above for the
    /// runtime's mount points), so the shared cache is never written.
    pub image_rootfs: Option<PathBuf>,
    /// Running in the background: no terminal, and the helper outlives the
    /// launcher.
    #[serde(default)]
    pub detached: bool,
    /// Run after the session ended and was cleaned up, with
    /// `AGENTCTL_EXIT_CODE` set: how a detached session's end is recorded.
    #[serde(default)]
    pub on_exit: Vec<String>,
    /// Where the exit code is written for whoever reconciles later.
    #[serde(default)]
    pub exit_file: Option<PathBuf>,
    /// Keep the sandbox's processes from connecting to abstract unix
    /// sockets made outside it (Landlock): set for the host network, whose
    /// abstract sockets (X11, D-Bus) a network namespace would otherwise
    /// have kept away.
    #[serde(default)]
    pub scope_abstract_unix: bool,
    /// A foreground session's launcher: the helper's parent, whose death
    /// stops the session. Checked once the death signal is armed, since the
    /// launcher may have died before (the signal would then never come).
    #[serde(default)]
    pub launcher_pid: Option<u32>,
    /// A foreground session's output is also appended here (see
    /// `sandbox::RunOptions::output_copy`).
    #[serde(default)]
    pub output_copy: Option<PathBuf>,
    /// The `allowlist` network: the rules and how to serve them.
    #[serde(default)]
    pub egress: Option<EgressPlan>,
}

pub use sandbox::egress::EgressPlan;

/// The helper holds a lock on this file in the session directory for as
/// long as it lives: a session whose lock is free has no supervisor.
pub const LOCK_FILE: &str = "lock";
/// The helper's pid, for `exec` to find its user namespace.
pub const PID_FILE: &str = "helper.pid";
/// The sandbox's init on the host, for sampling its cgroup.
pub const SANDBOX_PID_FILE: &str = "sandbox.pid";

/// What the helper reports on its status pipe.
pub const MSG_STARTED: u8 = b'S';
pub const MSG_EXITED: u8 = b'X';

impl HelperConfig {
    pub const FILE: &'static str = "helper.json";

    pub fn load(session_dir: &Path) -> io::Result<HelperConfig> {
        let text = fs::read(session_dir.join(Self::FILE))?;
        serde_json::from_slice(&text).map_err(io::Error::other)
    }
}

/// Entry point of `agentctl __native-helper <session-dir>`. Returns the
/// process exit code.
pub fn helper_main(session_dir: &Path) -> i32 {
    let cfg = match HelperConfig::load(session_dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "agentctl: cannot read session {}: {e}",
                session_dir.display()
            );
            return LAUNCHER_FAILURE;
        }
    };
    if let Some((uid, gid)) = cfg.enter_userns
        && !in_child_userns()
    {
        // Re-executing after entering the namespace makes it the owner of
        // the helper's memory; only then do its capabilities there reach the
        // runtime's non-dumpable processes (to set up their network).
        let err = enter_own_userns(uid, gid).and_then(|()| reexec());
        if let Err(e) = err {
            eprintln!("agentctl: {e}");
            cleanup_session(&cfg, None);
            return LAUNCHER_FAILURE;
        }
    }
    run_session(cfg, inherited_status_fd())
}

/// Names the descriptor on which an exec'd helper reports the exit code.
pub const STATUS_FD_ENV: &str = "AGENTCTL_STATUS_FD";

/// Runs a session in the current (single-threaded) process: the helper's
/// body, shared by the re-executed helper and the launcher's forked one.
///
/// The exit code goes to `status` as soon as the agent has exited and the
/// terminal is restored, before the sandbox is taken apart: the user gets
/// the prompt back while the helper removes the cgroup and state, which it
/// always finishes, with its stdin and stdout already let go.
pub fn run_session(cfg: HelperConfig, status: Option<OwnedFd>) -> i32 {
    let lock = match take_lock(&cfg.session_dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("agentctl: {e}");
            return LAUNCHER_FAILURE;
        }
    };
    if !cfg.detached {
        // Tests widen the window between the fork and the prctl below to
        // kill the launcher inside it; nothing else reads this variable.
        if let Some(ms) = std::env::var("AGENTCTL_TEST_HELPER_PAUSE_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        // A foreground session belongs to its launcher: if the launcher is
        // killed, the agent is told to stop rather than run on unwatched.
        // SAFETY: prctl with constant arguments.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
        if let Some(launcher) = cfg.launcher_pid
            && nix::unistd::getppid().as_raw() as u32 != launcher
        {
            // Killed between the fork and the prctl: no one would ever be
            // told this session ran, so it does not start.
            eprintln!("agentctl: the launcher is gone; the session does not start");
            cleanup_session(&cfg, None);
            drop(lock);
            return LAUNCHER_FAILURE;
        }
    }
    let mut session = Session::new(cfg);
    session.status = status;
    let code = match session.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agentctl: {e}");
            LAUNCHER_FAILURE
        }
    };
    session.release_terminal();
    if let Some(fd) = session.status.take() {
        let mut msg = vec![MSG_EXITED];
        msg.extend_from_slice(&code.to_le_bytes());
        let _ = nix::unistd::write(&fd, &msg);
        drop(fd);
        detach_stdio();
    }
    if let Some(file) = &session.cfg.exit_file {
        let _ = fs::create_dir_all(file.parent().unwrap_or(Path::new("/")));
        let _ = fs::write(file, code.to_string());
    }
    session.cleanup();
    drop(lock);
    let on_exit = std::mem::take(&mut session.cfg.on_exit);
    if !on_exit.is_empty() {
        sandbox::detached::run_on_exit(&on_exit, code);
    }
    code
}

/// Entry point of `agentctl __native-exec <session-dir> [--tty] -- CMD`: runs
/// a command inside a running session, with the caller's stdio, and
/// returns its exit code. Single-threaded, like the helper: libcontainer
/// forks without exec.
pub fn exec_main(session_dir: &Path, tty: bool, command: Vec<String>) -> i32 {
    match exec_in(session_dir, tty, command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agentctl: {e}");
            LAUNCHER_FAILURE
        }
    }
}

fn exec_in(session_dir: &Path, tty: bool, command: Vec<String>) -> Result<i32, NativeError> {
    let cfg = HelperConfig::load(session_dir)
        .ctx(format!("cannot read session {}", session_dir.display()))?;
    if !supervised(session_dir) {
        return Err(NativeError::check(format!(
            "session {} is not running",
            cfg.id
        )));
    }
    if cfg.enter_userns.is_some() {
        // The sandbox lives in its helper's user namespace; join it to have
        // the capabilities there that joining the sandbox takes.
        let pid = fs::read_to_string(session_dir.join(PID_FILE))
            .ctx("cannot find the session's helper")?;
        let ns = fs::File::open(format!("/proc/{}/ns/user", pid.trim()))
            .ctx("cannot open the session's user namespace")?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWUSER)
            .ctx("cannot join the session's user namespace")?;
    }
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(*s);
    }
    mask.add(Signal::SIGCHLD);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .ctx("cannot block signals")?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .ctx("cannot create a signalfd")?;

    // The session's own process settings and filter, from the spec it runs:
    // without them the exec does not run. libcontainer's tenant builder
    // would otherwise make up a process of its own (no terminal, no
    // rlimits) and drop `linux.seccomp` (in libcontainer's operand order
    // already in this spec).
    let spec = oci_spec::runtime::Spec::load(cfg.bundle.join("config.json")).map_err(|e| {
        format!(
            "cannot read the bundle of session {}: {e}; the command does not run",
            cfg.id
        )
    })?;
    let exec_seccomp = spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().clone())
        .ok_or_else(|| {
            format!(
                "cannot read the seccomp filter of session {} from its bundle; the command does not run unfiltered",
                cfg.id
            )
        })?;
    let mut process = spec
        .process()
        .clone()
        .ok_or_else(|| format!("session {} has no process in its bundle", cfg.id))?;
    process.set_args(Some(command)).set_terminal(Some(tty));
    fresh_session_keyring()?;
    let exec_dir = tempfile_dir(session_dir)?;
    let process_file = exec_dir.join("process.json");
    fs::write(
        &process_file,
        serde_json::to_vec(&process).map_err(|e| e.to_string())?,
    )
    .ctx(format!("cannot write {}", process_file.display()))?;
    let console = if tty {
        let path = exec_dir.join("console.sock");
        Some((
            UnixListener::bind(&path).ctx("cannot create the console socket")?,
            path,
        ))
    } else {
        None
    };
    let mut builder = ContainerBuilder::new(cfg.id.clone(), SyscallType::default())
        .with_executor(AgentInit {
            tty,
            scope_abstract_unix: cfg.scope_abstract_unix,
            exec_seccomp: Some(exec_seccomp),
        })
        .with_root_path(&cfg.state_root)
        .ctx("cannot use state directory")?;
    let mut pipes = None;
    match &console {
        Some((_, path)) => builder = builder.with_console_socket(Some(path)),
        None => {
            let (ours, theirs) = relay::pipes()?;
            pipes = Some(ours);
            builder = builder
                .with_stdin(theirs.stdin)
                .with_stdout(theirs.stdout)
                .with_stderr(theirs.stderr);
        }
    }
    let result = (|| {
        let pid = builder
            .as_tenant()
            .with_process(Some(&process_file))
            .with_detach(tty)
            .build()
            .ctx("cannot run the command in the session")?;
        let io = match (&console, pipes) {
            (Some((listener, _)), _) => SandboxIo::Pty(receive_master(listener)?),
            (None, Some(p)) => SandboxIo::Pipes(p),
            (None, None) => return Err("the exec has no stdio".into()),
        };
        let mut session = Session::new(cfg.clone());
        let mut relay = Relay::new(io);
        if let Some(m) = relay.master() {
            session.enter_raw_mode();
            copy_winsize(m);
        }
        let code = session.wait(pid, &sigfd, &mut relay);
        session.release_terminal();
        code
    })();
    let _ = fs::remove_dir_all(&exec_dir);
    result
}

/// Leaves the caller's session keyring for a new, empty, anonymous one,
/// which the sandbox then inherits: a token the user added with `keyctl`
/// in the shell that ran agentctl is not the sandbox's to possess (the
/// filter's ban on keyctl is the second wall, not the only one).
///
/// ENOSYS (a kernel without keyrings) and EPERM (keyctl already refused to
/// this process, and so to everything it starts, by an outer seccomp
/// filter) leave nothing to reach; any other failure refuses.
pub fn fresh_session_keyring() -> Result<(), NativeError> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl with a null name; no memory is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if r >= 0 {
        return Ok(());
    }
    match nix::errno::Errno::last() {
        nix::errno::Errno::ENOSYS | nix::errno::Errno::EPERM => Ok(()),
        e => Err(NativeError::check(format!(
            "cannot give the sandbox a session keyring of its own (keyctl: {}); refusing to start",
            e.desc()
        ))),
    }
}

/// A scratch directory for one exec, inside the session directory.
fn tempfile_dir(session_dir: &Path) -> Result<PathBuf, NativeError> {
    let dir = session_dir.join(format!("exec-{}", std::process::id()));
    fs::create_dir_all(&dir).ctx(format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Takes the session's lock, held until the helper exits.
fn take_lock(session_dir: &Path) -> Result<fslock::Lock, NativeError> {
    match fslock::try_exclusive(&session_dir.join(LOCK_FILE)) {
        Ok(Some(lock)) => Ok(lock),
        Ok(None) => Err("the session is already supervised".into()),
        Err(e) => Err(NativeError::check(format!(
            "cannot create the session lock: {e}"
        ))),
    }
}

/// True when a live helper holds the lock of the session in `session_dir`.
pub fn supervised(session_dir: &Path) -> bool {
    fslock::held(&session_dir.join(LOCK_FILE))
}

/// Points stdin and stdout at /dev/null, so that a pipeline reading the
/// session's output ends with the agent, not with the cleanup.
fn detach_stdio() {
    if let Ok(null) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
}

/// The status descriptor an exec'd helper inherited, if any.
fn inherited_status_fd() -> Option<OwnedFd> {
    let fd: std::os::fd::RawFd = std::env::var(STATUS_FD_ENV).ok()?.parse().ok()?;
    // SAFETY: F_GETFD only checks that the descriptor is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the launcher passed this descriptor to us and nothing else in
    // this process owns it.
    let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: marking our own descriptor close-on-exec.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(owned)
}

struct Session {
    cfg: HelperConfig,
    status: Option<OwnedFd>,
    container: Option<Container>,
    hierarchy: Option<Hierarchy>,
    slirp: Option<sandbox::slirp::Slirp>,
    egress: Option<sandbox::egress::EgressProcess>,
    saved_termios: Option<termios::Termios>,
}

impl Session {
    fn new(cfg: HelperConfig) -> Session {
        Session {
            cfg,
            status: None,
            container: None,
            hierarchy: None,
            slirp: None,
            egress: None,
            saved_termios: None,
        }
    }

    fn run(&mut self) -> Result<i32, NativeError> {
        // Signals are read from a signalfd, one at a time, in the loop
        // below; blocking them first means none is lost while setting up.
        let mut mask = SigSet::empty();
        for s in FORWARDED {
            mask.add(*s);
        }
        mask.add(Signal::SIGCHLD);
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
            .ctx("cannot block signals")?;
        let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .ctx("cannot create a signalfd")?;

        // Before anything of the sandbox exists: it inherits this keyring.
        fresh_session_keyring()?;
        if let Some(lower) = &self.cfg.image_rootfs {
            mount_image_root(
                lower,
                &self.cfg.session_dir,
                &self.cfg.bundle.join("rootfs"),
            )?;
        }
        self.prepare_cgroup()?;

        let console = if self.cfg.tty {
            let path = self.cfg.session_dir.join("console.sock");
            Some((
                UnixListener::bind(&path).ctx("cannot create the console socket")?,
                path,
            ))
        } else {
            None
        };

        let mut builder = ContainerBuilder::new(self.cfg.id.clone(), SyscallType::default())
            .with_executor(AgentInit {
                tty: self.cfg.tty,
                scope_abstract_unix: self.cfg.scope_abstract_unix,
                exec_seccomp: None,
            })
            .with_root_path(&self.cfg.state_root)
            .ctx("cannot use state directory")?;
        let mut pipes = None;
        match &console {
            Some((_, path)) => builder = builder.with_console_socket(Some(path)),
            None => {
                let (ours, theirs) = relay::pipes()?;
                pipes = Some(ours);
                builder = builder
                    .with_stdin(theirs.stdin)
                    .with_stdout(theirs.stdout)
                    .with_stderr(theirs.stderr);
            }
        }
        let container = builder
            .as_init(&self.cfg.bundle)
            .with_systemd(false)
            .with_detach(self.cfg.tty)
            .build()
            .map_err(|e| explain_build_error(&e))?;
        let pid = container
            .pid()
            .ok_or("the sandbox has no init process")?
            .as_raw();
        self.container = Some(container);

        if self.cfg.cgroup.limited() {
            let hierarchy = self.hierarchy.as_ref().ok_or("cgroup layout unknown")?;
            cgroup::verify(hierarchy, self.cfg.cgroup.path(), pid, &self.cfg.limits)
                .map_err(|e| format!("cannot apply resource limits: {e}; refusing to start"))?;
        }
        verify_masks(pid, &self.cfg.masked)
            .map_err(|e| format!("cannot mask a secret: {e}; refusing to start"))?;

        let io = match (&console, pipes) {
            (Some((listener, _)), _) => SandboxIo::Pty(receive_master(listener)?),
            (None, Some(p)) => SandboxIo::Pipes(p),
            (None, None) => return Err("the sandbox has no stdio".into()),
        };
        let mut relay = Relay::new(io);
        relay.copy_to(sandbox::OutputCopy::open(self.cfg.output_copy.as_deref()));

        if self.cfg.network != NetworkMode::Host {
            net::loopback_up(pid)?;
        }
        if self.cfg.network == NetworkMode::Bridge {
            let bin = net::find_slirp4netns()
                .ok_or("slirp4netns is not installed; install it or use --network none|host")?;
            self.slirp = Some(
                sandbox::slirp::Slirp::start(&bin, pid, false, &self.cfg.session_dir)
                    .map_err(NativeError::check)?,
            );
        }
        if self.cfg.network == NetworkMode::Allowlist {
            // Without its listeners and their proxy the session would be
            // offline rather than open; still, a control that cannot be
            // applied refuses, so the user learns why.
            let plan = self
                .cfg
                .egress
                .as_ref()
                .ok_or("the allowlist network has no egress plan; refusing to start")?;
            let planted = net::plant_listeners(pid, &plan.transparent_ports)?;
            self.egress = Some(
                sandbox::egress::EgressProcess::start(plan, planted, None, &self.cfg.session_dir)
                    .map_err(NativeError::check)?,
            );
        }

        if let Some(master) = relay.master() {
            self.enter_raw_mode();
            copy_winsize(master);
        }
        self.container
            .as_mut()
            .expect("container built")
            .start()
            .ctx("cannot start the sandbox")?;
        let _ = fs::write(
            self.cfg.session_dir.join(PID_FILE),
            std::process::id().to_string(),
        );
        let _ = fs::write(self.cfg.session_dir.join(SANDBOX_PID_FILE), pid.to_string());
        if let Some(fd) = &self.status {
            let mut msg = vec![MSG_STARTED];
            msg.extend_from_slice(&(pid as u32).to_le_bytes());
            let _ = nix::unistd::write(fd, &msg);
        }

        let status = self.wait(Pid::from_raw(pid), &sigfd, &mut relay)?;
        Ok(status)
    }

    fn prepare_cgroup(&mut self) -> Result<(), NativeError> {
        let hierarchy = cgroup::detect().ctx("cannot read cgroups")?;
        let fail = |e: io::Error| format!("cannot create the session cgroup: {e}");
        match (&self.cfg.cgroup, &hierarchy) {
            (CgroupMode::DelegatedV1 { path }, Hierarchy::V1 { mounts }) => {
                cgroup::create_v1(mounts, path, &self.cfg.limits).map_err(fail)?;
            }
            (CgroupMode::Hidden { .. }, _) => cgroup::hide_cgroupfs().map_err(fail)?,
            (CgroupMode::DelegatedV2 { .. }, Hierarchy::V2) => {
                // systemd-run put this process alone in a delegated scope:
                // move aside, enable the controllers, and make the session's
                // cgroup next to us.
                let scope = cgroup::v2_prepare_delegated_scope().map_err(fail)?;
                let path = format!("{scope}/sandbox");
                cgroup::create_v2(&path, &self.cfg.limits).map_err(fail)?;
                set_cgroups_path(&self.cfg.bundle, &path)?;
                self.cfg.cgroup = CgroupMode::DelegatedV2 { path };
            }
            _ => {}
        }
        self.hierarchy = Some(hierarchy);
        Ok(())
    }

    fn enter_raw_mode(&mut self) {
        let stdin = io::stdin();
        if let Ok(saved) = termios::tcgetattr(&stdin) {
            let mut raw = saved.clone();
            termios::cfmakeraw(&mut raw);
            if termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw).is_ok() {
                self.saved_termios = Some(saved);
            }
        }
    }

    /// Waits for the agent while relaying its stdio and forwarding
    /// signals. Returns the agent's exit code.
    fn wait(&self, pid: Pid, sigfd: &SignalFd, relay: &mut Relay) -> Result<i32, NativeError> {
        loop {
            let stdin = io::stdin();
            let mut fds = vec![PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
            let slots = relay.poll_fds(&stdin, &mut fds);
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(NativeError::check(format!("poll: {e}"))),
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            for (slot, _) in slots.iter().zip(&ready[1..]).filter(|(_, r)| **r) {
                relay.ready(*slot);
            }
            if ready[0] {
                while let Ok(Some(info)) = sigfd.read_signal() {
                    let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                        continue;
                    };
                    match sig {
                        Signal::SIGCHLD => {
                            if let Some(code) = reap(pid) {
                                relay.drain();
                                return Ok(code);
                            }
                        }
                        Signal::SIGWINCH => {
                            if let Some(m) = relay.master() {
                                copy_winsize(m);
                            }
                        }
                        other => {
                            let _ = nix::sys::signal::kill(pid, other);
                        }
                    }
                }
            }
        }
    }

    /// Gives the user's terminal back as it was.
    fn release_terminal(&mut self) {
        if let Some(saved) = self.saved_termios.take() {
            let _ = termios::tcsetattr(io::stdin(), termios::SetArg::TCSANOW, &saved);
        }
    }

    /// Removes the container, its cgroup and the session directory. Runs
    /// on every path out of the helper.
    fn cleanup(&mut self) {
        self.release_terminal();
        if let Some(mut egress) = self.egress.take() {
            egress.stop();
        }
        if let Some(mut slirp) = self.slirp.take() {
            slirp.stop();
        }
        cleanup_session(&self.cfg, self.container.take());
    }
}

/// Removes what a session left behind. Safe to call more than once, and
/// from the launcher when the helper itself was killed.
///
/// When the sandbox's init has exited, the kernel has killed everything
/// else in its pid namespace, and what remains is the cgroup, libcontainer's
/// state directory and the session directory: removing those directly
/// costs a few syscalls, where the runtime's generic delete re-reads the
/// mount table once per controller. Anything unexpected (a cgroup that
/// stays busy, state that cannot be removed) falls back to that delete.
pub fn cleanup_session(cfg: &HelperConfig, container: Option<Container>) {
    if cfg.image_rootfs.is_some() {
        // Removing the session directory through a mounted overlay would
        // write a whiteout for every file of the image.
        let _ = nix::mount::umount2(&cfg.bundle.join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
    }
    let state = cfg.state_root.join(&cfg.id);
    let container_gone = container
        .as_ref()
        .and_then(|c| c.pid())
        .is_none_or(|pid| nix::sys::signal::kill(pid, None).is_err());
    let fast = container_gone
        && match cgroup::detect() {
            Ok(h) => {
                matches!(cfg.cgroup, CgroupMode::Hidden { .. })
                    || cgroup::remove_waiting(&h, cfg.cgroup.path())
            }
            Err(_) => false,
        }
        && (fs::remove_dir_all(&state).is_ok() || !state.exists());
    if !fast {
        let container = container.or_else(|| Container::load(state.clone()).ok());
        if let Some(mut c) = container {
            let _ = c.delete(true);
        }
        if !matches!(cfg.cgroup, CgroupMode::Hidden { .. })
            && let Ok(h) = cgroup::detect()
        {
            cgroup::remove(&h, cfg.cgroup.path());
        }
        let _ = fs::remove_dir_all(&state);
    }
    let _ = fs::remove_dir_all(&cfg.session_dir);
}

/// Checks, from the sandbox's own mount table, that every secret the plan
/// masks is covered by a mount. The runtime skips a masked path it cannot
/// find, so a planned mask without a mount is an error whether the path is
/// there (the mask did not take) or not (it moved since the scan).
fn verify_masks(pid: i32, masked: &[PathBuf]) -> Result<(), NativeError> {
    verify_masks_of(&pid.to_string(), masked)
}

/// [`verify_masks`] for the process `/proc/<proc>` names (`self` from
/// inside the sandbox: the Docker backend's init checks its own mounts).
pub fn verify_masks_of(proc: &str, masked: &[PathBuf]) -> Result<(), NativeError> {
    if masked.is_empty() {
        return Ok(());
    }
    let pid = proc;
    let text = fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .ctx("cannot read the sandbox's mount table")?;
    let points: std::collections::HashSet<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|p| {
            p.replace("\\040", " ")
                .replace("\\011", "\t")
                .replace("\\012", "\n")
                .replace("\\134", "\\")
        })
        .collect();
    for path in masked {
        let shown = path.to_string_lossy();
        if points.contains(shown.as_ref()) {
            continue;
        }
        let inside =
            Path::new(&format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(path));
        return Err(match fs::symlink_metadata(&inside) {
            Ok(_) => format!("{} is visible unmasked inside the sandbox", path.display()).into(),
            // The runtime skips a masked path it cannot find. A secret that
            // moved or vanished since the scan may be back by another name
            // or at another time: the plan no longer holds.
            Err(_) => format!(
                "{} was to be masked but is gone from the sandbox (moved or removed since the scan); start the session again",
                path.display()
            )
            .into(),
        });
    }
    Ok(())
}

/// Mounts the overlay root of an image session in a mount namespace of the
/// helper's own, so the host never sees it and it goes with the helper.
fn mount_image_root(lower: &Path, session: &Path, target: &Path) -> Result<(), NativeError> {
    use nix::mount::{MsFlags, mount};
    let fail =
        |what: &str, e: &dyn std::fmt::Display| format!("cannot mount the image ({what}): {e}");
    crate::private_mount_namespace(nix::sched::CloneFlags::empty())
        .map_err(|e| fail("private mount namespace", &e))?;
    let upper = session.join("upper");
    let work = session.join("work");
    for d in [&upper, &work] {
        fs::create_dir_all(d).map_err(|e| fail("overlay directories", &e))?;
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(|e| fail("overlay", &e).into())
}

/// Points the bundle at a cgroup known only once the helper runs.
fn set_cgroups_path(bundle: &Path, path: &str) -> Result<(), NativeError> {
    let file = bundle.join("config.json");
    let mut spec = oci_spec::runtime::Spec::load(&file).ctx("cannot read the bundle")?;
    if let Some(linux) = spec.linux_mut() {
        linux.set_cgroups_path(Some(PathBuf::from(path)));
    }
    spec.save(&file).ctx("cannot write the bundle")
}

/// True inside a user namespace that maps a single id (the helper's own).
fn in_child_userns() -> bool {
    fs::read_to_string("/proc/self/uid_map")
        .map(|m| m.split_whitespace().nth(2) == Some("1"))
        .unwrap_or(false)
}

fn reexec() -> Result<(), NativeError> {
    use std::os::unix::ffi::OsStrExt;
    let args: Vec<std::ffi::CString> = std::env::args_os()
        .map(|a| std::ffi::CString::new(a.as_bytes()).expect("argv has no NUL"))
        .collect();
    let exe = std::ffi::CString::new("/proc/self/exe").expect("literal");
    let err = nix::unistd::execv(&exe, &args).unwrap_err();
    Err(NativeError::check(format!(
        "cannot re-execute the helper: {err}"
    )))
}

/// Unshares a user namespace and maps the caller's host ids to 0 in it.
fn enter_own_userns(uid: u32, gid: u32) -> Result<(), NativeError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        let hint = crate::preflight::userns_hint()
            .map(|h| format!("\n  {h}"))
            .unwrap_or_default();
        format!("cannot create a user namespace ({what}): {e}{hint}")
    };
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).map_err(|e| fail("unshare", &e))?;
    // An unprivileged process may map only its own ids, and only after
    // giving up setgroups(2), which could otherwise drop a group that
    // denies it access to something.
    fs::write("/proc/self/setgroups", "deny").map_err(|e| fail("setgroups", &e))?;
    fs::write("/proc/self/uid_map", format!("0 {uid} 1")).map_err(|e| fail("uid_map", &e))?;
    fs::write("/proc/self/gid_map", format!("0 {gid} 1")).map_err(|e| fail("gid_map", &e))?;
    Ok(())
}

fn reap(pid: Pid) -> Option<i32> {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => return Some(code),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => return Some(128 + sig as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Copies the agent's terminal output to the user's terminal, without what
/// would read or write beyond the screen (clipboard, files, queries whose
/// answers would reach the user's shell): `sandbox::termfilter`.
fn copy_winsize(master: BorrowedFd<'_>) {
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ read and write a winsize we own.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) == 0
            || libc::ioctl(io::stdin().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) == 0
        {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

fn receive_master(listener: &UnixListener) -> Result<OwnedFd, NativeError> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let (stream, _) = listener.accept().ctx("no terminal from the sandbox")?;
    let mut name = [0u8; 64];
    let mut iov = [io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .ctx("cannot receive the sandbox's terminal")?;
    for cmsg in msg.cmsgs().map_err(|e| e.to_string())? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel just installed this descriptor for us.
            return Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        }
    }
    Err("the sandbox sent no terminal".into())
}

/// Turns libcontainer's error chain into one line that says which control
/// failed and, where the cause is a known host setting, how to change it.
fn explain_build_error(err: &libcontainer::error::LibcontainerError) -> String {
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let text = s.to_string();
        if !chain.contains(&text) {
            chain.push_str(": ");
            chain.push_str(&text);
        }
        source = s.source();
    }
    let debug = format!("{err:?}");
    let hint = crate::preflight::userns_hint().filter(|_| {
        debug.contains("WriteMapping") || debug.contains("EPERM") && debug.contains("user")
    });
    match hint {
        Some(h) => format!("cannot create the sandbox: {chain}\n  {h}"),
        None => format!("cannot create the sandbox: {chain}"),
    }
}
