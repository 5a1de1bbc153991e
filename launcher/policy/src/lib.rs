//! Pure policy logic for agentctl: the profile format and its inheritance,
//! the secret rules, environment filtering and the seccomp profile.
//!
//! This crate must stay free of I/O, async runtimes and container APIs: it
//! never touches the disk, the network, tokio, bollard, libcontainer or
//! oci-spec. Callers hand it text and facts; it hands back decisions. That
//! keeps every security decision unit-testable without a sandbox.

pub mod egress;
pub mod env;
mod error;
pub mod gitconfig;
pub mod pins;
pub mod profile;
pub mod resolve;
pub mod seccomp;
pub mod secrets;
pub mod types;

pub use error::{ProfileError, nearest};
pub use profile::{AllowEntry, HomeEntry, MountEntry, NetworkEntry, ProfileFile, SecretsEntry};
pub use resolve::{
    BUILTIN_PROFILES, BuiltinOnly, DEFAULT_PROFILE, Limits, Policy, ProfileLoader, available,
    resolve,
};
pub use types::{
    AccessMode, BackendName, ByteSize, Cpus, EnvPattern, HostFileKind, NetworkMode, ProfilePath,
    UserSpec,
};
