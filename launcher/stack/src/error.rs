use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// A file of the stack holds something it should not.
    #[error("{}: {message}", file.display())]
    Config { file: PathBuf, message: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A tool the stack needs is missing or failed.
    #[error("{0}")]
    Tool(String),
    #[error("{0}")]
    Engine(String),
    #[error(
        "port {port} on {address} ({key} in {}), which the {service} service publishes, is in use by another program; stop it, or set another port with {key}=PORT in that file and run agentctl up again",
        env.display()
    )]
    PortInUse {
        service: String,
        address: String,
        port: u16,
        key: String,
        env: PathBuf,
    },
    #[error("{0}")]
    Unhealthy(String),
}

impl StackError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> StackError {
        StackError::Io {
            what: what.into(),
            source,
        }
    }
}
