//! Pinned directories: the directories between a mount's root and the
//! secrets masked inside it, each bound onto itself so that it is a mount
//! point in the sandbox.
//!
//! A mount point cannot be renamed, removed or replaced (the kernel answers
//! EBUSY), so with its ancestors pinned a masked path keeps naming the same
//! file for the whole session. Inside the sandbox's own mount namespace the
//! masks would follow a renamed directory anyway (mounts follow dentries),
//! but the Docker daemon mounts a child container's binds and masks by
//! their host *paths*, at the child's start, which the agent chooses: an
//! agent that ran `mv config config2` between create and start would find
//! `config2/.env` unmasked in its child. Pins make the host paths the
//! daemon will resolve the ones that were checked. (issue 9, item 1)

use std::path::{Path, PathBuf};

use policy::pins::ancestors_to_pin;

use crate::spec::{MountPlan, MountPurpose, MountSource};

/// Pins as mounts: each directory between `root` (a mount's host path,
/// seen at `container` in the sandbox) and each of `paths` (host paths
/// inside it) bound onto itself, as writable as the mount.
pub fn pin_mounts(
    root: &Path,
    container: &Path,
    writable: bool,
    paths: &[PathBuf],
) -> Vec<MountPlan> {
    ancestors_to_pin(root, paths)
        .into_iter()
        .map(|dir| MountPlan {
            destination: container.join(dir.strip_prefix(root).expect("pins lie under the root")),
            source: MountSource::Bind {
                path: dir,
                file: false,
            },
            writable,
            purpose: MountPurpose::Pin,
        })
        .collect()
}
