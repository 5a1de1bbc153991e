//! The dashboard and JSON API over the session store (`agentctl serve`).
//!
//! The web crate reads the store and nothing else: it knows no backend,
//! no Docker and no sandbox (checked by `launcher/agentctl/tests/
//! architecture.rs`). Pages are server-rendered askama templates that work
//! without JavaScript; every response carries a strict Content Security
//! Policy, and every request must name this host as it is served (a
//! Host-header allow-list, against DNS rebinding of a loopback server).
//!
//! Layers: `guard` (Host allow-list, security headers), `error` (what a
//! failure shows: a status and a message, never a database's text),
//! `view` (the session and its plan as pages show them), `live` (changes
//! pushed to the pages over server-sent events), `pages` and `api`
//! (handlers), and [`app`], which puts them together.

mod account;
pub mod ansi;
mod api;
mod audit;
pub mod auth;
mod error;
mod guard;
mod live;
mod metrics;
mod output;
mod pages;
mod profiles;
mod queue;
mod requests;
pub mod tls;
mod view;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

pub use guard::HostAllowList;

/// What every handler shares: the store, the hosts this server answers
/// for, and who acts (for the audit log) when nobody logs in.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<store::SessionStore>,
    pub hosts: Arc<HostAllowList>,
    /// How requests are authenticated (see `auth`).
    pub auth: Arc<auth::AuthConfig>,
    /// Live updates to the pages (see `live`).
    pub live: Arc<live::Hub>,
    /// This server's requests, for `/metrics`.
    pub http: Arc<metrics::Http>,
    /// The sessions whose output someone follows (see `output`).
    pub output: Arc<output::Hub>,
    /// Each policy's chips, by its hash (see `view::Chips`).
    chips: Arc<std::sync::Mutex<std::collections::HashMap<String, view::Chips>>>,
    /// Each session's chain verdict, for its head and a minute at most.
    verdicts: Arc<std::sync::Mutex<std::collections::HashMap<String, Verdict>>>,
}

impl AppState {
    /// `actor` acts on a server whose store has no users, e.g.
    /// `dashboard (uid 1000 (alice))`: whoever runs `agentctl serve`.
    pub fn new(store: store::SessionStore, hosts: HostAllowList, actor: String) -> AppState {
        AppState::with_auth(store, hosts, auth::AuthConfig::new(actor))
    }

    pub fn with_auth(
        store: store::SessionStore,
        hosts: HostAllowList,
        auth: auth::AuthConfig,
    ) -> AppState {
        AppState {
            store: Arc::new(store),
            hosts: Arc::new(hosts),
            auth: Arc::new(auth),
            live: Arc::default(),
            http: Arc::default(),
            output: Arc::default(),
            chips: Arc::default(),
            verdicts: Arc::default(),
        }
    }
}

/// The most policies whose chips the server keeps.
const CHIPS_KEPT: usize = 4096;
/// The most chain verdicts the server keeps, and for how long: a chain
/// edited behind the store's back (its head unchanged) shows as broken
/// within a minute.
const VERDICTS_KEPT: usize = 10_000;
const VERDICT_TTL: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Clone)]
struct Verdict {
    count: u64,
    head: String,
    at: std::time::Instant,
    ok: bool,
}

impl AppState {
    /// A sessions table's row, the policy read once per policy.
    pub(crate) fn row(&self, s: &store::Session, now: i64) -> view::Row {
        let cached = self
            .chips
            .lock()
            .ok()
            .and_then(|m| m.get(&s.policy_sha256).cloned());
        let chips = match cached {
            Some(c) => c,
            None => {
                let c = view::Chips::of(&s.policy);
                if let Ok(mut m) = self.chips.lock() {
                    if m.len() >= CHIPS_KEPT {
                        m.clear();
                    }
                    m.insert(s.policy_sha256.clone(), c.clone());
                }
                c
            }
        };
        view::Row::with(s, now, chips)
    }

    /// Whether session `s`'s audit chain verifies: "✓", "✗", or "?" when
    /// the store could not say. Verified once per head and minute.
    pub(crate) async fn chain(&self, s: &store::Session) -> &'static str {
        let fresh = self.verdicts.lock().ok().and_then(|m| {
            m.get(&s.id)
                .filter(|v| {
                    v.count == s.events_count
                        && v.head == s.events_head
                        && v.at.elapsed() < VERDICT_TTL
                })
                .map(|v| v.ok)
        });
        let ok = match fresh {
            Some(ok) => ok,
            None => match self.store.verify(&s.id).await {
                Ok(v) => {
                    if let Ok(mut m) = self.verdicts.lock() {
                        if m.len() >= VERDICTS_KEPT {
                            m.clear();
                        }
                        m.insert(
                            s.id.clone(),
                            Verdict {
                                count: s.events_count,
                                head: s.events_head.clone(),
                                at: std::time::Instant::now(),
                                ok: v.ok,
                            },
                        );
                    }
                    v.ok
                }
                Err(_) => return "?",
            },
        };
        if ok { "✓" } else { "✗" }
    }
}

/// Session `id` if `who` may see it; one they may not see does not exist
/// for them (404, the same as a wrong id).
pub(crate) async fn visible_session(
    st: &AppState,
    who: &auth::Principal,
    id: &str,
) -> Result<store::Session, error::WebError> {
    let s = st.store.get(id).await?;
    if who.may_see(&s) {
        Ok(s)
    } else {
        Err(error::WebError::NoSuchSession(format!(
            "no session \"{id}\"; check the id against the list of sessions"
        )))
    }
}

/// Records a stop request for session `id` (only while it is live) with
/// `who` as its actor: the session's supervisor sees it and stops the
/// sandbox. Returns the session as it was.
pub(crate) async fn request_stop(
    st: &AppState,
    who: &auth::Principal,
    id: &str,
    grace_secs: u64,
) -> Result<store::Session, error::WebError> {
    let s = visible_session(st, who, id).await?;
    if !who.may_stop(&s) {
        return Err(auth::refuse(
            who,
            "stopping a session",
            store::Role::Operator,
            store::Scope::Run,
        ));
    }
    if !s.status.is_live() {
        return Err(error::WebError::NotLive(s.short_id().to_string(), s.status));
    }
    st.store
        .append_event(
            &s.id,
            store::NewEvent::new("stop_requested")
                .actor(who.actor().as_str())
                .data(serde_json::json!({"signal": "SIGTERM", "timeout_secs": grace_secs, "via": "dashboard"})),
        )
        .await?;
    Ok(s)
}

/// The whole application, without a listener: tests call it with
/// `tower::ServiceExt::oneshot`, `serve` with a socket.
pub fn app(state: AppState) -> Router {
    let hosts = state.hosts.clone();
    Router::new()
        .route("/", get(pages::sessions))
        .route("/sessions/{id}", get(pages::session))
        .route("/sessions/{id}/stop", axum::routing::post(pages::stop))
        .route(
            "/sessions/{id}/delete",
            axum::routing::post(account::delete_session),
        )
        .route("/login", get(account::login_page).post(account::login))
        .route("/logout", axum::routing::post(account::logout))
        .route("/users", get(account::users))
        .route("/audit", get(audit::page))
        .route("/profiles", get(profiles::list))
        .route("/profiles/{name}", get(profiles::one))
        .route("/audit/verify", get(audit::verify))
        .route("/static/app.css", get(pages::stylesheet))
        .route("/static/live.js", get(pages::script))
        .route("/events/sessions", get(live::sessions))
        .route("/events/sessions/{id}/output", get(output::live))
        .route("/sessions/{id}/output.raw", get(output::download_raw))
        .route("/sessions/{id}/output.txt", get(output::download_text))
        .route("/api/v1/sessions/{id}/output", get(output::api))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(metrics::render))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route(
            "/api/v1/sessions",
            get(api::sessions).post(requests::create),
        )
        .route(
            "/api/v1/sessions/{id}",
            get(api::session).delete(requests::delete_session),
        )
        .route("/api/v1/requests", get(requests::list))
        .route(
            "/api/v1/requests/{id}",
            get(requests::one).delete(requests::cancel),
        )
        .route("/api/v1/workers", get(requests::workers))
        .route("/queue", get(queue::page).post(queue::ask))
        .route("/api/v1/sessions/{id}/events", get(api::events))
        .route("/api/v1/sessions/{id}/stop", axum::routing::post(api::stop))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count_requests,
        ))
        .with_state(state)
        .layer(guard::csrf())
        .layer(axum::middleware::from_fn(guard::security_headers))
        .layer(axum::middleware::from_fn_with_state(
            hosts,
            guard::allowed_host,
        ))
}

/// Serves `app` over TLS on `listener` until `shutdown` completes.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // `tap_io` changes nothing; it gives the listener the connect-info
    // (the client's address) that the login limiter needs.
    let listener = tls::TlsListener::new(listener, tls)?.tap_io(|_| {});
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
