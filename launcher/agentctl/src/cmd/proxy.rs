//! `agentctl proxy`: wiring for the docker-proxy crate. The scope of a
//! session comes from its profile (limits, network, the secrets of its
//! workspace), and denials go to the session's audit trail.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use docker_proxy::{Addr, Config, Listener, Role, Scope, SessionScope};
use lifecycle::{Lifecycle, StoreLocation};

use super::wiring::request;
use crate::cli::{PolicyArgs, ProxyArgs};

/// The daemon agentctl talks to when nothing says otherwise.
pub fn default_upstream() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => h,
        _ => "unix:///var/run/docker.sock".to_string(),
    }
}

fn load_role(args: &ProxyArgs) -> Result<Role> {
    match &args.rules {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read role file {}", file.display()))?;
            let name = args.role.clone().unwrap_or_else(|| {
                file.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "custom".into())
            });
            Ok(Role::parse(&name, &file.display().to_string(), &text)?)
        }
        None => Ok(Role::builtin(args.role.as_deref().unwrap_or_default())?),
    }
}

fn session_scope(args: &ProxyArgs, lc: &Lifecycle) -> Result<Option<SessionScope>> {
    if let Some(file) = &args.scope_file {
        let text =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        return Ok(Some(serde_json::from_slice(&text).with_context(|| {
            format!("{}: not a session scope", file.display())
        })?));
    }
    let (Some(id), Some(ws)) = (&args.session, &args.workspace) else {
        return Ok(None);
    };
    let policy_args = PolicyArgs {
        profile: args.profile.clone(),
        workspace: Some(ws.clone()),
        network: args.network,
        allow: Vec::new(),
        env: Vec::new(),
        image: None,
        mounts: Vec::new(),
        allow_home_workspace: false,
    };
    let spec = lc.plan(&request(&policy_args, vec!["true".into()]))?;
    let mut scope = lifecycle::scope_from_plan(&spec)?;
    scope.id = id.clone();
    Ok(Some(scope))
}

pub fn proxy(args: ProxyArgs, lc: &Lifecycle) -> Result<u8> {
    if args.list_operations {
        for name in docker_proxy::route::Endpoint::names() {
            println!("{name}");
        }
        return Ok(0);
    }
    let role = load_role(&args)?;
    let listen = Addr::parse(args.listen.as_deref().unwrap_or_default())
        .map_err(|e| anyhow::anyhow!("--listen {e}"))?;
    let upstream_s = args.upstream.clone().unwrap_or_else(default_upstream);
    let upstream = Addr::parse(&upstream_s).map_err(|e| anyhow::anyhow!("--upstream {e}"))?;
    let metrics_listen = args
        .metrics_listen
        .as_deref()
        .map(Addr::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--metrics-listen {e}"))?;
    let bind_roots = docker_proxy::bind_roots(&args.bind_roots, &role)?;
    let session = session_scope(&args, lc)?;
    if role.scope == Scope::Session && session.is_none() {
        bail!(
            "role {} serves one session's containers: give --session ID --workspace DIR",
            role.name
        );
    }
    if role.scope == Scope::Global && session.is_some() {
        bail!(
            "role {} is not scoped to a session; drop --session, or use --role session",
            role.name
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the proxy's runtime")?;
    rt.block_on(serve(
        args,
        role,
        Listen {
            api: listen,
            metrics: metrics_listen,
        },
        upstream,
        session,
        bind_roots,
        lc.store.clone(),
    ))
}

/// Where the proxy listens: for the Docker API, and for its metrics.
struct Listen {
    api: Addr,
    metrics: Option<Addr>,
}

async fn serve(
    args: ProxyArgs,
    role: Role,
    listen: Listen,
    upstream: Addr,
    session: Option<SessionScope>,
    bind_roots: Vec<PathBuf>,
    store: StoreLocation,
) -> Result<u8> {
    let api = docker_proxy::negotiate(&upstream).await?;
    let audit = match (&session, store.keeps_records()) {
        (Some(s), true) => Some(lifecycle::denials_to_record(store.clone(), s.id.clone())),
        _ => None,
    };
    let cfg = Arc::new(Config {
        role,
        upstream,
        api,
        session,
        max_body: args.max_body,
        audit,
        creates: Default::default(),
        bind_roots,
        metrics: Default::default(),
    });
    let listener = Listener::bind(&listen.api).await?;
    eprintln!(
        "agentctl proxy: role {} on {}, Docker API {}.{} at {}",
        cfg.role.name,
        listener.local_addr(),
        api.0,
        api.1,
        cfg.upstream
    );
    if !cfg.bind_roots.is_empty() {
        let roots: Vec<String> = cfg
            .bind_roots
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        eprintln!(
            "agentctl proxy: bind sources only under {}",
            roots.join(", ")
        );
    }
    // Dropped (and its unix socket removed) when the proxy stops.
    let _metrics = match &listen.metrics {
        Some(addr) => {
            let l = Listener::bind(addr).await.context("--metrics-listen")?;
            eprintln!("agentctl proxy: metrics on {}/metrics", l.local_addr());
            let task = tokio::spawn(docker_proxy::serve_metrics(
                l,
                cfg.clone(),
                std::future::pending(),
            ));
            Some(AbortOnDrop(task))
        }
        None => None,
    };
    if let Some(f) = &args.ready_file {
        write_ready(f)?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    docker_proxy::serve(listener, cfg.clone(), shutdown).await?;
    if let Some(s) = &cfg.session {
        match docker_proxy::rules::cleanup_session(&cfg, s).await {
            Ok(n) => tracing::info!(
                removed = n,
                "removed the session's containers, networks and volumes"
            ),
            Err(e) => {
                eprintln!(
                    "agentctl proxy: cleaning up session {}'s containers failed: {e}",
                    s.id
                );
                return Ok(1);
            }
        }
    }
    Ok(0)
}

/// Stops a spawned task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn write_ready(f: &Path) -> Result<()> {
    std::fs::write(f, b"ready").with_context(|| format!("cannot write {}", f.display()))
}
