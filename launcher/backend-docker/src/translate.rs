//! A [`SandboxSpec`] as a Docker container: `ContainerCreateBody` and its
//! `HostConfig`. Pure, so the mapping is snapshot-tested; the daemon sees
//! exactly what this returns.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountBindOptions, MountBindOptionsPropagationEnum,
    MountType,
};
use policy::NetworkMode;
use sandbox::SandboxSpec;
use sandbox::spec::MountSource;

/// Labels that mark a container as agentctl's.
pub const LABEL_MANAGED: &str = "io.agentctl.managed";
pub const LABEL_SESSION: &str = "io.agentctl.session";
pub const LABEL_PROFILE: &str = "io.agentctl.profile";
pub const LABEL_POLICY: &str = "io.agentctl.policy-sha256";

/// What the translation needs besides the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The image to create the container from (the host-root image for a
    /// session on the host's root filesystem).
    pub image: String,
    pub tty: bool,
    /// Keep the container's stdin open for the caller's input.
    pub stdin: bool,
    /// The engine makes read-only bind mounts read-only recursively
    /// (API 1.44 and later). Older engines get non-recursive binds instead,
    /// so that no writable submount shows through.
    pub recursive_read_only: bool,
    /// PATH from the image's config, used when the plan's PATH is only the
    /// standard default.
    pub image_path: Option<String>,
    pub no_limits: bool,
    /// Run this agentctl binary as PID 1 (`__init`) instead of Docker's
    /// init: for host-root images, whose /sbin is the host's, read-only.
    pub init: Option<std::path::PathBuf>,
    /// The caller's terminal size (rows, columns), given to agentctl's init
    /// so the agent starts with it: a resize through the API can only
    /// follow the start, and would race the agent's first look.
    pub tty_size: Option<(u16, u16)>,
    /// Have agentctl's init confine the sandbox to its own abstract unix
    /// sockets (Landlock), for the host network. Only with `init`.
    pub scope_abstract_unix: bool,
    /// The allowlist network: the holder container whose network namespace
    /// (with the planted listeners) the sandbox joins, and the resolv.conf
    /// that names the DNS stub.
    pub allowlist: Option<(String, std::path::PathBuf)>,
}

/// The one part of the host's /sys a sandbox on the host network sees.
pub const SYS_CPU: &str = "/sys/devices/system/cpu";

/// Where the agentctl init binary is mounted in host-root containers.
pub const INIT_PATH: &str = "/.agentctl/init";

pub fn container_name(spec: &SandboxSpec) -> String {
    format!("agentctl-{}", spec.session.short())
}

pub fn to_container(spec: &SandboxSpec, opts: &Options) -> ContainerCreateBody {
    let uid = spec.identity.host_uid;
    let gid = spec.identity.host_gid;

    let mut mounts = Vec::new();
    let mut tmpfs = HashMap::new();
    for m in &spec.mounts {
        let target = m.destination.to_string_lossy().into_owned();
        match &m.source {
            MountSource::Bind { path, file } => {
                let read_only = !m.writable;
                let tree = !file;
                mounts.push(Mount {
                    target: Some(target),
                    source: Some(path.to_string_lossy().into_owned()),
                    typ: Some(MountType::BIND),
                    read_only: Some(read_only),
                    bind_options: Some(MountBindOptions {
                        propagation: Some(MountBindOptionsPropagationEnum::RPRIVATE),
                        non_recursive: Some(read_only && tree && !opts.recursive_read_only),
                        read_only_force_recursive: (read_only && tree && opts.recursive_read_only)
                            .then_some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
            MountSource::Tmpfs { size, mode } => {
                // Owned by the session's user, as the native backend's tmpfs
                // is owned by the user's id inside its namespace.
                let mut options = format!(
                    "{},nosuid,nodev,mode={mode:o},uid={uid},gid={gid}",
                    if m.writable { "rw" } else { "ro" }
                );
                if let Some(size) = size {
                    options.push_str(&format!(",size={size}"));
                }
                tmpfs.insert(target, options);
            }
        }
    }

    if spec.network == NetworkMode::Host {
        // On the host's network, the engine's sysfs would show the host's
        // (its network namespace's) devices: only the CPU topology, which
        // runtimes read to size their thread pools, comes in.
        tmpfs.insert(
            "/sys".to_string(),
            "rw,nosuid,nodev,noexec,mode=755,size=4k".to_string(),
        );
        mounts.push(Mount {
            target: Some(SYS_CPU.into()),
            source: Some(SYS_CPU.into()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            bind_options: Some(MountBindOptions {
                propagation: Some(MountBindOptionsPropagationEnum::RPRIVATE),
                non_recursive: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    if let Some(init) = &opts.init {
        mounts.push(Mount {
            target: Some(INIT_PATH.into()),
            source: Some(init.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        });
    }

    if let Some((_, resolv)) = &opts.allowlist {
        mounts.push(Mount {
            target: Some("/etc/resolv.conf".into()),
            source: Some(resolv.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        });
    }

    let masked = spec.all_masked_paths();

    let env: Vec<String> = spec
        .env
        .iter()
        .map(|e| {
            let value = match (&opts.image_path, e.name.as_str(), &e.source) {
                (Some(p), "PATH", policy::env::EnvSource::Base) => p.clone(),
                _ => e.value.0.clone(),
            };
            format!("{}={value}", e.name)
        })
        .collect();

    let l = &spec.limits;
    let host_config = HostConfig {
        mounts: Some(mounts),
        tmpfs: Some(tmpfs),
        readonly_rootfs: Some(true),
        masked_paths: Some(masked),
        // The /sys tmpfs of the host network is made read-only once the
        // CPU topology is mounted in it.
        readonly_paths: Some(
            spec.readonly_proc_paths
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .chain((spec.network == NetworkMode::Host).then(|| "/sys".to_string()))
                .collect(),
        ),
        network_mode: Some(match (spec.network, &opts.allowlist) {
            (NetworkMode::None, _) => "none".into(),
            (NetworkMode::Bridge, _) => "bridge".into(),
            (NetworkMode::Host, _) => "host".into(),
            (NetworkMode::Allowlist, Some((holder, _))) => format!("container:{holder}"),
            // Without its holder an allowlist session has no way out at all.
            (NetworkMode::Allowlist, None) => "none".into(),
        }),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec![
            "no-new-privileges:true".into(),
            format!("seccomp={}", crate::seccomp::docker_json(&spec.seccomp)),
        ]),
        pids_limit: (!opts.no_limits).then_some(i64::from(l.pids)),
        memory: (!opts.no_limits).then_some(l.memory_bytes as i64),
        memory_swap: (!opts.no_limits).then_some(l.memory_bytes as i64),
        nano_cpus: (!opts.no_limits).then_some(i64::from(l.cpu_millis) * 1_000_000),
        // An init as PID 1 forwards signals and reaps, like the native
        // backend's: docker-init from an image, agentctl's own otherwise.
        init: Some(opts.init.is_none()),
        ipc_mode: Some("private".into()),
        privileged: Some(false),
        auto_remove: Some(false),
        ..Default::default()
    };

    ContainerCreateBody {
        image: Some(opts.image.clone()),
        cmd: Some(spec.command.clone()),
        // The image's entrypoint would change what runs; the plan's command
        // is the whole command.
        entrypoint: Some(match &opts.init {
            Some(_) => {
                let mut e = vec![INIT_PATH.to_string(), "__init".to_string()];
                if opts.tty {
                    e.push("--tty".into());
                }
                if let Some((rows, cols)) = opts.tty_size {
                    e.push(format!("--size={rows}x{cols}"));
                }
                if opts.scope_abstract_unix {
                    e.push("--scope-abstract-unix".into());
                }
                // runc skips a masked path it cannot find: the init checks
                // that every planned secret mask took before the agent runs.
                for m in &spec.masked {
                    e.push(format!("--verify-mask={}", m.path.display()));
                }
                e.push("--".into());
                e
            }
            None => Vec::new(),
        }),
        env: Some(env),
        working_dir: Some(spec.cwd.to_string_lossy().into_owned()),
        user: Some(format!("{uid}:{gid}")),
        // The engine refuses a hostname for a container on another's
        // network namespace (it shares that one's UTS settings).
        hostname: opts.allowlist.is_none().then(|| spec.hostname.clone()),
        tty: Some(opts.tty),
        open_stdin: Some(opts.stdin),
        stdin_once: Some(opts.stdin),
        attach_stdin: Some(opts.stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        network_disabled: Some(spec.network == NetworkMode::None),
        labels: Some(HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_SESSION.to_string(), spec.session.to_string()),
            (LABEL_PROFILE.to_string(), spec.profile.clone()),
            (LABEL_POLICY.to_string(), spec.policy_sha256.clone()),
        ])),
        host_config: Some(host_config),
        ..Default::default()
    }
}
