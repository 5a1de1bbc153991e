//! agentctl's self-hosted stack (`agentctl up|down|status|logs`).
//!
//! The stack is the compose project in `compose/` of the repository, which
//! this crate carries inside the binary and writes to the stack's
//! directory, so that the stack always matches the CLI that starts it.
//! Docker Compose (v2's `docker compose` or v1's `docker-compose`) and the
//! engine are driven through their command-line tools: the same calls work
//! with either Compose and any engine the `docker` CLI reaches.
//!
//! Layers, bottom to top:
//! - `error`: what can go wrong, with the file, the key and the fix.
//! - `files`: the embedded compose project and images, written out.
//! - `envfile`: the stack's `.env`: made once with fresh secrets, read
//!   back, never overwritten.
//! - `services`: which services each role runs, and their ports.
//! - `docker`: the `docker` CLI: the engine, images, the stack's
//!   containers and their health.
//! - `compose`: which Compose is installed, and its command lines.

pub mod compose;
pub mod docker;
pub mod envfile;
mod error;
pub mod files;
pub mod services;

pub use error::StackError;

use std::path::PathBuf;

/// The stack's directory: `AGENTCTL_STACK_DIR`, or `/var/lib/agentctl-stack`
/// for root and `$XDG_DATA_HOME/agentctl-stack` (`~/.local/share/…`)
/// for others. Beside agentctl's own data, not in it: the stack's
/// workspaces are bound into sandboxes, agentctl's state never is.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("AGENTCTL_STACK_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/agentctl-stack");
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".local/share"))
        })
        .unwrap_or_else(|| PathBuf::from(".local/share"));
    data.join("agentctl-stack")
}

/// The file `agentctl up` writes once the stack's store is ready, holding
/// its URL (mode 0600), and `agentctl down` removes: while it is there,
/// agentctl's commands on this host record into the stack.
pub const STORE_MARKER: &str = "store.url";

/// The stack's store URL while the stack is up (see [`STORE_MARKER`]).
pub fn store_marker(dir: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(STORE_MARKER)).ok()?;
    let url = text.trim();
    (!url.is_empty()).then(|| url.to_string())
}
