//! The microVM backend's seam (issue 16, in progress): what a virtual
//! machine monitor is asked to run ([`VmConfig`]), a driver per VMM that
//! turns it into a process ([`VmmDriver`]; QEMU first, in [`qemu`]), and
//! which acceleration this host really has ([`accel`]). No VMM is written
//! here: each driver runs an external one. Nothing here knows a sandbox
//! plan; the backend that will build on it maps a plan to a [`VmConfig`].

pub mod accel;
pub mod initramfs;
pub mod qemu;

use std::ffi::OsString;
use std::path::PathBuf;

pub use accel::{Accel, AccelChoice, Probe};

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// An acceleration was asked for that this host cannot give.
    #[error("{reason}; {fix}")]
    Accel { reason: String, fix: String },
    /// A configuration the driver cannot express.
    #[error("{0}")]
    Config(String),
}

/// A host directory the guest mounts by its tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    pub tag: String,
    pub host_path: PathBuf,
    /// Enforced by the host: the guest cannot write it, however it mounts it.
    pub read_only: bool,
}

/// One virtual machine, as the backend asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The kernel command line (the console is the driver's to add).
    pub cmdline: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub accel: Accel,
    pub shares: Vec<Share>,
    /// A unix socket the VMM listens on for the guest agent's channel.
    pub agent_socket: PathBuf,
    /// A unix socket the VMM listens on for its control protocol.
    pub control_socket: PathBuf,
    /// Where the guest's console goes.
    pub console_log: PathBuf,
}

/// A virtual machine monitor, run as an external process. Drivers say how
/// to start it; the backend runs, watches and stops the process.
pub trait VmmDriver {
    /// The VMM's name, for messages (`qemu`).
    fn name(&self) -> &'static str;
    /// The program and arguments that run `cfg`. The VM has no network
    /// device unless the config asks for one (it cannot yet).
    fn command(&self, cfg: &VmConfig) -> Result<Vec<OsString>, VmmError>;
}
