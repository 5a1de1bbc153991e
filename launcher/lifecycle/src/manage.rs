//! What one does to sessions once they exist: find, list, stop, exec,
//! follow output, remove, audit; and a detached session's end.

use std::time::Duration;

use serde_json::json;
use store::{Event, ListQuery, NewEvent, Session, Status, Verification};

use crate::context::Lifecycle;
use crate::docker::stop_session_proxy;
use crate::error::{Error, Result};
use crate::reconcile::FoundOrphan;
use crate::record::{LAUNCHER_FAILURE, handle, record_end_after, release_placeholders};

/// A request to stop a session: who asks, why, and how long the agent
/// gets between SIGTERM and SIGKILL.
#[derive(Clone, Debug)]
pub struct StopRequest {
    pub actor: String,
    pub reason: Option<String>,
    pub grace: Duration,
}

/// What a stop found.
#[derive(Clone, Debug)]
pub enum Stopped {
    /// The session was live and has been asked to stop.
    Stopped(Session),
    /// It had ended already (its status says how).
    NotRunning(Session),
}

impl Lifecycle {
    /// Reconciles, then finds the session by id or unique prefix.
    pub fn find(&self, id: &str) -> Result<Session> {
        self.reconcile()?;
        self.store.with(async |store| Ok(store.get(id).await?))
    }

    /// Sessions on record, newest first, after a reconcile.
    pub fn list(&self, q: &ListQuery) -> Result<Vec<Session>> {
        self.reconcile()?;
        self.store.with(async |store| Ok(store.list(q).await?))
    }

    /// Stops a live session: the request goes on record first (so
    /// whoever records the end knows it was a stop), then the backend
    /// stops the sandbox, then its Docker proxy goes, then what the
    /// backend knows about the end goes on record.
    pub fn stop(&self, id: &str, req: &StopRequest) -> Result<Stopped> {
        let s = self.find(id)?;
        if !s.status.is_live() {
            return Ok(Stopped::NotRunning(s));
        }
        self.store.with(async |store| {
            let mut data = json!({"signal": "SIGTERM", "timeout_secs": req.grace.as_secs()});
            if let Some(reason) = &req.reason {
                data["reason"] = json!(reason);
            }
            store
                .append_event(
                    &s.id,
                    NewEvent::new("stop_requested")
                        .actor(req.actor.as_str())
                        .data(data),
                )
                .await?;
            Ok(())
        })?;
        self.backend(s.backend).stop(&handle(&s), req.grace)?;
        stop_session_proxy(self, &s.id);
        self.reconcile()?;
        Ok(Stopped::Stopped(s))
    }

    /// Runs `command` in a running session with the caller's stdio; the
    /// exec goes on record with its actor first.
    pub fn exec(&self, id: &str, command: &[String], tty: bool) -> Result<i32> {
        let s = self.find(id)?;
        if s.status != Status::Running {
            return Err(Error::Refused(format!(
                "session {} is not running ({})",
                s.short_id(),
                s.status
            )));
        }
        self.store.with(async |store| {
            store
                .append_event(
                    &s.id,
                    NewEvent::new("exec")
                        .actor(self.actor.as_str())
                        .data(json!({"command": command})),
                )
                .await?;
            Ok(())
        })?;
        Ok(self
            .backend(s.backend)
            .exec(&handle(&s), command, tty)?
            .code())
    }

    /// Copies a session's kept output to `out`; with `follow`, until it
    /// ends. Bytes as the agent wrote them: a caller writing to a terminal
    /// filters them (`sandbox::termfilter`).
    pub fn follow(&self, id: &str, follow: bool, out: &mut dyn std::io::Write) -> Result<()> {
        let s = self.find(id)?;
        Ok(self.backend(s.backend).logs(&handle(&s), follow, out)?)
    }

    /// Removes an ended session: its sandbox's remains, then its record.
    /// A live one is stopped first only when `force`.
    pub fn remove(&self, id: &str, force: bool, actor: &str) -> Result<Session> {
        let s = self.find(id)?;
        if s.status.is_live() {
            if !force {
                return Err(Error::Refused(format!(
                    "session {} is {}; stop it first, or use `agentctl rm -f`",
                    s.short_id(),
                    s.status
                )));
            }
            self.stop(
                &s.id,
                &StopRequest {
                    actor: actor.to_string(),
                    reason: Some("removed".into()),
                    grace: Duration::ZERO,
                },
            )?;
        }
        self.backend(s.backend).remove(&handle(&s))?;
        self.store
            .with(async |store| Ok(store.remove(&s.id).await?))?;
        Ok(s)
    }

    /// The audit trail of a session, and its verification when asked.
    pub fn audit(
        &self,
        id: &str,
        verify: bool,
    ) -> Result<(Session, Vec<Event>, Option<Verification>)> {
        self.store.with(async |store| {
            let s = store.get(id).await?;
            let events = store.events(&s.id).await?;
            let v = match verify {
                true => Some(store.verify(&s.id).await?),
                false => None,
            };
            Ok((s, events, v))
        })
    }

    /// Removes sandboxes that no record claims (after a reconcile).
    pub fn collect_orphans(&self) -> Result<Vec<FoundOrphan>> {
        self.reconcile()?;
        let orphans = self.orphans()?;
        for o in &orphans {
            self.backend(o.backend).remove(&sandbox::Handle {
                session: o.orphan.session.clone(),
                ..sandbox::Handle::default()
            })?;
        }
        Ok(orphans)
    }

    /// Records the end of a detached session: what its supervisor runs
    /// after the sandbox is gone (`code` is `AGENTCTL_EXIT_CODE`, or the
    /// launcher's failure when it is missing).
    pub fn session_exit(&self, id: &str, code: Option<i32>) -> Result<()> {
        let code = code.unwrap_or(LAUNCHER_FAILURE);
        let s = self.store.with(async |store| {
            record_end_after(store, id, code, Vec::new(), Default::default()).await?;
            let s = store.get(id).await?;
            let files = sandbox::hostrun::from_recorded_plan(&s.policy);
            release_placeholders(store, id, &files).await;
            Ok(s)
        })?;
        self.backend(s.backend).forget_exit(&handle(&s));
        stop_session_proxy(self, id);
        Ok(())
    }
}

/// How often a detached session's supervisor looks for a stop request.
const STOP_POLL: Duration = Duration::from_millis(250);
/// How long the supervisor waits for the last of the output once the
/// session has ended.
const LAST_OUTPUT: Duration = Duration::from_secs(5);

impl Lifecycle {
    /// Supervises a detached session from beside it, as a process of its
    /// own (`agentctl __watch-stops ID`): copies its output into the store
    /// as it comes (following the backend's log), says it is alive every
    /// few seconds with a sample of the session's cgroup, and carries out
    /// a stop asked for in the store (the dashboard writes
    /// `stop_requested`; it can reach no backend) as `agentctl stop` would.
    /// Returns once the session has ended and its output is on record.
    pub fn watch_stops(&self, id: &str) -> Result<()> {
        use crate::supervise::{ChannelWriter, OUTPUT_POLL, Sandbox, Source, Supervision};
        let s = self.store.with(async |store| Ok(store.get(id).await?))?;
        let h = handle(&s);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut sup = Supervision::new(&s.id, Source::Channel(rx));
        if let Some(pid) = self.backend(s.backend).sandbox_pid(&h) {
            let mut marks = vec![s.id.clone()];
            marks.extend(s.container_id.clone());
            sup.sandbox(Sandbox::Named(pid, marks));
        }
        std::thread::scope(|scope| {
            let logs = scope.spawn(|| {
                let mut w = ChannelWriter(tx);
                if let Err(e) = self.backend(s.backend).logs(&h, true, &mut w) {
                    tracing::debug!("the session's log cannot be followed: {e}");
                }
            });
            let mut stopper = None;
            let mut checker: Option<std::thread::ScopedJoinHandle<'_, bool>> = None;
            let result = blocking::block_on(async {
                let store = self.store.open().await?;
                let mut last_poll = std::time::Instant::now();
                // Postgres tells of a stop request the moment it commits.
                let mut notices = store.listen(store::EVENTS_CHANNEL).await.ok().flatten();
                let mut ended_at: Option<std::time::Instant> = None;
                let outcome: Result<()> = loop {
                    let mut asked_now = false;
                    tokio::select! {
                        _ = tokio::time::sleep(OUTPUT_POLL) => {}
                        n = crate::supervise::notice(&mut notices) => {
                            asked_now = crate::supervise::asks_to_stop(n.as_deref(), id);
                        }
                    }
                    sup.tick(&store).await;
                    if let Some(at) = ended_at {
                        // Ended: wait for the log's last lines, not forever.
                        if logs.is_finished() || at.elapsed() >= LAST_OUTPUT {
                            sup.drain(&store).await;
                            break Ok(());
                        }
                        continue;
                    }
                    if last_poll.elapsed() < STOP_POLL && !asked_now {
                        continue;
                    }
                    last_poll = std::time::Instant::now();
                    let (status, asked) = match store.status_with_event(id, "stop_requested").await
                    {
                        Ok(r) => r,
                        Err(e) => break Err(e.into()),
                    };
                    if !status.is_live() {
                        ended_at = Some(std::time::Instant::now());
                        continue;
                    }
                    // The log ended: has the sandbox? An engine that keeps
                    // the exit status (Docker) records no end by itself, so
                    // the supervisor puts it on record. Asked from a thread
                    // of its own: backends run runtimes of their own.
                    if logs.is_finished() && checker.is_none() {
                        checker = Some(scope.spawn(|| {
                            let running = matches!(
                                self.backend(s.backend).liveness(&h),
                                Ok(sandbox::Liveness::Running)
                            );
                            if !running && let Err(e) = self.reconcile() {
                                tracing::debug!("reconcile: {e}");
                            }
                            running
                        }));
                    }
                    if asked && stopper.is_none() {
                        let grace = store
                            .events(id)
                            .await
                            .ok()
                            .and_then(|events| {
                                events
                                    .iter()
                                    .rev()
                                    .find(|e| e.kind == "stop_requested")
                                    .and_then(|e| e.data["timeout_secs"].as_u64())
                            })
                            .unwrap_or(10);
                        let (h, s) = (&h, &s);
                        // Stopping takes up to the grace; the output goes
                        // on being copied meanwhile.
                        stopper = Some(scope.spawn(move || {
                            let r = self.backend(s.backend).stop(h, Duration::from_secs(grace));
                            stop_session_proxy(self, &s.id);
                            r.map_err(Error::from).and_then(|()| self.reconcile())
                        }));
                    }
                };
                store.close().await;
                outcome
            });
            if let Some(t) = stopper {
                match t.join() {
                    Ok(r) => r?,
                    Err(_) => return Err(Error::Internal("the stop panicked".into())),
                }
            }
            result
        })
    }
}
