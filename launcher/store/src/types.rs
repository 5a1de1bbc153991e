//! The values the store takes and returns. Plain data: the CLI prints them
//! as JSON.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};

use crate::StoreError;

/// Which database a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DbKind {
    Sqlite,
    Postgres,
}

impl fmt::Display for DbKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DbKind::Sqlite => "sqlite",
            DbKind::Postgres => "postgres",
        })
    }
}

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Recorded, not started yet.
    Created,
    Running,
    /// The agent exited by itself (any exit code).
    Exited,
    /// The session could not start or its supervisor failed.
    Failed,
    /// Stopped on request.
    Stopped,
    /// Its supervisor vanished without a word (found by reconciliation).
    Lost,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Created,
        Status::Running,
        Status::Exited,
        Status::Failed,
        Status::Stopped,
        Status::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
            Status::Failed => "failed",
            Status::Stopped => "stopped",
            Status::Lost => "lost",
        }
    }

    /// Created or running: what `list` shows without `all`.
    pub fn is_live(self) -> bool {
        matches!(self, Status::Created | Status::Running)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Status, StoreError> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                StoreError::invalid(
                    "status",
                    s,
                    "use created, running, exited, failed, stopped or lost",
                )
            })
    }
}

/// Which backend runs a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Native,
    Docker,
    /// A QEMU microVM with its own kernel.
    Vm,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Native => "native",
            Backend::Docker => "docker",
            Backend::Vm => "vm",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Backend, StoreError> {
        match s {
            "native" => Ok(Backend::Native),
            "docker" => Ok(Backend::Docker),
            "vm" => Ok(Backend::Vm),
            _ => Err(StoreError::invalid(
                "backend",
                s,
                "use native, docker or vm",
            )),
        }
    }
}

/// A session to record. It starts as [`Status::Created`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewSession {
    /// 32 lowercase hex digits.
    pub id: String,
    pub profile: String,
    pub backend: Backend,
    /// The OCI image, or `None` for the host's root filesystem.
    pub image: Option<String>,
    pub workspace: String,
    pub command: Vec<String>,
    /// Who started it: user name and uid.
    pub user: String,
    pub uid: u32,
    /// The host it runs on (see [`crate::hostname`]).
    pub host: String,
    /// Unix milliseconds; `None` for now.
    pub created_at: Option<i64>,
    /// Whether the session runs without a terminal attached.
    pub detached: bool,
    /// The effective policy, as JSON text.
    pub policy: String,
    /// The hex sha256 of `policy`, byte for byte.
    pub policy_sha256: String,
}

/// What the dashboard's attention strip counts (see
/// [`SessionStore::attention`](crate::SessionStore::attention)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Attention {
    pub running: u64,
    pub failed: u64,
    pub lost: u64,
    pub stalled: u64,
    pub refused: u64,
}

/// A session as a list shows it: its record without the policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionSummary {
    pub id: String,
    pub profile: String,
    pub backend: Backend,
    pub image: Option<String>,
    pub workspace: String,
    pub command: Vec<String>,
    pub user: String,
    pub host: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub status: Status,
    pub exit_code: Option<i32>,
    pub detached: bool,
    pub events_count: u64,
    pub heartbeat_at: Option<i64>,
}

/// A recorded session.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Session {
    pub id: String,
    pub profile: String,
    pub backend: Backend,
    pub image: Option<String>,
    pub workspace: String,
    pub command: Vec<String>,
    pub user: String,
    pub uid: u32,
    pub host: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub status: Status,
    pub exit_code: Option<i32>,
    pub detached: bool,
    /// The effective policy's JSON text (printed as JSON when it is JSON).
    #[serde(serialize_with = "as_json")]
    pub policy: String,
    pub policy_sha256: String,
    /// The process supervising the session (the native helper).
    pub helper_pid: Option<u32>,
    /// The container's id on the Docker Engine.
    pub container_id: Option<String>,
    /// Where a detached session's output goes.
    pub log_path: Option<String>,
    /// The audit log's length and the hash of its last event.
    pub events_count: u64,
    pub events_head: String,
    /// When the session's supervisor last said it was alive (unix ms).
    pub heartbeat_at: Option<i64>,
}

impl Session {
    /// The first 12 digits of the id, as `docker ps` shows them.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }
}

fn as_json<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => v.serialize(s),
        Err(_) => s.serialize_str(text),
    }
}

/// An event to append to a session's audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// One of [`EVENT_KINDS`](crate::EVENT_KINDS), or `other:NAME` with a
    /// NAME of lowercase letters, digits, `_`, `-` and `.`.
    pub kind: String,
    /// Who did it, e.g. `uid 1000 (alice)`; `None` for the system.
    pub actor: Option<String>,
    /// Anything; stored as JSON with sorted keys.
    pub data: serde_json::Value,
}

impl NewEvent {
    /// An event without an actor and with `{}` as data.
    pub fn new(kind: impl Into<String>) -> NewEvent {
        NewEvent {
            kind: kind.into(),
            actor: None,
            data: serde_json::Value::Object(Default::default()),
        }
    }

    pub fn actor(mut self, actor: impl Into<String>) -> NewEvent {
        self.actor = Some(actor.into());
        self
    }

    pub fn data(mut self, data: serde_json::Value) -> NewEvent {
        self.data = data;
        self
    }
}

/// One entry of a session's audit log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    pub session: String,
    /// 1, 2, 3, ... without gaps.
    pub seq: u64,
    /// Unix milliseconds.
    pub at: i64,
    pub kind: String,
    pub actor: Option<String>,
    pub data: serde_json::Value,
    /// The previous event's hash (64 zeros for the first).
    pub prev_hash: String,
    /// hex(sha256(prev_hash || canonical JSON of
    /// {actor, at, data, kind, seq, session})).
    pub hash: String,
}

/// Changes to a session's row; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionUpdate {
    pub status: Option<Status>,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub exit_code: Option<i32>,
    pub helper_pid: Option<u32>,
    pub container_id: Option<String>,
    pub log_path: Option<String>,
}

/// The sessions [`find`](crate::SessionStore::find) returns: newest first,
/// one page, each condition left out when `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionFilter {
    pub status: Option<Status>,
    pub user: Option<String>,
    pub profile: Option<String>,
    /// An id prefix, or text anywhere in the command or the workspace
    /// (case-insensitive).
    pub search: Option<String>,
    /// Live sessions, and those that ended at or after this time (unix ms).
    pub live_or_ended_since: Option<i64>,
    /// Live sessions whose supervisor last said it was alive before this
    /// time (unix ms; its start, or its creation, if it never did).
    pub stalled_before: Option<i64>,
    /// Keyset pagination: sessions older than this one (its `created_at`
    /// and id), from the last row of the previous page.
    pub before: Option<(i64, String)>,
    pub limit: u32,
}

/// The events [`find_events`](crate::SessionStore::find_events) returns,
/// across sessions: newest first, one page, each condition left out when
/// `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// A session id or a prefix of one.
    pub session: Option<String>,
    pub actor: Option<String>,
    /// An event kind; `refused` matches every refusal (`proxy_denied`,
    /// `policy_denied`).
    pub kind: Option<String>,
    /// Only events of sessions this user started.
    pub user: Option<String>,
    /// Unix ms, inclusive.
    pub since: Option<i64>,
    /// Unix ms, exclusive.
    pub until: Option<i64>,
    /// Keyset pagination: events older than this one (its `at`, session
    /// and seq), from the last row of the previous page.
    pub before: Option<(i64, String, u64)>,
    pub limit: u32,
}

/// The sessions `list` returns: newest first, one page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQuery {
    /// Every session; otherwise only created and running ones.
    pub all: bool,
    /// The page size ([`DEFAULT_PAGE`](crate::DEFAULT_PAGE) by default).
    pub limit: u32,
    /// Sessions to skip, newest first.
    pub offset: u64,
}

impl Default for ListQuery {
    fn default() -> ListQuery {
        ListQuery {
            all: false,
            limit: crate::DEFAULT_PAGE,
            offset: 0,
        }
    }
}

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub session: String,
    /// Whether the whole log is intact and matches the session's head.
    pub ok: bool,
    /// Events in the log.
    pub events: u64,
    /// What the session row records: the number of events and the hash
    /// of the last one.
    pub recorded_count: u64,
    pub recorded_head: String,
    /// The last seq up to which the chain is intact (0 if none).
    pub intact_through: u64,
    /// The first broken link, if any.
    pub broken: Option<BrokenLink>,
}

/// The first place where a session's audit log does not hold together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    /// The seq of the event at fault: the row that fails its check, or the
    /// seq that is missing.
    pub seq: u64,
    pub problem: Problem,
    /// One sentence: what is wrong and what it means.
    pub reason: String,
}

/// How a chain broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Problem {
    /// A row does not match its own hash: its content was changed.
    Edited,
    /// A seq is missing from the middle: an event was deleted.
    Deleted,
    /// A row is at another seq than it was written at, or does not link to
    /// the row before it.
    Reordered,
    /// The log ends before the count the session records: the last events
    /// were deleted.
    Truncated,
    /// The log goes on past the count the session records: events were
    /// added outside the store.
    Added,
    /// The chain holds but ends in another hash than the session records.
    HeadMismatch,
}

/// What a dashboard user may do. Each role can do what the one before it
/// can.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees their own sessions.
    Viewer,
    /// Also stops their own sessions.
    Operator,
    /// Sees and stops every session, deletes ended ones, manages users.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Role, StoreError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| StoreError::invalid("role", s, "use viewer, operator or admin"))
    }
}

/// What an API token may do, within its user's role. Each scope can do
/// what the one before it can.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Reads what its user may see.
    Read,
    /// Also starts and stops sessions.
    Run,
    /// Everything its user's role allows (managing users, for an admin).
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Run, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Run => "run",
            Scope::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Scope, StoreError> {
        Scope::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| StoreError::invalid("token scope", s, "use read, run or admin"))
    }
}

/// A dashboard user (never with their password hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// Unix milliseconds.
    pub created_at: i64,
    pub changed_at: i64,
}

/// An API token as the store keeps it: never its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Token {
    /// The public part, shown in lists and given to `revoke`.
    pub id: String,
    pub user: String,
    pub label: String,
    pub scope: Scope,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// An entry of the accounts' audit trail.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AccountEvent {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    /// `login`, `login_failed`, `logout`, `user_added`, `user_changed`,
    /// `user_removed`, `token_created`, `token_revoked`.
    pub kind: String,
    /// The user or token acted on.
    pub subject: Option<String>,
    pub data: serde_json::Value,
}

/// A chunk of a session's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutputChunk {
    pub seq: u64,
    /// Unix ms.
    pub at: i64,
    pub data: Vec<u8>,
}

/// How much of a session's output the store keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutputState {
    /// Bytes kept.
    pub bytes: u64,
    /// Bytes dropped, the oldest first, to stay within the cap.
    pub dropped: u64,
    /// The first chunk kept (`last_seq + 1` when none is).
    pub first_seq: u64,
    /// The last chunk written (0: none yet).
    pub last_seq: u64,
}

/// What a session's cgroup used at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Unix ms.
    pub at: i64,
    /// CPU time since the cgroup was made, in microseconds.
    pub cpu_usec: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
}
