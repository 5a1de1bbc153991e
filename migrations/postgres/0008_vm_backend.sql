-- The microVM backend: sessions, workers and requests may say 'vm'. The
-- checks on `backend` are found by their definition (their names are
-- Postgres' own choice) and replaced.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.conrelid::regclass AS tbl, c.conname
        FROM pg_constraint c
        WHERE c.contype = 'c'
          AND c.conrelid IN ('sessions'::regclass, 'workers'::regclass, 'session_requests'::regclass)
          AND pg_get_constraintdef(c.oid) LIKE '%backend%'
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', r.tbl, r.conname);
    END LOOP;
END $$;

ALTER TABLE sessions ADD CONSTRAINT sessions_backend_check
    CHECK (backend IN ('native', 'docker', 'vm'));
ALTER TABLE workers ADD CONSTRAINT workers_backend_check
    CHECK (backend IN ('native', 'docker', 'vm'));
ALTER TABLE session_requests ADD CONSTRAINT session_requests_backend_check
    CHECK (backend IN ('native', 'docker', 'vm'));
