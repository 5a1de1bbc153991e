//! From a request to a plan: the profile resolved from disk, the session
//! planned. Deciding changes nothing on the host; what the plan needs made
//! (agentctl's own directories, home entries a profile creates) is made by
//! the launch, after the session is on record (see `sandbox::prepare`).

use std::path::PathBuf;

use sandbox::{HostFacts, PlanRequest, SandboxSpec};

use crate::context::Lifecycle;
use crate::error::{Error, Result};
use crate::profiles::FsLoader;

/// What someone asks to run: a profile, a workspace, a command, and what
/// the user adds on top of the profile.
#[derive(Clone, Debug, Default)]
pub struct SessionRequest {
    /// A built-in or user profile name, or a path to a profile file.
    pub profile: String,
    /// The workspace; the current directory when `None`.
    pub workspace: Option<PathBuf>,
    pub command: Vec<String>,
    pub network: Option<policy::NetworkMode>,
    /// `--allow RULE`s on top of the profile's allowlist.
    pub allow: Vec<String>,
    pub mounts: Vec<policy::MountEntry>,
    pub env: Vec<policy::env::CliEnv>,
    pub image: Option<String>,
    pub allow_home_workspace: bool,
    /// The session's id when it is given (a worker runs a request under
    /// the request's id); a fresh one when `None`.
    pub session_id: Option<String>,
}

impl SessionRequest {
    /// What this request asks beyond its profile (the network, mounts,
    /// environment names and image given on top of it): the dashboard shows
    /// it as the session's difference from its profile. Names only, never
    /// an environment value.
    pub fn asked(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        if let Some(n) = self.network {
            m.insert("network".into(), serde_json::json!(n));
        }
        if !self.allow.is_empty() {
            m.insert("allow".into(), serde_json::json!(self.allow));
        }
        if !self.mounts.is_empty() {
            m.insert("mounts".into(), serde_json::json!(self.mounts));
        }
        if !self.env.is_empty() {
            let names: Vec<&str> = self
                .env
                .iter()
                .map(|e| match e {
                    policy::env::CliEnv::Pass(n) | policy::env::CliEnv::Set(n, _) => n.as_str(),
                })
                .collect();
            m.insert("env".into(), serde_json::json!(names));
        }
        if let Some(i) = &self.image {
            m.insert("image".into(), serde_json::json!(i));
        }
        serde_json::Value::Object(m)
    }
}

impl Lifecycle {
    /// Resolves the profile and plans the session: `run`, `explain` and
    /// `bundle` all go through here, so all three show and run exactly the
    /// same thing.
    pub fn plan(&self, req: &SessionRequest) -> Result<SandboxSpec> {
        let policy = policy::resolve(&req.profile, &FsLoader::new())?;
        let workspace = match &req.workspace {
            Some(w) => w.clone(),
            None => std::env::current_dir()
                .map_err(|e| Error::io("cannot read the current directory", e))?,
        };
        let host = HostFacts::current()?;
        let mut spec = sandbox::plan(
            PlanRequest {
                policy,
                workspace,
                command: req.command.clone(),
                network: req.network,
                allow: req.allow.clone(),
                mounts: req.mounts.clone(),
                env: req.env.clone(),
                image: req.image.clone(),
                allow_home_workspace: req.allow_home_workspace,
                own_state: own_state(),
            },
            &host,
        )?;
        if let Some(id) = &req.session_id {
            spec.session = sandbox::spec::SessionId::parse(id).ok_or_else(|| {
                Error::Refused(format!("session id {id}: give 32 lowercase hex digits"))
            })?;
            spec.hostname = format!("agentctl-{}", spec.session.short());
        }
        Ok(spec)
    }
}

/// agentctl's own files for this user: profiles, the data directory
/// (store, logs, the image cache), the runtime directory, and wherever
/// AGENTCTL_IMAGES and a SQLite AGENTCTL_STORE point. The plan masks them
/// in every mount whether or not they exist yet, and the launch makes the
/// missing directories (0700) before the sandbox starts: one that does not
/// exist under a read-write grant (`~/.config:rw` without
/// `~/.config/agentctl`) would let the agent make it and plant a profile
/// that the next session loads.
pub fn own_state() -> sandbox::plan::OwnState {
    let mut dirs = Vec::new();
    if let Some(d) = FsLoader::new().user_dir
        && let Some(parent) = d.parent()
    {
        dirs.push(parent.to_path_buf());
    }
    dirs.push(backend_native::Dirs::for_current_user().base);
    dirs.push(crate::backends::image_root());
    if let Some(parent) = backend_native::default_logs_dir().parent() {
        dirs.push(parent.to_path_buf());
    }
    // A SQLite store named elsewhere: the file and its journals only (its
    // directory may be anything, /tmp included).
    let mut files = Vec::new();
    for url in [
        std::env::var("AGENTCTL_STORE").ok(),
        Some(store::SessionStore::default_url()),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(path) = url.strip_prefix("sqlite://") {
            let file = path.split('?').next().unwrap_or(path);
            for suffix in ["", "-wal", "-shm", "-journal"] {
                files.push(PathBuf::from(format!("{file}{suffix}")));
            }
        }
    }
    for v in [&mut dirs, &mut files] {
        v.sort();
        v.dedup();
    }
    sandbox::plan::OwnState { dirs, files }
}
