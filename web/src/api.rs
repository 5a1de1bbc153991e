//! `/api/v1/…`: the same data as the pages, as JSON; and `/healthz`.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;
use store::SessionFilter;

use crate::AppState;
use crate::auth::Principal;
use crate::error::WebError;

/// The server answers and its store does (one trivial query).
pub async fn healthz(State(st): State<AppState>) -> Response {
    match st.store.version().await {
        Ok(v) => Json(json!({"ok": true, "store": v})).into_response(),
        Err(e) => WebError::from(e).json(),
    }
}

/// A query string for the API: one it cannot read is a 400 with a JSON
/// error, as every API answer is.
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(WebError::BadRequest(format!(
                "the query string cannot be read: {}",
                e.body_text()
            ))
            .json()),
        }
    }
}

/// What the list is asked for.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ListQuery {
    /// A status, or `stalled`.
    pub status: Option<String>,
    pub user: Option<String>,
    pub profile: Option<String>,
    /// An id prefix, or text in the command or the workspace.
    pub q: Option<String>,
    pub limit: Option<u32>,
    pub before_at: Option<i64>,
    pub before_id: Option<String>,
}

const LIST_DEFAULT: u32 = 50;
const LIST_MAX: u32 = 500;

/// Sessions, newest first, one page (keyset: `next` is the next page's
/// query), each without its policy (the session's own answer has it).
pub async fn sessions(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Response {
    let wanted = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    // Strict, as the document says: a status given must be one, and the
    // limit within its range (the pages are lenient with empty fields).
    let status = q.status.clone();
    let stalled = status.as_deref() == Some("stalled");
    let parsed = match status.as_deref().filter(|_| !stalled).map(str::parse) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => {
            return WebError::BadRequest(format!(
                "there is no status \"{}\"; use created, running, stalled, exited, failed, stopped or lost",
                status.unwrap_or_default()
            ))
            .json();
        }
    };
    let limit = q.limit.unwrap_or(LIST_DEFAULT);
    if !(1..=LIST_MAX).contains(&limit) {
        return WebError::BadRequest(format!("limit {limit}: give 1 to {LIST_MAX}")).json();
    }
    let f = SessionFilter {
        status: parsed,
        stalled_before: stalled.then(|| store::now_ms() - crate::view::STALL_MS),
        user: who.only_user().or(wanted(&q.user)),
        profile: wanted(&q.profile),
        search: wanted(&q.q),
        before: q.before_at.zip(q.before_id.clone()),
        limit,
        ..SessionFilter::default()
    };
    match st.store.find_summaries(&f).await {
        Ok(list) => {
            let next = (list.len() == limit as usize).then(|| {
                let last = list.last().expect("a full page");
                let at = last.created_at.to_string();
                let limit = limit.to_string();
                format!(
                    "/api/v1/sessions?{}",
                    crate::pages::query_string(&[
                        ("status", status.as_deref().unwrap_or_default()),
                        ("user", q.user.as_deref().unwrap_or_default()),
                        ("profile", q.profile.as_deref().unwrap_or_default()),
                        ("q", q.q.as_deref().unwrap_or_default()),
                        ("limit", &limit),
                        ("before_at", &at),
                        ("before_id", &last.id),
                    ])
                )
            });
            Json(json!({"sessions": list, "next": next})).into_response()
        }
        Err(e) => WebError::from(e).json(),
    }
}

/// One session with its audit chain's verdict.
pub async fn session(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let found = async {
        let s = crate::visible_session(&st, &who, &id).await?;
        let v = st.store.verify(&s.id).await?;
        Ok::<_, WebError>(json!({"session": s, "verification": v}))
    };
    match found.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.json(),
    }
}

pub async fn events(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let found = async {
        let s = crate::visible_session(&st, &who, &id).await?;
        Ok::<_, WebError>(st.store.events(&s.id).await?)
    };
    match found.await {
        Ok(ev) => Json(ev).into_response(),
        Err(e) => e.json(),
    }
}

/// How long a stopped session has between SIGTERM and SIGKILL unless the
/// request says otherwise.
pub const STOP_GRACE_SECS: u64 = 10;
/// The longest grace a request may ask for.
const STOP_GRACE_MAX: u64 = 3600;

/// The optional body of a stop: `{"timeout_secs": N}`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StopAsk {
    /// A JSON number: JSON Schema's integers include `3.0`.
    timeout_secs: Option<serde_json::Number>,
}

/// Asks the session's supervisor to stop it: `202` with the session. An
/// empty body means the default grace.
pub async fn stop(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let ask: StopAsk = if body.iter().all(u8::is_ascii_whitespace) {
        StopAsk::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(e) => {
                return WebError::BadRequest(format!(
                    "the body: {e}; send nothing, or {{\"timeout_secs\": N}}"
                ))
                .json();
            }
        }
    };
    let grace = match &ask.timeout_secs {
        None => Some(STOP_GRACE_SECS),
        Some(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= STOP_GRACE_MAX as f64)
                .map(|f| f as u64)
        }),
    };
    let Some(grace) = grace.filter(|g| *g <= STOP_GRACE_MAX) else {
        return WebError::BadRequest(format!(
            "timeout_secs: give a whole number of seconds, 0 to {STOP_GRACE_MAX}"
        ))
        .json();
    };
    match crate::request_stop(&st, &who, &id, grace).await {
        Ok(s) => (
            axum::http::StatusCode::ACCEPTED,
            Json(json!({"session": s.id, "stop_requested": true})),
        )
            .into_response(),
        Err(e) => e.json(),
    }
}

/// The OpenAPI 3.1 document of this API (tests check it against what the
/// server answers).
pub async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("../static/openapi.json"),
    )
        .into_response()
}
