//! `--metrics-listen`: how many requests the proxy allowed and denied, in
//! Prometheus' text format (version 0.0.4). Served on a listener of its
//! own, so that whoever scrapes it reaches nothing of the Docker API, and
//! read with the proxy's own strict HTTP reader.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::config::Config;
use crate::http1::{self, ReadError, Reader};
use crate::server::{Conn, Listener, ServeError, accept};

/// What the proxy did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Forwarded to the daemon.
    Allowed,
    /// Answered by the proxy with a refusal.
    Denied,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
        }
    }
}

/// The proxy's counters. Operation names are the routes' own (or
/// `unknown`), so the set of series is bounded whatever clients send.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, Verdict), u64>>,
}

impl Metrics {
    pub fn count(&self, operation: &'static str, verdict: Verdict) {
        // A poisoned lock means a panic while counting elsewhere; the map
        // itself is still whole.
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((operation, verdict)).or_default() += 1;
    }

    /// The exposition for a proxy of `role` speaking API version `api`.
    pub fn render(&self, role: &str, api: &str) -> String {
        let role = escape(role);
        let mut out = String::from(
            "# HELP agentctl_proxy_requests_total Requests the proxy judged, by role, operation and decision.\n\
             # TYPE agentctl_proxy_requests_total counter\n",
        );
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for ((op, verdict), n) in requests {
            out.push_str(&format!(
                "agentctl_proxy_requests_total{{role=\"{role}\",operation=\"{}\",decision=\"{}\"}} {n}\n",
                escape(op),
                verdict.label()
            ));
        }
        out.push_str(
            "# HELP agentctl_proxy_up Whether the proxy is serving.\n\
             # TYPE agentctl_proxy_up gauge\n\
             agentctl_proxy_up 1\n\
             # HELP agentctl_proxy_info The proxy's role and the Docker API version it speaks to the daemon.\n\
             # TYPE agentctl_proxy_info gauge\n",
        );
        out.push_str(&format!(
            "agentctl_proxy_info{{role=\"{role}\",api=\"{}\"}} 1\n",
            escape(api)
        ));
        out
    }
}

/// A label value as the text format writes it: backslash, double quote and
/// line feed escaped (a role file's name is the user's to choose).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

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
    use crate::role::Role;
    use crate::upstream::Addr;

    #[test]
    fn counts_are_rendered_per_operation_and_decision() {
        let m = Metrics::default();
        m.count("containers.create", Verdict::Denied);
        m.count("containers.create", Verdict::Allowed);
        m.count("containers.create", Verdict::Denied);
        m.count("unknown", Verdict::Denied);
        let text = m.render("launcher", "1.47");
        for line in [
            "# TYPE agentctl_proxy_requests_total counter",
            "agentctl_proxy_requests_total{role=\"launcher\",operation=\"containers.create\",decision=\"allowed\"} 1",
            "agentctl_proxy_requests_total{role=\"launcher\",operation=\"containers.create\",decision=\"denied\"} 2",
            "agentctl_proxy_requests_total{role=\"launcher\",operation=\"unknown\",decision=\"denied\"} 1",
            "agentctl_proxy_up 1",
            "agentctl_proxy_info{role=\"launcher\",api=\"1.47\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        let text = Metrics::default().render("my \"role\"\n", "1.47");
        assert!(
            text.contains("agentctl_proxy_info{role=\"my \\\"role\\\"\\n\",api=\"1.47\"} 1\n"),
            "{text}"
        );
    }

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
