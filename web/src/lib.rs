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
//! `view` (the session and its plan as pages show them), `pages` and
//! `api` (handlers), and [`app`], which puts them together.

mod api;
mod error;
mod guard;
mod pages;
mod view;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

pub use guard::HostAllowList;

/// What every handler shares: the store, and the hosts this server
/// answers for.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<store::SessionStore>,
    pub hosts: Arc<HostAllowList>,
}

/// The whole application, without a listener: tests call it with
/// `tower::ServiceExt::oneshot`, `serve` with a socket.
pub fn app(state: AppState) -> Router {
    let hosts = state.hosts.clone();
    Router::new()
        .route("/", get(pages::sessions))
        .route("/sessions/{id}", get(pages::session))
        .route("/static/app.css", get(pages::stylesheet))
        .route("/healthz", get(api::healthz))
        .route("/api/v1/sessions", get(api::sessions))
        .route("/api/v1/sessions/{id}", get(api::session))
        .route("/api/v1/sessions/{id}/events", get(api::events))
        .fallback(pages::not_found)
        .with_state(state)
        .layer(axum::middleware::from_fn(guard::security_headers))
        .layer(axum::middleware::from_fn_with_state(
            hosts,
            guard::allowed_host,
        ))
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}
