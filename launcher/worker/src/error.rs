//! What can go wrong in a worker; every message says what to do.

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Lifecycle(#[from] lifecycle::Error),
    /// A workspace the request may not use, or that does not exist.
    #[error("workspace refused: {0}")]
    Workspace(String),
    /// The repository could not be cloned.
    #[error("cannot clone the workspace: {0}")]
    Clone(String),
    /// The worker's own configuration is wrong.
    #[error("{0}")]
    Config(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl WorkerError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> WorkerError {
        WorkerError::Io {
            what: what.into(),
            source,
        }
    }
}
