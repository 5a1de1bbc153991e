//! The team server's queue as plain values: session requests, workers,
//! and which worker can take which request (pure; the SQL is in
//! `store/queue.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::StoreError;
use crate::types::Backend;

/// The Postgres channel a notice goes to when a request is queued (or
/// returns to the queue): its id.
pub const REQUESTS_CHANNEL: &str = "agentctl_requests";
/// The Postgres channel a notice goes to when a worker is told to drain,
/// or is declared gone: its id.
pub const WORKERS_CHANNEL: &str = "agentctl_workers";

/// Labels: `key=value` pairs. A request names the labels it needs; a
/// worker takes it only if it has every one of them with the same value.
pub type Labels = BTreeMap<String, String>;

/// Where a requested session's workspace comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum WorkspaceSource {
    /// A path under the requester's workspace root on the worker: relative
    /// to it, or absolute and inside it.
    Path { path: String },
    /// A repository cloned into a fresh workspace on the worker, with the
    /// worker's own credentials.
    Git {
        url: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        rev: Option<String>,
    },
}

/// A request as the API records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRequest {
    /// 32 lowercase hex digits; the session gets the same id.
    pub id: String,
    /// The dashboard user the session runs for.
    pub user: String,
    /// Who asked, for the audit trail.
    pub actor: String,
    pub profile: String,
    pub workspace: WorkspaceSource,
    pub command: Vec<String>,
    pub image: Option<String>,
    pub backend: Option<Backend>,
    pub labels: Labels,
    pub created_at: i64,
}

/// Where a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    /// Waiting for a worker.
    Queued,
    /// A worker took it and is starting its session.
    Claimed,
    /// Its session is on record (the session says how it goes).
    Started,
    /// Its session ended.
    Done,
    /// The worker could not start it (`reason` says why).
    Failed,
    /// Its worker was declared gone while it was being started.
    Lost,
    /// Withdrawn before a worker took it.
    Cancelled,
}

impl RequestState {
    pub const ALL: [RequestState; 7] = [
        RequestState::Queued,
        RequestState::Claimed,
        RequestState::Started,
        RequestState::Done,
        RequestState::Failed,
        RequestState::Lost,
        RequestState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Queued => "queued",
            RequestState::Claimed => "claimed",
            RequestState::Started => "started",
            RequestState::Done => "done",
            RequestState::Failed => "failed",
            RequestState::Lost => "lost",
            RequestState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Result<RequestState, StoreError> {
        RequestState::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| StoreError::invalid("request state", s, "a state the store writes"))
    }
}

/// A request as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Request {
    pub id: String,
    pub user: String,
    pub actor: String,
    pub profile: String,
    pub workspace: WorkspaceSource,
    pub command: Vec<String>,
    pub image: Option<String>,
    pub backend: Option<Backend>,
    pub labels: Labels,
    pub state: RequestState,
    pub worker: Option<String>,
    pub attempts: i32,
    pub created_at: i64,
    pub claimed_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub reason: Option<String>,
}

/// What a worker says about itself when it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewWorker {
    /// 32 lowercase hex digits, kept in the worker's data directory.
    pub id: String,
    pub name: String,
    pub host: String,
    pub backend: Backend,
    /// Its labels; `backend` is added to them.
    pub labels: Labels,
    pub capacity: u32,
}

/// A worker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Takes work.
    Running,
    /// Takes no more work and exits when its sessions end.
    Draining,
    /// Exited, or declared gone when its heartbeat stopped.
    Gone,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Running => "running",
            WorkerState::Draining => "draining",
            WorkerState::Gone => "gone",
        }
    }

    pub fn parse(s: &str) -> Result<WorkerState, StoreError> {
        match s {
            "running" => Ok(WorkerState::Running),
            "draining" => Ok(WorkerState::Draining),
            "gone" => Ok(WorkerState::Gone),
            _ => Err(StoreError::invalid(
                "worker state",
                s,
                "running, draining or gone",
            )),
        }
    }
}

/// A worker as the store keeps it, with what it holds now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Worker {
    pub id: String,
    pub name: String,
    pub host: String,
    pub backend: Backend,
    pub labels: Labels,
    pub capacity: u32,
    pub state: WorkerState,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub reason: Option<String>,
    /// Requests it claimed and has not started yet.
    pub claimed: u64,
    /// Sessions it started that have not ended.
    pub running: u64,
}

impl Worker {
    /// Whether it has every label `wanted` names, with the same value.
    pub fn has_labels(&self, wanted: &Labels) -> bool {
        wanted.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }

    /// Whether it would take `r` now, or why not.
    pub fn can_take(&self, r: &Request) -> Result<(), String> {
        if self.state != WorkerState::Running {
            return Err(format!("worker {} is {}", self.name, self.state.as_str()));
        }
        if let Some(b) = r.backend
            && b != self.backend
        {
            return Err(format!("worker {} runs {}", self.name, self.backend));
        }
        if let Some((k, v)) = r
            .labels
            .iter()
            .find(|(k, v)| self.labels.get(*k) != Some(*v))
        {
            return Err(format!("worker {} lacks {k}={v}", self.name));
        }
        Ok(())
    }
}

/// Why no worker can take a queued request, or `None` when one can (it
/// waits for room). `fresh_since` is the oldest heartbeat that counts as
/// alive.
pub fn why_waiting(r: &Request, workers: &[Worker], fresh_since: i64) -> Option<String> {
    let alive: Vec<&Worker> = workers
        .iter()
        .filter(|w| w.state != WorkerState::Gone && w.heartbeat_at >= fresh_since)
        .collect();
    if alive.is_empty() {
        return Some("no worker is running; start one with `agentctl worker`".into());
    }
    let mut reasons = Vec::new();
    for w in alive {
        match w.can_take(r) {
            Ok(()) => return None,
            Err(why) => reasons.push(why),
        }
    }
    Some(format!("no worker can take it: {}", reasons.join("; ")))
}

/// The queue at a glance, for the dashboard and `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct QueueStats {
    pub queued: u64,
    pub claimed: u64,
    pub started: u64,
    /// Milliseconds from a request to its claim, over the claims of the
    /// last five minutes: median and 99th percentile.
    pub claim_p50_ms: Option<f64>,
    pub claim_p99_ms: Option<f64>,
    /// The same, from a request to its session on record.
    pub start_p50_ms: Option<f64>,
    pub start_p99_ms: Option<f64>,
}

/// What [`crate::SessionStore::reap_workers`] did to one worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reaped {
    pub worker: String,
    pub name: String,
    /// Requests it had claimed but not started: back in the queue.
    pub requeued: Vec<String>,
    /// Sessions it had started that were still live: now `lost`.
    pub lost: Vec<String>,
}

/// Parses `key=value`: keys and values of letters, digits, `.`, `-`,
/// `_` and `/`, at most 63 characters each.
pub fn parse_label(s: &str) -> Result<(String, String), StoreError> {
    let ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/'))
    };
    match s.split_once('=') {
        Some((k, v)) if ok(k) && ok(v) => Ok((k.to_string(), v.to_string())),
        _ => Err(StoreError::invalid(
            "label",
            s,
            "write key=value, each of letters, digits, '.', '-', '_' or '/' (at most 63)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(labels: &[(&str, &str)], backend: Backend) -> Worker {
        Worker {
            id: "0".repeat(32),
            name: "w1".into(),
            host: "h".into(),
            backend,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            capacity: 2,
            state: WorkerState::Running,
            started_at: 0,
            heartbeat_at: 100,
            reason: None,
            claimed: 0,
            running: 0,
        }
    }

    fn request(labels: &[(&str, &str)], backend: Option<Backend>) -> Request {
        Request {
            id: "1".repeat(32),
            user: "alice".into(),
            actor: "alice".into(),
            profile: "minimal".into(),
            workspace: WorkspaceSource::Path { path: "p".into() },
            command: vec!["true".into()],
            image: None,
            backend,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            state: RequestState::Queued,
            worker: None,
            attempts: 0,
            created_at: 0,
            claimed_at: None,
            started_at: None,
            finished_at: None,
            reason: None,
        }
    }

    #[test]
    fn labels_must_all_match() {
        let w = worker(&[("backend", "native"), ("gpu", "1")], Backend::Native);
        assert!(w.can_take(&request(&[("gpu", "1")], None)).is_ok());
        assert!(w.can_take(&request(&[], Some(Backend::Native))).is_ok());
        let e = w.can_take(&request(&[("gpu", "2")], None)).unwrap_err();
        assert!(e.contains("lacks gpu=2"), "{e}");
        let e = w
            .can_take(&request(&[], Some(Backend::Docker)))
            .unwrap_err();
        assert!(e.contains("runs native"), "{e}");
    }

    #[test]
    fn why_waiting_names_the_missing_label_or_the_missing_worker() {
        let r = request(&[("gpu", "1")], None);
        let w = worker(&[("backend", "native")], Backend::Native);
        assert!(
            why_waiting(&r, &[], 0)
                .unwrap()
                .contains("no worker is running")
        );
        let why = why_waiting(&r, std::slice::from_ref(&w), 0).unwrap();
        assert!(why.contains("lacks gpu=1"), "{why}");
        // A worker whose heartbeat is stale counts as not running.
        assert!(
            why_waiting(&r, std::slice::from_ref(&w), 101)
                .unwrap()
                .contains("no worker is running")
        );
        let g = worker(&[("gpu", "1")], Backend::Native);
        assert_eq!(why_waiting(&r, &[w, g], 0), None);
    }

    #[test]
    fn labels_parse_strictly() {
        assert_eq!(parse_label("gpu=1").unwrap(), ("gpu".into(), "1".into()));
        for bad in ["gpu", "=1", "gpu=", "g pu=1", "a=b=c", "k=v\n"] {
            assert!(parse_label(bad).is_err(), "{bad}");
        }
    }
}
