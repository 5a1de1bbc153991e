//! The native backend: runs a [`SandboxSpec`] without a daemon, through
//! youki's libcontainer, from an OCI bundle generated with oci-spec.
//!
//! Only this crate (and the Docker backend, for its own engine) may know a
//! container runtime: it must not make policy decisions, and it reads
//! nothing but the `SandboxSpec` it is given.

pub mod cgroup;
pub mod error;
mod helper;
mod init;
mod lifecycle;
pub use init::run_as_init;
mod lookup;
mod net;
pub mod oci;
pub mod preflight;
mod relay;

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use oci::BundleOptions;
use sandbox::{
    Backend, BackendError, ExitStatus, Handle, Liveness, Observer, Orphan, RunOptions, SandboxSpec,
};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

pub use helper::{
    EgressPlan, HelperConfig, LAUNCHER_FAILURE, cleanup_session, exec_main, fresh_session_keyring,
    helper_main, verify_masks_of,
};
pub use lifecycle::forget_exit;

pub use sandbox::dirs::{Dirs, default_logs_dir};

/// The daemonless backend.
pub struct NativeBackend {
    /// How to start the helper: the agentctl binary and the arguments that
    /// select its helper mode; the session directory is appended.
    pub helper: Vec<String>,
    /// How to start the exec helper (`agentctl __native-exec`).
    pub exec_helper: Vec<String>,
    pub dirs: Dirs,
    /// Where images are pulled to and unpacked.
    pub images: PathBuf,
    /// Shown the progress of an image pull.
    pub progress: Box<dyn image_store::Progress>,
    /// Where detached sessions' output is kept (it outlives the runtime
    /// directory).
    pub logs: PathBuf,
    /// How to serve an `allowlist` session's listeners: the agentctl
    /// binary, its global arguments and `__egress`. Empty: such sessions
    /// are refused.
    pub egress: Vec<String>,
}

impl NativeBackend {
    pub fn new(helper: Vec<String>) -> NativeBackend {
        let exec_helper = helper
            .first()
            .map(|exe| vec![exe.clone(), "__native-exec".to_string()])
            .unwrap_or_default();
        NativeBackend {
            helper,
            exec_helper,
            dirs: Dirs::for_current_user(),
            images: image_store::ImageCache::default_root(),
            progress: Box::new(image_store::NoProgress),
            logs: default_logs_dir(),
            egress: Vec::new(),
        }
    }

    /// The image a session runs from: from the cache, or pulled and
    /// unpacked into it.
    fn image(&self, reference: &str) -> Result<image_store::Image, BackendError> {
        let fail = |e: image_store::ImageError| BackendError::Control {
            control: "image",
            reason: format!("cannot use image {reference}: {e}"),
            fix: "check the reference (`agentctl image ls` lists the cache), or pull it with \
                  `agentctl image pull`"
                .into(),
        };
        let store = image_store::ImageCache::open(&self.images).map_err(fail)?;
        if let Some(image) = store.get(reference).map_err(fail)? {
            return Ok(image);
        }
        let source: image_store::ImageSource = reference.parse().map_err(fail)?;
        store.pull(&source, self.progress.as_ref()).map_err(fail)
    }

    /// Writes the bundle and the helper's configuration for `spec`.
    /// Returns the session directory.
    pub fn prepare(
        &self,
        spec: &SandboxSpec,
        opts: &RunOptions,
        cgroup: cgroup::CgroupMode,
        image: Option<&image_store::Image>,
    ) -> Result<HelperConfig, BackendError> {
        self.dirs.ensure()?;
        let rootless = !nix::unistd::geteuid().is_root();
        let id = spec.session.as_str();
        let session_dir = self.dirs.sessions().join(id);
        let bundle = session_dir.join("bundle");
        let rootfs = bundle.join("rootfs");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&rootfs)
            .map_err(|e| BackendError::io("cannot create the bundle", e))?;
        fs::set_permissions(&session_dir, fs::Permissions::from_mode(0o711))
            .map_err(|e| BackendError::io("cannot create the session directory", e))?;
        for (link, target) in &spec.rootfs_symlinks {
            let at = rootfs.join(link.strip_prefix("/").unwrap_or(link));
            std::os::unix::fs::symlink(target, &at)
                .map_err(|e| BackendError::io(format!("cannot create {}", at.display()), e))?;
        }
        let nameserver = match spec.network {
            policy::NetworkMode::Bridge => Some(net::SLIRP_DNS.to_string()),
            policy::NetworkMode::Allowlist => Some(sandbox::egress::DNS.ip().to_string()),
            _ => None,
        };
        let resolv_conf = if let Some(ns) = nameserver {
            let p = session_dir.join("resolv.conf");
            fs::write(&p, format!("nameserver {ns}\n"))
                .map_err(|e| BackendError::io("cannot write resolv.conf", e))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644))
                .map_err(|e| BackendError::io("cannot write resolv.conf", e))?;
            Some(p)
        } else {
            None
        };
        let mut oci = oci::to_oci(
            spec,
            &BundleOptions {
                tty: opts.tty,
                cgroups_path: cgroup.path().to_string(),
                runtime_limits: cgroup.runtime_applies_limits(),
                resolv_conf,
                no_limits: opts.no_limits,
                nofile: nofile(),
                user_namespace: !rootless,
                image_path: image.and_then(|i| {
                    i.config
                        .env
                        .iter()
                        .find_map(|e| e.strip_prefix("PATH=").map(str::to_string))
                }),
            },
        )
        .map_err(|e| BackendError::Runtime(format!("cannot build the OCI spec: {e}")))?;
        // This bundle is for libcontainer alone (the session's own runtime).
        oci::for_libcontainer(&mut oci)
            .map_err(|e| BackendError::Runtime(format!("cannot build the OCI spec: {e}")))?;
        oci.save(bundle.join("config.json"))
            .map_err(|e| BackendError::Runtime(format!("cannot write config.json: {e}")))?;
        let cfg = HelperConfig {
            id: id.to_string(),
            session_dir: session_dir.clone(),
            bundle,
            state_root: self.dirs.state(),
            tty: opts.tty,
            network: spec.network,
            cgroup,
            limits: spec.limits.clone(),
            enter_userns: rootless.then_some((spec.identity.host_uid, spec.identity.host_gid)),
            masked: spec.masked.iter().map(|m| m.path.clone()).collect(),
            image_rootfs: image.map(|i| i.rootfs.clone()),
            detached: false,
            on_exit: Vec::new(),
            exit_file: Some(self.dirs.exits().join(id)),
            scope_abstract_unix: spec.network == policy::NetworkMode::Host
                && sandbox::landlock::abstract_unix_scoping().is_ok(),
            launcher_pid: Some(std::process::id()),
            output_copy: opts.output_copy.clone(),
            egress: self.egress_plan(spec)?,
        };
        if let Some(plan) = &cfg.egress {
            plan.save(&session_dir)
                .map_err(|e| BackendError::io("cannot write the egress plan", e))?;
        }
        let json = serde_json::to_vec_pretty(&cfg).expect("helper config serializes");
        fs::write(session_dir.join(HelperConfig::FILE), json)
            .map_err(|e| BackendError::io("cannot write the helper config", e))?;
        Ok(cfg)
    }

    /// The egress plan of an `allowlist` session; None for other networks.
    fn egress_plan(&self, spec: &SandboxSpec) -> Result<Option<EgressPlan>, BackendError> {
        EgressPlan::for_spec(spec, &self.egress, None)
    }

    fn spawn_helper(
        &self,
        cfg: &HelperConfig,
        status: &OwnedFd,
        log: Option<&Path>,
    ) -> Result<Child, BackendError> {
        let (program, args) = self
            .helper
            .split_first()
            .ok_or_else(|| BackendError::Runtime("no helper command configured".into()))?;
        let fd = status.as_raw_fd();
        let mut cmd = if matches!(cfg.cgroup, cgroup::CgroupMode::DelegatedV2 { .. }) {
            cgroup::delegated_scope_command(program)
        } else {
            Command::new(program)
        };
        cmd.args(args)
            .arg(&cfg.session_dir)
            .env(helper::STATUS_FD_ENV, fd.to_string());
        let detached = log.is_some();
        if let Some(log) = log {
            let (out, err) = sandbox::detached::open_log(log)?;
            cmd.stdin(std::process::Stdio::null())
                .stdout(out)
                .stderr(err);
        }
        // SAFETY: clearing FD_CLOEXEC on one descriptor and setsid are
        // async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                if detached {
                    // Its own session: no terminal signals, and it outlives us.
                    libc::setsid();
                }
                Ok(())
            });
        }
        cmd.spawn()
            .map_err(|e| BackendError::io(format!("cannot start the session helper {program}"), e))
    }
}

impl Backend for NativeBackend {
    fn name(&self) -> &'static str {
        "native"
    }

    fn preflight(&self, spec: &SandboxSpec, opts: &RunOptions) -> Result<(), BackendError> {
        preflight::check(spec, opts).map(|_| ())
    }

    fn run(
        &self,
        spec: &SandboxSpec,
        opts: &RunOptions,
        observer: &dyn Observer,
    ) -> Result<ExitStatus, BackendError> {
        let cgroup = preflight::check(spec, opts)?;
        let image = spec.image.as_deref().map(|r| self.image(r)).transpose()?;
        let cfg = match self.prepare(spec, opts, cgroup, image.as_ref()) {
            Ok(cfg) => cfg,
            Err(e) => {
                let _ = fs::remove_dir_all(self.dirs.sessions().join(spec.session.as_str()));
                return Err(e);
            }
        };
        let forwarded = [
            Signal::SIGINT,
            Signal::SIGQUIT,
            Signal::SIGTERM,
            Signal::SIGHUP,
        ];
        let mut mask = SigSet::empty();
        for s in forwarded {
            mask.add(s);
        }
        let mut old = SigSet::empty();
        // Blocked here and read below; an exec'd helper starts with an empty
        // mask, a forked one blocks what it needs itself.
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old))
            .map_err(|e| BackendError::Runtime(format!("cannot block signals: {e}")))?;
        let result = start_and_wait(self, &cfg, &mask, observer);
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
        result
    }

    fn start_detached(
        &self,
        spec: &SandboxSpec,
        opts: &RunOptions,
        on_exit: &[String],
    ) -> Result<Handle, BackendError> {
        lifecycle::start_detached(self, spec, opts, on_exit)
    }

    fn stop(&self, handle: &Handle, timeout: std::time::Duration) -> Result<(), BackendError> {
        lifecycle::stop(self, handle, timeout)
    }

    fn exec(
        &self,
        handle: &Handle,
        command: &[String],
        tty: bool,
    ) -> Result<ExitStatus, BackendError> {
        lifecycle::exec(self, handle, command, tty)
    }

    fn logs(
        &self,
        handle: &Handle,
        follow: bool,
        out: &mut dyn std::io::Write,
    ) -> Result<(), BackendError> {
        lifecycle::logs(self, handle, follow, out)
    }

    fn liveness(&self, handle: &Handle) -> Result<Liveness, BackendError> {
        Ok(lifecycle::liveness(self, &handle.session))
    }

    fn sandbox_pid(&self, handle: &Handle) -> Option<u32> {
        lifecycle::sandbox_pid(self, &handle.session)
    }

    fn forget_exit(&self, handle: &Handle) {
        lifecycle::forget_exit(self, &handle.session);
    }

    fn remove(&self, handle: &Handle) -> Result<(), BackendError> {
        lifecycle::remove(self, &handle.session);
        Ok(())
    }

    fn orphans(&self, known: &dyn Fn(&str) -> bool) -> Result<Vec<Orphan>, BackendError> {
        Ok(lifecycle::orphans(self, known))
    }
}

/// Starts the helper, then waits for the exit code it reports, passing on
/// termination requests meanwhile.
fn start_and_wait(
    backend: &NativeBackend,
    cfg: &HelperConfig,
    mask: &SigSet,
    observer: &dyn Observer,
) -> Result<ExitStatus, BackendError> {
    let (status_r, status_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| BackendError::Runtime(format!("cannot create a pipe: {e}")))?;
    let sigfd = SignalFd::with_flags(mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| BackendError::Runtime(format!("cannot create a signalfd: {e}")))?;
    let pid = if cfg.enter_userns.is_some() {
        // Rootless: the helper must be a fresh exec (see helper.rs).
        let child = backend.spawn_helper(cfg, &status_w, None)?;
        Pid::from_raw(child.id() as i32)
    } else {
        fork_helper(
            cfg,
            status_w
                .try_clone()
                .map_err(|e| BackendError::io("dup", e))?,
        )?
    };
    drop(status_w);
    observer.forked();
    let mut reader = StatusReader::default();
    loop {
        let mut fds = [
            PollFd::new(status_r.as_fd(), PollFlags::POLLIN),
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(BackendError::Runtime(format!("poll: {e}"))),
        }
        let status_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        while let Ok(Some(info)) = sigfd.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            // A signal from the terminal (Ctrl-C) already reached the
            // helper, which shares our process group; pass on only what was
            // sent to this process by pid, and every SIGTERM and SIGHUP.
            let from_process = info.ssi_code == libc::SI_USER || info.ssi_code == libc::SI_QUEUE;
            if from_process || matches!(sig, Signal::SIGTERM | Signal::SIGHUP) {
                let _ = nix::sys::signal::kill(pid, sig);
                observer.signal(sig.as_str());
            }
        }
        if !status_ready {
            continue;
        }
        match reader.read(&status_r) {
            Ok(Some(StatusMsg::Started(init))) => observer.started(Some(init)),
            Ok(Some(StatusMsg::Exited(code))) => return Ok(ExitStatus::Code(code)),
            Ok(None) => {}
            Err(()) => break,
        }
    }
    // The helper went away without reporting: find out how, and clean up
    // after it.
    let status = waitpid(pid, None);
    if cfg.session_dir.exists() {
        cleanup_session(cfg, None);
    }
    match status {
        Ok(WaitStatus::Exited(_, code)) => Ok(ExitStatus::Code(code)),
        Ok(WaitStatus::Signaled(_, sig, _)) => Err(BackendError::Runtime(format!(
            "the session helper was killed by {sig}; the sandbox was removed"
        ))),
        other => Err(BackendError::Runtime(format!(
            "the session helper ended without a status: {other:?}"
        ))),
    }
}

/// A message from the helper's status pipe.
pub(crate) enum StatusMsg {
    Started(u32),
    Exited(i32),
}

/// Reassembles the helper's five-byte messages from pipe reads.
#[derive(Default)]
pub(crate) struct StatusReader {
    buf: Vec<u8>,
}

impl StatusReader {
    /// Reads what is there; `Err` at end of file (the helper is gone).
    pub(crate) fn read(&mut self, fd: &OwnedFd) -> Result<Option<StatusMsg>, ()> {
        if let Some(m) = self.take() {
            return Ok(Some(m));
        }
        let mut chunk = [0u8; 64];
        match nix::unistd::read(fd.as_raw_fd(), &mut chunk) {
            Ok(0) => Err(()),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(self.take())
            }
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => Ok(None),
            Err(_) => Err(()),
        }
    }

    fn take(&mut self) -> Option<StatusMsg> {
        if self.buf.len() < 5 {
            return None;
        }
        let value: [u8; 4] = self.buf[1..5].try_into().expect("four bytes");
        let msg = match self.buf[0] {
            helper::MSG_STARTED => StatusMsg::Started(u32::from_le_bytes(value)),
            _ => StatusMsg::Exited(i32::from_le_bytes(value)),
        };
        self.buf.drain(..5);
        Some(msg)
    }
}

/// Starts the helper as a fork of the launcher. The launcher is
/// single-threaded by now (the scanner's threads have been joined), so the
/// child may run libcontainer: this saves loading the binary a second time.
fn fork_helper(cfg: &HelperConfig, status: OwnedFd) -> Result<Pid, BackendError> {
    // SAFETY: the process is single-threaded here; the child only runs the
    // session and leaves with _exit.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let code = helper::run_session(cfg.clone(), Some(status));
            // SAFETY: leaving the forked child without running the
            // launcher's atexit handlers a second time.
            unsafe { libc::_exit(code) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(child),
        Err(e) => Err(BackendError::Runtime(format!(
            "cannot start the session helper: {e}"
        ))),
    }
}

/// Writes the bundle for `spec` into `dir` without running it, so other
/// runtimes (runc, crun) can be pointed at exactly what agentctl runs.
pub fn export_bundle(
    spec: &SandboxSpec,
    dir: &Path,
    tty: bool,
    cgroups_path: &str,
) -> io::Result<()> {
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(&rootfs)?;
    for (link, target) in &spec.rootfs_symlinks {
        let at = rootfs.join(link.strip_prefix("/").unwrap_or(link));
        if fs::symlink_metadata(&at).is_err() {
            std::os::unix::fs::symlink(target, &at)?;
        }
    }
    let oci = oci::to_oci(
        spec,
        &BundleOptions {
            tty,
            cgroups_path: cgroups_path.to_string(),
            runtime_limits: true,
            resolv_conf: None,
            no_limits: false,
            nofile: nofile(),
            user_namespace: true,
            image_path: None,
        },
    )
    .map_err(io::Error::other)?;
    oci.save(dir.join("config.json")).map_err(io::Error::other)
}

/// Moves the calling process into a mount namespace of its own (plus the
/// namespaces in `extra`) whose mounts no longer propagate to the host's.
pub(crate) fn private_mount_namespace(extra: nix::sched::CloneFlags) -> nix::Result<()> {
    use nix::mount::{MsFlags, mount};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS | extra)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
}

/// The launcher's own open-files limit, for the sandbox to inherit.
fn nofile() -> (u64, u64) {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap_or((1024, 4096))
}
