//! Processes in the guest: the sandbox's init in namespaces of its own,
//! execs that join it, the command itself with every privilege dropped,
//! and the stdio between them and the agent.
//!
//! Everything after a fork runs in a child of a single-threaded process,
//! so it may allocate; it leaves with `_exit`, never by returning.

use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use vm_guest::{SandboxSetup, Start};

/// Signals the waiters pass on to the command.
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

pub fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn ctx<T>(r: io::Result<T>, what: &str) -> io::Result<T> {
    r.map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{s:?} holds a NUL")))
}

fn exit(code: i32) -> ! {
    // SAFETY: leaving a forked child without running anything of the parent's.
    unsafe { libc::_exit(code) }
}

pub fn load_module(path: &str) -> io::Result<()> {
    let f = ctx(fs::File::open(path), path)?;
    // SAFETY: a valid descriptor and an empty NUL-terminated parameter string.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), c"".as_ptr(), 0) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(io::Error::new(e.kind(), format!("loading {path}: {e}")));
        }
    }
    Ok(())
}

pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut p = [0; 2];
    // SAFETY: `p` has room for the two descriptors.
    cvt(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both descriptors were just made and belong to nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) })
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor this process owns.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

/// SIGCHLD blocked and read from a signalfd, for the poll loop.
pub fn sigchld_fd() -> OwnedFd {
    // SAFETY: sigset operations on a local set; signalfd returns a new
    // descriptor or -1.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        OwnedFd::from_raw_fd(fd)
    }
}

pub fn drain_signalfd(fd: &OwnedFd) {
    let mut buf = [0u8; 128 * 8];
    // SAFETY: reads into a local buffer until the signalfd is empty.
    while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

/// Reaps every child that has ended: waiters report through their pipes,
/// and PID 1 inherits every orphan of the guest.
pub fn reap_all() {
    let mut st = 0;
    // SAFETY: waitpid with a valid status pointer.
    while unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) } > 0 {}
}

/// The agent's ends of a command's stdio.
pub enum Stdio {
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    },
    Tty {
        master: Option<OwnedFd>,
        input_open: bool,
    },
}

/// The command's ends, which become its 0, 1 and 2.
pub struct ChildStdio {
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    tty: bool,
}

impl Stdio {
    pub fn out_fd(&self) -> Option<RawFd> {
        match self {
            Stdio::Pipes { stdout, .. } => stdout.as_ref().map(|f| f.as_raw_fd()),
            Stdio::Tty { master, .. } => master.as_ref().map(|f| f.as_raw_fd()),
        }
    }

    pub fn err_fd(&self) -> Option<RawFd> {
        match self {
            Stdio::Pipes { stderr, .. } => stderr.as_ref().map(|f| f.as_raw_fd()),
            Stdio::Tty { .. } => None,
        }
    }

    pub fn in_fd(&self) -> Option<RawFd> {
        match self {
            Stdio::Pipes { stdin, .. } => stdin.as_ref().map(|f| f.as_raw_fd()),
            Stdio::Tty { master, input_open } => master
                .as_ref()
                .filter(|_| *input_open)
                .map(|f| f.as_raw_fd()),
        }
    }

    pub fn close_output(&mut self, which: u8) {
        match self {
            Stdio::Pipes { stdout, stderr, .. } => {
                if which == 0 {
                    *stdout = None;
                } else {
                    *stderr = None;
                }
            }
            Stdio::Tty { master, .. } => *master = None,
        }
    }

    pub fn close_input(&mut self) {
        match self {
            Stdio::Pipes { stdin, .. } => *stdin = None,
            // A terminal's input has no end of file of its own; the
            // command reads what was typed until it ends.
            Stdio::Tty { input_open, .. } => *input_open = false,
        }
    }

    pub fn outputs_closed(&self) -> bool {
        self.out_fd().is_none() && self.err_fd().is_none()
    }

    pub fn resize(&self, rows: u16, cols: u16) {
        if let Stdio::Tty {
            master: Some(m), ..
        } = self
        {
            set_winsize(m.as_raw_fd(), rows, cols);
        }
    }
}

fn set_winsize(fd: RawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that outlives the call.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

/// Pipes, or a terminal of the guest's own.
pub fn stdio(tty: bool, rows: u16, cols: u16) -> io::Result<(Stdio, ChildStdio)> {
    if !tty {
        let (in_r, in_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        for fd in [&in_w, &out_r, &err_r] {
            set_nonblocking(fd.as_raw_fd());
        }
        return Ok((
            Stdio::Pipes {
                stdin: Some(in_w),
                stdout: Some(out_r),
                stderr: Some(err_r),
            },
            ChildStdio {
                stdin: in_r,
                stdout: out_w,
                stderr: err_w,
                tty: false,
            },
        ));
    }
    // SAFETY: posix_openpt and friends on a descriptor we own; ptsname_r
    // writes into a local buffer of the given size.
    let (master, slave) = unsafe {
        let m = cvt(libc::posix_openpt(
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        ))?;
        let master = OwnedFd::from_raw_fd(m);
        cvt(libc::grantpt(m))?;
        cvt(libc::unlockpt(m))?;
        let mut name = [0 as libc::c_char; 128];
        let r = libc::ptsname_r(m, name.as_mut_ptr(), name.len());
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        let s = cvt(libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        ))?;
        (master, OwnedFd::from_raw_fd(s))
    };
    set_winsize(master.as_raw_fd(), rows, cols);
    set_nonblocking(master.as_raw_fd());
    let dup = || slave.try_clone();
    Ok((
        Stdio::Tty {
            master: Some(master),
            input_open: true,
        },
        ChildStdio {
            stdin: dup()?,
            stdout: dup()?,
            stderr: slave,
            tty: true,
        },
    ))
}

fn write_file(path: &str, value: &str) -> io::Result<()> {
    ctx(
        fs::write(path, value),
        &format!("writing {value:?} to {path}"),
    )
}

/// The sandbox's cgroup: its pids and memory limits, by the guest's kernel.
pub fn cgroup_setup(dir: &str, pids: u32, memory: u64) -> io::Result<()> {
    write_file("/sys/fs/cgroup/cgroup.subtree_control", "+pids +memory")?;
    ctx(fs::create_dir_all(dir), dir)?;
    if pids > 0 {
        write_file(&format!("{dir}/pids.max"), &pids.to_string())?;
    }
    if memory > 0 {
        write_file(&format!("{dir}/memory.max"), &memory.to_string())?;
    }
    Ok(())
}

fn join_cgroup(dir: &str) -> io::Result<()> {
    write_file(&format!("{dir}/cgroup.procs"), "0")
}

/// What a forked child reports before it runs the command: nothing (the
/// pipe closes at exec) or why it could not.
fn fail(info: &OwnedFd, what: &str, e: io::Error) -> ! {
    let mut f = fs::File::from(info.try_clone().unwrap_or_else(|_| exit(125)));
    let _ = write!(f, "{what}: {e}");
    exit(125)
}

/// Reads what the children wrote on the info pipe until every copy of its
/// write end is closed: empty means the command was started.
fn read_info(r: OwnedFd) -> io::Result<()> {
    use std::io::Read;
    let mut msg = String::new();
    let _ = fs::File::from(r).read_to_string(&mut msg);
    if msg.is_empty() {
        Ok(())
    } else {
        Err(io::Error::other(msg))
    }
}

/// Closes every descriptor but `keep`, in a forked child: the agent's own
/// (the port, other streams' pipes) must not live on in a waiter, where a
/// copy of a stdin pipe's write end would keep the command from ever
/// reading its end of file.
fn close_all_except(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep.iter().map(|f| *f as u32).collect();
    keep.sort_unstable();
    let mut from = 0u32;
    for k in keep {
        if k > from {
            // SAFETY: close_range closes descriptors; it touches no memory.
            unsafe { libc::syscall(libc::SYS_close_range, from, k - 1, 0u32) };
        }
        from = k + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, 0u32) };
}

impl ChildStdio {
    fn fds(&self) -> [RawFd; 3] {
        [
            self.stdin.as_raw_fd(),
            self.stdout.as_raw_fd(),
            self.stderr.as_raw_fd(),
        ]
    }
}

fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: the agent is single-threaded; every child leaves with _exit.
    cvt(unsafe { libc::fork() })
}

/// Stream 0: the sandbox's init in new mount, pid, UTS, IPC and cgroup
/// namespaces, rooted in the host's tree, and the command under it.
/// Returns the init's pid (its status pipe reports the command's end).
pub fn spawn_sandbox(
    root: &str,
    cgroup: &str,
    setup: &SandboxSetup,
    start: &Start,
    child: ChildStdio,
    status: OwnedFd,
) -> io::Result<libc::pid_t> {
    let (info_r, info_w) = pipe()?;
    let (pid_r, pid_w) = pipe()?;
    let c = fork()?;
    if c == 0 {
        let mut keep = child.fds().to_vec();
        keep.extend([
            0,
            1,
            2,
            status.as_raw_fd(),
            info_w.as_raw_fd(),
            pid_w.as_raw_fd(),
        ]);
        close_all_except(&keep);
        if let Err(e) = join_cgroup(cgroup) {
            fail(&info_w, "joining the sandbox's cgroup", e);
        }
        let flags = libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWCGROUP;
        // SAFETY: unshare and sethostname with a valid buffer.
        if let Err(e) = cvt(unsafe { libc::unshare(flags) }) {
            fail(&info_w, "making the sandbox's namespaces", e);
        }
        // SAFETY: the buffer and its length describe the hostname.
        let _ = unsafe { libc::sethostname(setup.hostname.as_ptr().cast(), setup.hostname.len()) };
        match fork() {
            Ok(0) => {
                drop(pid_w);
                sandbox_init(root, setup, start, child, status, info_w)
            }
            Ok(g) => {
                let mut f = fs::File::from(pid_w);
                let _ = f.write_all(&g.to_le_bytes());
                exit(0)
            }
            Err(e) => fail(&info_w, "starting the sandbox's init", e),
        }
    }
    drop(info_w);
    drop(pid_w);
    drop(child);
    drop(status);
    let mut b = [0u8; 4];
    let got = {
        use std::io::Read;
        fs::File::from(pid_r).read_exact(&mut b)
    };
    let mut st = 0;
    // SAFETY: waiting for our own child with a valid status pointer.
    unsafe { libc::waitpid(c, &mut st, 0) };
    read_info(info_r)?;
    got.map_err(|_| io::Error::other("the sandbox's init did not start"))?;
    Ok(i32::from_le_bytes(b))
}

fn mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let (s, t, f, d) = (cstr(src)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
    let data_ptr = if data.is_empty() {
        std::ptr::null()
    } else {
        d.as_ptr().cast()
    };
    let src_ptr = if src.is_empty() {
        std::ptr::null()
    } else {
        s.as_ptr()
    };
    let f_ptr = if fstype.is_empty() {
        std::ptr::null()
    } else {
        f.as_ptr()
    };
    // SAFETY: NUL-terminated strings (or null) that outlive the call.
    cvt(unsafe { libc::mount(src_ptr, t.as_ptr(), f_ptr, flags, data_ptr) })
        .map(drop)
        .map_err(|e| io::Error::new(e.kind(), format!("mounting {target}: {e}")))
}

fn mknod_char(path: &str, major: u32, minor: u32) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: a valid path; makedev is arithmetic.
    cvt(unsafe {
        libc::mknod(
            p.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
        )
    })?;
    // The umask took bits off; the nodes are for everyone.
    // SAFETY: as above.
    cvt(unsafe { libc::chmod(p.as_ptr(), 0o666) }).map(drop)
}

/// The sandbox's own /proc, /dev and /sys, its tmpfs mounts, then the tree
/// becomes its root.
fn build_root(root: &str, setup: &SandboxSetup) -> io::Result<()> {
    let nosuid = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount("", "/", "", libc::MS_REC | libc::MS_PRIVATE, "")?;
    mount("proc", &format!("{root}/proc"), "proc", nosuid, "")?;
    let dev = format!("{root}/dev");
    mount(
        "tmpfs",
        &dev,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "mode=755,size=65536k",
    )?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        mknod_char(&format!("{dev}/{name}"), major, minor)?;
    }
    for d in ["pts", "shm"] {
        fs::create_dir(format!("{dev}/{d}"))?;
    }
    // The guest's own devpts, not a new instance: the terminals the agent
    // opens for streams live there, and a command's `tty` must find its
    // own. Nothing but the sandbox uses terminals in this guest.
    mount("/dev/pts", &format!("{dev}/pts"), "", libc::MS_BIND, "")?;
    mount(
        "shm",
        &format!("{dev}/shm"),
        "tmpfs",
        nosuid,
        "mode=1777,size=65536k",
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, format!("{dev}/{link}"))?;
    }
    // Read-only after the nodes are made.
    mount(
        "",
        &dev,
        "",
        libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_RDONLY,
        "mode=755,size=65536k",
    )?;
    if setup.sysfs {
        mount(
            "sysfs",
            &format!("{root}/sys"),
            "sysfs",
            nosuid | libc::MS_RDONLY,
            "",
        )?;
    }
    for t in &setup.tmpfs {
        let mut data = format!("mode={:o}", t.mode);
        if let Some(size) = t.size {
            data.push_str(&format!(",size={size}"));
        }
        let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
        if !t.writable {
            flags |= libc::MS_RDONLY;
        }
        mount("tmpfs", &format!("{root}{}", t.path), "tmpfs", flags, &data)?;
    }
    let r = cstr(root)?;
    // The tree becomes / (as switch_root does: move it over the old root
    // and chroot into it); the initramfs is out of reach, and with no
    // capabilities left the command cannot chroot back out.
    // SAFETY: chdir and chroot with valid paths.
    unsafe {
        cvt(libc::chdir(r.as_ptr()))?;
    }
    mount(".", "/", "", libc::MS_MOVE, "")?;
    // SAFETY: as above.
    unsafe {
        cvt(libc::chroot(c".".as_ptr()))?;
        cvt(libc::chdir(c"/".as_ptr()))?;
    }
    for p in &setup.masked_proc {
        let is_dir = fs::metadata(p).map(|m| m.is_dir());
        let r = match is_dir {
            Ok(true) => mount("tmpfs", p, "tmpfs", libc::MS_RDONLY | nosuid, "size=0"),
            Ok(false) => mount("/dev/null", p, "", libc::MS_BIND, ""),
            Err(_) => Ok(()),
        };
        r?;
    }
    for p in &setup.readonly_proc {
        if fs::metadata(p).is_err() {
            continue;
        }
        mount(p, p, "", libc::MS_BIND | libc::MS_REC, "")?;
        mount(
            "",
            p,
            "",
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | nosuid,
            "",
        )?;
    }
    Ok(())
}

/// Signals the waiter forwards, blocked and read with sigwaitinfo; real
/// handlers so that a namespace's init does not drop them.
fn waiter_signals() -> libc::sigset_t {
    extern "C" fn noop(_: libc::c_int) {}
    // SAFETY: sigset operations on a local set; sigaction with a handler
    // that does nothing.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = noop as *const () as usize;
            libc::sigaction(s, &sa, std::ptr::null_mut());
            libc::sigaddset(&mut set, s);
        }
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for `child`, forwarding signals to it, then reports how it ended
/// on `status` and leaves.
fn wait_and_report(child: libc::pid_t, set: &libc::sigset_t, status: OwnedFd) -> ! {
    loop {
        // SAFETY: sigwaitinfo into a local struct.
        let sig = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::sigwaitinfo(set, &mut info)
        };
        if sig < 0 {
            continue;
        }
        if sig != libc::SIGCHLD {
            // SAFETY: kill takes no pointers.
            unsafe { libc::kill(child, sig) };
            continue;
        }
        loop {
            let mut st = 0;
            // SAFETY: waitpid with a valid status pointer.
            let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid != child {
                continue;
            }
            let (kind, value) = if libc::WIFSIGNALED(st) {
                (1u8, libc::WTERMSIG(st))
            } else {
                (0u8, libc::WEXITSTATUS(st))
            };
            let mut msg = [kind, 0, 0, 0, 0, 0, 0, 0];
            msg[4..].copy_from_slice(&value.to_le_bytes());
            let _ = fs::File::from(status).write_all(&msg);
            exit(0)
        }
    }
}

fn sandbox_init(
    root: &str,
    setup: &SandboxSetup,
    start: &Start,
    child: ChildStdio,
    status: OwnedFd,
    info: OwnedFd,
) -> ! {
    if let Err(e) = build_root(root, setup) {
        fail(&info, "building the sandbox", e);
    }
    let set = waiter_signals();
    match fork() {
        Ok(0) => {
            drop(status);
            run_command(start, setup, child, &info)
        }
        Ok(h) => {
            drop(info);
            drop(child);
            wait_and_report(h, &set, status)
        }
        Err(e) => fail(&info, "starting the command", e),
    }
}

/// An exec: a waiter that joins the running sandbox's namespaces, root and
/// cgroup, and the command under it.
pub fn spawn_exec(
    init: libc::pid_t,
    cgroup: &str,
    setup: &SandboxSetup,
    start: &Start,
    child: ChildStdio,
    status: OwnedFd,
) -> io::Result<libc::pid_t> {
    let (info_r, info_w) = pipe()?;
    let e = fork()?;
    if e == 0 {
        let mut keep = child.fds().to_vec();
        keep.extend([0, 1, 2, status.as_raw_fd(), info_w.as_raw_fd()]);
        close_all_except(&keep);
        if let Err(err) = join_sandbox(init, cgroup) {
            fail(&info_w, "joining the sandbox", err);
        }
        let set = waiter_signals();
        match fork() {
            Ok(0) => {
                drop(status);
                run_command(start, setup, child, &info_w)
            }
            Ok(x) => {
                drop(info_w);
                drop(child);
                wait_and_report(x, &set, status)
            }
            Err(err) => fail(&info_w, "starting the command", err),
        }
    }
    drop(info_w);
    drop(child);
    drop(status);
    read_info(info_r)?;
    Ok(e)
}

fn join_sandbox(init: libc::pid_t, cgroup: &str) -> io::Result<()> {
    join_cgroup(cgroup)?;
    let open = |p: String| -> io::Result<OwnedFd> {
        let c = cstr(&p)?;
        // SAFETY: a valid path; the result is checked.
        let fd = cvt(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
        // SAFETY: just opened, owned here.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let root = open(format!("/proc/{init}/root"))?;
    for ns in ["ipc", "uts", "cgroup", "pid", "mnt"] {
        let fd = open(format!("/proc/{init}/ns/{ns}"))?;
        // SAFETY: setns on a namespace descriptor.
        ctx(
            cvt(unsafe { libc::setns(fd.as_raw_fd(), 0) }),
            &format!("entering the sandbox's {ns} namespace"),
        )?;
    }
    // SAFETY: fchdir to the sandbox's root, then chroot there.
    unsafe {
        cvt(libc::fchdir(root.as_raw_fd()))?;
        cvt(libc::chroot(c".".as_ptr()))?;
    }
    Ok(())
}

/// The command itself: stdio, limits, working directory, no capabilities,
/// no_new_privs, the filter, then exec. Nothing the agent holds survives
/// the exec but stdin, stdout and stderr.
fn run_command(start: &Start, setup: &SandboxSetup, child: ChildStdio, info: &OwnedFd) -> ! {
    // SAFETY: restoring default dispositions and an empty mask, then the
    // calls that make this process the command: each takes plain values or
    // pointers to locals that outlive it.
    unsafe {
        for s in FORWARDED {
            libc::signal(s, libc::SIG_DFL);
        }
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::setsid();
        libc::dup2(child.stdin.as_raw_fd(), 0);
        libc::dup2(child.stdout.as_raw_fd(), 1);
        libc::dup2(child.stderr.as_raw_fd(), 2);
        if child.tty {
            libc::ioctl(0, libc::TIOCSCTTY, 0);
        }
    }
    drop(child);
    let nofile = libc::rlimit {
        rlim_cur: setup.nofile.0,
        rlim_max: setup.nofile.1,
    };
    // SAFETY: a valid rlimit struct.
    if let Err(e) = cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &nofile) }) {
        fail(info, "setting the open-files limit", e);
    }
    let cwd = match cstr(&start.cwd) {
        Ok(c) => c,
        Err(e) => fail(info, "the working directory", e),
    };
    // SAFETY: a valid path.
    if let Err(e) = cvt(unsafe { libc::chdir(cwd.as_ptr()) }) {
        fail(
            info,
            &format!("entering the working directory {}", start.cwd),
            e,
        );
    }
    if let Err(e) = drop_privileges(&setup.seccomp_bpf) {
        fail(info, "dropping privileges", e);
    }
    let env: Vec<CString> = start
        .env
        .iter()
        .filter_map(|e| CString::new(e.as_str()).ok())
        .collect();
    let argv: Vec<CString> = start
        .argv
        .iter()
        .filter_map(|a| CString::new(a.as_str()).ok())
        .collect();
    if argv.is_empty() || argv.len() != start.argv.len() {
        fail(
            info,
            "the command",
            io::Error::new(io::ErrorKind::InvalidInput, "empty, or holds a NUL"),
        );
    }
    let path = start
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .to_string();
    // Everything but 0, 1, 2 and the info pipe (close-on-exec already)
    // goes at exec.
    // SAFETY: close_range with the CLOEXEC flag touches no memory.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    let err = exec_search(&argv, &env, &path);
    let name = &start.argv[0];
    let (code, what) = match err {
        libc::ENOENT | libc::ENOTDIR => (127, "command not found".to_string()),
        libc::EACCES | libc::EPERM => (126, "permission denied".to_string()),
        libc::ENOEXEC => (126, "not an executable".to_string()),
        e => (
            126,
            format!("cannot execute: {}", io::Error::from_raw_os_error(e)),
        ),
    };
    let _ = writeln!(io::stderr(), "agentctl: {name}: {what}");
    exit(code)
}

/// execvpe: the first `dir/name` in PATH that runs; the error to report
/// when none does (permission denied wins over not found, as in a shell).
fn exec_search(argv: &[CString], env: &[CString], path: &str) -> i32 {
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let mut argp: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argp.push(std::ptr::null());
    let name = argv[0].as_bytes();
    let try_exec = |file: &CString| -> i32 {
        // SAFETY: NUL-terminated arrays of NUL-terminated strings.
        unsafe { libc::execve(file.as_ptr(), argp.as_ptr(), envp.as_ptr()) };
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ENOENT)
    };
    if name.contains(&b'/') {
        return try_exec(&argv[0]);
    }
    let mut err = libc::ENOENT;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let mut full = std::path::PathBuf::from(dir)
            .into_os_string()
            .as_bytes()
            .to_vec();
        full.push(b'/');
        full.extend_from_slice(name);
        let Ok(file) = CString::new(full) else {
            continue;
        };
        match try_exec(&file) {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => err = libc::EACCES,
            e => return e,
        }
    }
    err
}

const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
const SECBIT_NO_SETUID_FIXUP_LOCKED: libc::c_ulong = 1 << 3;
const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 1 << 5;
const SECBIT_NO_CAP_AMBIENT_RAISE: libc::c_ulong = 1 << 6;
const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: libc::c_ulong = 1 << 7;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// No capability in any set, none regained by running something as uid 0,
/// no_new_privs, then the filter (last: it may forbid what came before).
fn drop_privileges(bpf: &[u8]) -> io::Result<()> {
    // SAFETY: prctl and capset with plain values or pointers to locals.
    unsafe {
        cvt(libc::setgroups(0, std::ptr::null()))?;
        let bits = SECBIT_NOROOT
            | SECBIT_NOROOT_LOCKED
            | SECBIT_NO_SETUID_FIXUP
            | SECBIT_NO_SETUID_FIXUP_LOCKED
            | SECBIT_KEEP_CAPS_LOCKED
            | SECBIT_NO_CAP_AMBIENT_RAISE
            | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
        ctx(
            cvt(libc::prctl(libc::PR_SET_SECUREBITS, bits, 0, 0, 0)),
            "securebits",
        )?;
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0
                && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
            {
                return Err(io::Error::last_os_error());
            }
        }
        cvt(libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ))?;
        let head = CapHeader {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        ctx(
            cvt(libc::syscall(libc::SYS_capset, &head, data.as_ptr()) as libc::c_int),
            "capset",
        )?;
        ctx(
            cvt(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)),
            "no_new_privs",
        )?;
        if bpf.is_empty() || !bpf.len().is_multiple_of(8) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "no seccomp filter, or a cut one",
            ));
        }
        let prog = libc::sock_fprog {
            len: (bpf.len() / 8) as u16,
            filter: bpf.as_ptr() as *mut libc::sock_filter,
        };
        ctx(
            cvt(libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const _ as libc::c_ulong,
                0,
                0,
            )),
            "installing the seccomp filter",
        )?;
    }
    Ok(())
}
