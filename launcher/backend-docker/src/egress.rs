//! The allowlist network on a local Docker Engine: the same planted
//! listeners as the native backend, "pod" style. A small holder container
//! with no network runs `agentctl __egress-plant`, which makes the
//! listeners in its own network namespace and passes them over a unix
//! socket bound into it; the agent's container joins that namespace
//! (`container:<holder>`), and `agentctl __egress` serves the listeners
//! from this host, outside both. Nothing of agentctl runs in the agent's
//! container, and the holder is another user's view of nothing: it has no
//! capabilities and no mount but what it needs.
//!
//! Only for an engine on this kernel, reached through a unix socket: the
//! descriptors cross a socket on this host's file system. A remote engine
//! is refused (an internal network and an egress container would be the
//! way there; not built).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountBindOptions, MountBindOptionsPropagationEnum,
    MountType,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use sandbox::egress::{EgressPlan, EgressProcess};
use sandbox::{BackendError, SandboxSpec};

use crate::runtime_err;
use crate::translate::INIT_PATH;

/// The label that marks a netns holder, with its session's id.
pub const LABEL_HOLDER: &str = "io.agentctl.egress-holder";
/// Where the holder finds the socket to send the listeners to.
const SOCKET_DIR: &str = "/run/agentctl-egress";

/// A session's allowlist network on the engine: its holder container and
/// the egress process serving the listeners.
pub(crate) struct Network {
    pub holder: String,
    pub resolv_conf: PathBuf,
    pub process: EgressProcess,
    dir: PathBuf,
}

fn refuse(reason: String, fix: &str) -> BackendError {
    BackendError::Control {
        control: "network",
        reason,
        fix: fix.into(),
    }
}

/// The engine must be this host's: a unix socket, and the holder's process
/// visible here (checked once it runs).
pub(crate) fn check_local() -> Result<(), BackendError> {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() && !h.starts_with("unix://") => Err(refuse(
            format!(
                "the allowlist network on the Docker backend needs the engine on this host \
                 (DOCKER_HOST={h}): its listeners are handed over on this host's file system"
            ),
            "use --backend native, or a local engine (unset DOCKER_HOST)",
        )),
        _ => Ok(()),
    }
}

fn bind(source: &Path, target: &str, read_only: bool) -> Mount {
    Mount {
        target: Some(target.into()),
        source: Some(source.to_string_lossy().into_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(read_only),
        bind_options: Some(MountBindOptions {
            propagation: Some(MountBindOptionsPropagationEnum::RPRIVATE),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Makes the holder, takes its listeners and starts the egress process.
/// Any failure removes what was made and refuses the session.
pub(crate) async fn start(
    docker: &Docker,
    spec: &SandboxSpec,
    init: &Path,
    command: &[String],
) -> Result<Network, BackendError> {
    check_local()?;
    if command.is_empty() {
        return Err(refuse(
            "this launcher cannot serve the allowlist network (no egress command)".into(),
            "run agentctl itself",
        ));
    }
    let allow = policy::egress::Allowlist::parse(&spec.network_allow)
        .map_err(|e| refuse(e.to_string(), "check the profile's network.allow rules"))?;
    let plan = EgressPlan {
        session: spec.session.to_string(),
        allow: spec.network_allow.clone(),
        transparent_ports: sandbox::egress::transparent_ports(&allow),
        command: command.to_vec(),
        owns_dir: true,
        fake_net: None,
    };
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("agentctl-egress-{}", spec.session.short()));
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| BackendError::io(what.clone(), e)
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(io("cannot create the egress directory"))?;
    let made = async {
        plan.save(&dir)
            .map_err(io("cannot write the egress plan"))?;
        let resolv_conf = dir.join("resolv.conf");
        std::fs::write(
            &resolv_conf,
            format!("nameserver {}\n", sandbox::egress::DNS.ip()),
        )
        .map_err(io("cannot write resolv.conf"))?;
        std::fs::set_permissions(&resolv_conf, std::fs::Permissions::from_mode(0o644))
            .map_err(io("cannot write resolv.conf"))?;
        let sock_path = dir.join("plant.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock_path)
            .map_err(io("cannot listen for the listeners"))?;
        listener
            .set_nonblocking(true)
            .map_err(io("cannot listen for the listeners"))?;
        let listener = tokio::net::UnixListener::from_std(listener)
            .map_err(io("cannot listen for the listeners"))?;

        let holder = create_holder(docker, spec, init, &dir, &plan.transparent_ports).await?;
        let taken = async {
            docker
                .start_container(&holder, None)
                .await
                .map_err(|e| runtime_err("cannot start the network holder", e))?;
            let holder_pid = crate::local_pid(docker, &holder).await.ok_or_else(|| {
                refuse(
                    "the network holder's process is not on this host: the engine runs \
                     elsewhere (a VM?)"
                        .into(),
                    "use --backend native, or an engine on this kernel",
                )
            })?;
            let (conn, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
                .await
                .map_err(|_| {
                    refuse(
                        "the network holder did not hand over its listeners in 30 s".into(),
                        "see `docker logs` of the holder, or use --backend native",
                    )
                })?
                .map_err(io("cannot take the listeners"))?;
            let conn = conn.into_std().map_err(io("cannot take the listeners"))?;
            conn.set_nonblocking(false)
                .map_err(io("cannot take the listeners"))?;
            let (fds, text) = sandbox::egress::recv_fds(conn.as_raw_fd())
                .map_err(io("cannot take the listeners"))?;
            if fds.len() != plan.listeners() {
                return Err(refuse(
                    format!("the network holder sent {} listeners: {text}", fds.len()),
                    "see `docker logs` of the holder, or use --backend native",
                ));
            }
            // Whoever reached the socket, the sockets must be the holder's:
            // made in its network namespace.
            same_netns(&fds, holder_pid)?;
            Ok::<_, BackendError>((fds, OwnedFd::from(conn)))
        }
        .await;
        let (fds, conn) = match taken {
            Ok(t) => t,
            Err(e) => {
                remove(docker, &holder).await;
                return Err(e);
            }
        };
        let process = match EgressProcess::start(&plan, fds, Some(conn), &dir) {
            Ok(p) => p,
            Err(e) => {
                remove(docker, &holder).await;
                return Err(refuse(e, "see the egress log, or use --backend native"));
            }
        };
        Ok(Network {
            holder,
            resolv_conf,
            process,
            dir: dir.clone(),
        })
    }
    .await;
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    made
}

/// Every socket is one of the holder's network namespace: its inode is
/// listed in that namespace's TCP or UDP table (/proc/<holder>/net/...).
/// Needs no privilege (the holder runs as this user), unlike asking the
/// kernel for a socket's namespace (SIOCGSKNS wants CAP_NET_ADMIN).
fn same_netns(fds: &[OwnedFd], holder_pid: u32) -> Result<(), BackendError> {
    let mut listed = std::collections::HashSet::new();
    for table in ["tcp", "udp"] {
        let text = std::fs::read_to_string(format!("/proc/{holder_pid}/net/{table}"))
            .map_err(|e| BackendError::io("cannot read the holder's sockets", e))?;
        listed.extend(socket_inodes(&text));
    }
    for fd in fds {
        if !listed.contains(&inode_of(fd)?) {
            return Err(refuse(
                "a listener handed over is not in the network holder's namespace".into(),
                "someone else reached the socket; check who can write to the runtime directory",
            ));
        }
    }
    Ok(())
}

/// The inodes in a /proc/net/{tcp,udp} table (the tenth column).
fn socket_inodes(table: &str) -> impl Iterator<Item = u64> + '_ {
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(9)?.parse().ok())
}

fn inode_of(fd: &OwnedFd) -> Result<u64, BackendError> {
    use std::os::unix::fs::MetadataExt;
    let f = std::fs::File::from(
        fd.try_clone()
            .map_err(|e| BackendError::io("cannot check a listener", e))?,
    );
    f.metadata()
        .map(|m| m.ino())
        .map_err(|e| BackendError::io("cannot check a listener", e))
}

async fn create_holder(
    docker: &Docker,
    spec: &SandboxSpec,
    init: &Path,
    dir: &Path,
    ports: &[u16],
) -> Result<String, BackendError> {
    // The host-root image of host-root sessions (the same symlinks, so the
    // same image): agentctl runs from the host's /usr whatever the
    // session's image.
    let (_, links) = sandbox::plan::rootfs();
    let image = crate::host_root_image(docker, &links).await?;
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let body = ContainerCreateBody {
        image: Some(image),
        entrypoint: Some(vec![
            INIT_PATH.to_string(),
            "__egress-plant".to_string(),
            "--send-to".to_string(),
            format!("{SOCKET_DIR}/plant.sock"),
            "--ports".to_string(),
            ports.join(","),
        ]),
        cmd: Some(Vec::new()),
        user: Some(format!("{uid}:{gid}")),
        env: Some(vec!["PATH=/usr/bin:/bin".into()]),
        network_disabled: Some(false),
        labels: Some(HashMap::from([(
            LABEL_HOLDER.to_string(),
            spec.session.to_string(),
        )])),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            // The listeners are on 53, 80 and 443 of this namespace, made
            // by a process with no capabilities.
            sysctls: Some(HashMap::from([(
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "0".to_string(),
            )])),
            mounts: Some(vec![
                bind(Path::new("/usr"), "/usr", true),
                bind(init, INIT_PATH, true),
                bind(dir, SOCKET_DIR, false),
            ]),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            pids_limit: Some(16),
            memory: Some(64 << 20),
            auto_remove: Some(true),
            ipc_mode: Some("private".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let name = format!("{}-net", crate::translate::container_name(spec));
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await
        .map_err(|e| runtime_err("cannot create the network holder", e))
        .map(|r| r.id)
}

async fn remove(docker: &Docker, id: &str) {
    let _ = docker
        .remove_container(
            id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
}

impl Network {
    /// A foreground session's end: the egress process stopped, the holder
    /// removed, the directory gone.
    pub async fn stop(mut self, docker: &Docker) {
        self.process.stop();
        remove(docker, &self.holder).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// A detached session: the egress process serves until the sandbox's
    /// init (`pid`, on this host) is gone, then ends, and the holder with
    /// it (its socket closes; the engine removes it).
    pub fn detach(mut self, pid: u32) -> Result<(), BackendError> {
        self.process
            .watch(pid)
            .map_err(|e| BackendError::io("cannot hand the session to the egress proxy", e))?;
        self.process.release();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_is_found_in_its_own_namespace_and_nothing_else_is() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let me = std::process::id();
        same_netns(&[OwnedFd::from(tcp), OwnedFd::from(udp)], me).unwrap();
        // A pipe is no socket of any namespace.
        let (r, _w) = nix::unistd::pipe().unwrap();
        assert!(same_netns(&[r], me).is_err());
    }
}
