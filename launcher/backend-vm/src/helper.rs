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

use std::ffi::CString;
use std::fs;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sandbox::termfilter::{Mode as TermMode, TermOutput};
use vm_guest::{Exit, Frame, Ready, to_guest, to_host};

use crate::plan::VmPlan;

/// The descriptor number of the status pipe, in the helper's environment.
pub const STATUS_FD_ENV: &str = "AGENTCTL_VM_STATUS_FD";
pub const PLAN_FILE: &str = "vm.json";
pub const AGENT_SOCKET: &str = "agent.sock";
pub const QMP_SOCKET: &str = "qmp.sock";
pub const CONSOLE_LOG: &str = "console.log";
pub const QEMU_LOG: &str = "qemu.log";
pub const INITRD: &str = "initrd.cpio";
pub const ROOT: &str = "root";
pub const SCRATCH: &str = "scratch";

/// Signals the helper passes on to the command.
const FORWARDED: [i32; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

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

/// Reports to the launcher, one line per event.
struct Status(Option<fs::File>);

impl Status {
    fn from_env() -> Status {
        let fd = std::env::var(STATUS_FD_ENV)
            .ok()
            .and_then(|v| v.parse::<RawFd>().ok())
            .filter(|fd| *fd > 2);
        // SAFETY: the launcher passed this descriptor to us for this use.
        Status(fd.map(|fd| unsafe { fs::File::from_raw_fd(fd) }))
    }

    fn say(&mut self, line: &str) {
        if let Some(f) = &mut self.0 {
            // One line, never split: the message has no newline in it.
            let _ = f.write_all(format!("{}\n", line.replace('\n', " ")).as_bytes());
        }
    }
}

pub fn helper_main(dir: &Path) -> i32 {
    let mut status = Status::from_env();
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
    let mut session = Session {
        dir: dir.to_path_buf(),
        plan,
        qemu: None,
        terminal: None,
    };
    let code = match session.run(&mut status) {
        Ok(code) => code,
        Err(e) => {
            status.say(&format!("error {e}"));
            125
        }
    };
    session.stop_qemu(Duration::from_secs(5));
    session.restore_terminal();
    remove_session_dir(dir);
    code
}

struct Session {
    dir: PathBuf,
    plan: VmPlan,
    qemu: Option<libc::pid_t>,
    terminal: Option<nix::sys::termios::Termios>,
}

impl Session {
    fn run(&mut self, status: &mut Status) -> Result<i32, HelperError> {
        let started = Instant::now();
        let qemu = self.spawn_qemu()?;
        self.qemu = Some(qemu);
        let mut stream = self.connect(qemu)?;
        let ready = self.wait_ready(&mut stream)?;
        tracing::debug!(
            "guest {} ready after {} ms (guest uptime {} ms)",
            ready.kernel,
            started.elapsed().as_millis(),
            ready.uptime_ms
        );
        status.say(&format!("started {qemu}"));
        let tty = self.plan.start.tty;
        let mut start = self.plan.start.clone();
        if tty && let Some((rows, cols)) = terminal_size() {
            start.rows = rows;
            start.cols = cols;
        }
        Frame::json(to_guest::START, 0, &start)
            .write_to(&mut stream)
            .map_err(io_err("sending the command to the guest"))?;
        loop {
            let f = read_frame(&mut stream)?;
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
        if tty && io::stdin().is_terminal() {
            self.raw_terminal();
        }
        let exit = self.relay(
            stream.try_clone().map_err(io_err("the agent socket"))?,
            &mut stream,
        )?;
        let _ = Frame::new(to_guest::POWEROFF, 0, Vec::new()).write_to(&mut stream);
        let code = match exit {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        };
        // The guest powers off; QEMU is gone before the launcher hears the
        // code, so nothing of the session outlives its end.
        self.stop_qemu(Duration::from_secs(10));
        self.restore_terminal();
        status.say(&format!("exited {code}"));
        Ok(code)
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
        let root = self.dir.join(ROOT);
        let scratch = self.dir.join(SCRATCH);
        let ops = self.plan.tree.clone();
        // SAFETY: the helper is single-threaded here (a fresh exec that has
        // started no thread yet); the child leaves by exec or _exit.
        match unsafe { nix::unistd::fork() }
            .map_err(|e| HelperError::Failed(format!("fork: {e}")))?
        {
            nix::unistd::ForkResult::Child => {
                drop((sync_r, go_w, info_r));
                let code = qemu_child(&argv, &root, &scratch, &ops, log, sync_w, go_r, info_w);
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop((sync_w, go_r, info_w));
                let pid = child.as_raw();
                let mut b = [0u8; 1];
                if fs::File::from(sync_r).read_exact(&mut b).is_ok() {
                    let maps = self.write_maps(pid);
                    let _ = fs::File::from(go_w).write_all(if maps.is_ok() { b"g" } else { b"x" });
                    maps?;
                }
                let mut msg = String::new();
                let _ = fs::File::from(info_r).read_to_string(&mut msg);
                if !msg.is_empty() {
                    let _ = nix::sys::wait::waitpid(child, None);
                    return Err(HelperError::Failed(format!(
                        "cannot build the sandbox's file tree for the VM: {msg}"
                    )));
                }
                Ok(pid)
            }
        }
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
        let f = read_frame(stream).map_err(|e| {
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

    /// Copies stdin to the guest and the command's output to ours until
    /// the guest says how it ended. Signals and window sizes go to the
    /// guest as they come.
    fn relay(&self, writer: UnixStream, reader: &mut UnixStream) -> Result<Exit, HelperError> {
        let writer = Arc::new(Mutex::new(writer));
        let tty = self.plan.start.tty;
        // Blocked in every thread from here, read by one.
        let mut mask = nix::sys::signal::SigSet::empty();
        for s in FORWARDED {
            if let Ok(sig) = nix::sys::signal::Signal::try_from(s) {
                mask.add(sig);
            }
        }
        mask.add(nix::sys::signal::Signal::SIGWINCH);
        let _ = mask.thread_block();
        {
            let w = writer.clone();
            std::thread::spawn(move || forward_signals(mask, w, tty));
        }
        {
            let w = writer.clone();
            std::thread::spawn(move || forward_stdin(w));
        }
        let mut out = TermOutput::new(
            if tty {
                true
            } else {
                io::stdout().is_terminal()
            },
            if tty {
                TermMode::Interactive
            } else {
                TermMode::Text
            },
        );
        let mut err = TermOutput::new(io::stderr().is_terminal(), TermMode::Text);
        let mut copy = sandbox::OutputCopy::open(self.plan.output_copy.as_deref());
        loop {
            let f = read_frame(reader)?;
            match f.kind {
                to_host::STDOUT if f.stream == 0 => {
                    copy.write(&f.payload);
                    let mut o = io::stdout().lock();
                    let _ = out.write(&f.payload, &mut o);
                    let _ = o.flush();
                }
                to_host::STDERR if f.stream == 0 => {
                    copy.write(&f.payload);
                    let mut e = io::stderr().lock();
                    let _ = err.write(&f.payload, &mut e);
                    let _ = e.flush();
                }
                to_host::EXIT if f.stream == 0 => {
                    return f.parse().map_err(io_err("the guest's EXIT"));
                }
                _ => {}
            }
        }
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

    fn raw_terminal(&mut self) {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        if let Ok(old) = tcgetattr(io::stdin()) {
            let mut raw = old.clone();
            cfmakeraw(&mut raw);
            if tcsetattr(io::stdin(), SetArg::TCSANOW, &raw).is_ok() {
                self.terminal = Some(old);
            }
        }
    }

    fn restore_terminal(&mut self) {
        if let Some(old) = self.terminal.take() {
            let _ =
                nix::sys::termios::tcsetattr(io::stdin(), nix::sys::termios::SetArg::TCSANOW, &old);
        }
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

fn read_frame(stream: &mut UnixStream) -> Result<Frame, HelperError> {
    match Frame::read_from(stream) {
        Ok(Some(f)) => Ok(f),
        Ok(None) => Err(HelperError::Failed(
            "the guest went away (QEMU ended)".into(),
        )),
        Err(e) => Err(io_err("reading from the guest")(e)),
    }
}

fn terminal_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize struct we own.
    let r = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

fn forward_signals(mask: nix::sys::signal::SigSet, w: Arc<Mutex<UnixStream>>, tty: bool) {
    loop {
        let Ok(sig) = mask.wait() else { continue };
        let frame = if sig == nix::sys::signal::Signal::SIGWINCH {
            if !tty {
                continue;
            }
            let Some((rows, cols)) = terminal_size() else {
                continue;
            };
            let mut p = rows.to_le_bytes().to_vec();
            p.extend_from_slice(&cols.to_le_bytes());
            Frame::new(to_guest::RESIZE, 0, p)
        } else {
            Frame::new(to_guest::SIGNAL, 0, (sig as u32).to_le_bytes().to_vec())
        };
        let Ok(mut s) = w.lock() else { return };
        if frame.write_to(&mut *s).is_err() {
            return;
        }
    }
}

fn forward_stdin(w: Arc<Mutex<UnixStream>>) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut stdin = io::stdin().lock();
    loop {
        let frame = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => Frame::new(to_guest::STDIN_EOF, 0, Vec::new()),
            Ok(n) => Frame::new(to_guest::STDIN, 0, buf[..n].to_vec()),
        };
        let eof = frame.kind == to_guest::STDIN_EOF;
        let Ok(mut s) = w.lock() else { return };
        if frame.write_to(&mut *s).is_err() || eof {
            return;
        }
    }
}

/// The forked child: user and mount namespaces, the tree, no privileges,
/// then QEMU. Returns only on failure (the code to leave with), after
/// writing why to `info`.
#[allow(clippy::too_many_arguments)]
fn qemu_child(
    argv: &[CString],
    root: &Path,
    scratch: &Path,
    ops: &[crate::plan::TreeOp],
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
    // SAFETY: unshare takes flags.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
        return fail(&format!(
            "cannot make a user and mount namespace: {} (unprivileged user namespaces must be allowed)",
            io::Error::last_os_error()
        ));
    }
    let _ = fs::File::from(sync).write_all(b"u");
    let mut b = [0u8; 1];
    if fs::File::from(go).read_exact(&mut b).is_err() || b[0] != b'g' {
        return fail("the helper could not map the user namespace");
    }
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
    if let Err(e) = crate::tree::build(root, scratch, ops) {
        return fail(&e.to_string());
    }
    if let Err(e) = drop_privileges() {
        return fail(&format!("cannot drop QEMU's privileges: {e}"));
    }
    let null = match fs::File::open("/dev/null") {
        Ok(f) => f,
        Err(e) => return fail(&format!("/dev/null: {e}")),
    };
    // SAFETY: dup2 onto the standard descriptors.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(log.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
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
    // SAFETY: prctl with plain values.
    unsafe {
        for cap in 0..64 {
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
        if libc::prctl(
            libc::PR_SET_SECUREBITS,
            SECBIT_NOROOT | SECBIT_NOROOT_LOCKED,
            0,
            0,
            0,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Removes the session directory without ever leaving its file system:
/// in the helper's view the tree's root is an empty directory, and should
/// anything be mounted there after all, it is left alone, not emptied.
pub fn remove_session_dir(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
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
