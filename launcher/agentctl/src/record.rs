//! The session store, as the commands use it: where it is, what a session
//! looks like in it, and keeping it true to what the backends know
//! (reconciliation).

use std::time::Duration;

use anyhow::{Context, Result};
use sandbox::{Handle, Liveness, SandboxSpec};
use serde_json::json;
use store::{NewEvent, NewSession, Session, SessionUpdate, Status, Store};

/// A session younger than this in `created` may still be starting: it is
/// not judged lost yet. AGENTCTL_LAUNCH_GRACE_MS shortens it for tests.
fn launch_grace() -> Duration {
    std::env::var("AGENTCTL_LAUNCH_GRACE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(30))
}

/// Runs one store operation on a throwaway single-threaded runtime. The
/// store is opened per operation: the native backend forks its helper,
/// and no connection (with its worker thread) may be open across that.
pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let out = rt.block_on(f);
    rt.shutdown_background();
    out
}

/// Where the store is: `--store`/AGENTCTL_STORE, or the default SQLite
/// file. `none` keeps no record.
#[derive(Clone, Debug)]
pub struct StoreUrl(pub Option<String>);

impl StoreUrl {
    pub fn resolve(flag: Option<String>) -> StoreUrl {
        match flag.as_deref() {
            Some("none") => StoreUrl(None),
            Some(url) => StoreUrl(Some(url.to_string())),
            None => StoreUrl(Some(Store::default_url())),
        }
    }

    pub fn required(&self) -> Result<&str> {
        self.0
            .as_deref()
            .context("this command needs the session store; drop `--store none`")
    }

    pub async fn open(&self) -> Result<Store> {
        let url = self.required()?;
        Store::connect(url)
            .await
            .context("cannot open the session store (choose another with --store URL, or --store none to keep no record)")
    }
}

/// Held by a launcher for as long as it runs, so that reconciliation
/// leaves its session alone: the launcher records that session itself.
pub struct LauncherLock {
    path: std::path::PathBuf,
    _file: std::fs::File,
}

impl LauncherLock {
    fn path(id: &str) -> std::path::PathBuf {
        backend_native::Dirs::for_current_user()
            .base
            .join("launchers")
            .join(format!("{id}.lock"))
    }

    pub fn take(id: &str) -> Result<LauncherLock> {
        use std::os::fd::AsRawFd;
        let path = Self::path(id);
        std::fs::create_dir_all(path.parent().expect("has a parent"))
            .with_context(|| format!("cannot create {}", path.display()))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            anyhow::bail!("session {id} already has a launcher");
        }
        Ok(LauncherLock { path, _file: file })
    }

    /// True when a live launcher holds the lock of session `id`.
    pub fn held(id: &str) -> bool {
        use std::os::fd::AsRawFd;
        let Ok(file) = std::fs::OpenOptions::new().write(true).open(Self::path(id)) else {
            return false;
        };
        // SAFETY: flock on a descriptor we own; released when it closes.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) != 0 }
    }
}

impl Drop for LauncherLock {
    fn drop(&mut self) {
        // Removed while still locked; the lock goes with the file handle.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Who is acting, for the audit log.
pub fn actor() -> String {
    let uid = nix::unistd::getuid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "?".into());
    format!("uid {uid} ({name})")
}

/// The record of a session: its whole plan (what it was allowed: mounts,
/// masks and why, env names, limits) as the effective policy, hashed.
pub fn new_session(spec: &SandboxSpec, backend: &str, detached: bool) -> Result<NewSession> {
    let policy = serde_json::to_string(spec)?;
    Ok(NewSession {
        id: spec.session.to_string(),
        profile: spec.profile.clone(),
        backend: backend.parse()?,
        image: spec.image.clone(),
        workspace: spec.workspace.to_string_lossy().into_owned(),
        command: spec.command.clone(),
        user: spec.identity.user_name.clone(),
        uid: spec.identity.host_uid,
        host: store::hostname(),
        created_at: None,
        detached,
        policy_sha256: store::chain::sha256_hex(policy.as_bytes()),
        policy,
    })
}

/// The first audit event: what the session was allowed. Paths and names,
/// never values.
pub fn created_event(spec: &SandboxSpec) -> NewEvent {
    NewEvent::new("created").actor(actor()).data(json!({
        "policy_sha256": spec.policy_sha256,
        "profile": spec.profile,
        "workspace": spec.workspace,
        "network": spec.network,
        "masked": spec.masked.iter().map(|m| &m.path).collect::<Vec<_>>(),
        "env": spec.env.iter().map(|e| &e.name).collect::<Vec<_>>(),
        "command": spec.command,
        "image": spec.image,
    }))
}

pub fn handle(s: &Session) -> Handle {
    Handle {
        session: s.id.clone(),
        helper_pid: s.helper_pid,
        container_id: s.container_id.clone(),
        log_path: s.log_path.clone().map(Into::into),
    }
}

/// Records how a session ended. `stopped` when someone stopped it.
pub async fn record_end(store: &Store, id: &str, code: i32) -> Result<()> {
    let s = store.get(id).await?;
    if !s.status.is_live() {
        return Ok(());
    }
    let events = store.events(id).await?;
    let stopped = events.iter().any(|e| e.kind == "stop_requested");
    let status = if stopped {
        Status::Stopped
    } else if code == backend_native::LAUNCHER_FAILURE {
        Status::Failed
    } else {
        Status::Exited
    };
    let kind = match status {
        Status::Failed => "failed",
        Status::Stopped => "stopped",
        _ => "exited",
    };
    store
        .append_event(id, NewEvent::new(kind).data(json!({ "code": code })))
        .await?;
    store
        .update(
            id,
            &SessionUpdate {
                status: Some(status),
                ended_at: Some(store::now_ms()),
                exit_code: Some(code),
                ..SessionUpdate::default()
            },
        )
        .await?;
    Ok(())
}

/// Brings live sessions in the store in line with what their backends
/// report: a running sandbox stays running (or becomes running), an ended
/// one gets its exit code, a vanished one becomes `lost`, and what is left
/// of it is removed. Backends are asked outside any store runtime (the
/// Docker backend runs its own).
pub fn reconcile(store_url: &StoreUrl) -> Result<()> {
    if store_url.0.is_none() {
        return Ok(());
    }
    let live = block_on(async {
        let store = store_url.open().await?;
        let live = store
            .with_status(&[Status::Created, Status::Running])
            .await?;
        store.close().await;
        anyhow::Ok(live)
    })?;
    if live.is_empty() {
        return Ok(());
    }
    let now = store::now_ms();
    let mut found = Vec::new();
    for s in live {
        if LauncherLock::held(&s.id) {
            // Its launcher is alive and will record it.
            continue;
        }
        let backend = crate::cmd::backend_for(s.backend);
        let h = handle(&s);
        match backend.liveness(&h) {
            Ok(Liveness::Gone)
                if s.status == Status::Created
                    && now - s.created_at < launch_grace().as_millis() as i64 => {}
            Ok(Liveness::Running) if s.status == Status::Running => {}
            Ok(l) => {
                match l {
                    // A vanished session's remains go; an ended one keeps
                    // its output (a Docker container, a native log) until
                    // `rm`.
                    Liveness::Gone => {
                        let _ = backend.remove(&h);
                    }
                    Liveness::Exited(_) if s.backend == store::Backend::Native => {
                        backend_native::forget_exit(&crate::cmd::native_backend(), &s.id);
                    }
                    _ => {}
                }
                found.push((s, l));
            }
            // The backend cannot say (a Docker daemon that is down): judge
            // nothing rather than declare the session lost.
            Err(e) => tracing::warn!("cannot check session {}: {e}", s.short_id()),
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    block_on(async {
        let store = store_url.open().await?;
        for (s, l) in found {
            // Another process may have recorded it meanwhile.
            let now_status = store.get(&s.id).await?.status;
            if now_status != s.status {
                continue;
            }
            match l {
                Liveness::Running => {
                    store
                        .append_event(
                            &s.id,
                            NewEvent::new("started").data(json!({"recovered": true})),
                        )
                        .await?;
                    store
                        .update(
                            &s.id,
                            &SessionUpdate {
                                status: Some(Status::Running),
                                started_at: Some(now),
                                ..SessionUpdate::default()
                            },
                        )
                        .await?;
                }
                Liveness::Exited(status) => record_end(&store, &s.id, status.code()).await?,
                Liveness::Gone => {
                    store
                        .append_event(
                            &s.id,
                            NewEvent::new("lost").data(json!({
                                "reason": "its sandbox or supervisor disappeared without a recorded end"
                            })),
                        )
                        .await?;
                    store
                        .update(
                            &s.id,
                            &SessionUpdate {
                                status: Some(Status::Lost),
                                ended_at: Some(now),
                                ..SessionUpdate::default()
                            },
                        )
                        .await?;
                }
            }
        }
        store.close().await;
        anyhow::Ok(())
    })
}
