//! The DNS stub inside an `allowlist` sandbox. It answers only names the
//! allowlist could allow, each with a fake address of its own that leads
//! to the proxy's transparent listeners (which map it back to the name);
//! every other name gets REFUSED, and nothing is ever forwarded anywhere:
//! no query of the sandbox reaches a real resolver, so DNS carries no
//! tunnel out.
//!
//! A: the name's fake IPv4 (from a /16 the backend chose, 127.1.0.0/16
//! in a container, the same for the name for the sandbox's life). AAAA and other types of an allowed name: no data
//! (NOERROR, empty), so clients fall back to IPv4. Anything malformed,
//! more than one question, or not a standard query: FORMERR or NOTIMP.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use policy::egress::{Allowlist, Host, normalize_host};

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
const RCODE_FORMERR: u8 = 1;
const RCODE_NOTIMP: u8 = 4;
const RCODE_REFUSED: u8 = 5;
/// Seconds: short, so a fake address is asked for again soon, long
/// enough that a client does not ask on every connection.
const TTL: u32 = 60;

/// Where fake addresses come from unless a backend says otherwise: in a
/// container's own network namespace every 127.0.0.0/8 address is local,
/// so the transparent listeners on 0.0.0.0 receive them.
pub const DEFAULT_FAKE_NET: Ipv4Addr = Ipv4Addr::new(127, 1, 0, 0);

/// Names to fake addresses and back, shared with the transparent
/// listeners.
pub struct FakeIps {
    /// The /16 the addresses come from.
    net: u32,
    by_name: HashMap<String, Ipv4Addr>,
    by_ip: HashMap<Ipv4Addr, String>,
}

impl Default for FakeIps {
    fn default() -> FakeIps {
        FakeIps::from_net(DEFAULT_FAKE_NET)
    }
}

impl FakeIps {
    /// Addresses from the /16 that `net` starts (its last two octets are
    /// ignored).
    pub fn from_net(net: Ipv4Addr) -> FakeIps {
        FakeIps {
            net: u32::from(net) & 0xffff_0000,
            by_name: HashMap::new(),
            by_ip: HashMap::new(),
        }
    }

    /// The name's address, made on first use: 127.1.0.1, 127.1.0.2, … (in
    /// the default /16). None once 65,534 names have one.
    pub fn assign(&mut self, name: &str) -> Option<Ipv4Addr> {
        if let Some(ip) = self.by_name.get(name) {
            return Some(*ip);
        }
        let n = u32::try_from(self.by_name.len()).ok()? + 1;
        if n >= 0xffff {
            return None;
        }
        let ip = Ipv4Addr::from(self.net | n);
        self.by_name.insert(name.to_string(), ip);
        self.by_ip.insert(ip, name.to_string());
        Some(ip)
    }

    /// The name a fake address stands for.
    pub fn name_of(&self, ip: Ipv4Addr) -> Option<&str> {
        self.by_ip.get(&ip).map(String::as_str)
    }
}

pub struct Stub {
    pub allow: Allowlist,
    /// Shared with the transparent listeners, which read back the name a
    /// fake address stands for.
    pub fakes: std::sync::Arc<Mutex<FakeIps>>,
}

/// What the stub did with a query, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Answered(String),
    Refused(String),
    Malformed,
}

impl Stub {
    pub fn new(allow: Allowlist) -> Stub {
        Stub::with_fake_net(allow, DEFAULT_FAKE_NET)
    }

    /// A stub whose fake addresses come from the /16 at `net` (a VM's
    /// guest cannot send 127.0.0.0/8 out of itself).
    pub fn with_fake_net(allow: Allowlist, net: Ipv4Addr) -> Stub {
        Stub {
            allow,
            fakes: std::sync::Arc::new(Mutex::new(FakeIps::from_net(net))),
        }
    }

    /// The answer to one query message (UDP payload or a TCP message
    /// without its length). None when the bytes are not even a header
    /// (nothing to answer to).
    pub fn answer(&self, query: &[u8]) -> Option<(Vec<u8>, Outcome)> {
        if query.len() < 12 {
            return None;
        }
        let id = [query[0], query[1]];
        let flags = u16::from_be_bytes([query[2], query[3]]);
        let qr = flags & 0x8000 != 0;
        let opcode = (flags >> 11) & 0xf;
        let qd = u16::from_be_bytes([query[4], query[5]]);
        if qr {
            // A response sent to the stub: not a question.
            return None;
        }
        let rd = flags & 0x0100 != 0;
        let reply = |rcode: u8, question: Option<&[u8]>, answer: Option<Ipv4Addr>| {
            let mut out = Vec::with_capacity(64);
            out.extend_from_slice(&id);
            // QR, opcode echoed, AA (the stub is the authority on what
            // the sandbox may resolve), RD echoed, RA.
            let f: u16 = 0x8000
                | (opcode << 11)
                | 0x0400
                | if rd { 0x0100 } else { 0 }
                | 0x0080
                | u16::from(rcode);
            out.extend_from_slice(&f.to_be_bytes());
            out.extend_from_slice(&u16::from(question.is_some()).to_be_bytes());
            out.extend_from_slice(&u16::from(answer.is_some()).to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0]);
            if let Some(q) = question {
                out.extend_from_slice(q);
            }
            if let Some(ip) = answer {
                // A pointer to the question's name at offset 12.
                out.extend_from_slice(&[0xc0, 12]);
                out.extend_from_slice(&TYPE_A.to_be_bytes());
                out.extend_from_slice(&CLASS_IN.to_be_bytes());
                out.extend_from_slice(&TTL.to_be_bytes());
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&ip.octets());
            }
            out
        };
        if opcode != 0 {
            return Some((reply(RCODE_NOTIMP, None, None), Outcome::Malformed));
        }
        if qd != 1 {
            return Some((reply(RCODE_FORMERR, None, None), Outcome::Malformed));
        }
        let Some((name, qtype, qclass, end)) = question(query) else {
            return Some((reply(RCODE_FORMERR, None, None), Outcome::Malformed));
        };
        let q = &query[12..end];
        // The name as a resolver would read it; anything odd is refused.
        let allowed = match normalize_host(&name) {
            Ok(Host::Name(n)) if qclass == CLASS_IN && self.allow.knows_name(&n) => Some(n),
            _ => None,
        };
        let Some(n) = allowed else {
            return Some((reply(RCODE_REFUSED, Some(q), None), Outcome::Refused(name)));
        };
        if qtype != TYPE_A {
            return Some((reply(0, Some(q), None), Outcome::Answered(n)));
        }
        let ip = self.fakes.lock().ok()?.assign(&n);
        match ip {
            Some(ip) => Some((reply(0, Some(q), Some(ip)), Outcome::Answered(n))),
            None => Some((
                reply(RCODE_REFUSED, Some(q), None),
                Outcome::Refused(format!("{n} (no fake address left)")),
            )),
        }
    }
}

/// The single question: its name (dotted, as sent), type, class and where
/// it ends. Compression pointers are refused (a query has no earlier
/// name to point at); so are labels over 63 bytes and names over 255.
fn question(msg: &[u8]) -> Option<(String, u16, u16, usize)> {
    let mut at = 12;
    let mut labels: Vec<String> = Vec::new();
    let mut wire_len = 0usize;
    loop {
        let len = *msg.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        wire_len += len + 1;
        if wire_len > 255 {
            return None;
        }
        let label = msg.get(at..at + len)?;
        // Bytes a host name label may hold; a dot inside a label would
        // read as two labels later.
        if !label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return None;
        }
        labels.push(String::from_utf8(label.to_vec()).ok()?);
        at += len;
    }
    if labels.is_empty() {
        return None;
    }
    let t = msg.get(at..at + 4)?;
    let qtype = u16::from_be_bytes([t[0], t[1]]);
    let qclass = u16::from_be_bytes([t[2], t[3]]);
    Some((labels.join("."), qtype, qclass, at + 4))
}

/// Serves UDP queries on `socket` until the task is dropped; `on_refused`
/// hears every refused name (the audit trail).
pub async fn serve_udp(
    socket: tokio::net::UdpSocket,
    stub: std::sync::Arc<Stub>,
    on_refused: std::sync::Arc<dyn Fn(String) + Send + Sync>,
) {
    let mut buf = vec![0u8; 1500];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some((reply, outcome)) = stub.answer(&buf[..n]) {
            if let Outcome::Refused(name) = outcome {
                on_refused(name);
            }
            let _ = socket.send_to(&reply, from).await;
        }
    }
}

#[cfg(test)]
mod tests;
