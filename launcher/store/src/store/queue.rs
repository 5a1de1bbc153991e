//! The team server's queue (migration 0007, Postgres only): session
//! requests, workers, claims.
//!
//! A claim is one statement that picks the oldest queued request the
//! worker can take with `FOR UPDATE SKIP LOCKED`, so that any number of
//! workers claim at once without waiting for each other or taking the same
//! request. The worker's own row is read `FOR SHARE` by a claim and
//! written by the reaper, so a worker declared gone can claim nothing
//! after the reaper moved its claims back to the queue.

use serde_json::json;
use sqlx::postgres::PgPool;

use super::{Pool, SessionStore};
use crate::StoreError;
use crate::queue::{
    Labels, NewRequest, NewWorker, QueueStats, REQUESTS_CHANNEL, Reaped, Request, RequestState,
    WORKERS_CHANNEL, Worker, WorkerState, WorkspaceSource,
};
use crate::types::{Backend, NewEvent, SessionUpdate, Status};

const REQUEST_COLUMNS: &str = "r.id, r.user_name, r.actor, r.profile, r.workspace_kind, \
     r.workspace, r.git_ref, r.command, r.image, r.backend, r.labels::text, r.state, \
     r.worker_id, r.attempts, r.created_at, r.claimed_at, r.started_at, r.finished_at, r.reason";

crate::row_struct! {
    struct RequestRow {
        id: String,
        user_name: String,
        actor: String,
        profile: String,
        workspace_kind: String,
        workspace: String,
        git_ref: Option<String>,
        command: String,
        image: Option<String>,
        backend: Option<String>,
        labels: String,
        state: String,
        worker_id: Option<String>,
        attempts: i32,
        created_at: i64,
        claimed_at: Option<i64>,
        started_at: Option<i64>,
        finished_at: Option<i64>,
        reason: Option<String>,
    }
}

fn corrupt(id: &str, field: &'static str, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        id: id.to_string(),
        field,
        reason: reason.to_string(),
    }
}

impl RequestRow {
    fn into_request(self) -> Result<Request, StoreError> {
        let id = self.id;
        let workspace = match self.workspace_kind.as_str() {
            "path" => WorkspaceSource::Path {
                path: self.workspace,
            },
            "git" => WorkspaceSource::Git {
                url: self.workspace,
                rev: self.git_ref,
            },
            other => return Err(corrupt(&id, "workspace_kind", other)),
        };
        let command: Vec<String> =
            serde_json::from_str(&self.command).map_err(|e| corrupt(&id, "command", e))?;
        let labels: Labels =
            serde_json::from_str(&self.labels).map_err(|e| corrupt(&id, "labels", e))?;
        let backend = match self.backend {
            Some(b) => Some(
                b.parse::<Backend>()
                    .map_err(|e| corrupt(&id, "backend", e))?,
            ),
            None => None,
        };
        let state = RequestState::parse(&self.state).map_err(|e| corrupt(&id, "state", e))?;
        Ok(Request {
            id,
            user: self.user_name,
            actor: self.actor,
            profile: self.profile,
            workspace,
            command,
            image: self.image,
            backend,
            labels,
            state,
            worker: self.worker_id,
            attempts: self.attempts,
            created_at: self.created_at,
            claimed_at: self.claimed_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            reason: self.reason,
        })
    }
}

crate::row_struct! {
    struct WorkerRow {
        id: String,
        name: String,
        host: String,
        backend: String,
        labels: String,
        capacity: i32,
        state: String,
        started_at: i64,
        heartbeat_at: i64,
        reason: Option<String>,
        claimed: i64,
        running: i64,
    }
}

impl WorkerRow {
    fn into_worker(self) -> Result<Worker, StoreError> {
        let id = self.id;
        Ok(Worker {
            backend: self
                .backend
                .parse()
                .map_err(|e| corrupt(&id, "backend", e))?,
            labels: serde_json::from_str(&self.labels).map_err(|e| corrupt(&id, "labels", e))?,
            state: WorkerState::parse(&self.state).map_err(|e| corrupt(&id, "state", e))?,
            name: self.name,
            host: self.host,
            capacity: self.capacity.max(1) as u32,
            started_at: self.started_at,
            heartbeat_at: self.heartbeat_at,
            reason: self.reason,
            claimed: self.claimed.max(0) as u64,
            running: self.running.max(0) as u64,
            id,
        })
    }
}

/// A notice on `channel`, delivered when `tx` commits.
async fn notify(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    channel: &str,
    payload: &str,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn check_hex_id(what: &'static str, id: &str) -> Result<(), StoreError> {
    if id.len() == 32 && super::is_lower_hex(id) {
        Ok(())
    } else {
        Err(StoreError::invalid(what, id, "32 lowercase hex digits"))
    }
}

impl SessionStore {
    fn pg(&self, what: &'static str) -> Result<&PgPool, StoreError> {
        match &self.pool {
            Pool::Postgres(p) => Ok(p),
            Pool::Sqlite(_) => Err(StoreError::NeedsPostgres { what }),
        }
    }

    /// Whether this store can hold a queue (Postgres).
    pub fn has_queue(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// Queues a request and wakes the workers.
    pub async fn enqueue(&self, r: &NewRequest) -> Result<(), StoreError> {
        let p = self.pg("a session request")?;
        check_hex_id("request id", &r.id)?;
        super::accounts::check_user_name(&r.user)?;
        let (kind, workspace, rev) = match &r.workspace {
            WorkspaceSource::Path { path } => ("path", path.as_str(), None),
            WorkspaceSource::Git { url, rev } => ("git", url.as_str(), rev.as_deref()),
        };
        let command = serde_json::to_string(&r.command).unwrap_or_else(|_| "[]".into());
        let labels = serde_json::to_string(&r.labels).unwrap_or_else(|_| "{}".into());
        let mut tx = p.begin().await?;
        let done = sqlx::query(
            "INSERT INTO session_requests (id, user_name, actor, profile, workspace_kind, \
             workspace, git_ref, command, image, backend, labels, state, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, 'queued', $12) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&r.id)
        .bind(&r.user)
        .bind(&r.actor)
        .bind(&r.profile)
        .bind(kind)
        .bind(workspace)
        .bind(rev)
        .bind(command)
        .bind(&r.image)
        .bind(r.backend.map(|b| b.as_str()))
        .bind(labels)
        .bind(r.created_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Err(StoreError::AlreadyExists { id: r.id.clone() });
        }
        notify(&mut tx, REQUESTS_CHANNEL, &r.id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Request `id`.
    pub async fn request(&self, id: &str) -> Result<Request, StoreError> {
        let p = self.pg("a session request")?;
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM session_requests r WHERE r.id = $1");
        let row: Option<RequestRow> = sqlx::query_as(&sql).bind(id).fetch_optional(p).await?;
        row.ok_or_else(|| StoreError::NoSuchRequest { id: id.into() })?
            .into_request()
    }

    /// Requests in `states` (all when empty), of one user or of all,
    /// oldest first, at most `limit`.
    pub async fn requests(
        &self,
        user: Option<&str>,
        states: &[RequestState],
        limit: u32,
    ) -> Result<Vec<Request>, StoreError> {
        let p = self.pg("the session queue")?;
        let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM session_requests r \
             WHERE (CAST($1 AS TEXT) IS NULL OR r.user_name = $1) \
             AND (cardinality($2::text[]) = 0 OR r.state = ANY($2)) \
             ORDER BY r.created_at, r.id LIMIT $3"
        );
        let rows: Vec<RequestRow> = sqlx::query_as(&sql)
            .bind(user)
            .bind(&states)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?;
        rows.into_iter().map(RequestRow::into_request).collect()
    }

    /// Withdraws request `id` if no worker took it yet; whether it did.
    pub async fn cancel_request(
        &self,
        id: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let p = self.pg("a session request")?;
        let n = sqlx::query(
            "UPDATE session_requests SET state = 'cancelled', finished_at = $2, reason = $3 \
             WHERE id = $1 AND state = 'queued'",
        )
        .bind(id)
        .bind(now)
        .bind(reason)
        .execute(p)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Deletes request `id` if it is over (not queued, claimed or started).
    pub async fn delete_request(&self, id: &str) -> Result<bool, StoreError> {
        let p = self.pg("a session request")?;
        let n = sqlx::query(
            "DELETE FROM session_requests WHERE id = $1 \
             AND state NOT IN ('queued', 'claimed', 'started')",
        )
        .bind(id)
        .execute(p)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Registers worker `w` as running (again, if it ran before): its
    /// labels always include `backend`.
    pub async fn register_worker(&self, w: &NewWorker, now: i64) -> Result<(), StoreError> {
        let p = self.pg("a worker")?;
        check_hex_id("worker id", &w.id)?;
        let mut labels = w.labels.clone();
        labels.insert("backend".into(), w.backend.as_str().into());
        let labels = serde_json::to_string(&labels).unwrap_or_else(|_| "{}".into());
        sqlx::query(
            "INSERT INTO workers (id, name, host, backend, labels, capacity, state, started_at, \
             heartbeat_at) VALUES ($1, $2, $3, $4, $5::jsonb, $6, 'running', $7, $7) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, host = excluded.host, \
             backend = excluded.backend, labels = excluded.labels, \
             capacity = excluded.capacity, state = 'running', started_at = excluded.started_at, \
             heartbeat_at = excluded.heartbeat_at, reason = NULL",
        )
        .bind(&w.id)
        .bind(&w.name)
        .bind(&w.host)
        .bind(w.backend.as_str())
        .bind(labels)
        .bind(i32::try_from(w.capacity.max(1)).unwrap_or(i32::MAX))
        .bind(now)
        .execute(p)
        .await?;
        Ok(())
    }

    /// Notes that worker `id` is alive; returns its state (`Gone` if the
    /// reaper declared it gone: it must stop its sessions and register
    /// again).
    pub async fn heartbeat_worker(&self, id: &str, now: i64) -> Result<WorkerState, StoreError> {
        let p = self.pg("a worker")?;
        let state: Option<(String,)> = sqlx::query_as(
            "UPDATE workers SET heartbeat_at = GREATEST(heartbeat_at, $2) \
             WHERE id = $1 AND state <> 'gone' RETURNING state",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(p)
        .await?;
        match state {
            Some((s,)) => WorkerState::parse(&s),
            None => Ok(WorkerState::Gone),
        }
    }

    /// Sets worker `id`'s state (draining, or gone when it exits) and
    /// tells it over [`WORKERS_CHANNEL`]. Draining a gone worker does
    /// nothing; returns whether the row changed.
    pub async fn set_worker_state(
        &self,
        id: &str,
        state: WorkerState,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let p = self.pg("a worker")?;
        let mut tx = p.begin().await?;
        let n = sqlx::query(
            "UPDATE workers SET state = $2, reason = COALESCE($3, reason) \
             WHERE id = $1 AND state <> 'gone'",
        )
        .bind(id)
        .bind(state.as_str())
        .bind(reason)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        notify(&mut tx, WORKERS_CHANNEL, id).await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Gives worker `id`'s claims not yet started back to the queue (a
    /// worker that restarted before the reaper did it); returns them.
    pub async fn release_claims(&self, id: &str, reason: &str) -> Result<Vec<String>, StoreError> {
        let p = self.pg("a worker")?;
        let mut tx = p.begin().await?;
        let back: Vec<(String,)> = sqlx::query_as(
            "UPDATE session_requests SET state = 'queued', worker_id = NULL, \
             claimed_at = NULL, reason = $2 \
             WHERE worker_id = $1 AND state = 'claimed' RETURNING id",
        )
        .bind(id)
        .bind(reason)
        .fetch_all(&mut *tx)
        .await?;
        for (r,) in &back {
            notify(&mut tx, REQUESTS_CHANNEL, r).await?;
        }
        tx.commit().await?;
        Ok(back.into_iter().map(|(r,)| r).collect())
    }

    /// Every worker with what it holds, newest heartbeat first.
    pub async fn workers(&self) -> Result<Vec<Worker>, StoreError> {
        let p = self.pg("the workers")?;
        let rows: Vec<WorkerRow> = sqlx::query_as(
            "SELECT w.id, w.name, w.host, w.backend, w.labels::text AS labels, w.capacity, \
             w.state, w.started_at, w.heartbeat_at, w.reason, \
             COUNT(r.id) FILTER (WHERE r.state = 'claimed') AS claimed, \
             COUNT(r.id) FILTER (WHERE r.state = 'started') AS running \
             FROM workers w LEFT JOIN session_requests r \
               ON r.worker_id = w.id AND r.state IN ('claimed', 'started') \
             GROUP BY w.id ORDER BY w.heartbeat_at DESC, w.id",
        )
        .fetch_all(p)
        .await?;
        rows.into_iter().map(WorkerRow::into_worker).collect()
    }

    /// Claims the oldest queued request worker `worker` can take (its
    /// labels and backend), if it is running; `None` when there is none.
    pub async fn claim_request(
        &self,
        worker: &str,
        now: i64,
    ) -> Result<Option<Request>, StoreError> {
        let p = self.pg("a claim")?;
        let sql = format!(
            "WITH w AS (SELECT id, backend, labels FROM workers \
                        WHERE id = $1 AND state = 'running' FOR SHARE), \
             c AS (SELECT q.id FROM session_requests q, w \
                   WHERE q.state = 'queued' AND q.labels <@ w.labels \
                   AND (q.backend IS NULL OR q.backend = w.backend) \
                   ORDER BY q.created_at, q.id LIMIT 1 FOR UPDATE OF q SKIP LOCKED) \
             UPDATE session_requests r SET state = 'claimed', worker_id = $1, claimed_at = $2, \
               attempts = r.attempts + 1 \
             FROM c WHERE r.id = c.id RETURNING {REQUEST_COLUMNS}"
        );
        let mut tx = p.begin().await?;
        // Walk the partial index of queued requests in order and stop at
        // the first one this worker can take: after a burst of requests
        // the statistics say the queue is small, and the planner would
        // rather read every queued row and sort them (5 ms at 10,000
        // instead of 0.1). For this transaction only.
        sqlx::raw_sql("SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off")
            .execute(&mut *tx)
            .await?;
        let row: Option<RequestRow> = sqlx::query_as(&sql)
            .bind(worker)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        let r = row.into_request()?;
        sqlx::query(
            "INSERT INTO request_claims (request_id, attempt, worker_id, at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&r.id)
        .bind(r.attempts)
        .bind(worker)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(r))
    }

    /// Marks request `id` started by `worker`, just before its session
    /// goes on record; false if the request is no longer this worker's
    /// claim (the reaper gave it back to the queue): then it must not run.
    pub async fn start_request(
        &self,
        id: &str,
        worker: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let p = self.pg("a session request")?;
        let n = sqlx::query(
            "UPDATE session_requests SET state = 'started', started_at = $3 \
             WHERE id = $1 AND worker_id = $2 AND state = 'claimed'",
        )
        .bind(id)
        .bind(worker)
        .bind(now)
        .execute(p)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Ends worker `worker`'s request `id`: `Done` once its session ended,
    /// `Failed` with the reason when it could not start. Only from
    /// `claimed` or `started`, and only the worker's own.
    pub async fn finish_request(
        &self,
        id: &str,
        worker: &str,
        state: RequestState,
        reason: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let p = self.pg("a session request")?;
        let n = sqlx::query(
            "UPDATE session_requests SET state = $3, finished_at = $4, \
             reason = COALESCE($5, reason) \
             WHERE id = $1 AND worker_id = $2 AND state IN ('claimed', 'started')",
        )
        .bind(id)
        .bind(worker)
        .bind(state.as_str())
        .bind(now)
        .bind(reason)
        .execute(p)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Declares gone every worker whose heartbeat is older than
    /// `stale_before`: its claimed requests go back to the queue, its
    /// started ones are lost, and their sessions, if still live, become
    /// `lost` with the reason. Safe to run from every worker at once.
    pub async fn reap_workers(
        &self,
        stale_before: i64,
        now: i64,
    ) -> Result<Vec<Reaped>, StoreError> {
        let p = self.pg("the workers")?;
        let mut tx = p.begin().await?;
        let stale: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT id, name, heartbeat_at FROM workers \
             WHERE state <> 'gone' AND heartbeat_at < $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(stale_before)
        .fetch_all(&mut *tx)
        .await?;
        let mut reaped = Vec::new();
        for (id, name, beat) in stale {
            let reason = format!(
                "worker {name} stopped heartbeating at {} ({} s before it was declared gone)",
                crate::utc(beat),
                (now - beat) / 1000
            );
            sqlx::query("UPDATE workers SET state = 'gone', reason = $2 WHERE id = $1")
                .bind(&id)
                .bind(&reason)
                .execute(&mut *tx)
                .await?;
            let requeued: Vec<(String,)> = sqlx::query_as(
                "UPDATE session_requests SET state = 'queued', worker_id = NULL, \
                 claimed_at = NULL, reason = $2 \
                 WHERE worker_id = $1 AND state = 'claimed' RETURNING id",
            )
            .bind(&id)
            .bind(format!("back in the queue: {reason}"))
            .fetch_all(&mut *tx)
            .await?;
            let lost: Vec<(String,)> = sqlx::query_as(
                "UPDATE session_requests SET state = 'lost', finished_at = $3, reason = $2 \
                 WHERE worker_id = $1 AND state = 'started' RETURNING id",
            )
            .bind(&id)
            .bind(&reason)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            for (r,) in &requeued {
                notify(&mut tx, REQUESTS_CHANNEL, r).await?;
            }
            notify(&mut tx, WORKERS_CHANNEL, &id).await?;
            reaped.push((
                reason,
                Reaped {
                    worker: id,
                    name,
                    requeued: requeued.into_iter().map(|(r,)| r).collect(),
                    lost: lost.into_iter().map(|(r,)| r).collect(),
                },
            ));
        }
        tx.commit().await?;
        // The sessions' own records, each only while still live: their
        // supervisors died with the worker, or wrote their end first.
        for (reason, r) in &reaped {
            for id in &r.lost {
                let event = NewEvent::new("lost")
                    .actor(format!("worker reaper ({})", crate::hostname()))
                    .data(json!({ "reason": reason, "worker": r.worker }));
                let update = SessionUpdate {
                    status: Some(Status::Lost),
                    ended_at: Some(now),
                    ..SessionUpdate::default()
                };
                match self
                    .record_if(
                        id,
                        &[Status::Created, Status::Running],
                        vec![event],
                        &update,
                    )
                    .await
                {
                    Ok(_) | Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(reaped.into_iter().map(|(_, r)| r).collect())
    }

    /// Counts of the queue and claim latencies over the last five minutes.
    pub async fn queue_stats(&self, now: i64) -> Result<QueueStats, StoreError> {
        let p = self.pg("the session queue")?;
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, COUNT(*) FROM session_requests \
             WHERE state IN ('queued', 'claimed', 'started') GROUP BY state",
        )
        .fetch_all(p)
        .await?;
        let mut stats = QueueStats::default();
        for (state, n) in counts {
            let n = n.max(0) as u64;
            match state.as_str() {
                "queued" => stats.queued = n,
                "claimed" => stats.claimed = n,
                "started" => stats.started = n,
                _ => {}
            }
        }
        let since = now - 300_000;
        let (c50, c99): (Option<f64>, Option<f64>) = sqlx::query_as(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY claimed_at - created_at), \
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY claimed_at - created_at) \
             FROM session_requests WHERE claimed_at >= $1",
        )
        .bind(since)
        .fetch_one(p)
        .await?;
        let (s50, s99): (Option<f64>, Option<f64>) = sqlx::query_as(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY started_at - created_at), \
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY started_at - created_at) \
             FROM session_requests WHERE started_at >= $1",
        )
        .bind(since)
        .fetch_one(p)
        .await?;
        stats.claim_p50_ms = c50;
        stats.claim_p99_ms = c99;
        stats.start_p50_ms = s50;
        stats.start_p99_ms = s99;
        Ok(stats)
    }

    /// Every claim ever made, oldest first: request, attempt, worker, at.
    pub async fn claims(&self) -> Result<Vec<(String, i32, String, i64)>, StoreError> {
        let p = self.pg("the session queue")?;
        Ok(sqlx::query_as(
            "SELECT request_id, attempt, worker_id, at FROM request_claims \
             ORDER BY at, request_id, attempt",
        )
        .fetch_all(p)
        .await?)
    }
}
