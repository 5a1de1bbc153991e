//! The session store: every session agentctl runs, and its audit log.
//!
//! One API over SQLite (the embedded default, one file per user) and
//! Postgres (a server a team shares), chosen by URL:
//!
//! - `sqlite://PATH`: a file, relative to the working directory or
//!   absolute (`sqlite:///var/lib/agentctl/agentctl.db`). Its directory and
//!   the file (mode 0600) are created as needed; WAL mode, foreign keys on,
//!   writers wait up to 5 s for each other.
//! - `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`.
//!
//! [`SessionStore::connect`] applies the schema's migrations (`migrations/` at the
//! workspace root, embedded at build time) every time it opens a store.
//!
//! A session's audit log is a hash chain: each event's hash covers the
//! previous event's hash and the event's canonical JSON (see [`chain`]),
//! and the session row keeps the number of events and the last hash,
//! updated in the transaction of every append. [`SessionStore::verify`]
//! recomputes the chain and names the first row that does not fit.
//!
//! The store takes plain values and knows nothing of sandboxes or
//! backends. It logs with `tracing`, never an event's data.

/// Declares a struct a query's rows decode into, by column name, for either
/// driver: what `#[derive(sqlx::FromRow)]` would write, without sqlx's
/// proc macro (which compiles a second copy of sqlx and both drivers for
/// the build host).
macro_rules! row_struct {
    ($(#[$meta:meta])* struct $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        struct $name {
            $($field: $ty),*
        }

        impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for $name
        where
            &'r str: sqlx::ColumnIndex<R>,
            $($ty: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>),*
        {
            fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
                Ok(Self {
                    $($field: row.try_get(stringify!($field))?),*
                })
            }
        }
    };
}
pub(crate) use row_struct;

pub mod chain;
mod error;
mod migrations;
pub mod queue;
mod store;
mod types;
mod url;

#[cfg(feature = "testing")]
pub mod testing;

pub use error::StoreError;
pub use store::{
    ConnectOptions, EVENTS_CHANNEL, Listener, OUTPUT_CHANNEL, SchemaStatus, SessionStore,
    check_user_name, hostname, now_ms, utc,
};
pub use types::{
    AccountEvent, Attention, Backend, BrokenLink, DbKind, Event, EventFilter, ListQuery, NewEvent,
    NewSession, OutputChunk, OutputState, Problem, Role, Sample, Scope, Session, SessionFilter,
    SessionSummary, SessionUpdate, Status, Token, User, Verification,
};

/// The page size of [`SessionStore::list`] unless the query says otherwise.
pub const DEFAULT_PAGE: u32 = 50;

/// The most output a session keeps in the store unless told otherwise:
/// the newest 16 MiB.
pub const DEFAULT_OUTPUT_CAP: u64 = 16 << 20;

/// The most ids a [`StoreError::Ambiguous`] lists.
pub const MAX_CANDIDATES: usize = 10;

/// The event kinds the store knows; anything else is spelled
/// `other:NAME`.
pub const EVENT_KINDS: &[&str] = &[
    // The session's life.
    "created",
    "started",
    "attached",
    "detached",
    "signal",
    "stop_requested",
    "exec",
    "exited",
    "failed",
    "stopped",
    "lost",
    // What the sandbox refused.
    "proxy_denied",
    "policy_denied",
    "egress_denied",
];

/// The database file of a `sqlite://` store URL; None for Postgres or a
/// URL that is not a store's.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    match url::parse(url) {
        Ok(url::Target::Sqlite(p)) => Some(p),
        _ => None,
    }
}

/// `url` with its password replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    url::redact(url)
}
