//! Translation of a [`SandboxSpec`] into an OCI runtime spec. Pure: no I/O,
//! so the translation is snapshot-tested and the same `config.json` can be
//! handed to runc or crun for comparison.

use std::path::{Path, PathBuf};

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Arch, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxIdMappingBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscallBuilder, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};
use policy::NetworkMode;
use policy::seccomp::{Action, Op, SeccompProfile};
use sandbox::spec::{MountSource, SandboxSpec};

/// The one part of the host's /sys a sandbox on the host network sees.
pub const SYS_CPU: &str = "/sys/devices/system/cpu";

/// CPU quota period, in microseconds.
const CPU_PERIOD: u64 = 100_000;

/// Host-side choices the translation needs that are not policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleOptions {
    /// Allocate a terminal for the process.
    pub tty: bool,
    /// Absolute cgroup path, e.g. `/agentctl/<id>`.
    pub cgroups_path: String,
    /// Whether the runtime applies the limits (`linux.resources`). When
    /// agentctl has already applied them in a delegated cgroup, the runtime
    /// must not try again.
    pub runtime_limits: bool,
    /// A generated resolv.conf to bind over /etc/resolv.conf.
    pub resolv_conf: Option<PathBuf>,
    /// Leave out the limits entirely (`--no-limits`).
    pub no_limits: bool,
    /// Create the user namespace as part of the sandbox (root). When the
    /// helper made one for itself first (rootless), the sandbox lives in it.
    pub user_namespace: bool,
    /// The open-files limit (soft, hard), normally the launcher's own:
    /// agents open many files, and the OCI default of 1024 is too few.
    pub nofile: (u64, u64),
    /// PATH from the image's config, replacing the plan's default PATH.
    pub image_path: Option<String>,
}

/// Builds the OCI spec for a session.
pub fn to_oci(spec: &SandboxSpec, opts: &BundleOptions) -> Result<Spec, OciSpecError> {
    let netns = spec.network != NetworkMode::Host;

    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
    ];
    // sysfs may only be mounted by the owner of the network namespace. With
    // the host network the host's would have to be bound, and it shows the
    // host's devices and cgroups: an empty read-only /sys instead, with only
    // the CPU topology (runtimes read it to size their thread pools).
    if netns {
        mounts.push(mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?);
    } else {
        mounts.push(mount(
            "/sys",
            "tmpfs",
            "tmpfs",
            &["nosuid", "noexec", "nodev", "mode=755", "size=4k"],
        )?);
        mounts.push(bind(SYS_CPU, Path::new(SYS_CPU), false, true)?);
    }
    for m in &spec.mounts {
        let dest = m.destination.to_string_lossy();
        mounts.push(match &m.source {
            MountSource::Bind { path, file } => bind(&dest, path, m.writable, !file)?,
            MountSource::Tmpfs { size, mode } => {
                let mut options = vec![
                    "nosuid".to_string(),
                    "nodev".to_string(),
                    format!("mode={mode:o}"),
                ];
                if let Some(size) = size {
                    options.push(format!("size={size}"));
                }
                if !m.writable {
                    options.push("ro".into());
                }
                MountBuilder::default()
                    .destination(dest.as_ref())
                    .typ("tmpfs")
                    .source("tmpfs")
                    .options(options)
                    .build()?
            }
        });
    }
    if let Some(resolv) = &opts.resolv_conf {
        mounts.push(bind("/etc/resolv.conf", resolv, false, false)?);
    }

    let no_caps = || {
        let none = oci_spec::runtime::Capabilities::new();
        LinuxCapabilitiesBuilder::default()
            .bounding(none.clone())
            .effective(none.clone())
            .inheritable(none.clone())
            .permitted(none.clone())
            .ambient(none)
            .build()
    };
    let process = ProcessBuilder::default()
        .terminal(opts.tty)
        // The agent is root of its own user namespace, mapped to the host
        // identity, with every capability dropped.
        .user(UserBuilder::default().uid(0u32).gid(0u32).build()?)
        .args(spec.command.clone())
        .env(
            spec.env
                .iter()
                .map(|e| match (&opts.image_path, e.name.as_str(), &e.source) {
                    (Some(p), "PATH", policy::env::EnvSource::Base) => format!("PATH={p}"),
                    _ => format!("{}={}", e.name, e.value.0),
                })
                .collect::<Vec<_>>(),
        )
        .cwd(spec.cwd.clone())
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(opts.nofile.0)
                .hard(opts.nofile.1)
                .build()?,
        ])
        .capabilities(no_caps()?)
        .no_new_privileges(true)
        .build()?;

    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ];
    if opts.user_namespace {
        namespaces.push(LinuxNamespaceType::User);
    }
    if netns {
        namespaces.push(LinuxNamespaceType::Network);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
        .collect::<Result<Vec<_>, _>>()?;

    let masked = spec.all_masked_paths();

    let mut linux = LinuxBuilder::default().namespaces(namespaces);
    if opts.user_namespace {
        linux = linux
            .uid_mappings(vec![
                LinuxIdMappingBuilder::default()
                    .container_id(0u32)
                    .host_id(spec.identity.host_uid)
                    .size(1u32)
                    .build()?,
            ])
            .gid_mappings(vec![
                LinuxIdMappingBuilder::default()
                    .container_id(0u32)
                    .host_id(spec.identity.host_gid)
                    .size(1u32)
                    .build()?,
            ]);
    }
    let mut linux = linux
        .masked_paths(masked)
        .readonly_paths(readonly_paths(spec))
        .seccomp(seccomp(&spec.seccomp)?)
        .cgroups_path(PathBuf::from(&opts.cgroups_path));
    if opts.runtime_limits && !opts.no_limits {
        let l = &spec.limits;
        linux = linux.resources(
            LinuxResourcesBuilder::default()
                .pids(
                    LinuxPidsBuilder::default()
                        .limit(i64::from(l.pids))
                        .build()?,
                )
                .memory(
                    LinuxMemoryBuilder::default()
                        .limit(l.memory_bytes as i64)
                        // No swap beyond the memory limit.
                        .swap(l.memory_bytes as i64)
                        .build()?,
                )
                .cpu(
                    LinuxCpuBuilder::default()
                        .quota(i64::from(l.cpu_millis) * CPU_PERIOD as i64 / 1000)
                        .period(CPU_PERIOD)
                        .build()?,
                )
                .build()?,
        );
    }

    let mut linux = linux.build()?;
    if !opts.user_namespace {
        linux.set_uid_mappings(None);
        linux.set_gid_mappings(None);
    }
    if !opts.runtime_limits || opts.no_limits {
        // The builder's defaults include a devices rule; with limits applied
        // elsewhere (or not at all) the runtime must not touch cgroup files.
        linux.set_resources(None);
    }
    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(true)
                .build()?,
        )
        .hostname(spec.hostname.clone())
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
}

/// The paths the runtime makes read-only after every mount is in place:
/// the standard /proc ones, and on the host network the /sys tmpfs (made
/// writable first so that the CPU topology's mount point can be created).
fn readonly_paths(spec: &SandboxSpec) -> Vec<String> {
    let mut v: Vec<String> = spec
        .readonly_proc_paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if spec.network == NetworkMode::Host {
        v.push("/sys".into());
    }
    v
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, OciSpecError> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
}

fn bind(dest: &str, source: &Path, writable: bool, tree: bool) -> Result<Mount, OciSpecError> {
    // `rro` makes the whole tree read-only: plain `ro` leaves submounts of
    // the source (a bind-mounted /etc/resolv.conf, say) writable. A single
    // file has no submounts, and crun 1.8 fails on `rro` for one.
    let options: &[&str] = match (writable, tree) {
        (true, _) => &["rbind", "rw", "nosuid", "nodev"],
        (false, true) => &["rbind", "ro", "rro", "nosuid", "nodev"],
        (false, false) => &["rbind", "ro", "nosuid", "nodev"],
    };
    MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
}

/// Rewrites a spec written for runc and crun into what libcontainer reads
/// the same way: libcontainer takes a masked comparison's mask from
/// `valueTwo` and its datum from `value`, the other way round from runc,
/// crun and Docker. Only the native backend's own spec goes through this;
/// `agentctl bundle` writes the standard order.
pub fn for_libcontainer(spec: &mut Spec) -> Result<(), OciSpecError> {
    let Some(mut linux) = spec.linux().clone() else {
        return Ok(());
    };
    let Some(mut seccomp) = linux.seccomp().clone() else {
        return Ok(());
    };
    let Some(mut syscalls) = seccomp.syscalls().clone() else {
        return Ok(());
    };
    for call in syscalls.iter_mut() {
        let Some(mut args) = call.args().clone() else {
            continue;
        };
        for arg in args.iter_mut() {
            if arg.op() == LinuxSeccompOperator::ScmpCmpMaskedEq {
                let (mask, datum) = (arg.value(), arg.value_two().unwrap_or(0));
                *arg = LinuxSeccompArgBuilder::default()
                    .index(arg.index())
                    .op(arg.op())
                    .value(datum)
                    .value_two(mask)
                    .build()?;
            }
        }
        call.set_args(Some(args));
    }
    seccomp.set_syscalls(Some(syscalls));
    linux.set_seccomp(Some(seccomp));
    spec.set_linux(Some(linux));
    Ok(())
}

/// The seccomp section for the host's architecture only: calls made
/// through another architecture's entry points (32-bit `int 0x80`) are
/// killed rather than checked against the wrong numbers.
pub fn seccomp(profile: &SeccompProfile) -> Result<LinuxSeccomp, OciSpecError> {
    let arch = if cfg!(target_arch = "aarch64") {
        Arch::ScmpArchAarch64
    } else {
        Arch::ScmpArchX86_64
    };
    let mut syscalls = Vec::new();
    for rule in &profile.rules {
        let mut b = LinuxSyscallBuilder::default()
            .names(rule.names.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        b = match rule.action {
            Action::Allow => b.action(LinuxSeccompAction::ScmpActAllow),
            Action::Errno(e) => b.action(LinuxSeccompAction::ScmpActErrno).errno_ret(e),
        };
        if !rule.args.is_empty() {
            let args = rule
                .args
                .iter()
                .map(|a| {
                    let b = LinuxSeccompArgBuilder::default().index(a.index as usize);
                    match a.op {
                        Op::Eq => b.value(a.value).op(LinuxSeccompOperator::ScmpCmpEq),
                        Op::Ne => b.value(a.value).op(LinuxSeccompOperator::ScmpCmpNe),
                        Op::Lt => b.value(a.value).op(LinuxSeccompOperator::ScmpCmpLt),
                        // runc, crun and Docker read the mask from `value`
                        // and the datum from `valueTwo` (libseccomp's
                        // order); `for_libcontainer` swaps them for youki.
                        Op::MaskedEq { mask } => b
                            .value(mask)
                            .value_two(a.value)
                            .op(LinuxSeccompOperator::ScmpCmpMaskedEq),
                    }
                    .build()
                })
                .collect::<Result<Vec<_>, _>>()?;
            b = b.args(args);
        }
        syscalls.push(b.build()?);
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(profile.default_errno)
        .architectures(vec![arch])
        .syscalls(syscalls)
        .build()
}
