//! The HTTP proxy the sandbox's proxy variables point at: `CONNECT
//! host:port` tunnels and absolute-form `http://` requests, each decided
//! by `policy::egress` on the name before any lookup, then on every
//! address the resolver gives; the proxy dials exactly an address it
//! checked. A tunnel to port 443 must then open with a ClientHello whose
//! server name is the allowed name (no domain fronting, no nameless TLS).
//!
//! A refusal is `403` with `X-Agentctl-Denied: <why>` and a body that says
//! which rule would allow it; every refusal is also reported to the
//! caller's [`Config::on_denied`] (the session's audit trail).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use policy::egress::{Allowlist, Decision, Host, normalize_host};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::sni::{self, Hello};

/// Names to addresses, for the proxy's side of the wall.
pub trait Resolve: Send + Sync {
    fn resolve<'a>(
        &'a self,
        name: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send + 'a>>;
}

/// The host's resolver (getaddrinfo through tokio).
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(
        &'a self,
        name: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send + 'a>> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((name, 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// A refused connection, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The host as asked for (normalised when it could be).
    pub host: String,
    pub port: u16,
    pub reason: String,
}

pub struct Config {
    pub allow: Allowlist,
    /// This host's own addresses, never reached through a name; read at
    /// each decision, since an interface can gain an address while a
    /// session runs.
    pub host_addresses: fn() -> Vec<IpAddr>,
    pub resolver: Arc<dyn Resolve>,
    /// Ports whose tunnels must open with a ClientHello naming the allowed
    /// name (443, and any other the caller knows to be TLS).
    pub tls_ports: Vec<u16>,
    /// How long a client has to send its request head or its ClientHello.
    pub handshake_timeout: Duration,
    pub on_denied: Arc<dyn Fn(Denial) + Send + Sync>,
    /// Connections open at once, shared by every listener of a session:
    /// past it a new one is closed at once (and refused on record), so a
    /// flood of connections cannot take the proxy's descriptors.
    pub tunnels: Arc<tokio::sync::Semaphore>,
}

/// Connections a session may hold open at once (see [`Config::tunnels`]).
pub const MAX_TUNNELS: usize = 512;

/// Largest request head read (the request line and headers).
const MAX_HEAD: usize = 16 * 1024;

/// Serves connections from `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, cfg: Arc<Config>) {
    accept_each(listener, cfg, "http", |conn, cfg| async move {
        handle(conn, &cfg).await
    })
    .await
}

/// Runs `serve_one` on a task of its own for every connection `listener`
/// accepts, until the task is dropped; what a connection fails with is
/// logged under `what`.
async fn accept_each<F, Fut>(
    listener: TcpListener,
    cfg: Arc<Config>,
    what: &'static str,
    serve_one: F,
) where
    F: Fn(TcpStream, Arc<Config>) -> Fut,
    Fut: Future<Output = std::io::Result<()>> + Send + 'static,
{
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = cfg.tunnels.clone().try_acquire_owned() else {
            (cfg.on_denied)(Denial {
                host: String::new(),
                port: conn.local_addr().map_or(0, |a| a.port()),
                reason: format!(
                    "more than {} connections open at once; this one was closed",
                    MAX_TUNNELS
                ),
            });
            drop(conn);
            continue;
        };
        let fut = serve_one(conn, cfg.clone());
        tokio::spawn(async move {
            if let Err(e) = fut.await {
                tracing::debug!("egress ({what}): {e}");
            }
            drop(permit);
        });
    }
}

async fn handle(mut client: TcpStream, cfg: &Config) -> std::io::Result<()> {
    let head = match tokio::time::timeout(cfg.handshake_timeout, read_head(&mut client)).await {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) => {
            return respond(
                &mut client,
                400,
                "a request head too large or cut short",
                None,
            )
            .await;
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(()),
    };
    let (head_len, rest) = head;
    let text = String::from_utf8_lossy(&rest[..head_len]).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return respond(&mut client, 400, "not an HTTP request line", None).await;
    };
    if !version.starts_with("HTTP/1.") {
        return respond(&mut client, 400, "HTTP/1.x only", None).await;
    }
    if method == "CONNECT" {
        let Some((host, port)) = split_authority(target) else {
            return respond(&mut client, 400, "CONNECT needs host:port", None).await;
        };
        let body_start = rest[head_len..].to_vec();
        return connect(client, cfg, &host, port, body_start, Via::Http).await;
    }
    // Absolute-form: http://authority/path.
    let Some(after) = target.strip_prefix("http://") else {
        return respond(
            &mut client,
            400,
            "only CONNECT and absolute http:// requests are proxied",
            None,
        )
        .await;
    };
    let (authority, path) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, "/"),
    };
    let (host, port) = match split_authority(authority) {
        Some(hp) => hp,
        None => (authority.to_string(), 80),
    };
    let upstream = match open(cfg, &host, port).await {
        Ok(u) => u,
        Err(why) => return refuse(&mut client, cfg, &host, port, &why).await,
    };
    let (mut up, _) = upstream;
    // The request again, in origin form, with the Host the decision was
    // made on and nothing for the proxy: one request per connection.
    let mut out = format!("{method} {path} {version}\r\nHost: {authority}\r\n");
    for line in lines {
        if line.is_empty() {
            break;
        }
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "host" | "connection" | "proxy-connection" | "proxy-authorization" | "keep-alive"
        ) {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    up.write_all(out.as_bytes()).await?;
    crate::relay::relay_after(&mut client, &mut up, &rest[head_len..]).await
}

/// How a client asked for its connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Http,
    Socks,
    Transparent,
}

/// A SOCKS5 reply with this code and an empty bound address.
fn socks_reply(code: u8) -> [u8; 10] {
    [5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

/// Serves SOCKS5 (`CONNECT` only, no authentication) on `listener`: the
/// same decisions as the HTTP proxy's CONNECT. `BIND` and `UDP ASSOCIATE`
/// are refused (no UDP leaves the sandbox).
pub async fn serve_socks(listener: TcpListener, cfg: Arc<Config>) {
    accept_each(listener, cfg, "socks", |conn, cfg| async move {
        socks(conn, &cfg).await
    })
    .await
}

async fn socks(mut client: TcpStream, cfg: &Config) -> std::io::Result<()> {
    let request = tokio::time::timeout(cfg.handshake_timeout, async {
        let mut head = [0u8; 2];
        client.read_exact(&mut head).await?;
        if head[0] != 5 {
            return Ok(None);
        }
        let mut methods = vec![0u8; head[1] as usize];
        client.read_exact(&mut methods).await?;
        if !methods.contains(&0) {
            client.write_all(&[5, 0xff]).await?;
            return Ok(None);
        }
        client.write_all(&[5, 0]).await?;
        let mut req = [0u8; 4];
        client.read_exact(&mut req).await?;
        if req[0] != 5 {
            return Ok(None);
        }
        let host = match req[3] {
            1 => {
                let mut a = [0u8; 4];
                client.read_exact(&mut a).await?;
                std::net::Ipv4Addr::from(a).to_string()
            }
            3 => {
                let mut n = [0u8; 1];
                client.read_exact(&mut n).await?;
                let mut name = vec![0u8; n[0] as usize];
                client.read_exact(&mut name).await?;
                String::from_utf8_lossy(&name).into_owned()
            }
            4 => {
                let mut a = [0u8; 16];
                client.read_exact(&mut a).await?;
                format!("[{}]", std::net::Ipv6Addr::from(a))
            }
            _ => {
                client.write_all(&socks_reply(8)).await?;
                return Ok(None);
            }
        };
        let mut p = [0u8; 2];
        client.read_exact(&mut p).await?;
        if req[1] != 1 {
            // Only CONNECT: no BIND, no UDP ASSOCIATE.
            client.write_all(&socks_reply(7)).await?;
            return Ok(None);
        }
        std::io::Result::Ok(Some((host, u16::from_be_bytes(p))))
    })
    .await;
    let Ok(Ok(Some((host, port)))) = request else {
        return Ok(());
    };
    connect(client, cfg, &host, port, Vec::new(), Via::Socks).await
}

/// `CONNECT host:port`: decided, dialled, then (port 443) the ClientHello
/// checked before a byte of it goes upstream.
async fn connect(
    mut client: TcpStream,
    cfg: &Config,
    host: &str,
    port: u16,
    mut early: Vec<u8>,
    via: Via,
) -> std::io::Result<()> {
    let (mut up, name) = match open(cfg, host, port).await {
        Ok(u) => u,
        Err(why) if via == Via::Http => return refuse(&mut client, cfg, host, port, &why).await,
        Err(why) => {
            (cfg.on_denied)(Denial {
                host: host.to_string(),
                port,
                reason: why,
            });
            // SOCKS says "not allowed by the ruleset"; a transparent
            // connection speaks no protocol of ours and is closed.
            if via == Via::Socks {
                client.write_all(&socks_reply(2)).await?;
            }
            return Ok(());
        }
    };
    match via {
        Via::Http => {
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await?
        }
        Via::Socks => client.write_all(&socks_reply(0)).await?,
        Via::Transparent => {}
    }
    if cfg.tls_ports.contains(&port)
        && let Some(name) = name
    {
        // Read until the ClientHello is whole, within the deadline.
        let checked = tokio::time::timeout(cfg.handshake_timeout, async {
            let mut chunk = [0u8; 4096];
            loop {
                match sni::parse(&early) {
                    Hello::NeedMore => {}
                    verdict => return Ok(verdict),
                }
                let n = client.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(Hello::Refused("the client closed before its ClientHello"));
                }
                early.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        let verdict: std::io::Result<Hello> =
            checked.unwrap_or(Ok(Hello::Refused("no ClientHello within the deadline")));
        let why = match verdict? {
            Hello::Name(sent) => match normalize_host(&sent) {
                Ok(Host::Name(n)) if n == name => None,
                _ => Some(format!(
                    "the TLS server name {sent:?} is not {name:?}, which the tunnel was allowed for"
                )),
            },
            Hello::Refused(r) => Some(format!(
                "{r} (a tunnel to {name}:{port} must open with a ClientHello naming it)"
            )),
            Hello::NeedMore => Some("an incomplete ClientHello".into()),
        };
        if let Some(reason) = why {
            (cfg.on_denied)(Denial {
                host: name,
                port,
                reason,
            });
            return Ok(());
        }
    }
    crate::relay::relay_after(&mut client, &mut up, &early).await
}

/// Serves the transparent listeners: connections a tool made straight to
/// an address the DNS stub gave it (a fake one, 127.1.0.0/16), for tools
/// that ignore proxy variables. The address it dialled names the host
/// (through `fakes`); the port is the listener's. An address the stub never
/// gave is refused like any IP target.
pub async fn serve_transparent(
    listener: TcpListener,
    cfg: Arc<Config>,
    fakes: Arc<std::sync::Mutex<crate::dns::FakeIps>>,
) {
    accept_each(listener, cfg, "transparent", move |conn, cfg| {
        let fakes = fakes.clone();
        async move {
            // No address of its own: the connection is dropped, refused.
            let local = conn.local_addr()?;
            let host = match local.ip() {
                IpAddr::V4(v4) => fakes
                    .lock()
                    .ok()
                    .and_then(|f| f.name_of(v4).map(str::to_string)),
                IpAddr::V6(_) => None,
            }
            .unwrap_or_else(|| local.ip().to_string());
            connect(
                conn,
                &cfg,
                &host,
                local.port(),
                Vec::new(),
                Via::Transparent,
            )
            .await
        }
    })
    .await
}

/// Decides `host:port`, resolves a name and dials the first address that
/// passes; gives back the connection and the normalised name (None for an
/// address target).
async fn open(cfg: &Config, raw: &str, port: u16) -> Result<(TcpStream, Option<String>), String> {
    let host = normalize_host(raw)?;
    if let Decision::Deny(why) = cfg.allow.decide(&host, port) {
        return Err(why);
    }
    match host {
        Host::Ip(ip) => TcpStream::connect(SocketAddr::new(ip, port))
            .await
            .map(|s| (s, None))
            .map_err(|e| format!("{ip}:{port} cannot be reached: {e}")),
        Host::Name(name) => {
            let addrs = cfg
                .resolver
                .resolve(&name)
                .await
                .map_err(|e| format!("{name} does not resolve: {e}"))?;
            let mut last = format!("{name} resolved to no address");
            let own = (cfg.host_addresses)();
            for ip in addrs {
                match cfg.allow.decide_resolved(&name, ip, port, &own) {
                    Decision::Deny(why) => last = why,
                    Decision::Allow(_) => {
                        match TcpStream::connect(SocketAddr::new(ip, port)).await {
                            Ok(s) => return Ok((s, Some(name))),
                            Err(e) => last = format!("{name} ({ip}:{port}) cannot be reached: {e}"),
                        }
                    }
                }
            }
            Err(last)
        }
    }
}

async fn refuse(
    client: &mut TcpStream,
    cfg: &Config,
    host: &str,
    port: u16,
    why: &str,
) -> std::io::Result<()> {
    (cfg.on_denied)(Denial {
        host: match normalize_host(host) {
            Ok(Host::Name(n)) => n,
            Ok(Host::Ip(ip)) => ip.to_string(),
            Err(_) => host.to_string(),
        },
        port,
        reason: why.to_string(),
    });
    respond(client, 403, why, Some(why)).await
}

async fn respond(
    client: &mut TcpStream,
    code: u16,
    body: &str,
    denied: Option<&str>,
) -> std::io::Result<()> {
    let reason = match code {
        400 => "Bad Request",
        _ => "Forbidden",
    };
    // A header value holds no line break, whatever the reason says.
    let header = denied
        .map(|d| format!("X-Agentctl-Denied: {}\r\n", d.replace(['\r', '\n'], " ")))
        .unwrap_or_default();
    let body = format!("agentctl egress: {body}\n");
    let resp = format!(
        "HTTP/1.1 {code} {reason}\r\n{header}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(resp.as_bytes()).await?;
    client.shutdown().await
}

/// Reads up to the end of the request head; gives its length and every
/// byte read (the head and what followed it), or None if it is too long
/// or the client stopped.
async fn read_head(client: &mut TcpStream) -> std::io::Result<Option<(usize, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some((i + 4, buf)));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `host:port` or `[v6]:port`; the port must be there and be a number.
fn split_authority(a: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(r) = a.strip_prefix('[') {
        let (h, p) = r.split_once("]:")?;
        (format!("[{h}]"), p)
    } else {
        let (h, p) = a.rsplit_once(':')?;
        (h.to_string(), p)
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    Some((host, port))
}

#[cfg(test)]
mod tests;
