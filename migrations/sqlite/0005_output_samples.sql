-- A session's output, its resource samples and its supervisor's
-- heartbeat (migrations/postgres/0005_output_samples.sql is the same
-- schema for Postgres), so that any dashboard over the store shows them.

-- When the session's supervisor last said it was alive (unix ms): a live
-- session whose heartbeat stops is shown as stalled.
ALTER TABLE sessions ADD COLUMN heartbeat_at INTEGER;

-- The output in chunks, in order. The oldest chunks are dropped once a
-- session has more than its cap; session_output_state counts what went.
CREATE TABLE session_output (
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL CHECK (seq >= 1),
    at         INTEGER NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE session_output_state (
    session_id TEXT NOT NULL PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    -- Bytes kept, and bytes dropped (oldest first).
    bytes      INTEGER NOT NULL CHECK (bytes >= 0),
    dropped    INTEGER NOT NULL CHECK (dropped >= 0),
    last_seq   INTEGER NOT NULL CHECK (last_seq >= 0)
);

-- CPU, memory and pids of the session's cgroup, every few seconds.
CREATE TABLE session_samples (
    session_id   TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    at           INTEGER NOT NULL,
    -- CPU time used since the cgroup was made, in microseconds.
    cpu_usec     INTEGER,
    memory_bytes INTEGER,
    pids         INTEGER,
    PRIMARY KEY (session_id, at)
);
