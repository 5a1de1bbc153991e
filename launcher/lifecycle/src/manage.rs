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

/// How often a detached session's stop watcher looks for a request.
const STOP_POLL: Duration = Duration::from_millis(250);

impl Lifecycle {
    /// Watches a detached session for a stop asked for in the store (the
    /// dashboard writes `stop_requested`; it can reach no backend) and
    /// carries it out as `agentctl stop` would. Returns when the session
    /// has ended, or once it has stopped it. Run as a process of its own
    /// (`agentctl __watch-stops ID`) beside the session's supervisor.
    pub fn watch_stops(&self, id: &str) -> Result<()> {
        let asked = blocking::block_on(async {
            let store = self.store.open().await?;
            let found: Result<Option<Duration>> = loop {
                tokio::time::sleep(STOP_POLL).await;
                let (status, asked) = match store.status_with_event(id, "stop_requested").await {
                    Ok(r) => r,
                    Err(e) => break Err(e.into()),
                };
                if !status.is_live() {
                    break Ok(None);
                }
                if asked {
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
                    break Ok(Some(Duration::from_secs(grace)));
                }
            };
            store.close().await;
            found
        })?;
        let Some(grace) = asked else {
            return Ok(());
        };
        let s = self.store.with(async |store| Ok(store.get(id).await?))?;
        self.backend(s.backend).stop(&handle(&s), grace)?;
        stop_session_proxy(self, &s.id);
        self.reconcile()
    }
}
