//! What a plan needs made on the host before its sandbox starts:
//! agentctl's own directories (so that they can be masked, and no session
//! can make them first) and the home entries a profile creates. Planning
//! only lists them ([`HostPrep`] in the spec), so that `explain` and
//! `bundle` change nothing; the launch makes them with [`apply`], after
//! the session is on record, and checks at that moment that what it made
//! is what the plan named.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::PlanError;
use crate::spec::SandboxSpec;

/// One thing to make, by the real path the plan mounts or masks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HostPrep {
    /// A directory (0700), with any missing parents (0700). One that
    /// exists by then is fine if it is a directory.
    Dir { path: PathBuf },
    /// A new file (0600) with `content`. One that exists by then refuses
    /// the session: something made it after the plan looked.
    File { path: PathBuf, content: String },
}

impl HostPrep {
    pub fn path(&self) -> &Path {
        match self {
            HostPrep::Dir { path } | HostPrep::File { path, .. } => path,
        }
    }
}

/// `p`'s real path when `p` does not exist (yet): the real path of its
/// nearest existing ancestor, with the rest appended. `None` when no
/// ancestor can be resolved or the rest holds `..`.
pub fn real_path_of_missing(p: &Path) -> Option<PathBuf> {
    let mut rest = Vec::new();
    let mut at = p;
    loop {
        if fs::symlink_metadata(at).is_ok() {
            let mut real = fs::canonicalize(at).ok()?;
            for c in rest.iter().rev() {
                real.push(c);
            }
            return Some(real);
        }
        let name = at.file_name()?;
        if name == ".." {
            return None;
        }
        rest.push(name.to_os_string());
        at = at.parent()?;
    }
}

fn refuse(path: &Path, message: String) -> PlanError {
    PlanError::Mount {
        path: path.to_path_buf(),
        message,
        fix: "make it yourself, or remove the entry from the profile, and run again".into(),
    }
}

/// Makes what `spec` lists, each checked at the moment it is made: a
/// directory must end up a directory at exactly its planned real path
/// (no link followed on the way), a file must be new.
pub fn apply(spec: &SandboxSpec) -> Result<(), PlanError> {
    for prep in &spec.prepare {
        match prep {
            HostPrep::Dir { path } => make_dir(path)?,
            HostPrep::File { path, content } => make_file(path, content)?,
        }
    }
    Ok(())
}

fn make_dir(path: &Path) -> Result<(), PlanError> {
    let mut at = PathBuf::new();
    for c in path.components() {
        at.push(c);
        match fs::DirBuilder::new().mode(0o700).create(&at) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(refuse(path, format!("cannot create {}: {e}", at.display()))),
        }
    }
    // Made or found: it must be a directory at its planned real path. A
    // link swapped in for any component since the plan resolved it would
    // make the mount or mask land somewhere else.
    match fs::canonicalize(path) {
        Ok(real) if real == path && real.is_dir() => Ok(()),
        Ok(real) => Err(refuse(
            path,
            format!(
                "it resolves to {} now, not to what the plan resolved",
                real.display()
            ),
        )),
        Err(e) => Err(refuse(path, format!("cannot resolve it: {e}"))),
    }
}

fn make_file(path: &Path, content: &str) -> Result<(), PlanError> {
    if let Some(parent) = path.parent() {
        make_dir(parent)?;
    }
    // create_new and O_NOFOLLOW: never through a link planted meanwhile,
    // never over a file made since the plan looked.
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut f| f.write_all(content.as_bytes()))
        .map_err(|e| refuse(path, format!("cannot create it: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_paths_resolve_through_their_existing_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let real = fs::canonicalize(dir.path()).unwrap();
        fs::create_dir(real.join("target")).unwrap();
        std::os::unix::fs::symlink(real.join("target"), real.join("link")).unwrap();
        assert_eq!(
            real_path_of_missing(&real.join("link/a/b")),
            Some(real.join("target/a/b"))
        );
        // `..` after a link is the link target's parent, as the kernel has it.
        assert_eq!(
            real_path_of_missing(&real.join("link/../x")),
            Some(real.join("x"))
        );
    }

    #[test]
    fn a_directory_is_made_and_a_link_in_its_place_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = fs::canonicalize(dir.path()).unwrap();
        make_dir(&real.join("a/b")).unwrap();
        assert!(real.join("a/b").is_dir());
        make_dir(&real.join("a/b")).expect("an existing directory is fine");
        fs::create_dir(real.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(real.join("elsewhere"), real.join("c")).unwrap();
        let e = make_dir(&real.join("c/d")).unwrap_err().to_string();
        assert!(e.contains("resolves to"), "{e}");
    }

    #[test]
    fn a_file_must_be_new() {
        let dir = tempfile::tempdir().unwrap();
        let real = fs::canonicalize(dir.path()).unwrap();
        make_file(&real.join("f"), "{}").unwrap();
        assert_eq!(fs::read_to_string(real.join("f")).unwrap(), "{}");
        assert!(make_file(&real.join("f"), "{}").is_err());
        std::os::unix::fs::symlink("/etc/hostname", real.join("g")).unwrap();
        assert!(make_file(&real.join("g"), "{}").is_err());
    }
}
