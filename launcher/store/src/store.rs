//! [`SessionStore`]: one API over a SQLite pool or a Postgres pool.
//!
//! Every query is written once, with `$N` placeholders (SQLite reads them
//! too), and `dispatch!` expands it for each driver, so each runs with
//! its own driver's types and prepared-statement cache.

use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Connection;
use sqlx::migrate::MigrateError;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx_sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tracing::{debug, info, warn};

use crate::chain::{self, Fields, GENESIS, StoredEvent};
use crate::migrations::Schema;
use crate::types::*;
use crate::url::{self, Target};
use crate::{EVENT_KINDS, MAX_CANDIDATES, StoreError};

/// The Postgres channel a notice of new events goes to: `<id> <kind>,…`.
pub const EVENTS_CHANNEL: &str = "agentctl_events";
/// The Postgres channel a notice of new output goes to: the session id.
pub const OUTPUT_CHANNEL: &str = "agentctl_output";

/// How long SQLite waits for another writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections per pool.
const POOL_SIZE: u32 = 8;
/// How long connecting to Postgres (or waiting for a free connection) may take.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of a write transaction that meets a conflict or a busy database.
const MAX_ATTEMPTS: u32 = 10;

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to the concrete pool, once per driver.
macro_rules! dispatch {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}

mod accounts;
mod output;
mod queue;
pub use accounts::check_user_name;

/// `SELECT <every session column> FROM <from> JOIN policies p ...`,
/// followed by the given clauses; `<from>` names `sessions` as `s`.
macro_rules! select_sessions {
    (from $from:literal $(, $rest:literal)* $(,)?) => {
        concat!(
            "SELECT s.id, s.profile, s.backend, s.image, s.workspace, s.command, s.user_name, \
             s.uid, s.host, s.created_at, s.started_at, s.ended_at, s.status, s.exit_code, \
             s.detached, p.policy, s.policy_sha256, s.helper_pid, s.container_id, s.log_path, \
             s.events_count, s.events_head, s.heartbeat_at \
             FROM ",
            $from,
            " JOIN policies p ON p.sha256 = s.policy_sha256 ",
            $($rest),*
        )
    };
    ($($rest:literal),* $(,)?) => {
        select_sessions!(from "sessions s", $($rest),*)
    };
}

/// `list`'s queries: one page, newest first, along an index in that order
/// (the partial index `sessions_live` for live sessions). Without
/// statistics SQLite would rather look live sessions up by status and sort
/// them, so its queries name the index.
const LIST_LIVE: &str = select_sessions!(
    "WHERE s.status IN ('created', 'running') ",
    "ORDER BY s.created_at DESC, s.id DESC LIMIT $1 OFFSET $2"
);
const LIST_LIVE_SQLITE: &str = select_sessions!(
    from "sessions s INDEXED BY sessions_live",
    "WHERE s.status IN ('created', 'running') ",
    "ORDER BY s.created_at DESC, s.id DESC LIMIT $1 OFFSET $2"
);
const LIST_ALL: &str = select_sessions!("ORDER BY s.created_at DESC, s.id DESC LIMIT $1 OFFSET $2");
const LIST_ALL_SQLITE: &str = select_sessions!(
    from "sessions s INDEXED BY sessions_created",
    "ORDER BY s.created_at DESC, s.id DESC LIMIT $1 OFFSET $2"
);
/// A parameter of a statement built from the conditions given.
enum Param {
    Text(String),
    Int(i64),
}

/// Every id with the prefix $1 sorts between it and the prefix followed
/// by "g" ($2), the character after "f": a range of the primary key.
const IDS_WITH_PREFIX: &str =
    "SELECT id FROM sessions WHERE id >= $1 AND id < $2 ORDER BY id LIMIT $3";

/// `find_events`'s query, each condition a parameter that may be NULL.
const FIND_EVENTS: &str = "SELECT session_id, seq, at, kind, actor, data, prev_hash, hash \
     FROM session_events \
     WHERE (CAST($1 AS TEXT) IS NULL OR session_id LIKE $1 ESCAPE '\\') \
     AND (CAST($2 AS TEXT) IS NULL OR actor = $2) \
     AND (CAST($3 AS TEXT) IS NULL OR kind = $3 \
          OR ($3 = 'refused' AND kind IN ('proxy_denied', 'policy_denied', 'egress_denied'))) \
     AND (CAST($4 AS BIGINT) IS NULL OR at >= $4) \
     AND (CAST($5 AS BIGINT) IS NULL OR at < $5) \
     AND (CAST($6 AS BIGINT) IS NULL OR at < $6 \
          OR (at = $6 AND (session_id < $7 OR (session_id = $7 AND seq < $8)))) \
     AND (CAST($10 AS TEXT) IS NULL \
          OR session_id IN (SELECT id FROM sessions WHERE user_name = $10)) \
     ORDER BY at DESC, session_id DESC, seq DESC LIMIT $9";

const SELECT_EVENTS: &str = "SELECT session_id, seq, at, kind, actor, data, prev_hash, hash \
     FROM session_events WHERE session_id = $1 ORDER BY seq";

/// How [`SessionStore::connect_with`] opens a store.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Connections in the pool; 8 by default. A process that does one
    /// thing at a time, like the CLI, needs one: a pool of more opens a
    /// second connection as soon as the first is busy being handed back.
    pub max_connections: u32,
    /// Bring the schema up to date first, as [`SessionStore::connect`] does. Only
    /// a process that has just done so for this very store may skip it.
    pub migrate: bool,
}

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            max_connections: POOL_SIZE,
            migrate: true,
        }
    }
}

/// The session store. Cheap to clone: the clones share one connection
/// pool.
#[derive(Clone)]
pub struct SessionStore {
    pool: Pool,
    kind: DbKind,
    /// The URL without its password, for messages.
    location: String,
    /// SQLite has one writer at a time: the writers of this process queue
    /// here instead of sleeping in SQLite's busy handler. Writers in other
    /// processes still meet in the busy handler.
    write_lock: Option<Arc<tokio::sync::Mutex<()>>>,
}

crate::row_struct! {
    struct SessionRow {
        id: String,
        profile: String,
        backend: String,
        image: Option<String>,
        workspace: String,
        command: String,
        user_name: String,
        uid: i64,
        host: String,
        created_at: i64,
        started_at: Option<i64>,
        ended_at: Option<i64>,
        status: String,
        exit_code: Option<i32>,
        detached: bool,
        policy: String,
        policy_sha256: String,
        helper_pid: Option<i64>,
        container_id: Option<String>,
        log_path: Option<String>,
        events_count: i64,
        events_head: String,
        heartbeat_at: Option<i64>,
    }
}

crate::row_struct! {
    struct SummaryRow {
        id: String,
        profile: String,
        backend: String,
        image: Option<String>,
        workspace: String,
        command: String,
        user_name: String,
        host: String,
        created_at: i64,
        started_at: Option<i64>,
        ended_at: Option<i64>,
        status: String,
        exit_code: Option<i32>,
        detached: bool,
        events_count: i64,
        heartbeat_at: Option<i64>,
    }
}

impl SummaryRow {
    fn into_summary(self) -> Result<SessionSummary, StoreError> {
        let corrupt = |field: &'static str, reason: String| StoreError::Corrupt {
            id: self.id.clone(),
            field,
            reason,
        };
        Ok(SessionSummary {
            backend: Backend::from_str(&self.backend)
                .map_err(|e| corrupt("backend", e.to_string()))?,
            status: Status::from_str(&self.status).map_err(|e| corrupt("status", e.to_string()))?,
            command: serde_json::from_str(&self.command)
                .map_err(|e| corrupt("command", e.to_string()))?,
            events_count: u64::try_from(self.events_count)
                .map_err(|e| corrupt("events_count", e.to_string()))?,
            id: self.id,
            profile: self.profile,
            image: self.image,
            workspace: self.workspace,
            user: self.user_name,
            host: self.host,
            created_at: self.created_at,
            started_at: self.started_at,
            ended_at: self.ended_at,
            exit_code: self.exit_code,
            detached: self.detached,
            heartbeat_at: self.heartbeat_at,
        })
    }
}

crate::row_struct! {
    struct EventRow {
        session_id: String,
        seq: i64,
        at: i64,
        kind: String,
        actor: Option<String>,
        data: String,
        prev_hash: String,
        hash: String,
    }
}

/// A store's schema against this agentctl's migrations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Migrations applied to the store.
    pub applied: Vec<i64>,
    /// Migrations that failed halfway (a store to repair).
    pub failed: Vec<i64>,
    /// Migrations this agentctl has.
    pub known: Vec<i64>,
}

impl SchemaStatus {
    /// Migrations this agentctl would apply on its next open.
    pub fn pending(&self) -> Vec<i64> {
        self.known
            .iter()
            .filter(|v| !self.applied.contains(v))
            .copied()
            .collect()
    }

    /// Migrations of a newer agentctl, which this one refuses to open.
    pub fn unknown(&self) -> Vec<i64> {
        self.applied
            .iter()
            .filter(|v| !self.known.contains(v))
            .copied()
            .collect()
    }
}

impl SessionStore {
    /// Opens the store at `url` (`sqlite://PATH` or `postgres://...`) and
    /// brings its schema up to date.
    ///
    /// A SQLite store's directory and file are created as needed (the
    /// file with mode 0600), in WAL mode with foreign keys on.
    pub async fn connect(url: &str) -> Result<SessionStore, StoreError> {
        SessionStore::connect_with(url, &ConnectOptions::default()).await
    }

    /// [`SessionStore::connect`], as `o` says.
    pub async fn connect_with(url: &str, o: &ConnectOptions) -> Result<SessionStore, StoreError> {
        let location = url::redact(url);
        let size = o.max_connections.max(1);
        // SQLite's migrator takes no lock across processes: two opening a
        // new store at once both read migration 7 as pending, and the
        // second's ALTER TABLE fails on the first's column. The first
        // migrates; the others wait here, then find nothing to do.
        let mut _migrating = None;
        let store = match url::parse(url)? {
            Target::Sqlite(path) => {
                let pool = open_sqlite(&path, size).await?;
                if o.migrate {
                    // Beside the database, which open_sqlite made sure of.
                    let lock = path.with_file_name(format!(
                        ".{}.migrate-lock",
                        path.file_name().unwrap_or_default().to_string_lossy()
                    ));
                    // Waited for off this thread: another open in this
                    // process (on a one-thread runtime) may hold it.
                    let at = lock.clone();
                    let taken = tokio::task::spawn_blocking(move || {
                        fslock::lock(&at, fslock::Mode::Exclusive, || {})
                    })
                    .await
                    .map_err(|e| StoreError::Open {
                        path: lock.clone(),
                        source: std::io::Error::other(e),
                    })?;
                    _migrating = Some(taken.map_err(|source| StoreError::Open {
                        path: lock.clone(),
                        source,
                    })?);
                }
                SessionStore {
                    pool: Pool::Sqlite(pool),
                    kind: DbKind::Sqlite,
                    location,
                    write_lock: Some(Arc::new(tokio::sync::Mutex::new(()))),
                }
            }
            Target::Postgres(url) => {
                let pool = open_postgres(&url, size).await?;
                SessionStore {
                    pool: Pool::Postgres(pool),
                    kind: DbKind::Postgres,
                    location,
                    write_lock: None,
                }
            }
        };
        if o.migrate {
            store.migrate().await?;
        }
        info!(kind = %store.kind, location = %store.location, "session store open");
        Ok(store)
    }

    /// `sqlite://$XDG_DATA_HOME/agentctl/agentctl.db`, falling back to
    /// `~/.local/share/agentctl/agentctl.db`; for root
    /// `sqlite:///var/lib/agentctl/agentctl.db`.
    pub fn default_url() -> String {
        url::default_url()
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// The URL the store was opened with, its password replaced by `***`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The database's name and version, e.g. `SQLite 3.46.0` or
    /// `PostgreSQL 15.14`.
    pub async fn version(&self) -> Result<String, StoreError> {
        Ok(match &self.pool {
            Pool::Sqlite(p) => {
                let v: String = sqlx::query_scalar("SELECT sqlite_version()")
                    .fetch_one(p)
                    .await?;
                format!("SQLite {v}")
            }
            Pool::Postgres(p) => {
                let v: String = sqlx::query_scalar("SHOW server_version")
                    .fetch_one(p)
                    .await?;
                // "15.14 (Debian 15.14-0+deb12u1)": the number is enough.
                let v = v.split_whitespace().next().unwrap_or(&v).to_string();
                format!("PostgreSQL {v}")
            }
        })
    }

    /// How this store's schema stands against this agentctl's migrations,
    /// read without changing anything (`agentctl doctor`; open with
    /// `migrate: false`).
    pub async fn schema_status(&self) -> Result<SchemaStatus, StoreError> {
        const APPLIED: &str = "SELECT version, success FROM _sqlx_migrations ORDER BY version";
        type Applied = Result<Vec<(i64, bool)>, sqlx::Error>;
        let (rows, known): (Applied, Vec<i64>) = match &self.pool {
            Pool::Sqlite(p) => (
                sqlx::query_as(APPLIED).fetch_all(p).await,
                Schema::Sqlite.versions(),
            ),
            Pool::Postgres(p) => (
                sqlx::query_as(APPLIED).fetch_all(p).await,
                Schema::Postgres.versions(),
            ),
        };
        let rows = match rows {
            Ok(r) => r,
            // No table yet: a store nothing has been written to.
            Err(sqlx::Error::Database(e))
                if e.message().contains("no such table")
                    || e.code().as_deref() == Some("42P01") =>
            {
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        };
        Ok(SchemaStatus {
            applied: rows.iter().filter(|r| r.1).map(|r| r.0).collect(),
            failed: rows.iter().filter(|r| !r.1).map(|r| r.0).collect(),
            known,
        })
    }

    /// Copies what the SQLite write-ahead log holds into the database, as
    /// far as readers allow, without waiting for anyone (`PASSIVE`). A
    /// connection leaves the log in place when it closes (see
    /// `keep_wal_on_close`), so a launcher calls this where it costs
    /// nothing: while its sandbox is being built. The log then stays a
    /// few transactions long, and each process's first open reads little
    /// of it. Postgres: nothing to do.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if let Pool::Sqlite(p) = &self.pool {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(p)
                .await
                .map_err(StoreError::from)?;
        }
        Ok(())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        dispatch!(&self.pool, |p| p.close().await)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let schema = match &self.pool {
            Pool::Sqlite(_) => Schema::Sqlite,
            Pool::Postgres(_) => Schema::Postgres,
        };
        let migrator = schema
            .migrator(None)
            .await
            .map_err(|source| StoreError::Migrate {
                hint: "this agentctl's embedded migrations are inconsistent; report it".into(),
                source,
            })?;
        let result = match &self.pool {
            // Postgres' migrator holds an advisory lock while it works.
            Pool::Postgres(p) => migrator.run(p).await,
            // SQLite's does not: two processes opening a new store at once
            // can both try the first migration, and the loser fails. Its
            // next attempt finds the migration applied.
            Pool::Sqlite(p) => {
                let mut attempt = 1;
                let r = loop {
                    match migrator.run(p).await {
                        Err(MigrateError::Execute(_) | MigrateError::ExecuteMigration(..))
                            if attempt < 5 =>
                        {
                            attempt += 1;
                            tokio::time::sleep(backoff(attempt)).await;
                        }
                        r => break r,
                    }
                };
                match r {
                    Ok(()) => widen_sqlite_backends(p).await,
                    e => e,
                }
            }
        };
        result.map_err(|source| {
            let hint = match &source {
                MigrateError::VersionMissing(v) => format!(
                    "the store was written by a newer agentctl (migration {v} is unknown to this \
                     one); upgrade agentctl"
                ),
                MigrateError::VersionMismatch(v) => format!(
                    "migration {v} changed after it was applied to this store; restore its \
                     original file (migrations are append-only)"
                ),
                MigrateError::Dirty(v) => format!(
                    "migration {v} failed halfway earlier; repair the database by hand or \
                     start a new store"
                ),
                _ => "check that the database user may create tables and indexes".to_string(),
            };
            StoreError::Migrate { hint, source }
        })
    }

    /// Records a new session (status `created`) and its first event, which
    /// must be of kind `created`, in one transaction.
    pub async fn create_session(
        &self,
        s: &NewSession,
        event: NewEvent,
    ) -> Result<Session, StoreError> {
        check_id(&s.id)?;
        check_event_kind(&event.kind)?;
        if event.kind != "created" {
            return Err(StoreError::invalid(
                "first event kind",
                &event.kind,
                "a session's first event is \"created\"",
            ));
        }
        let sha = chain::sha256_hex(s.policy.as_bytes());
        if sha != s.policy_sha256 {
            return Err(StoreError::invalid(
                "policy_sha256",
                &s.policy_sha256,
                format!("it must be the sha256 of the policy text, which is {sha}"),
            ));
        }
        let created_at = s.created_at.unwrap_or_else(now_ms);
        let command = serde_json::to_string(&s.command).expect("strings serialize");
        let data = chain::canonical_json(&event.data);
        let hash = chain::event_hash(
            GENESIS,
            &Fields {
                session: &s.id,
                seq: 1,
                at: created_at,
                kind: &event.kind,
                actor: event.actor.as_deref(),
                data: &event.data,
            },
        );
        let (command, data, hash, event) = (&command, &data, &hash, &event);
        self.retrying(&s.id, move || async move {
            let _serial = self.serialize_writers().await;
            dispatch!(&self.pool, |p| {
                let mut tx = p.begin_with(self.begin_write()).await?;
                sqlx::query(
                    "INSERT INTO policies (sha256, policy) VALUES ($1, $2) \
                     ON CONFLICT (sha256) DO NOTHING",
                )
                .bind(&s.policy_sha256)
                .bind(&s.policy)
                .execute(&mut *tx)
                .await?;
                let inserted = sqlx::query(
                    "INSERT INTO sessions (id, profile, backend, image, workspace, command, \
                     user_name, uid, host, created_at, status, detached, policy_sha256, \
                     events_count, events_head) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 1, $14)",
                )
                .bind(&s.id)
                .bind(&s.profile)
                .bind(s.backend.as_str())
                .bind(&s.image)
                .bind(&s.workspace)
                .bind(command)
                .bind(&s.user)
                .bind(i64::from(s.uid))
                .bind(&s.host)
                .bind(created_at)
                .bind(Status::Created.as_str())
                .bind(s.detached)
                .bind(&s.policy_sha256)
                .bind(hash)
                .execute(&mut *tx)
                .await;
                if let Err(sqlx::Error::Database(e)) = &inserted
                    && e.is_unique_violation()
                {
                    return Err(StoreError::AlreadyExists { id: s.id.clone() });
                }
                inserted?;
                sqlx::query(
                    "INSERT INTO session_events \
                     (session_id, seq, at, kind, actor, data, prev_hash, hash) \
                     VALUES ($1, 1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&s.id)
                .bind(created_at)
                .bind(&event.kind)
                .bind(&event.actor)
                .bind(data)
                .bind(GENESIS)
                .bind(hash)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            });
            Ok(())
        })
        .await?;
        debug!(session = %s.id, profile = %s.profile, "session created");
        Ok(Session {
            id: s.id.clone(),
            profile: s.profile.clone(),
            backend: s.backend,
            image: s.image.clone(),
            workspace: s.workspace.clone(),
            command: s.command.clone(),
            user: s.user.clone(),
            uid: s.uid,
            host: s.host.clone(),
            created_at,
            started_at: None,
            ended_at: None,
            status: Status::Created,
            exit_code: None,
            detached: s.detached,
            policy: s.policy.clone(),
            policy_sha256: s.policy_sha256.clone(),
            helper_pid: None,
            container_id: None,
            log_path: None,
            events_count: 1,
            events_head: hash.clone(),
            heartbeat_at: None,
        })
    }

    /// Appends an event to session `id`'s audit log (exact id), chained to
    /// the previous one. See [`SessionStore::record`].
    pub async fn append_event(&self, id: &str, event: NewEvent) -> Result<Event, StoreError> {
        let mut events = self
            .record(id, vec![event], &SessionUpdate::default())
            .await?;
        Ok(events.pop().expect("one event in, one out"))
    }

    /// Sets the fields of `u` that are `Some` on session `id` (exact id).
    pub async fn update(&self, id: &str, u: &SessionUpdate) -> Result<(), StoreError> {
        self.record(id, Vec::new(), u).await?;
        Ok(())
    }

    /// Appends `events` to session `id`'s audit log (exact id), in order and
    /// chained, and applies `u`, all in one transaction: a session's end and
    /// its row change together or not at all, and a launcher pays for one
    /// commit (one sync to disk) rather than one per event.
    ///
    /// The transaction locks the row (SQLite: the database) before reading
    /// the count and head, so concurrent appends, from any number of
    /// processes, queue up; busy databases and conflicts are retried.
    pub async fn record(
        &self,
        id: &str,
        events: Vec<NewEvent>,
        u: &SessionUpdate,
    ) -> Result<Vec<Event>, StoreError> {
        Ok(self
            .record_if(id, &[], events, u)
            .await?
            .expect("no status expected, so never skipped"))
    }

    /// [`SessionStore::record`], but only while the session's status is one of
    /// `expect` (any status when `expect` is empty), checked inside the
    /// same transaction that writes: `None` when the status had moved on
    /// and nothing was written. Two processes judging the same session
    /// (a reconcile and the session's own supervisor) can therefore never
    /// both record its end, and a caller acts on its judgement (removing
    /// what is left of a session) only after it won.
    pub async fn record_if(
        &self,
        id: &str,
        expect: &[Status],
        events: Vec<NewEvent>,
        u: &SessionUpdate,
    ) -> Result<Option<Vec<Event>>, StoreError> {
        check_id(id)?;
        for e in &events {
            check_event_kind(&e.kind)?;
        }
        let texts: Vec<String> = events
            .iter()
            .map(|e| chain::canonical_json(&e.data))
            .collect();
        let changes_row = *u != SessionUpdate::default();
        let (events_ref, texts) = (&events, &texts);
        let written = self
            .retrying(id, move || async move {
                let _serial = self.serialize_writers().await;
                let r = dispatch!(&self.pool, |p| {
                    let mut tx = p.begin_with(self.begin_write()).await?;
                    // The head, locked: SQLite's write lock is held since
                    // BEGIN IMMEDIATE, Postgres locks the row (and, having
                    // waited for another appender, reads its new head).
                    let head: Option<(i64, String, String)> = sqlx::query_as(self.select_head())
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let Some((mut count, mut head, status)) = head else {
                        return Err(StoreError::NotFound { id: id.into() });
                    };
                    if !expect.is_empty() && !expect.iter().any(|e| e.as_str() == status) {
                        tx.rollback().await?;
                        return Ok(None);
                    }
                    let mut written = Vec::with_capacity(events_ref.len());
                    for (event, text) in events_ref.iter().zip(texts) {
                        let seq = count + 1;
                        let at = now_ms();
                        let hash = chain::event_hash(
                            &head,
                            &Fields {
                                session: id,
                                seq: seq as u64,
                                at,
                                kind: &event.kind,
                                actor: event.actor.as_deref(),
                                data: &event.data,
                            },
                        );
                        sqlx::query(
                            "INSERT INTO session_events \
                             (session_id, seq, at, kind, actor, data, prev_hash, hash) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        )
                        .bind(id)
                        .bind(seq)
                        .bind(at)
                        .bind(&event.kind)
                        .bind(&event.actor)
                        .bind(text)
                        .bind(&head)
                        .bind(&hash)
                        .execute(&mut *tx)
                        .await?;
                        let prev = std::mem::replace(&mut head, hash.clone());
                        written.push((seq as u64, at, prev, hash));
                        count = seq;
                    }
                    if !written.is_empty() && self.kind == DbKind::Postgres {
                        // Delivered at commit, to whoever listens (a
                        // session's supervisor waits for its stop this way).
                        let kinds: Vec<&str> = events_ref.iter().map(|e| e.kind.as_str()).collect();
                        sqlx::query("SELECT pg_notify($1, $2)")
                            .bind(EVENTS_CHANNEL)
                            .bind(format!("{id} {}", kinds.join(",")))
                            .execute(&mut *tx)
                            .await?;
                    }
                    if !written.is_empty() {
                        sqlx::query(
                            "UPDATE sessions SET events_count = $2, events_head = $3 \
                             WHERE id = $1",
                        )
                        .bind(id)
                        .bind(count)
                        .bind(&head)
                        .execute(&mut *tx)
                        .await?;
                    }
                    if changes_row {
                        sqlx::query(
                            "UPDATE sessions SET \
                             status = COALESCE($2, status), \
                             started_at = COALESCE($3, started_at), \
                             ended_at = COALESCE($4, ended_at), \
                             exit_code = COALESCE($5, exit_code), \
                             helper_pid = COALESCE($6, helper_pid), \
                             container_id = COALESCE($7, container_id), \
                             log_path = COALESCE($8, log_path) \
                             WHERE id = $1",
                        )
                        .bind(id)
                        .bind(u.status.map(Status::as_str))
                        .bind(u.started_at)
                        .bind(u.ended_at)
                        .bind(u.exit_code)
                        .bind(u.helper_pid.map(i64::from))
                        .bind(&u.container_id)
                        .bind(&u.log_path)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Some(written)
                });
                Ok(r)
            })
            .await?;
        let Some(written) = written else {
            debug!(session = %id, ?expect, "status moved on; nothing recorded");
            return Ok(None);
        };
        for (e, (seq, ..)) in events.iter().zip(&written) {
            tracing::trace!(session = %id, seq, kind = %e.kind, "event appended");
        }
        if changes_row {
            debug!(session = %id, status = ?u.status, "session updated");
        }
        Ok(Some(
            events
                .into_iter()
                .zip(written)
                .map(|(e, (seq, at, prev_hash, hash))| Event {
                    session: id.to_string(),
                    seq,
                    at,
                    kind: e.kind,
                    actor: e.actor,
                    data: e.data,
                    prev_hash,
                    hash,
                })
                .collect(),
        ))
    }

    /// The session whose id is `id_or_prefix`, or the only one whose id
    /// starts with it (as docker resolves ids).
    pub async fn get(&self, id_or_prefix: &str) -> Result<Session, StoreError> {
        check_prefix(id_or_prefix)?;
        if id_or_prefix.len() == 32 {
            return self.get_exact(id_or_prefix).await;
        }
        let upper = format!("{id_or_prefix}g");
        let mut ids: Vec<String> = dispatch!(&self.pool, |p| {
            sqlx::query_scalar(IDS_WITH_PREFIX)
                .bind(id_or_prefix)
                .bind(&upper)
                .bind(MAX_CANDIDATES as i64)
                .fetch_all(p)
                .await?
        });
        match ids.len() {
            0 => Err(StoreError::NotFound {
                id: id_or_prefix.into(),
            }),
            1 => self.get_exact(&ids.remove(0)).await,
            _ => Err(StoreError::Ambiguous {
                prefix: id_or_prefix.into(),
                candidates: ids,
            }),
        }
    }

    async fn get_exact(&self, id: &str) -> Result<Session, StoreError> {
        let row: Option<SessionRow> = dispatch!(&self.pool, |p| {
            sqlx::query_as(select_sessions!("WHERE s.id = $1"))
                .bind(id)
                .fetch_optional(p)
                .await?
        });
        row.ok_or_else(|| StoreError::NotFound { id: id.into() })?
            .into_session()
    }

    /// Session `id`'s status (exact id), and whether its audit log holds an
    /// event of `kind`: what recording a session's end needs to know, in one
    /// query rather than the whole row and log.
    pub async fn status_with_event(
        &self,
        id: &str,
        kind: &str,
    ) -> Result<(Status, bool), StoreError> {
        check_id(id)?;
        check_event_kind(kind)?;
        let row: Option<(String, bool)> = dispatch!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT s.status, EXISTS (SELECT 1 FROM session_events e \
                 WHERE e.session_id = s.id AND e.kind = $2) \
                 FROM sessions s WHERE s.id = $1",
            )
            .bind(id)
            .bind(kind)
            .fetch_optional(p)
            .await?
        });
        let (status, found) = row.ok_or_else(|| StoreError::NotFound { id: id.into() })?;
        let status = Status::from_str(&status).map_err(|e| StoreError::Corrupt {
            id: id.into(),
            field: "status",
            reason: e.to_string(),
        })?;
        Ok((status, found))
    }

    /// One page of sessions, newest first: only created and running ones
    /// unless `q.all`.
    /// Sessions matching `f`, newest first, one page (see [`SessionFilter`]).
    /// The statement names only the conditions given, so that the planner
    /// can walk `sessions_created` and stop at a page.
    pub async fn find(&self, f: &SessionFilter) -> Result<Vec<Session>, StoreError> {
        if filter_has_nul(f) {
            return Ok(Vec::new());
        }
        let (clauses, params) = filter_clauses(f);
        let sql = format!("{}{clauses}", select_sessions!(""));
        let rows: Vec<SessionRow> = dispatch!(&self.pool, |p| {
            let mut q = sqlx::query_as(&sql);
            for param in &params {
                q = match param {
                    Param::Text(t) => q.bind(t.clone()),
                    Param::Int(i) => q.bind(*i),
                };
            }
            q.fetch_all(p).await?
        });
        rows.into_iter().map(SessionRow::into_session).collect()
    }

    /// What [`find`](Self::find) finds, without the policies: a list's
    /// rows, read from the sessions table alone.
    pub async fn find_summaries(
        &self,
        f: &SessionFilter,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        if filter_has_nul(f) {
            return Ok(Vec::new());
        }
        let (clauses, params) = filter_clauses(f);
        let sql = format!(
            "SELECT s.id, s.profile, s.backend, s.image, s.workspace, s.command, s.user_name, \
             s.host, s.created_at, s.started_at, s.ended_at, s.status, s.exit_code, s.detached, \
             s.events_count, s.heartbeat_at FROM sessions s {clauses}"
        );
        let rows: Vec<SummaryRow> = dispatch!(&self.pool, |p| {
            let mut q = sqlx::query_as(&sql);
            for param in &params {
                q = match param {
                    Param::Text(t) => q.bind(t.clone()),
                    Param::Int(i) => q.bind(*i),
                };
            }
            q.fetch_all(p).await?
        });
        rows.into_iter().map(SummaryRow::into_summary).collect()
    }

    /// How many sessions are in `status`.
    pub async fn count_with_status(&self, status: Status) -> Result<u64, StoreError> {
        let n: i64 = dispatch!(&self.pool, |p| {
            sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE status = $1")
                .bind(status.as_str())
                .fetch_one(p)
                .await?
        });
        Ok(n as u64)
    }

    /// What needs attention, in one round trip: sessions running, failed
    /// and lost since `since`, stalled (live and silent since
    /// `stalled_before`), and actions refused since `since`; of `user`'s
    /// sessions, or of all.
    pub async fn attention(
        &self,
        since: i64,
        stalled_before: i64,
        user: Option<&str>,
    ) -> Result<Attention, StoreError> {
        // Two spellings rather than `$3 IS NULL OR …`, which would keep
        // the planner from the status index.
        let mine = if user.is_some() {
            " AND user_name = $3"
        } else {
            ""
        };
        let mine_events = if user.is_some() {
            " AND session_id IN (SELECT id FROM sessions WHERE user_name = $3)"
        } else {
            ""
        };
        let sql = format!(
            "SELECT \
             (SELECT COUNT(*) FROM sessions WHERE status = 'running'{mine}), \
             (SELECT COUNT(*) FROM sessions WHERE status = 'failed' AND ended_at >= $1{mine}), \
             (SELECT COUNT(*) FROM sessions WHERE status = 'lost' AND ended_at >= $1{mine}), \
             (SELECT COUNT(*) FROM sessions WHERE status IN ('created', 'running') \
              AND COALESCE(heartbeat_at, started_at, created_at) < $2{mine}), \
             (SELECT COUNT(*) FROM session_events \
              WHERE kind IN ('proxy_denied', 'policy_denied', 'egress_denied') AND at >= $1{mine_events})"
        );
        let (running, failed, lost, stalled, refused): (i64, i64, i64, i64, i64) =
            dispatch!(&self.pool, |p| {
                let mut q = sqlx::query_as(&sql).bind(since).bind(stalled_before);
                if let Some(u) = user {
                    q = q.bind(u);
                }
                q.fetch_one(p).await?
            });
        Ok(Attention {
            running: running as u64,
            failed: failed as u64,
            lost: lost as u64,
            stalled: stalled as u64,
            refused: refused as u64,
        })
    }

    /// How many actions were refused (`proxy_denied`, `policy_denied`) at
    /// or after `since` (unix ms), in `user`'s sessions or in all.
    pub async fn count_refused_since(
        &self,
        since: i64,
        user: Option<&str>,
    ) -> Result<u64, StoreError> {
        let n: i64 = dispatch!(&self.pool, |p| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM session_events \
                 WHERE kind IN ('proxy_denied', 'policy_denied', 'egress_denied') AND at >= $1 \
                 AND (CAST($2 AS TEXT) IS NULL \
                      OR session_id IN (SELECT id FROM sessions WHERE user_name = $2))",
            )
            .bind(since)
            .bind(user)
            .fetch_one(p)
            .await?
        });
        Ok(n as u64)
    }

    /// How many live sessions' supervisors last said they were alive
    /// before `before` (unix ms): stalled sessions.
    pub async fn count_stalled(&self, before: i64) -> Result<u64, StoreError> {
        let n: i64 = dispatch!(&self.pool, |p| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM sessions WHERE status IN ('created', 'running') \
                 AND COALESCE(heartbeat_at, started_at, created_at) < $1",
            )
            .bind(before)
            .fetch_one(p)
            .await?
        });
        Ok(n as u64)
    }

    /// How many sessions in `status` ended at or after `since` (unix ms).
    pub async fn count_ended_since(&self, status: Status, since: i64) -> Result<u64, StoreError> {
        let n: i64 = dispatch!(&self.pool, |p| {
            sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE status = $1 AND ended_at >= $2")
                .bind(status.as_str())
                .bind(since)
                .fetch_one(p)
                .await?
        });
        Ok(n as u64)
    }

    pub async fn list(&self, q: &ListQuery) -> Result<Vec<Session>, StoreError> {
        let sql = match (q.all, self.kind) {
            (false, DbKind::Sqlite) => LIST_LIVE_SQLITE,
            (false, DbKind::Postgres) => LIST_LIVE,
            (true, DbKind::Sqlite) => LIST_ALL_SQLITE,
            (true, DbKind::Postgres) => LIST_ALL,
        };
        let limit = i64::from(q.limit);
        let offset = i64::try_from(q.offset).unwrap_or(i64::MAX);
        let rows: Vec<SessionRow> = dispatch!(&self.pool, |p| {
            sqlx::query_as(sql)
                .bind(limit)
                .bind(offset)
                .fetch_all(p)
                .await?
        });
        rows.into_iter().map(SessionRow::into_session).collect()
    }

    /// The number of sessions in the store.
    /// How many sessions are in each status (statuses with none left out).
    pub async fn count_by_status(&self) -> Result<Vec<(Status, u64)>, StoreError> {
        let rows: Vec<(String, i64)> = dispatch!(&self.pool, |p| {
            sqlx::query_as("SELECT status, COUNT(*) FROM sessions GROUP BY status")
                .fetch_all(p)
                .await?
        });
        rows.into_iter()
            .map(|(s, n)| Ok((s.parse()?, n as u64)))
            .collect()
    }

    /// How many events of these kinds the store holds, over all sessions.
    pub async fn count_events(&self, kinds: &[&str]) -> Result<u64, StoreError> {
        let mut n = 0i64;
        for kind in kinds {
            let k: i64 = dispatch!(&self.pool, |p| {
                sqlx::query_scalar("SELECT COUNT(*) FROM session_events WHERE kind = $1")
                    .bind(*kind)
                    .fetch_one(p)
                    .await?
            });
            n += k;
        }
        Ok(n as u64)
    }

    /// Every profile sessions ran under: its name, how many sessions, and
    /// when the newest was created; most recently used first.
    /// `user` limits it to that user's sessions.
    pub async fn profiles_in_use(
        &self,
        user: Option<&str>,
    ) -> Result<Vec<(String, u64, i64)>, StoreError> {
        let rows: Vec<(String, i64, i64)> = dispatch!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT profile, COUNT(*), MAX(created_at) FROM sessions \
                 WHERE (CAST($1 AS TEXT) IS NULL OR user_name = $1) \
                 GROUP BY profile ORDER BY MAX(created_at) DESC, profile",
            )
            .bind(user)
            .fetch_all(p)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(p, n, at)| (p, n as u64, at))
            .collect())
    }

    pub async fn count(&self) -> Result<u64, StoreError> {
        let n: i64 = dispatch!(&self.pool, |p| {
            sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
                .fetch_one(p)
                .await?
        });
        Ok(n as u64)
    }

    /// Session `id`'s audit log (exact id), in order.
    /// Events across sessions matching `f`, newest first, one page.
    pub async fn find_events(&self, f: &EventFilter) -> Result<Vec<Event>, StoreError> {
        let nul = |t: &Option<String>| t.as_deref().is_some_and(|t| t.contains('\0'));
        if nul(&f.actor)
            || nul(&f.kind)
            || nul(&f.user)
            || f.before.as_ref().is_some_and(|b| b.1.contains('\0'))
        {
            // No text in the store holds a NUL (Postgres cannot store one).
            return Ok(Vec::new());
        }
        // A session prefix: hex digits only, so nothing for LIKE to read.
        let session = match &f.session {
            Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(format!("{}%", s.to_ascii_lowercase()))
            }
            Some(s) if !s.is_empty() => return Ok(Vec::new()),
            _ => None,
        };
        let (b_at, b_session, b_seq) = match &f.before {
            Some((at, s, seq)) => (Some(*at), Some(s.clone()), Some(*seq as i64)),
            None => (None, None, None),
        };
        let rows: Vec<EventRow> = dispatch!(&self.pool, |p| {
            sqlx::query_as(FIND_EVENTS)
                .bind(session.clone())
                .bind(f.actor.clone())
                .bind(f.kind.clone())
                .bind(f.since)
                .bind(f.until)
                .bind(b_at)
                .bind(b_session.clone())
                .bind(b_seq)
                .bind(i64::from(f.limit.max(1)))
                .bind(f.user.clone())
                .fetch_all(p)
                .await?
        });
        rows.into_iter().map(EventRow::into_event).collect()
    }

    pub async fn events(&self, id: &str) -> Result<Vec<Event>, StoreError> {
        check_id(id)?;
        let (exists, rows) = dispatch!(&self.pool, |p| {
            let mut tx = p.begin_with(self.begin_snapshot()).await?;
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT events_count FROM sessions WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let rows: Vec<EventRow> = sqlx::query_as(SELECT_EVENTS)
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            (exists.is_some(), rows)
        });
        if !exists {
            return Err(StoreError::NotFound { id: id.into() });
        }
        rows.into_iter().map(EventRow::into_event).collect()
    }

    /// Recomputes session `id`'s hash chain (exact id) from its stored
    /// events, and checks it against the count and head the session row
    /// records. Reports the first broken link.
    pub async fn verify(&self, id: &str) -> Result<Verification, StoreError> {
        check_id(id)?;
        let (head, rows) = dispatch!(&self.pool, |p| {
            // One snapshot for the row and the log, so that a concurrent
            // append is either wholly seen or not at all.
            let mut tx = p.begin_with(self.begin_snapshot()).await?;
            let head: Option<(i64, String)> =
                sqlx::query_as("SELECT events_count, events_head FROM sessions WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let rows: Vec<EventRow> = sqlx::query_as(SELECT_EVENTS)
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            (head, rows)
        });
        let Some((count, head)) = head else {
            return Err(StoreError::NotFound { id: id.into() });
        };
        let rows: Vec<StoredEvent> = rows.into_iter().map(EventRow::into_stored).collect();
        let v = chain::verify(id, count.max(0) as u64, &head, &rows);
        match &v.broken {
            None => debug!(session = %id, events = v.events, "audit log verified"),
            Some(b) => warn!(session = %id, seq = b.seq, problem = ?b.problem, "audit log broken"),
        }
        Ok(v)
    }

    /// Deletes session `id` (exact id) and its audit log.
    pub async fn remove(&self, id: &str) -> Result<(), StoreError> {
        check_id(id)?;
        let removed = self
            .retrying(id, move || async move {
                let _serial = self.serialize_writers().await;
                let r = dispatch!(&self.pool, |p| {
                    let mut tx = p.begin_with(self.begin_write()).await?;
                    sqlx::query("DELETE FROM session_events WHERE session_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    let n = sqlx::query("DELETE FROM sessions WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if n == 0 {
                        tx.rollback().await?;
                    } else {
                        tx.commit().await?;
                    }
                    n
                });
                Ok(r)
            })
            .await?;
        if removed == 0 {
            return Err(StoreError::NotFound { id: id.into() });
        }
        debug!(session = %id, "session removed");
        Ok(())
    }

    /// Every session in one of `statuses`, newest first (for
    /// reconciliation: which sessions claim to be running?).
    pub async fn with_status(&self, statuses: &[Status]) -> Result<Vec<Session>, StoreError> {
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=statuses.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "{}WHERE s.status IN ({}) ORDER BY s.created_at DESC, s.id DESC",
            select_sessions!(),
            placeholders.join(", ")
        );
        let rows: Vec<SessionRow> = dispatch!(&self.pool, |p| {
            let mut q = sqlx::query_as(&sql);
            for s in statuses {
                q = q.bind(s.as_str());
            }
            q.fetch_all(p).await?
        });
        rows.into_iter().map(SessionRow::into_session).collect()
    }

    /// The statement that opens a write transaction: SQLite takes its
    /// write lock at once (waiting for it in the busy handler) rather than
    /// failing on the upgrade from reader to writer.
    fn begin_write(&self) -> &'static str {
        match self.kind {
            DbKind::Sqlite => "BEGIN IMMEDIATE",
            DbKind::Postgres => "BEGIN",
        }
    }

    /// Reads a session's count and head inside a write transaction, locked
    /// until it ends.
    fn select_head(&self) -> &'static str {
        match self.kind {
            DbKind::Sqlite => {
                "SELECT events_count, events_head, status FROM sessions WHERE id = $1"
            }
            DbKind::Postgres => {
                "SELECT events_count, events_head, status FROM sessions WHERE id = $1 FOR UPDATE"
            }
        }
    }

    /// The statement that opens a read-only transaction with one snapshot
    /// for all its statements (SQLite's deferred transactions have one).
    fn begin_snapshot(&self) -> &'static str {
        match self.kind {
            DbKind::Sqlite => "BEGIN",
            DbKind::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        }
    }

    async fn serialize_writers(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.write_lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        }
    }

    /// Runs the transaction `f` until it succeeds, fails for good, or has
    /// met a busy database or a conflict [`MAX_ATTEMPTS`] times.
    async fn retrying<T, F, Fut>(&self, id: &str, mut f: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut attempt = 1;
        loop {
            match f().await {
                Err(e) if e.is_retryable() => {
                    if attempt >= MAX_ATTEMPTS {
                        return Err(StoreError::Busy {
                            id: id.into(),
                            attempts: attempt,
                        });
                    }
                    debug!(session = %id, attempt, code = ?db_code(&e), "retrying a write");
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                r => return r,
            }
        }
    }
}

fn db_code(e: &StoreError) -> Option<String> {
    match e {
        StoreError::Database(sqlx::Error::Database(db)) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// 2, 4, 8, ... up to 256 ms, plus up to half as much again at random so
/// that writers that collided do not collide again.
fn backoff(attempt: u32) -> Duration {
    let base = 1u64 << attempt.min(8);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let jitter = u64::from(nanos) % (base / 2 + 1);
    Duration::from_millis(base + jitter)
}

async fn open_sqlite(path: &Path, size: u32) -> Result<SqlitePool, StoreError> {
    let open_err = |source: std::io::Error| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                // "File exists" would not say which: name the file in the way.
                match dir.ancestors().find(|a| a.exists()) {
                    Some(a) if !a.is_dir() => open_err(std::io::Error::other(format!(
                        "{} is not a directory",
                        a.display()
                    ))),
                    _ => open_err(e),
                }
            })?;
    }
    // Created here so that it is private from the start; SQLite gives its
    // -wal and -shm files the same mode. `create_new` never opens an
    // existing database: closing a descriptor of a file would drop the
    // POSIX locks that SQLite connections of this process hold on it.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => debug!(path = %path.display(), "created a new session store"),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(open_err(e)),
    }
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .journal_mode(SqliteJournalMode::Wal)
        // Every commit reaches the disk: the audit log must survive a crash.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true);
    // Switching a new file to WAL takes an exclusive lock, and SQLite does
    // not wait for it in the busy handler (that could deadlock): when
    // several processes open a new store at once, the losers are told
    // "database is locked" at once. They try again.
    let mut attempt = 1;
    loop {
        let opened = SqlitePoolOptions::new()
            .max_connections(size)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(|conn, _| Box::pin(async move { keep_wal_on_close(conn).await }))
            .connect_with(opts.clone())
            .await;
        match opened {
            Ok(pool) => return Ok(pool),
            Err(e) if attempt < MAX_ATTEMPTS && crate::error::is_retryable(&e) => {
                attempt += 1;
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(sqlx::Error::Io(source)) => return Err(open_err(source)),
            Err(other) => return Err(open_err(std::io::Error::other(other))),
        }
    }
}

/// A connection that closes leaves the write-ahead log as it is, rather
/// than checkpointing it into the database and deleting it: a launcher
/// opens and closes the store twice per session, and a checkpoint on the
/// launch's path costs fsyncs and the log's re-creation. The launcher
/// checkpoints off its path instead ([`SessionStore::checkpoint`]), and
/// SQLite itself once the log passes `wal_autocheckpoint` pages. Nothing
/// is less durable: a commit is durable once it is in the log.
async fn keep_wal_on_close(conn: &mut sqlx_sqlite::SqliteConnection) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    // SAFETY: `db` is this connection's open handle, held locked for the
    // call; SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE takes an int and an optional
    // int* for the new setting, which we do not read.
    let rc = unsafe {
        libsqlite3_sys::sqlite3_db_config(
            db,
            libsqlite3_sys::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            1 as std::os::raw::c_int,
            std::ptr::null_mut::<std::os::raw::c_int>(),
        )
    };
    if rc != libsqlite3_sys::SQLITE_OK {
        return Err(sqlx::Error::Configuration(
            format!("sqlite3_db_config(NO_CKPT_ON_CLOSE) failed with code {rc}").into(),
        ));
    }
    Ok(())
}

async fn open_postgres(url: &str, size: u32) -> Result<PgPool, StoreError> {
    let opts = PgConnectOptions::from_str(url).map_err(|_| StoreError::UnsupportedUrl {
        url: url::redact(url),
    })?;
    let host = url::pg_host(&opts);
    // One connection first, for a quick and precise error: the pool would
    // retry a refused connection until its acquire timeout.
    let probe = tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&opts))
        .await
        .unwrap_or_else(|_| {
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", ACQUIRE_TIMEOUT.as_secs()),
            )))
        });
    match probe {
        Ok(conn) => {
            let _ = conn.close().await;
        }
        Err(source @ (sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut)) => {
            return Err(StoreError::Unreachable { host, source });
        }
        Err(source) => return Err(StoreError::Connect { host, source }),
    }
    Ok(PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(opts))
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A UTC time as `YYYY-MM-DD hh:mm:ss`, from unix milliseconds: how the
/// CLI and the dashboard show the store's times.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// This machine's host name, for [`NewSession::host`].
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_id(id: &str) -> Result<(), StoreError> {
    if id.len() == 32 && is_lower_hex(id) {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "session id",
            id,
            "a session id is 32 lowercase hex digits",
        ))
    }
}

fn check_prefix(prefix: &str) -> Result<(), StoreError> {
    if !prefix.is_empty() && prefix.len() <= 32 && is_lower_hex(prefix) {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "session id or prefix",
            prefix,
            "give 1 to 32 lowercase hex digits of a session id",
        ))
    }
}

/// A kind from [`EVENT_KINDS`], or `other:NAME`.
/// Whether a text of `f` holds a NUL: no session matches it (Postgres
/// cannot even compare one, and stores none), so nothing is asked.
fn filter_has_nul(f: &SessionFilter) -> bool {
    let nul = |t: &Option<String>| t.as_deref().is_some_and(|t| t.contains('\0'));
    nul(&f.user)
        || nul(&f.profile)
        || nul(&f.search)
        || f.before.as_ref().is_some_and(|b| b.1.contains('\0'))
}

/// `WHERE … ORDER BY … LIMIT …` for `f` on `sessions s`, newest first, and
/// its parameters.
fn filter_clauses(f: &SessionFilter) -> (String, Vec<Param>) {
    // LIKE's own characters in the search are matched literally.
    let escape = |t: &str| {
        t.to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    };
    let mut params: Vec<Param> = Vec::new();
    let mut put = |p: Param| {
        params.push(p);
        format!("${}", params.len())
    };
    let mut conds: Vec<String> = Vec::new();
    if let Some(st) = f.status {
        conds.push(format!(
            "s.status = {}",
            put(Param::Text(st.as_str().into()))
        ));
    }
    if let Some(u) = &f.user {
        conds.push(format!("s.user_name = {}", put(Param::Text(u.clone()))));
    }
    if let Some(pr) = &f.profile {
        conds.push(format!("s.profile = {}", put(Param::Text(pr.clone()))));
    }
    if let Some(q) = &f.search {
        let prefix = put(Param::Text(format!("{}%", escape(q))));
        let contains = put(Param::Text(format!("%{}%", escape(q))));
        conds.push(format!(
            "(s.id LIKE {prefix} ESCAPE '\\' OR lower(s.command) LIKE {contains} ESCAPE '\\' \
                 OR lower(s.workspace) LIKE {contains} ESCAPE '\\')"
        ));
    }
    if let Some(since) = f.live_or_ended_since {
        let p = put(Param::Int(since));
        conds.push(format!(
            "(s.status IN ('created', 'running') OR s.ended_at >= {p})"
        ));
    }
    if let Some(before) = f.stalled_before {
        let p = put(Param::Int(before));
        conds.push(format!(
            "(s.status IN ('created', 'running') \
                 AND COALESCE(s.heartbeat_at, s.started_at, s.created_at) < {p})"
        ));
    }
    if let Some((at, id)) = &f.before {
        let p_at = put(Param::Int(*at));
        let p_id = put(Param::Text(id.clone()));
        conds.push(format!(
            "(s.created_at < {p_at} OR (s.created_at = {p_at} AND s.id < {p_id}))"
        ));
    }
    let limit = put(Param::Int(i64::from(f.limit.max(1))));
    let clauses = format!(
        "{}ORDER BY s.created_at DESC, s.id DESC LIMIT {limit}",
        if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {} ", conds.join(" AND "))
        },
    );
    (clauses, params)
}

pub(crate) fn check_event_kind(kind: &str) -> Result<(), StoreError> {
    if EVENT_KINDS.contains(&kind) {
        return Ok(());
    }
    if let Some(name) = kind.strip_prefix("other:")
        && !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.'))
    {
        return Ok(());
    }
    Err(StoreError::invalid(
        "event kind",
        kind,
        format!(
            "use one of {}, or other:NAME (lowercase letters, digits, _ - .)",
            EVENT_KINDS.join(", ")
        ),
    ))
}

impl SessionRow {
    fn into_session(self) -> Result<Session, StoreError> {
        let corrupt = |field: &'static str, reason: String| StoreError::Corrupt {
            id: self.id.clone(),
            field,
            reason,
        };
        let backend =
            Backend::from_str(&self.backend).map_err(|e| corrupt("backend", e.to_string()))?;
        let status =
            Status::from_str(&self.status).map_err(|e| corrupt("status", e.to_string()))?;
        let command: Vec<String> =
            serde_json::from_str(&self.command).map_err(|e| corrupt("command", e.to_string()))?;
        let uid = u32::try_from(self.uid).map_err(|e| corrupt("uid", e.to_string()))?;
        let helper_pid = self
            .helper_pid
            .map(u32::try_from)
            .transpose()
            .map_err(|e| corrupt("helper_pid", e.to_string()))?;
        let events_count =
            u64::try_from(self.events_count).map_err(|e| corrupt("events_count", e.to_string()))?;
        Ok(Session {
            id: self.id,
            profile: self.profile,
            backend,
            image: self.image,
            workspace: self.workspace,
            command,
            user: self.user_name,
            uid,
            host: self.host,
            created_at: self.created_at,
            started_at: self.started_at,
            ended_at: self.ended_at,
            status,
            exit_code: self.exit_code,
            detached: self.detached,
            policy: self.policy,
            policy_sha256: self.policy_sha256,
            helper_pid,
            container_id: self.container_id,
            log_path: self.log_path,
            events_count,
            events_head: self.events_head,
            heartbeat_at: self.heartbeat_at,
        })
    }
}

impl EventRow {
    fn into_event(self) -> Result<Event, StoreError> {
        let data = serde_json::from_str(&self.data).map_err(|e| StoreError::Corrupt {
            id: self.session_id.clone(),
            field: "event data",
            reason: format!("event {}: {e}", self.seq),
        })?;
        Ok(Event {
            session: self.session_id,
            seq: self.seq.max(0) as u64,
            at: self.at,
            kind: self.kind,
            actor: self.actor,
            data,
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }

    fn into_stored(self) -> StoredEvent {
        StoredEvent {
            session: self.session_id,
            seq: self.seq.max(0) as u64,
            at: self.at,
            kind: self.kind,
            actor: self.actor,
            data: self.data,
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

/// Lets a SQLite store's sessions say backend `vm` (the microVM backend).
///
/// SQLite cannot change a CHECK constraint in place, so the table is
/// rebuilt as its ALTER TABLE documentation prescribes: from its own
/// definition with the one check widened, rows copied, the old table
/// dropped, the new one renamed, its indexes made again. The drop needs
/// foreign keys off (or it would cascade to every event, output and sample
/// that refers to `sessions` by name), and that pragma does nothing inside
/// a transaction, where sqlx's SQLite migrator runs every migration: so
/// this runs here, after the migrations, on one connection, under the
/// migration lock. The references are checked before it commits. A store
/// that already allows `vm` is left alone.
/// The rebuild itself, in one transaction: true when it committed, false
/// when the references did not hold (rolled back).
fn rebuild_sessions<'a>(
    conn: &'a mut sqlx_sqlite::SqliteConnection,
    create: &'a str,
    indexes: &'a [String],
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, sqlx::Error>> + Send + 'a>> {
    // Boxed: sqlx's executors in a plain async fn make every caller's
    // future fail the higher-ranked Send check at tokio::spawn.
    Box::pin(async move {
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let steps = [
            create,
            "INSERT INTO sessions_new SELECT * FROM sessions",
            "DROP TABLE sessions",
            "ALTER TABLE sessions_new RENAME TO sessions",
        ];
        for step in steps.into_iter().chain(indexes.iter().map(String::as_str)) {
            sqlx::query(step).execute(&mut *conn).await?;
        }
        let broken = sqlx::query("PRAGMA foreign_key_check")
            .fetch_all(&mut *conn)
            .await?;
        if broken.is_empty() {
            sqlx::query("COMMIT").execute(&mut *conn).await?;
            Ok(true)
        } else {
            sqlx::query("ROLLBACK").execute(&mut *conn).await?;
            Ok(false)
        }
    })
}

fn widen_sqlite_backends(
    pool: &sqlx_sqlite::SqlitePool,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), MigrateError>> + Send + '_>> {
    Box::pin(async move {
        const OLD: &str = "CHECK (backend IN ('native', 'docker'))";
        const NEW: &str = "CHECK (backend IN ('native', 'docker', 'vm'))";
        let mut conn = pool.acquire().await.map_err(MigrateError::Execute)?;
        let table: Option<String> = sqlx::query_scalar(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'sessions'",
        )
        .fetch_optional(&mut *conn)
        .await
        .map_err(MigrateError::Execute)?;
        let Some(table) = table.filter(|t| t.contains(OLD)) else {
            return Ok(());
        };
        let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT sql FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'sessions' AND sql IS NOT NULL",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(MigrateError::Execute)?;
        // SQLite keeps the name as written, quoted once a table was renamed.
        let Some(create) = table
            .strip_prefix("CREATE TABLE sessions")
            .or_else(|| table.strip_prefix("CREATE TABLE \"sessions\""))
            .map(|rest| format!("CREATE TABLE sessions_new{}", rest.replacen(OLD, NEW, 1)))
        else {
            return Err(MigrateError::Source(
                format!("the sessions table's definition is not one agentctl wrote: {table}")
                    .into(),
            ));
        };
        sqlx::query("PRAGMA foreign_keys = OFF")
            .execute(&mut *conn)
            .await
            .map_err(MigrateError::Execute)?;
        let rebuilt = rebuild_sessions(&mut conn, &create, &indexes).await;
        if rebuilt.is_err() {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        }
        let on = sqlx::query("PRAGMA foreign_keys = ON")
            .execute(&mut *conn)
            .await;
        match rebuilt {
        Ok(true) => on.map(drop).map_err(MigrateError::Execute),
        Ok(false) => Err(MigrateError::Source(
            "widening the sessions table for the vm backend would break references; nothing was changed"
                .into(),
        )),
        Err(e) => {
            // A connection whose foreign keys could not be turned back on
            // must not serve anyone.
            if on.is_err() {
                conn.detach();
            }
            Err(MigrateError::Execute(e))
        }
    }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan for `sql`, one line per step.
    async fn plan(store: &SessionStore, sql: &str, binds: &[&str]) -> String {
        let Pool::Sqlite(p) = &store.pool else {
            unreachable!()
        };
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(&explain);
        // Plans do not depend on the values' types: bind text throughout.
        for b in binds {
            q = q.bind(*b);
        }
        q.fetch_all(p)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.3)
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn sqlite_queries_follow_their_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = SessionStore::connect(&url).await.unwrap();

        let live = plan(&store, LIST_LIVE_SQLITE, &["50", "0"]).await;
        assert!(live.contains("USING INDEX sessions_live"), "{live}");
        let all = plan(&store, LIST_ALL_SQLITE, &["50", "0"]).await;
        assert!(all.contains("USING INDEX sessions_created"), "{all}");
        for p in [&live, &all] {
            // Walked in order: no sort, and the policy found by its key.
            assert!(!p.contains("TEMP B-TREE"), "{p}");
            assert!(!p.contains("SCAN p"), "{p}");
        }
        let prefix = plan(&store, IDS_WITH_PREFIX, &["ab", "abg", "10"]).await;
        assert!(prefix.contains("(id>? AND id<?)"), "{prefix}");
        let events = plan(&store, SELECT_EVENTS, &["ab"]).await;
        assert!(events.contains("(session_id=?)"), "{events}");
        assert!(!events.contains("TEMP B-TREE"), "{events}");
    }
}

#[cfg(test)]
mod utc_tests {
    #[test]
    fn dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(1_763_769_600_000), "2025-11-22 00:00:00");
        assert_eq!(super::utc(-1), "1969-12-31 23:59:59");
    }
}

/// Notices from the database (Postgres' LISTEN): new events, new output.
pub struct Listener {
    inner: sqlx::postgres::PgListener,
}

impl Listener {
    /// The next notice's payload. An error means the connection is gone:
    /// the caller falls back to reading the store on its own schedule.
    pub async fn recv(&mut self) -> Result<String, StoreError> {
        Ok(self.inner.recv().await?.payload().to_string())
    }
}

impl SessionStore {
    /// Listens on `channel` ([`EVENTS_CHANNEL`], [`OUTPUT_CHANNEL`]): a
    /// Postgres store's notices, delivered when the writer commits.
    /// `None` for SQLite, which has no notices: its readers poll.
    pub async fn listen(&self, channel: &str) -> Result<Option<Listener>, StoreError> {
        let Pool::Postgres(p) = &self.pool else {
            return Ok(None);
        };
        // A connection of its own: a listener holds one for as long as
        // it lives, and the store's pool may have only one.
        let own = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with((*p.connect_options()).clone())
            .await?;
        let mut inner = sqlx::postgres::PgListener::connect_with(&own).await?;
        inner.listen(channel).await?;
        Ok(Some(Listener { inner }))
    }
}
