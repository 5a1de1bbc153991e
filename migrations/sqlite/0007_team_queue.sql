-- API token scopes (migrations/postgres/0007_team_queue.sql also holds the
-- team server's queue and workers, which coordinate through Postgres only).

-- What a token may do, within its user's role: read; run (start and stop
-- sessions); admin (everything the role allows). Tokens made before
-- scopes existed could do everything their user could, and still can.
ALTER TABLE api_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin'
    CHECK (scope IN ('read', 'run', 'admin'));
