//! `agentctl serve`: the dashboard and JSON API (the `web` crate) over the
//! session store: on loopback without login until it has users; on any
//! other address only with users and TLS (here or at a named proxy).

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
                // SQLite reads in parallel but writes one at a time, and
                // each connection keeps a page cache: four serve two
                // worker threads. A Postgres server takes more.
                max_connections: if url.starts_with("sqlite") { 4 } else { 8 },
                migrate: true,
            },
        )
        .await
        .context("cannot open the session store")?;
        let mut has_users = store
            .has_users()
            .await
            .context("cannot read the dashboard's users")?;
        if !has_users && args.plain_http_in_container {
            // The stack's dashboard starts with its store; `agentctl up`
            // adds the first admin moments later. Waiting beats exiting
            // into the restart policy's backoff.
            eprintln!(
                "agentctl serve: waiting for the first user (agentctl up adds it; by hand: agentctl admin user add NAME --role admin)"
            );
            while !has_users {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                has_users = store
                    .has_users()
                    .await
                    .context("cannot read the dashboard's users")?;
            }
        }
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(web::tls::config(cert, key)?),
            _ => None,
        };
        if !addr.ip().is_loopback() {
            // Anyone who can reach the port could read every session and
            // stop them, or read passwords off the wire.
            if !has_users {
                bail!(
                    "--listen {addr}: the store {} has no dashboard users, so anyone who reaches this port could see and stop every session; add one first (agentctl admin user add NAME --role admin), or listen on 127.0.0.1:{port} and use an SSH tunnel (ssh -L {port}:127.0.0.1:{port} THIS-HOST)",
                    store.location(),
                    port = addr.port()
                );
            }
            if args.plain_http_in_container {
                // The stack's dashboard: its container's address is on the
                // stack's private networks, and the port is published on
                // loopback. Anywhere else this would be plain HTTP on a
                // real network.
                if !in_container() {
                    bail!(
                        "--plain-http-in-container: this is not a container (no /.dockerenv or /run/.containerenv); on a host, give --tls-cert and --tls-key, or --behind-proxy ADDRESS"
                    );
                }
            } else if tls.is_none() && args.behind_proxy.is_none() {
                bail!(
                    "--listen {addr}: passwords and login cookies would cross the network in clear text; give --tls-cert and --tls-key, or put a TLS-terminating proxy in front and name it with --behind-proxy ADDRESS"
                );
            }
        }
        let mut hosts = web::HostAllowList::loopback();
        if !addr.ip().is_unspecified() {
            hosts.allow(&match addr.ip() {
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            });
        }
        if !addr.ip().is_loopback() {
            hosts.allow(&store::hostname());
        }
        for h in &args.allow_hosts {
            hosts.allow(h);
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        eprintln!(
            "agentctl serve: {scheme}://{local}/ (store {}; {}; answers for {})",
            store.location(),
            if has_users {
                "users log in"
            } else {
                "no users: no login on loopback, until the first user is added"
            },
            hosts.names().join(", ")
        );
        let mut auth = web::auth::AuthConfig::new(format!("dashboard ({actor})"));
        if let Ok(Some(u)) = nix::unistd::User::from_uid(nix::unistd::geteuid()) {
            auth.local_user = u.name;
        }
        auth.secure_cookies = tls.is_some() || args.behind_proxy.is_some();
        auth.trusted_proxy = args.behind_proxy;
        let state = web::AppState::with_auth(store, hosts, auth);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        match tls {
            Some(tls) => web::serve_tls(listener, tls, state, shutdown).await,
            None => web::serve(listener, state, shutdown).await,
        }
        .context("the server failed")?;
        anyhow::Ok(0)
    })
}

/// Whether this process runs in a container (Docker's and Podman's marks).
fn in_container() -> bool {
    std::path::Path::new("/.dockerenv").exists()
        || std::path::Path::new("/run/.containerenv").exists()
}
