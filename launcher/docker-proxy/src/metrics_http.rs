//! The listener of `--metrics-listen`: `GET /metrics` answered with the
//! counters of `metrics`, read with the proxy's own strict HTTP reader; a
//! listener of its own, so that whoever scrapes it reaches nothing of the
//! Docker API.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::config::Config;
use crate::http1::{self, ReadError, Reader};
use crate::server::{Conn, Listener, ServeError, accept};

/// Serves `GET /metrics` until `shutdown` resolves.
pub async fn serve_metrics(
    listener: Listener,
    cfg: Arc<Config>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
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
                                answer(r, w, &cfg).await
                            }
                            Conn::Tcp(s) => {
                                let (r, w) = s.into_split();
                                answer(r, w, &cfg).await
                            }
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// A scrape carries no body; one (up to this) is read and dropped so that
/// the connection stays in step.
const MAX_SCRAPE_BODY: u64 = 64 * 1024;

async fn answer<R, W>(rd: R, mut wr: W, cfg: &Config)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = Reader::new(rd);
    loop {
        let (head, framing) = match reader.read_head().await {
            Ok(Some(h)) => h,
            Ok(None) | Err(ReadError::Io(_)) => return,
            Err(ReadError::Http(e)) => {
                let _ = write_text(&mut wr, e.status(), &format!("{e}\n"), true).await;
                return;
            }
        };
        if let Err(e) = reader.read_body(&framing, MAX_SCRAPE_BODY).await {
            if let ReadError::Http(e) = e {
                let _ = write_text(&mut wr, e.status(), &format!("{e}\n"), true).await;
            }
            return;
        }
        let path = head.target.split('?').next().unwrap_or_default();
        let (status, body) = if path != "/metrics" {
            (
                404,
                "not found: only GET /metrics is served here\n".to_string(),
            )
        } else if head.method != "GET" {
            (
                405,
                format!("{} /metrics: only GET is served\n", head.method),
            )
        } else {
            (200, cfg.metrics.render(&cfg.role.name, &cfg.api_string()))
        };
        let close = !head.keep_alive();
        if write_text(&mut wr, status, &body, close).await.is_err() || close {
            return;
        }
    }
}

async fn write_text<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: u16,
    body: &str,
    close: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\n{}{}\r\n",
        http1::reason(status),
        body.len(),
        if status == 405 { "Allow: GET\r\n" } else { "" },
        if close { "Connection: close\r\n" } else { "" },
    );
    w.write_all(head.as_bytes()).await?;
    w.write_all(body.as_bytes()).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::metrics::{Metrics, Verdict};
    use crate::role::Role;
    use crate::upstream::Addr;

    fn config() -> Config {
        Config {
            role: Role::builtin("launcher").unwrap(),
            upstream: Addr::Unix("/nonexistent/docker.sock".into()),
            api: (1, 47),
            session: None,
            max_body: 1 << 20,
            audit: None,
            creates: Default::default(),
            bind_roots: Vec::new(),
            metrics: Metrics::default(),
        }
    }

    /// The answers to `requests`, sent on one connection.
    async fn exchange(requests: &str) -> String {
        let cfg = config();
        cfg.metrics.count("ping", Verdict::Allowed);
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (sr, sw) = tokio::io::split(server);
        let (mut cr, mut cw) = tokio::io::split(client);
        cw.write_all(requests.as_bytes()).await.unwrap();
        cw.shutdown().await.unwrap();
        answer(sr, sw, &cfg).await;
        let mut out = String::new();
        cr.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn only_get_metrics_is_served() {
        let out = exchange("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(
            out.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{out}"
        );
        assert!(out.contains("operation=\"ping\",decision=\"allowed\"} 1\n"));

        let out = exchange("GET /other HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 404 "), "{out}");
        let out =
            exchange("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}").await;
        assert!(out.starts_with("HTTP/1.1 405 "), "{out}");
        assert!(out.contains("Allow: GET\r\n"), "{out}");

        // Kept alive: two scrapes on one connection, then a malformed one.
        let out = exchange(
            "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\n\n",
        )
        .await;
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
        assert!(out.contains("HTTP/1.1 400 "), "{out}");
    }
}
