//! The forwarded request's connection to the daemon, and the answer's way
//! back. The request is bytes the proxy wrote itself; the answer's body is
//! relayed as it came (chunk framing included) in large reads and writes,
//! with a scanner that only finds where it ends. Decoding and re-encoding
//! every chunk (a log line is a chunk of its own) costs more than the
//! daemon spends producing it.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::upstream::{Addr, UpstreamError};

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

const READ: usize = 64 * 1024;
const MAX_HEAD: usize = 64 * 1024;

pub struct Conn {
    pub io: Box<dyn Io>,
    /// Bytes read from the daemon and not yet relayed.
    pub buf: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("talking to the Docker daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("the Docker daemon's answer is malformed: {0}")]
    Malformed(String),
    #[error("writing to the client: {0}")]
    Client(std::io::Error),
}

/// How the body of an answer is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the daemon closes the connection.
    Close,
}

pub struct ResponseHead {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub framing: Framing,
    /// Whether the connection may carry another request afterwards.
    pub reusable: bool,
}

impl Conn {
    pub async fn connect(addr: &Addr) -> Result<Conn, UpstreamError> {
        let err = |source| UpstreamError::Connect {
            addr: addr.to_string(),
            source,
        };
        let io: Box<dyn Io> = match addr {
            Addr::Unix(p) => Box::new(UnixStream::connect(p).await.map_err(err)?),
            Addr::Tcp(a) => {
                let s = TcpStream::connect(a).await.map_err(err)?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
        };
        Ok(Conn {
            io,
            buf: Vec::with_capacity(READ),
        })
    }

    async fn fill(&mut self) -> Result<usize, RelayError> {
        let start = self.buf.len();
        self.buf.resize(start + READ, 0);
        let n = self.io.read(&mut self.buf[start..]).await;
        self.buf.truncate(start + *n.as_ref().unwrap_or(&0));
        Ok(n?)
    }

    /// Reads the answer's head. `head_request` for HEAD, whose answer has
    /// no body whatever its headers say.
    pub async fn read_head(&mut self, head_request: bool) -> Result<ResponseHead, RelayError> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(RelayError::Malformed("head too large".into()));
            }
            if self.fill().await? == 0 {
                return Err(RelayError::Malformed(
                    "connection closed before an answer".into(),
                ));
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(&self.buf[..end])
            .map_err(|e| RelayError::Malformed(e.to_string()))?;
        let status = resp.code.unwrap_or(0);
        let headers: Vec<(String, String)> = resp
            .headers
            .iter()
            .filter_map(|h| {
                Some((
                    h.name.to_ascii_lowercase(),
                    std::str::from_utf8(h.value).ok()?.to_string(),
                ))
            })
            .collect();
        self.buf.drain(..end);
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        let close = get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let framing =
            if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
                Framing::None
            } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
                Framing::Chunked
            } else if let Some(cl) = get("content-length") {
                Framing::Length(
                    cl.trim()
                        .parse()
                        .map_err(|_| RelayError::Malformed(format!("Content-Length {cl:?}")))?,
                )
            } else {
                Framing::Close
            };
        Ok(ResponseHead {
            status,
            reusable: !close && framing != Framing::Close && status != 101,
            headers,
            framing,
        })
    }

    /// Reads a whole body, decoded (for answers the proxy must filter).
    pub async fn read_body(
        &mut self,
        framing: Framing,
        limit: usize,
    ) -> Result<Vec<u8>, RelayError> {
        let mut out = Vec::new();
        match framing {
            Framing::None => {}
            Framing::Length(n) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if n > limit {
                    return Err(RelayError::Malformed("answer too large to filter".into()));
                }
                while self.buf.len() < n {
                    if self.fill().await? == 0 {
                        return Err(RelayError::Malformed("body cut short".into()));
                    }
                }
                out.extend(self.buf.drain(..n));
            }
            Framing::Chunked => {
                let mut scan = ChunkScanner::default();
                loop {
                    let used = scan.scan(&self.buf, Some(&mut out))?;
                    self.buf.drain(..used);
                    if scan.done() {
                        break;
                    }
                    if out.len() > limit {
                        return Err(RelayError::Malformed("answer too large to filter".into()));
                    }
                    if self.fill().await? == 0 {
                        return Err(RelayError::Malformed("body cut short".into()));
                    }
                }
            }
            Framing::Close => loop {
                out.append(&mut self.buf);
                if out.len() > limit {
                    return Err(RelayError::Malformed("answer too large to filter".into()));
                }
                if self.fill().await? == 0 {
                    break;
                }
            },
        }
        Ok(out)
    }

    /// Relays a body to the client as it comes: each read from the daemon
    /// is one write to the client. A `Close` body is re-framed as chunks
    /// (the client keeps its connection); the others keep their framing.
    pub async fn relay_body<W: AsyncWrite + Unpin>(
        &mut self,
        framing: Framing,
        client: &mut W,
    ) -> Result<(), RelayError> {
        match framing {
            Framing::None => Ok(()),
            Framing::Length(mut left) => {
                while left > 0 {
                    if self.buf.is_empty() && self.fill().await? == 0 {
                        return Err(RelayError::Malformed("body cut short".into()));
                    }
                    let take = self
                        .buf
                        .len()
                        .min(usize::try_from(left).unwrap_or(usize::MAX));
                    client
                        .write_all(&self.buf[..take])
                        .await
                        .map_err(RelayError::Client)?;
                    self.buf.drain(..take);
                    left -= take as u64;
                }
                Ok(())
            }
            Framing::Chunked => {
                let mut scan = ChunkScanner::default();
                loop {
                    if self.buf.is_empty() && self.fill().await? == 0 {
                        return Err(RelayError::Malformed("body cut short".into()));
                    }
                    let used = scan.scan(&self.buf, None)?;
                    client
                        .write_all(&self.buf[..used])
                        .await
                        .map_err(RelayError::Client)?;
                    self.buf.drain(..used);
                    if scan.done() {
                        return Ok(());
                    }
                }
            }
            Framing::Close => {
                loop {
                    if self.buf.is_empty() && self.fill().await? == 0 {
                        break;
                    }
                    let mut out = format!("{:x}\r\n", self.buf.len()).into_bytes();
                    out.append(&mut self.buf);
                    out.extend_from_slice(b"\r\n");
                    client.write_all(&out).await.map_err(RelayError::Client)?;
                }
                client
                    .write_all(b"0\r\n\r\n")
                    .await
                    .map_err(RelayError::Client)
            }
        }
    }

    /// Reads the next piece of a chunked body, decoded; `None` at its end.
    pub async fn next_decoded(
        &mut self,
        scan: &mut ChunkScanner,
    ) -> Result<Option<Vec<u8>>, RelayError> {
        if scan.done() {
            return Ok(None);
        }
        let mut out = Vec::new();
        loop {
            if self.buf.is_empty() && self.fill().await? == 0 {
                return Err(RelayError::Malformed("body cut short".into()));
            }
            let used = scan.scan(&self.buf, Some(&mut out))?;
            self.buf.drain(..used);
            if !out.is_empty() || scan.done() {
                return Ok(Some(out));
            }
        }
    }
}

/// Follows chunked framing byte by byte to find where a body ends,
/// optionally copying out the data.
#[derive(Debug, Default)]
pub struct ChunkScanner {
    state: State,
    size: u64,
    digits: u8,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    LastLf,
    Done,
}

impl ChunkScanner {
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes from `bytes` up to the end of the body; returns how many
    /// bytes belong to it.
    pub fn scan(
        &mut self,
        bytes: &[u8],
        mut out: Option<&mut Vec<u8>>,
    ) -> Result<usize, RelayError> {
        let bad = |what: &str| RelayError::Malformed(format!("chunked framing: {what}"));
        let mut i = 0;
        while i < bytes.len() && self.state != State::Done {
            let b = bytes[i];
            match self.state {
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.digits >= 15 {
                            return Err(bad("chunk size too large"));
                        }
                        self.size =
                            self.size * 16 + u64::from((b as char).to_digit(16).unwrap_or(0));
                        self.digits += 1;
                    }
                    b';' if self.digits > 0 => self.state = State::Extension,
                    b'\r' if self.digits > 0 => self.state = State::SizeLf,
                    _ => return Err(bad("bad chunk size")),
                },
                State::Extension => {
                    if b == b'\r' {
                        self.state = State::SizeLf;
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(bad("missing LF"));
                    }
                    self.state = if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                }
                State::Data => {
                    let take =
                        (bytes.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    if let Some(o) = out.as_deref_mut() {
                        o.extend_from_slice(&bytes[i..i + take]);
                    }
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(bad("missing CR after data"));
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(bad("missing LF after data"));
                    }
                    self.state = State::Size;
                    self.digits = 0;
                }
                State::TrailerStart => {
                    self.state = if b == b'\r' {
                        State::LastLf
                    } else {
                        State::TrailerLine
                    };
                }
                State::TrailerLine => {
                    if b == b'\r' {
                        self.state = State::TrailerLf;
                    }
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(bad("missing LF in trailer"));
                    }
                    self.state = State::TrailerStart;
                }
                State::LastLf => {
                    if b != b'\n' {
                        return Err(bad("missing final LF"));
                    }
                    self.state = State::Done;
                }
                State::Done => {}
            }
            i += 1;
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_end_across_any_split() {
        let body = b"5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for split in 0..body.len() {
            let mut s = ChunkScanner::default();
            let mut out = Vec::new();
            let a = s.scan(&body[..split], Some(&mut out)).unwrap();
            assert_eq!(a, split.min(end));
            let b = s.scan(&body[a..], Some(&mut out)).unwrap();
            assert!(s.done());
            assert_eq!(a + b, end, "split {split}");
            assert_eq!(out, b"helloabc");
        }
    }

    #[test]
    fn refuses_broken_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"5\r\nhelloXX",
            b"5\n",
            b"ffffffffffffffff\r\n",
        ] {
            assert!(ChunkScanner::default().scan(bad, None).is_err(), "{bad:?}");
        }
    }
}
