//! The lifecycle's context: where records go, which backends run
//! sessions, where the launcher keeps its runtime files, and how notices
//! reach the user. Every operation is a method of [`Lifecycle`], defined
//! in the module of its layer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::backends::{Backends, HostBackends};
use crate::location::StoreLocation;

/// Starts, stops, follows and reconciles sessions, keeping each on record.
/// One per process; cheap to build.
#[derive(Clone)]
pub struct Lifecycle {
    pub store: StoreLocation,
    pub backends: Arc<dyn Backends>,
    /// Launcher locks (`launchers/<id>.lock`) and session proxies
    /// (`proxies/<id>/`) live here: the native backend's runtime directory.
    pub runtime: PathBuf,
    /// This binary, run again as a session's Docker proxy and as the
    /// command a detached session's supervisor runs when it ends.
    pub self_exe: PathBuf,
    /// A session younger than this in `created` may still be starting: a
    /// reconcile does not judge it lost yet.
    pub launch_grace: Duration,
    /// Who acts, for the audit log (stop, exec, created).
    pub actor: String,
    /// The dashboard user a session is recorded under when it is not the
    /// Unix user who runs it: a worker runs sessions for the users who
    /// asked for them.
    pub owner: Option<String>,
    /// Lines the user should see (a proxy's report of what it could not
    /// clean up); the CLI prints them on stderr.
    pub notify: Arc<dyn Fn(&str) + Send + Sync>,
}

impl Lifecycle {
    /// The lifecycle on this host, as this user: the real backends, the
    /// native backend's runtime directory.
    pub fn on_host(store: StoreLocation, mut backends: HostBackends) -> Lifecycle {
        backends.store = store.0.clone();
        Lifecycle {
            store,
            self_exe: backends.self_exe.clone(),
            backends: Arc::new(backends),
            runtime: backend_native::Dirs::for_current_user().base,
            launch_grace: launch_grace(),
            actor: crate::record::local_actor(),
            owner: None,
            notify: Arc::new(|line| eprintln!("{line}")),
        }
    }

    pub(crate) fn backend(&self, kind: store::Backend) -> Box<dyn sandbox::Backend> {
        self.backends.get(kind)
    }
}

/// 30 s, or AGENTCTL_LAUNCH_GRACE_MS (tests shorten it).
fn launch_grace() -> Duration {
    std::env::var("AGENTCTL_LAUNCH_GRACE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(30))
}

/// Sleeps for the milliseconds the environment variable `var` names, so
/// that a test can put another process's step between two of this one's
/// (a race made deterministic). Nothing else reads these variables.
pub(crate) fn test_pause(var: &str) {
    if let Some(ms) = std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok()) {
        std::thread::sleep(Duration::from_millis(ms));
    }
}
