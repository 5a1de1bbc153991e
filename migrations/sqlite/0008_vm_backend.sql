-- The microVM backend: sessions may say backend 'vm' (migrations/postgres/
-- 0008_vm_backend.sql widens the checks there). SQLite cannot change a
-- CHECK constraint in place, and the rebuild it needs must run with
-- foreign keys off, which no statement inside sqlx's migration transaction
-- can do: store.rs (`widen_sqlite_backends`) rebuilds the table right after
-- the migrations, under the same lock. This file keeps the two databases'
-- migration numbers in step.
SELECT 1;
