//! The sandboxed process's stdin, stdout and stderr: never the caller's
//! own descriptors.
//!
//! A descriptor passed into the sandbox stays there: the agent reopens it
//! through `/proc/<pid>/fd`, keeps it after the command it was given to
//! has ended, writes to the user's terminal and reads what the user types
//! next into the host shell. So the sandbox gets either a terminal of its
//! own (the pty whose master the helper holds) or pipes, and the helper
//! copies between them and the caller for as long as the command runs and
//! no longer.

use crate::error::{Context as _, NativeError};
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags};
use sandbox::termfilter::{Mode as TermMode, TermOutput};

/// How much of the caller's input waits for the sandbox before the helper
/// stops reading more.
const INPUT_BACKLOG: usize = 64 * 1024;

/// The sandbox's ends of its pipes, handed to the runtime.
pub struct SandboxEnds {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Pipes between the sandbox and the caller: the helper's ends.
pub struct Pipes {
    to_stdin: Option<OwnedFd>,
    from_stdout: Option<OwnedFd>,
    from_stderr: Option<OwnedFd>,
}

/// Makes the three pipes. The helper's ends are close-on-exec and
/// non-blocking; the sandbox's become its 0, 1 and 2.
pub fn pipes() -> Result<(Pipes, SandboxEnds), NativeError> {
    let pipe =
        || nix::unistd::pipe2(OFlag::O_CLOEXEC).ctx("cannot make a pipe for the sandbox's stdio");
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    for fd in [&in_w, &out_r, &err_r] {
        set_nonblocking(fd.as_fd());
    }
    Ok((
        Pipes {
            to_stdin: Some(in_w),
            from_stdout: Some(out_r),
            from_stderr: Some(err_r),
        },
        SandboxEnds {
            stdin: in_r,
            stdout: out_w,
            stderr: err_w,
        },
    ))
}

/// What the sandbox's stdio is connected to on the helper's side.
pub enum SandboxIo {
    /// The master of the sandbox's own terminal.
    Pty(OwnedFd),
    Pipes(Pipes),
}

/// One descriptor the wait loop polls for the relay.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Slot {
    Master,
    Stdout,
    Stderr,
    ToStdin,
    CallerStdin,
}

/// Copies between the sandbox and the caller.
pub struct Relay {
    io: SandboxIo,
    to_agent: Vec<u8>,
    caller_stdin_open: bool,
    buf: Vec<u8>,
    /// The live terminal drops clipboard, file-transfer and query
    /// sequences; pipes to a terminal pass text and colours only; pipes to
    /// anything else pass every byte.
    out: TermOutput,
    err: TermOutput,
    /// Every byte the sandbox writes, unfiltered, for the session's record.
    copy: Option<sandbox::OutputCopy>,
}

impl Relay {
    pub fn new(io: SandboxIo) -> Relay {
        let (out, err) = match &io {
            SandboxIo::Pty(master) => {
                set_nonblocking(master.as_fd());
                (
                    TermOutput::new(true, TermMode::Interactive),
                    TermOutput::new(false, TermMode::Text),
                )
            }
            SandboxIo::Pipes(_) => (
                TermOutput::new(io::stdout().is_terminal(), TermMode::Text),
                TermOutput::new(io::stderr().is_terminal(), TermMode::Text),
            ),
        };
        Relay {
            io,
            to_agent: Vec::new(),
            caller_stdin_open: true,
            buf: vec![0u8; 16 * 1024],
            out,
            err,
            copy: None,
        }
    }

    /// Also appends what the sandbox writes to `copy`.
    pub fn copy_to(&mut self, copy: sandbox::OutputCopy) {
        self.copy = Some(copy);
    }

    /// The terminal's master, to copy the window size to.
    pub fn master(&self) -> Option<BorrowedFd<'_>> {
        match &self.io {
            SandboxIo::Pty(m) => Some(m.as_fd()),
            SandboxIo::Pipes(_) => None,
        }
    }

    /// The descriptors to poll now, each with what it is.
    pub fn poll_fds<'a>(&'a self, stdin: &'a io::Stdin, fds: &mut Vec<PollFd<'a>>) -> Vec<Slot> {
        let mut slots = Vec::new();
        let mut add = |fd: BorrowedFd<'a>, flags: PollFlags, slot: Slot| {
            fds.push(PollFd::new(fd, flags));
            slots.push(slot);
        };
        match &self.io {
            SandboxIo::Pty(m) => {
                let mut flags = PollFlags::POLLIN;
                if !self.to_agent.is_empty() {
                    flags |= PollFlags::POLLOUT;
                }
                add(m.as_fd(), flags, Slot::Master);
            }
            SandboxIo::Pipes(p) => {
                if let Some(fd) = &p.from_stdout {
                    add(fd.as_fd(), PollFlags::POLLIN, Slot::Stdout);
                }
                if let Some(fd) = &p.from_stderr {
                    add(fd.as_fd(), PollFlags::POLLIN, Slot::Stderr);
                }
                if let Some(fd) = &p.to_stdin
                    && !self.to_agent.is_empty()
                {
                    add(fd.as_fd(), PollFlags::POLLOUT, Slot::ToStdin);
                }
            }
        }
        if self.caller_stdin_open && self.to_agent.len() < INPUT_BACKLOG {
            add(stdin.as_fd(), PollFlags::POLLIN, Slot::CallerStdin);
        }
        slots
    }

    /// Handles one ready descriptor.
    pub fn ready(&mut self, slot: Slot) {
        match slot {
            Slot::Master => {
                self.copy_out(Slot::Master);
                self.feed_agent();
            }
            Slot::Stdout | Slot::Stderr => self.copy_out(slot),
            Slot::ToStdin => self.feed_agent(),
            Slot::CallerStdin => {
                match io::stdin().lock().read(&mut self.buf) {
                    Ok(0) | Err(_) => {
                        self.caller_stdin_open = false;
                        // The caller's input ended: so does the sandbox's,
                        // once what is queued has gone in.
                        if self.to_agent.is_empty()
                            && let SandboxIo::Pipes(p) = &mut self.io
                        {
                            p.to_stdin = None;
                        }
                    }
                    Ok(n) => {
                        self.to_agent.extend_from_slice(&self.buf[..n]);
                        self.feed_agent();
                    }
                }
            }
        }
    }

    /// Copies what the sandbox has written and not yet been read, after its
    /// command has ended. Stops at the first empty read: a process left
    /// behind may keep a pipe open, and what it writes later goes nowhere.
    pub fn drain(&mut self) {
        for slot in [Slot::Master, Slot::Stdout, Slot::Stderr] {
            self.copy_out(slot);
        }
    }

    fn copy_out(&mut self, slot: Slot) {
        // Which descriptor, and whether it goes to the caller's stderr.
        let (fd, to_stderr) = match (&self.io, slot) {
            (SandboxIo::Pty(m), Slot::Master) => (m.as_raw_fd(), false),
            (SandboxIo::Pipes(p), Slot::Stdout) => match &p.from_stdout {
                Some(fd) => (fd.as_raw_fd(), false),
                None => return,
            },
            (SandboxIo::Pipes(p), Slot::Stderr) => match &p.from_stderr {
                Some(fd) => (fd.as_raw_fd(), true),
                None => return,
            },
            _ => return,
        };
        let mut closed = false;
        loop {
            match nix::unistd::read(fd, &mut self.buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    let bytes = &self.buf[..n];
                    if let Some(c) = &mut self.copy {
                        c.write(bytes);
                    }
                    let _ = if to_stderr {
                        self.err.write(bytes, &mut io::stderr().lock())
                    } else {
                        self.out.write(bytes, &mut io::stdout().lock())
                    };
                }
                // EAGAIN: nothing more now. EIO: the terminal's other side
                // is gone (the command has ended).
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let _ = if to_stderr {
            io::stderr().flush()
        } else {
            io::stdout().flush()
        };
        if closed && let SandboxIo::Pipes(p) = &mut self.io {
            // Every writer has gone: stop polling it.
            match slot {
                Slot::Stdout => p.from_stdout = None,
                Slot::Stderr => p.from_stderr = None,
                _ => {}
            }
        }
    }

    fn feed_agent(&mut self) {
        if self.to_agent.is_empty() {
            return;
        }
        let fd = match &self.io {
            SandboxIo::Pty(m) => m.as_fd(),
            SandboxIo::Pipes(p) => match &p.to_stdin {
                Some(fd) => fd.as_fd(),
                None => {
                    self.to_agent.clear();
                    return;
                }
            },
        };
        match nix::unistd::write(fd, &self.to_agent) {
            Ok(n) => {
                self.to_agent.drain(..n);
            }
            Err(nix::errno::Errno::EAGAIN) => {}
            // EPIPE: the sandbox closed its stdin; what it did not take is
            // dropped.
            Err(_) => {
                self.to_agent.clear();
                if let SandboxIo::Pipes(p) = &mut self.io {
                    p.to_stdin = None;
                }
            }
        }
        if self.to_agent.is_empty()
            && !self.caller_stdin_open
            && let SandboxIo::Pipes(p) = &mut self.io
        {
            p.to_stdin = None;
        }
    }
}

pub fn set_nonblocking(fd: BorrowedFd<'_>) {
    // SAFETY: F_GETFL/F_SETFL on a descriptor we hold.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}
