//! The one advisory file lock agentctl uses: `flock(2)` on a file of its
//! own, through `nix::fcntl::Flock`. A lock lives as long as its [`Lock`]
//! (or the process: the kernel drops it with the last descriptor), so
//! "is this supervisor alive" is one non-blocking try, immune to pid reuse.
//!
//! Users: the launcher's lock on a session it records, the native helper's
//! lock on the session it supervises, and the image cache's shared and
//! exclusive locks.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct Lock {
    _flock: Flock<File>,
}

/// Shared (readers) or exclusive (one writer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Shared,
    Exclusive,
}

fn open(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .mode(0o600)
        // Never through a link planted in the lock's place.
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
}

fn flock(file: File, arg: FlockArg) -> Result<Lock, (File, Errno)> {
    Flock::lock(file, arg).map(|f| Lock { _flock: f })
}

/// Takes an exclusive lock on `path` (created 0600 when missing) without
/// waiting. `Ok(None)` when another holder has it.
pub fn try_exclusive(path: &Path) -> io::Result<Option<Lock>> {
    let file = open(path, true)?;
    match flock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

/// True when someone holds a lock on `path`. A missing file is not held.
pub fn held(path: &Path) -> bool {
    let Ok(file) = open(path, false) else {
        return false;
    };
    // Taken and released at once when nobody holds it.
    matches!(
        flock(file, FlockArg::LockExclusiveNonblock),
        Err((_, Errno::EWOULDBLOCK))
    )
}

/// Takes a lock on `path` (created 0600 when missing), waiting for it;
/// `on_wait` is called once, before waiting, if the lock is taken.
pub fn lock(path: &Path, mode: Mode, on_wait: impl FnOnce()) -> io::Result<Lock> {
    let (try_arg, arg) = match mode {
        Mode::Exclusive => (FlockArg::LockExclusiveNonblock, FlockArg::LockExclusive),
        Mode::Shared => (FlockArg::LockSharedNonblock, FlockArg::LockShared),
    };
    let mut file = match flock(open(path, true)?, try_arg) {
        Ok(l) => return Ok(l),
        Err((file, Errno::EWOULDBLOCK)) => file,
        Err((_, e)) => return Err(e.into()),
    };
    on_wait();
    loop {
        match flock(file, arg) {
            Ok(l) => return Ok(l),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, e)) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_excludes_and_drop_releases() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.lock");
        assert!(!held(&p), "a missing file is not held");
        let l = try_exclusive(&p).unwrap().expect("free");
        assert!(held(&p));
        assert!(try_exclusive(&p).unwrap().is_none());
        drop(l);
        assert!(!held(&p));
    }

    #[test]
    fn shared_locks_coexist_and_block_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.lock");
        let a = lock(&p, Mode::Shared, || panic!("no wait")).unwrap();
        let _b = lock(&p, Mode::Shared, || panic!("no wait")).unwrap();
        assert!(try_exclusive(&p).unwrap().is_none());
        drop(a);
        assert!(try_exclusive(&p).unwrap().is_none(), "b still holds it");
    }

    #[test]
    fn a_planted_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "x").unwrap();
        let p = dir.path().join("l.lock");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        assert!(try_exclusive(&p).is_err());
    }
}
