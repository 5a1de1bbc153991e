//! `/queue`: the team server's queue at a glance (requests waiting and
//! why, workers with their heartbeat and capacity, claim latency) and the
//! form that asks for a session.

use askama::Template;
use askama_web::WebTemplate;
use axum::Extension;
use axum::extract::{Form, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use store::queue::{self, RequestState, WorkspaceSource};

use crate::AppState;
use crate::auth::{self, Principal};
use crate::error::WebError;
use crate::requests::{SessionAsk, WORKER_FRESH_MS, WorkspaceAsk, validate};
use crate::view::{Nav, when};

pub struct WorkerRow {
    pub name: String,
    pub host: String,
    pub backend: String,
    pub labels: String,
    pub state: String,
    pub capacity: u32,
    pub claimed: u64,
    pub running: u64,
    pub heartbeat: String,
    pub stale: bool,
}

pub struct RequestRow {
    pub id: String,
    pub short: String,
    pub state: String,
    pub user: String,
    pub profile: String,
    pub workspace: String,
    pub command: String,
    pub asked: String,
    pub worker: String,
    pub why: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "queue.html")]
pub struct QueuePage {
    pub nav: Nav,
    pub available: bool,
    pub may_run: bool,
    pub stats: queue::QueueStats,
    pub workers: Vec<WorkerRow>,
    pub requests: Vec<RequestRow>,
    pub claim: String,
    pub start: String,
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0} ms"))
        .unwrap_or_else(|| "-".into())
}

pub async fn page(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<QueuePage, WebError> {
    let mut page = QueuePage {
        nav: Nav::of(&who),
        available: st.store.has_queue(),
        may_run: who.may_run(),
        stats: queue::QueueStats::default(),
        workers: Vec::new(),
        requests: Vec::new(),
        claim: "-".into(),
        start: "-".into(),
    };
    if !page.available {
        return Ok(page);
    }
    let now = store::now_ms();
    let workers = st.store.workers().await?;
    let live = [
        RequestState::Queued,
        RequestState::Claimed,
        RequestState::Started,
        RequestState::Failed,
    ];
    let requests = st
        .store
        .requests(who.only_user().as_deref(), &live, 200)
        .await?;
    page.stats = st.store.queue_stats(now).await?;
    page.claim = format!(
        "{} / {}",
        ms(page.stats.claim_p50_ms),
        ms(page.stats.claim_p99_ms)
    );
    page.start = format!(
        "{} / {}",
        ms(page.stats.start_p50_ms),
        ms(page.stats.start_p99_ms)
    );
    let name_of = |id: &Option<String>| {
        id.as_ref()
            .and_then(|id| workers.iter().find(|w| &w.id == id))
            .map(|w| w.name.clone())
            .unwrap_or_else(|| "-".into())
    };
    page.requests = requests
        .iter()
        .map(|r| RequestRow {
            id: r.id.clone(),
            short: r.id[..12].to_string(),
            state: r.state.as_str().into(),
            user: r.user.clone(),
            profile: r.profile.clone(),
            workspace: match &r.workspace {
                WorkspaceSource::Path { path } => path.clone(),
                WorkspaceSource::Git { url, rev } => match rev {
                    Some(rev) => format!("{url} @ {rev}"),
                    None => url.clone(),
                },
            },
            command: r.command.join(" "),
            asked: when(r.created_at),
            worker: name_of(&r.worker),
            why: match r.state {
                RequestState::Queued => queue::why_waiting(r, &workers, now - WORKER_FRESH_MS)
                    .unwrap_or_else(|| "waiting for room on a worker".into()),
                _ => r.reason.clone().unwrap_or_default(),
            },
        })
        .collect();
    page.workers = workers
        .into_iter()
        .filter(|w| w.state != queue::WorkerState::Gone || now - w.heartbeat_at < 3_600_000)
        .map(|w| WorkerRow {
            stale: w.state != queue::WorkerState::Gone && now - w.heartbeat_at > WORKER_FRESH_MS,
            labels: w
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            heartbeat: format!(
                "{} ({} s ago)",
                when(w.heartbeat_at),
                (now - w.heartbeat_at) / 1000
            ),
            name: w.name,
            host: w.host,
            backend: w.backend.to_string(),
            state: match &w.reason {
                Some(r) if w.state == queue::WorkerState::Gone => format!("gone: {r}"),
                _ => w.state.as_str().into(),
            },
            capacity: w.capacity,
            claimed: w.claimed,
            running: w.running,
        })
        .collect();
    Ok(page)
}

/// The form's fields: one argument per line, one label per line.
#[derive(Debug, Deserialize)]
pub struct AskForm {
    pub profile: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub git: String,
    #[serde(default)]
    pub rev: String,
    pub command: String,
    #[serde(default)]
    pub backend: String,
    #[serde(default)]
    pub labels: String,
}

fn field(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// `POST /queue`: the form's request, then back to the queue.
pub async fn ask(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Form(f): Form<AskForm>,
) -> Result<Response, WebError> {
    auth::need_run(&who, "starting a session")?;
    if !st.store.has_queue() {
        return Err(WebError::NoQueue);
    }
    let mut labels = std::collections::BTreeMap::new();
    for line in f.labels.lines().filter_map(field) {
        let (k, v) = queue::parse_label(&line).map_err(|e| WebError::BadRequest(e.to_string()))?;
        labels.insert(k, v);
    }
    let ask = SessionAsk {
        profile: f.profile.trim().to_string(),
        workspace: WorkspaceAsk {
            path: field(&f.path),
            git: field(&f.git),
            rev: field(&f.rev),
        },
        command: f
            .command
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .filter(|l| !l.is_empty())
            .collect(),
        image: None,
        backend: field(&f.backend),
        labels,
    };
    let id = auth::random_hex(16).map_err(|e| WebError::BadRequest(e.to_string()))?;
    let r = validate(ask, &who, crate::requests::requester(&st, &who), id)?;
    st.store.enqueue(&r).await?;
    Ok(Redirect::to("/queue").into_response())
}
