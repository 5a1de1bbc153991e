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
use std::net::Ipv4Addr;
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
    /// A user-mode network device ([`user_net`]); none when false.
    pub user_net: bool,
}

/// TCG's cache of translated code, fixed (QEMU's default is 1 GiB) so
/// that the VMM process's own memory has a known bound.
pub const TCG_CODE_CACHE_MIB: u32 = 256;

/// What the VMM process needs beside the guest's memory: its own heap,
/// device emulation and file-server buffers.
pub const PROCESS_OVERHEAD_MIB: u32 = 256;

/// Threads the VMM process may hold beside one per vCPU: its main loop,
/// RCU, I/O and the file server's worker pool (QEMU's holds up to 64).
pub const PROCESS_THREADS: u32 = 128;

/// The memory a VMM process running a guest of `memory_mib` may use in
/// all: the guest's, the process's own, and TCG's code cache (the cgroup
/// limit the vm backend puts on it).
pub fn process_memory_mib(memory_mib: u32, accel: Accel) -> u64 {
    u64::from(memory_mib)
        + u64::from(PROCESS_OVERHEAD_MIB)
        + match accel {
            Accel::Tcg => u64::from(TCG_CODE_CACHE_MIB),
            Accel::Kvm => 0,
        }
}

/// The user-mode network's addresses: the VMM's own TCP/IP stack answers
/// for the gateway and the DNS forwarder and makes the guest's
/// connections with sockets of the VMM process, so the network namespace
/// the VMM runs in decides where they can go (the host's loopback is the
/// gateway's, which is why the vm backend runs QEMU in a namespace of its
/// own). Fixed, so the guest configures itself without DHCP.
pub mod user_net {
    use super::Ipv4Addr;
    pub const NETWORK: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 0);
    pub const PREFIX: u8 = 24;
    pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    pub const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
    pub const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
}

/// A virtual machine monitor, run as an external process. Drivers say how
/// to start it; the backend runs, watches and stops the process.
pub trait VmmDriver {
    /// The VMM's name, for messages (`qemu`).
    fn name(&self) -> &'static str;
    /// The program and arguments that run `cfg`. The VM has no network
    /// device unless the config asks for the user-mode one.
    fn command(&self, cfg: &VmConfig) -> Result<Vec<OsString>, VmmError>;
}
