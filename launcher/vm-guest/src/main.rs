//! agentctl's guest agent: PID 1 of the microVM's initramfs.
//!
//! It loads the virtio modules the initramfs carries, mounts the sandbox's
//! tree that the host exports over 9p (already masked and read-only where
//! the plan says: the host built it), opens its virtio-serial port and
//! then does what the host asks: run the session's command in namespaces
//! of its own (stream 0), run execs beside it, relay their stdio, pass on
//! signals and window sizes, report how each ended, power off.
//!
//! Inside the guest the command still gets no capabilities, no_new_privs,
//! the session's seccomp filter (compiled by the host) and a cgroup with
//! the session's pids and memory limits: the VM is the boundary, these are
//! defence in depth. It is single-threaded: one poll loop.

mod proc;

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use vm_guest::{
    Decoder, Exit, Frame, PORT_NAME, READY_MARK, ROOT_TAG, Ready, SandboxSetup, Start, to_guest,
    to_host,
};

use crate::proc::{Stdio, cvt};

/// Where the host's tree is mounted before stream 0 moves into it.
const SANDBOX: &str = "/sandbox";
const CGROUP: &str = "/sys/fs/cgroup/sandbox";

fn say(msg: &str) {
    // PID 1's stderr is the console (the host's console log).
    let _ = writeln!(io::stderr(), "agentctl-guest: {msg}");
}

fn main() {
    if std::process::id() != 1 {
        eprintln!("agentctl-vm-guest is PID 1 of agentctl's microVM; it is not run by hand");
        std::process::exit(2);
    }
    let port = match boot() {
        Ok(port) => port,
        Err(e) => {
            say(&format!("boot failed: {e}"));
            power_off();
        }
    };
    // The benchmark's bare-QEMU baseline (`cargo xtask bench-vm`): the
    // same kernel and initramfs, booted to the point where the agent would
    // serve, then off.
    if fs::read_to_string("/proc/cmdline")
        .unwrap_or_default()
        .split_whitespace()
        .any(|w| w == "agentctl.bench=poweroff")
    {
        say(READY_MARK);
        power_off();
    }
    if let Err(e) = Agent::new(port).serve() {
        say(&format!("{e}"));
    }
    power_off();
}

fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers; PID 1 ends the VM.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot(2) does not return for PID 1 with CAP_SYS_BOOT; if it did,
    // exiting panics the kernel, and `panic=-1` with QEMU's -no-reboot
    // ends the VM all the same.
    std::process::exit(1)
}

fn mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let (src, target, fstype, data) = (c(src)?, c(target)?, c(fstype)?, c(data)?);
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    cvt(unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    })
    .map(drop)
    .map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "mount {} on {}: {e}",
                fstype.to_string_lossy(),
                target.to_string_lossy()
            ),
        )
    })
}

/// Mounts the guest's own file systems, loads the modules in the order the
/// host wrote, mounts the sandbox's tree and opens the agent's port.
fn boot() -> io::Result<fs::File> {
    let nodev = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount("proc", "/proc", "proc", nodev, "")?;
    mount("sysfs", "/sys", "sysfs", nodev, "")?;
    mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755")?;
    let _ = fs::create_dir_all("/dev/pts");
    mount(
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "ptmxmode=0666,mode=0620",
    )?;
    mount("cgroup2", "/sys/fs/cgroup", "cgroup2", nodev, "")?;
    for m in fs::read_to_string("/modules.order")
        .unwrap_or_default()
        .lines()
    {
        let m = m.trim();
        if !m.is_empty() {
            proc::load_module(&format!("/{m}"))?;
        }
    }
    loopback_up()?;
    fs::create_dir_all(SANDBOX)?;
    // The virtio devices are probed as their modules load; give the 9p
    // channel a moment to register under TCG.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match mount(
            ROOT_TAG,
            SANDBOX,
            "9p",
            libc::MS_NOSUID | libc::MS_NODEV,
            // cache=mmap: shared writable mappings (SQLite's WAL index, pip's
            // cache, linkers) need page cache for mmap; nothing else is
            // cached, so the host's view stays the truth.
            "trans=virtio,version=9p2000.L,msize=512000,access=any,posixacl,cache=mmap",
        ) {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
    let port = loop {
        if let Some(p) = find_port() {
            break p;
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "no virtio port named {PORT_NAME}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    fs::OpenOptions::new().read(true).write(true).open(&port)
}

/// A socket for interface ioctls.
fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    unsafe {
        let s = cvt(libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
        ))?;
        Ok(OwnedFd::from_raw_fd(s))
    }
}

/// An ifreq naming `name` (a short, NUL-free interface name).
fn ifreq(name: &[u8]) -> libc::ifreq {
    // SAFETY: ifreq is plain data; zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in req.ifr_name.iter_mut().zip(name) {
        *d = *b as libc::c_char;
    }
    req
}

/// Brings interface `name` up.
fn link_up(sock: &OwnedFd, name: &[u8]) -> io::Result<()> {
    let mut req = ifreq(name);
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        cvt(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req))?;
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        cvt(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req))?;
    }
    Ok(())
}

fn sockaddr(a: std::net::Ipv4Addr) -> libc::sockaddr {
    // SAFETY: sockaddr_in is plain data; zero is valid.
    let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_addr.s_addr = u32::from(a).to_be();
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux and the
    // kernel reads the former through the latter.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(s) }
}

/// The guest's network card, when the plan gives it one: `eth0` with the
/// plan's address, up, and a default route through the gateway. The card
/// is probed as its module loads; under TCG that takes a moment.
fn net_up(net: &vm_guest::GuestNet) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::path::Path::new("/sys/class/net/eth0").exists() {
        if Instant::now() > deadline {
            return Err(io::Error::other("the guest has no network card (eth0)"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mask = std::net::Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(net.prefix))
            .unwrap_or(0),
    );
    let what =
        |w: &'static str| move |e: io::Error| io::Error::new(e.kind(), format!("eth0: {w}: {e}"));
    let sock = ioctl_socket()?;
    let mut addr = ifreq(b"eth0");
    addr.ifr_ifru.ifru_addr = sockaddr(net.address);
    let mut netmask = ifreq(b"eth0");
    netmask.ifr_ifru.ifru_netmask = sockaddr(mask);
    // SAFETY: rtentry is plain data; zero is a valid value.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr(std::net::Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr(std::net::Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = sockaddr(net.gateway);
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    // SAFETY: each request reads the structure given, which we own.
    unsafe {
        cvt(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFADDR, &addr)).map_err(what("address"))?;
        cvt(libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCSIFNETMASK,
            &netmask,
        ))
        .map_err(what("netmask"))?;
    }
    link_up(&sock, b"eth0").map_err(what("up"))?;
    // SAFETY: SIOCADDRT reads the rtentry we own.
    unsafe {
        cvt(libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT, &rt)).map_err(what("default route"))?;
    }
    Ok(())
}

/// The guest's loopback is up, as a container's is.
fn loopback_up() -> io::Result<()> {
    link_up(&ioctl_socket()?, b"lo")
        .map_err(|e| io::Error::new(e.kind(), format!("bringing up lo: {e}")))
}

/// `/dev/vportNpM` whose name is the agent's (udev's by-name links are
/// not there: there is no udev).
fn find_port() -> Option<String> {
    for e in fs::read_dir("/sys/class/virtio-ports").ok()?.flatten() {
        let name = fs::read_to_string(e.path().join("name")).unwrap_or_default();
        let dev = format!("/dev/{}", e.file_name().to_string_lossy());
        if name.trim() == PORT_NAME && fs::metadata(&dev).is_ok() {
            return Some(dev);
        }
    }
    None
}

fn uptime_ms() -> u64 {
    fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0, |s| (s * 1000.0) as u64)
}

/// One running command: its process, its stdio's agent ends, and how it
/// ended once known.
struct Stream {
    /// The waiter in the guest that reports the command's status (the
    /// sandbox's init for stream 0) and passes signals on to it.
    waiter: libc::pid_t,
    status: Option<OwnedFd>,
    stdio: Stdio,
    stdin_buf: Vec<u8>,
    stdin_eof: bool,
    exit: Option<Exit>,
    /// When the status came: output still open a second later is not
    /// waited for (an exec's background child may hold it).
    exited_at: Option<Instant>,
}

struct Agent {
    port: fs::File,
    decoder: Decoder,
    streams: HashMap<u32, Stream>,
    /// The sandbox's init, once stream 0 runs, and how it was set up:
    /// execs join its namespaces and get its limits and filter.
    sandbox: Option<(libc::pid_t, SandboxSetup)>,
    sigchld: OwnedFd,
}

impl Agent {
    fn new(port: fs::File) -> Agent {
        Agent {
            port,
            decoder: Decoder::default(),
            streams: HashMap::new(),
            sandbox: None,
            sigchld: proc::sigchld_fd(),
        }
    }

    fn send(&mut self, f: Frame) -> io::Result<()> {
        self.port.write_all(&f.encode())
    }

    fn serve(mut self) -> io::Result<()> {
        say(READY_MARK);
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        self.send(Frame::json(
            to_host::READY,
            0,
            &Ready {
                kernel: kernel.trim().to_string(),
                uptime_ms: uptime_ms(),
            },
        ))?;
        loop {
            let mut fds = vec![
                libc::pollfd {
                    fd: self.port.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.sigchld.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // (stream, which: 0 out, 1 err, 2 status, 3 stdin)
            let mut slots: Vec<(u32, u8)> = Vec::new();
            let mut ids: Vec<u32> = self.streams.keys().copied().collect();
            ids.sort_unstable();
            for id in &ids {
                let s = &self.streams[id];
                for (which, fd) in [(0u8, s.stdio.out_fd()), (1, s.stdio.err_fd())] {
                    if let Some(fd) = fd {
                        fds.push(libc::pollfd {
                            fd,
                            events: libc::POLLIN,
                            revents: 0,
                        });
                        slots.push((*id, which));
                    }
                }
                if let Some(st) = &s.status {
                    fds.push(libc::pollfd {
                        fd: st.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    });
                    slots.push((*id, 2));
                }
                if !s.stdin_buf.is_empty()
                    && let Some(fd) = s.stdio.in_fd()
                {
                    fds.push(libc::pollfd {
                        fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    });
                    slots.push((*id, 3));
                }
            }
            let waiting_exit = self.streams.values().any(|s| s.exited_at.is_some());
            let timeout = if waiting_exit { 100 } else { -1 };
            // SAFETY: `fds` is a valid array of pollfd for its length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if fds[1].revents != 0 {
                proc::drain_signalfd(&self.sigchld);
                proc::reap_all();
            }
            for (i, (id, which)) in slots.iter().enumerate() {
                let rev = fds[i + 2].revents;
                if rev == 0 {
                    continue;
                }
                match which {
                    0 | 1 => self.pump_output(*id, *which)?,
                    2 => self.read_status(*id),
                    _ => self.pump_stdin(*id),
                }
            }
            self.finish_streams()?;
            if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                let mut buf = [0u8; 65536];
                match self.port.read(&mut buf) {
                    Ok(0) => {
                        // The host closed its end: nobody is listening.
                        // Without a host there is nothing to do; QEMU ends
                        // with the guest.
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                    Ok(n) => self.decoder.push(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
                while let Some(f) = self.decoder.next_frame()? {
                    if !self.handle(f)? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Acts on one frame from the host; false means power off.
    fn handle(&mut self, f: Frame) -> io::Result<bool> {
        match f.kind {
            to_guest::START => {
                let start: Start = match f.parse() {
                    Ok(s) => s,
                    Err(e) => {
                        self.send(Frame::new(
                            to_host::ERROR,
                            f.stream,
                            format!("a bad START: {e}").into_bytes(),
                        ))?;
                        return Ok(true);
                    }
                };
                if self.streams.contains_key(&f.stream) {
                    self.send(Frame::new(
                        to_host::ERROR,
                        f.stream,
                        b"stream in use".to_vec(),
                    ))?;
                    return Ok(true);
                }
                match self.start(f.stream, start) {
                    Ok(pid) => self.send(Frame::new(
                        to_host::STARTED,
                        f.stream,
                        (pid as u32).to_le_bytes().to_vec(),
                    ))?,
                    Err(e) => self.send(Frame::new(
                        to_host::ERROR,
                        f.stream,
                        e.to_string().into_bytes(),
                    ))?,
                }
            }
            to_guest::STDIN => {
                if let Some(s) = self.streams.get_mut(&f.stream) {
                    s.stdin_buf.extend_from_slice(&f.payload);
                    self.pump_stdin(f.stream);
                }
            }
            to_guest::STDIN_EOF => {
                if let Some(s) = self.streams.get_mut(&f.stream) {
                    s.stdin_eof = true;
                    self.pump_stdin(f.stream);
                }
            }
            to_guest::SIGNAL => {
                if let (Some(s), Ok(b)) = (
                    self.streams.get(&f.stream),
                    <[u8; 4]>::try_from(&f.payload[..]),
                ) {
                    let sig = u32::from_le_bytes(b) as i32;
                    // SAFETY: kill takes no pointers.
                    unsafe { libc::kill(s.waiter, sig) };
                }
            }
            to_guest::RESIZE => {
                if let (Some(s), Ok(b)) = (
                    self.streams.get(&f.stream),
                    <[u8; 4]>::try_from(&f.payload[..]),
                ) {
                    s.stdio.resize(
                        u16::from_le_bytes([b[0], b[1]]),
                        u16::from_le_bytes([b[2], b[3]]),
                    );
                }
            }
            to_guest::POWEROFF => return Ok(false),
            _ => {}
        }
        Ok(true)
    }

    fn start(&mut self, id: u32, start: Start) -> io::Result<libc::pid_t> {
        let (stdio, child) = proc::stdio(start.tty, start.rows, start.cols)?;
        let (status_r, status_w) = proc::pipe()?;
        let waiter = match (&start.sandbox, &self.sandbox) {
            (Some(setup), None) => {
                if let Some(net) = &setup.net {
                    net_up(net)?;
                }
                proc::cgroup_setup(CGROUP, setup.pids, setup.memory_bytes)?;
                let init = proc::spawn_sandbox(SANDBOX, CGROUP, setup, &start, child, status_w)?;
                self.sandbox = Some((init, setup.clone()));
                init
            }
            (None, Some((init, setup))) => {
                proc::spawn_exec(*init, CGROUP, setup, &start, child, status_w)?
            }
            (Some(_), Some(_)) => return Err(io::Error::other("the sandbox is already running")),
            (None, None) => {
                return Err(io::Error::other(
                    "no sandbox runs yet: start stream 0 first",
                ));
            }
        };
        self.streams.insert(
            id,
            Stream {
                waiter,
                status: Some(status_r),
                stdio,
                stdin_buf: Vec::new(),
                stdin_eof: false,
                exit: None,
                exited_at: None,
            },
        );
        Ok(waiter)
    }

    fn pump_output(&mut self, id: u32, which: u8) -> io::Result<()> {
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        let fd = if which == 0 {
            s.stdio.out_fd()
        } else {
            s.stdio.err_fd()
        };
        let Some(fd) = fd else { return Ok(()) };
        let mut buf = vec![0u8; 65536];
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            buf.truncate(n as usize);
            let kind = if which == 0 {
                to_host::STDOUT
            } else {
                to_host::STDERR
            };
            return self.send(Frame::new(kind, id, buf));
        }
        let e = io::Error::last_os_error();
        if n < 0
            && matches!(
                e.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
            )
        {
            return Ok(());
        }
        // End of file, or EIO from a terminal whose last user is gone.
        s.stdio.close_output(which);
        Ok(())
    }

    fn pump_stdin(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if let Some(fd) = s.stdio.in_fd()
            && !s.stdin_buf.is_empty()
        {
            // SAFETY: the buffer is valid for reads of its length.
            let n = unsafe { libc::write(fd, s.stdin_buf.as_ptr().cast(), s.stdin_buf.len()) };
            if n > 0 {
                s.stdin_buf.drain(..n as usize);
            } else if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
                // The command closed its input: what the host sends is dropped.
                s.stdin_buf.clear();
                s.stdio.close_input();
            }
        }
        if s.stdin_eof && s.stdin_buf.is_empty() {
            s.stdio.close_input();
        }
    }

    fn read_status(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let Some(fd) = s.status.take() else { return };
        let mut b = [0u8; 8];
        let mut f = fs::File::from(fd);
        s.exit = Some(match f.read_exact(&mut b) {
            Ok(()) => {
                let v = i32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                if b[0] == 1 {
                    Exit::Signal(v)
                } else {
                    Exit::Code(v)
                }
            }
            // The waiter died without a word (killed): say so as a signal.
            Err(_) => Exit::Signal(libc::SIGKILL),
        });
        s.exited_at = Some(Instant::now());
    }

    /// Sends EXIT for every stream whose command ended and whose output is
    /// all sent (or has had a second to arrive).
    fn finish_streams(&mut self) -> io::Result<()> {
        let done: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| {
                s.exited_at.is_some_and(|t| {
                    s.stdio.outputs_closed() || t.elapsed() > Duration::from_secs(1)
                })
            })
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            if let Some(s) = self.streams.remove(&id) {
                if id == 0 {
                    self.sandbox = None;
                }
                let exit = s.exit.unwrap_or(Exit::Signal(libc::SIGKILL));
                self.send(Frame::json(to_host::EXIT, id, &exit))?;
            }
        }
        Ok(())
    }
}
