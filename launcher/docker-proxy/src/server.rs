//! Connections: read a request strictly, let the rules turn it into the
//! canonical request the daemon will see (or a denial), forward it, and
//! relay the answer, streams and hijacked connections included.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};

use crate::http1::{self, Framing, HttpError, ReadError, Reader, RequestHead};
use crate::role::{Role, Scope};
use crate::route::{self, BodyKind, RouteError};
use crate::rules::{self, Decision, Denial, Forward, ResponseFilter};
use crate::session::SessionScope;
use crate::upstream::{self, Addr, Sender};

/// Default cap on a request body. Container create bodies are a few KiB.
pub const DEFAULT_MAX_BODY: u64 = 1024 * 1024;

/// An event for the audit log: a denied request.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub session: Option<String>,
    pub role: String,
    pub operation: String,
    pub reason: String,
}

pub type AuditSink = Arc<dyn Fn(AuditEvent) + Send + Sync>;

pub struct Config {
    pub role: Role,
    pub upstream: Addr,
    /// The version every request is rewritten to.
    pub api: (u64, u64),
    pub session: Option<SessionScope>,
    pub max_body: u64,
    pub audit: Option<AuditSink>,
}

impl Config {
    pub fn api_string(&self) -> String {
        format!("{}.{}", self.api.0, self.api.1)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("role {0} serves one session: give --session ID and --workspace DIR")]
    NeedsSession(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

pub enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

impl Listener {
    /// Binds the address; a unix socket is created mode 0600, replacing a
    /// stale socket file (never any other kind of file).
    pub async fn bind(addr: &Addr) -> Result<Listener, ServeError> {
        let err = |source| ServeError::Listen {
            addr: addr.to_string(),
            source,
        };
        match addr {
            Addr::Unix(p) => {
                use std::os::unix::fs::FileTypeExt;
                if let Ok(meta) = std::fs::symlink_metadata(p) {
                    if meta.file_type().is_socket() {
                        let _ = std::fs::remove_file(p);
                    } else {
                        return Err(err(std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            "a file that is not a socket is in the way",
                        )));
                    }
                }
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir).map_err(err)?;
                }
                // Created with the umask's mode (no write bit for others, so
                // nobody else can connect), then narrowed to the owner.
                let l = UnixListener::bind(p).map_err(err)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
                Ok(Listener::Unix(l, p.clone()))
            }
            Addr::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(a).await.map_err(err)?)),
        }
    }

    pub fn local_addr(&self) -> String {
        match self {
            Listener::Unix(_, p) => format!("unix://{}", p.display()),
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| format!("tcp://{a}"))
                .unwrap_or_default(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Accepts connections until `shutdown` resolves.
pub async fn serve(
    listener: Listener,
    cfg: Arc<Config>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    if cfg.role.scope == Scope::Session && cfg.session.is_none() {
        return Err(ServeError::NeedsSession(cfg.role.name.clone()));
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = accept(&listener) => match accepted {
                Ok(conn) => {
                    let cfg = cfg.clone();
                    tokio::spawn(async move {
                        match conn {
                            Conn::Unix(s) => handle(s, cfg).await,
                            Conn::Tcp(s) => {
                                let _ = s.set_nodelay(true);
                                handle(s, cfg).await
                            }
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

enum Conn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

async fn accept(l: &Listener) -> std::io::Result<Conn> {
    match l {
        Listener::Unix(l, _) => Ok(Conn::Unix(l.accept().await?.0)),
        Listener::Tcp(l) => Ok(Conn::Tcp(l.accept().await?.0)),
    }
}

async fn handle<S>(stream: S, cfg: Arc<Config>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (rd, mut wr) = tokio::io::split(stream);
    let mut reader = Reader::new(rd);
    let mut up: Option<Sender> = None;
    loop {
        let (head, framing) = match reader.read_head().await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(ReadError::Http(e)) => {
                refuse_http(&mut wr, &e).await;
                return;
            }
            Err(ReadError::Io(_)) => return,
        };
        match one_request(&cfg, &mut reader, &mut wr, &mut up, head, framing).await {
            Next::KeepAlive => {}
            Next::Close => return,
            Next::Hijacked(upgraded) => {
                let leftover = std::mem::take(&mut reader.buf);
                let client = tokio::io::join(reader.io, wr);
                tunnel(client, upgraded, leftover).await;
                return;
            }
        }
    }
}

enum Next {
    KeepAlive,
    Close,
    Hijacked(hyper::upgrade::Upgraded),
}

async fn refuse_http<W: AsyncWrite + Unpin>(wr: &mut W, e: &HttpError) {
    tracing::info!(status = e.status(), reason = %e, "refused a malformed request");
    let _ = http1::write_json(wr, e.status(), &http1::error_body(&e.to_string()), true).await;
}

async fn one_request<R, W>(
    cfg: &Config,
    reader: &mut Reader<R>,
    wr: &mut W,
    up: &mut Option<Sender>,
    head: RequestHead,
    framing: Framing,
) -> Next
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let keep_alive = head.keep_alive();
    let target = match route::parse(&head.method, &head.target) {
        Ok(t) => t,
        Err(RouteError::Malformed(m)) => {
            let e = HttpError::BadRequest(m);
            refuse_http(wr, &e).await;
            return Next::Close;
        }
        Err(RouteError::Unknown { method, path }) => {
            let denial = Denial::forbidden(format!(
                "{method} {path} is not an operation any rule allows for role {}",
                cfg.role.name
            ));
            return deny(
                cfg,
                wr,
                "unknown",
                denial,
                framing != Framing::None || !keep_alive,
            )
            .await;
        }
    };
    let op = target.endpoint.name();
    if !cfg.role.allows(target.endpoint) {
        let denial = Denial::forbidden(format!("{op} is not allowed for role {}", cfg.role.name));
        return deny(cfg, wr, op, denial, framing != Framing::None || !keep_alive).await;
    }
    if head.header("content-type").is_some_and(|ct| {
        ct.to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    }) {
        // The daemon merges form bodies into its query parameters.
        let e =
            HttpError::BadRequest("form bodies are not accepted by any Docker API route".into());
        refuse_http(wr, &e).await;
        return Next::Close;
    }
    if framing != Framing::None
        && head
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        && wr
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_err()
    {
        return Next::Close;
    }
    let body = match reader.read_body(&framing, cfg.max_body).await {
        Ok(b) => b,
        Err(ReadError::Http(e)) => {
            refuse_http(wr, &e).await;
            return Next::Close;
        }
        Err(ReadError::Io(_)) => return Next::Close,
    };
    if target.endpoint.body() == BodyKind::Empty && !body.is_empty() {
        let e = HttpError::BadRequest(format!("{op} takes no request body"));
        refuse_http(wr, &e).await;
        return Next::Close;
    }

    let sender = match upstream_sender(cfg, up).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "daemon unreachable");
            let _ = http1::write_json(wr, 502, &http1::error_body(&e.to_string()), true).await;
            return Next::Close;
        }
    };
    let decision = rules::check(cfg, sender, &head, target, body).await;
    let fwd = match decision {
        Decision::Forward(f) => f,
        Decision::Deny(d) => return deny(cfg, wr, op, d, !keep_alive).await,
        Decision::Fail(e) => {
            tracing::warn!(error = %e, operation = op, "lookup at the daemon failed");
            let _ = http1::write_json(wr, 502, &http1::error_body(&e.to_string()), true).await;
            return Next::Close;
        }
    };
    tracing::debug!(operation = op, method = %fwd.method, "forwarding");
    match forward(cfg, sender, &head, fwd, wr).await {
        Ok(Some(upgraded)) => Next::Hijacked(upgraded),
        Ok(None) if keep_alive => Next::KeepAlive,
        Ok(None) => Next::Close,
        Err(e) => {
            tracing::debug!(error = %e, operation = op, "forwarding failed");
            *up = None;
            Next::Close
        }
    }
}

async fn upstream_sender<'a>(
    cfg: &Config,
    up: &'a mut Option<Sender>,
) -> Result<&'a mut Sender, upstream::UpstreamError> {
    if let Some(s) = up.as_mut()
        && (s.is_closed() || s.ready().await.is_err())
    {
        *up = None;
    }
    if up.is_none() {
        *up = Some(upstream::connect(&cfg.upstream).await?);
    }
    Ok(up.as_mut().expect("just set"))
}

async fn deny<W: AsyncWrite + Unpin>(
    cfg: &Config,
    wr: &mut W,
    op: &str,
    d: Denial,
    close: bool,
) -> Next {
    let message = format!("denied by agentctl: {}", d.reason);
    tracing::info!(operation = op, role = %cfg.role.name, reason = %d.reason, "denied");
    if let Some(audit) = &cfg.audit {
        audit(AuditEvent {
            session: cfg.session.as_ref().map(|s| s.id.clone()),
            role: cfg.role.name.clone(),
            operation: op.to_string(),
            reason: d.reason.clone(),
        });
    }
    // A body left unread would be parsed as the next request: close instead.
    let _ = http1::write_json(wr, d.status, &http1::error_body(&message), close).await;
    if close { Next::Close } else { Next::KeepAlive }
}

/// Headers of the daemon's answer that are about this hop, not the content.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "content-length"
            | "upgrade"
            | "trailer"
            | "te"
    )
}

async fn forward<W: AsyncWrite + Unpin>(
    cfg: &Config,
    sender: &mut Sender,
    head: &RequestHead,
    fwd: Forward,
    wr: &mut W,
) -> Result<Option<hyper::upgrade::Upgraded>, Box<dyn std::error::Error + Send + Sync>> {
    let api = cfg.api_string();
    let segs: Vec<&str> = fwd.segments.iter().map(String::as_str).collect();
    let uri = route::build_target(&api, &segs, &fwd.query);
    let mut req = http::Request::builder()
        .method(fwd.method.as_str())
        .uri(uri)
        .header("host", "docker");
    if let Some(ua) = head.header("user-agent") {
        req = req.header("user-agent", ua);
    }
    if let Some(auth) = &fwd.registry_auth {
        req = req.header("x-registry-auth", auth);
    }
    let body = match fwd.body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Bytes::from(b)
        }
        None => Bytes::new(),
    };
    if fwd.upgrade {
        req = req.header("connection", "Upgrade").header("upgrade", "tcp");
    }
    let req = req.body(Full::new(body))?;
    sender.ready().await?;
    let mut resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();

    let mut out = format!("HTTP/1.1 {status} {}\r\n", http1::reason(status));
    for (name, value) in resp.headers() {
        let name = name.as_str();
        if hop_by_hop(name) {
            continue;
        }
        let value = if name == "api-version" {
            api.clone()
        } else {
            match value.to_str() {
                Ok(v) => v.to_string(),
                Err(_) => continue,
            }
        };
        out.push_str(&format!("{}: {value}\r\n", canonical_header(name)));
    }

    if status == 101 {
        out.push_str("Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n");
        wr.write_all(out.as_bytes()).await?;
        wr.flush().await?;
        let upgraded = hyper::upgrade::on(&mut resp).await?;
        return Ok(Some(upgraded));
    }

    let no_body = head.method == "HEAD" || status == 204 || status == 304;
    if no_body {
        if let Some(cl) = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
        {
            out.push_str(&format!("Content-Length: {cl}\r\n"));
        }
        out.push_str("\r\n");
        wr.write_all(out.as_bytes()).await?;
        wr.flush().await?;
        return Ok(None);
    }

    if fwd.filter != ResponseFilter::None && status == 200 && fwd.filter != ResponseFilter::Events {
        let body = resp.into_body().collect().await?.to_bytes();
        let filtered = rules::filter_response(cfg, &fwd.filter, &body);
        out.push_str(&format!("Content-Length: {}\r\n\r\n", filtered.len()));
        wr.write_all(out.as_bytes()).await?;
        wr.write_all(&filtered).await?;
        wr.flush().await?;
        return Ok(None);
    }

    let length = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let filter_events = fwd.filter == ResponseFilter::Events && status == 200;
    let chunked = length.is_none() || filter_events;
    if chunked {
        out.push_str("Transfer-Encoding: chunked\r\n\r\n");
    } else {
        out.push_str(&format!("Content-Length: {}\r\n\r\n", length.unwrap_or(0)));
    }
    wr.write_all(out.as_bytes()).await?;
    wr.flush().await?;

    let mut body = resp.into_body();
    let mut events = rules::EventFilter::default();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let data = if filter_events {
            Bytes::from(events.push(cfg, &data))
        } else {
            data
        };
        if data.is_empty() {
            continue;
        }
        if chunked {
            wr.write_all(format!("{:x}\r\n", data.len()).as_bytes())
                .await?;
            wr.write_all(&data).await?;
            wr.write_all(b"\r\n").await?;
        } else {
            wr.write_all(&data).await?;
        }
        // Streams (logs -f, events, pull progress) must reach the client as
        // they come.
        wr.flush().await?;
    }
    if chunked {
        wr.write_all(b"0\r\n\r\n").await?;
        wr.flush().await?;
    }
    Ok(None)
}

fn canonical_header(name: &str) -> String {
    match name {
        "api-version" => "Api-Version".into(),
        "ostype" => "Ostype".into(),
        _ => name
            .split('-')
            .map(|p| {
                let mut c = p.chars();
                match c.next() {
                    Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                    None => String::new(),
                }
            })
            .collect::<Vec<_>>()
            .join("-"),
    }
}

async fn tunnel<C>(mut client: C, upgraded: hyper::upgrade::Upgraded, leftover: Vec<u8>)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mut daemon = TokioIo::new(upgraded);
    if !leftover.is_empty() && daemon.write_all(&leftover).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut daemon).await;
}
