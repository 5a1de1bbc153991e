use std::path::PathBuf;

/// Why a session cannot be planned. Each variant carries the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    #[error("workspace {}: {message}; {fix}", path.display())]
    Workspace {
        path: PathBuf,
        message: String,
        fix: String,
    },
    #[error("{}: {message}; {fix}", path.display())]
    Mount {
        path: PathBuf,
        message: String,
        fix: String,
    },
    #[error("{}: {message}; {fix}", path.display())]
    Denied {
        path: PathBuf,
        message: String,
        fix: String,
    },
    #[error("{}: {message}; {fix}", path.display())]
    Scan {
        path: PathBuf,
        message: String,
        fix: String,
    },
    #[error("{message}; {fix}")]
    Policy { message: String, fix: String },
    #[error("{message}; {fix}")]
    Host { message: String, fix: String },
}
