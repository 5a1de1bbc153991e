//! The Docker backend: runs a [`SandboxSpec`] as a container on the Docker
//! Engine, through bollard. It maps the plan onto a container and nothing
//! more: every decision is already in the spec. Only this crate knows
//! bollard.

mod egress;
pub mod images;
mod lifecycle;
pub mod seccomp;
pub mod translate;

use std::io::{IsTerminal, Write};
use std::os::fd::AsRawFd;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    KillContainerOptionsBuilder, RemoveContainerOptionsBuilder, ResizeContainerTTYOptionsBuilder,
};
use futures_util::StreamExt;
use sandbox::{
    Backend, BackendError, ExitStatus, Handle, Liveness, Observer, Orphan, RunOptions, SandboxSpec,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use translate::{LABEL_MANAGED, LABEL_SESSION};

/// The oldest Engine API that lets a read-only bind mount be read-only
/// for its whole tree.
const RECURSIVE_RO_API: (u32, u32) = (1, 44);

pub struct DockerBackend {
    /// The agentctl binary, run as PID 1 (`agentctl __init`) of host-root
    /// sessions, where Docker's own init cannot be placed: the host's /sbin
    /// is mounted read-only there.
    init: std::path::PathBuf,
    /// How to serve an `allowlist` session's listeners: the agentctl
    /// binary, its global arguments and `__egress`. Empty: such sessions
    /// are refused.
    pub egress: Vec<String>,
}

impl DockerBackend {
    pub fn new(init: std::path::PathBuf) -> DockerBackend {
        DockerBackend {
            init,
            egress: Vec::new(),
        }
    }

    /// Runs `f` on a runtime of its own (see [`blocking::block_on`]).
    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        blocking::block_on(f)
    }

    /// Builds an agent image from `images/` (see [`images::build`]).
    pub fn build_image(
        &self,
        name: &str,
        base: Option<&str>,
        rebuild_deps: bool,
    ) -> Result<String, BackendError> {
        self.block_on(async {
            let docker = connect().await?;
            images::build(&docker, name, base, rebuild_deps).await
        })
    }

    /// The engine's version and the API version agreed on (`agentctl
    /// doctor`), or why it cannot be reached, with the fix.
    pub fn engine(&self) -> Result<(String, String), BackendError> {
        self.block_on(async {
            let docker = connect().await?;
            let v = docker.client_version();
            let server = docker
                .version()
                .await
                .ok()
                .and_then(|v| v.version)
                .unwrap_or_else(|| "?".into());
            Ok((server, format!("{}.{}", v.major_version, v.minor_version)))
        })
    }

    /// Connects to `DOCKER_HOST` (unix or tcp) or the default socket, and
    /// agrees on an API version the daemon speaks: Debian 12's engine
    /// speaks 1.41, bollard would otherwise ask for 1.53.
    pub fn connect(&self) -> Result<Docker, BackendError> {
        self.block_on(connect())
    }
}

/// Where the daemon is, for messages.
fn daemon_address() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

pub(crate) async fn connect() -> Result<Docker, BackendError> {
    let unreachable = |e: &dyn std::fmt::Display| {
        let address = daemon_address();
        let mut fix = String::from(
            "start the daemon (`sudo systemctl start docker`, or `sudo dockerd &`), \
             point DOCKER_HOST at a running one, or use --backend native",
        );
        if e.to_string().contains("ermission denied") {
            fix = "add your user to the docker group (it is root-equivalent), or use \
                   --backend native, which needs no daemon"
                .into();
        }
        BackendError::Control {
            control: "docker backend",
            reason: format!("cannot reach the Docker daemon at {address}: {e}"),
            fix,
        }
    };
    let docker = Docker::connect_with_defaults().map_err(|e| unreachable(&e))?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| unreachable(&e))?;
    docker.ping().await.map_err(|e| unreachable(&e))?;
    Ok(docker)
}

fn api_at_least(docker: &Docker, want: (u32, u32)) -> bool {
    let v = docker.client_version();
    (v.major_version as u32, v.minor_version as u32) >= want
}

pub(crate) fn runtime_err(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Runtime(format!("{what}: {e}"))
}

/// What this backend cannot enforce: refused before anything is made,
/// never run weaker. The allowlist network needs the engine on this host.
fn refuse_unsupported(spec: &SandboxSpec) -> Result<(), BackendError> {
    if spec.network == policy::NetworkMode::Allowlist {
        egress::check_local()?;
    }
    Ok(())
}

impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn preflight(&self, spec: &SandboxSpec, _opts: &RunOptions) -> Result<(), BackendError> {
        refuse_unsupported(spec)?;
        self.connect().map(|_| ())
    }

    fn run(
        &self,
        spec: &SandboxSpec,
        opts: &RunOptions,
        observer: &dyn Observer,
    ) -> Result<ExitStatus, BackendError> {
        refuse_unsupported(spec)?;
        // The engine makes the container; nothing here forks.
        observer.forked();
        self.block_on(run(spec, opts, &self.init, &self.egress, observer))
    }

    fn start_detached(
        &self,
        spec: &SandboxSpec,
        opts: &RunOptions,
        _on_exit: &[String],
    ) -> Result<Handle, BackendError> {
        refuse_unsupported(spec)?;
        // The engine keeps the exit status; reconciliation reads it there.
        self.block_on(lifecycle::start_detached(
            spec,
            opts,
            &self.init,
            &self.egress,
        ))
    }

    fn stop(&self, handle: &Handle, timeout: std::time::Duration) -> Result<(), BackendError> {
        self.block_on(lifecycle::stop(handle, timeout))
    }

    fn exec(
        &self,
        handle: &Handle,
        command: &[String],
        tty: bool,
    ) -> Result<ExitStatus, BackendError> {
        self.block_on(lifecycle::exec(handle, command, tty))
    }

    fn logs(
        &self,
        handle: &Handle,
        follow: bool,
        out: &mut dyn std::io::Write,
    ) -> Result<(), BackendError> {
        self.block_on(lifecycle::logs(handle, follow, out))
    }

    fn liveness(&self, handle: &Handle) -> Result<Liveness, BackendError> {
        self.block_on(lifecycle::liveness(handle))
    }

    fn sandbox_pid(&self, handle: &Handle) -> Option<u32> {
        self.block_on(lifecycle::sandbox_pid(handle)).ok().flatten()
    }

    fn remove(&self, handle: &Handle) -> Result<(), BackendError> {
        self.block_on(lifecycle::remove(handle))
    }

    fn orphans(&self, known: &dyn Fn(&str) -> bool) -> Result<Vec<Orphan>, BackendError> {
        self.block_on(lifecycle::orphans(known))
    }
}

/// The host-root image: an empty root with the host's top-level symlinks
/// (`/bin -> usr/bin`), onto which the plan binds the host's system
/// directories read-only. Named by a hash of the symlinks, so hosts with
/// different layouts get different images.
async fn host_root_image(
    docker: &Docker,
    symlinks: &[(std::path::PathBuf, std::path::PathBuf)],
) -> Result<String, BackendError> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (link, target) in symlinks {
        h.update(link.as_os_str().as_encoded_bytes());
        h.update(b"\0");
        h.update(target.as_os_str().as_encoded_bytes());
        h.update(b"\n");
    }
    let tag: String = h
        .finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let name = format!("agentctl/hostroot:{tag}");
    let bytes = host_root_tar(symlinks)?;
    let layer = format!("sha256:{:x}", Sha256::digest(&bytes));
    // Trusted by content, not by name: anyone who can reach the daemon (an
    // agent with docker: true and a network) could tag another image so.
    // The image must be exactly the one layer agentctl builds, with no
    // configuration of its own; it is then used by its ID.
    if let Some(id) = verified_host_root(docker, &name, &layer).await {
        return Ok(id);
    }
    let (repo, tag) = name.split_once(':').expect("name has a tag");
    let mut stream = docker.create_image(
        Some(
            CreateImageOptionsBuilder::default()
                .from_src("-")
                .repo(repo)
                .tag(tag)
                .build(),
        ),
        Some(bollard::body_full(bytes.into())),
        None,
    );
    while let Some(item) = stream.next().await {
        item.map_err(|e| runtime_err("cannot import the host-root image", e))?;
    }
    verified_host_root(docker, &name, &layer)
        .await
        .ok_or_else(|| BackendError::Control {
            control: "image",
            reason: format!("{name} on the engine is not the image agentctl just imported"),
            fix: "remove it (`docker rmi`) and check who else tags images on this daemon".into(),
        })
}

/// The ID of `name` when it is agentctl's host-root image: the single
/// layer `layer` and an empty configuration (an image's volumes, user or
/// health check would reach the sandbox).
async fn verified_host_root(docker: &Docker, name: &str, layer: &str) -> Option<String> {
    let image = docker.inspect_image(name).await.ok()?;
    let layers = image.root_fs.as_ref()?.layers.as_ref()?;
    if layers.len() != 1 || layers[0] != layer {
        return None;
    }
    if let Some(c) = &image.config {
        let empty = c.volumes.as_ref().is_none_or(|v| v.is_empty())
            && c.user.as_deref().is_none_or(str::is_empty)
            && c.healthcheck.is_none()
            && c.entrypoint.as_ref().is_none_or(|v| v.is_empty())
            && c.on_build.as_ref().is_none_or(|v| v.is_empty());
        if !empty {
            return None;
        }
    }
    image.id
}

/// The host-root image's one layer, byte for byte the same for the same
/// host layout.
fn host_root_tar(
    symlinks: &[(std::path::PathBuf, std::path::PathBuf)],
) -> Result<Vec<u8>, BackendError> {
    let mut tar = tar::Builder::new(Vec::new());
    for dir in [
        "usr",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "home",
        "root",
        "run",
        "var",
        "mnt",
        ".agentctl",
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        tar.append_data(&mut header, dir, std::io::empty())
            .map_err(|e| runtime_err("cannot build the host-root image", e))?;
    }
    for (link, target) in symlinks {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        let rel = link.strip_prefix("/").unwrap_or(link);
        tar.append_link(&mut header, rel, target)
            .map_err(|e| runtime_err("cannot build the host-root image", e))?;
    }
    tar.into_inner()
        .map_err(|e| runtime_err("cannot build the host-root image", e))
}

/// Makes sure `reference` is on the engine, pulling it if not.
async fn ensure_image(docker: &Docker, reference: &str) -> Result<Option<String>, BackendError> {
    if let Ok(image) = docker.inspect_image(reference).await {
        return Ok(image_path(&image));
    }
    eprintln!("agentctl: pulling {reference}");
    let mut stream = docker.create_image(
        Some(
            CreateImageOptionsBuilder::default()
                .from_image(reference)
                .build(),
        ),
        None,
        None,
    );
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| BackendError::Control {
            control: "image",
            reason: format!("cannot pull {reference}: {e}"),
            fix: "check the reference, log in to the registry, or build the image \
                  (`agentctl image build`)"
                .into(),
        })?;
        if let Some(status) = info.status
            && std::io::stderr().is_terminal()
        {
            let progress = info
                .progress_detail
                .and_then(|p| Some(format!("{}/{}", p.current?, p.total?)))
                .unwrap_or_default();
            eprint!("\r\x1b[K{status} {progress}");
        }
    }
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let image = docker
        .inspect_image(reference)
        .await
        .map_err(|e| runtime_err(&format!("cannot inspect {reference}"), e))?;
    Ok(image_path(&image))
}

fn image_path(image: &bollard::models::ImageInspect) -> Option<String> {
    image
        .config
        .as_ref()?
        .env
        .as_ref()?
        .iter()
        .find_map(|e| e.strip_prefix("PATH=").map(str::to_string))
}

/// Whether the caller has input to give: a terminal, a pipe or a file, but
/// not /dev/null. With none, the stdin half of the attach is skipped.
pub(crate) fn has_stdin() -> bool {
    let fd = std::io::stdin().as_raw_fd();
    match nix::sys::stat::fstat(fd) {
        Ok(st) => {
            let is_char = (st.st_mode & libc::S_IFMT) == libc::S_IFCHR;
            let is_null = is_char && st.st_rdev == libc::makedev(1, 3);
            !is_null
        }
        Err(_) => false,
    }
}

/// The container for `spec`, created but not started.
pub(crate) async fn create(
    docker: &Docker,
    spec: &SandboxSpec,
    opts: &RunOptions,
    init: &std::path::Path,
    stdin: bool,
    network: Option<&egress::Network>,
) -> Result<String, BackendError> {
    let (image, image_path) = match &spec.image {
        Some(reference) => (reference.clone(), ensure_image(docker, reference).await?),
        None => (host_root_image(docker, &spec.rootfs_symlinks).await?, None),
    };
    let body = translate::to_container(
        spec,
        &translate::Options {
            image,
            tty: opts.tty,
            stdin,
            recursive_read_only: api_at_least(docker, RECURSIVE_RO_API),
            image_path,
            no_limits: opts.no_limits,
            init: spec.image.is_none().then(|| init.to_path_buf()),
            tty_size: if opts.tty { terminal_size() } else { None },
            // Asked of agentctl's init when this kernel has it; an engine
            // on another kernel without it refuses to start the agent.
            scope_abstract_unix: spec.network == policy::NetworkMode::Host
                && sandbox::landlock::abstract_unix_scoping().is_ok(),
            allowlist: network.map(|n| (n.holder.clone(), n.resolv_conf.clone())),
        },
    );
    let name = translate::container_name(spec);
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await
        .map_err(|e| runtime_err("cannot create the container", e))
        .map(|r| r.id)
}

async fn run(
    spec: &SandboxSpec,
    opts: &RunOptions,
    init: &std::path::Path,
    egress_cmd: &[String],
    observer: &dyn Observer,
) -> Result<ExitStatus, BackendError> {
    let docker = connect().await?;
    let stdin = opts.tty || has_stdin();
    let network = match spec.network {
        policy::NetworkMode::Allowlist => {
            Some(egress::start(&docker, spec, init, egress_cmd).await?)
        }
        _ => None,
    };
    let id = match create(&docker, spec, opts, init, stdin, network.as_ref()).await {
        Ok(id) => id,
        Err(e) => {
            if let Some(n) = network {
                n.stop(&docker).await;
            }
            return Err(e);
        }
    };
    // Every way out of here removes the container, started or not.
    let result = run_created(&docker, &id, opts, stdin, observer).await;
    if let Some(n) = network {
        n.stop(&docker).await;
    }
    let _ = docker
        .remove_container(
            &id,
            Some(
                RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        )
        .await;
    result
}

/// The container's init on this host, when the engine runs here and says:
/// the caller may signal it (a stop asked for elsewhere). The engine's pid
/// is of its own pid namespace: from another host or from a container it
/// names some other process, or none; only a process in this container's
/// cgroup is taken for it.
pub(crate) async fn local_pid(docker: &Docker, id: &str) -> Option<u32> {
    docker
        .inspect_container(id, None)
        .await
        .ok()
        .and_then(|i| i.state)
        .and_then(|s| s.pid)
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0)
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cgroup")).is_ok_and(|c| c.contains(id))
        })
}

/// Restores the terminal when dropped.
pub(crate) struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    pub(crate) fn enter(tty: bool) -> RawMode {
        use nix::sys::termios;
        if !tty {
            return RawMode(None);
        }
        let stdin = std::io::stdin();
        let Ok(saved) = termios::tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw);
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = self.0.take() {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                &saved,
            );
        }
    }
}

pub(crate) fn terminal_size() -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ fills a winsize we own.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        for fd in [1, 0] {
            if libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_row > 0 {
                return Some((ws.ws_row, ws.ws_col));
            }
        }
    }
    None
}

async fn resize(docker: &Docker, id: &str) {
    if let Some((h, w)) = terminal_size() {
        let _ = docker
            .resize_container_tty(
                id,
                ResizeContainerTTYOptionsBuilder::default()
                    .h(i32::from(h))
                    .w(i32::from(w))
                    .build(),
            )
            .await;
    }
}

async fn run_created(
    docker: &Docker,
    id: &str,
    opts: &RunOptions,
    stdin: bool,
    observer: &dyn Observer,
) -> Result<ExitStatus, BackendError> {
    use tokio::signal::unix::{SignalKind, signal};

    // Attach before starting, so no early output is lost.
    let attached = docker
        .attach_container(
            id,
            Some(
                AttachContainerOptionsBuilder::default()
                    .stdin(stdin)
                    .stdout(true)
                    .stderr(true)
                    .stream(true)
                    .build(),
            ),
        )
        .await
        .map_err(|e| runtime_err("cannot attach to the container", e))?;
    let mut output = attached.output;
    let mut input = attached.input;

    if let Err(e) = docker.start_container(id, None).await {
        return Err(start_error(e));
    }
    let pid = local_pid(docker, id).await;
    observer.started(pid);
    let _raw = RawMode::enter(opts.tty);
    if opts.tty {
        resize(docker, id).await;
    }

    if stdin {
        tokio::spawn(async move {
            let mut from = tokio::io::stdin();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match from.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if input.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        let _ = input.flush().await;
                    }
                }
            }
            // End of input reaches the agent as end of file.
            let _ = input.shutdown().await;
        });
    }

    let mut recorded = sandbox::OutputCopy::open(opts.output_copy.as_deref());
    let copy = tokio::spawn(async move {
        // A terminal's output is relayed without what would reach beyond
        // the screen (sandbox::termfilter).
        let mut filter =
            sandbox::termfilter::TermFilter::new(sandbox::termfilter::Mode::Interactive);
        let mut shown = Vec::new();
        while let Some(item) = output.next().await {
            let Ok(item) = item else { break };
            if let LogOutput::Console { message }
            | LogOutput::StdErr { message }
            | LogOutput::StdOut { message } = &item
            {
                recorded.write(message);
            }
            match item {
                LogOutput::Console { message } => {
                    shown.clear();
                    filter.push(&message, &mut shown);
                    let mut o = std::io::stdout().lock();
                    let _ = o.write_all(&shown);
                    let _ = o.flush();
                }
                LogOutput::StdErr { message } => {
                    let mut e = std::io::stderr().lock();
                    let _ = e.write_all(&message);
                    let _ = e.flush();
                }
                LogOutput::StdOut { message } => {
                    let mut o = std::io::stdout().lock();
                    let _ = o.write_all(&message);
                    let _ = o.flush();
                }
                LogOutput::StdIn { .. } => {}
            }
        }
    });

    let mut wait = docker.wait_container(id, None);
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| runtime_err("signals", e))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| runtime_err("signals", e))?;
    let mut sighup = signal(SignalKind::hangup()).map_err(|e| runtime_err("signals", e))?;
    let mut sigquit = signal(SignalKind::quit()).map_err(|e| runtime_err("signals", e))?;
    let mut sigwinch =
        signal(SignalKind::window_change()).map_err(|e| runtime_err("signals", e))?;
    let kill = |sig: &'static str| async move {
        let _ = docker
            .kill_container(
                id,
                Some(KillContainerOptionsBuilder::default().signal(sig).build()),
            )
            .await;
    };
    let code = loop {
        tokio::select! {
            item = wait.next() => {
                break match item {
                    Some(Ok(r)) => r.status_code,
                    Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
                    Some(Err(e)) => return Err(runtime_err("lost the container", e)),
                    None => return Err(BackendError::Runtime("the container vanished".into())),
                };
            }
            _ = sigint.recv() => kill("SIGINT").await,
            _ = sigterm.recv() => kill("SIGTERM").await,
            _ = sighup.recv() => kill("SIGHUP").await,
            _ = sigquit.recv() => kill("SIGQUIT").await,
            _ = sigwinch.recv() => if opts.tty { resize(docker, id).await },
        }
    };
    // Let the last output through before reporting.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), copy).await;
    Ok(ExitStatus::Code(code as i32))
}

/// Reports a failed start as docker's CLI does: 127 when the command is not
/// there, 126 when it cannot be executed, with the daemon's reason.
pub(crate) fn start_error(e: bollard::errors::Error) -> BackendError {
    let text = e.to_string();
    let code = if text.contains("executable file not found")
        || text.contains("no such file or directory")
    {
        127
    } else if text.contains("permission denied") || text.contains("exec format error") {
        126
    } else {
        return runtime_err("cannot start the container", e);
    };
    let reason = text
        .rsplit("exec: ")
        .next()
        .unwrap_or(&text)
        .trim_end_matches(": unknown")
        .to_string();
    BackendError::Exec {
        message: reason,
        code,
    }
}
