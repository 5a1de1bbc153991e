//! Workspace roots: the directories under which each user's requested
//! workspaces must lie on this worker, and the check of a requested path
//! against them on real paths (symlinks resolved), never on spelling.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::error::WorkerError;

/// `--workspace-root DIR` gives every user `DIR/<user>`;
/// `--workspace-root USER=DIR` gives one user `DIR`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Roots {
    shared: Option<PathBuf>,
    users: BTreeMap<String, PathBuf>,
}

impl Roots {
    /// Parses the `--workspace-root` values.
    pub fn parse(specs: &[String]) -> Result<Roots, WorkerError> {
        let mut roots = Roots::default();
        for spec in specs {
            let (user, dir) = match spec.split_once('=') {
                Some((u, d)) => (Some(u), d),
                None => (None, spec.as_str()),
            };
            let dir = PathBuf::from(dir);
            if !dir.is_absolute() {
                return Err(WorkerError::Config(format!(
                    "--workspace-root {spec}: give an absolute directory (DIR, or USER=DIR)"
                )));
            }
            match user {
                Some(u) => {
                    store::check_user_name(u).map_err(|e| {
                        WorkerError::Config(format!("--workspace-root {spec}: {e}"))
                    })?;
                    roots.users.insert(u.to_string(), dir);
                }
                None if roots.shared.is_some() => {
                    return Err(WorkerError::Config(format!(
                        "--workspace-root {spec}: only one shared root (DIR) is allowed; give \
                         others per user as USER=DIR"
                    )));
                }
                None => roots.shared = Some(dir),
            }
        }
        Ok(roots)
    }

    pub fn is_empty(&self) -> bool {
        self.shared.is_none() && self.users.is_empty()
    }

    /// The root of `user`'s workspaces, as configured.
    pub fn root_of(&self, user: &str) -> Option<PathBuf> {
        if let Some(d) = self.users.get(user) {
            return Some(d.clone());
        }
        // The name was checked when the request was recorded; check again:
        // it becomes a path component.
        store::check_user_name(user).ok()?;
        self.shared.as_ref().map(|d| d.join(user))
    }

    /// The real path of the workspace `user` asked for: `asked` relative to
    /// their root or absolute, resolved with every symlink followed, and
    /// refused unless it is a directory inside their root's real path.
    pub fn resolve(&self, user: &str, asked: &str) -> Result<PathBuf, WorkerError> {
        let root = self.root_of(user).ok_or_else(|| {
            WorkerError::Workspace(format!(
                "this worker has no workspace root for user {user}; its admin gives one with \
                 --workspace-root DIR (DIR/<user> for everyone) or --workspace-root {user}=DIR"
            ))
        })?;
        let real_root = std::fs::canonicalize(&root).map_err(|e| {
            WorkerError::Workspace(format!(
                "the workspace root {} of user {user} cannot be opened on this worker ({e}); \
                 create it",
                root.display()
            ))
        })?;
        let asked_path = Path::new(asked);
        if asked.is_empty()
            || asked.contains('\0')
            || asked_path
                .components()
                .any(|c| matches!(c, Component::ParentDir))
        {
            return Err(WorkerError::Workspace(format!(
                "\"{asked}\": name a directory under your workspace root, without `..`"
            )));
        }
        let candidate = if asked_path.is_absolute() {
            asked_path.to_path_buf()
        } else {
            root.join(asked_path)
        };
        let real = std::fs::canonicalize(&candidate).map_err(|e| {
            WorkerError::Workspace(format!(
                "{} cannot be opened on this worker ({e}); create it under {}",
                candidate.display(),
                root.display()
            ))
        })?;
        within(&real, &real_root, user)?;
        if !real.is_dir() {
            return Err(WorkerError::Workspace(format!(
                "{} is not a directory",
                real.display()
            )));
        }
        Ok(real)
    }

    /// Checks again, at the moment of use, that `path` (a plan's
    /// workspace) still resolves inside `user`'s root.
    pub fn recheck(&self, user: &str, path: &Path) -> Result<(), WorkerError> {
        let root = self
            .root_of(user)
            .ok_or_else(|| WorkerError::Workspace(format!("no workspace root for {user}")))?;
        let real_root = std::fs::canonicalize(&root)
            .map_err(|e| WorkerError::Workspace(format!("{}: {e}", root.display())))?;
        let real = std::fs::canonicalize(path)
            .map_err(|e| WorkerError::Workspace(format!("{}: {e}", path.display())))?;
        within(&real, &real_root, user)
    }
}

fn within(real: &Path, real_root: &Path, user: &str) -> Result<(), WorkerError> {
    if real.starts_with(real_root) {
        Ok(())
    } else {
        Err(WorkerError::Workspace(format!(
            "{} is outside the workspace root of user {user} ({}) once its symlinks are \
             resolved",
            real.display(),
            real_root.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_root_gives_each_user_their_own_directory() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        for u in ["alice", "bob"] {
            std::fs::create_dir_all(base.join(u).join("proj")).unwrap();
        }
        std::fs::create_dir_all(base.join("bob/secret")).unwrap();
        let roots = Roots::parse(&[base.display().to_string()]).unwrap();
        assert_eq!(
            roots.resolve("alice", "proj").unwrap(),
            base.join("alice/proj")
        );
        // Another user's directory, by every spelling.
        for asked in [
            "../bob/proj".to_string(),
            base.join("bob/proj").display().to_string(),
            "proj/../../bob".to_string(),
        ] {
            let e = roots.resolve("alice", &asked).unwrap_err().to_string();
            assert!(e.contains("outside") || e.contains("`..`"), "{asked}: {e}");
        }
        // A symlink out of the root.
        std::os::unix::fs::symlink(base.join("bob/secret"), base.join("alice/link")).unwrap();
        let e = roots.resolve("alice", "link").unwrap_err().to_string();
        assert!(e.contains("outside"), "{e}");
        // A symlink that stays inside is the directory it names.
        std::os::unix::fs::symlink(base.join("alice/proj"), base.join("alice/p2")).unwrap();
        assert_eq!(
            roots.resolve("alice", "p2").unwrap(),
            base.join("alice/proj")
        );
        // No root for a user not configured.
        let only = Roots::parse(&[format!("bob={}", base.join("bob").display())]).unwrap();
        assert!(only.resolve("alice", "proj").is_err());
        assert!(only.resolve("bob", "proj").is_ok());
    }

    #[test]
    fn roots_parse_strictly() {
        assert!(Roots::parse(&["relative".into()]).is_err());
        assert!(Roots::parse(&["/a".into(), "/b".into()]).is_err());
        assert!(Roots::parse(&["bad name=/a".into()]).is_err());
        assert!(Roots::parse(&["/a".into(), "bob=/b".into()]).is_ok());
    }
}
