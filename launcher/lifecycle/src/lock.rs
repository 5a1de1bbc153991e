//! The launcher's lock on a session it records (on the `fslock` helper).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Held by a launcher for as long as it runs, so that reconciliation
/// leaves its session alone: the launcher records that session itself.
pub struct LauncherLock {
    path: PathBuf,
    _lock: fslock::Lock,
}

/// Where the lock of session `id` lives under the runtime directory.
fn lock_path(runtime: &Path, id: &str) -> PathBuf {
    runtime.join("launchers").join(format!("{id}.lock"))
}

impl LauncherLock {
    pub fn take(runtime: &Path, id: &str) -> Result<LauncherLock> {
        let path = lock_path(runtime, id);
        let dir = path.parent().unwrap_or(runtime);
        // 0700 like the rest of agentctl's runtime directory: the launcher
        // may be the first to make it.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        match fslock::try_exclusive(&path) {
            Ok(Some(lock)) => Ok(LauncherLock { path, _lock: lock }),
            Ok(None) => Err(Error::Refused(format!(
                "session {id} already has a launcher"
            ))),
            Err(e) => Err(Error::io(format!("cannot create {}", path.display()), e)),
        }
    }

    /// True when a live launcher holds the lock of session `id`.
    pub fn held(runtime: &Path, id: &str) -> bool {
        fslock::held(&lock_path(runtime, id))
    }
}

impl Drop for LauncherLock {
    fn drop(&mut self) {
        // Removed while still locked; the lock goes with the descriptor.
        let _ = std::fs::remove_file(&self.path);
    }
}
