//! The session helper, `agentctl __vm-helper DIR`: a fresh process that
//! owns one microVM session.
//!
//! It forks the process that becomes QEMU. That child enters a user
//! namespace (mapping its uid 0 to the session's host identity, written by
//! the helper from outside) and a private mount namespace, builds the
//! sandbox's tree there (`tree.rs`), drops every capability and execs
//! QEMU, which exports the tree to the guest. The helper itself never
//! enters that namespace: the session directory it removes at the end
//! holds nothing but an empty mount point in its own view.
//!
//! Then it speaks the guest protocol over QEMU's agent socket: it waits
//! for the guest agent, starts the command, relays stdin, stdout, stderr,
//! signals and the window size, powers the guest off when the command
//! ends, and reports to the launcher on a pipe, one line per event:
//! `started PID`, `exited CODE`, or `error MESSAGE`.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vm_guest::{Exit, Frame, Ready, to_guest, to_host};

use crate::plan::VmPlan;
use crate::relay::{self, RelayError};

/// The descriptor number of the status pipe, in the helper's environment.
pub const STATUS_FD_ENV: &str = "AGENTCTL_VM_STATUS_FD";
pub const PLAN_FILE: &str = "vm.json";
/// What QEMU itself writes lives in `run/`, the one directory of the
/// session it can write in its own root (`jail.rs`).
pub const RUN: &str = "run";
pub const AGENT_SOCKET: &str = "run/agent.sock";
pub const QMP_SOCKET: &str = "run/qmp.sock";
pub const CONSOLE_LOG: &str = "run/console.log";
/// The mount point of QEMU's own root.
pub const JAIL: &str = "jail";
pub const QEMU_LOG: &str = "qemu.log";
pub const INITRD: &str = "initrd.cpio";
pub const ROOT: &str = "root";
pub const SCRATCH: &str = "scratch";
/// The resolv.conf of QEMU's own root (in the scratch directory): where
/// QEMU's user-mode network forwards the guest's DNS queries.
pub const QEMU_RESOLV: &str = "qemu-resolv.conf";
/// The path of QEMU's cgroup, once made (removed with the session, also
/// after a helper that was killed).
pub const CGROUP_FILE: &str = "cgroup";
/// Held by the helper for its life.
pub const LOCK_FILE: &str = "lock";
pub const PID_FILE: &str = "helper.pid";
pub const QEMU_PID_FILE: &str = "qemu.pid";
/// Where a detached session's helper takes execs.
pub const CONTROL_SOCKET: &str = "ctl.sock";

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("{0}")]
    Failed(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> HelperError {
    let context = context.into();
    move |source| HelperError::Io { context, source }
}

fn relay_err(what: &str) -> impl FnOnce(RelayError) -> HelperError + '_ {
    move |e| match e {
        RelayError::Gone => HelperError::Failed("the guest went away (QEMU ended)".into()),
        e => HelperError::Failed(format!("{what}: {e}")),
    }
}

/// Reports to the launcher, one line per event.
struct Status(Option<fs::File>);

impl Status {
    fn from_env() -> Status {
        let fd = std::env::var(STATUS_FD_ENV)
            .ok()
            .and_then(|v| v.parse::<RawFd>().ok())
            .filter(|fd| *fd > 2);
        // Close-on-exec again (the launcher cleared it to pass it here):
        // QEMU must not hold the launcher's pipe open.
        if let Some(fd) = fd {
            // SAFETY: fcntl on a descriptor we were given.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        // SAFETY: the launcher passed this descriptor to us for this use.
        Status(fd.map(|fd| unsafe { fs::File::from_raw_fd(fd) }))
    }

    fn say(&mut self, line: &str) {
        if let Some(f) = &mut self.0 {
            // One line, never split: the message has no newline in it.
            let _ = f.write_all(format!("{}\n", line.replace('\n', " ")).as_bytes());
        }
    }

    /// The launcher is told nothing more (a detached session's launcher
    /// has returned).
    fn close(&mut self) {
        self.0 = None;
    }
}

/// Whether a live helper supervises the session in `dir`.
pub fn supervised(dir: &Path) -> bool {
    fslock::held(&dir.join(LOCK_FILE))
}

/// Where the helper appends one JSON line of boot phases per session when
/// set (`cargo xtask bench-vm`): milliseconds since the helper started.
pub const PHASES_ENV: &str = "AGENTCTL_VM_PHASES";

/// When each step of a session happened, for the benchmark.
#[derive(Default, serde::Serialize)]
struct Phases {
    /// The tree built and QEMU executed.
    qemu_started_ms: f64,
    /// The agent's socket answered.
    connected_ms: f64,
    /// The guest agent said it is ready.
    ready_ms: f64,
    /// The guest kernel's own uptime at that point.
    guest_uptime_ms: u64,
    /// The command runs.
    command_started_ms: f64,
    /// The guest reported its end.
    command_exited_ms: f64,
    /// QEMU is gone.
    qemu_gone_ms: f64,
    memory_mib: u32,
    vcpus: u32,
}

fn since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1000.0
}

pub fn helper_main(dir: &Path) -> i32 {
    let mut status = Status::from_env();
    // Held for the helper's life: "is this session supervised" is one
    // non-blocking flock, immune to pid reuse.
    let _lock = match fslock::try_exclusive(&dir.join(LOCK_FILE)) {
        Ok(Some(l)) => l,
        Ok(None) => {
            status.say("error another helper supervises this session");
            return 125;
        }
        Err(e) => {
            status.say(&format!("error cannot lock {}: {e}", dir.display()));
            return 125;
        }
    };
    let plan: VmPlan = match fs::read(dir.join(PLAN_FILE))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => {
            status.say(&format!(
                "error cannot read {}: {e}",
                dir.join(PLAN_FILE).display()
            ));
            return 125;
        }
    };
    let _ = fs::write(dir.join(PID_FILE), std::process::id().to_string());
    let mut session = Session {
        dir: dir.to_path_buf(),
        phases: Phases {
            memory_mib: plan.memory_mib,
            vcpus: plan.vcpus,
            ..Phases::default()
        },
        plan,
        qemu: None,
        t0: Instant::now(),
        slirp: None,
        egress: None,
    };
    let code = match session.run(&mut status) {
        Ok(code) => code,
        Err(e) => {
            // A detached session's launcher is gone: its log says why.
            if session.plan.detached {
                eprintln!("agentctl: {e}");
            }
            status.say(&format!("error {e}"));
            125
        }
    };
    session.stop_qemu(Duration::from_secs(5));
    // Their logs are in the directory about to go; nothing is left
    // serving a namespace that is gone.
    session.slirp.take();
    if let Some(mut e) = session.egress.take() {
        e.stop();
    }
    if let Some(path) = std::env::var_os(PHASES_ENV)
        && let Ok(line) = serde_json::to_string(&session.phases)
        && let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(path)
    {
        let _ = writeln!(f, "{line}");
    }
    if let Some(f) = &session.plan.exit_file {
        // Before the directory goes, so that a reader sees the session
        // ended rather than vanished.
        let _ = fs::write(f, code.to_string());
    }
    remove_session_dir(dir);
    sandbox::detached::run_on_exit(&session.plan.on_exit, code);
    code
}

struct Session {
    dir: PathBuf,
    plan: VmPlan,
    qemu: Option<libc::pid_t>,
    t0: Instant,
    phases: Phases,
    /// The bridge network's way out, for QEMU's namespace.
    slirp: Option<sandbox::slirp::Slirp>,
    /// The allowlist network's proxy, serving the listeners in QEMU's
    /// namespace.
    egress: Option<sandbox::egress::EgressProcess>,
}

/// Execs' clients, by their stream number in the guest.
type Clients = Arc<Mutex<HashMap<u32, UnixStream>>>;

impl Session {
    fn run(&mut self, status: &mut Status) -> Result<i32, HelperError> {
        let started = Instant::now();
        let qemu = self.spawn_qemu()?;
        self.phases.qemu_started_ms = since(self.t0);
        let _ = fs::write(self.dir.join(QEMU_PID_FILE), qemu.to_string());
        let mut stream = self.connect(qemu)?;
        self.phases.connected_ms = since(self.t0);
        let ready = self.wait_ready(&mut stream)?;
        self.phases.ready_ms = since(self.t0);
        self.phases.guest_uptime_ms = ready.uptime_ms;
        tracing::debug!(
            "guest {} ready after {} ms (guest uptime {} ms)",
            ready.kernel,
            started.elapsed().as_millis(),
            ready.uptime_ms
        );
        let tty = self.plan.start.tty;
        let mut start = self.plan.start.clone();
        if tty && let Some((rows, cols)) = relay::terminal_size() {
            start.rows = rows;
            start.cols = cols;
        }
        // Signals blocked before any thread starts; the relay reads them.
        let mask = relay::block_signals();
        Frame::json(to_guest::START, 0, &start)
            .write_to(&mut stream)
            .map_err(io_err("sending the command to the guest"))?;
        loop {
            let f = relay::read_frame(&mut stream).map_err(relay_err("starting the command"))?;
            match f.kind {
                to_host::STARTED => break,
                to_host::ERROR => {
                    return Err(HelperError::Failed(format!(
                        "the guest could not start the session: {}",
                        String::from_utf8_lossy(&f.payload)
                    )));
                }
                _ => {}
            }
        }
        self.phases.command_started_ms = since(self.t0);
        status.say(&format!("started {qemu}"));
        if self.plan.detached {
            status.close();
        }
        let writer = Arc::new(Mutex::new(
            stream.try_clone().map_err(io_err("the agent socket"))?,
        ));
        let clients: Clients = Arc::new(Mutex::new(HashMap::new()));
        if self.plan.detached {
            self.serve_execs(writer.clone(), clients.clone())?;
        }
        let raw = relay::RawTerminal::new(tty);
        let routed = clients.clone();
        let exit = relay::relay(
            &mut stream,
            writer.clone(),
            mask,
            tty,
            self.plan.output_copy.as_deref(),
            &move |f| route(&routed, f),
        );
        drop(raw);
        let exit = match exit {
            Ok(e) => e,
            // QEMU was killed (`stop` after its grace period): the command
            // went with it.
            Err(RelayError::Gone) => Exit::Signal(libc::SIGKILL),
            Err(e) => return Err(relay_err("relaying the session")(e)),
        };
        self.phases.command_exited_ms = since(self.t0);
        if let Ok(mut w) = writer.lock() {
            let _ = Frame::new(to_guest::POWEROFF, 0, Vec::new()).write_to(&mut *w);
        }
        let code = match exit {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        };
        // The guest powers off; QEMU is gone before the launcher hears the
        // code, so nothing of the session outlives its end.
        self.stop_qemu(Duration::from_secs(10));
        self.phases.qemu_gone_ms = since(self.t0);
        status.say(&format!("exited {code}"));
        Ok(code)
    }

    /// Serves `agentctl __vm-exec` on the control socket: each client's
    /// frames go to the guest as a stream of its own, and that stream's
    /// frames come back to it.
    fn serve_execs(
        &self,
        writer: Arc<Mutex<UnixStream>>,
        clients: Clients,
    ) -> Result<(), HelperError> {
        let path = self.dir.join(CONTROL_SOCKET);
        let listener = std::os::unix::net::UnixListener::bind(&path)
            .map_err(io_err(format!("cannot listen on {}", path.display())))?;
        // The session directory is the user's alone (0700); the socket too.
        let _ = fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600));
        let env = self.plan.start.env.clone();
        let cwd = self.plan.start.cwd.clone();
        std::thread::spawn(move || {
            let next = std::sync::atomic::AtomicU32::new(1);
            for conn in listener.incoming().flatten() {
                let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (w, c, env, cwd) = (writer.clone(), clients.clone(), env.clone(), cwd.clone());
                std::thread::spawn(move || serve_exec(conn, id, w, c, env, cwd));
            }
        });
        Ok(())
    }
    /// Forks the process that builds the tree and becomes QEMU.
    fn spawn_qemu(&mut self) -> Result<libc::pid_t, HelperError> {
        let argv = self.qemu_argv()?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(QEMU_LOG))
            .map_err(io_err("cannot open the QEMU log"))?;
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| HelperError::Failed(format!("pipe: {e}")))
        };
        let (sync_r, sync_w) = pipe()?;
        let (go_r, go_w) = pipe()?;
        let (info_r, info_w) = pipe()?;
        // The allowlist's listeners come back from the child on this.
        let (fds_ours, fds_theirs) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| HelperError::Failed(format!("socketpair: {e}")))?;
        let network = self.plan.network.clone();
        let root = self.dir.join(ROOT);
        let scratch = self.dir.join(SCRATCH);
        let ops = self.plan.tree.clone();
        let image = self.plan.image_rootfs.clone();
        // SAFETY: the helper is single-threaded here (a fresh exec that has
        // started no thread yet); the child leaves by exec or _exit.
        match unsafe { nix::unistd::fork() }
            .map_err(|e| HelperError::Failed(format!("fork: {e}")))?
        {
            nix::unistd::ForkResult::Child => {
                drop((sync_r, go_w, info_r, fds_ours));
                let jail = Jail {
                    dir: self.dir.clone(),
                    kernel: self.plan.kernel.clone(),
                    kvm: self.plan.accel == "kvm",
                    resolv_conf: (network != crate::plan::VmNetwork::None)
                        .then(|| scratch.join(QEMU_RESOLV)),
                };
                let code = qemu_child(
                    &argv,
                    &root,
                    &scratch,
                    &ops,
                    image.as_deref(),
                    &jail,
                    &network,
                    fds_theirs,
                    log,
                    sync_w,
                    go_r,
                    info_w,
                );
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop((sync_w, go_r, info_w, fds_theirs));
                let pid = child.as_raw();
                let mut b = [0u8; 1];
                if fs::File::from(sync_r).read_exact(&mut b).is_ok() {
                    // QEMU's cgroup before it runs anything of its own.
                    let ready = self.join_cgroup(pid).and_then(|()| self.write_maps(pid));
                    let _ = fs::File::from(go_w).write_all(if ready.is_ok() { b"g" } else { b"x" });
                    if let Err(e) = ready {
                        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                        let _ = nix::sys::wait::waitpid(child, None);
                        return Err(e);
                    }
                }
                // Before the child's end of the tree: it sends them (or
                // closes its end, failing) before it builds the tree.
                let planted = match &network {
                    crate::plan::VmNetwork::Allowlist { transparent_ports } => Some(
                        sandbox::egress::recv_fds(fds_ours.as_raw_fd()).map(|(fds, _)| {
                            (fds.len() == 3 + transparent_ports.len()).then_some(fds)
                        }),
                    ),
                    _ => None,
                };
                drop(fds_ours);
                let mut msg = String::new();
                let _ = fs::File::from(info_r).read_to_string(&mut msg);
                if !msg.is_empty() {
                    let _ = nix::sys::wait::waitpid(child, None);
                    return Err(HelperError::Failed(format!(
                        "cannot set up the VM's file tree or network: {msg}"
                    )));
                }
                self.qemu = Some(pid);
                match (&network, planted) {
                    (crate::plan::VmNetwork::Bridge { slirp4netns }, _) => {
                        self.slirp = Some(
                            sandbox::slirp::Slirp::start(slirp4netns, pid, true, &self.dir)
                                .map_err(HelperError::Failed)?,
                        );
                    }
                    (crate::plan::VmNetwork::Allowlist { .. }, Some(Ok(Some(fds)))) => {
                        let plan = sandbox::egress::EgressPlan::load(&self.dir)
                            .map_err(io_err("cannot read the egress plan"))?;
                        self.egress = Some(
                            sandbox::egress::EgressProcess::start(&plan, fds, None, &self.dir)
                                .map_err(HelperError::Failed)?,
                        );
                    }
                    (crate::plan::VmNetwork::Allowlist { .. }, got) => {
                        return Err(HelperError::Failed(format!(
                            "cannot make the allowlist network's listeners for the VM ({}); \
                             refusing to start",
                            match got {
                                Some(Err(e)) => e.to_string(),
                                _ => "not all of them came back".into(),
                            }
                        )));
                    }
                    (crate::plan::VmNetwork::None, _) => {}
                }
                Ok(pid)
            }
        }
    }

    /// Makes QEMU's cgroup, puts the child that becomes QEMU in it, and
    /// reads both back from the kernel: a limit that did not take refuses
    /// the session.
    fn join_cgroup(&self, pid: libc::pid_t) -> Result<(), HelperError> {
        let Some(cg) = &self.plan.vmm_cgroup else {
            return Ok(());
        };
        let refuse = |e: String| {
            HelperError::Failed(format!(
                "cannot put QEMU in a cgroup with its limits: {e}; refusing to start"
            ))
        };
        let hierarchy = cgroups::detect().map_err(|e| refuse(e.to_string()))?;
        let path = cgroups::create_for(&cg.mode, &hierarchy, &cg.limits, "vmm")
            .map_err(|e| refuse(e.to_string()))?
            .ok_or_else(|| refuse("no cgroup was made".into()))?;
        let _ = fs::write(self.dir.join(CGROUP_FILE), &path);
        cgroups::join(&hierarchy, &path, pid).map_err(|e| refuse(e.to_string()))?;
        cgroups::verify(&hierarchy, &path, pid, &cg.limits).map_err(refuse)
    }

    /// The child's uid 0 is the session's host identity, and nothing else
    /// is mapped.
    fn write_maps(&self, pid: libc::pid_t) -> Result<(), HelperError> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        fs::write(proc.join("setgroups"), "deny").map_err(io_err("writing setgroups"))?;
        fs::write(
            proc.join("uid_map"),
            format!("0 {} 1\n", self.plan.host_uid),
        )
        .map_err(io_err("writing the uid map"))?;
        fs::write(
            proc.join("gid_map"),
            format!("0 {} 1\n", self.plan.host_gid),
        )
        .map_err(io_err("writing the gid map"))?;
        Ok(())
    }

    fn qemu_argv(&self) -> Result<Vec<CString>, HelperError> {
        use vmm::VmmDriver;
        let cfg = vmm::VmConfig {
            kernel: self.plan.kernel.clone(),
            initrd: self.dir.join(INITRD),
            cmdline: "quiet panic=-1".into(),
            memory_mib: self.plan.memory_mib,
            vcpus: self.plan.vcpus,
            accel: if self.plan.accel == "kvm" {
                vmm::Accel::Kvm
            } else {
                vmm::Accel::Tcg
            },
            shares: vec![vmm::Share {
                tag: vm_guest::ROOT_TAG.into(),
                host_path: self.dir.join(ROOT),
                // Read-only where the tree's mounts say: the workspace is
                // writable, everything else is read-only in the host's
                // kernel.
                read_only: false,
            }],
            agent_socket: self.dir.join(AGENT_SOCKET),
            control_socket: self.dir.join(QMP_SOCKET),
            console_log: self.dir.join(CONSOLE_LOG),
            user_net: self.plan.network != crate::plan::VmNetwork::None,
        };
        let driver = vmm::qemu::Qemu {
            program: self.plan.qemu.clone().into_os_string(),
        };
        let argv = driver
            .command(&cfg)
            .map_err(|e| HelperError::Failed(e.to_string()))?;
        argv.into_iter()
            .map(|a| {
                CString::new(a.as_bytes())
                    .map_err(|_| HelperError::Failed("an argument holds a NUL".into()))
            })
            .collect()
    }

    /// Connects to the agent's socket once QEMU has made it.
    fn connect(&self, qemu: libc::pid_t) -> Result<UnixStream, HelperError> {
        let path = self.dir.join(AGENT_SOCKET);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match UnixStream::connect(&path) {
                Ok(s) => return Ok(s),
                Err(e) => {
                    if self.qemu_gone(qemu) {
                        return Err(HelperError::Failed(format!(
                            "QEMU ended before the guest started: {}",
                            self.qemu_log_tail()
                        )));
                    }
                    if Instant::now() > deadline {
                        return Err(io_err(format!(
                            "cannot reach the guest's agent at {}",
                            path.display()
                        ))(e));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    fn wait_ready(&self, stream: &mut UnixStream) -> Result<Ready, HelperError> {
        let timeout = Duration::from_secs(self.plan.boot_timeout_secs.max(1));
        stream
            .set_read_timeout(Some(timeout))
            .map_err(io_err("the agent socket"))?;
        let f = relay::read_frame(stream).map_err(|e| {
            HelperError::Failed(format!(
                "the guest did not come up within {} s ({e}); its console: {}",
                timeout.as_secs(),
                self.console_tail()
            ))
        })?;
        stream
            .set_read_timeout(None)
            .map_err(io_err("the agent socket"))?;
        if f.kind != to_host::READY {
            return Err(HelperError::Failed(format!(
                "the guest said {} before it was ready",
                f.kind
            )));
        }
        f.parse().map_err(io_err("the guest's READY"))
    }

    fn qemu_gone(&self, pid: libc::pid_t) -> bool {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        !matches!(
            waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive)
        )
    }

    /// Waits for QEMU to end (the guest powers off), killing it after
    /// `grace`.
    fn stop_qemu(&mut self, grace: Duration) {
        let Some(pid) = self.qemu.take() else { return };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.qemu_gone(pid) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    }

    fn tail(&self, name: &str) -> String {
        let text = fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    fn qemu_log_tail(&self) -> String {
        self.tail(QEMU_LOG)
    }

    fn console_tail(&self) -> String {
        self.tail(CONSOLE_LOG)
    }
}

/// A frame of an exec's stream, to its client (as its stream 0). Its
/// client is forgotten once the exec ended.
fn route(clients: &Clients, f: Frame) {
    let Ok(mut map) = clients.lock() else { return };
    let done = f.kind == to_host::EXIT || f.kind == to_host::ERROR;
    if let Some(c) = map.get_mut(&f.stream) {
        let _ = Frame::new(f.kind, 0, f.payload).write_to(c);
    }
    if done {
        map.remove(&f.stream);
    }
}

/// One exec client: its START (the command, whether it wants a terminal)
/// with the session's environment and directory filled in, then its
/// input, signals and sizes as stream `id`. A client that goes away
/// before its command ended hangs it up (SIGHUP), as a closed terminal
/// would.
fn serve_exec(
    mut conn: UnixStream,
    id: u32,
    writer: Arc<Mutex<UnixStream>>,
    clients: Clients,
    env: Vec<String>,
    cwd: String,
) {
    let Ok(Some(first)) = Frame::read_from(&mut conn) else {
        return;
    };
    let Ok(mut start) = first.parse::<vm_guest::Start>() else {
        let _ = Frame::new(to_host::ERROR, 0, b"a bad exec request".to_vec()).write_to(&mut conn);
        return;
    };
    if first.kind != to_guest::START || start.argv.is_empty() {
        let _ = Frame::new(to_host::ERROR, 0, b"a bad exec request".to_vec()).write_to(&mut conn);
        return;
    }
    start.env = env;
    start.cwd = cwd;
    start.sandbox = None;
    let Ok(back) = conn.try_clone() else { return };
    if let Ok(mut m) = clients.lock() {
        m.insert(id, back);
    }
    let send = |f: Frame| -> bool {
        writer
            .lock()
            .map(|mut w| f.write_to(&mut *w).is_ok())
            .unwrap_or(false)
    };
    if !send(Frame::json(to_guest::START, id, &start)) {
        return;
    }
    loop {
        match Frame::read_from(&mut conn) {
            Ok(Some(f))
                if matches!(
                    f.kind,
                    to_guest::STDIN | to_guest::STDIN_EOF | to_guest::SIGNAL | to_guest::RESIZE
                ) =>
            {
                if !send(Frame::new(f.kind, id, f.payload)) {
                    return;
                }
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let still_running = clients.lock().map(|m| m.contains_key(&id)).unwrap_or(false);
    if still_running {
        send(Frame::new(
            to_guest::SIGNAL,
            id,
            (libc::SIGHUP as u32).to_le_bytes().to_vec(),
        ));
    }
}

/// The forked child: user and mount namespaces, the tree, no privileges,
/// then QEMU. Returns only on failure (the code to leave with), after
/// writing why to `info`.
/// What QEMU's own root holds.
struct Jail {
    dir: PathBuf,
    kernel: PathBuf,
    kvm: bool,
    /// Bound at /etc/resolv.conf (a networked VM's DNS forwarder).
    resolv_conf: Option<PathBuf>,
}

#[allow(clippy::too_many_arguments)]
fn qemu_child(
    argv: &[CString],
    root: &Path,
    scratch: &Path,
    ops: &[crate::plan::TreeOp],
    image: Option<&Path>,
    jail: &Jail,
    network: &crate::plan::VmNetwork,
    fds: OwnedFd,
    log: fs::File,
    sync: OwnedFd,
    go: OwnedFd,
    info: OwnedFd,
) -> i32 {
    let fail = |what: &str| -> i32 {
        let _ = fs::File::from(info.try_clone().expect("dup")).write_all(what.as_bytes());
        125
    };
    // SAFETY: prctl and setsid take plain values. QEMU dies with the
    // helper, and no terminal signal reaches it (Ctrl-C is the command's).
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::setsid();
    }
    // A networked VM's QEMU gets a network namespace of its own, owned
    // by its user namespace: QEMU's user-mode network reaches only what
    // is made there (`net.rs`).
    let netns = if *network == crate::plan::VmNetwork::None {
        0
    } else {
        libc::CLONE_NEWNET
    };
    // A PID namespace of its own too, for the process forked below: the
    // /proc of QEMU's root shows QEMU alone, not the user's other
    // processes (their environment, root and descriptors are one
    // same-uid access away on some kernels).
    // SAFETY: unshare takes flags.
    if unsafe {
        libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID | netns)
    } != 0
    {
        return fail(&format!(
            "cannot make QEMU's user, mount and PID namespaces: {} (unprivileged user namespaces must be allowed)",
            io::Error::last_os_error()
        ));
    }
    let _ = fs::File::from(sync).write_all(b"u");
    let mut b = [0u8; 1];
    if fs::File::from(go).read_exact(&mut b).is_err() || b[0] != b'g' {
        return fail("the helper could not map the user namespace");
    }
    // This process stays outside the new PID namespace (unshare moves
    // only children): it forks QEMU-to-be as that namespace's PID 1 and
    // waits for it, so the helper's child is still what ends when QEMU
    // does, and killing it kills QEMU (parent-death signal).
    // SAFETY: single-threaded; the child continues below, this process
    // only waits and leaves.
    match unsafe { libc::fork() } {
        -1 => {
            return fail(&format!(
                "cannot start QEMU's PID namespace: {}",
                io::Error::last_os_error()
            ));
        }
        0 => {
            // SAFETY: prctl with plain values.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
        }
        pid => {
            // Nothing of the helper's stays open here: the launcher's
            // status pipe above all, whose end the launcher reads to (a
            // detached launcher would wait for the session's end). This
            // process never uses them again and leaves with _exit.
            if let Err(e) = crate::close_from_3(false) {
                // SAFETY: killing the child just forked.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return fail(&format!("cannot close the helper's descriptors: {e}"));
            }
            // Closed above: their owners must not close the numbers again.
            std::mem::forget((fds, log, info));
            let mut status = 0;
            // SAFETY: waiting for the child just forked.
            while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
                && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
            return if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
        }
    }
    if netns != 0 {
        if let Err(e) = crate::net::loopback_up() {
            return fail(&format!("QEMU's network namespace: {e}"));
        }
        if let crate::plan::VmNetwork::Allowlist { transparent_ports } = network
            && let Err(e) = crate::net::plant_listeners(transparent_ports, fds.as_raw_fd())
        {
            return fail(&e);
        }
    }
    drop(fds);
    // Nothing mounted here reaches the host's namespace.
    // SAFETY: NUL-terminated strings.
    if unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    } != 0
    {
        return fail(&format!(
            "cannot make the mounts private: {}",
            io::Error::last_os_error()
        ));
    }
    if let Err(e) = crate::tree::build(root, scratch, ops, image) {
        return fail(&e.to_string());
    }
    // /dev/null for QEMU's stdin, opened while the host's /dev is there.
    let null = match fs::File::open("/dev/null") {
        Ok(f) => f,
        Err(e) => return fail(&format!("/dev/null: {e}")),
    };
    if let Err(e) = crate::jail::enter(
        &jail.dir.join(JAIL),
        &[jail.dir.join(RUN)],
        &[
            jail.dir.join(ROOT),
            jail.dir.join(INITRD),
            jail.kernel.clone(),
        ],
        if jail.kvm { &["/dev/kvm"] } else { &[] },
        jail.resolv_conf.as_deref(),
    ) {
        return fail(&e.to_string());
    }
    if let Err(e) = drop_privileges() {
        return fail(&format!("cannot drop QEMU's privileges: {e}"));
    }
    // SAFETY: dup2 onto the standard descriptors; close_range marks every
    // other descriptor close-on-exec: QEMU starts with stdin, stdout and
    // stderr only, or not at all.
    unsafe {
        if libc::dup2(null.as_raw_fd(), 0) < 0
            || libc::dup2(log.as_raw_fd(), 1) < 0
            || libc::dup2(log.as_raw_fd(), 2) < 0
            || crate::close_from_3(true).is_err()
        {
            return fail(&format!(
                "cannot give QEMU only its standard descriptors: {}",
                io::Error::last_os_error()
            ));
        }
    }
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: a NULL-terminated array of NUL-terminated strings.
    unsafe { libc::execvp(ptrs[0], ptrs.as_ptr()) };
    fail(&format!(
        "cannot run {}: {}",
        argv[0].to_string_lossy(),
        io::Error::last_os_error()
    ))
}

/// QEMU runs with no capability (not even in its own user namespace) and
/// no_new_privs; its own `-sandbox` filter comes on top.
fn drop_privileges() -> io::Result<()> {
    const SECBIT_NOROOT: libc::c_ulong = 1;
    const SECBIT_NOROOT_LOCKED: libc::c_ulong = 2;
    let check = |r: libc::c_int, what: &str| {
        if r == 0 {
            Ok(())
        } else {
            let e = io::Error::last_os_error();
            Err(io::Error::new(e.kind(), format!("{what}: {e}")))
        }
    };
    // SAFETY: prctl with plain values.
    unsafe {
        for cap in 0..64 {
            // EINVAL past the kernel's last capability; any other error
            // leaves a capability in the bounding set: refused.
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0
                && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
            {
                return check(-1, "dropping a capability from the bounding set");
            }
        }
        check(
            libc::prctl(
                libc::PR_SET_SECUREBITS,
                SECBIT_NOROOT | SECBIT_NOROOT_LOCKED,
                0,
                0,
                0,
            ),
            "securebits",
        )?;
        check(
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            ),
            "clearing the ambient capabilities",
        )?;
        check(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            "no_new_privs",
        )?;
    }
    Ok(())
}

/// Removes the session directory without ever leaving its file system:
/// in the helper's view the tree's root is an empty directory, and should
/// anything be mounted there after all, it is left alone, not emptied.
pub fn remove_session_dir(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    // QEMU's cgroup (empty once QEMU is gone; the kernel may take a moment
    // to let go of it).
    if let Ok(path) = fs::read_to_string(dir.join(CGROUP_FILE))
        && !path.trim().is_empty()
        && let Ok(h) = cgroups::detect()
    {
        cgroups::remove_waiting(&h, path.trim());
    }
    let Ok(top) = fs::symlink_metadata(dir) else {
        return;
    };
    fn walk(p: &Path, dev: u64) {
        let Ok(m) = fs::symlink_metadata(p) else {
            return;
        };
        if m.dev() != dev {
            return;
        }
        if m.is_dir() {
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    walk(&e.path(), dev);
                }
            }
            let _ = fs::remove_dir(p);
        } else {
            let _ = fs::remove_file(p);
        }
    }
    walk(dir, top.dev());
}
