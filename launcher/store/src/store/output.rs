//! A session's output in chunks, its cgroup's samples and its supervisor's
//! heartbeat (migration 0005).
//!
//! Output is kept up to a cap per session: a chunk that takes the session
//! over it drops the oldest chunks, in the same transaction, and
//! `session_output_state` counts the bytes that went, so a reader can say
//! "N bytes dropped" where they were.

use super::{Pool, SessionStore};
use crate::StoreError;
use crate::types::{OutputChunk, OutputState, Sample};

/// A sample's at, cpu_usec, memory_bytes and pids.
type SampleRow = (i64, Option<i64>, Option<i64>, Option<i64>);

/// The most samples a session keeps: the oldest go first (at one every
/// five seconds, about seven hours).
const MAX_SAMPLES: i64 = 5000;

impl SessionStore {
    /// Appends a chunk of session `id`'s output written at `at`; keeps at
    /// most `cap` bytes (the newest). Returns the chunk's sequence number.
    pub async fn append_output(
        &self,
        id: &str,
        at: i64,
        data: &[u8],
        cap: u64,
    ) -> Result<u64, StoreError> {
        super::check_id(id)?;
        if data.is_empty() {
            return Err(StoreError::invalid("output chunk", "", "at least one byte"));
        }
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        let len = data.len() as i64;
        self.retrying(id, move || async move {
            let _serial = self.serialize_writers().await;
            let seq: i64 = dispatch!(&self.pool, |p| {
                let mut tx = p.begin_with(self.begin_write()).await?;
                let state: Option<(i64, i64, i64)> = sqlx::query_as(self.select_output_state())
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let (mut bytes, mut dropped, last) = state.unwrap_or((0, 0, 0));
                let seq = last + 1;
                sqlx::query(
                    "INSERT INTO session_output (session_id, seq, at, data) VALUES ($1, $2, $3, $4)",
                )
                .bind(id)
                .bind(seq)
                .bind(at)
                .bind(data)
                .execute(&mut *tx)
                .await?;
                bytes += len;
                // Over the cap: the oldest chunks go, one by one, but never
                // the one just written.
                while bytes > cap {
                    let oldest: Option<(i64, i64)> = sqlx::query_as(
                        "SELECT seq, CAST(length(data) AS BIGINT) FROM session_output \
                         WHERE session_id = $1 AND seq < $2 ORDER BY seq LIMIT 1",
                    )
                    .bind(id)
                    .bind(seq)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some((old, n)) = oldest else { break };
                    sqlx::query("DELETE FROM session_output WHERE session_id = $1 AND seq = $2")
                        .bind(id)
                        .bind(old)
                        .execute(&mut *tx)
                        .await?;
                    bytes -= n;
                    dropped += n;
                }
                sqlx::query(
                    "INSERT INTO session_output_state (session_id, bytes, dropped, last_seq) \
                     VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (session_id) DO UPDATE \
                     SET bytes = excluded.bytes, dropped = excluded.dropped, \
                         last_seq = excluded.last_seq",
                )
                .bind(id)
                .bind(bytes)
                .bind(dropped)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                if self.kind == crate::DbKind::Postgres {
                    sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(super::OUTPUT_CHANNEL)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                seq
            });
            Ok(seq as u64)
        })
        .await
    }

    /// Session `id`'s output chunks after `after` (a sequence number; 0 for
    /// the first), in order, until about `max_bytes` (at least one chunk).
    pub async fn output_after(
        &self,
        id: &str,
        after: u64,
        max_bytes: usize,
    ) -> Result<Vec<OutputChunk>, StoreError> {
        super::check_id(id)?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        // Chunks are at most what one append writes; a page of 64 keeps
        // each query small, and the loop stops at `max_bytes`.
        let mut out = Vec::new();
        let mut from = after;
        let mut total = 0usize;
        loop {
            let rows: Vec<(i64, i64, Vec<u8>)> = dispatch!(&self.pool, |p| {
                sqlx::query_as(
                    "SELECT seq, at, data FROM session_output \
                     WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT 64",
                )
                .bind(id)
                .bind(from)
                .fetch_all(p)
                .await?
            });
            let n = rows.len();
            for (seq, at, data) in rows {
                total += data.len();
                from = seq;
                out.push(OutputChunk {
                    seq: seq as u64,
                    at,
                    data,
                });
                if total >= max_bytes {
                    return Ok(out);
                }
            }
            if n < 64 {
                return Ok(out);
            }
        }
    }

    /// The end of session `id`'s output: its last chunks, in order, about
    /// `max_bytes` of them (at least one, at most 2,000 chunks).
    pub async fn output_tail(
        &self,
        id: &str,
        max_bytes: usize,
    ) -> Result<Vec<OutputChunk>, StoreError> {
        super::check_id(id)?;
        let mut out = Vec::new();
        let mut before = i64::MAX;
        let mut total = 0usize;
        'pages: for _ in 0..20 {
            let rows: Vec<(i64, i64, Vec<u8>)> = dispatch!(&self.pool, |p| {
                sqlx::query_as(
                    "SELECT seq, at, data FROM session_output \
                     WHERE session_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT 100",
                )
                .bind(id)
                .bind(before)
                .fetch_all(p)
                .await?
            });
            let n = rows.len();
            for (seq, at, data) in rows {
                total += data.len();
                before = seq;
                out.push(OutputChunk {
                    seq: seq as u64,
                    at,
                    data,
                });
                if total >= max_bytes {
                    break 'pages;
                }
            }
            if n < 100 {
                break;
            }
        }
        out.reverse();
        Ok(out)
    }

    /// How much of session `id`'s output is kept, how much was dropped,
    /// and the first and last chunk kept.
    pub async fn output_state(&self, id: &str) -> Result<OutputState, StoreError> {
        super::check_id(id)?;
        let row: Option<(i64, i64, i64, Option<i64>)> = dispatch!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT o.bytes, o.dropped, o.last_seq, \
                 (SELECT MIN(seq) FROM session_output WHERE session_id = $1) \
                 FROM session_output_state o WHERE o.session_id = $1",
            )
            .bind(id)
            .fetch_optional(p)
            .await?
        });
        Ok(match row {
            Some((bytes, dropped, last, first)) => OutputState {
                bytes: bytes as u64,
                dropped: dropped as u64,
                first_seq: first.unwrap_or(last + 1) as u64,
                last_seq: last as u64,
            },
            None => OutputState {
                first_seq: 1,
                ..OutputState::default()
            },
        })
    }

    /// The session's supervisor is alive at `at`, and its cgroup used
    /// this much (if it has one of its own).
    pub async fn heartbeat(
        &self,
        id: &str,
        at: i64,
        sample: Option<&Sample>,
    ) -> Result<(), StoreError> {
        super::check_id(id)?;
        let _serial = self.serialize_writers().await;
        dispatch!(&self.pool, |p| {
            let mut tx = p.begin_with(self.begin_write()).await?;
            sqlx::query("UPDATE sessions SET heartbeat_at = $2 WHERE id = $1")
                .bind(id)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            if let Some(s) = sample {
                sqlx::query(
                    "INSERT INTO session_samples (session_id, at, cpu_usec, memory_bytes, pids) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (session_id, at) DO NOTHING",
                )
                .bind(id)
                .bind(s.at)
                .bind(s.cpu_usec.map(|v| v as i64))
                .bind(s.memory_bytes.map(|v| v as i64))
                .bind(s.pids.map(|v| v as i64))
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "DELETE FROM session_samples WHERE session_id = $1 AND at < \
                     (SELECT at FROM session_samples WHERE session_id = $1 \
                      ORDER BY at DESC LIMIT 1 OFFSET $2)",
                )
                .bind(id)
                .bind(MAX_SAMPLES - 1)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Session `id`'s samples at or after `since`, oldest first.
    pub async fn samples(&self, id: &str, since: i64) -> Result<Vec<Sample>, StoreError> {
        super::check_id(id)?;
        let rows: Vec<SampleRow> = dispatch!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT at, cpu_usec, memory_bytes, pids FROM session_samples \
                     WHERE session_id = $1 AND at >= $2 ORDER BY at",
            )
            .bind(id)
            .bind(since)
            .fetch_all(p)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(at, cpu, mem, pids)| Sample {
                at,
                cpu_usec: cpu.map(|v| v as u64),
                memory_bytes: mem.map(|v| v as u64),
                pids: pids.map(|v| v as u64),
            })
            .collect())
    }

    fn select_output_state(&self) -> &'static str {
        match self.kind {
            crate::DbKind::Sqlite => {
                "SELECT bytes, dropped, last_seq FROM session_output_state WHERE session_id = $1"
            }
            crate::DbKind::Postgres => {
                "SELECT bytes, dropped, last_seq FROM session_output_state \
                 WHERE session_id = $1 FOR UPDATE"
            }
        }
    }
}
