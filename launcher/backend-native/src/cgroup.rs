//! The session's cgroup: the shared `cgroups` crate (also QEMU's, on the
//! vm backend), and what only a container needs.

pub use cgroups::*;

use std::io;

/// Gives the calling process private mount and cgroup namespaces whose
/// /sys/fs/cgroup is a cgroup v2 view where it may write nothing. Only for
/// `--no-limits` sessions of a user without a delegated cgroup: the
/// runtime then finds no cgroup it may create and, being rootless, goes on
/// without one, which is what was asked.
pub fn hide_cgroupfs() -> io::Result<()> {
    use nix::mount::{MsFlags, mount};
    use nix::sched::CloneFlags;
    crate::private_mount_namespace(CloneFlags::CLONE_NEWCGROUP).map_err(io::Error::from)?;
    mount(
        Some("cgroup2"),
        CGROUP_ROOT,
        Some("cgroup2"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(io::Error::from)
}
