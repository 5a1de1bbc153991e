//! What the commands share: the lifecycle on this host, a request from
//! the command line, and how times and counts are printed. A leaf: it
//! uses no other command.

use std::sync::Arc;

use lifecycle::{HostBackends, Lifecycle, SessionRequest, StoreLocation};

use crate::cli::{BackendKind, PolicyArgs};

/// The lifecycle over `store`, with the real backends of this host.
pub fn lifecycle(store: StoreLocation) -> Lifecycle {
    Lifecycle::on_host(store, host_backends())
}

/// The real backends, with progress bars for image pulls on a terminal.
pub fn host_backends() -> HostBackends {
    HostBackends {
        self_exe: lifecycle::backends::self_path(),
        images: lifecycle::backends::image_root(),
        progress: Arc::new(crate::progress::Bars::for_stderr),
        store: None,
    }
}

/// The session the command line asks for.
pub fn request(args: &PolicyArgs, command: Vec<String>) -> SessionRequest {
    SessionRequest {
        profile: args.profile.clone(),
        workspace: args.workspace.clone(),
        command,
        network: args.network.map(Into::into),
        allow: args.allow.clone(),
        mounts: args.mounts.clone(),
        env: args.env.clone(),
        image: args.image.clone(),
        allow_home_workspace: args.allow_home_workspace,
        session_id: None,
    }
}

pub fn backend_kind(b: BackendKind) -> store::Backend {
    match b {
        BackendKind::Native => store::Backend::Native,
        BackendKind::Docker => store::Backend::Docker,
        BackendKind::Vm => store::Backend::Vm,
    }
}

pub fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
