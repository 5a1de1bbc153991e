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

/// The pins of the workspace as mounts: each directory bound onto itself,
/// as writable as the workspace.
pub fn pin_mounts(workspace: &Path, writable: bool, masked: &[PathBuf]) -> Vec<MountPlan> {
    ancestors_to_pin(workspace, masked)
        .into_iter()
        .map(|dir| MountPlan {
            destination: dir.clone(),
            source: MountSource::Bind {
                path: dir,
                file: false,
            },
            writable,
            purpose: MountPurpose::Pin,
        })
        .collect()
}
