//! Files in the workspace that the host runs later: a git directory's
//! `config` (`core.fsmonitor`, `core.hooksPath`, `core.sshCommand`, filters)
//! and `hooks/`, the `commondir` and `.git` links that tell git which of
//! those to read, and editor run configurations. An agent that writes one
//! of them gets its code run outside the sandbox the next time the user
//! runs git or opens the project. They are bound read-only onto themselves,
//! and the directories leading to them are pinned so that they cannot be
//! moved aside and replaced. (issue 9, item 12)
//!
//! Where git would read such a file if it existed (a repository has no
//! `commondir` of its own, yet git follows one the agent creates to another
//! repository's config), a placeholder is created before the session starts
//! with the content git reads as "none": `.` for `commondir`, nothing for a
//! config. The launcher creates and removes them (`create_placeholders`,
//! `remove_placeholders`); planning only names them.

use std::fs;
use std::path::{Path, PathBuf};

use policy::HostFileKind;
use serde::{Deserialize, Serialize};

use crate::error::PlanError;

/// The names the scanner reports, wherever they appear in a writable tree.
pub const NAMES: &[&str] = &[".git", ".vscode", ".idea", ".devcontainer"];

/// What stands in for a missing host-run file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Placeholder {
    /// A regular file with this content.
    File { content: String },
    /// An empty directory (left in place afterwards: git makes one anyway).
    Dir,
}

/// One path that is read-only in the sandbox because the host runs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRunFile {
    /// The path on the host (inside a writable mount).
    pub host: PathBuf,
    /// Where it appears in the sandbox.
    pub path: PathBuf,
    pub dir: bool,
    /// The profile kind that makes it writable; `None` for the links that
    /// only redirect git (never writable: they would redirect it anywhere).
    pub kind: Option<HostFileKind>,
    pub why: String,
    /// Created before the session starts when it does not exist.
    pub placeholder: Option<Placeholder>,
}

/// Depth limit for submodule git directories under `.git/modules` (their
/// names may contain slashes, and submodules nest).
const MAX_MODULE_DEPTH: usize = 12;

/// The host-run files of a writable tree mounted at `container` from
/// `host`, given what the scanner found there by name (`found`, host paths
/// of entries named in [`NAMES`]). Kinds in `writable` are left out.
pub fn find(
    host: &Path,
    container: &Path,
    found: &[PathBuf],
    writable: &[HostFileKind],
) -> Result<Vec<HostRunFile>, PlanError> {
    let mut cx = Cx {
        root: host,
        container,
        writable,
        out: Vec::new(),
        seen_git_dirs: Vec::new(),
    };
    let mut found = found.to_vec();
    found.sort();
    for entry in &found {
        let Some(name) = entry.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Ok(meta) = fs::symlink_metadata(entry) else {
            continue;
        };
        match name {
            ".git" if meta.is_dir() => cx.git_dir(entry, 0)?,
            ".git" => cx.git_link(entry)?,
            _ if meta.is_dir() || meta.file_type().is_symlink() => cx.add(
                entry,
                true,
                Some(HostFileKind::Ide),
                "editor settings and run configurations, which the editor runs on the host",
                None,
            )?,
            _ => {}
        }
    }
    cx.out.sort_by(|a, b| a.host.cmp(&b.host));
    cx.out.dedup_by(|a, b| a.host == b.host);
    Ok(cx.out)
}

struct Cx<'a> {
    root: &'a Path,
    container: &'a Path,
    writable: &'a [HostFileKind],
    out: Vec<HostRunFile>,
    seen_git_dirs: Vec<PathBuf>,
}

impl Cx<'_> {
    fn add(
        &mut self,
        host: &Path,
        dir: bool,
        kind: Option<HostFileKind>,
        why: &str,
        placeholder: Option<Placeholder>,
    ) -> Result<(), PlanError> {
        if kind.is_some_and(|k| self.writable.contains(&k)) {
            return Ok(());
        }
        let meta = fs::symlink_metadata(host);
        match &meta {
            Ok(m) if m.file_type().is_symlink() => {
                // A mount cannot sit on a link (it lands on the target), so
                // the agent could replace the link, and git would follow
                // the new one.
                let target = fs::read_link(host)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|_| "?".into());
                return Err(PlanError::Mount {
                    path: host.to_path_buf(),
                    message: format!(
                        "it is a symlink (to {target}), and {why}; agentctl cannot keep the agent from replacing a link"
                    ),
                    fix: match kind {
                        Some(k) => format!(
                            "replace the link with what it points to, or let the agent change these files: `writable_host_files: [{k}]` in a profile"
                        ),
                        None => "replace the link with the file it points to".into(),
                    },
                });
            }
            Ok(m) if m.is_dir() != dir => return Ok(()),
            Ok(_) => {}
            Err(_) if placeholder.is_none() => return Ok(()),
            Err(_) => {}
        }
        let rel = host.strip_prefix(self.root).unwrap_or(host);
        self.out.push(HostRunFile {
            host: host.to_path_buf(),
            path: self.container.join(rel),
            dir,
            kind,
            why: why.to_string(),
            placeholder: if meta.is_ok() { None } else { placeholder },
        });
        Ok(())
    }

    /// A git directory: its config, hooks, redirects, and those of its
    /// submodules and linked worktrees.
    fn git_dir(&mut self, g: &Path, depth: usize) -> Result<(), PlanError> {
        if depth > MAX_MODULE_DEPTH || !g.join("HEAD").exists() {
            return Ok(());
        }
        let Ok(real) = fs::canonicalize(g) else {
            return Ok(());
        };
        if self.seen_git_dirs.contains(&real) {
            return Ok(());
        }
        self.seen_git_dirs.push(real);
        let config = g.join("config");
        self.add(
            &config,
            false,
            Some(HostFileKind::GitConfig),
            "git runs the programs its config names (core.fsmonitor, core.hooksPath, filters)",
            Some(Placeholder::File {
                content: String::new(),
            }),
        )?;
        let worktree_config = fs::read_to_string(&config)
            .map(|t| t.to_ascii_lowercase().contains("worktreeconfig"))
            .unwrap_or(false);
        self.add(
            &g.join("config.worktree"),
            false,
            Some(HostFileKind::GitConfig),
            "git reads it as config when extensions.worktreeConfig is on",
            worktree_config.then(|| Placeholder::File {
                content: String::new(),
            }),
        )?;
        self.add(
            &g.join("commondir"),
            false,
            None,
            "it points git at another repository's config and hooks",
            Some(Placeholder::File {
                content: ".\n".into(),
            }),
        )?;
        self.add(
            &g.join("hooks"),
            true,
            Some(HostFileKind::GitHooks),
            "git runs its hooks on commit, checkout, merge and push",
            Some(Placeholder::Dir),
        )?;
        // Linked worktrees' administrative directories.
        if let Ok(entries) = fs::read_dir(g.join("worktrees")) {
            for e in entries.flatten() {
                let w = e.path();
                for (name, kind, why) in [
                    (
                        "commondir",
                        None,
                        "it points a linked worktree's git at a repository's config and hooks",
                    ),
                    (
                        "gitdir",
                        None,
                        "it says where a linked worktree is checked out",
                    ),
                    (
                        "config.worktree",
                        Some(HostFileKind::GitConfig),
                        "git reads it as a linked worktree's config",
                    ),
                ] {
                    self.add(&w.join(name), false, kind, why, None)?;
                }
            }
        }
        self.modules(&g.join("modules"), depth + 1)
    }

    /// Submodule git directories under `dir`, at any depth of names.
    fn modules(&mut self, dir: &Path, depth: usize) -> Result<(), PlanError> {
        if depth > MAX_MODULE_DEPTH {
            return Ok(());
        }
        let Ok(entries) = fs::read_dir(dir) else {
            return Ok(());
        };
        let mut subdirs: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        subdirs.sort();
        for d in subdirs {
            if d.join("HEAD").exists() {
                self.git_dir(&d, depth)?;
            } else {
                self.modules(&d, depth + 1)?;
            }
        }
        Ok(())
    }

    /// A `.git` file (a submodule checkout or linked worktree): the link
    /// itself, and the git directory it names when that is in this tree.
    fn git_link(&mut self, file: &Path) -> Result<(), PlanError> {
        self.add(
            file,
            false,
            None,
            "it tells git which repository this checkout uses",
            None,
        )?;
        let Ok(text) = fs::read_to_string(file) else {
            return Ok(());
        };
        let Some(target) = text
            .lines()
            .find_map(|l| l.strip_prefix("gitdir:"))
            .map(str::trim)
        else {
            return Ok(());
        };
        let target = file.parent().unwrap_or(Path::new("/")).join(target);
        if let Ok(real) = fs::canonicalize(&target)
            && real.starts_with(self.root)
        {
            self.git_dir(&real, 0)?;
        }
        Ok(())
    }
}

/// Creates the placeholders `files` call for, before the sandbox starts.
/// Returns the ones it created, for [`remove_placeholders`]. A path that
/// exists by then (made by another session) is used as it is, unless it is
/// a link.
pub fn create_placeholders(files: &[HostRunFile]) -> Result<Vec<PathBuf>, PlanError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut created = Vec::new();
    for f in files {
        let Some(p) = &f.placeholder else { continue };
        let made = match p {
            Placeholder::File { content } => match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&f.host)
            {
                Ok(mut file) => file.write_all(content.as_bytes()).map(|()| true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            },
            Placeholder::Dir => match fs::create_dir(&f.host) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            },
        };
        match made {
            Ok(true) => created.push(f.host.clone()),
            Ok(false) => {
                if fs::symlink_metadata(&f.host).is_ok_and(|m| m.file_type().is_symlink()) {
                    remove_placeholders(files, &created);
                    return Err(PlanError::Mount {
                        path: f.host.clone(),
                        message: "it appeared as a symlink while the session was starting".into(),
                        fix: "remove it and start the session again".into(),
                    });
                }
            }
            Err(e) => {
                remove_placeholders(files, &created);
                return Err(PlanError::Mount {
                    path: f.host.clone(),
                    message: format!("cannot create it to make it read-only ({e}); {}", f.why),
                    fix: "make the directory writable for you, or start the session elsewhere"
                        .into(),
                });
            }
        }
    }
    Ok(created)
}

/// Removes placeholder files this launcher created, if they still hold what
/// it wrote (a file someone has written since is theirs). Placeholder
/// directories stay: git makes an empty `hooks/` itself.
pub fn remove_placeholders(files: &[HostRunFile], created: &[PathBuf]) {
    for f in files {
        if !created.contains(&f.host) {
            continue;
        }
        if let Some(Placeholder::File { content }) = &f.placeholder
            && fs::symlink_metadata(&f.host).is_ok_and(|m| m.is_file())
            && fs::read_to_string(&f.host).is_ok_and(|c| c == *content)
        {
            let _ = fs::remove_file(&f.host);
        }
    }
}

/// At a session's end: removes the placeholder files its plan called for
/// that still hold what was written into them, unless `in_use` says a
/// session still running relies on the same path (it found the file there
/// and mounted it). Placeholder directories stay.
pub fn release(files: &[HostRunFile], in_use: &dyn Fn(&Path) -> bool) {
    for f in files {
        if let Some(Placeholder::File { content }) = &f.placeholder
            && !in_use(&f.host)
            && fs::symlink_metadata(&f.host).is_ok_and(|m| m.is_file())
            && fs::read_to_string(&f.host).is_ok_and(|c| c == *content)
        {
            let _ = fs::remove_file(&f.host);
        }
    }
}

/// The host-run files of a recorded plan (a `SandboxSpec` as JSON), for
/// [`release`] by whoever records the session's end.
pub fn from_recorded_plan(json: &str) -> Vec<HostRunFile> {
    #[derive(Deserialize)]
    struct Recorded {
        #[serde(default)]
        host_run: Vec<HostRunFile>,
    }
    serde_json::from_str::<Recorded>(json)
        .map(|r| r.host_run)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(dir: &Path) -> PathBuf {
        let g = dir.join(".git");
        fs::create_dir_all(g.join("hooks")).unwrap();
        fs::write(g.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        fs::write(g.join("config"), "[core]\n\tbare = false\n").unwrap();
        g
    }

    #[test]
    fn a_repository_its_submodules_and_worktrees() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let g = repo(&root);
        // A submodule with a slash in its name, and a linked worktree.
        let sub = g.join("modules/libs/a");
        fs::create_dir_all(sub.join("hooks")).unwrap();
        fs::write(sub.join("HEAD"), "x").unwrap();
        fs::write(sub.join("config"), "x").unwrap();
        fs::create_dir_all(g.join("worktrees/wt")).unwrap();
        fs::write(g.join("worktrees/wt/commondir"), "../..\n").unwrap();
        fs::write(g.join("worktrees/wt/gitdir"), "/elsewhere/.git\n").unwrap();
        fs::create_dir(root.join(".vscode")).unwrap();
        let files = find(&root, &root, &[g.clone(), root.join(".vscode")], &[]).unwrap();
        let rel: Vec<(String, bool)> = files
            .iter()
            .map(|f| {
                (
                    f.host.strip_prefix(&root).unwrap().display().to_string(),
                    f.placeholder.is_some(),
                )
            })
            .collect();
        assert_eq!(
            rel,
            [
                (".git/commondir".to_string(), true),
                (".git/config".to_string(), false),
                (".git/hooks".to_string(), false),
                (".git/modules/libs/a/commondir".to_string(), true),
                (".git/modules/libs/a/config".to_string(), false),
                (".git/modules/libs/a/hooks".to_string(), false),
                (".git/worktrees/wt/commondir".to_string(), false),
                (".git/worktrees/wt/gitdir".to_string(), false),
                (".vscode".to_string(), false),
            ]
        );
    }

    #[test]
    fn granted_kinds_are_left_writable_but_links_never() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let g = repo(&root);
        let files = find(
            &root,
            &root,
            std::slice::from_ref(&g),
            &[HostFileKind::GitConfig, HostFileKind::GitHooks],
        )
        .unwrap();
        assert_eq!(files.len(), 1);
        assert!(files[0].host.ends_with(".git/commondir"));
    }

    #[test]
    fn a_symlinked_hooks_directory_is_refused_with_the_grant_that_allows_it() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let g = repo(&root);
        fs::remove_dir(g.join("hooks")).unwrap();
        fs::create_dir(root.join("scripts")).unwrap();
        std::os::unix::fs::symlink("../scripts", g.join("hooks")).unwrap();
        let err = find(&root, &root, std::slice::from_ref(&g), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("symlink"), "{err}");
        assert!(err.contains("writable_host_files: [git-hooks]"), "{err}");
        assert!(find(&root, &root, &[g], &[HostFileKind::GitHooks]).is_ok());
    }

    #[test]
    fn a_git_link_names_its_repository_inside_the_tree() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let g = repo(&root);
        let sub = g.join("modules/sub");
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join("HEAD"), "x").unwrap();
        fs::write(sub.join("config"), "x").unwrap();
        fs::create_dir(root.join("sub")).unwrap();
        fs::write(root.join("sub/.git"), "gitdir: ../.git/modules/sub\n").unwrap();
        let files = find(&root, &root, &[root.join("sub/.git")], &[]).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.host.strip_prefix(&root).unwrap().display().to_string())
            .collect();
        assert!(names.contains(&"sub/.git".to_string()), "{names:?}");
        assert!(
            names.contains(&".git/modules/sub/config".to_string()),
            "{names:?}"
        );
    }

    #[test]
    fn placeholders_are_created_and_removed_only_when_untouched() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let g = repo(&root);
        let files = find(&root, &root, std::slice::from_ref(&g), &[]).unwrap();
        let created = create_placeholders(&files).unwrap();
        assert_eq!(created, [g.join("commondir")]);
        assert_eq!(fs::read_to_string(g.join("commondir")).unwrap(), ".\n");
        // A second session finds it there and creates nothing.
        assert!(create_placeholders(&files).unwrap().is_empty());
        remove_placeholders(&files, &created);
        assert!(!g.join("commondir").exists());
        // One that changed since is left alone.
        let created = create_placeholders(&files).unwrap();
        fs::write(g.join("commondir"), "../other\n").unwrap();
        remove_placeholders(&files, &created);
        assert!(g.join("commondir").exists());
    }
}
