//! The session a `session`-scoped proxy serves: whose objects are whose,
//! and the policy its child containers are held to.

use std::path::{Path, PathBuf};

pub use policy::NetworkMode;

/// The label every object a session creates carries. The client can never
/// set or filter on labels under `io.agentctl.` itself.
pub const LABEL_SESSION: &str = "io.agentctl.session";
/// Marks child objects, so that agentctl's own bookkeeping (which looks for
/// `io.agentctl.managed`) never mistakes them for sandboxes.
pub const LABEL_CHILD: &str = "io.agentctl.child";
pub const LABEL_PREFIX: &str = "io.agentctl.";

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChildLimits {
    /// Bytes.
    pub memory: Option<i64>,
    /// Billionths of a CPU.
    pub nano_cpus: Option<i64>,
    pub pids: Option<i64>,
    /// Containers the session may hold at once (the profile's
    /// `limits.containers`).
    #[serde(default)]
    pub containers: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionScope {
    pub id: String,
    /// Canonical (symlinks resolved) when built through `new`.
    pub workspace: PathBuf,
    /// Absolute host paths masked in the session's sandbox; binds of the
    /// workspace into children mask them too.
    pub masked: Vec<PathBuf>,
    pub limits: ChildLimits,
    /// The session's own network. Children of a session without network
    /// get none either: no bridge, internal networks only, no pulls.
    pub network: NetworkMode,
    /// Host paths in the workspace that the session's sandbox has
    /// read-only because the host runs them later (`.git/config`, hooks):
    /// read-only in children too, with their directories pinned.
    #[serde(default)]
    pub read_only: Vec<PathBuf>,
    /// Whether the session may write its workspace; children of a session
    /// with a read-only workspace get it read-only too.
    #[serde(default = "yes")]
    pub workspace_writable: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
#[error("workspace {path}: {source}")]
pub struct WorkspaceError {
    pub path: String,
    pub source: std::io::Error,
}

impl SessionScope {
    pub fn new(
        id: String,
        workspace: &Path,
        masked: Vec<PathBuf>,
        limits: ChildLimits,
        network: NetworkMode,
    ) -> Result<SessionScope, WorkspaceError> {
        let workspace = workspace.canonicalize().map_err(|source| WorkspaceError {
            path: workspace.display().to_string(),
            source,
        })?;
        // Binds are checked by their resolved paths, so the masks must be
        // resolved the same way or a workspace reached through a symlink
        // would match none of them.
        let masked = masked.into_iter().map(|m| resolve_parent(&m)).collect();
        Ok(SessionScope {
            id,
            workspace,
            masked,
            limits,
            network,
            read_only: Vec::new(),
            workspace_writable: true,
        })
    }

    /// The session's children get no network: the session has none, or
    /// only an allowlist, which a child container on a bridge would get
    /// around (its traffic never passes agentctl's egress proxy).
    pub fn children_offline(&self) -> bool {
        !matches!(self.network, NetworkMode::Bridge | NetworkMode::Host)
    }

    /// Sets the read-only host-run paths, resolved like the masks.
    pub fn with_read_only(mut self, paths: Vec<PathBuf>, workspace_writable: bool) -> SessionScope {
        self.read_only = paths.into_iter().map(|p| resolve_parent(&p)).collect();
        self.workspace_writable = workspace_writable;
        self
    }

    pub fn label(&self) -> String {
        format!("{LABEL_SESSION}={}", self.id)
    }

    /// Whether a set of labels marks an object as one this session made.
    /// The session's own sandbox (on the Docker backend) carries the
    /// session label too, but not the child label: it is not the agent's
    /// to inspect, join or remove.
    pub fn owns(&self, labels: Option<&serde_json::Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(|v| v.as_str());
        get(LABEL_SESSION) == Some(self.id.as_str()) && get(LABEL_CHILD) == Some("true")
    }

    /// The label filters that select this session's children.
    pub fn label_filters(&self) -> [String; 2] {
        [self.label(), format!("{LABEL_CHILD}=true")]
    }
}

/// The path with its directory resolved (symlinks followed) and its last
/// component kept: a masked symlink stays the link, not its target.
fn resolve_parent(p: &Path) -> PathBuf {
    match (p.parent(), p.file_name()) {
        (Some(dir), Some(name)) => dir
            .canonicalize()
            .map(|d| d.join(name))
            .unwrap_or_else(|_| p.to_path_buf()),
        _ => p.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_resolve_like_the_binds_they_are_matched_against() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join(".env"), "X=1").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let s = SessionScope::new(
            "s".into(),
            &link,
            vec![link.join(".env")],
            ChildLimits::default(),
            NetworkMode::None,
        )
        .unwrap();
        let real = real.canonicalize().unwrap();
        assert_eq!(s.workspace, real);
        assert_eq!(s.masked, vec![real.join(".env")]);
    }
}
