//! The session store, as the commands use it: where it is, what a session
//! looks like in it, and keeping it true to what the backends know
//! (reconciliation).

use std::time::Duration;

use anyhow::{Context, Result};
use sandbox::{Handle, Liveness, SandboxSpec};
use serde_json::json;
use store::{NewEvent, NewSession, Session, SessionStore, SessionUpdate, Status};

/// A session younger than this in `created` may still be starting: it is
/// not judged lost yet. AGENTCTL_LAUNCH_GRACE_MS shortens it for tests.
fn launch_grace() -> Duration {
    std::env::var("AGENTCTL_LAUNCH_GRACE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(30))
}

/// Sleeps for the milliseconds the environment variable `var` names, so
/// that a test can put another process's step between two of this one's
/// (a race made deterministic). Nothing else reads these variables.
pub(crate) fn test_pause(var: &str) {
    if let Some(ms) = std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok()) {
        std::thread::sleep(Duration::from_millis(ms));
    }
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
            None => StoreUrl(Some(SessionStore::default_url())),
        }
    }

    pub fn required(&self) -> Result<&str> {
        self.0
            .as_deref()
            .context("this command needs the session store; drop `--store none`")
    }

    /// Opens the store with one connection: the commands do one thing at a
    /// time. The schema is brought up to date by the first open in this
    /// process only; a launch opens the store more than once.
    pub async fn open(&self) -> Result<SessionStore> {
        static MIGRATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        use std::sync::atomic::Ordering;
        let url = self.required()?;
        let store = SessionStore::connect_with(
            url,
            &store::ConnectOptions {
                max_connections: 1,
                migrate: !MIGRATED.load(Ordering::Acquire),
            },
        )
        .await
        .context("cannot open the session store (choose another with --store URL, or --store none to keep no record)")?;
        MIGRATED.store(true, Ordering::Release);
        Ok(store)
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
pub async fn record_end(store: &SessionStore, id: &str, code: i32) -> Result<()> {
    record_end_after(store, id, code, Vec::new(), SessionUpdate::default()).await
}

/// Removes the placeholders (see `sandbox::hostrun`) of session `id`'s
/// plan, now that it has ended, unless another live session in the store
/// relies on the same path.
pub async fn release_placeholders(
    store: &SessionStore,
    id: &str,
    files: &[sandbox::hostrun::HostRunFile],
) {
    if files.iter().all(|f| f.placeholder.is_none()) {
        return;
    }
    let live = match store.with_status(&[Status::Created, Status::Running]).await {
        Ok(l) => l,
        // Leaving a placeholder in place is harmless (git reads it as "none");
        // removing one that another session mounted is not.
        Err(e) => {
            tracing::warn!("placeholders of session {id} kept: {e}");
            return;
        }
    };
    let in_use: std::collections::HashSet<std::path::PathBuf> = live
        .iter()
        .filter(|s| s.id != id)
        .flat_map(|s| sandbox::hostrun::from_recorded_plan(&s.policy))
        .map(|f| f.host)
        .collect();
    sandbox::hostrun::release(files, &|p| in_use.contains(p));
}

/// How a session that ended with `code` goes on record: stopped when a
/// stop was asked for, failed when the launcher failed, exited otherwise.
fn end_of(code: i32, stopped: bool) -> (Status, NewEvent) {
    let (status, kind) = if stopped {
        (Status::Stopped, "stopped")
    } else if code == backend_native::LAUNCHER_FAILURE {
        (Status::Failed, "failed")
    } else {
        (Status::Exited, "exited")
    };
    (status, NewEvent::new(kind).data(json!({ "code": code })))
}

/// Records `before` (events of the run, in order) and the session's end,
/// with `update`'s fields, in one transaction.
pub async fn record_end_after(
    store: &SessionStore,
    id: &str,
    code: i32,
    mut before: Vec<NewEvent>,
    update: SessionUpdate,
) -> Result<()> {
    let (now, stopped) = store.status_with_event(id, "stop_requested").await?;
    if !now.is_live() {
        return Ok(());
    }
    let (status, event) = end_of(code, stopped);
    before.push(event);
    // Only while it is still live: another process (a reconcile, the
    // session's supervisor) may have recorded the end since the read above.
    store
        .record_if(
            id,
            &[Status::Created, Status::Running],
            before,
            &SessionUpdate {
                status: Some(status),
                ended_at: Some(store::now_ms()),
                exit_code: Some(code),
                ..update
            },
        )
        .await?;
    Ok(())
}

/// Records `before` and the launch's failure in one transaction.
pub async fn record_failure(
    store: &SessionStore,
    id: &str,
    error: &str,
    mut before: Vec<NewEvent>,
    update: SessionUpdate,
) -> Result<()> {
    before.push(NewEvent::new("failed").data(json!({ "error": error })));
    store
        .record(
            id,
            before,
            &SessionUpdate {
                status: Some(Status::Failed),
                ended_at: Some(store::now_ms()),
                exit_code: Some(backend_native::LAUNCHER_FAILURE),
                ..update
            },
        )
        .await?;
    Ok(())
}

/// How a foreground session ended, as far as the launcher knows.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The agent's exit code (or the launcher's, for a refused command).
    Exit(i32),
    /// The backend failed; the message says why.
    Failed(String),
}

impl Outcome {
    /// `before`, then the end, in one transaction.
    pub async fn record(
        &self,
        store: &SessionStore,
        id: &str,
        before: Vec<NewEvent>,
        update: SessionUpdate,
    ) -> Result<()> {
        match self {
            Outcome::Exit(code) => record_end_after(store, id, *code, before, update).await,
            Outcome::Failed(e) => record_failure(store, id, e, before, update).await,
        }
    }
}

/// Puts a new session on record, having reconciled the store. Started
/// before planning: a thread opens the store and looks for live sessions
/// meanwhile, and [`Opening::create`] hands it the session. When every
/// live session has a launcher of its own (the usual case: none is live)
/// there is nothing to reconcile, and that one connection does it all.
/// The thread is gone when `create` returns, before any backend forks.
pub struct Opening {
    store_url: StoreUrl,
    send: Option<tokio::sync::oneshot::Sender<(NewSession, NewEvent)>>,
    thread: Option<std::thread::JoinHandle<Result<bool>>>,
}

impl Opening {
    pub fn start(store_url: &StoreUrl) -> Opening {
        let (send, recv) = tokio::sync::oneshot::channel::<(NewSession, NewEvent)>();
        let url = store_url.clone();
        let thread = std::thread::spawn(move || {
            block_on(async move {
                let store = url.open().await?;
                let live = store.with_status(&[Status::Created, Status::Running]).await;
                let settled = match live {
                    Ok(live) => live.iter().all(|l| LauncherLock::held(&l.id)),
                    Err(e) => {
                        store.close().await;
                        return Err(e.into());
                    }
                };
                let mut created = Ok(false);
                // No session comes when planning failed.
                if settled && let Ok((s, first)) = recv.await {
                    created = store.create_session(&s, first).await.map(|_| true);
                }
                store.close().await;
                Ok(created?)
            })
        });
        Opening {
            store_url: store_url.clone(),
            send: Some(send),
            thread: Some(thread),
        }
    }

    pub fn create(mut self, s: NewSession, first: NewEvent) -> Result<()> {
        let send = self.send.take().expect("create is called once");
        // A thread that is done already (store unreachable, or sessions to
        // reconcile) has dropped its receiver; what it says is below.
        let _ = send.send((s.clone(), first.clone()));
        let thread = self.thread.take().expect("create is called once");
        let created = thread
            .join()
            .map_err(|_| anyhow::anyhow!("the session store's thread panicked"))??;
        if !created {
            reconcile(&self.store_url)?;
            block_on(async {
                let store = self.store_url.open().await?;
                store.create_session(&s, first).await?;
                store.close().await;
                anyhow::Ok(())
            })?;
        }
        Ok(())
    }
}

impl Drop for Opening {
    /// Planning failed: the thread closes the store and ends.
    fn drop(&mut self) {
        self.send.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a [`LiveRecord`] got on record.
#[derive(Debug, Default)]
pub struct Written {
    pub started: bool,
    pub ended: bool,
    pub error: Option<anyhow::Error>,
}

/// A running foreground session's record, kept by a thread of its own:
/// the session shows as running while it runs, and its end goes on record
/// over a connection that is already open, which keeps the store's share
/// of a launch small.
///
/// Start it only once the sandbox is running: the native backend forks
/// its helper before that, and no thread may exist across that fork.
pub struct LiveRecord {
    end: Option<tokio::sync::oneshot::Sender<(Vec<NewEvent>, Outcome)>>,
    thread: std::thread::JoinHandle<Written>,
}

impl LiveRecord {
    pub fn start(store_url: &StoreUrl, id: &str, started_at: i64, pid: Option<u32>) -> LiveRecord {
        let (tx, rx) = tokio::sync::oneshot::channel::<(Vec<NewEvent>, Outcome)>();
        let (url, id) = (store_url.clone(), id.to_string());
        let thread = std::thread::spawn(move || {
            block_on(async move {
                let mut w = Written::default();
                let store = match url.open().await {
                    Ok(s) => s,
                    Err(e) => {
                        w.error = Some(e);
                        return w;
                    }
                };
                let started = store
                    .record(
                        &id,
                        vec![NewEvent::new("started").data(json!({ "pid": pid }))],
                        &SessionUpdate {
                            status: Some(Status::Running),
                            started_at: Some(started_at),
                            ..SessionUpdate::default()
                        },
                    )
                    .await;
                match started {
                    Ok(_) => w.started = true,
                    Err(e) => w.error = Some(e.into()),
                }
                // A dropped sender (the launcher gave up) ends the thread.
                if w.error.is_none()
                    && let Ok((events, outcome)) = rx.await
                {
                    match outcome
                        .record(&store, &id, events, SessionUpdate::default())
                        .await
                    {
                        Ok(()) => w.ended = true,
                        Err(e) => w.error = Some(e),
                    }
                }
                store.close().await;
                w
            })
        });
        LiveRecord {
            end: Some(tx),
            thread,
        }
    }

    /// Records `events` (the signals passed on) and the end, and waits for
    /// the thread.
    pub fn finish(mut self, events: Vec<NewEvent>, outcome: Outcome) -> Written {
        if let Some(tx) = self.end.take() {
            let _ = tx.send((events, outcome));
        }
        self.thread.join().unwrap_or_else(|_| Written {
            error: Some(anyhow::anyhow!("the session's recorder thread panicked")),
            ..Written::default()
        })
    }
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
    test_pause("AGENTCTL_TEST_RECONCILE_PAUSE_MS");
    let now = store::now_ms();
    let mut found = Vec::new();
    for s in live {
        if LauncherLock::held(&s.id) {
            // Its launcher is alive and will record it.
            continue;
        }
        let backend = crate::cmd::backend_for(s.backend);
        match backend.liveness(&handle(&s)) {
            Ok(Liveness::Gone)
                if s.status == Status::Created
                    && now - s.created_at < launch_grace().as_millis() as i64 => {}
            Ok(Liveness::Running) if s.status == Status::Running => {}
            Ok(l) => found.push((s, l)),
            // The backend cannot say (a Docker daemon that is down): judge
            // nothing rather than declare the session lost.
            Err(e) => tracing::warn!("cannot check session {}: {e}", s.short_id()),
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    // The judgement goes on record first, and only if the row still says
    // what it said when the backend was asked: the session's supervisor may
    // have recorded its end meanwhile, after which "no sandbox, no exit
    // file" means "ended and tidied up", not "vanished".
    let won = block_on(async {
        let store = store_url.open().await?;
        let mut won = Vec::new();
        for (s, l) in found {
            let (events, update) = match l {
                Liveness::Running => (
                    vec![NewEvent::new("started").data(json!({"recovered": true}))],
                    SessionUpdate {
                        status: Some(Status::Running),
                        started_at: Some(now),
                        ..SessionUpdate::default()
                    },
                ),
                Liveness::Exited(status) => {
                    let code = status.code();
                    let stopped = store.status_with_event(&s.id, "stop_requested").await?.1;
                    let (st, event) = end_of(code, stopped);
                    (
                        vec![event],
                        SessionUpdate {
                            status: Some(st),
                            ended_at: Some(now),
                            exit_code: Some(code),
                            ..SessionUpdate::default()
                        },
                    )
                }
                Liveness::Gone => (
                    vec![NewEvent::new("lost").data(json!({
                        "reason": "its sandbox or supervisor disappeared without a recorded end"
                    }))],
                    SessionUpdate {
                        status: Some(Status::Lost),
                        ended_at: Some(now),
                        ..SessionUpdate::default()
                    },
                ),
            };
            if store
                .record_if(&s.id, &[s.status], events, &update)
                .await?
                .is_some()
            {
                won.push((s, l));
            }
        }
        store.close().await;
        anyhow::Ok(won)
    })?;
    let ended: Vec<&Session> = won
        .iter()
        .filter(|(_, l)| !matches!(l, Liveness::Running))
        .map(|(s, _)| s)
        .collect();
    if !ended.is_empty() {
        block_on(async {
            let store = store_url.open().await?;
            for s in ended {
                let files = sandbox::hostrun::from_recorded_plan(&s.policy);
                release_placeholders(&store, &s.id, &files).await;
            }
            store.close().await;
            anyhow::Ok(())
        })?;
    }
    for (s, l) in won {
        let backend = crate::cmd::backend_for(s.backend);
        match l {
            Liveness::Running => continue,
            // A vanished session's remains go; an ended one keeps its
            // output (a Docker container, a native log) until `rm`.
            Liveness::Gone => {
                let _ = backend.remove(&handle(&s));
            }
            Liveness::Exited(_) if s.backend == store::Backend::Native => {
                backend_native::forget_exit(&crate::cmd::native_backend(), &s.id);
            }
            Liveness::Exited(_) => {}
        }
        // A session that ended takes its Docker proxy (and the containers
        // the agent made through it) along.
        crate::cmd::stop_session_proxy(&s.id);
    }
    Ok(())
}
