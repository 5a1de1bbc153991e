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

pub trait Backend {
    fn name(&self) -> &'static str;

    /// Checks, before anything is created, that every control in the spec
    /// can be applied here. Returns the first one that cannot.
    fn preflight(&self, spec: &SandboxSpec, opts: &RunOptions) -> Result<(), BackendError>;

    /// Runs the session in the foreground with the caller's stdio and
    /// returns how it ended. The sandbox is gone when this returns, whatever
    /// the outcome.
    fn run(&self, spec: &SandboxSpec, opts: &RunOptions) -> Result<ExitStatus, BackendError>;
}
