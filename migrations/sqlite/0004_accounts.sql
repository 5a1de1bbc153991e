-- Dashboard accounts (migrations/postgres/0004_accounts.sql is the same
-- schema for Postgres): users with a role, their API tokens, their
-- browser logins, and the audit trail of what was done to them.

-- `password` is an Argon2id hash in PHC form; the store never sees a
-- password.
CREATE TABLE users (
    name       TEXT NOT NULL PRIMARY KEY,
    role       TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    password   TEXT NOT NULL,
    -- Unix milliseconds.
    created_at INTEGER NOT NULL,
    changed_at INTEGER NOT NULL
);

-- An API token is shown once; the store keeps the sha256 of its secret.
CREATE TABLE api_tokens (
    id            TEXT NOT NULL PRIMARY KEY,
    user_name     TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    label         TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE
        CHECK (length(secret_sha256) = 64 AND secret_sha256 NOT GLOB '*[^0-9a-f]*'),
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);
CREATE INDEX api_tokens_user ON api_tokens (user_name);

-- A browser's login: the cookie holds a secret, the store its sha256.
CREATE TABLE web_logins (
    secret_sha256 TEXT NOT NULL PRIMARY KEY
        CHECK (length(secret_sha256) = 64 AND secret_sha256 NOT GLOB '*[^0-9a-f]*'),
    user_name     TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX web_logins_expires ON web_logins (expires_at);

-- What was done to accounts and by whom: logins (and failed ones), users
-- added, changed and removed, tokens created and revoked.
CREATE TABLE account_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    kind    TEXT NOT NULL,
    subject TEXT,
    -- JSON.
    data    TEXT NOT NULL
);
CREATE INDEX account_events_at ON account_events (at DESC, id DESC);
