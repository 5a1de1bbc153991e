//! What one proxy serves: its role, its daemon, its session, where its
//! denials go. Shared by the connections (`server`) and the rules, which
//! use neither the other's code.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::metrics::Metrics;
use crate::role::{Binds, Role};
use crate::session::SessionScope;
use crate::upstream::Addr;

/// An event for the audit log: a denied request.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub session: Option<String>,
    pub role: String,
    pub operation: String,
    pub reason: String,
}

pub type AuditSink = Arc<dyn Fn(AuditEvent) + Send + Sync>;

pub struct Config {
    pub role: Role,
    pub upstream: Addr,
    /// The version every request is rewritten to.
    pub api: (u64, u64),
    pub session: Option<SessionScope>,
    pub max_body: u64,
    pub audit: Option<AuditSink>,
    /// Held by a session's container create from its check until the
    /// daemon has answered, so that two creates cannot both pass the
    /// session's `limits.containers`.
    pub creates: tokio::sync::Mutex<()>,
    /// The host directories every bind source must be in (or be), on top
    /// of the role's rules, canonical; empty: no such restriction. A proxy
    /// in a container sees the host's paths only where they are mounted at
    /// the same place, so only there can its checks mean what the daemon
    /// will bind.
    pub bind_roots: Vec<PathBuf>,
    /// What was allowed and denied, for `--metrics-listen`.
    pub metrics: Metrics,
}

impl Config {
    pub fn api_string(&self) -> String {
        format!("{}.{}", self.api.0, self.api.1)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BindRootError {
    #[error("--bind-root {path}: cannot be resolved ({why}); give an existing directory")]
    Unresolvable { path: String, why: String },
    #[error("--bind-root {path}: not a directory")]
    NotADirectory { path: String },
    #[error(
        "--bind-root {path}: this is / (once resolved), which would restrict nothing; give the directories binds may come from"
    )]
    Root { path: String },
    #[error(
        "--bind-root is pointless with role {role}: its binds are none, so no host path may be bound at all; drop --bind-root"
    )]
    NoBinds { role: String },
}

/// The bind roots a proxy of `role` is given, canonicalized once: symlinks
/// in a root are resolved now, so a bind source is compared with where the
/// root really is.
pub fn bind_roots(given: &[PathBuf], role: &Role) -> Result<Vec<PathBuf>, BindRootError> {
    if !given.is_empty() && role.binds == Binds::None {
        return Err(BindRootError::NoBinds {
            role: role.name.clone(),
        });
    }
    given.iter().map(|p| bind_root(p)).collect()
}

fn bind_root(p: &Path) -> Result<PathBuf, BindRootError> {
    let path = p.display().to_string();
    let real = p.canonicalize().map_err(|e| BindRootError::Unresolvable {
        path: path.clone(),
        why: e.to_string(),
    })?;
    if !real.is_dir() {
        return Err(BindRootError::NotADirectory { path });
    }
    if real == Path::new("/") {
        return Err(BindRootError::Root { path });
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_roots_are_existing_directories_other_than_the_root() {
        let launcher = Role::builtin("launcher").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        std::os::unix::fs::symlink(&real, real.join("link")).unwrap();
        std::fs::write(real.join("file"), "").unwrap();

        assert_eq!(bind_roots(&[], &launcher), Ok(vec![]));
        assert_eq!(
            bind_roots(&[real.join("link")], &launcher),
            Ok(vec![real.clone()]),
            "a root is compared where it really is"
        );
        let missing = real.join("missing");
        let err = bind_roots(std::slice::from_ref(&missing), &launcher).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "--bind-root {}: cannot be resolved",
                missing.display()
            )),
            "{err}"
        );
        assert_eq!(
            bind_roots(&[real.join("file")], &launcher),
            Err(BindRootError::NotADirectory {
                path: real.join("file").display().to_string()
            })
        );
        for root in ["/", "/..", "//"] {
            let err = bind_roots(&[PathBuf::from(root)], &launcher).unwrap_err();
            assert_eq!(
                err,
                BindRootError::Root {
                    path: root.to_string()
                }
            );
            assert!(err.to_string().contains("restrict nothing"), "{err}");
        }
    }

    #[test]
    fn bind_roots_need_a_role_that_binds() {
        let reader = Role::builtin("logs-reader").unwrap();
        assert_eq!(reader.binds, Binds::None);
        let err = bind_roots(&[PathBuf::from("/tmp")], &reader).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--bind-root is pointless with role logs-reader: its binds are none, so no host path may be bound at all; drop --bind-root"
        );
        assert_eq!(bind_roots(&[], &reader), Ok(vec![]));
        let session = Role::builtin("session").unwrap();
        assert!(bind_roots(&[PathBuf::from("/tmp")], &session).is_ok());
    }
}
