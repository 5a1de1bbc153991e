//! Checks that run before anything is created, so that a session that
//! cannot have every control is refused with the reason and the fix,
//! instead of starting weaker.

use std::fs;
use std::path::Path;

use sandbox::{BackendError, RunOptions, SandboxSpec};

use crate::cgroup::{self, CgroupMode, Hierarchy};
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
    let id = spec.session.as_str();
    let uid = spec.identity.invoker_uid;
    let hierarchy = cgroup::detect().map_err(|e| BackendError::Control {
        control: "resource limits",
        reason: format!("cannot read the cgroup layout: {e}"),
        fix: "mount cgroupfs at /sys/fs/cgroup".into(),
    })?;
    let both_fixes = |what: String| BackendError::Control {
        control: "resource limits",
        reason: what,
        fix: "run `sudo agentctl setup` once to delegate a cgroup to your user, \
              or pass --no-limits to run without pids, memory and cpu limits"
            .into(),
    };
    if !rootless {
        if !opts.no_limits {
            missing_controllers(&hierarchy).map_err(|m| BackendError::Control {
                control: "resource limits",
                reason: format!("the {m} cgroup controller is not available"),
                fix: "enable it in the kernel, or pass --no-limits".into(),
            })?;
        }
        let path = format!("/agentctl/{id}");
        return Ok(if opts.no_limits {
            CgroupMode::Unlimited { path }
        } else {
            CgroupMode::Runtime { path }
        });
    }
    match &hierarchy {
        Hierarchy::V1 { mounts } => {
            let missing = cgroup::v1_missing_delegation(mounts, uid);
            let path = format!("{}/{id}", cgroup::v1_delegated_base(uid));
            if missing.is_empty() {
                Ok(if opts.no_limits {
                    CgroupMode::Unlimited { path }
                } else {
                    CgroupMode::DelegatedV1 { path }
                })
            } else if opts.no_limits {
                Ok(CgroupMode::Hidden { path })
            } else {
                Err(both_fixes(format!(
                    "cgroup v1 has no subtree delegated to uid {uid} ({} is missing or not writable)",
                    missing[0].display()
                )))
            }
        }
        Hierarchy::V2 => {
            let own = cgroup::own_v2_cgroup().unwrap_or_default();
            if opts.no_limits {
                return Ok(CgroupMode::Unlimited {
                    path: format!("{own}/agentctl-{id}"),
                });
            }
            // The helper runs in a scope of its own that systemd delegates
            // to the user; the session's cgroup is made inside it then.
            if systemd_user_manager() {
                Ok(CgroupMode::DelegatedV2 {
                    path: String::new(),
                })
            } else {
                Err(both_fixes(format!(
                    "cgroup v2: your cgroup {own} is not delegated to you, and there is no \
                     systemd user manager to delegate one (`systemd-run --user --scope`)"
                )))
            }
        }
    }
}

/// True when `systemd-run --user` can reach the user's systemd manager.
fn systemd_user_manager() -> bool {
    let bus = std::env::var_os("XDG_RUNTIME_DIR")
        .map(|d| Path::new(&d).join("bus").exists())
        .unwrap_or(false);
    bus && crate::find_program("systemd-run").is_some()
}

/// The first limit controller the host lacks, if any.
fn missing_controllers(h: &Hierarchy) -> Result<(), &'static str> {
    match h {
        Hierarchy::V1 { mounts } => {
            for c in cgroup::LIMIT_CONTROLLERS {
                if !mounts.iter().any(|m| m.controllers.iter().any(|x| x == c)) {
                    return Err(c);
                }
            }
            Ok(())
        }
        Hierarchy::V2 => {
            let avail =
                fs::read_to_string(Path::new(cgroup::CGROUP_ROOT).join("cgroup.controllers"))
                    .unwrap_or_default();
            for c in cgroup::LIMIT_CONTROLLERS {
                if !avail.split_whitespace().any(|a| a == *c) {
                    return Err(c);
                }
            }
            Ok(())
        }
    }
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
