//! Where agentctl keeps a user's running sessions (the runtime
//! directory, shared by the daemonless backends) and detached sessions'
//! output.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;

use crate::backend::BackendError;

/// Where sessions keep their bundles and the native runtime keeps its state.
#[derive(Clone, Debug)]
pub struct Dirs {
    pub base: PathBuf,
}

impl Dirs {
    /// `/run/agentctl` for root; `$XDG_RUNTIME_DIR/agentctl` (or
    /// `/tmp/agentctl-<uid>`) for other users.
    pub fn for_current_user() -> Dirs {
        let uid = nix::unistd::geteuid();
        let base = if uid.is_root() {
            PathBuf::from("/run/agentctl")
        } else {
            std::env::var_os("XDG_RUNTIME_DIR")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute() && p.is_dir())
                .map(|p| p.join("agentctl"))
                .unwrap_or_else(|| PathBuf::from(format!("/tmp/agentctl-{uid}")))
        };
        Dirs { base }
    }

    pub fn sessions(&self) -> PathBuf {
        self.base.join("sessions")
    }

    pub fn state(&self) -> PathBuf {
        self.base.join("state")
    }

    /// Exit codes of ended sessions that nobody recorded yet.
    pub fn exits(&self) -> PathBuf {
        self.base.join("exits")
    }

    /// Creates the directories, private to the user. Refuses a base that
    /// someone else owns: another user could otherwise plant a bundle.
    pub fn ensure(&self) -> Result<(), BackendError> {
        for dir in [&self.base, &self.sessions(), &self.state()] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| BackendError::io(format!("cannot create {}", dir.display()), e))?;
        }
        let meta = fs::metadata(&self.base)
            .map_err(|e| BackendError::io(format!("cannot read {}", self.base.display()), e))?;
        use std::os::unix::fs::MetadataExt;
        if meta.uid() != nix::unistd::geteuid().as_raw() {
            return Err(BackendError::Control {
                control: "session directory",
                reason: format!("{} belongs to another user", self.base.display()),
                fix: "remove it, or set XDG_RUNTIME_DIR to a directory of your own".into(),
            });
        }
        fs::set_permissions(&self.base, fs::Permissions::from_mode(0o700))
            .map_err(|e| BackendError::io("cannot secure the session directory", e))?;
        Ok(())
    }
}

/// `/var/lib/agentctl/logs` for root, `$XDG_DATA_HOME/agentctl/logs`
/// otherwise.
pub fn default_logs_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/agentctl/logs");
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("agentctl/logs")
}
