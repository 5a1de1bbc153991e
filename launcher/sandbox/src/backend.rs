//! The interface every backend implements. A backend turns a
//! [`SandboxSpec`] into a running sandbox; it makes no policy decisions.

use crate::spec::SandboxSpec;

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The exit code a shell would report: the code, or 128 + signal.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// How the caller wants the session attached.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Give the agent a terminal. Chosen by the caller when its own stdin
    /// and stdout are terminals.
    pub tty: bool,
    /// Run without resource limits, when the host cannot apply them and the
    /// user said so explicitly.
    pub no_limits: bool,
    /// A foreground session also appends its output, every byte as the
    /// sandbox wrote it, to this file (made beforehand, mode 0600): the
    /// session's recorder copies it into the session store.
    pub output_copy: Option<std::path::PathBuf>,
}

/// Appends a session's output to [`RunOptions::output_copy`]. A copy that
/// cannot be written is given up with one warning: it is a record for the
/// dashboard, not a control, and the session goes on.
pub struct OutputCopy {
    file: Option<std::fs::File>,
}

impl OutputCopy {
    /// Opens `path` to append to (never through a symlink).
    pub fn open(path: Option<&std::path::Path>) -> OutputCopy {
        use std::os::unix::fs::OpenOptionsExt;
        let file = path.and_then(|p| {
            std::fs::OpenOptions::new()
                .append(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(p)
                .map_err(|e| {
                    tracing::warn!("the session's output is not recorded: {}: {e}", p.display())
                })
                .ok()
        });
        OutputCopy { file }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        use std::io::Write;
        if let Some(f) = &mut self.file
            && let Err(e) = f.write_all(bytes)
        {
            tracing::warn!("the session's output is no longer recorded: {e}");
            self.file = None;
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// A security control cannot be applied on this host. The session is
    /// refused rather than run without it.
    #[error("cannot apply {control}: {reason}\n  fix: {fix}")]
    Control {
        control: &'static str,
        reason: String,
        fix: String,
    },
    /// The command could not be started inside the sandbox.
    #[error("{message}")]
    Exec { message: String, code: i32 },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Runtime(String),
}

impl BackendError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> BackendError {
        BackendError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Told what happens during a foreground session, so the caller can keep
/// its record (the session store's audit log).
pub trait Observer {
    /// The backend has started every process it starts by a bare fork of
    /// the caller; the observer may start threads from here on (to open
    /// the session store while the sandbox is being built). Backends that
    /// never fork the caller may call it first thing, or not at all.
    fn forked(&self) {}
    /// The agent is running; `pid` is its sandbox's init on the host, if
    /// the backend knows it. Every process the backend starts by a bare
    /// fork of the caller has been started by then, so the observer may
    /// start threads from here on.
    fn started(&self, pid: Option<u32>);
    /// A signal was passed on to the agent.
    fn signal(&self, name: &str);
}

/// An observer that records nothing.
pub struct NoObserver;

impl Observer for NoObserver {
    fn started(&self, _pid: Option<u32>) {}
    fn signal(&self, _name: &str) {}
}

/// How to find a detached session again. Stored by the caller; given back
/// to the backend for `stop`, `logs`, `exec` and reconciliation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Handle {
    pub session: String,
    /// The native backend's supervising helper.
    pub helper_pid: Option<u32>,
    /// The Docker backend's container.
    pub container_id: Option<String>,
    /// Where a detached session's output goes.
    pub log_path: Option<std::path::PathBuf>,
}

/// What a backend can tell about a session it ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Its sandbox is there and running.
    Running,
    /// It ended, with this status, and nobody recorded it yet.
    Exited(ExitStatus),
    /// It is gone, and how it ended is unknown.
    Gone,
}

/// A sandbox with agentctl's marks that no session record claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orphan {
    pub session: String,
    pub what: String,
}

pub trait Backend {
    fn name(&self) -> &'static str;

    /// Checks, before anything is created, that every control in the spec
    /// can be applied here. Returns the first one that cannot.
    fn preflight(&self, spec: &SandboxSpec, opts: &RunOptions) -> Result<(), BackendError>;

    /// Runs the session in the foreground with the caller's stdio and
    /// returns how it ended. The sandbox is gone when this returns, whatever
    /// the outcome.
    fn run(
        &self,
        spec: &SandboxSpec,
        opts: &RunOptions,
        observer: &dyn Observer,
    ) -> Result<ExitStatus, BackendError>;

    /// Starts the session in the background and returns once it runs.
    /// `on_exit`, when given, is run (as a command) after the session ends
    /// and its sandbox is gone, with `AGENTCTL_EXIT_CODE` set; backends
    /// whose engine keeps the exit status may ignore it.
    fn start_detached(
        &self,
        spec: &SandboxSpec,
        opts: &RunOptions,
        on_exit: &[String],
    ) -> Result<Handle, BackendError>;

    /// Asks a session to stop (SIGTERM), then kills it after `timeout`.
    fn stop(&self, handle: &Handle, timeout: std::time::Duration) -> Result<(), BackendError>;

    /// Runs a command inside a running session with the caller's stdio.
    fn exec(
        &self,
        handle: &Handle,
        command: &[String],
        tty: bool,
    ) -> Result<ExitStatus, BackendError>;

    /// Copies a detached session's output to `out`; with `follow`, until
    /// the session ends.
    fn logs(
        &self,
        handle: &Handle,
        follow: bool,
        out: &mut dyn std::io::Write,
    ) -> Result<(), BackendError>;

    /// Whether the session's sandbox still exists.
    fn liveness(&self, handle: &Handle) -> Result<Liveness, BackendError>;

    /// The host pid of a running session's sandbox init, when the backend
    /// knows it (to sample its cgroup). It may be stale: the caller checks
    /// that the process's cgroup is the session's.
    fn sandbox_pid(&self, _handle: &Handle) -> Option<u32> {
        None
    }

    /// The session's end is on record: forget what the backend kept only
    /// to report it (the native backend's exit file). Engines that keep
    /// the exit status themselves do nothing.
    fn forget_exit(&self, _handle: &Handle) {}

    /// Removes whatever is left of a session's sandbox (a lost one).
    fn remove(&self, handle: &Handle) -> Result<(), BackendError>;

    /// Sandboxes of this backend that carry agentctl's marks but whose
    /// session is not in `known`.
    fn orphans(&self, known: &dyn Fn(&str) -> bool) -> Result<Vec<Orphan>, BackendError>;
}
