//! Backend choice: which backend runs (or ran) a session, and the host
//! facts the real backends need. Tests give a [`Lifecycle`] backends of
//! their own.
//!
//! [`Lifecycle`]: crate::Lifecycle

use std::path::PathBuf;
use std::sync::Arc;

/// Gives the backend for a kind of session.
pub trait Backends: Send + Sync {
    fn get(&self, kind: store::Backend) -> Box<dyn sandbox::Backend>;
}

/// What the real backends need to know about this host and binary.
#[derive(Clone)]
pub struct HostBackends {
    /// This binary: the native helper, the Docker backend's init, the proxy.
    pub self_exe: PathBuf,
    /// The native image cache.
    pub images: PathBuf,
    /// Shows the progress of an image pull (bars on a terminal, lines
    /// otherwise); the caller chooses.
    pub progress: Arc<dyn Fn() -> Box<dyn image_store::Progress> + Send + Sync>,
    /// The store that processes started for a session (the egress proxy)
    /// record into; `Lifecycle::on_host` sets it to its own.
    pub store: Option<String>,
}

impl HostBackends {
    /// The native backend, with the image cache and the progress display.
    pub fn native(&self) -> backend_native::NativeBackend {
        let mut b = backend_native::NativeBackend::new(vec![
            self.self_exe.to_string_lossy().into_owned(),
            "__native-helper".to_string(),
        ]);
        b.images = self.images.clone();
        b.progress = (self.progress)();
        b.egress = self.egress_command();
        b
    }

    pub fn docker(&self) -> backend_docker::DockerBackend {
        let mut b = backend_docker::DockerBackend::new(self.self_exe.clone());
        b.egress = self.egress_command();
        b
    }

    /// The microVM backend; `AGENTCTL_VM_ACCEL` (what `run --accel`
    /// sets) chooses the acceleration.
    pub fn vm(&self) -> backend_vm::VmBackend {
        let mut b = backend_vm::VmBackend::new(vec![
            self.self_exe.to_string_lossy().into_owned(),
            "__vm-helper".to_string(),
        ]);
        b.accel = backend_vm::accel_from_env();
        b.images = self.images.clone();
        b.progress = (self.progress)();
        b.egress = self.egress_command();
        b
    }

    /// `agentctl [--store S] __egress`: what serves an allowlist session's
    /// listeners, recording its refusals in this store.
    fn egress_command(&self) -> Vec<String> {
        vec![
            self.self_exe.to_string_lossy().into_owned(),
            "--store".to_string(),
            self.store.clone().unwrap_or_else(|| "none".to_string()),
            "__egress".to_string(),
        ]
    }
}

impl Backends for HostBackends {
    fn get(&self, kind: store::Backend) -> Box<dyn sandbox::Backend> {
        match kind {
            store::Backend::Native => Box::new(self.native()),
            store::Backend::Docker => Box::new(self.docker()),
            store::Backend::Vm => Box::new(self.vm()),
        }
    }
}

/// The native image cache: AGENTCTL_IMAGES, or the per-user default.
pub fn image_root() -> PathBuf {
    std::env::var_os("AGENTCTL_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(image_store::ImageCache::default_root)
}

/// This binary, for backends that run it again (inside or beside a sandbox).
pub fn self_path() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"))
}

/// The Docker engine's version and the API version agreed on with it, or
/// why it cannot be reached and what to do (`agentctl doctor`).
pub fn docker_engine() -> Result<(String, String), (String, String)> {
    match backend_docker::DockerBackend::new(PathBuf::new()).engine() {
        Ok(v) => Ok(v),
        Err(sandbox::BackendError::Control { reason, fix, .. }) => Err((reason, fix)),
        Err(e) => Err((e.to_string(), "check the Docker engine".into())),
    }
}
