//! The native backend's own errors: what failed, and the error underneath.
//! At the trait's edge they become a [`sandbox::BackendError`].

/// What went wrong inside the native backend (the helper, its checks, the
/// network setup, the cgroup read-back).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NativeError {
    /// A step failed; `what` says which, `source` why.
    #[error("{what}: {source}")]
    Step {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A check found the sandbox not as planned, or a step failed without
    /// an error of its own to carry; the message says what and why.
    #[error("{0}")]
    Check(String),
}

impl NativeError {
    pub fn check(message: impl Into<String>) -> NativeError {
        NativeError::Check(message.into())
    }
}

/// A message with no error underneath: a check that failed.
impl From<String> for NativeError {
    fn from(message: String) -> NativeError {
        NativeError::Check(message)
    }
}

impl From<&str> for NativeError {
    fn from(message: &str) -> NativeError {
        NativeError::Check(message.to_string())
    }
}

impl From<NativeError> for sandbox::BackendError {
    fn from(e: NativeError) -> sandbox::BackendError {
        sandbox::BackendError::Runtime(e.to_string())
    }
}

/// `.ctx("cannot do X")` on any result whose error is a real error type.
pub trait Context<T> {
    fn ctx(self, what: impl Into<String>) -> Result<T, NativeError>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for Result<T, E> {
    fn ctx(self, what: impl Into<String>) -> Result<T, NativeError> {
        self.map_err(|e| NativeError::Step {
            what: what.into(),
            source: Box::new(e),
        })
    }
}
