//! The worker's loop: register, claim what fits, run each claim as a
//! child process (`job`), heartbeat, declare silent workers gone, drain.
//!
//! Claims are woken by `LISTEN agentctl_requests` (a request queued or
//! given back); every heartbeat also tries once, in case a notice was
//! missed while the listening connection was down.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use store::SessionStore;
use store::queue::{
    Labels, NewWorker, REQUESTS_CHANNEL, Request, RequestState, WORKERS_CHANNEL, WorkerState,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::{info, warn};

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::WorkerError;
use crate::git::GitConfig;
use crate::job::{EXIT_NOT_OURS, Job};
use crate::metrics::Metrics;
use crate::roots::Roots;

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The store's URL (Postgres).
    pub store: String,
    /// Its identity (`worker-id`) and the jobs' logs (`logs/`).
    pub data_dir: PathBuf,
    /// Where git workspaces are cloned (`<dir>/<request id>`): never inside
    /// agentctl's own state, which no session may see.
    pub clones: PathBuf,
    pub name: String,
    pub backend: store::Backend,
    pub capacity: u32,
    pub labels: Labels,
    pub roots: Roots,
    pub git: GitConfig,
    pub heartbeat: Duration,
    /// A worker silent this long is declared gone by the others.
    pub timeout: Duration,
    /// This binary, run as `__worker-job` for each claim.
    pub self_exe: PathBuf,
    /// The image of sessions whose request and profile name none.
    pub default_image: Option<String>,
    /// Where to serve the worker's metrics (`GET /metrics`).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// The worker's id in `data_dir`, made on first use.
pub fn worker_id(data_dir: &std::path::Path) -> Result<String, WorkerError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|e| WorkerError::io(format!("cannot create {}", data_dir.display()), e))?;
    let file = data_dir.join("worker-id");
    match std::fs::read_to_string(&file) {
        Ok(s) => {
            let id = s.trim().to_string();
            if id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Ok(id);
            }
            Err(WorkerError::Config(format!(
                "{} does not hold a worker id (32 hex digits); remove it to make a new one",
                file.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 16];
            let mut f = std::fs::File::open("/dev/urandom")
                .map_err(|e| WorkerError::io("cannot read /dev/urandom", e))?;
            std::io::Read::read_exact(&mut f, &mut bytes)
                .map_err(|e| WorkerError::io("cannot read /dev/urandom", e))?;
            let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .map_err(|e| WorkerError::io(format!("cannot create {}", file.display()), e))?;
            std::io::Write::write_all(&mut out, format!("{id}\n").as_bytes())
                .map_err(|e| WorkerError::io(format!("cannot write {}", file.display()), e))?;
            Ok(id)
        }
        Err(e) => Err(WorkerError::io(
            format!("cannot read {}", file.display()),
            e,
        )),
    }
}

/// A running job: its child's pid.
struct Running {
    pid: u32,
}

/// Runs the worker until it has drained (SIGTERM or SIGINT, or
/// `agentctl worker --drain`). `ready` is told once it is registered.
pub async fn run(cfg: WorkerConfig, ready: impl FnOnce(&str)) -> Result<(), WorkerError> {
    let id = worker_id(&cfg.data_dir)?;
    // One worker per identity: two claiming under one id would each
    // think the other's claims were theirs.
    let lock_path = cfg.data_dir.join("worker.lock");
    let _lock = fslock::try_exclusive(&lock_path)
        .map_err(|e| WorkerError::io(format!("cannot lock {}", lock_path.display()), e))?
        .ok_or_else(|| {
            WorkerError::Config(format!(
                "another worker runs from {}; give this one its own --data-dir",
                cfg.data_dir.display()
            ))
        })?;
    let store = SessionStore::connect(&cfg.store).await?;
    if !store.has_queue() {
        return Err(store::StoreError::NeedsPostgres { what: "a worker" }.into());
    }
    let mut requests = store.listen(REQUESTS_CHANNEL).await?;
    let mut workers = store.listen(WORKERS_CHANNEL).await?;
    let me = NewWorker {
        id: id.clone(),
        name: cfg.name.clone(),
        host: store::hostname(),
        backend: cfg.backend,
        labels: cfg.labels.clone(),
        capacity: cfg.capacity,
    };
    store.register_worker(&me, store::now_ms()).await?;
    adopt(&store, &id).await?;
    let metrics = Arc::new(Metrics::default());
    metrics
        .capacity
        .store(cfg.capacity.into(), Ordering::Relaxed);
    if let Some(addr) = cfg.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| WorkerError::io(format!("--metrics-listen {addr}: cannot listen"), e))?;
        tokio::spawn(crate::metrics::serve(
            listener,
            metrics.clone(),
            cfg.name.clone(),
        ));
    }
    info!(worker = %cfg.name, id = %id, "registered");
    ready(&id);

    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, Option<i32>)>();
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut draining = false;
    let mut tick = tokio::time::interval(cfg.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| WorkerError::io("cannot handle SIGTERM", e))?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| WorkerError::io("cannot handle SIGINT", e))?;
    loop {
        // Take what fits.
        while !draining && (running.len() as u32) < cfg.capacity {
            let claimed = match store.claim_request(&id, store::now_ms()).await {
                Ok(c) => c,
                Err(e) => {
                    warn!("cannot claim: {e}");
                    break;
                }
            };
            let Some(r) = claimed else { break };
            match spawn_job(&cfg, &id, &r, done_tx.clone()).await {
                Ok(pid) => {
                    info!(request = %r.id, pid, "claimed");
                    running.insert(r.id.clone(), Running { pid });
                    metrics.claimed.fetch_add(1, Ordering::Relaxed);
                    metrics
                        .running
                        .store(running.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    warn!(request = %r.id, "cannot start its job: {e}");
                    let _ = store
                        .finish_request(
                            &r.id,
                            &id,
                            RequestState::Failed,
                            Some(&format!("the worker could not start it: {e}")),
                            store::now_ms(),
                        )
                        .await;
                }
            }
        }
        if draining && running.is_empty() {
            break;
        }
        tokio::select! {
            n = recv(&mut requests) => {
                if n.is_err() {
                    // Polled every heartbeat until the listener is back.
                    requests = None;
                }
            }
            n = recv(&mut workers) => {
                match n {
                    Ok(Some(w)) if w == id => {
                        if store.heartbeat_worker(&id, store::now_ms()).await? == WorkerState::Draining {
                            info!("draining: told to");
                            draining = true;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => workers = None,
                }
            }
            Some((rid, code)) = done_rx.recv() => {
                running.remove(&rid);
                metrics.running.store(running.len() as u64, Ordering::Relaxed);
                if code == Some(0) {
                    metrics.succeeded.fetch_add(1, Ordering::Relaxed);
                } else {
                    metrics.failed.fetch_add(1, Ordering::Relaxed);
                }
                ended(&store, &id, &rid, code, &cfg.data_dir).await;
            }
            _ = tick.tick() => {
                let now = store::now_ms();
                let beat = store.heartbeat_worker(&id, now).await;
                if beat.is_ok() {
                    metrics.heartbeats.fetch_add(1, Ordering::Relaxed);
                } else {
                    metrics.heartbeat_failures.fetch_add(1, Ordering::Relaxed);
                }
                metrics.draining.store(draining.into(), Ordering::Relaxed);
                match beat {
                    Ok(WorkerState::Gone) => {
                        // Declared gone while alive (a partition): its
                        // sessions are on record as lost, so they must not
                        // go on unrecorded.
                        warn!("this worker was declared gone; stopping its jobs and registering again");
                        for r in running.values() {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(r.pid as i32),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                        store.register_worker(&me, now).await?;
                        if draining {
                            let _ = store.set_worker_state(&id, WorkerState::Draining, None).await;
                        }
                    }
                    Ok(WorkerState::Draining) if !draining => {
                        info!("draining: told to");
                        draining = true;
                    }
                    Ok(_) => {}
                    Err(e) => warn!("heartbeat failed: {e}"),
                }
                let stale = now - cfg.timeout.as_millis() as i64;
                match store.reap_workers(stale, now).await {
                    Ok(reaped) => {
                        for r in reaped {
                            warn!(
                                worker = %r.name,
                                requeued = r.requeued.len(),
                                lost = r.lost.len(),
                                "declared a silent worker gone"
                            );
                        }
                    }
                    Err(e) => warn!("cannot reap silent workers: {e}"),
                }
                if requests.is_none() {
                    requests = store.listen(REQUESTS_CHANNEL).await.ok().flatten();
                }
                if workers.is_none() {
                    workers = store.listen(WORKERS_CHANNEL).await.ok().flatten();
                }
            }
            _ = term.recv() => {
                info!("draining: SIGTERM");
                draining = true;
                let _ = store.set_worker_state(&id, WorkerState::Draining, None).await;
            }
            _ = int.recv() => {
                info!("draining: SIGINT");
                draining = true;
                let _ = store.set_worker_state(&id, WorkerState::Draining, None).await;
            }
        }
    }
    store
        .set_worker_state(&id, WorkerState::Gone, Some("drained and exited"))
        .await?;
    info!("drained");
    Ok(())
}

/// The next notice on `l`; pends forever without a listener (the
/// heartbeat polls instead).
async fn recv(l: &mut Option<store::Listener>) -> Result<Option<String>, store::StoreError> {
    match l {
        Some(l) => l.recv().await.map(Some),
        None => std::future::pending().await,
    }
}

/// What this worker held in an earlier life: claims not started go back
/// to the queue; started ones whose session ended (the reconcile before
/// the worker started judged them) are done.
async fn adopt(store: &SessionStore, id: &str) -> Result<(), WorkerError> {
    let back = store
        .release_claims(
            id,
            "back in the queue: its worker restarted before starting it",
        )
        .await?;
    if !back.is_empty() {
        info!(requests = back.len(), "gave back claims of an earlier life");
    }
    let held = store
        .requests(None, &[RequestState::Started], 10_000)
        .await?;
    for r in held.iter().filter(|r| r.worker.as_deref() == Some(id)) {
        let live = match store.get(&r.id).await {
            Ok(s) => s.status.is_live(),
            Err(_) => false,
        };
        if !live {
            store
                .finish_request(&r.id, id, RequestState::Done, None, store::now_ms())
                .await?;
        }
    }
    Ok(())
}

/// Starts the child that runs `r`, and a task that reports its end.
async fn spawn_job(
    cfg: &WorkerConfig,
    worker: &str,
    r: &Request,
    done: mpsc::UnboundedSender<(String, Option<i32>)>,
) -> Result<u32, WorkerError> {
    let job = Job {
        store: cfg.store.clone(),
        worker: worker.to_string(),
        worker_name: cfg.name.clone(),
        parent: std::process::id() as i32,
        request: r.id.clone(),
        user: r.user.clone(),
        actor: r.actor.clone(),
        profile: r.profile.clone(),
        workspace: r.workspace.clone(),
        command: r.command.clone(),
        image: r.image.clone(),
        backend: r.backend.unwrap_or(cfg.backend),
        roots: cfg.roots.clone(),
        git: cfg.git.clone(),
        clones: cfg.clones.clone(),
        default_image: cfg.default_image.clone(),
    };
    let logs = cfg.data_dir.join("logs");
    std::fs::create_dir_all(&logs)
        .map_err(|e| WorkerError::io(format!("cannot create {}", logs.display()), e))?;
    let log = std::fs::File::create(logs.join(format!("{}.log", r.id)))
        .map_err(|e| WorkerError::io("cannot create the job's log", e))?;
    let mut child = tokio::process::Command::new(&cfg.self_exe)
        .arg("__worker-job")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| WorkerError::io(format!("cannot run {}", cfg.self_exe.display()), e))?;
    let pid = child.id().unwrap_or(0);
    let text = serde_json::to_vec(&job)
        .map_err(|e| WorkerError::Config(format!("cannot write the job: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&text)
            .await
            .map_err(|e| WorkerError::io("cannot hand the job to its child", e))?;
        drop(stdin);
    }
    let rid = r.id.clone();
    tokio::spawn(async move {
        let code = child.wait().await.ok().and_then(|s| s.code());
        let _ = done.send((rid, code));
    });
    Ok(pid)
}

/// A job's child exited: a request still only claimed failed to start
/// (its log's last line says why); a started one is done.
async fn ended(
    store: &SessionStore,
    worker: &str,
    rid: &str,
    code: Option<i32>,
    data_dir: &std::path::Path,
) {
    if code == Some(EXIT_NOT_OURS) {
        return;
    }
    let now = store::now_ms();
    let state = match store.request(rid).await {
        Ok(r) => r.state,
        Err(e) => {
            warn!(request = %rid, "cannot read it after its job: {e}");
            return;
        }
    };
    let r = match state {
        RequestState::Claimed => {
            let log = std::fs::read_to_string(data_dir.join("logs").join(format!("{rid}.log")))
                .unwrap_or_default();
            let last = log
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no message")
                .to_string();
            let why = match code {
                Some(c) => {
                    format!("its launcher exited with {c} before the session started: {last}")
                }
                None => format!("its launcher was killed before the session started: {last}"),
            };
            store
                .finish_request(rid, worker, RequestState::Failed, Some(&why), now)
                .await
        }
        RequestState::Started => {
            store
                .finish_request(rid, worker, RequestState::Done, None, now)
                .await
        }
        _ => Ok(true),
    };
    if let Err(e) = r {
        warn!(request = %rid, "cannot record its end: {e}");
    }
}
