//! What can go wrong in a session's life. Every message says what to do.

use sandbox::BackendError;
use store::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store cannot be opened at all.
    #[error(
        "cannot open the session store (choose another with --store URL, or --store none to keep no record)"
    )]
    OpenStore(#[source] StoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Profile(#[from] policy::ProfileError),
    #[error(transparent)]
    Plan(#[from] sandbox::PlanError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A request this state does not allow: the message says why and what
    /// to do instead.
    #[error("{0}")]
    Refused(String),
    /// The session's Docker proxy could not be given to the agent.
    #[error("{0}")]
    Proxy(String),
    /// One of the library's own threads died.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
