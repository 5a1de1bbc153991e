-- The team server (migrations/sqlite/0007_team_queue.sql has the token
-- scopes only: workers coordinate through Postgres).

-- What a token may do, within its user's role: read; run (start and stop
-- sessions); admin (everything the role allows). Tokens made before
-- scopes existed could do everything their user could, and still can.
ALTER TABLE api_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin'
    CHECK (scope IN ('read', 'run', 'admin'));

-- Launcher workers: one row per worker identity (kept in its data
-- directory), registered at start and heartbeating while it lives.
CREATE TABLE workers (
    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY CHECK (id ~ '^[0-9a-f]{32}$'),
    name         TEXT NOT NULL,
    host         TEXT NOT NULL,
    backend      TEXT NOT NULL CHECK (backend IN ('native', 'docker')),
    -- {"key": "value", ...}; `backend` is always one of them.
    labels       JSONB NOT NULL,
    capacity     INTEGER NOT NULL CHECK (capacity >= 1),
    state        TEXT NOT NULL CHECK (state IN ('running', 'draining', 'gone')),
    -- Unix milliseconds.
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    -- Why it is gone, when it is.
    reason       TEXT
);

-- Sessions asked for over the API, queued until a worker claims one. The
-- id becomes the session's id.
CREATE TABLE session_requests (
    id             TEXT COLLATE "C" NOT NULL PRIMARY KEY CHECK (id ~ '^[0-9a-f]{32}$'),
    -- The dashboard user the session runs for, and who asked (with how).
    user_name      TEXT NOT NULL,
    actor          TEXT NOT NULL,
    profile        TEXT NOT NULL,
    -- 'path': a path under the user's workspace root on the worker;
    -- 'git': a URL cloned into a fresh workspace on the worker.
    workspace_kind TEXT NOT NULL CHECK (workspace_kind IN ('path', 'git')),
    workspace      TEXT NOT NULL,
    git_ref        TEXT,
    -- A JSON array of strings.
    command        TEXT NOT NULL,
    image          TEXT,
    backend        TEXT CHECK (backend IN ('native', 'docker')),
    -- The labels a worker needs to take it: {"key": "value", ...}.
    labels         JSONB NOT NULL,
    state          TEXT NOT NULL
        CHECK (state IN ('queued', 'claimed', 'started', 'done', 'failed', 'lost', 'cancelled')),
    worker_id      TEXT COLLATE "C" REFERENCES workers (id),
    attempts       INTEGER NOT NULL DEFAULT 0,
    -- Unix milliseconds: asked, claimed (the latest claim), on record as
    -- a session, finished.
    created_at     BIGINT NOT NULL,
    claimed_at     BIGINT,
    started_at     BIGINT,
    finished_at    BIGINT,
    -- Why it failed, was requeued or was lost.
    reason         TEXT
);
-- Claims take the oldest queued request first.
CREATE INDEX session_requests_queued ON session_requests (created_at, id) WHERE state = 'queued';
-- A worker's claims, for the reaper and the queue's health.
CREATE INDEX session_requests_worker ON session_requests (worker_id, state)
    WHERE state IN ('claimed', 'started');
CREATE INDEX session_requests_user ON session_requests (user_name, created_at DESC);

-- Every claim, append-only: a request claimed twice shows here twice,
-- and only after the first worker was declared gone.
CREATE TABLE request_claims (
    request_id TEXT COLLATE "C" NOT NULL REFERENCES session_requests (id) ON DELETE CASCADE,
    attempt    INTEGER NOT NULL CHECK (attempt >= 1),
    worker_id  TEXT COLLATE "C" NOT NULL REFERENCES workers (id),
    at         BIGINT NOT NULL,
    PRIMARY KEY (request_id, attempt)
);
