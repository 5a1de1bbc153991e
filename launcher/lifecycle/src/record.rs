//! A session's record: the row, its first event, and how an end goes on
//! record. Plain store writes; no thread, no backend.

use sandbox::SandboxSpec;
use serde_json::json;
use store::{NewEvent, NewSession, SessionStore, SessionUpdate, Status};

use crate::error::{Error, Result};

/// docker's code for "the launcher itself failed"; a session that failed
/// to start ends with it.
pub const LAUNCHER_FAILURE: i32 = backend_native::LAUNCHER_FAILURE;

/// Who is acting, for the audit log: this process's user.
pub fn local_actor() -> String {
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
pub fn new_session(
    spec: &SandboxSpec,
    backend: store::Backend,
    detached: bool,
) -> Result<NewSession> {
    let policy = serde_json::to_string(spec)
        .map_err(|e| Error::Internal(format!("cannot serialize the plan: {e}")))?;
    Ok(NewSession {
        id: spec.session.to_string(),
        profile: spec.profile.clone(),
        backend,
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
/// `asked` is what the request asked beyond the profile (see
/// `SessionRequest::asked`).
pub fn created_event(spec: &SandboxSpec, actor: &str, asked: &serde_json::Value) -> NewEvent {
    NewEvent::new("created").actor(actor).data(json!({
        "asked": asked,
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

/// How to find a session's sandbox again, from its row.
pub fn handle(s: &store::Session) -> sandbox::Handle {
    sandbox::Handle {
        session: s.id.clone(),
        helper_pid: s.helper_pid,
        container_id: s.container_id.clone(),
        log_path: s.log_path.clone().map(Into::into),
    }
}

/// How a session that ended with `code` goes on record: stopped when a
/// stop was asked for, failed when the launcher failed, exited otherwise.
pub(crate) fn end_of(code: i32, stopped: bool) -> (Status, NewEvent) {
    let (status, kind) = if stopped {
        (Status::Stopped, "stopped")
    } else if code == LAUNCHER_FAILURE {
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
                exit_code: Some(LAUNCHER_FAILURE),
                ..update
            },
        )
        .await?;
    Ok(())
}

/// How a foreground session ended, as far as its launcher knows.
#[derive(Clone, Debug, PartialEq, Eq)]
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
