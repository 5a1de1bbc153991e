//! One stream of the guest protocol relayed to this process's stdio: the
//! helper relays the session's command (stream 0 of the guest), and
//! `agentctl __vm-exec` relays an exec through the helper's control
//! socket. Input, signals and window sizes go out as frames; output comes
//! back and is written as the caller's stream may show it.

use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};

use nix::sys::signal::{SigSet, Signal};
use sandbox::termfilter::{Mode as TermMode, TermOutput};
use vm_guest::{Exit, Frame, to_guest, to_host};

/// Signals passed on to the command.
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The other end went away without saying how the command ended.
    #[error("the other end went away")]
    Gone,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Refused(String),
}

pub fn read_frame(stream: &mut UnixStream) -> Result<Frame, RelayError> {
    match Frame::read_from(stream)? {
        Some(f) => Ok(f),
        None => Err(RelayError::Gone),
    }
}

pub fn terminal_size() -> Option<(u16, u16)> {
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

/// The caller's terminal in raw mode while it lives (keys go to the
/// guest's terminal as typed), restored when dropped.
pub struct RawTerminal(Option<nix::sys::termios::Termios>);

impl RawTerminal {
    pub fn new(tty: bool) -> RawTerminal {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        if !tty || !io::stdin().is_terminal() {
            return RawTerminal(None);
        }
        let Ok(old) = tcgetattr(io::stdin()) else {
            return RawTerminal(None);
        };
        let mut raw = old.clone();
        cfmakeraw(&mut raw);
        if tcsetattr(io::stdin(), SetArg::TCSANOW, &raw).is_err() {
            return RawTerminal(None);
        }
        RawTerminal(Some(old))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(old) = self.0.take() {
            let _ =
                nix::sys::termios::tcsetattr(io::stdin(), nix::sys::termios::SetArg::TCSANOW, &old);
        }
    }
}

/// Blocks the forwarded signals (and SIGWINCH) in the calling thread, so
/// that threads started afterwards inherit the mask and one reads them.
pub fn block_signals() -> SigSet {
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(s);
    }
    mask.add(Signal::SIGWINCH);
    let _ = mask.thread_block();
    mask
}

/// Relays stream 0 of `reader` until it says how the command ended.
/// Frames of other streams go to `other`. `mask` is what
/// [`block_signals`] returned, before any thread was started.
pub fn relay(
    reader: &mut UnixStream,
    writer: Arc<Mutex<UnixStream>>,
    mask: SigSet,
    tty: bool,
    copy: Option<&Path>,
    other: &dyn Fn(Frame),
) -> Result<Exit, RelayError> {
    {
        let w = writer.clone();
        std::thread::spawn(move || forward_signals(mask, w, tty));
    }
    {
        let w = writer.clone();
        std::thread::spawn(move || forward_stdin(w));
    }
    let mut out = TermOutput::new(
        tty || io::stdout().is_terminal(),
        if tty {
            TermMode::Interactive
        } else {
            TermMode::Text
        },
    );
    let mut err = TermOutput::new(io::stderr().is_terminal(), TermMode::Text);
    let mut copy = sandbox::OutputCopy::open(copy);
    loop {
        let f = read_frame(reader)?;
        if f.stream != 0 {
            other(f);
            continue;
        }
        match f.kind {
            to_host::STDOUT => {
                copy.write(&f.payload);
                let mut o = io::stdout().lock();
                let _ = out.write(&f.payload, &mut o);
                let _ = o.flush();
            }
            to_host::STDERR => {
                copy.write(&f.payload);
                let mut e = io::stderr().lock();
                let _ = err.write(&f.payload, &mut e);
                let _ = e.flush();
            }
            to_host::EXIT => return f.parse().map_err(RelayError::from),
            to_host::ERROR => {
                return Err(RelayError::Refused(
                    String::from_utf8_lossy(&f.payload).into_owned(),
                ));
            }
            _ => {}
        }
    }
}

fn forward_signals(mask: SigSet, w: Arc<Mutex<UnixStream>>, tty: bool) {
    loop {
        let Ok(sig) = mask.wait() else { continue };
        let frame = if sig == Signal::SIGWINCH {
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

/// `agentctl __vm-exec DIR [--tty] -- CMD`: runs CMD in the running
/// session through its helper's control socket, with this process's
/// stdio. Returns the exit code (125 when it could not run).
pub fn exec_main(dir: &Path, tty: bool, command: Vec<String>) -> i32 {
    let fail = |msg: String| {
        eprintln!("agentctl: {msg}");
        125
    };
    // First, while this process has one thread.
    let mask = block_signals();
    let path = dir.join(crate::helper::CONTROL_SOCKET);
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) => {
            return fail(format!(
                "the session is not running ({}: {e})",
                path.display()
            ));
        }
    };
    let (rows, cols) = terminal_size().unwrap_or((24, 80));
    let start = vm_guest::Start {
        argv: command,
        // The helper fills in the session's environment and directory.
        env: Vec::new(),
        cwd: String::new(),
        tty,
        rows,
        cols,
        sandbox: None,
    };
    if let Err(e) = Frame::json(to_guest::START, 0, &start).write_to(&mut stream) {
        return fail(format!("cannot reach the session: {e}"));
    }
    loop {
        match read_frame(&mut stream) {
            Ok(f) if f.kind == to_host::STARTED => break,
            Ok(f) if f.kind == to_host::ERROR => {
                return fail(format!(
                    "cannot run the command in the VM: {}",
                    String::from_utf8_lossy(&f.payload)
                ));
            }
            Ok(_) => {}
            Err(e) => return fail(format!("the session ended: {e}")),
        }
    }
    let writer = match stream.try_clone() {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(e) => return fail(e.to_string()),
    };
    let raw = RawTerminal::new(tty);
    let r = relay(&mut stream, writer, mask, tty, None, &|_| {});
    drop(raw);
    match r {
        Ok(Exit::Code(c)) => c,
        Ok(Exit::Signal(s)) => 128 + s,
        Err(RelayError::Gone) => fail("the session ended while the command ran".into()),
        Err(e) => fail(e.to_string()),
    }
}
