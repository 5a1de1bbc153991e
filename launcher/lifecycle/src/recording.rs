//! Recording a launch: the row goes on record before anything runs
//! ([`Opening`]), a foreground session's record is kept by a thread while
//! it runs ([`LiveRecord`]), and its end goes on record however it ends
//! ([`Recording`]).
//!
//! No thread may exist while the native backend forks its helper (a
//! SQLite connection has a worker thread), so the store is touched from
//! threads that end before that fork or start after it.

use std::cell::{Cell, RefCell};

use serde_json::json;
use store::{NewEvent, NewSession, SessionUpdate, Status};

use crate::context::Lifecycle;
use crate::error::{Error, Result};
use crate::location::StoreLocation;
use crate::lock::LauncherLock;
use crate::pidfd::PidFd;
use crate::record::Outcome;
use crate::supervise::{OUTPUT_POLL, Sandbox, Source, Supervision};

/// Puts a new session on record, having reconciled the store. Started
/// before planning: a thread opens the store and looks for live sessions
/// meanwhile, and [`Opening::create`] hands it the session. When every
/// live session has a launcher of its own (the usual case: none is live)
/// there is nothing to reconcile, and that one connection does it all.
/// The thread is gone when `create` returns, before any backend forks.
pub struct Opening {
    send: Option<tokio::sync::oneshot::Sender<(NewSession, NewEvent)>>,
    thread: Option<std::thread::JoinHandle<Result<bool>>>,
}

impl Opening {
    pub fn start(lc: &Lifecycle) -> Opening {
        let (send, recv) = tokio::sync::oneshot::channel::<(NewSession, NewEvent)>();
        let (url, runtime) = (lc.store.clone(), lc.runtime.clone());
        let thread = std::thread::spawn(move || {
            blocking::block_on(async move {
                let store = url.open().await?;
                tracing::debug!("opening: store open");
                let live = store.with_status(&[Status::Created, Status::Running]).await;
                tracing::debug!("opening: live sessions read");
                let settled = match live {
                    Ok(live) => live.iter().all(|l| LauncherLock::held(&runtime, &l.id)),
                    Err(e) => {
                        store.close().await;
                        return Err(e.into());
                    }
                };
                let mut created = Ok(false);
                // No session comes when planning failed.
                if settled && let Ok((s, first)) = recv.await {
                    tracing::debug!("opening: session received");
                    created = store.create_session(&s, first).await.map(|_| true);
                    tracing::debug!("opening: session created");
                }
                store.close().await;
                Ok(created?)
            })
        });
        Opening {
            send: Some(send),
            thread: Some(thread),
        }
    }

    pub fn create(mut self, lc: &Lifecycle, s: NewSession, first: NewEvent) -> Result<()> {
        let (Some(send), Some(thread)) = (self.send.take(), self.thread.take()) else {
            return Err(Error::Internal("a session was put on record twice".into()));
        };
        // A thread that is done already (store unreachable, or sessions to
        // reconcile) has dropped its receiver; what it says is below.
        let _ = send.send((s.clone(), first.clone()));
        let created = thread
            .join()
            .map_err(|_| Error::Internal("the session store's thread panicked".into()))??;
        if !created {
            lc.reconcile()?;
            lc.store.with(async |store| {
                store.create_session(&s, first).await?;
                Ok(())
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
    pub error: Option<Error>,
}

/// What the launcher tells a [`LiveRecord`].
enum Note {
    Started { at: i64, pid: Option<u32> },
    End(Vec<NewEvent>, Outcome),
}

/// A running foreground session's record, kept by a thread of its own:
/// the thread opens the store while the sandbox is being built, the
/// session shows as running while it runs, and its end goes on record over
/// a connection that is already open, which keeps the store's share of a
/// launch small. When the end comes before `started` was written (a quick
/// command), both go in one transaction.
///
/// Start it only once the backend has forked what it forks (see
/// [`sandbox::Observer::forked`]): no thread may exist across that fork.
pub struct LiveRecord {
    notes: Option<tokio::sync::mpsc::UnboundedSender<Note>>,
    done: std::sync::mpsc::Receiver<Written>,
}

/// How long `started` waits for the end before it goes on record alone: a
/// command that ends within it is recorded in one transaction, started and
/// end together, and nobody can see a session this young in `ps` anyway.
/// A launcher killed meanwhile leaves the row `created`, which a reconcile
/// judges by what the backend says, as it does any launcher's death.
const STARTED_WAITS_FOR_THE_END: std::time::Duration = std::time::Duration::from_millis(25);

impl LiveRecord {
    /// `output` is the file the backend appends the session's output to.
    pub fn start(
        store_url: &StoreLocation,
        id: &str,
        output: Option<&std::path::Path>,
        engine_stop: Option<EngineStop>,
    ) -> LiveRecord {
        let output = output.map(std::path::Path::to_path_buf);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Note>();
        let (done_tx, done) = std::sync::mpsc::channel::<Written>();
        let (url, id) = (store_url.clone(), id.to_string());
        // Not joined: once the end is on record and said, the thread only
        // closes its connection, which the launcher need not wait for (a
        // process that exits meanwhile leaves a committed log behind).
        std::thread::spawn(move || {
            blocking::block_on(async move {
                let mut w = Written::default();
                let store = match url.open().await {
                    Ok(s) => s,
                    Err(e) => {
                        w.error = Some(e);
                        let _ = done_tx.send(w);
                        return;
                    }
                };
                // While the sandbox is being built: the log the launch's
                // first connection left goes into the database here, off
                // the launch's path.
                if let Err(e) = store.checkpoint().await {
                    tracing::debug!("checkpoint skipped: {e}");
                }
                tracing::debug!("live record open");
                // A closed channel (the launcher gave up) ends the thread.
                let mut pending_start = None;
                let mut next = None;
                let mut stops = StopWatch {
                    engine: engine_stop,
                    ..StopWatch::default()
                };
                let source = match output.as_deref().map(std::fs::File::open) {
                    Some(Ok(f)) => Source::File(f),
                    Some(Err(e)) => {
                        tracing::warn!("the session's output is not recorded: {e}");
                        Source::None
                    }
                    None => Source::None,
                };
                let mut sup = Supervision::new(&id, source);
                let mut last_stop_poll = std::time::Instant::now();
                // Postgres tells of a stop request the moment it commits;
                // polling stays, as the net under it.
                let mut notices = store.listen(store::EVENTS_CHANNEL).await.ok().flatten();
                while w.error.is_none() && !w.ended {
                    let note = match next.take() {
                        Some(n) => n,
                        None if w.started => {
                            tokio::select! {
                                n = rx.recv() => match n {
                                    Some(n) => n,
                                    None => break,
                                },
                                _ = tokio::time::sleep(OUTPUT_POLL) => {
                                    sup.tick(&store).await;
                                    if last_stop_poll.elapsed() >= STOP_POLL {
                                        last_stop_poll = std::time::Instant::now();
                                        stops.poll(&store, &id).await;
                                    }
                                    continue;
                                }
                                notice = crate::supervise::notice(&mut notices) => {
                                    if crate::supervise::asks_to_stop(notice.as_deref(), &id) {
                                        last_stop_poll = std::time::Instant::now();
                                        stops.poll(&store, &id).await;
                                    }
                                    continue;
                                }
                            }
                        }
                        None => match rx.recv().await {
                            Some(n) => n,
                            None => break,
                        },
                    };
                    match note {
                        Note::Started { at, pid } => {
                            stops.sandbox = pid.and_then(|p| PidFd::open(p as i32).ok());
                            if let Some(p) = pid
                                && let Ok(fd) = PidFd::open(p as i32)
                            {
                                sup.sandbox(Sandbox::Held(fd, p));
                            }
                            // A quick command's end comes soon: wait a little.
                            match tokio::time::timeout(STARTED_WAITS_FOR_THE_END, rx.recv()).await {
                                Ok(Some(end @ Note::End(..))) => {
                                    pending_start = Some((at, pid));
                                    next = Some(end);
                                    continue;
                                }
                                Ok(Some(other)) => next = Some(other),
                                Ok(None) | Err(_) => {}
                            }
                            match store
                                .record(
                                    &id,
                                    vec![started_event(pid)],
                                    &SessionUpdate {
                                        status: Some(Status::Running),
                                        started_at: Some(at),
                                        ..SessionUpdate::default()
                                    },
                                )
                                .await
                            {
                                Ok(_) => w.started = true,
                                Err(e) => w.error = Some(e.into()),
                            }
                        }
                        Note::End(events, outcome) => {
                            // The whole output is on record before the end.
                            sup.drain(&store).await;
                            finish(&store, &id, &mut w, &mut pending_start, events, outcome).await;
                        }
                    }
                }
                let _ = done_tx.send(w);
                store.close().await;
            })
        });
        LiveRecord {
            notes: Some(tx),
            done,
        }
    }

    /// The agent runs: `started` goes on record (the session shows as
    /// running in `ps` and can be stopped from elsewhere).
    pub fn started(&self, at: i64, pid: Option<u32>) {
        if let Some(tx) = &self.notes {
            let _ = tx.send(Note::Started { at, pid });
        }
    }

    /// Records `events` (the signals passed on) and the end, and waits
    /// until they are on record.
    pub fn finish(mut self, events: Vec<NewEvent>, outcome: Outcome) -> Written {
        if let Some(tx) = self.notes.take() {
            let _ = tx.send(Note::End(events, outcome));
        }
        self.done.recv().unwrap_or_else(|_| Written {
            error: Some(Error::Internal(
                "the session's recorder thread ended without a word".into(),
            )),
            ..Written::default()
        })
    }
}

/// How often a running foreground session looks for a stop asked of it
/// elsewhere (the dashboard): well within the second a click may take.
const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Carries out a stop asked for in the store (the dashboard writes
/// `stop_requested` with its actor; this launcher supervises the session):
/// SIGTERM to the sandbox's init, which passes it to the agent, and
/// SIGKILL once the request's grace has passed. Through a pidfd, so a pid
/// the sandbox no longer holds is never signalled.
#[derive(Default)]
struct StopWatch {
    sandbox: Option<PidFd>,
    /// The engine's own stop, for a sandbox whose process this launcher
    /// cannot see (a Docker engine on another host, or a launcher in a
    /// container of its own).
    engine: Option<EngineStop>,
    kill_at: Option<std::time::Instant>,
    killed: bool,
}

/// Asks the engine to stop the session's sandbox within a grace.
pub type EngineStop = std::sync::Arc<dyn Fn(std::time::Duration) + Send + Sync>;

impl StopWatch {
    async fn poll(&mut self, store: &store::SessionStore, id: &str) {
        if self.sandbox.is_none() && self.engine.is_none() {
            return;
        }
        if let Some(at) = self.kill_at {
            if let Some(sandbox) = &self.sandbox
                && !self.killed
                && std::time::Instant::now() >= at
            {
                self.killed = true;
                let _ = sandbox.signal(libc::SIGKILL);
            }
            return;
        }
        let Ok((_, asked)) = store.status_with_event(id, "stop_requested").await else {
            return;
        };
        if !asked {
            return;
        }
        let grace = match store.events(id).await {
            Ok(events) => events
                .iter()
                .rev()
                .find(|e| e.kind == "stop_requested")
                .and_then(|e| e.data["timeout_secs"].as_u64())
                .unwrap_or(10),
            Err(_) => 10,
        };
        match (&self.sandbox, &self.engine) {
            (Some(sandbox), _) => {
                tracing::debug!("a stop was asked for; SIGTERM to the sandbox");
                let _ = sandbox.signal(libc::SIGTERM);
            }
            (None, Some(stop)) => {
                // The engine signals, waits out the grace and kills; off
                // this thread, which copies the output meanwhile.
                tracing::debug!("a stop was asked for; the engine stops the sandbox");
                let stop = stop.clone();
                std::thread::spawn(move || stop(std::time::Duration::from_secs(grace)));
            }
            (None, None) => {}
        }
        self.kill_at = Some(std::time::Instant::now() + std::time::Duration::from_secs(grace));
    }
}

fn started_event(pid: Option<u32>) -> NewEvent {
    NewEvent::new("started").data(json!({ "pid": pid }))
}

/// The end, with a `started` not yet written in the same transaction.
async fn finish(
    store: &store::SessionStore,
    id: &str,
    w: &mut Written,
    pending_start: &mut Option<(i64, Option<u32>)>,
    mut events: Vec<NewEvent>,
    outcome: Outcome,
) {
    let mut update = SessionUpdate::default();
    if let Some((at, pid)) = pending_start.take() {
        events.insert(0, started_event(pid));
        update.started_at = Some(at);
    }
    let with_start = update.started_at.is_some();
    match outcome.record(store, id, events, update).await {
        Ok(()) => {
            w.ended = true;
            w.started |= with_start;
        }
        Err(e) => w.error = Some(e),
    }
}

/// Keeps the record of a foreground session while it runs: a
/// [`LiveRecord`] from the moment the sandbox runs (the native backend has
/// forked by then), and what happened, in case that record cannot finish.
/// The backend tells it what happens, as its [`sandbox::Observer`].
pub struct Recording<'a> {
    store: &'a StoreLocation,
    id: &'a str,
    /// Where the backend appends the session's output.
    output: Option<std::path::PathBuf>,
    started: Cell<Option<(i64, Option<u32>)>>,
    signals: RefCell<Vec<(i64, String)>>,
    live: RefCell<Option<LiveRecord>>,
    /// Told when the agent runs, after the record is on its way.
    on_start: &'a dyn Fn(Option<u32>),
    /// How to stop a sandbox whose process is out of sight.
    engine_stop: Option<EngineStop>,
}

impl<'a> Recording<'a> {
    pub fn new(
        store: &'a StoreLocation,
        id: &'a str,
        output: Option<std::path::PathBuf>,
        on_start: &'a dyn Fn(Option<u32>),
    ) -> Self {
        Recording {
            store,
            id,
            output,
            started: Cell::new(None),
            signals: RefCell::default(),
            live: RefCell::default(),
            engine_stop: None,
            on_start,
        }
    }

    /// Puts the end on record: through the live record, or, if it never
    /// started or failed, over a new connection with whatever it missed.
    pub fn finish(self, outcome: Outcome) -> Result<()> {
        let signals: Vec<NewEvent> = self
            .signals
            .take()
            .into_iter()
            .map(|(at, sig)| NewEvent::new("signal").data(json!({"signal": sig, "at": at})))
            .collect();
        let written = match self.live.take() {
            Some(live) => live.finish(signals.clone(), outcome.clone()),
            None => Written::default(),
        };
        if written.ended {
            return Ok(());
        }
        if let Some(e) = &written.error {
            tracing::warn!("recording the running session failed, trying again: {e}");
        }
        let mut events = Vec::new();
        let mut update = SessionUpdate::default();
        if let Some((at, pid)) = self.started.get().filter(|_| !written.started) {
            events.push(NewEvent::new("started").data(json!({"pid": pid})));
            update.started_at = Some(at);
        }
        events.extend(signals);
        let id = self.id;
        self.store
            .with(async |store| outcome.record(store, id, events, update).await)
    }
}

impl Recording<'_> {
    /// Stops asked for in the store are carried out by `stop` when the
    /// backend gives no process of this host to signal.
    pub fn with_engine_stop(mut self, stop: EngineStop) -> Self {
        self.engine_stop = Some(stop);
        self
    }

    /// The live record's thread, started once threads are allowed.
    fn live_record(&self) {
        if self.store.keeps_records() && self.live.borrow().is_none() {
            *self.live.borrow_mut() = Some(LiveRecord::start(
                self.store,
                self.id,
                self.output.as_deref(),
                self.engine_stop.clone(),
            ));
        }
    }
}

impl sandbox::Observer for Recording<'_> {
    fn forked(&self) {
        tracing::debug!("forked");
        self.live_record();
    }
    fn started(&self, pid: Option<u32>) {
        tracing::debug!("started");
        let at = store::now_ms();
        self.started.set(Some((at, pid)));
        // A backend that never said `forked` has forked by now.
        self.live_record();
        if let Some(live) = self.live.borrow().as_ref() {
            live.started(at, pid);
        }
        (self.on_start)(pid);
    }
    fn signal(&self, name: &str) {
        self.signals
            .borrow_mut()
            .push((store::now_ms(), name.to_string()));
    }
}
