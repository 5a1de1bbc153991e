//! The microVM backend: a session in a QEMU virtual machine with its own
//! kernel, under the same plan as a container.
//!
//! The host builds the plan's view of the file system (workspace, masks,
//! read-only host paths; `tree.rs`) in a private mount namespace and QEMU
//! exports it over 9p: the guest never sees what the plan hides, and
//! cannot write what the plan makes read-only, whatever it runs. The
//! guest agent (launcher/vm-guest, PID 1 of an initramfs written per
//! session, `guest.rs`) runs the command with no capabilities,
//! no_new_privs, the same seccomp filter (compiled here, `seccomp.rs`)
//! and the plan's limits in the guest's cgroup; the VM gets the memory
//! and vCPUs the limits allow. The session helper (`helper.rs`, `agentctl
//! __vm-helper`) owns QEMU and speaks to the guest.
//!
//! Networks: `none` gives the guest no network card; `bridge` and
//! `allowlist` give it QEMU's user-mode network with QEMU in a network
//! namespace of its own (`net.rs`): slirp4netns connects it out without
//! the host's loopback, or only the egress proxy's listeners are there.
//!
//! What this backend refuses rather than runs weaker: the `host` network
//! (a VM has no host network to share), and a Docker socket. `--image` runs from the native backend's
//! image cache, under an overlay the host builds.

pub mod guest;
pub mod helper;
mod jail;
mod net;
pub mod plan;
pub mod relay;
pub mod seccomp;
pub mod tree;

use std::fs;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use policy::NetworkMode;
use sandbox::backend::{
    Backend, BackendError, ExitStatus, Handle, Liveness, Observer, Orphan, RunOptions,
};
use sandbox::spec::SandboxSpec;
use vmm::{AccelChoice, Probe};

pub use helper::helper_main;

static ACCEL: std::sync::OnceLock<AccelChoice> = std::sync::OnceLock::new();

/// `run --accel`: the acceleration every VM of this process asks for.
pub fn set_accel(choice: AccelChoice) {
    let _ = ACCEL.set(choice);
}

/// `run --accel`, else `AGENTCTL_VM_ACCEL` (`auto`, `kvm` or `tcg`), or
/// what is wrong with the variable.
pub fn accel_from_env() -> Result<AccelChoice, String> {
    if let Some(a) = ACCEL.get() {
        return Ok(*a);
    }
    match std::env::var("AGENTCTL_VM_ACCEL").as_deref() {
        Err(_) | Ok("") | Ok("auto") => Ok(AccelChoice::Auto),
        Ok("tcg") => Ok(AccelChoice::Tcg),
        Ok("kvm") => Ok(AccelChoice::Kvm),
        Ok(other) => Err(format!("AGENTCTL_VM_ACCEL={other:?}: use auto, kvm or tcg")),
    }
}

/// How long a guest may take to boot: TCG on a loaded 2-core machine
/// takes seconds; far more means something is wrong.
const BOOT_TIMEOUT_SECS: u64 = 180;

pub struct VmBackend {
    /// `agentctl __vm-helper`; the session directory is appended.
    pub helper: Vec<String>,
    /// `agentctl __vm-exec`; the session directory, `--tty`, `--` and the
    /// command are appended.
    pub exec_helper: Vec<String>,
    /// Where detached sessions' output is kept (shared with the native
    /// backend: `agentctl logs` reads it from there).
    pub logs: PathBuf,
    pub dirs: sandbox::dirs::Dirs,
    /// The acceleration asked for, or why the setting is not one.
    pub accel: Result<AccelChoice, String>,
    /// `qemu-system-x86_64`, or a path to it.
    pub qemu: PathBuf,
    /// Where kernels are looked for (`guest::search_roots`).
    pub kernel_roots: Vec<PathBuf>,
    /// The native backend's image cache, which `--image` sessions run
    /// from (the unpacked root filesystem, under an overlay).
    pub images: PathBuf,
    /// Shown the progress of an image pull.
    pub progress: Box<dyn image_store::Progress>,
    /// How to serve an `allowlist` session's listeners: the agentctl
    /// binary, its global arguments and `__egress`. Empty: such sessions
    /// are refused.
    pub egress: Vec<String>,
}

/// What preflight found: the kernel, QEMU, the acceleration and the
/// notice to show about it.
struct Host {
    kernel: guest::Kernel,
    image: Option<image_store::Image>,
    qemu: PathBuf,
    accel: vmm::Accel,
    notice: Option<String>,
    network: plan::VmNetwork,
    egress: Option<sandbox::egress::EgressPlan>,
    cgroup: cgroups::CgroupMode,
}

impl VmBackend {
    /// The image a session runs from: from the native cache, or pulled and
    /// unpacked into it (the same cache and the same checks as the native
    /// backend's).
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

    pub fn new(helper: Vec<String>) -> VmBackend {
        let exec_helper = helper
            .first()
            .map(|exe| vec![exe.clone(), "__vm-exec".to_string()])
            .unwrap_or_default();
        VmBackend {
            helper,
            exec_helper,
            logs: sandbox::dirs::default_logs_dir(),
            dirs: sandbox::dirs::Dirs::for_current_user(),
            accel: Ok(AccelChoice::Auto),
            qemu: PathBuf::from("qemu-system-x86_64"),
            kernel_roots: guest::search_roots(),
            images: image_store::ImageCache::default_root(),
            progress: Box::new(image_store::NoProgress),
            egress: Vec::new(),
        }
    }

    fn control(
        control: &'static str,
        reason: impl Into<String>,
        fix: impl Into<String>,
    ) -> BackendError {
        BackendError::Control {
            control,
            reason: reason.into(),
            fix: fix.into(),
        }
    }

    /// Everything the session needs from this host, or the first thing
    /// missing, named with the package or setting that provides it.
    fn check(&self, spec: &SandboxSpec, opts: &RunOptions) -> Result<Host, BackendError> {
        let network = match spec.network {
            NetworkMode::None => plan::VmNetwork::None,
            NetworkMode::Host => {
                return Err(Self::control(
                    "network",
                    "a VM has no host network to share: `host` would give the guest the host's interfaces, which only a container can",
                    "use --network none or bridge on the vm backend, or another backend for the host network",
                ));
            }
            NetworkMode::Bridge => plan::VmNetwork::Bridge {
                slirp4netns: sandbox::slirp::find().ok_or_else(|| {
                    Self::control(
                        "network",
                        "the vm backend's bridge network needs slirp4netns, which is not installed",
                        "apt-get install slirp4netns, or use --network none",
                    )
                })?,
            },
            NetworkMode::Allowlist => plan::VmNetwork::Allowlist {
                transparent_ports: Vec::new(),
            },
        };
        let egress = sandbox::egress::EgressPlan::for_spec(
            spec,
            &self.egress,
            Some(sandbox::egress::VM_FAKE_NET),
        )?;
        let network = match (network, &egress) {
            (plan::VmNetwork::Allowlist { .. }, Some(e)) => plan::VmNetwork::Allowlist {
                transparent_ports: e.transparent_ports.clone(),
            },
            (n, _) => n,
        };
        if spec.docker {
            return Err(Self::control(
                "docker socket",
                "the vm backend cannot give a guest the Docker proxy's socket yet",
                "leave `docker: true` out of the profile, or use the native or docker backend",
            ));
        }
        // QEMU's cgroup, decided as a container's is: root makes it, a
        // user needs one delegated (`agentctl setup`, or systemd on v2).
        // --no-limits goes without it; the VM keeps its size and the
        // guest's cgroup its limits (a VM always has a size: the safer
        // reading of the flag here).
        let cgroup = cgroups::mode_for(
            spec.session.as_str(),
            spec.identity.invoker_uid,
            !nix::unistd::geteuid().is_root(),
            opts.no_limits,
        )
        .map_err(|r| {
            Self::control(
                "resource limits",
                format!("QEMU's cgroup: {}", r.reason),
                format!(
                    "{} (on the vm backend --no-limits leaves out only QEMU's own cgroup: the VM keeps its size and the guest's cgroup the limits)",
                    r.fix
                ),
            )
        })?;
        let qemu = find_program(&self.qemu).ok_or_else(|| {
            Self::control(
                "virtual machine monitor",
                format!("{} is not installed", self.qemu.display()),
                "apt-get install qemu-system-x86",
            )
        })?;
        let kernel = guest::find_kernel(&self.kernel_roots)
            .map_err(|e| Self::control("guest kernel", e, guest::no_kernel_fix()))?;
        if network != plan::VmNetwork::None {
            guest::check_net_modules(&kernel)
                .map_err(|e| Self::control("guest kernel", e, guest::no_kernel_fix()))?;
        }
        let asked = self
            .accel
            .clone()
            .map_err(|e| Self::control("acceleration", e, "unset it, or set auto, kvm or tcg"))?;
        let (accel, notice) = Probe::host()
            .choose(asked)
            .map_err(|e| Self::control("acceleration", e.to_string(), "--accel tcg"))?;
        if !std::path::Path::new("/proc/self/ns/user").exists() {
            return Err(Self::control(
                "user namespace",
                "this kernel has no user namespaces: the VM's file tree is built in one",
                "a kernel with CONFIG_USER_NS",
            ));
        }
        let image = spec.image.as_deref().map(|r| self.image(r)).transpose()?;
        Ok(Host {
            kernel,
            image,
            qemu,
            accel,
            notice,
            network,
            egress,
            cgroup,
        })
    }

    /// Writes the session directory: the plan, the initramfs, and what
    /// masks are made of. Returns it.
    fn prepare(
        &self,
        spec: &SandboxSpec,
        opts: &RunOptions,
        host: &Host,
    ) -> Result<PathBuf, BackendError> {
        self.dirs.ensure()?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.sessions())
            .map_err(|e| BackendError::io("cannot create the VM sessions' directory", e))?;
        let dir = self.session_dir(spec.session.as_str());
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| BackendError::io(format!("cannot create {}", dir.display()), e))?;
        let io = |what: &str| {
            let what = what.to_string();
            move |e| BackendError::io(what, e)
        };
        let scratch = dir.join(helper::SCRATCH);
        fs::create_dir(&scratch).map_err(io("cannot create the scratch directory"))?;
        // Readable by the namespace's uid 0 (the session's host identity).
        fs::set_permissions(&scratch, fs::Permissions::from_mode(0o755)).map_err(io("scratch"))?;
        fs::write(scratch.join("empty"), b"").map_err(io("the empty file masks are made of"))?;
        fs::set_permissions(scratch.join("empty"), fs::Permissions::from_mode(0o444))
            .map_err(io("scratch"))?;
        fs::DirBuilder::new()
            .mode(0o555)
            .create(scratch.join("empty.d"))
            .map_err(io("the empty directory masks are made of"))?;
        fs::create_dir(dir.join(helper::ROOT)).map_err(io("cannot create the tree's root"))?;
        fs::create_dir(dir.join(helper::RUN)).map_err(io("cannot create the VMM's directory"))?;
        fs::create_dir(dir.join(helper::JAIL)).map_err(io("cannot create the VMM's root"))?;
        if host.image.is_some() {
            fs::create_dir(scratch.join("overlay")).map_err(io("the image's overlay"))?;
        }
        let networked = host.network != plan::VmNetwork::None;
        guest::write_initramfs(&host.kernel, &dir.join(helper::INITRD), networked).map_err(
            |e| BackendError::Runtime(format!("cannot write the guest's initramfs: {e}")),
        )?;
        let bpf = seccomp::to_bpf(&spec.seccomp)
            .map_err(|e| Self::control("seccomp", e.to_string(), "report this as a bug"))?;
        let (mut tree, _) = plan::tree(spec);
        if networked {
            // The guest asks QEMU's DNS forwarder; QEMU asks slirp4netns's
            // (bridge) or the egress proxy's stub (allowlist) in its own
            // namespace, through the resolv.conf of its own root.
            let write = |name: &str, ns: &str| {
                let p = scratch.join(name);
                fs::write(&p, format!("nameserver {ns}\n"))
                    .and_then(|()| fs::set_permissions(&p, fs::Permissions::from_mode(0o444)))
                    .map_err(io("cannot write resolv.conf"))
                    .map(|()| p)
            };
            let guest_resolv = write("resolv.conf", &vmm::user_net::DNS.to_string())?;
            write(
                helper::QEMU_RESOLV,
                &match host.network {
                    plan::VmNetwork::Allowlist { .. } => sandbox::egress::DNS.ip().to_string(),
                    _ => sandbox::slirp::DNS.to_string(),
                },
            )?;
            plan::add_resolv_conf(&mut tree, guest_resolv);
        }
        if let Some(e) = &host.egress {
            e.save(&dir).map_err(io("cannot write the egress plan"))?;
        }
        let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let vm = plan::VmPlan {
            session: spec.session.to_string(),
            tree,
            start: plan::start(
                spec,
                opts.tty,
                (24, 80),
                bpf,
                nofile(),
                host.image
                    .as_ref()
                    .and_then(|i| i.config.env.iter().find_map(|e| e.strip_prefix("PATH="))),
            ),
            host_uid: spec.identity.host_uid,
            host_gid: spec.identity.host_gid,
            kernel: host.kernel.vmlinuz.clone(),
            initrd: dir.join(helper::INITRD),
            memory_mib: plan::memory_mib(spec),
            vcpus: plan::vcpus(spec, host_cpus),
            accel: match host.accel {
                vmm::Accel::Kvm => "kvm".into(),
                vmm::Accel::Tcg => "tcg".into(),
            },
            qemu: host.qemu.clone(),
            output_copy: opts.output_copy.clone(),
            boot_timeout_secs: BOOT_TIMEOUT_SECS,
            detached: false,
            on_exit: Vec::new(),
            exit_file: Some(self.dirs.exits().join(spec.session.as_str())),
            image_rootfs: host.image.as_ref().map(|i| i.rootfs.clone()),
            network: host.network.clone(),
            vmm_cgroup: host.cgroup.limited().then(|| {
                plan::VmmCgroup::new(
                    host.cgroup.clone(),
                    spec,
                    plan::memory_mib(spec),
                    plan::vcpus(spec, host_cpus),
                    host.accel,
                )
            }),
        };
        let json = serde_json::to_vec(&vm).map_err(|e| BackendError::Runtime(e.to_string()))?;
        fs::write(dir.join(helper::PLAN_FILE), json).map_err(io("cannot write the VM plan"))?;
        Ok(dir)
    }

    /// VM sessions live apart from the native backend's (whose orphan
    /// sweep would otherwise take them for its own).
    fn sessions(&self) -> PathBuf {
        self.dirs.base.join("vm")
    }

    fn session_dir(&self, id: &str) -> PathBuf {
        self.sessions().join(id)
    }

    fn spawn_helper(
        &self,
        dir: &std::path::Path,
        status: &std::os::fd::OwnedFd,
        log: Option<&std::path::Path>,
    ) -> Result<std::process::Child, BackendError> {
        let (program, args) = self
            .helper
            .split_first()
            .ok_or_else(|| BackendError::Runtime("no helper command configured".into()))?;
        let fd = status.as_raw_fd();
        // QEMU's cgroup on a user's cgroup v2 is made in the helper's own
        // scope, which systemd delegates.
        let scoped = fs::read(dir.join(helper::PLAN_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<plan::VmPlan>(&b).ok())
            .and_then(|p| p.vmm_cgroup)
            .is_some_and(|c| matches!(c.mode, cgroups::CgroupMode::DelegatedV2 { .. }));
        let mut cmd = if scoped {
            cgroups::delegated_scope_command(program)
        } else {
            Command::new(program)
        };
        cmd.args(args)
            .arg(dir)
            .env(helper::STATUS_FD_ENV, fd.to_string());
        let detached = log.is_some();
        if let Some(log) = log {
            let (out, err) = sandbox::detached::open_log(log)?;
            cmd.stdin(std::process::Stdio::null())
                .stdout(out)
                .stderr(err);
        }
        // SAFETY: close_range, fcntl on one descriptor, setsid and prctl are
        // async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                // The helper gets its standard descriptors and the status
                // pipe, nothing else this launcher happened to inherit
                // (a detached helper would hold it for the session's life).
                close_from_3(true)?;
                let flags = libc::fcntl(fd, libc::F_GETFD);
                libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                if detached {
                    // Its own session: no terminal signals, and it
                    // outlives the launcher.
                    libc::setsid();
                } else {
                    // A foreground session ends with its launcher.
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                }
                Ok(())
            });
        }
        cmd.spawn()
            .map_err(|e| BackendError::io(format!("cannot start the session helper {program}"), e))
    }
}

/// `p` itself when it names a path, else the first `p` on PATH: how this
/// backend finds QEMU.
pub fn find_program(p: &std::path::Path) -> Option<PathBuf> {
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(p))
        .find(|c| c.is_file())
}

/// Closes every descriptor from 3 up, or with `cloexec` marks them
/// close-on-exec (what a process about to exec keeps is then its
/// standard descriptors and what it clears the flag on afterwards). Async-
/// signal-safe: one system call.
pub(crate) fn close_from_3(cloexec: bool) -> std::io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
    let flags = if cloexec { CLOSE_RANGE_CLOEXEC } else { 0 };
    // SAFETY: close_range takes plain values; the callers own no
    // descriptor above 2 they still need (or clear the flag after).
    if unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, flags) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn nofile() -> (u64, u64) {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap_or((1024, 4096))
}

impl Backend for VmBackend {
    fn name(&self) -> &'static str {
        "vm"
    }

    fn preflight(&self, spec: &SandboxSpec, opts: &RunOptions) -> Result<(), BackendError> {
        self.check(spec, opts).map(drop)
    }

    fn run(
        &self,
        spec: &SandboxSpec,
        opts: &RunOptions,
        observer: &dyn Observer,
    ) -> Result<ExitStatus, BackendError> {
        let host = self.check(spec, opts)?;
        if let Some(n) = &host.notice {
            eprintln!("agentctl: {n}");
        }
        let dir = match self.prepare(spec, opts, &host) {
            Ok(d) => d,
            Err(e) => {
                helper::remove_session_dir(&self.session_dir(spec.session.as_str()));
                return Err(e);
            }
        };
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGINT,
            Signal::SIGQUIT,
            Signal::SIGTERM,
            Signal::SIGHUP,
        ] {
            mask.add(s);
        }
        let mut old = SigSet::empty();
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old))
            .map_err(|e| BackendError::Runtime(format!("cannot block signals: {e}")))?;
        let result = self.supervise(&dir, &mask, observer);
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
        // The helper removes it; after a helper that died, we do.
        helper::remove_session_dir(&dir);
        result
    }

    fn start_detached(
        &self,
        spec: &SandboxSpec,
        opts: &RunOptions,
        on_exit: &[String],
    ) -> Result<Handle, BackendError> {
        // A detached session's output goes to its log, which its
        // supervisor follows into the store.
        let opts = RunOptions {
            tty: false,
            output_copy: None,
            ..opts.clone()
        };
        let host = self.check(spec, &opts)?;
        if let Some(n) = &host.notice {
            eprintln!("agentctl: {n}");
        }
        let id = spec.session.as_str();
        let dir = match self.prepare(spec, &opts, &host) {
            Ok(d) => d,
            Err(e) => {
                helper::remove_session_dir(&self.session_dir(id));
                return Err(e);
            }
        };
        let started = self.start_helper_detached(&dir, id, on_exit);
        if started.is_err() && !helper::supervised(&dir) {
            helper::remove_session_dir(&dir);
        }
        started
    }

    fn stop(&self, handle: &Handle, timeout: std::time::Duration) -> Result<(), BackendError> {
        let dir = self.session_dir(&handle.session);
        if !helper::supervised(&dir) {
            return Ok(());
        }
        let pid = read_pid(&dir.join(helper::PID_FILE))
            .or(handle.helper_pid.map(|p| p as i32))
            .ok_or_else(|| BackendError::Runtime("the session's helper is unknown".into()))?;
        // The helper passes SIGTERM on to the command.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM)
            .map_err(|e| BackendError::Runtime(format!("cannot signal the session: {e}")))?;
        if wait_unsupervised(&dir, timeout) {
            return Ok(());
        }
        // Still running after the grace period: the VM goes, and the
        // command with it; the helper records a kill.
        if let Some(qemu) = read_pid(&dir.join(helper::QEMU_PID_FILE))
            && process_names(qemu, &dir)
        {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(qemu), Signal::SIGKILL);
        }
        if wait_unsupervised(&dir, std::time::Duration::from_secs(15)) {
            Ok(())
        } else {
            Err(BackendError::Runtime(
                "the session did not stop after its VM was killed".into(),
            ))
        }
    }

    fn exec(
        &self,
        handle: &Handle,
        command: &[String],
        tty: bool,
    ) -> Result<ExitStatus, BackendError> {
        let dir = self.session_dir(&handle.session);
        if !helper::supervised(&dir) {
            return Err(BackendError::Runtime(format!(
                "session {} is not running",
                handle.session
            )));
        }
        let (program, args) = self
            .exec_helper
            .split_first()
            .ok_or_else(|| BackendError::Runtime("no exec helper configured".into()))?;
        let mut cmd = Command::new(program);
        cmd.args(args).arg(&dir);
        if tty {
            cmd.arg("--tty");
        }
        cmd.arg("--").args(command);
        let status = cmd
            .status()
            .map_err(|e| BackendError::io("cannot start the exec helper", e))?;
        Ok(ExitStatus::Code(status.code().unwrap_or(125)))
    }

    fn logs(
        &self,
        handle: &Handle,
        follow: bool,
        out: &mut dyn std::io::Write,
    ) -> Result<(), BackendError> {
        let path = handle
            .log_path
            .clone()
            .unwrap_or_else(|| self.logs.join(format!("{}.log", handle.session)));
        let dir = self.session_dir(&handle.session);
        sandbox::detached::copy_log(&path, follow, &|| helper::supervised(&dir), out)
    }

    fn liveness(&self, handle: &Handle) -> Result<Liveness, BackendError> {
        let dir = self.session_dir(&handle.session);
        if dir.exists() && helper::supervised(&dir) {
            return Ok(Liveness::Running);
        }
        // The helper writes the exit code before it removes the session
        // directory: while it does, the session has ended, not vanished.
        Ok(
            match fs::read_to_string(self.dirs.exits().join(&handle.session))
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                Some(code) => Liveness::Exited(ExitStatus::Code(code)),
                None => Liveness::Gone,
            },
        )
    }

    fn forget_exit(&self, handle: &Handle) {
        let _ = fs::remove_file(self.dirs.exits().join(&handle.session));
    }

    fn remove(&self, handle: &Handle) -> Result<(), BackendError> {
        let dir = self.session_dir(&handle.session);
        if dir.exists() && !helper::supervised(&dir) {
            // QEMU dies with its helper (parent-death signal); make sure.
            if let Some(qemu) = read_pid(&dir.join(helper::QEMU_PID_FILE))
                && process_names(qemu, &dir)
            {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(qemu), Signal::SIGKILL);
            }
            helper::remove_session_dir(&dir);
        }
        let _ = fs::remove_file(self.dirs.exits().join(&handle.session));
        let _ = fs::remove_file(self.logs.join(format!("{}.log", handle.session)));
        Ok(())
    }

    fn orphans(&self, known: &dyn Fn(&str) -> bool) -> Result<Vec<Orphan>, BackendError> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(self.sessions()) else {
            return Ok(out);
        };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if known(&id) {
                continue;
            }
            let running = helper::supervised(&e.path());
            out.push(Orphan {
                what: format!(
                    "VM session directory {}{}",
                    e.path().display(),
                    if running { " (running)" } else { "" }
                ),
                session: id,
            });
        }
        Ok(out)
    }
}

fn read_pid(path: &std::path::Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether process `pid` is still this session's (its command line names
/// the session directory), not a reused pid.
fn process_names(pid: i32, dir: &std::path::Path) -> bool {
    let needle = dir.to_string_lossy().into_owned();
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(&needle))
        .unwrap_or(false)
}

fn wait_unsupervised(dir: &std::path::Path, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while helper::supervised(dir) {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    true
}

impl VmBackend {
    /// Rewrites the plan for the background, starts the helper with its
    /// output going to the session's log, and returns once the command
    /// runs.
    fn start_helper_detached(
        &self,
        dir: &std::path::Path,
        id: &str,
        on_exit: &[String],
    ) -> Result<Handle, BackendError> {
        let plan_path = dir.join(helper::PLAN_FILE);
        let mut plan: plan::VmPlan = fs::read(&plan_path)
            .map_err(|e| BackendError::io("cannot read the VM plan", e))
            .and_then(|b| {
                serde_json::from_slice(&b).map_err(|e| BackendError::Runtime(e.to_string()))
            })?;
        plan.detached = true;
        plan.on_exit = on_exit.to_vec();
        let json = serde_json::to_vec(&plan).map_err(|e| BackendError::Runtime(e.to_string()))?;
        fs::write(&plan_path, json).map_err(|e| BackendError::io("cannot write the VM plan", e))?;
        sandbox::detached::private_dir(&self.logs)?;
        let log = self.logs.join(format!("{id}.log"));
        let (status_r, status_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| BackendError::Runtime(format!("cannot create a pipe: {e}")))?;
        let mut child = self.spawn_helper(dir, &status_w, Some(&log))?;
        drop(status_w);
        // The helper closes its end once the command runs (or it failed).
        let mut lines = String::new();
        let _ = std::io::Read::read_to_string(&mut fs::File::from(status_r), &mut lines);
        for line in lines.lines() {
            if line.starts_with("started ") {
                // The helper lives on, in a session of its own; its lock
                // says whether it does.
                std::thread::spawn(move || child.wait());
                return Ok(Handle {
                    session: id.to_string(),
                    helper_pid: read_pid(&dir.join(helper::PID_FILE)).map(|p| p as u32),
                    container_id: None,
                    log_path: Some(log),
                });
            }
            if let Some(m) = line.strip_prefix("error ") {
                let _ = child.wait();
                return Err(BackendError::Runtime(format!(
                    "the session failed to start: {m}"
                )));
            }
        }
        let _ = child.wait();
        Err(BackendError::Runtime(format!(
            "the session helper died while starting: {}",
            sandbox::detached::last_lines(&log, 3)
        )))
    }

    /// Starts the helper and waits for its report, passing termination
    /// requests on meanwhile.
    fn supervise(
        &self,
        dir: &std::path::Path,
        mask: &SigSet,
        observer: &dyn Observer,
    ) -> Result<ExitStatus, BackendError> {
        let (status_r, status_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| BackendError::Runtime(format!("cannot create a pipe: {e}")))?;
        let sigfd = SignalFd::with_flags(mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|e| BackendError::Runtime(format!("cannot create a signalfd: {e}")))?;
        let mut child = self.spawn_helper(dir, &status_w, None)?;
        drop(status_w);
        observer.forked();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let mut lines = String::new();
        let mut status_file = fs::File::from(status_r);
        let mut outcome: Option<Result<ExitStatus, BackendError>> = None;
        while outcome.is_none() {
            let mut fds = [
                PollFd::new(status_file.as_fd(), PollFlags::POLLIN),
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
                // Ctrl-C from the terminal reached the helper already (same
                // process group); pass on what was sent to us by pid, and
                // every SIGTERM and SIGHUP.
                let from_process =
                    info.ssi_code == libc::SI_USER || info.ssi_code == libc::SI_QUEUE;
                if from_process || matches!(sig, Signal::SIGTERM | Signal::SIGHUP) {
                    let _ = nix::sys::signal::kill(pid, sig);
                    observer.signal(sig.as_str());
                }
            }
            if !status_ready {
                continue;
            }
            let mut buf = [0u8; 4096];
            let n = std::io::Read::read(&mut status_file, &mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            lines.push_str(&String::from_utf8_lossy(&buf[..n]));
            while let Some(i) = lines.find('\n') {
                let line: String = lines.drain(..=i).collect();
                let line = line.trim_end();
                if let Some(p) = line.strip_prefix("started ") {
                    let _ = p;
                    observer.started(None);
                } else if let Some(c) = line.strip_prefix("exited ") {
                    outcome = Some(Ok(ExitStatus::Code(c.parse().unwrap_or(125))));
                } else if let Some(m) = line.strip_prefix("error ") {
                    outcome = Some(Err(BackendError::Runtime(m.to_string())));
                }
            }
        }
        let waited = child.wait();
        outcome.unwrap_or_else(|| {
            Err(BackendError::Runtime(format!(
                "the VM session helper ended without a status ({})",
                waited.map_or_else(|e| e.to_string(), |s| s.to_string())
            )))
        })
    }
}
