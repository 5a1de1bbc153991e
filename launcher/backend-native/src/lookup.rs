//! Finding an exec's command on PATH only where the agent cannot have put
//! it.
//!
//! `agentctl exec <id> -- ls` is typed by the user, who means the system's
//! `ls`. The session's PATH is the user's, and some of its directories are
//! writable inside the sandbox (`~/.local/bin` in the fresh home, the
//! workspace, /tmp): a planted `~/.local/bin/ls` would run instead. So a
//! bare command name resolves, inside the sandbox just before it runs, only
//! to a file that the agent can neither replace nor redirect: every
//! component of its path, symlinks followed, is either on a read-only
//! mount or a mount point itself (the kernel refuses to rename or remove
//! those). A file bound read-only into a writable directory (the
//! claude-code profile's `~/.local/bin/claude`) qualifies; a file the agent
//! wrote does not.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Where a bare command name led.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The first PATH entry holding it whose path the agent cannot change.
    Found(PathBuf),
    /// Found only where the agent could have put it: those entries.
    OnlyWritable(Vec<PathBuf>),
    NotFound,
}

/// Symlinks followed in one lookup before giving up, as the kernel does.
const MAX_LINKS: usize = 40;

pub fn find_command(name: &str, path_var: &str) -> Lookup {
    let mut writable = Vec::new();
    for dir in path_var.split(':') {
        // Relative and empty entries mean the working directory, which is
        // the workspace: never a place to look for the user's command.
        if !dir.starts_with('/') {
            continue;
        }
        let candidate = Path::new(dir).join(name);
        if !executable(&candidate) {
            continue;
        }
        let mut links = 0;
        if stable(&candidate, &mut links) {
            return Lookup::Found(candidate);
        }
        writable.push(PathBuf::from(dir));
    }
    if writable.is_empty() {
        Lookup::NotFound
    } else {
        Lookup::OnlyWritable(writable)
    }
}

fn executable(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access reads a NUL-terminated path we own.
    let ok = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
    ok && std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// One step of a walk, owned: a symlink's target is read into a buffer
/// that outlives the component it replaced.
enum Step {
    Root,
    Parent,
    Name(OsString),
}

/// The steps of `path`, last first (the walk pops from the end).
fn steps(path: &Path) -> Vec<Step> {
    let mut out: Vec<Step> = path
        .components()
        .filter_map(|c| match c {
            Component::RootDir => Some(Step::Root),
            Component::ParentDir => Some(Step::Parent),
            Component::Normal(n) => Some(Step::Name(n.to_os_string())),
            Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    out.reverse();
    out
}

/// True when nothing the agent may do changes what `path` names: walked
/// one component at a time, each must sit in a read-only directory or be a
/// mount point; a symlink's target is walked the same way.
fn stable(path: &Path, links: &mut usize) -> bool {
    let mut cur = PathBuf::from("/");
    let mut rest = steps(path);
    while let Some(step) = rest.pop() {
        let name = match step {
            Step::Root => {
                cur = PathBuf::from("/");
                continue;
            }
            // Every directory walked so far is a real one (links were
            // replaced by their targets), so `..` is its parent.
            Step::Parent => {
                cur.pop();
                continue;
            }
            Step::Name(n) => n,
        };
        let next = cur.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(&next) else {
            return false;
        };
        if !read_only(&cur) && !mount_root(&next, &cur) {
            return false;
        }
        if meta.file_type().is_symlink() {
            *links += 1;
            if *links > MAX_LINKS {
                return false;
            }
            let Ok(target) = std::fs::read_link(&next) else {
                return false;
            };
            // The target's steps come next, then what was left.
            rest.extend(steps(&target));
            continue;
        }
        cur = next;
    }
    true
}

fn read_only(dir: &Path) -> bool {
    nix::sys::statvfs::statvfs(dir)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// True when `path` is the root of a mount: the kernel refuses to rename
/// or unlink it. statx says so directly (Linux 5.8); before that, a device
/// other than its parent's does (a bind mount from the same device is then
/// taken for a plain entry, which only makes the walk stricter).
fn mount_root(path: &Path, parent: &Path) -> bool {
    if let Ok(c) = CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: statx fills a zeroed struct we own from a NUL-terminated
        // path.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::statx(
                libc::AT_FDCWD,
                c.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
                0,
                &mut stx,
            )
        };
        let known = libc::STATX_ATTR_MOUNT_ROOT as u64;
        if r == 0 && stx.stx_attributes_mask & known != 0 {
            return stx.stx_attributes & known != 0;
        }
    }
    use std::os::unix::fs::MetadataExt;
    match (std::fs::symlink_metadata(path), std::fs::metadata(parent)) {
        (Ok(a), Ok(b)) => a.dev() != b.dev(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The host's own /usr is a plain directory in a writable root file
    // system here, so these check the walk's logic on what a test can make:
    // a file in a writable temporary directory is never stable.
    #[test]
    fn a_file_in_a_writable_directory_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let tool = bin.join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let path = format!("relative:{}", bin.display());
        assert_eq!(find_command("tool", &path), Lookup::OnlyWritable(vec![bin]));
        assert_eq!(find_command("absent-tool", &path), Lookup::NotFound);
    }

    #[test]
    fn link_loops_end() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("b", dir.path().join("a")).unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("b")).unwrap();
        let mut links = 0;
        assert!(!stable(&dir.path().join("a"), &mut links));
    }
}
