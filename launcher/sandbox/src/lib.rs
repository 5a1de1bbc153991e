//! The sandbox plan: from an effective policy and a request to a
//! backend-neutral [`SandboxSpec`], the secret scanner that finds what to
//! mask, and the [`Backend`] trait that backends implement.
//!
//! This crate does the I/O that planning needs (resolving paths, walking
//! the workspace) but never creates a sandbox: it must not depend on
//! libcontainer, oci-spec, bollard or any other container API. Those belong
//! to the backend crates, which read a `SandboxSpec` and nothing else.

pub mod backend;
pub mod detached;
pub mod dirs;
pub mod egress;
mod error;
#[cfg(feature = "fixtures")]
pub mod fixtures;
pub mod hostrun;
pub mod landlock;
pub mod pins;
pub mod plan;
pub mod prepare;
pub mod scan;
pub mod slirp;
pub mod spec;
pub mod termfilter;

pub use backend::{
    Backend, BackendError, ExitStatus, Handle, Liveness, NoObserver, Observer, Orphan, OutputCopy,
    RunOptions,
};
pub use error::PlanError;
pub use plan::{HostFacts, PlanRequest, plan, policy_hash};
pub use spec::SandboxSpec;

/// A program on PATH, or in /usr/bin or /usr/local/bin when PATH lacks
/// them.
pub fn find_program(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/local/bin".into()])
        .map(|d: std::path::PathBuf| d.join(name))
        .find(|p| p.is_file())
}
