//! Reconciliation and orphans: keeping the record true to what the
//! backends know about sessions that no live launcher records.

use sandbox::Liveness;
use serde_json::json;
use store::{NewEvent, Session, SessionUpdate, Status};

use crate::context::{Lifecycle, test_pause};
use crate::docker::stop_session_proxy;
use crate::error::Result;
use crate::lock::LauncherLock;
use crate::record::{end_of, handle, release_placeholders};

/// A sandbox of either backend that no session record claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundOrphan {
    pub backend: store::Backend,
    pub orphan: sandbox::Orphan,
}

impl Lifecycle {
    /// Brings live sessions in the store in line with what their backends
    /// report: a running sandbox stays running (or becomes running), an
    /// ended one gets its exit code, a vanished one becomes `lost`, and
    /// what is left of it is removed. Sessions whose launcher is alive are
    /// left to it. Backends are asked outside any store runtime (the Docker
    /// backend runs its own).
    pub fn reconcile(&self) -> Result<()> {
        if !self.store.keeps_records() {
            return Ok(());
        }
        let live = self.store.with(async |store| {
            Ok(store
                .with_status(&[Status::Created, Status::Running])
                .await?)
        })?;
        if live.is_empty() {
            return Ok(());
        }
        test_pause("AGENTCTL_TEST_RECONCILE_PAUSE_MS");
        let now = store::now_ms();
        let mut found = Vec::new();
        // Only this host's backends can say anything about a session: one
        // on another host (a shared Postgres store) is its own host's to
        // judge, or the worker reaper's.
        let here = store::hostname();
        for s in live.into_iter().filter(|s| s.host == here) {
            if LauncherLock::held(&self.runtime, &s.id) {
                // Its launcher is alive and will record it.
                continue;
            }
            match self.backend(s.backend).liveness(&handle(&s)) {
                Ok(Liveness::Gone)
                    if s.status == Status::Created
                        && now - s.created_at < self.launch_grace.as_millis() as i64 => {}
                Ok(Liveness::Running) if s.status == Status::Running => {}
                Ok(l) => found.push((s, l)),
                // The backend cannot say (a Docker daemon that is down):
                // judge nothing rather than declare the session lost.
                Err(e) => tracing::warn!("cannot check session {}: {e}", s.short_id()),
            }
        }
        if found.is_empty() {
            return Ok(());
        }
        // The judgement goes on record first, and only if the row still
        // says what it said when the backend was asked: the session's
        // supervisor may have recorded its end meanwhile, after which "no
        // sandbox, no exit file" means "ended and tidied up", not
        // "vanished".
        let won = self.store.with(async |store| {
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
            Ok(won)
        })?;
        let ended: Vec<&Session> = won
            .iter()
            .filter(|(_, l)| !matches!(l, Liveness::Running))
            .map(|(s, _)| s)
            .collect();
        if !ended.is_empty() {
            self.store.with(async |store| {
                for s in ended {
                    let files = sandbox::hostrun::from_recorded_plan(&s.policy);
                    release_placeholders(store, &s.id, &files).await;
                }
                Ok(())
            })?;
        }
        for (s, l) in won {
            let backend = self.backend(s.backend);
            match l {
                Liveness::Running => continue,
                // A vanished session's remains go; an ended one keeps its
                // output (a Docker container, a native log) until `rm`.
                Liveness::Gone => {
                    let _ = backend.remove(&handle(&s));
                }
                Liveness::Exited(_) => backend.forget_exit(&handle(&s)),
            }
            // A session that ended takes its Docker proxy (and the
            // containers the agent made through it) along.
            stop_session_proxy(self, &s.id);
        }
        Ok(())
    }

    /// Sandboxes of either backend that no session record claims.
    pub fn orphans(&self) -> Result<Vec<FoundOrphan>> {
        let mut candidates = Vec::new();
        for kind in [
            store::Backend::Native,
            store::Backend::Docker,
            store::Backend::Vm,
        ] {
            for orphan in self.backend(kind).orphans(&|_| false)? {
                candidates.push(FoundOrphan {
                    backend: kind,
                    orphan,
                });
            }
        }
        self.store.with(async |store| {
            let mut out = Vec::new();
            for c in candidates {
                match store.get(&c.orphan.session).await {
                    Ok(s) if s.id == c.orphan.session => {}
                    _ => out.push(c),
                }
            }
            Ok(out)
        })
    }
}
