//! The server name a TLS client asks for, read from its ClientHello
//! without terminating TLS: the proxy checks it against the name the
//! tunnel was allowed for (a CONNECT to an allowed name followed by a
//! ClientHello for another is domain fronting).
//!
//! The ClientHello may arrive in pieces (TCP segments) and span several
//! TLS records (a known trick against one-read filters): [`parse`] is fed
//! everything read so far and says whether it needs more. Anything that is
//! not one well-formed ClientHello with exactly one host name, and no
//! Encrypted Client Hello (whose outer name is not the real one), is
//! refused.

/// Refuse a ClientHello bigger than this (real ones are a few hundred
/// bytes to a few KiB; post-quantum key shares stay well under).
pub const MAX_HELLO: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// Not all of it has arrived: read more and ask again.
    NeedMore,
    /// A ClientHello naming this host (as sent: not yet normalised).
    Name(String),
    /// Refused, with why.
    Refused(&'static str),
}

const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ECH: u16 = 0xfe0d;
const EXT_ECH_OUTER: u16 = 0xfd00;

/// Reads the ClientHello from the first bytes of a connection.
pub fn parse(buf: &[u8]) -> Hello {
    // Reassemble the handshake layer from as many records as it takes.
    let mut handshake = Vec::new();
    let mut at = 0;
    loop {
        if buf.len() < at + 5 {
            return more_or_refuse(buf.len());
        }
        if buf[at] != HANDSHAKE {
            return Hello::Refused("not a TLS handshake");
        }
        if buf[at + 1] != 3 {
            return Hello::Refused("not a TLS record");
        }
        let len = u16::from_be_bytes([buf[at + 3], buf[at + 4]]) as usize;
        if len == 0 || len > 16384 + 256 {
            return Hello::Refused("a TLS record of a bad length");
        }
        if buf.len() < at + 5 + len {
            return more_or_refuse(buf.len());
        }
        handshake.extend_from_slice(&buf[at + 5..at + 5 + len]);
        at += 5 + len;
        if handshake.len() >= 4 {
            if handshake[0] != CLIENT_HELLO {
                return Hello::Refused("the first handshake message is not a ClientHello");
            }
            let body = u32::from_be_bytes([0, handshake[1], handshake[2], handshake[3]]) as usize;
            if body + 4 > MAX_HELLO {
                return Hello::Refused("a ClientHello too large");
            }
            if handshake.len() >= body + 4 {
                return client_hello(&handshake[4..body + 4]);
            }
        }
    }
}

fn more_or_refuse(read: usize) -> Hello {
    if read > MAX_HELLO + 5 * 8 {
        Hello::Refused("a ClientHello too large")
    } else {
        Hello::NeedMore
    }
}

/// A reader over a byte slice that refuses to run past its end.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()? as usize;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
}

fn client_hello(body: &[u8]) -> Hello {
    let mut c = Cursor(body);
    let fields = (|| {
        c.take(2)?; // legacy_version
        c.take(32)?; // random
        c.vec8()?; // legacy_session_id
        c.vec16()?; // cipher_suites
        c.vec8()?; // legacy_compression_methods
        Some(())
    })();
    if fields.is_none() {
        return Hello::Refused("a truncated ClientHello");
    }
    if c.0.is_empty() {
        return Hello::Refused("a ClientHello without a server name");
    }
    let Some(exts) = c.vec16() else {
        return Hello::Refused("a truncated ClientHello");
    };
    if !c.0.is_empty() {
        return Hello::Refused("bytes after a ClientHello's extensions");
    }
    let mut e = Cursor(exts);
    let mut name = None;
    let mut seen = Vec::new();
    while !e.0.is_empty() {
        let (Some(kind), Some(data)) = (e.u16(), e.vec16()) else {
            return Hello::Refused("a truncated ClientHello extension");
        };
        // The same extension twice is illegal, and two server names would
        // mean one thing to the proxy and another to the server.
        if seen.contains(&kind) {
            return Hello::Refused("a ClientHello extension repeated");
        }
        seen.push(kind);
        match kind {
            EXT_ECH | EXT_ECH_OUTER => {
                return Hello::Refused(
                    "an Encrypted Client Hello (its outer server name is not the one it asks for)",
                );
            }
            EXT_SERVER_NAME => {
                let mut s = Cursor(data);
                let Some(list) = s.vec16() else {
                    return Hello::Refused("a malformed server name");
                };
                if !s.0.is_empty() {
                    return Hello::Refused("a malformed server name");
                }
                let mut l = Cursor(list);
                let mut names = Vec::new();
                while !l.0.is_empty() {
                    let (Some(t), Some(n)) = (l.u8(), l.vec16()) else {
                        return Hello::Refused("a malformed server name");
                    };
                    if t != 0 {
                        return Hello::Refused("a server name that is not a host name");
                    }
                    names.push(n);
                }
                if names.len() != 1 {
                    return Hello::Refused("not exactly one server name");
                }
                match std::str::from_utf8(names[0]) {
                    Ok(n) if !n.is_empty() && n.is_ascii() => name = Some(n.to_string()),
                    _ => return Hello::Refused("a server name that is not ASCII"),
                }
            }
            _ => {}
        }
    }
    match name {
        Some(n) => Hello::Name(n),
        None => Hello::Refused("a ClientHello without a server name"),
    }
}

#[cfg(test)]
pub(crate) mod tests;
