//! `agentctl proxy`: wiring for the docker-proxy crate. The scope of a
//! session comes from its profile (limits, network, the secrets of its
//! workspace), and denials go to the session's audit trail.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use docker_proxy::{Addr, AuditEvent, ChildLimits, Config, Listener, Role, Scope, SessionScope};
use serde_json::json;

use crate::cli::{PolicyArgs, ProxyArgs};
use crate::record::StoreUrl;

/// The daemon agentctl talks to when nothing says otherwise.
pub fn default_upstream() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => h,
        _ => "unix:///var/run/docker.sock".to_string(),
    }
}

/// Works out a session's scope from its profile: what `agentctl run` does
/// for `docker: true` profiles, and `proxy --session` by hand.
pub fn scope_from_plan(spec: &sandbox::SandboxSpec) -> Result<SessionScope> {
    let masked: Vec<PathBuf> = spec
        .masked
        .iter()
        .filter(|m| m.path.starts_with(&spec.workspace))
        .map(|m| m.path.clone())
        .collect();
    let limits = ChildLimits {
        memory: i64::try_from(spec.limits.memory_bytes)
            .ok()
            .filter(|m| *m > 0),
        nano_cpus: Some(i64::from(spec.limits.cpu_millis) * 1_000_000).filter(|c| *c > 0),
        pids: Some(i64::from(spec.limits.pids)).filter(|p| *p > 0),
        containers: Some(spec.limits.containers),
    };
    let read_only = spec
        .host_run
        .iter()
        .filter(|f| f.host.starts_with(&spec.workspace))
        .map(|f| f.host.clone())
        .collect();
    let workspace_writable = spec
        .mounts
        .iter()
        .any(|m| m.purpose == sandbox::spec::MountPurpose::Workspace && m.writable);
    Ok(SessionScope::new(
        spec.session.to_string(),
        &spec.workspace,
        masked,
        limits,
        spec.network,
    )?
    .with_read_only(read_only, workspace_writable))
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

fn session_scope(args: &ProxyArgs) -> Result<Option<SessionScope>> {
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
        env: Vec::new(),
        image: None,
        mounts: Vec::new(),
        allow_home_workspace: false,
    };
    let spec = super::plan(&policy_args, vec!["true".into()])?;
    let mut scope = scope_from_plan(&spec)?;
    scope.id = id.clone();
    Ok(Some(scope))
}

pub fn proxy(args: ProxyArgs, store: &StoreUrl) -> Result<u8> {
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
    let session = session_scope(&args)?;
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
    rt.block_on(serve(args, role, listen, upstream, session, store.clone()))
}

async fn serve(
    args: ProxyArgs,
    role: Role,
    listen: Addr,
    upstream: Addr,
    session: Option<SessionScope>,
    store: StoreUrl,
) -> Result<u8> {
    let api = docker_proxy::negotiate(&upstream).await?;
    let audit = match (&session, store.0.is_some()) {
        (Some(s), true) => Some(audit_sink(store.clone(), s.id.clone())),
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
    });
    let listener = Listener::bind(&listen).await?;
    eprintln!(
        "agentctl proxy: role {} on {}, Docker API {}.{} at {}",
        cfg.role.name,
        listener.local_addr(),
        api.0,
        api.1,
        cfg.upstream
    );
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

fn write_ready(f: &Path) -> Result<()> {
    std::fs::write(f, b"ready").with_context(|| format!("cannot write {}", f.display()))
}

/// Denials go to the session's audit trail, in order, from one task, so a
/// burst of denials never blocks a connection on the store.
fn audit_sink(store: StoreUrl, session: String) -> docker_proxy::AuditSink {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<AuditEvent>();
    tokio::spawn(async move {
        let mut db = None;
        while let Some(ev) = rx.recv().await {
            if db.is_none() {
                match store.open().await {
                    Ok(s) => db = Some(s),
                    Err(e) => {
                        tracing::warn!("cannot record a denial in the session store: {e:#}");
                        continue;
                    }
                }
            }
            let Some(s) = db.as_ref() else { continue };
            let event = store::NewEvent::new("proxy_denied").data(json!({
                "operation": ev.operation,
                "role": ev.role,
                "reason": ev.reason,
            }));
            if let Err(e) = s.append_event(&session, event).await {
                tracing::warn!("cannot record a denial in the session store: {e}");
            }
        }
    });
    Arc::new(move |ev| {
        let _ = tx.send(ev);
    })
}

/// The proxy of a `docker: true` session: a child process of its own
/// (its own process group, so a Ctrl-C meant for the agent does not take
/// the agent's Docker away mid-session), serving one socket that is bound
/// into the sandbox at /var/run/docker.sock.
pub struct SessionProxy {
    pid: i32,
    dir: PathBuf,
}

/// Where a session's proxy keeps its socket, scope, log and pid.
fn proxy_dir(id: &str) -> PathBuf {
    backend_native::Dirs::for_current_user()
        .base
        .join("proxies")
        .join(id)
}

const SOCKET_IN_SANDBOX: &str = "/var/run/docker.sock";

impl SessionProxy {
    /// Starts the proxy and waits until it listens. Any failure refuses the
    /// session: an agent promised a Docker socket under a policy never gets
    /// one without it.
    pub fn start(spec: &sandbox::SandboxSpec, store: &StoreUrl) -> Result<SessionProxy> {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        let id = spec.session.to_string();
        let dir = proxy_dir(&id);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let scope = scope_from_plan(spec)?;
        let scope_file = dir.join("scope.json");
        std::fs::write(&scope_file, serde_json::to_vec(&scope)?)?;
        let sock = dir.join("docker.sock");
        let log = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(dir.join("proxy.log"))?
        };
        let child = std::process::Command::new(super::self_path())
            .arg("--store")
            .arg(store.0.as_deref().unwrap_or("none"))
            .args(["proxy", "--role", "session", "--listen"])
            .arg(format!("unix://{}", sock.display()))
            .arg("--scope-file")
            .arg(&scope_file)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("cannot start the Docker proxy")?;
        let pid = child.id() as i32;
        std::fs::write(dir.join("proxy.pid"), pid.to_string())?;
        let proxy = SessionProxy { pid, dir };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        let mut child = child;
        loop {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(proxy.dir.join("proxy.log")).unwrap_or_default();
                let _ = std::fs::remove_dir_all(&proxy.dir);
                bail!(
                    "the profile gives the agent Docker (`docker: true`), but the Docker proxy did not start ({status}): {}",
                    log.trim()
                );
            }
            if std::time::Instant::now() > deadline {
                proxy.stop();
                bail!("the Docker proxy did not listen within 15 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(proxy)
    }

    /// Adds the socket's mount and DOCKER_HOST to the sandbox.
    pub fn attach(&self, spec: &mut sandbox::SandboxSpec) {
        spec.mounts.push(sandbox::spec::MountPlan {
            destination: PathBuf::from(SOCKET_IN_SANDBOX),
            source: sandbox::spec::MountSource::Bind {
                path: self.dir.join("docker.sock"),
                file: true,
            },
            writable: true,
            purpose: sandbox::spec::MountPurpose::Generated,
        });
        spec.env.retain(|e| e.name != "DOCKER_HOST");
        spec.env.push(sandbox::spec::EnvEntry {
            name: "DOCKER_HOST".into(),
            value: policy::env::Redacted(format!("unix://{SOCKET_IN_SANDBOX}")),
            source: policy::env::EnvSource::ProfileSet,
        });
    }

    /// Stops the proxy, which removes the session's containers, networks
    /// and volumes before it exits.
    pub fn stop(&self) {
        stop_pid(self.pid, &self.dir);
    }
}

fn stop_pid(pid: i32, dir: &Path) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let pid = Pid::from_raw(pid);
    if kill(pid, Signal::SIGTERM).is_ok() {
        // Reaped here when it is our child; polled when it is not.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) => {}
                Ok(_) => break,
                Err(_) if kill(pid, None).is_err() => break,
                Err(_) => {}
            }
            if std::time::Instant::now() > deadline {
                let _ = kill(pid, Signal::SIGKILL);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    // The log goes with the directory; what it says about cleaning up
    // (containers of the session left behind) must reach the user first.
    if let Ok(log) = std::fs::read_to_string(dir.join("proxy.log")) {
        for line in log.lines().filter(|l| l.contains("cleaning up")) {
            eprintln!("{line}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Stops the proxy of a session that ran detached, if it had one.
pub fn stop_session_proxy(id: &str) {
    let dir = proxy_dir(id);
    if let Some(pid) = std::fs::read_to_string(dir.join("proxy.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        // The pid may have been reused since: only a proxy serving this
        // directory is stopped.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let ours = String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy());
        if ours {
            stop_pid(pid, &dir);
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
