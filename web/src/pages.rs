//! The pages: server-rendered, working without JavaScript. askama escapes
//! every value in an `.html` template; nothing here is marked safe.

use askama::Template;
use askama_web::WebTemplate;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use store::{SessionFilter, Status};

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ErrorPage, WebError};
use crate::view::{Mount, Nav, Plan, Row, when};

/// What the sessions page is asked for: `?status=running&user=alice&q=…`,
/// and the page after `before_at`/`before_id` (keyset pagination).
#[derive(Debug, Default, Deserialize)]
pub struct Filter {
    pub status: Option<String>,
    pub user: Option<String>,
    pub profile: Option<String>,
    pub q: Option<String>,
    /// Every session, not only live ones and those ended in the last 24 h.
    pub all: Option<String>,
    pub before_at: Option<i64>,
    pub before_id: Option<String>,
}

/// About how much of the end of the output the session page shows.
const LOG_BYTES: usize = 256 << 10;

/// How many sessions one page lists.
const PAGE: u32 = 50;
const DAY_MS: i64 = 24 * 3600 * 1000;

#[derive(Template, WebTemplate)]
#[template(path = "sessions.html")]
pub struct SessionsPage {
    pub nav: Nav,
    /// The user filter is fixed to the viewer's own name.
    pub own_only: bool,
    pub rows: Vec<Row>,
    pub running: u64,
    pub failed_24h: String,
    pub stalled: String,
    pub refused_24h: String,
    /// Today (UTC), for the refusals' filter link.
    pub since_day: String,
    pub lost_24h: String,
    pub filter_status: String,
    pub filter_user: String,
    pub filter_profile: String,
    pub filter_q: String,
    pub all: bool,
    /// The query string of the next page, when there may be one.
    pub next: Option<String>,
    /// A status the page does not know: shown, and nothing matches.
    pub bad_status: bool,
}

fn wanted(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// `key=value&…`, each value percent-encoded.
pub(crate) fn query_string(pairs: &[(&str, &str)]) -> String {
    let enc = |v: &str| {
        v.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub async fn sessions(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Query(f): Query<Filter>,
) -> Result<SessionsPage, WebError> {
    let now = store::now_ms();
    let all = f.all.is_some();
    let own = who.only_user();
    let (status, user, profile, q) = (
        wanted(&f.status),
        own.as_deref().or(wanted(&f.user)),
        wanted(&f.profile),
        wanted(&f.q),
    );
    let want_stalled = status == Some("stalled");
    let parsed: Option<Status> = status.and_then(|s| s.parse().ok());
    let bad_status = status.is_some() && parsed.is_none() && !want_stalled;
    let filter = SessionFilter {
        status: parsed,
        stalled_before: want_stalled.then_some(now - crate::view::STALL_MS),
        user: user.map(str::to_string),
        profile: profile.map(str::to_string),
        search: q.map(str::to_string),
        live_or_ended_since: (!all && status.is_none()).then_some(now - DAY_MS),
        before: f.before_at.zip(f.before_id.clone()),
        limit: PAGE,
    };
    let list = if bad_status {
        Vec::new()
    } else {
        st.store.find(&filter).await?
    };
    let next = (list.len() == PAGE as usize).then(|| {
        let last = list.last().expect("a full page");
        let at = last.created_at.to_string();
        query_string(&[
            ("status", status.unwrap_or_default()),
            ("user", user.unwrap_or_default()),
            ("profile", profile.unwrap_or_default()),
            ("q", q.unwrap_or_default()),
            ("all", if all { "1" } else { "" }),
            ("before_at", &at),
            ("before_id", &last.id),
        ])
    });
    // The attention strip counts every user's sessions for admins; for
    // others, their own (a count over the whole store would tell them
    // about sessions they may not see).
    let seen = st
        .store
        .attention(now - DAY_MS, now - crate::view::STALL_MS, own.as_deref())
        .await?;
    Ok(SessionsPage {
        nav: Nav::of(&who),
        own_only: own.is_some(),
        rows: {
            let mut rows = Vec::with_capacity(list.len());
            for s in &list {
                let mut r = st.row(s, now);
                r.chain = st.chain(s).await;
                rows.push(r);
            }
            rows
        },
        running: seen.running,
        failed_24h: seen.failed.to_string(),
        lost_24h: seen.lost.to_string(),
        stalled: seen.stalled.to_string(),
        refused_24h: seen.refused.to_string(),
        since_day: store::utc(now - DAY_MS)
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_string(),
        filter_status: status.unwrap_or_default().to_string(),
        filter_user: user.unwrap_or_default().to_string(),
        filter_profile: profile.unwrap_or_default().to_string(),
        filter_q: q.unwrap_or_default().to_string(),
        all,
        next,
        bad_status,
    })
}

/// One audit event as the page shows it.
pub struct EventRow {
    pub seq: u64,
    pub at: String,
    pub kind: String,
    pub actor: String,
    pub data: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "session.html")]
pub struct SessionPage {
    pub nav: Nav,
    pub row: Row,
    /// The viewer may stop it (operator, and it is theirs or they are admin).
    pub may_stop: bool,
    /// The viewer may delete it (admin, and it has ended).
    pub may_delete: bool,
    pub started: String,
    pub ended: String,
    pub image: String,
    pub host: String,
    pub chain: String,
    pub chain_ok: bool,
    pub writable: Vec<Mount>,
    pub read_only: Vec<Mount>,
    /// In-memory mounts (a fresh home, /tmp): writable, gone with the session.
    pub scratch: Vec<Mount>,
    pub plan_readable: bool,
    pub masked: Vec<crate::view::Masked>,
    pub env: Vec<String>,
    pub limits: Vec<(String, String)>,
    /// The allowlist network's rules.
    pub network_allow: Vec<String>,
    pub events: Vec<EventRow>,
    pub refused: usize,
    /// The refused actions (Docker API calls, policy refusals).
    pub refusals: Vec<EventRow>,
    /// The end of the output, in segments (the live log's start).
    pub log: Vec<crate::ansi::Segment>,
    /// The last chunk shown (the live log goes on after it).
    pub log_seq: u64,
    /// Output before what is shown: kept (download it) or dropped (bytes).
    pub log_earlier: bool,
    pub log_dropped: u64,
    pub log_bytes: u64,
    pub chart: crate::view::Chart,
    /// When the supervisor last said it was alive, in words.
    pub heartbeat: String,
    /// The session is live: the page follows its output.
    pub may_follow: bool,
    /// Who asked it to stop, when someone did.
    pub stopped_by: String,
    /// What the session asked beyond its profile, in words; `None` when
    /// its record does not say (sessions recorded before it was kept).
    pub asked: Option<Vec<String>>,
}

pub async fn session(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<SessionPage, WebError> {
    let s = crate::visible_session(&st, &who, &id).await?;
    let events = st.store.events(&s.id).await?;
    let v = st.store.verify(&s.id).await?;
    let (chain, chain_ok) = match (&v.broken, v.ok) {
        (_, true) => (format!("verified #1–#{}", v.events), true),
        (Some(b), false) => (format!("BROKEN at #{}: {}", b.seq, b.reason), false),
        (None, false) => ("BROKEN: the chain does not verify".to_string(), false),
    };
    let plan = Plan::read(&s.policy);
    let plan_readable = plan.mounts.is_some();
    // The end of the output: the last chunks, up to 256 KiB or so.
    let out = st.store.output_state(&s.id).await?;
    let chunks = st.store.output_tail(&s.id, LOG_BYTES).await?;
    let log_seq = chunks.last().map(|c| c.seq).unwrap_or(out.last_seq);
    let mut ansi = crate::ansi::Ansi::new();
    let mut log = Vec::new();
    for c in &chunks {
        log.extend(ansi.push(&c.data));
    }
    let samples = st.store.samples(&s.id, 0).await?;
    let (host, scratch): (Vec<Mount>, Vec<Mount>) = plan
        .mounts
        .unwrap_or_default()
        .into_iter()
        .partition(|m| m.from_host);
    let (writable, read_only): (Vec<Mount>, Vec<Mount>) =
        host.into_iter().partition(|m| m.writable);
    let now = store::now_ms();
    Ok(SessionPage {
        started: s.started_at.map(when).unwrap_or_default(),
        ended: s.ended_at.map(when).unwrap_or_default(),
        image: s
            .image
            .clone()
            .unwrap_or_else(|| "the host's root filesystem".into()),
        host: s.host.clone(),
        chain,
        chain_ok,
        writable,
        read_only,
        scratch,
        plan_readable,
        masked: plan.masked.unwrap_or_default(),
        env: plan.env.unwrap_or_default(),
        limits: plan.limits,
        network_allow: plan.network_allow,
        refused: events
            .iter()
            .filter(|e| e.kind.ends_with("_denied"))
            .count(),
        refusals: events
            .iter()
            .filter(|e| e.kind.ends_with("_denied"))
            .map(|e| EventRow {
                seq: e.seq,
                at: when(e.at),
                kind: e.kind.clone(),
                actor: e.actor.clone().unwrap_or_default(),
                data: e.data.to_string(),
            })
            .collect(),
        may_follow: s.status.is_live(),
        stopped_by: events
            .iter()
            .rev()
            .find(|e| e.kind == "stop_requested")
            .and_then(|e| e.actor.clone())
            .unwrap_or_default(),
        asked: events
            .iter()
            .find(|e| e.kind == "created")
            .and_then(|e| e.data.get("asked"))
            .map(crate::view::asked),
        log,
        log_seq,
        log_earlier: chunks.first().is_some_and(|c| c.seq > out.first_seq),
        log_dropped: out.dropped,
        log_bytes: out.bytes,
        chart: crate::view::Chart::of(&samples),
        heartbeat: s
            .heartbeat_at
            .map(|at| format!("{} ago", crate::view::ago(now - at)))
            .unwrap_or_else(|| "never".into()),
        events: events
            .iter()
            .map(|e| EventRow {
                seq: e.seq,
                at: when(e.at),
                kind: e.kind.clone(),
                actor: e.actor.clone().unwrap_or_default(),
                data: e.data.to_string(),
            })
            .collect(),
        may_stop: s.status.is_live() && who.may_stop(&s),
        may_delete: !s.status.is_live() && who.is_admin(),
        nav: Nav::of(&who),
        row: Row::of(&s, now),
    })
}

pub async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../static/app.css"),
    )
}

pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../static/live.js"),
    )
}

pub async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        ErrorPage {
            nav: Nav::default(),
            status: 404,
            message: "no such page".into(),
        },
    )
}

/// The stop button: records the request and shows the session again.
pub async fn stop(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<axum::response::Redirect, WebError> {
    let s = crate::request_stop(&st, &who, &id, crate::api::STOP_GRACE_SECS).await?;
    Ok(axum::response::Redirect::to(&format!("/sessions/{}", s.id)))
}
