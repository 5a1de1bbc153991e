-- The session store, SQLite flavour (migrations/postgres/0001_sessions.sql is
-- the same schema for Postgres). Applied migrations are never edited: add a
-- new file with the next number instead.

-- Effective policies, content-addressed: every session of a profile shares
-- one row. `sha256` is the hex sha256 of `policy`, the exact JSON text.
CREATE TABLE policies (
    sha256 TEXT NOT NULL PRIMARY KEY
        CHECK (length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
    policy TEXT NOT NULL
);

CREATE TABLE sessions (
    -- 32 lowercase hex digits.
    id            TEXT NOT NULL PRIMARY KEY
        CHECK (length(id) = 32 AND id NOT GLOB '*[^0-9a-f]*'),
    profile       TEXT NOT NULL,
    backend       TEXT NOT NULL CHECK (backend IN ('native', 'docker')),
    image         TEXT,
    workspace     TEXT NOT NULL,
    -- A JSON array of strings.
    command       TEXT NOT NULL,
    user_name     TEXT NOT NULL,
    uid           INTEGER NOT NULL,
    host          TEXT NOT NULL,
    -- Unix milliseconds.
    created_at    INTEGER NOT NULL,
    started_at    INTEGER,
    ended_at      INTEGER,
    status        TEXT NOT NULL
        CHECK (status IN ('created', 'running', 'exited', 'failed', 'stopped', 'lost')),
    exit_code     INTEGER,
    detached      BOOLEAN NOT NULL CHECK (detached IN (0, 1)),
    policy_sha256 TEXT NOT NULL REFERENCES policies (sha256),
    -- What the launcher needs to find a running session again.
    helper_pid    INTEGER,
    container_id  TEXT,
    log_path      TEXT,
    -- The head of the audit chain, updated in the transaction of every
    -- append: the number of events and the hash of the last one.
    events_count  INTEGER NOT NULL CHECK (events_count >= 0),
    events_head   TEXT NOT NULL
);

-- `list`: newest first, one page; the default page shows only live sessions.
CREATE INDEX sessions_created ON sessions (created_at DESC, id DESC);
CREATE INDEX sessions_live ON sessions (created_at DESC, id DESC)
    WHERE status IN ('created', 'running');
-- `with_status` (reconciliation).
CREATE INDEX sessions_status ON sessions (status);

-- The audit log: one hash chain per session.
--   hash = hex(sha256(prev_hash || canonical JSON of
--          {actor, at, data, kind, seq, session}))
-- with the first prev_hash 64 zeros.
CREATE TABLE session_events (
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL CHECK (seq >= 1),
    at         INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    actor      TEXT,
    -- JSON, keys sorted, no whitespace.
    data       TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
