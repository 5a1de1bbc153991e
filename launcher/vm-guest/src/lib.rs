//! The protocol between agentctl on the host and its guest agent in the
//! microVM, over one virtio-serial port (one byte stream each way).
//!
//! Every message is a frame: a kind byte, a stream number (u32, little
//! endian), a length (u32, little endian), then that many bytes. Stream 0
//! is the session's command; later streams are `exec`s. Structured
//! payloads are JSON; output and input are raw bytes.

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

/// The port's name, as the host's VMM names it (`/sys/class/virtio-ports/*/name`).
pub const PORT_NAME: &str = "agentctl.agent";
/// The 9p tag of the sandbox's root tree.
pub const ROOT_TAG: &str = "agentctl-root";
/// A frame's payload is never larger: output is sent in pieces.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// What the guest prints on its console once it is ready (boot phases).
pub const READY_MARK: &str = "agentctl-guest: ready";

/// Host to guest.
pub mod to_guest {
    /// JSON [`super::Start`]: run the session's command (stream 0) or an
    /// exec (stream > 0).
    pub const START: u8 = 1;
    pub const STDIN: u8 = 2;
    /// The caller's input ended.
    pub const STDIN_EOF: u8 = 3;
    /// u32 signal number, for the stream's process.
    pub const SIGNAL: u8 = 4;
    /// u16 rows, u16 cols.
    pub const RESIZE: u8 = 5;
    /// Sync and power off.
    pub const POWEROFF: u8 = 6;
}

/// Guest to host.
pub mod to_host {
    /// JSON [`super::Ready`]: the agent is up and waits for START.
    pub const READY: u8 = 101;
    /// The stream's command is about to run (u32: its pid in the guest).
    pub const STARTED: u8 = 102;
    pub const STDOUT: u8 = 103;
    pub const STDERR: u8 = 104;
    /// JSON [`super::Exit`]: the stream's command ended and its output is
    /// all sent.
    pub const EXIT: u8 = 105;
    /// Text: the stream could not be started (nothing ran).
    pub const ERROR: u8 = 106;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: u8, stream: u32, payload: Vec<u8>) -> Frame {
        Frame {
            kind,
            stream,
            payload,
        }
    }

    pub fn json<T: Serialize>(kind: u8, stream: u32, value: &T) -> Frame {
        // Serialising these plain structs cannot fail.
        Frame::new(kind, stream, serde_json::to_vec(value).unwrap_or_default())
    }

    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> io::Result<T> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// The header and payload in one buffer (one write keeps frames whole
    /// when two threads share the port behind a lock).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(9 + self.payload.len());
        v.push(self.kind);
        v.extend_from_slice(&self.stream.to_le_bytes());
        v.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        v.extend_from_slice(&self.payload);
        v
    }

    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.encode())
    }

    /// Reads one frame; `Ok(None)` at a clean end of stream.
    pub fn read_from(r: &mut impl Read) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 9];
        let mut got = 0;
        while got < head.len() {
            match r.read(&mut head[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let (kind, stream, len) = split_head(&head)?;
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload)?;
        Ok(Some(Frame::new(kind, stream, payload)))
    }
}

fn split_head(head: &[u8; 9]) -> io::Result<(u8, u32, usize)> {
    let stream = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
    let len = u32::from_le_bytes([head[5], head[6], head[7], head[8]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes (at most {MAX_PAYLOAD})"),
        ));
    }
    Ok((head[0], stream, len))
}

/// Reassembles frames from whatever pieces a non-blocking reader gets.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if there is one.
    pub fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        if self.buf.len() < 9 {
            return Ok(None);
        }
        let head: [u8; 9] = self.buf[..9].try_into().unwrap_or([0; 9]);
        let (kind, stream, len) = split_head(&head)?;
        if self.buf.len() < 9 + len {
            return Ok(None);
        }
        let payload = self.buf[9..9 + len].to_vec();
        self.buf.drain(..9 + len);
        Ok(Some(Frame::new(kind, stream, payload)))
    }
}

/// What the guest says when it is up.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ready {
    /// The guest kernel's release (`uname -r`).
    pub kernel: String,
    /// Milliseconds since the guest kernel started.
    pub uptime_ms: u64,
}

/// A tmpfs the guest mounts in the sandbox's tree (the plan's `/tmp`):
/// its memory is the guest's, not the host's.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tmpfs {
    pub path: String,
    pub size: Option<u64>,
    pub mode: u32,
    pub writable: bool,
}

/// How the guest runs a stream's command.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Start {
    pub argv: Vec<String>,
    /// `NAME=value`, the whole environment.
    pub env: Vec<String>,
    pub cwd: String,
    pub tty: bool,
    pub rows: u16,
    pub cols: u16,
    /// Only for stream 0, which makes the sandbox: every exec joins it.
    pub sandbox: Option<SandboxSetup>,
}

/// The sandbox inside the guest: namespaces, mounts, limits and the
/// filter. The host already built the filesystem's view (masks and
/// read-only mounts are the host's); this is defence in depth and the
/// guest's own kernel interfaces.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SandboxSetup {
    pub hostname: String,
    pub tmpfs: Vec<Tmpfs>,
    /// /proc paths hidden and made read-only, as in a container.
    pub masked_proc: Vec<String>,
    pub readonly_proc: Vec<String>,
    /// Limits applied by the guest's cgroup (0: none).
    pub pids: u32,
    pub memory_bytes: u64,
    pub nofile: (u64, u64),
    /// The seccomp filter, compiled to classic BPF by the host
    /// (`struct sock_filter` array, native endian).
    pub seccomp_bpf: Vec<u8>,
    /// Give the sandbox a /sys (its own network namespace: the guest's
    /// devices only).
    pub sysfs: bool,
    /// The guest's network card and how to configure it; None: the VM has
    /// none (only `lo`).
    #[serde(default)]
    pub net: Option<GuestNet>,
}

/// A static IPv4 configuration for the guest's one network card (`eth0`,
/// the VMM's user-mode network): no DHCP client in the guest.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GuestNet {
    pub address: std::net::Ipv4Addr,
    pub prefix: u8,
    pub gateway: std::net::Ipv4Addr,
}

/// How a stream's command ended.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_any_split() {
        let frames = vec![
            Frame::new(to_host::STDOUT, 0, b"hello".to_vec()),
            Frame::json(to_host::EXIT, 3, &Exit::Signal(9)),
            Frame::new(to_guest::STDIN_EOF, 0, Vec::new()),
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        for step in [1, 2, 5, 9, 64] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for chunk in bytes.chunks(step) {
                d.push(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "split every {step} bytes");
        }
        let mut r = &bytes[..];
        assert_eq!(Frame::read_from(&mut r).unwrap(), Some(frames[0].clone()));
        assert_eq!(frames[1].parse::<Exit>().unwrap(), Exit::Signal(9));
    }

    #[test]
    fn oversized_and_cut_frames_are_errors() {
        let mut big = vec![to_host::STDOUT, 0, 0, 0, 0];
        big.extend_from_slice(&((MAX_PAYLOAD + 1) as u32).to_le_bytes());
        let mut d = Decoder::default();
        d.push(&big);
        assert!(d.next_frame().is_err());
        let cut = Frame::new(to_host::STDOUT, 0, b"abc".to_vec()).encode();
        assert!(Frame::read_from(&mut &cut[..cut.len() - 1]).is_err());
    }
}
