//! `agentctl serve`: the dashboard and JSON API (the `web` crate) over the
//! session store, on loopback.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use lifecycle::Lifecycle;

use crate::cli::ServeArgs;

pub fn serve(args: ServeArgs, lc: &Lifecycle) -> Result<u8> {
    let addr: SocketAddr = args.listen.parse().with_context(|| {
        format!(
            "--listen {}: not an address and port; give one like 127.0.0.1:7878",
            args.listen
        )
    })?;
    // No users and no login exist yet: anything but loopback would hand
    // every session's record to whoever can reach the port.
    if !addr.ip().is_loopback() {
        bail!(
            "--listen {addr}: the dashboard has no users or login yet, so it listens on loopback only; use --listen 127.0.0.1:{port} and reach it from another machine through an SSH tunnel (ssh -L {port}:127.0.0.1:{port} THIS-HOST)",
            port = addr.port()
        );
    }
    let url = lc.store.required()?.to_string();
    let actor = lc.actor.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the server's runtime")?;
    rt.block_on(async move {
        let store = store::SessionStore::connect_with(
            &url,
            &store::ConnectOptions {
                max_connections: 8,
                migrate: true,
            },
        )
        .await
        .context("cannot open the session store")?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        eprintln!(
            "agentctl serve: http://{local}/ (store {})",
            store.location()
        );
        let state = web::AppState::new(
            store,
            web::HostAllowList::loopback(),
            format!("dashboard ({actor})"),
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        web::serve(listener, state, shutdown)
            .await
            .context("the server failed")?;
        anyhow::Ok(0)
    })
}
