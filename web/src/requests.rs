//! Session requests: `POST /api/v1/sessions` records one for a worker to
//! claim (the web server never runs anything), `/api/v1/requests` shows
//! where they are, `/api/v1/workers` who takes them. Checks here are on
//! the request's shape; the worker checks the workspace again on its own
//! file system, after resolving symlinks.

use std::collections::BTreeMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use store::queue::{self, Labels, NewRequest, Request, RequestState, WorkspaceSource};

use crate::AppState;
use crate::api::ApiQuery;
use crate::auth::{self, Principal};
use crate::error::WebError;

/// How long a worker may stay silent before it counts as not running
/// here (the reaper's own timeout is the workers' setting).
pub const WORKER_FRESH_MS: i64 = 30_000;

const MAX_ARGS: usize = 256;
const MAX_COMMAND_BYTES: usize = 128 * 1024;
const MAX_PATH: usize = 4096;

/// The body of `POST /api/v1/sessions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionAsk {
    pub profile: String,
    pub workspace: WorkspaceAsk,
    pub command: Vec<String>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `{"path": "proj"}` or `{"git": "https://…", "rev": "main"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceAsk {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub git: Option<String>,
    #[serde(default)]
    pub rev: Option<String>,
}

fn bad(msg: impl Into<String>) -> WebError {
    WebError::BadRequest(msg.into())
}

/// A profile's name: what `profiles/` files are called.
fn check_profile(name: &str) -> Result<(), WebError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "profile \"{}\": a profile's name is letters, digits, '-', '_' and '.' (see `agentctl profiles`)",
            name.chars().take(64).collect::<String>()
        )))
    }
}

/// A workspace path as asked: relative to the user's root on the worker,
/// or absolute; never with `..` (the worker resolves symlinks and checks
/// the real path against the root again).
fn check_path(p: &str) -> Result<(), WebError> {
    if p.is_empty() || p.chars().count() > MAX_PATH || p.contains('\0') {
        return Err(bad(
            "workspace.path: give a path of 1 to 4096 bytes, without NUL",
        ));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(WebError::Forbidden(format!(
            "workspace.path \"{p}\": `..` is refused; name the directory under your workspace root"
        )));
    }
    Ok(())
}

/// A repository URL: https or ssh, never with a password in it (clone
/// credentials are the worker's own), never something git reads as an
/// option or a local path.
pub fn check_git_url(url: &str) -> Result<(), WebError> {
    let fix = "give https://HOST/PATH or ssh://HOST/PATH (or user@host:path); the worker's \
               own credentials do the clone";
    if url.is_empty() || url.len() > 2048 || url.chars().any(|c| c.is_control() || c == ' ') {
        return Err(bad(format!("workspace.git: {fix}")));
    }
    if url.starts_with('-') {
        return Err(bad(format!("workspace.git \"{url}\": {fix}")));
    }
    let rest = if let Some(r) = url.strip_prefix("https://") {
        r
    } else if let Some(r) = url.strip_prefix("ssh://") {
        r
    } else if let Some((user_host, path)) = url.split_once(':')
        && !user_host.contains('/')
        && !url.contains("://")
        && !path.is_empty()
        && user_host.contains('@')
    {
        // scp-like: user@host:path.
        let host = user_host.split('@').nth(1).unwrap_or("");
        if host.is_empty() || host.starts_with('-') {
            return Err(bad(format!("workspace.git \"{url}\": {fix}")));
        }
        return Ok(());
    } else {
        return Err(bad(format!(
            "workspace.git \"{url}\": only https, ssh and user@host:path are cloned; {fix}"
        )));
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || authority.starts_with('-') {
        return Err(bad(format!("workspace.git \"{url}\": no host; {fix}")));
    }
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && userinfo.contains(':')
    {
        return Err(WebError::Forbidden(
            "workspace.git: the URL carries a password; clone credentials are configured on the \
             worker (a deploy key or a credential helper), never sent with a request"
                .into(),
        ));
    }
    Ok(())
}

fn check_rev(rev: &str) -> Result<(), WebError> {
    let ok = !rev.is_empty()
        && rev.len() <= 255
        && !rev.starts_with('-')
        && !rev.contains("..")
        && rev
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "workspace.rev \"{}\": a branch or tag name (letters, digits, '-', '_', '.', '/')",
            rev.chars().take(64).collect::<String>()
        )))
    }
}

/// The request as the store keeps it, or what is wrong with it.
pub fn validate(
    ask: SessionAsk,
    who: &Principal,
    user: &str,
    id: String,
) -> Result<NewRequest, WebError> {
    check_profile(&ask.profile)?;
    let workspace = match (ask.workspace.path, ask.workspace.git) {
        (Some(p), None) => {
            if ask.workspace.rev.is_some() {
                return Err(bad(
                    "workspace.rev goes with workspace.git, not with a path",
                ));
            }
            check_path(&p)?;
            WorkspaceSource::Path { path: p }
        }
        (None, Some(url)) => {
            check_git_url(&url)?;
            if let Some(r) = &ask.workspace.rev {
                check_rev(r)?;
            }
            WorkspaceSource::Git {
                url,
                rev: ask.workspace.rev,
            }
        }
        _ => {
            return Err(bad(
                "workspace: give exactly one of {\"path\": …} or {\"git\": …}",
            ));
        }
    };
    if ask.command.is_empty() || ask.command[0].is_empty() {
        return Err(bad(
            "command: give the program and its arguments, as an array",
        ));
    }
    let bytes: usize = ask.command.iter().map(String::len).sum();
    if ask.command.len() > MAX_ARGS || bytes > MAX_COMMAND_BYTES {
        return Err(bad(format!(
            "command: at most {MAX_ARGS} arguments and {MAX_COMMAND_BYTES} bytes"
        )));
    }
    if ask.command.iter().any(|a| a.contains('\0')) {
        return Err(bad("command: an argument contains NUL"));
    }
    let backend = match ask.backend.as_deref() {
        None => None,
        Some(b) => Some(
            b.parse::<store::Backend>()
                .map_err(|_| bad(format!("backend \"{b}\": use native, docker or vm")))?,
        ),
    };
    if let Some(i) = &ask.image
        && (i.is_empty()
            || i.chars().count() > 512
            || i.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(bad("image: an image reference, without spaces"));
    }
    let mut labels = Labels::new();
    for (k, v) in ask.labels {
        let (k, v) = queue::parse_label(&format!("{k}={v}")).map_err(|e| bad(e.to_string()))?;
        labels.insert(k, v);
    }
    Ok(NewRequest {
        id,
        user: user.to_string(),
        actor: who.actor(),
        profile: ask.profile,
        workspace,
        command: ask.command,
        image: ask.image,
        backend,
        labels,
        created_at: store::now_ms(),
    })
}

/// Whom a session asked for by `who` runs for: their user, or on a
/// loopback server without users the Unix user who runs it.
pub fn requester<'a>(st: &'a AppState, who: &'a Principal) -> &'a str {
    if who.via == auth::Via::Local {
        &st.auth.local_user
    } else {
        &who.name
    }
}

fn new_id() -> Result<String, WebError> {
    auth::random_hex(16).map_err(|e| WebError::BadRequest(e.to_string()))
}

/// `POST /api/v1/sessions`: records the request; `202` with its id (the
/// session's id to be) and where to follow it.
pub async fn create(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    body: Result<Json<SessionAsk>, JsonRejection>,
) -> Response {
    let made = async {
        auth::need_run(&who, "starting a session")?;
        if !st.store.has_queue() {
            return Err(WebError::NoQueue);
        }
        let Json(ask) = body.map_err(|e| bad(format!("the body: {}", e.body_text())))?;
        let r = validate(ask, &who, requester(&st, &who), new_id()?)?;
        st.store.enqueue(&r).await?;
        Ok(r.id)
    };
    match made.await {
        Ok(id) => (
            StatusCode::ACCEPTED,
            [(header::LOCATION, format!("/api/v1/requests/{id}"))],
            Json(json!({
                "request": id,
                "session": id,
                "state": "queued",
                "request_url": format!("/api/v1/requests/{id}"),
                "session_url": format!("/api/v1/sessions/{id}"),
            })),
        )
            .into_response(),
        Err(e) => e.json(),
    }
}

/// A request as the API shows it: with why it waits, when it does.
fn shown(r: &Request, workers: &[queue::Worker]) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if r.state == RequestState::Queued
        && let Some(m) = v.as_object_mut()
    {
        let fresh = store::now_ms() - WORKER_FRESH_MS;
        m.insert(
            "waiting_because".into(),
            json!(queue::why_waiting(r, workers, fresh)),
        );
    }
    v
}

async fn visible_request(st: &AppState, who: &Principal, id: &str) -> Result<Request, WebError> {
    if !st.store.has_queue() {
        return Err(WebError::NoQueue);
    }
    let not_found = || {
        WebError::NoSuchSession(format!(
            "no session request \"{}\"",
            id.chars().take(64).collect::<String>()
        ))
    };
    if id.len() != 32
        || !id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(not_found());
    }
    match st.store.request(id).await {
        Ok(r) if who.sees_all() || r.user == who.name => Ok(r),
        Ok(_) | Err(store::StoreError::NoSuchRequest { .. }) => Err(not_found()),
        Err(e) => Err(e.into()),
    }
}

/// `GET /api/v1/requests/{id}`.
pub async fn one(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let found = async {
        let r = visible_request(&st, &who, &id).await?;
        let workers = st.store.workers().await?;
        Ok::<_, WebError>(shown(&r, &workers))
    };
    match found.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.json(),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RequestsQuery {
    /// A comma-separated list of states.
    pub state: Option<String>,
    pub limit: Option<u32>,
}

/// `GET /api/v1/requests`: oldest first.
pub async fn list(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiQuery(q): ApiQuery<RequestsQuery>,
) -> Response {
    let found = async {
        if !st.store.has_queue() {
            return Err(WebError::NoQueue);
        }
        let mut states = Vec::new();
        let asked = q.state.as_deref().unwrap_or("");
        for s in asked.split(',').filter(|_| !asked.is_empty()) {
            states.push(RequestState::parse(s).map_err(|_| {
                bad(format!(
                    "state \"{s}\": use queued, claimed, started, done, failed, lost or cancelled"
                ))
            })?);
        }
        let limit = q.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(bad(format!("limit {limit}: give 1 to 1000")));
        }
        let list = st
            .store
            .requests(who.only_user().as_deref(), &states, limit)
            .await?;
        let workers = st.store.workers().await?;
        let shown: Vec<_> = list.iter().map(|r| shown(r, &workers)).collect();
        Ok(json!({ "requests": shown }))
    };
    match found.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.json(),
    }
}

/// `DELETE /api/v1/requests/{id}`: withdraws a request no worker took yet.
pub async fn cancel(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let done = async {
        let r = visible_request(&st, &who, &id).await?;
        auth::need_run(&who, "withdrawing a request")?;
        let reason = format!("withdrawn by {}", who.actor());
        if st
            .store
            .cancel_request(&r.id, &reason, store::now_ms())
            .await?
        {
            Ok(json!({"request": r.id, "cancelled": true}))
        } else {
            Err(WebError::BadRequest(format!(
                "request {} is {} already; stop its session instead",
                r.id,
                r.state.as_str()
            )))
        }
    };
    match done.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.json(),
    }
}

/// `GET /api/v1/workers`: every worker with what it holds, and the
/// queue's counts.
pub async fn workers(
    State(st): State<AppState>,
    Extension(_who): Extension<Principal>,
) -> Response {
    let found = async {
        if !st.store.has_queue() {
            return Err(WebError::NoQueue);
        }
        let workers = st.store.workers().await?;
        let stats = st.store.queue_stats(store::now_ms()).await?;
        Ok::<_, WebError>(json!({"workers": workers, "queue": stats}))
    };
    match found.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.json(),
    }
}

/// `DELETE /api/v1/sessions/{id}`: an ended session's record and audit
/// log, for an admin (as the dashboard's delete button).
pub async fn delete_session(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let done = async {
        let s = crate::visible_session(&st, &who, &id).await?;
        if !who.is_admin() {
            return Err(auth::refuse(
                &who,
                "deleting a session",
                store::Role::Admin,
                store::Scope::Admin,
            ));
        }
        if s.status.is_live() {
            return Err(WebError::Live(s.short_id().to_string()));
        }
        st.store.remove(&s.id).await?;
        if st.store.has_queue() {
            let _ = st.store.delete_request(&s.id).await;
        }
        Ok(json!({"session": s.id, "removed": true}))
    };
    match done.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.json(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_urls_are_https_or_ssh_without_passwords() {
        for ok in [
            "https://example.test/org/repo.git",
            "ssh://git@example.test/org/repo",
            "git@example.test:org/repo.git",
            "https://token@example.test/r",
        ] {
            assert!(check_git_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "file:///etc",
            "/srv/repo",
            "ext::sh -c id",
            "--upload-pack=id",
            "https://user:secret@example.test/r",
            "http://example.test/r",
            "https:///r",
            "git://example.test/r",
            "https://-oProxyCommand=x/r",
            "host:path",
        ] {
            assert!(check_git_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_refuse_dotdot() {
        assert!(check_path("proj/sub").is_ok());
        assert!(check_path("/srv/ws/alice/proj").is_ok());
        assert!(check_path("proj/../../bob").is_err());
        assert!(check_path("..").is_err());
        assert!(check_path("").is_err());
    }
}
