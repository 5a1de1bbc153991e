//! The store's errors. Every message is lower-case and says what to do.

use std::path::PathBuf;

/// What went wrong in the session store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL names no database the store knows.
    #[error("unsupported store URL \"{url}\"; use sqlite://PATH or postgres://USER@HOST/DATABASE")]
    UnsupportedUrl {
        /// The URL, its password replaced by `***`.
        url: String,
    },

    /// The SQLite file or its directory cannot be created or opened.
    #[error(
        "cannot open the session store {}: {source}; check that its directory is writable, \
         or use another store URL",
        path.display()
    )]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// No database server answers at the URL's host.
    #[error(
        "cannot reach the session store database at {host}: {source}; check that the server \
         runs and that the host and port in the URL are right"
    )]
    Unreachable {
        /// `host:port`, or the unix socket directory.
        host: String,
        #[source]
        source: sqlx::Error,
    },

    /// The server answered but refused the connection (authentication, a
    /// missing database, TLS).
    #[error(
        "the session store database at {host} refused the connection: {source}; check the \
         user, password and database name in the URL"
    )]
    Connect {
        host: String,
        #[source]
        source: sqlx::Error,
    },

    /// The schema could not be brought up to date.
    #[error("cannot migrate the session store: {source}; {hint}")]
    Migrate {
        hint: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    /// No session has this id or prefix.
    #[error("no session \"{id}\"; check the id against the list of sessions")]
    NotFound { id: String },

    /// More than one session starts with this prefix.
    #[error(
        "session prefix \"{prefix}\" matches {} sessions ({}); give more of the id",
        candidates.len(),
        candidates.join(", ")
    )]
    Ambiguous {
        prefix: String,
        /// The matching ids, in order (at most [`crate::MAX_CANDIDATES`]).
        candidates: Vec<String>,
    },

    /// A session with this id exists already.
    #[error("a session \"{id}\" exists already; generate a new id")]
    AlreadyExists { id: String },

    /// A user of this name exists already.
    #[error(
        "a user \"{name}\" exists already; pick another name, or change theirs with `agentctl admin user passwd`"
    )]
    UserExists { name: String },

    /// No user has this name.
    #[error("no user \"{name}\"; `agentctl admin user ls` lists them")]
    NoSuchUser { name: String },

    /// No API token has this id.
    #[error("no API token \"{id}\"; `agentctl admin token ls` lists them")]
    NoSuchToken { id: String },

    /// A value the caller passed is malformed: an id, a prefix, a hash, an
    /// event kind.
    #[error("invalid {what} \"{value}\"; {expected}")]
    Invalid {
        what: &'static str,
        value: String,
        expected: String,
    },

    /// A row the store reads back makes no sense (edited by hand, or
    /// written by a newer agentctl).
    #[error(
        "session {id} has an unreadable {field} in the store: {reason}; the row was changed \
         outside agentctl, verify the session's audit log"
    )]
    Corrupt {
        id: String,
        field: &'static str,
        reason: String,
    },

    /// The database stayed busy or kept reporting conflicts.
    #[error(
        "session {id}: the database was still busy after {attempts} attempts; retry, and check \
         for a process holding a long transaction on the store"
    )]
    Busy { id: String, attempts: u32 },

    /// The operation exists only on a Postgres store.
    #[error(
        "{what} needs a Postgres session store (workers coordinate through it); use \
         --store postgres://USER@HOST/DATABASE, or `agentctl run -d` on one host"
    )]
    NeedsPostgres { what: &'static str },

    /// No session request has this id.
    #[error("no session request \"{id}\"; check the id against `agentctl ps`")]
    NoSuchRequest { id: String },

    /// Any other database error.
    #[error("session store database error: {0}; retry, or check the database server's log")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e)
    }
}

impl StoreError {
    pub(crate) fn invalid(what: &'static str, value: &str, expected: impl Into<String>) -> Self {
        StoreError::Invalid {
            what,
            value: value.to_string(),
            expected: expected.into(),
        }
    }

    /// Whether trying the same transaction again may succeed: SQLite's
    /// busy and locked results, Postgres' serialization failures and
    /// deadlocks, and a unique violation from a concurrent writer.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            StoreError::Database(e) => is_retryable(e),
            _ => false,
        }
    }
}

/// See [`StoreError::is_retryable`].
pub(crate) fn is_retryable(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    if db.is_unique_violation() {
        return true;
    }
    match db.code() {
        // Postgres: serialization_failure, deadlock_detected.
        Some(code) if code == "40001" || code == "40P01" => true,
        // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their
        // extended codes in the high bits.
        Some(code) => code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6)),
        None => false,
    }
}
