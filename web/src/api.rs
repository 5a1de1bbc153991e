//! `/api/v1/…`: the same data as the pages, as JSON; and `/healthz`.

use axum::extract::{Path, State};
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

/// Sessions, newest first (at most 200 per page; `?all` is the default
/// here: a client filters).
pub async fn sessions(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Response {
    let q = SessionFilter {
        user: who.only_user(),
        limit: 200,
        ..SessionFilter::default()
    };
    match st.store.find(&q).await {
        Ok(list) => Json(list).into_response(),
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

/// Asks the session's supervisor to stop it: `202` with the session.
pub async fn stop(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    match crate::request_stop(&st, &who, &id).await {
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
