//! The daemon's side: connections, the API version both sides will speak,
//! and the small lookups the rules need (who owns a container).

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};

/// The newest API version whose request bodies the proxy knows.
pub const MAX_API: (u64, u64) = (1, 47);
/// The oldest it will speak (Docker 20.10 speaks 1.41).
pub const MIN_API: (u64, u64) = (1, 41);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Unix(PathBuf),
    Tcp(String),
}

impl Addr {
    /// `unix:///path` or `tcp://host:port`.
    pub fn parse(s: &str) -> Result<Addr, String> {
        if let Some(p) = s.strip_prefix("unix://") {
            if !p.starts_with('/') {
                return Err(format!(
                    "{s:?}: a unix socket path must be absolute (unix:///path)"
                ));
            }
            Ok(Addr::Unix(PathBuf::from(p)))
        } else if let Some(a) = s.strip_prefix("tcp://") {
            if a.is_empty() || a.contains('/') {
                return Err(format!("{s:?}: expected tcp://HOST:PORT"));
            }
            Ok(Addr::Tcp(a.to_string()))
        } else {
            Err(format!("{s:?}: expected unix:///PATH or tcp://HOST:PORT"))
        }
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Unix(p) => write!(f, "unix://{}", p.display()),
            Addr::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to the Docker daemon at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("talking to the Docker daemon: {0}")]
    Http(#[from] hyper::Error),
    #[error("the Docker daemon answered {status} to {what}")]
    Status { what: String, status: u16 },
    #[error("the Docker daemon's answer to {what} is not what the API promises: {why}")]
    Unexpected { what: String, why: String },
    #[error("the Docker daemon speaks API {0}.{1}, older than {min} which this proxy needs", min = min_api())]
    TooOld(u64, u64),
}

fn min_api() -> String {
    format!("{}.{}", MIN_API.0, MIN_API.1)
}

pub type Sender = SendRequest<Full<Bytes>>;

/// Opens one HTTP/1.1 connection to the daemon, upgrades allowed.
pub async fn connect(addr: &Addr) -> Result<Sender, UpstreamError> {
    let err = |source| UpstreamError::Connect {
        addr: addr.to_string(),
        source,
    };
    match addr {
        Addr::Unix(p) => {
            let s = UnixStream::connect(p).await.map_err(err)?;
            handshake(s).await
        }
        Addr::Tcp(a) => {
            let s = TcpStream::connect(a).await.map_err(err)?;
            let _ = s.set_nodelay(true);
            handshake(s).await
        }
    }
}

async fn handshake<S>(s: S) -> Result<Sender, UpstreamError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// Sends a request the proxy built itself (never a client's) and reads
/// the whole answer. `body` is JSON.
pub async fn request(
    sender: &mut Sender,
    method: &str,
    target: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, Bytes), UpstreamError> {
    sender.ready().await?;
    let mut req = http::Request::builder()
        .method(method)
        .uri(target)
        .header("host", "docker");
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| UpstreamError::Unexpected {
            what: target.to_string(),
            why: e.to_string(),
        })?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// A bodyless request of the proxy's own.
pub async fn get(
    sender: &mut Sender,
    method: &str,
    target: &str,
) -> Result<(u16, Bytes), UpstreamError> {
    request(sender, method, target, None).await
}

/// Asks the daemon which API versions it speaks and picks the one every
/// request will be rewritten to: the daemon's own, capped at what the proxy
/// knows.
pub async fn negotiate(addr: &Addr) -> Result<(u64, u64), UpstreamError> {
    let mut s = connect(addr).await?;
    let (status, body) = get(&mut s, "GET", "/version").await?;
    if status != 200 {
        return Err(UpstreamError::Status {
            what: "GET /version".into(),
            status,
        });
    }
    #[derive(serde::Deserialize)]
    struct V {
        #[serde(rename = "ApiVersion")]
        api: String,
    }
    let v: V = serde_json::from_slice(&body).map_err(|e| UpstreamError::Unexpected {
        what: "GET /version".into(),
        why: e.to_string(),
    })?;
    let parsed = parse_version(&v.api).ok_or_else(|| UpstreamError::Unexpected {
        what: "GET /version".into(),
        why: format!("ApiVersion {:?}", v.api),
    })?;
    if parsed < MIN_API {
        return Err(UpstreamError::TooOld(parsed.0, parsed.1));
    }
    Ok(parsed.min(MAX_API))
}

fn parse_version(v: &str) -> Option<(u64, u64)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// A connection for the rules' own lookups, opened on first use: most
/// requests (and every request of a global role) never need one.
pub struct Lazy {
    addr: Addr,
    sender: Option<Sender>,
}

impl Lazy {
    pub fn new(addr: Addr) -> Lazy {
        Lazy { addr, sender: None }
    }

    pub async fn sender(&mut self) -> Result<&mut Sender, UpstreamError> {
        if let Some(s) = self.sender.as_mut()
            && (s.is_closed() || s.ready().await.is_err())
        {
            self.sender = None;
        }
        if self.sender.is_none() {
            self.sender = Some(connect(&self.addr).await?);
        }
        Ok(self.sender.as_mut().expect("just set"))
    }
}
