//! Connections: read a request strictly, let the rules turn it into the
//! canonical request the daemon will see (or a denial), forward it, and
//! relay the answer, streams and hijacked connections included.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};

use crate::config::{AuditEvent, Config};
use crate::http1::{self, Framing, HttpError, ReadError, Reader, RequestHead};
use crate::metrics::Verdict;
use crate::relay::{self, RelayError};
use crate::role::Scope;
use crate::route::{self, BodyKind, RouteError};
use crate::rules::{self, Decision, Denial, Forward, ResponseFilter};
use crate::upstream::{self, Addr};

/// Default cap on a request body. Container create bodies are a few KiB.
pub const DEFAULT_MAX_BODY: u64 = 1024 * 1024;

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
                            Conn::Unix(s) => {
                                let (r, w) = s.into_split();
                                handle(r, w, cfg).await
                            }
                            Conn::Tcp(s) => {
                                let _ = s.set_nodelay(true);
                                let (r, w) = s.into_split();
                                handle(r, w, cfg).await
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

pub(crate) enum Conn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

pub(crate) async fn accept(l: &Listener) -> std::io::Result<Conn> {
    match l {
        Listener::Unix(l, _) => Ok(Conn::Unix(l.accept().await?.0)),
        Listener::Tcp(l) => Ok(Conn::Tcp(l.accept().await?.0)),
    }
}

async fn handle<R, W>(rd: R, mut wr: W, cfg: Arc<Config>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut reader = Reader::new(rd);
    let mut up: Option<relay::Conn> = None;
    let mut lookups = upstream::Lazy::new(cfg.upstream.clone());
    loop {
        let (head, framing) = match reader.read_head().await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(ReadError::Http(e)) => {
                refuse_http(&cfg, &mut wr, "unknown", &e).await;
                return;
            }
            Err(ReadError::Io(_)) => return,
        };
        match one_request(
            &cfg,
            &mut reader,
            &mut wr,
            &mut up,
            &mut lookups,
            head,
            framing,
        )
        .await
        {
            Next::KeepAlive => {}
            Next::Close => return,
            Next::Hijacked => {
                let Some(daemon) = up.take() else { return };
                let leftover = std::mem::take(&mut reader.buf);
                let client = tokio::io::join(reader.io, wr);
                tunnel(client, daemon, leftover).await;
                return;
            }
        }
    }
}

enum Next {
    KeepAlive,
    Close,
    Hijacked,
}

/// Refuses a request that no rule got to read; counted as denied.
async fn refuse_http<W: AsyncWrite + Unpin>(
    cfg: &Config,
    wr: &mut W,
    op: &'static str,
    e: &HttpError,
) {
    cfg.metrics.count(op, Verdict::Denied);
    tracing::info!(status = e.status(), reason = %e, "refused a malformed request");
    let _ = http1::write_json(wr, e.status(), &http1::error_body(&e.to_string()), true).await;
}

async fn one_request<R, W>(
    cfg: &Config,
    reader: &mut Reader<R>,
    wr: &mut W,
    up: &mut Option<relay::Conn>,
    lookups: &mut upstream::Lazy,
    head: RequestHead,
    framing: Framing,
) -> Next
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let keep_alive = head.keep_alive();
    let expects_continue = framing != Framing::None
        && head
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
    let target = match route::parse(&head.method, &head.target) {
        Ok(t) => Ok(t),
        Err(RouteError::Malformed(m)) => {
            let e = HttpError::BadRequest(m);
            refuse_http(cfg, wr, "unknown", &e).await;
            return Next::Close;
        }
        Err(RouteError::Unknown { method, path }) => Err((
            "unknown",
            Denial::forbidden(format!(
                "{method} {path} is not an operation any rule allows for role {}",
                cfg.role.name
            )),
        )),
    };
    let target = target.and_then(|t| {
        let op = t.endpoint.name();
        if cfg.role.allows(t.endpoint) {
            Ok(t)
        } else {
            Err((
                op,
                Denial::forbidden(format!("{op} is not allowed for role {}", cfg.role.name)),
            ))
        }
    });
    // A refused request's body is still read (within the cap), so that a
    // client still sending it gets the refusal rather than a broken pipe;
    // one that waits for 100 Continue is refused without it.
    let op: &'static str = match &target {
        Ok(t) => t.endpoint.name(),
        Err((op, _)) => op,
    };
    if let Err((_, d)) = &target
        && expects_continue
    {
        return deny(cfg, wr, op, d.clone(), true).await;
    }
    if head.header("content-type").is_some_and(|ct| {
        ct.to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    }) {
        // The daemon merges form bodies into its query parameters.
        let e =
            HttpError::BadRequest("form bodies are not accepted by any Docker API route".into());
        refuse_http(cfg, wr, op, &e).await;
        return Next::Close;
    }
    if expects_continue
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
            refuse_http(cfg, wr, op, &e).await;
            return Next::Close;
        }
        Err(ReadError::Io(_)) => return Next::Close,
    };
    let target = match target {
        Ok(t) => t,
        Err((_, d)) => return deny(cfg, wr, op, d, !keep_alive).await,
    };
    if target.endpoint.body() == BodyKind::Empty && !body.is_empty() {
        let e = HttpError::BadRequest(format!("{op} takes no request body"));
        refuse_http(cfg, wr, op, &e).await;
        return Next::Close;
    }

    let _one_create = match (&cfg.session, target.endpoint) {
        (Some(_), route::Endpoint::ContainersCreate) => Some(cfg.creates.lock().await),
        _ => None,
    };
    let decision = rules::check(cfg, lookups, &head, target, body).await;
    let fwd = match decision {
        Decision::Forward(f) => {
            cfg.metrics.count(op, Verdict::Allowed);
            f
        }
        Decision::Deny(d) => return deny(cfg, wr, op, d, !keep_alive).await,
        // Neither allowed nor denied: the rules could not decide.
        Decision::Fail(e) => {
            tracing::warn!(error = %e, operation = op, "lookup at the daemon failed");
            let _ = http1::write_json(wr, 502, &http1::error_body(&e.to_string()), true).await;
            return Next::Close;
        }
    };
    if up.is_none() {
        match relay::Conn::connect(&cfg.upstream).await {
            Ok(c) => *up = Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "daemon unreachable");
                let _ = http1::write_json(wr, 502, &http1::error_body(&e.to_string()), true).await;
                return Next::Close;
            }
        }
    }
    let conn = up.as_mut().expect("just connected");
    tracing::debug!(operation = op, method = %fwd.method, "forwarding");
    match forward(cfg, conn, &head, fwd, wr).await {
        Ok(Relayed::Hijacked) => Next::Hijacked,
        Ok(Relayed::Done { reusable }) => {
            if !reusable {
                *up = None;
            }
            if keep_alive {
                Next::KeepAlive
            } else {
                Next::Close
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, operation = op, "forwarding failed");
            *up = None;
            Next::Close
        }
    }
}

async fn deny<W: AsyncWrite + Unpin>(
    cfg: &Config,
    wr: &mut W,
    op: &'static str,
    d: Denial,
    close: bool,
) -> Next {
    cfg.metrics.count(op, Verdict::Denied);
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
    conn: &mut relay::Conn,
    head: &RequestHead,
    fwd: Forward,
    wr: &mut W,
) -> Result<Relayed, RelayError> {
    let api = cfg.api_string();
    let segs: Vec<&str> = fwd.segments.iter().map(String::as_str).collect();
    let uri = route::build_target(&api, &segs, &fwd.query);
    let body = fwd.body.unwrap_or_default();
    let mut req = format!("{} {uri} HTTP/1.1\r\nHost: docker\r\n", fwd.method);
    if let Some(ua) = head.header("user-agent") {
        req.push_str(&format!("User-Agent: {ua}\r\n"));
    }
    if let Some(auth) = &fwd.registry_auth {
        req.push_str(&format!("X-Registry-Auth: {auth}\r\n"));
    }
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    if !body.is_empty() || fwd.method == "POST" || fwd.method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if fwd.upgrade {
        req.push_str("Connection: Upgrade\r\nUpgrade: tcp\r\n");
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(&body);
    conn.io.write_all(&bytes).await?;

    let resp = conn.read_head(head.method == "HEAD").await?;
    let status = resp.status;
    let mut out = format!("HTTP/1.1 {status} {}\r\n", http1::reason(status));
    for (name, value) in &resp.headers {
        if hop_by_hop(name) {
            continue;
        }
        let value = if name == "api-version" {
            api.as_str()
        } else {
            value.as_str()
        };
        out.push_str(&format!("{}: {value}\r\n", canonical_header(name)));
    }
    let client = |e| RelayError::Client(e);

    if status == 101 {
        out.push_str("Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n");
        let mut buf = out.into_bytes();
        buf.append(&mut conn.buf);
        wr.write_all(&buf).await.map_err(client)?;
        return Ok(Relayed::Hijacked);
    }

    let filter_events = fwd.filter == ResponseFilter::Events && status == 200;
    let filter_list = fwd.filter != ResponseFilter::None && !filter_events && status == 200;
    match resp.framing {
        relay::Framing::None => {
            if let Some((_, cl)) = resp.headers.iter().find(|(k, _)| k == "content-length") {
                out.push_str(&format!("Content-Length: {cl}\r\n"));
            }
            out.push_str("\r\n");
            wr.write_all(out.as_bytes()).await.map_err(client)?;
        }
        framing if filter_list => {
            let body = conn.read_body(framing, 64 * 1024 * 1024).await?;
            let filtered = rules::filter_response(cfg, &fwd.filter, &body);
            out.push_str(&format!("Content-Length: {}\r\n\r\n", filtered.len()));
            let mut buf = out.into_bytes();
            buf.extend_from_slice(&filtered);
            wr.write_all(&buf).await.map_err(client)?;
        }
        relay::Framing::Length(n) => {
            out.push_str(&format!("Content-Length: {n}\r\n\r\n"));
            // A small answer goes out with its head in one write.
            if n <= SMALL_BODY {
                let body = conn
                    .read_body(relay::Framing::Length(n), SMALL_BODY as usize)
                    .await?;
                let mut buf = out.into_bytes();
                buf.extend_from_slice(&body);
                wr.write_all(&buf).await.map_err(client)?;
            } else {
                wr.write_all(out.as_bytes()).await.map_err(client)?;
                conn.relay_body(relay::Framing::Length(n), wr).await?;
            }
        }
        relay::Framing::Chunked if filter_events => {
            out.push_str("Transfer-Encoding: chunked\r\n\r\n");
            wr.write_all(out.as_bytes()).await.map_err(client)?;
            let mut scan = relay::ChunkScanner::default();
            let mut events = rules::EventFilter::default();
            while let Some(data) = conn.next_decoded(&mut scan).await? {
                let kept = events.push(cfg, &data);
                if kept.is_empty() {
                    continue;
                }
                let mut buf = format!("{:x}\r\n", kept.len()).into_bytes();
                buf.extend_from_slice(&kept);
                buf.extend_from_slice(b"\r\n");
                wr.write_all(&buf).await.map_err(client)?;
            }
            wr.write_all(b"0\r\n\r\n").await.map_err(client)?;
        }
        framing @ (relay::Framing::Chunked | relay::Framing::Close) => {
            out.push_str("Transfer-Encoding: chunked\r\n\r\n");
            wr.write_all(out.as_bytes()).await.map_err(client)?;
            conn.relay_body(framing, wr).await?;
        }
    }
    Ok(Relayed::Done {
        reusable: resp.reusable,
    })
}

/// How a forwarded request ended.
enum Relayed {
    /// The answer went to the client; `reusable` if the daemon's connection
    /// may carry the next request.
    Done { reusable: bool },
    /// The connection is now a raw tunnel.
    Hijacked,
}

/// Answers up to this size are read whole and sent with their head.
const SMALL_BODY: u64 = 256 * 1024;

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

async fn tunnel<C>(mut client: C, mut daemon: relay::Conn, leftover: Vec<u8>)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    if !leftover.is_empty() && daemon.io.write_all(&leftover).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut daemon.io).await;
}
