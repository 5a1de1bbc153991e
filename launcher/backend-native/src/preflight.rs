//! Checks that run before anything is created, so that a session that
//! cannot have every control is refused with the reason and the fix,
//! instead of starting weaker.

use std::fs;
use std::path::Path;

use sandbox::{BackendError, RunOptions, SandboxSpec};

use crate::cgroup::{self, CgroupMode};
use crate::net;

/// Host settings that decide whether an unprivileged user may create a
/// user namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsernsSysctls {
    /// `user.max_user_namespaces`
    pub max_user_namespaces: Option<u64>,
    /// Debian's `kernel.unprivileged_userns_clone`
    pub unprivileged_userns_clone: Option<u64>,
    /// Ubuntu's `kernel.apparmor_restrict_unprivileged_userns`
    pub apparmor_restrict: Option<u64>,
}

impl UsernsSysctls {
    pub fn read() -> UsernsSysctls {
        let get = |p: &str| {
            fs::read_to_string(Path::new("/proc/sys").join(p))
                .ok()
                .and_then(|s| s.trim().parse().ok())
        };
        UsernsSysctls {
            max_user_namespaces: get("user/max_user_namespaces"),
            unprivileged_userns_clone: get("kernel/unprivileged_userns_clone"),
            apparmor_restrict: get("kernel/apparmor_restrict_unprivileged_userns"),
        }
    }

    /// Which setting forbids user namespaces, and how to allow them.
    pub fn problem(&self, rootless: bool) -> Option<String> {
        if self.max_user_namespaces == Some(0) {
            return Some(
                "user namespaces are disabled: user.max_user_namespaces is 0; \
                 allow them with `sudo sysctl -w user.max_user_namespaces=28633`"
                    .into(),
            );
        }
        if !rootless {
            return None;
        }
        if self.unprivileged_userns_clone == Some(0) {
            return Some(
                "unprivileged user namespaces are disabled: kernel.unprivileged_userns_clone is 0; \
                 allow them with `sudo sysctl -w kernel.unprivileged_userns_clone=1` \
                 (add it to /etc/sysctl.d/ to keep it)"
                    .into(),
            );
        }
        if self.apparmor_restrict == Some(1) {
            return Some(
                "AppArmor restricts unprivileged user namespaces: \
                 kernel.apparmor_restrict_unprivileged_userns is 1 (Ubuntu 23.10 and later); \
                 allow agentctl with the AppArmor profile in docs/ROOTLESS.md, or turn the \
                 restriction off with `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`"
                    .into(),
            );
        }
        None
    }
}

/// The user-namespace diagnosis for the current host, if any.
pub fn userns_hint() -> Option<String> {
    UsernsSysctls::read().problem(!nix::unistd::geteuid().is_root())
}

/// Everything that must hold before a session is created. Returns the
/// cgroup arrangement to use.
pub fn check(spec: &SandboxSpec, opts: &RunOptions) -> Result<CgroupMode, BackendError> {
    let rootless = !nix::unistd::geteuid().is_root();
    if let Some(problem) = UsernsSysctls::read().problem(rootless) {
        return Err(BackendError::Control {
            control: "user namespace",
            reason: problem,
            fix: "change the setting named above, or run agentctl as root".into(),
        });
    }
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !status.lines().any(|l| l.starts_with("Seccomp:")) {
        return Err(BackendError::Control {
            control: "seccomp",
            reason: "this kernel has no seccomp support (no Seccomp: line in /proc/self/status)"
                .into(),
            fix: "use a kernel built with CONFIG_SECCOMP_FILTER".into(),
        });
    }
    if spec.network == policy::NetworkMode::Bridge && net::find_slirp4netns().is_none() {
        return Err(BackendError::Control {
            control: "bridge network",
            reason: "the native backend's bridge network needs slirp4netns, which is not installed"
                .into(),
            fix: "install it (`apt-get install slirp4netns`), or use --network none or --network host"
                .into(),
        });
    }
    cgroup_mode(spec, opts, rootless)
}

fn cgroup_mode(
    spec: &SandboxSpec,
    opts: &RunOptions,
    rootless: bool,
) -> Result<CgroupMode, BackendError> {
    cgroup::mode_for(
        spec.session.as_str(),
        spec.identity.invoker_uid,
        rootless,
        opts.no_limits,
    )
    .map_err(|r| BackendError::Control {
        control: "resource limits",
        reason: r.reason,
        fix: r.fix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_sysctl_that_blocks_user_namespaces() {
        let ok = UsernsSysctls {
            max_user_namespaces: Some(1000),
            unprivileged_userns_clone: Some(1),
            apparmor_restrict: Some(0),
        };
        assert_eq!(ok.problem(true), None);
        let debian = UsernsSysctls {
            unprivileged_userns_clone: Some(0),
            ..ok.clone()
        };
        assert!(
            debian
                .problem(true)
                .unwrap()
                .contains("kernel.unprivileged_userns_clone")
        );
        assert_eq!(debian.problem(false), None, "root is not affected");
        let ubuntu = UsernsSysctls {
            apparmor_restrict: Some(1),
            ..ok.clone()
        };
        assert!(
            ubuntu
                .problem(true)
                .unwrap()
                .contains("apparmor_restrict_unprivileged_userns")
        );
        let off = UsernsSysctls {
            max_user_namespaces: Some(0),
            ..ok
        };
        assert!(
            off.problem(false)
                .unwrap()
                .contains("user.max_user_namespaces")
        );
    }
}
