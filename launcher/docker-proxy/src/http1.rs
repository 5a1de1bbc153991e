//! A strict HTTP/1.1 request reader.
//!
//! hyper's server (through httparse) forgives what Go's net/http on the
//! daemon's side may read differently: bare LF line ends, obs-fold, repeated
//! Content-Length. A proxy that checks one reading of a request while the
//! daemon executes another is no filter at all, so the client side is parsed
//! here and anything ambiguous is refused before it is looked at.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request target exactly as sent (origin-form: starts with `/`).
    pub target: String,
    /// Header names lower-cased; values as sent, surrounding whitespace trimmed.
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n == name).count()
    }

    /// Whether the client asked to keep the connection (HTTP/1.1 default).
    pub fn keep_alive(&self) -> bool {
        !self
            .header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }

    /// `Upgrade: tcp`, the way the docker CLI asks for a hijacked attach or
    /// exec stream.
    pub fn wants_upgrade(&self) -> bool {
        self.header("upgrade").is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Why a request was refused before any rule looked at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("malformed request: {0}")]
    BadRequest(String),
    #[error("request head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("request body larger than the limit of {0} bytes")]
    BodyTooLarge(u64),
}

impl HttpError {
    pub fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::HeadTooLarge => 431,
            HttpError::BodyTooLarge(_) => 413,
        }
    }
}

fn bad(msg: impl Into<String>) -> HttpError {
    HttpError::BadRequest(msg.into())
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Finds the end of the head: the first CRLFCRLF. A bare LF anywhere before
/// it is an error, because some servers end lines at LF alone and would see
/// different headers than we do.
pub fn head_end(buf: &[u8]) -> Result<Option<usize>, HttpError> {
    for (i, &b) in buf.iter().enumerate() {
        if b == b'\n' {
            if i == 0 || buf[i - 1] != b'\r' {
                return Err(bad(
                    "bare LF in the request head (lines must end with CRLF)",
                ));
            }
            if i >= 3 && &buf[i - 3..=i] == b"\r\n\r\n" {
                return Ok(Some(i + 1));
            }
        } else if b == b'\r' && i + 1 < buf.len() && buf[i + 1] != b'\n' {
            return Err(bad("bare CR in the request head"));
        }
    }
    if buf.len() > MAX_HEAD {
        return Err(HttpError::HeadTooLarge);
    }
    Ok(None)
}

/// Parses a complete head (ending in CRLFCRLF) and decides its framing.
pub fn parse_head(head: &[u8]) -> Result<(RequestHead, Framing), HttpError> {
    let text = std::str::from_utf8(head).map_err(|_| bad("request head is not UTF-8"))?;
    let body = text
        .strip_suffix("\r\n\r\n")
        .ok_or_else(|| bad("request head does not end with CRLFCRLF"))?;
    let mut lines = body.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    if request_line.starts_with("PRI * HTTP/2") {
        return Err(bad("HTTP/2 is not supported; speak HTTP/1.1"));
    }
    let mut parts = request_line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) => (m, t, v),
        _ => return Err(bad(format!("malformed request line {request_line:?}"))),
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(bad(format!("malformed method {method:?}")));
    }
    if version != "HTTP/1.1" {
        return Err(bad(format!(
            "unsupported protocol {version:?}; only HTTP/1.1"
        )));
    }
    if !target.starts_with('/') {
        return Err(bad(format!(
            "request target {target:?} is not in origin form (absolute URLs and * are not accepted)"
        )));
    }
    if !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("request target holds a control or non-ASCII character"));
    }

    let mut headers = Vec::new();
    for line in lines {
        if line.starts_with(' ') || line.starts_with('\t') {
            return Err(bad("obsolete line folding in a header"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("header line without a colon: {:?}", truncate(line))))?;
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(bad(format!(
                "malformed header name {:?} (no whitespace before the colon)",
                truncate(name)
            )));
        }
        if value
            .bytes()
            .any(|b| b == 0 || b == 0x7f || (b < 0x20 && b != b'\t'))
        {
            return Err(bad(format!("control character in header {name:?}")));
        }
        headers.push((
            name.to_ascii_lowercase(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
        if headers.len() > MAX_HEADERS {
            return Err(bad(format!("more than {MAX_HEADERS} headers")));
        }
    }
    let head = RequestHead {
        method: method.to_string(),
        target: target.to_string(),
        headers,
    };

    for unique in [
        "content-length",
        "content-type",
        "host",
        "transfer-encoding",
        "upgrade",
    ] {
        if head.count(unique) > 1 {
            return Err(bad(format!("duplicate {unique} header")));
        }
    }
    if head.count("host") == 0 {
        return Err(bad("missing Host header (required by HTTP/1.1)"));
    }
    if let Some(up) = head.header("upgrade") {
        if up.to_ascii_lowercase().contains("h2c") {
            return Err(bad("Upgrade: h2c is not supported"));
        }
        if !up.eq_ignore_ascii_case("tcp") {
            return Err(bad(format!("unsupported Upgrade {up:?}; only tcp")));
        }
    }
    if head.header("http2-settings").is_some() {
        return Err(bad("HTTP2-Settings is not supported"));
    }
    if let Some(expect) = head.header("expect")
        && !expect.eq_ignore_ascii_case("100-continue")
    {
        return Err(bad(format!("unsupported Expect {expect:?}")));
    }

    let framing = match (
        head.header("transfer-encoding"),
        head.header("content-length"),
    ) {
        (Some(_), Some(_)) => {
            return Err(bad("both Transfer-Encoding and Content-Length are present"));
        }
        (Some(te), None) => {
            if !te.eq_ignore_ascii_case("chunked") {
                return Err(bad(format!(
                    "unsupported Transfer-Encoding {te:?}; only chunked"
                )));
            }
            Framing::Chunked
        }
        (None, Some(cl)) => {
            if cl.is_empty() || cl.len() > 18 || !cl.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!("malformed Content-Length {cl:?}")));
            }
            match cl.parse::<u64>() {
                Ok(0) => Framing::None,
                Ok(n) => Framing::Length(n),
                Err(_) => return Err(bad(format!("malformed Content-Length {cl:?}"))),
            }
        }
        (None, None) => Framing::None,
    };
    Ok((head, framing))
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// A connection's read side with the bytes read past the current request.
pub struct Reader<R> {
    pub io: R,
    pub buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(io: R) -> Self {
        Reader {
            io,
            buf: Vec::with_capacity(8192),
        }
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.io.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads the next request head. `Ok(None)` when the client closed the
    /// connection between requests.
    pub async fn read_head(&mut self) -> Result<Option<(RequestHead, Framing)>, ReadError> {
        loop {
            // Heads are small; rescanning from the start keeps the bare-LF
            // check exact across reads.
            if let Some(end) = head_end(&self.buf).map_err(ReadError::Http)? {
                let parsed = parse_head(&self.buf[..end]).map_err(ReadError::Http)?;
                self.buf.drain(..end);
                return Ok(Some(parsed));
            }
            if self.fill().await.map_err(ReadError::Io)? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(ReadError::Http(bad(
                    "connection closed inside a request head",
                )));
            }
        }
    }

    /// Reads the whole body, refusing (not truncating) one above `limit`.
    pub async fn read_body(&mut self, framing: &Framing, limit: u64) -> Result<Vec<u8>, ReadError> {
        match framing {
            Framing::None => Ok(Vec::new()),
            Framing::Length(n) => {
                if *n > limit {
                    return Err(ReadError::Http(HttpError::BodyTooLarge(limit)));
                }
                let n = *n as usize;
                while self.buf.len() < n {
                    if self.fill().await.map_err(ReadError::Io)? == 0 {
                        return Err(ReadError::Http(bad("connection closed inside the body")));
                    }
                }
                Ok(self.buf.drain(..n).collect())
            }
            Framing::Chunked => self.read_chunked(limit).await,
        }
    }

    async fn read_line(&mut self) -> Result<String, ReadError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                if pos == 0 || self.buf[pos - 1] != b'\r' {
                    return Err(ReadError::Http(bad("bare LF in chunked framing")));
                }
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return String::from_utf8(line[..line.len() - 2].to_vec())
                    .map_err(|_| ReadError::Http(bad("chunked framing is not ASCII")));
            }
            if self.buf.len() > 4096 {
                return Err(ReadError::Http(bad("chunk line too long")));
            }
            if self.fill().await.map_err(ReadError::Io)? == 0 {
                return Err(ReadError::Http(bad(
                    "connection closed inside a chunked body",
                )));
            }
        }
    }

    async fn read_chunked(&mut self, limit: u64) -> Result<Vec<u8>, ReadError> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line().await?;
            // Chunk extensions carry nothing Docker reads; they are dropped.
            let size = line.split(';').next().unwrap_or_default();
            if size.is_empty() || size.len() > 15 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ReadError::Http(bad(format!(
                    "malformed chunk size {size:?}"
                ))));
            }
            let size = u64::from_str_radix(size, 16)
                .map_err(|_| ReadError::Http(bad("malformed chunk size")))?;
            if size == 0 {
                // Trailers are refused: a header arriving after the body is
                // one nobody checked.
                let trailer = self.read_line().await?;
                if !trailer.is_empty() {
                    return Err(ReadError::Http(bad("trailers are not accepted")));
                }
                return Ok(body);
            }
            if body.len() as u64 + size > limit {
                return Err(ReadError::Http(HttpError::BodyTooLarge(limit)));
            }
            let size = size as usize;
            while self.buf.len() < size + 2 {
                if self.fill().await.map_err(ReadError::Io)? == 0 {
                    return Err(ReadError::Http(bad("connection closed inside a chunk")));
                }
            }
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(ReadError::Http(bad("chunk not followed by CRLF")));
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Http(HttpError),
    #[error("reading the request: {0}")]
    Io(std::io::Error),
}

/// Writes a complete response with a JSON body.
pub async fn write_json<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: u16,
    body: &[u8],
    close: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
        reason(status),
        body.len(),
        if close { "Connection: close\r\n" } else { "" },
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    w.write_all(&out).await?;
    w.flush().await
}

/// Docker's error shape, which the CLI prints as the error's message.
pub fn error_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "message": message })).unwrap_or_default()
}

pub fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<(RequestHead, Framing), HttpError> {
        parse_head(s.as_bytes())
    }

    #[test]
    fn accepts_a_plain_request() {
        let (h, f) =
            parse("GET /v1.41/_ping HTTP/1.1\r\nHost: docker\r\nUser-Agent: x\r\n\r\n").unwrap();
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, "/v1.41/_ping");
        assert_eq!(h.header("user-agent"), Some("x"));
        assert_eq!(f, Framing::None);
    }

    #[test]
    fn refuses_ambiguous_framing() {
        for (req, why) in [
            (
                "POST / HTTP/1.1\r\nHost: d\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                "both",
            ),
            (
                "POST / HTTP/1.1\r\nHost: d\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
                "duplicate content-length",
            ),
            (
                "POST / HTTP/1.1\r\nHost: d\r\nContent-Type: a\r\nContent-type: b\r\n\r\n",
                "duplicate content-type",
            ),
            (
                "POST / HTTP/1.1\r\nHost: d\r\nHost: e\r\n\r\n",
                "duplicate host",
            ),
            (
                "POST / HTTP/1.1\r\nHost: d\r\nX: a\r\n b\r\n\r\n",
                "folding",
            ),
            (
                "POST / HTTP/1.1\r\nHost: d\r\nContent-Length: +3\r\n\r\n",
                "Content-Length",
            ),
            (
                "POST / HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                "Transfer-Encoding",
            ),
            (
                "GET http://docker/_ping HTTP/1.1\r\nHost: d\r\n\r\n",
                "origin form",
            ),
            ("GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n", "HTTP/1.1"),
            ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/2"),
            (
                "GET /_ping HTTP/1.1\r\nHost: d\r\nUpgrade: h2c\r\n\r\n",
                "h2c",
            ),
            ("GET /_ping HTTP/1.1\r\n\r\n", "Host"),
            ("GET /_ping HTTP/1.1\r\nHost : d\r\n\r\n", "header name"),
            ("GET  /_ping HTTP/1.1\r\nHost: d\r\n\r\n", "request line"),
        ] {
            let err = parse(req).unwrap_err().to_string();
            assert!(err.contains(why), "{req:?}: {err}");
        }
    }

    #[test]
    fn refuses_bare_lf_and_cr() {
        assert!(head_end(b"GET / HTTP/1.1\nHost: d\r\n\r\n").is_err());
        assert!(head_end(b"GET / HTTP/1.1\r\nHost: d\rX: y\r\n\r\n").is_err());
        assert_eq!(
            head_end(b"GET / HTTP/1.1\r\nHost: d\r\n\r\nrest").unwrap(),
            Some(27)
        );
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: d\r\n").unwrap(), None);
    }

    #[tokio::test]
    async fn reads_chunked_and_capped_bodies() {
        let data = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nNEXT".to_vec();
        let mut r = Reader::new(&data[..]);
        let body = r.read_body(&Framing::Chunked, 100).await.unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(r.buf, b"NEXT");

        let mut r = Reader::new(&data[..]);
        let err = r.read_body(&Framing::Chunked, 8).await.unwrap_err();
        assert!(matches!(err, ReadError::Http(HttpError::BodyTooLarge(8))));

        let mut r = Reader::new(&b"abc"[..]);
        let err = r
            .read_body(&Framing::Length(10_000), 100)
            .await
            .unwrap_err();
        assert!(matches!(err, ReadError::Http(HttpError::BodyTooLarge(100))));

        let trailer = b"1\r\na\r\n0\r\nX-Late: 1\r\n\r\n".to_vec();
        let mut r = Reader::new(&trailer[..]);
        assert!(r.read_body(&Framing::Chunked, 100).await.is_err());
    }

    #[tokio::test]
    async fn reads_pipelined_heads() {
        let data = b"GET /a HTTP/1.1\r\nHost: d\r\n\r\nGET /b HTTP/1.1\r\nHost: d\r\n\r\n".to_vec();
        let mut r = Reader::new(&data[..]);
        assert_eq!(r.read_head().await.unwrap().unwrap().0.target, "/a");
        assert_eq!(r.read_head().await.unwrap().unwrap().0.target, "/b");
        assert!(r.read_head().await.unwrap().is_none());
    }
}
