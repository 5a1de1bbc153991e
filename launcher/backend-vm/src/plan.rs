//! A [`SandboxSpec`] as the microVM backend executes it: the tree the
//! host builds and exports (every bind, mask and read-only mount of the
//! plan, in order), the guest's part (its tmpfs mounts, /proc, limits,
//! the filter), and the VM around it. Pure: no I/O.

use std::path::{Path, PathBuf};

use sandbox::spec::{MaskKind, MountPurpose, MountSource, SandboxSpec};
use serde::{Deserialize, Serialize};
use vm_guest::{SandboxSetup, Start, Tmpfs};

/// One step of building the sandbox's tree on the host, under the tree's
/// root. Paths are as the sandbox sees them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TreeOp {
    /// An empty directory (a mount point of the guest's: /proc, /dev...).
    Dir {
        path: PathBuf,
    },
    Symlink {
        path: PathBuf,
        target: PathBuf,
    },
    /// A host path bound in, recursively; read-only all the way down
    /// unless writable.
    Bind {
        source: PathBuf,
        path: PathBuf,
        file: bool,
        writable: bool,
        /// Whether symlinks on the way to `source` are followed: never
        /// for a source in the workspace, which the agent controls.
        follow: bool,
        /// The mount point may be a symlink of the host's own (a
        /// resolv.conf a resolver manages): mounted over the link itself,
        /// which is never followed.
        #[serde(default)]
        over_link: bool,
    },
    /// A tmpfs on the host side (something of the plan is mounted below
    /// it, so the guest cannot mount it itself).
    Tmpfs {
        path: PathBuf,
        size: Option<u64>,
        mode: u32,
        writable: bool,
    },
    /// A secret: an empty read-only file or directory over it.
    Mask {
        path: PathBuf,
        dir: bool,
    },
}

/// The VM's network, as the helper sets it up (`net.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum VmNetwork {
    /// No network card at all.
    #[default]
    None,
    /// QEMU's user-mode network, in QEMU's own network namespace, which
    /// slirp4netns connects out (the host's loopback cut off).
    Bridge { slirp4netns: PathBuf },
    /// QEMU's user-mode network, in QEMU's own network namespace, which
    /// holds only the egress proxy's listeners (`egress.json` in the
    /// session directory says what they serve).
    Allowlist { transparent_ports: Vec<u16> },
}

/// QEMU's own cgroup: who makes it (the same modes as a container's
/// cgroup) and its limits (the VM's memory and QEMU's own, the plan's CPU,
/// QEMU's threads).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmmCgroup {
    pub mode: cgroups::CgroupMode,
    pub limits: sandbox::spec::LimitsPlan,
}

impl VmmCgroup {
    pub fn new(
        mode: cgroups::CgroupMode,
        spec: &SandboxSpec,
        memory_mib: u32,
        vcpus: u32,
        accel: vmm::Accel,
    ) -> VmmCgroup {
        VmmCgroup {
            mode,
            limits: sandbox::spec::LimitsPlan {
                pids: vmm::PROCESS_THREADS + vcpus,
                memory_bytes: vmm::process_memory_mib(memory_mib, accel) << 20,
                cpu_millis: spec.limits.cpu_millis,
                containers: 0,
            },
        }
    }
}

/// What the helper needs to build the tree and run the VM.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmPlan {
    pub session: String,
    pub tree: Vec<TreeOp>,
    /// Stream 0: the session's command and the sandbox's setup.
    pub start: Start,
    pub host_uid: u32,
    pub host_gid: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub memory_mib: u32,
    pub vcpus: u32,
    /// `kvm` or `tcg`.
    pub accel: String,
    pub qemu: PathBuf,
    /// A foreground session's output copy for the session store.
    pub output_copy: Option<PathBuf>,
    /// Seconds the guest may take to say it is ready.
    pub boot_timeout_secs: u64,
    /// Runs in the background: output to the helper's own stdout (the
    /// log), execs through the control socket.
    pub detached: bool,
    /// Run after the session ended and its VM is gone, with
    /// `AGENTCTL_EXIT_CODE` (records a detached session's end).
    pub on_exit: Vec<String>,
    /// Where the exit code is kept until the store has it.
    pub exit_file: Option<PathBuf>,
    /// An image session's unpacked root filesystem (the native image
    /// cache's, never written): the tree's root is an overlay of it.
    pub image_rootfs: Option<PathBuf>,
    #[serde(default)]
    pub network: VmNetwork,
    /// QEMU's cgroup; None with `--no-limits` (the VM keeps its size).
    #[serde(default)]
    pub vmm_cgroup: Option<VmmCgroup>,
}

/// Memory the guest's kernel and agent need beside the sandbox's limit.
pub const GUEST_OVERHEAD_MIB: u64 = 192;

/// The VM's memory: the sandbox's limit (enforced again by the guest's
/// cgroup) plus what the guest itself needs.
pub fn memory_mib(spec: &SandboxSpec) -> u32 {
    let limit = spec.limits.memory_bytes.div_ceil(1 << 20);
    (limit + GUEST_OVERHEAD_MIB).clamp(256, 1 << 20) as u32
}

/// vCPUs: the CPU limit rounded up, at most the host's CPUs.
pub fn vcpus(spec: &SandboxSpec, host_cpus: u32) -> u32 {
    spec.limits
        .cpu_millis
        .div_ceil(1000)
        .clamp(1, host_cpus.max(1))
}

fn under(path: &Path, dir: &Path) -> bool {
    path != dir && path.starts_with(dir)
}

/// The tree, in the plan's order (a parent before what is mounted below
/// it), then the masks. A tmpfs with nothing of the plan below it is the
/// guest's to mount (its memory is the guest's); one with something
/// below it is made here, or the guest's mount would hide what is below.
pub fn tree(spec: &SandboxSpec) -> (Vec<TreeOp>, Vec<Tmpfs>) {
    let mut ops = Vec::new();
    let mut guest = Vec::new();
    for dir in ["/proc", "/dev", "/sys"] {
        ops.push(TreeOp::Dir { path: dir.into() });
    }
    for (link, target) in &spec.rootfs_symlinks {
        ops.push(TreeOp::Symlink {
            path: link.clone(),
            target: target.clone(),
        });
    }
    let below = |dir: &Path| {
        spec.mounts.iter().any(|m| under(&m.destination, dir))
            || spec.masked.iter().any(|m| under(&m.path, dir))
    };
    for m in &spec.mounts {
        match &m.source {
            MountSource::Bind { path, file } => ops.push(TreeOp::Bind {
                source: path.clone(),
                path: m.destination.clone(),
                file: *file,
                writable: m.writable,
                follow: !path.starts_with(&spec.workspace),
                over_link: false,
            }),
            MountSource::Tmpfs { size, mode } => {
                if m.purpose == MountPurpose::Tmp && !below(&m.destination) {
                    ops.push(TreeOp::Dir {
                        path: m.destination.clone(),
                    });
                    guest.push(Tmpfs {
                        path: m.destination.to_string_lossy().into_owned(),
                        size: *size,
                        mode: *mode,
                        writable: m.writable,
                    });
                } else {
                    ops.push(TreeOp::Tmpfs {
                        path: m.destination.clone(),
                        size: *size,
                        mode: *mode,
                        writable: m.writable,
                    });
                }
            }
        }
    }
    for m in &spec.masked {
        ops.push(TreeOp::Mask {
            path: m.path.clone(),
            dir: m.kind == MaskKind::Dir,
        });
    }
    (ops, guest)
}

/// Binds the generated `resolv.conf` at /etc/resolv.conf, before the
/// masks (which stay last).
pub fn add_resolv_conf(tree: &mut Vec<TreeOp>, source: PathBuf) {
    let at = tree
        .iter()
        .position(|op| matches!(op, TreeOp::Mask { .. }))
        .unwrap_or(tree.len());
    tree.insert(
        at,
        TreeOp::Bind {
            source,
            path: "/etc/resolv.conf".into(),
            file: true,
            writable: false,
            // agentctl's own file, in the session's private directory.
            follow: true,
            // systemd-resolved's hosts link /etc/resolv.conf to its own.
            over_link: true,
        },
    );
}

/// Stream 0 as the guest runs it. The command runs as the guest's uid 0
/// (QEMU runs in a user namespace that maps 0 to the session's host
/// identity, so what the guest owns the host user owns), with no
/// capabilities.
pub fn start(
    spec: &SandboxSpec,
    tty: bool,
    size: (u16, u16),
    seccomp_bpf: Vec<u8>,
    nofile: (u64, u64),
    image_path: Option<&str>,
) -> Start {
    let (_, tmpfs) = tree(spec);
    let gateway_proxy_env = sandbox::egress::proxy_env_at(vmm::user_net::GATEWAY);
    Start {
        argv: spec.command.clone(),
        // An image's own PATH replaces the plan's default one, as on the
        // container backends.
        env: spec
            .env
            .iter()
            .map(|e| match (image_path, e.name.as_str(), &e.source) {
                (Some(p), "PATH", policy::env::EnvSource::Base) => format!("PATH={p}"),
                // The allowlist's proxies are at the guest's gateway,
                // which QEMU connects to its own namespace's loopback,
                // where they are planted.
                (_, name, policy::env::EnvSource::Network) => {
                    match gateway_proxy_env.iter().find(|(n, _)| *n == name) {
                        Some((n, v)) => format!("{n}={v}"),
                        None => format!("{}={}", e.name, e.value.0),
                    }
                }
                _ => format!("{}={}", e.name, e.value.0),
            })
            .collect(),
        cwd: spec.cwd.to_string_lossy().into_owned(),
        tty,
        rows: size.0,
        cols: size.1,
        sandbox: Some(SandboxSetup {
            hostname: spec.hostname.clone(),
            tmpfs,
            masked_proc: lossy(&spec.masked_proc_paths),
            readonly_proc: lossy(&spec.readonly_proc_paths),
            pids: spec.limits.pids,
            memory_bytes: spec.limits.memory_bytes,
            nofile,
            seccomp_bpf,
            // The guest's own /sys: its virtual hardware only.
            sysfs: true,
            net: (spec.network != policy::NetworkMode::None).then_some(vm_guest::GuestNet {
                address: vmm::user_net::GUEST,
                prefix: vmm::user_net::PREFIX,
                gateway: vmm::user_net::GATEWAY,
            }),
        }),
    }
}

fn lossy(v: &[PathBuf]) -> Vec<String> {
    v.iter().map(|p| p.to_string_lossy().into_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_masks_and_tmpfs_land_where_the_plan_says() {
        let spec = sandbox::fixtures::spec(policy::NetworkMode::None);
        let (ops, guest) = tree(&spec);
        // Every mount and mask of the plan is in the tree, in order.
        let binds = ops
            .iter()
            .filter(|o| matches!(o, TreeOp::Bind { .. }))
            .count();
        let plan_binds = spec
            .mounts
            .iter()
            .filter(|m| matches!(m.source, MountSource::Bind { .. }))
            .count();
        assert_eq!(binds, plan_binds);
        let masks = ops
            .iter()
            .filter(|o| matches!(o, TreeOp::Mask { .. }))
            .count();
        assert_eq!(masks, spec.masked.len());
        let first_mask = ops.iter().position(|o| matches!(o, TreeOp::Mask { .. }));
        let last_bind = ops.iter().rposition(|o| matches!(o, TreeOp::Bind { .. }));
        if let (Some(m), Some(b)) = (first_mask, last_bind) {
            assert!(m > b, "masks come after every bind");
        }
        // The fresh home has grants below it: the host mounts it.
        let home = &spec.identity.home;
        assert!(
            ops.iter()
                .any(|o| matches!(o, TreeOp::Tmpfs { path, .. } if path == home))
        );
        assert!(!guest.iter().any(|t| Path::new(&t.path) == home));
        // Read-only stays read-only.
        for o in &ops {
            if let TreeOp::Bind { path, writable, .. } = o
                && path.starts_with("/usr")
            {
                assert!(!writable);
            }
        }
    }

    #[test]
    fn a_tmp_with_the_workspace_below_it_is_the_hosts() {
        let mut spec = sandbox::fixtures::spec(policy::NetworkMode::None);
        spec.mounts.push(sandbox::spec::MountPlan {
            destination: "/tmp/project".into(),
            source: MountSource::Bind {
                path: "/tmp/project".into(),
                file: false,
            },
            writable: true,
            purpose: MountPurpose::Workspace,
        });
        let (ops, guest) = tree(&spec);
        assert!(guest.iter().all(|t| t.path != "/tmp"));
        assert!(
            ops.iter()
                .any(|o| matches!(o, TreeOp::Tmpfs { path, .. } if path == Path::new("/tmp")))
        );
    }

    #[test]
    fn memory_and_cpus_follow_the_limits() {
        let mut spec = sandbox::fixtures::spec(policy::NetworkMode::None);
        spec.limits.memory_bytes = 1 << 30;
        spec.limits.cpu_millis = 1500;
        assert_eq!(memory_mib(&spec), 1024 + GUEST_OVERHEAD_MIB as u32);
        assert_eq!(vcpus(&spec, 8), 2);
        assert_eq!(vcpus(&spec, 1), 1);
        spec.limits.cpu_millis = 0;
        assert_eq!(vcpus(&spec, 8), 1);
    }
}
