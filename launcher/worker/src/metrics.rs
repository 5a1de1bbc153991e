//! The worker's own metrics, for Prometheus (`--metrics-listen`): what it
//! holds and what its jobs came to, as this process counts them. The
//! store's view of every worker is on the dashboard's /metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::warn;

#[derive(Default)]
pub struct Metrics {
    pub capacity: AtomicU64,
    pub running: AtomicU64,
    pub draining: AtomicU64,
    pub claimed: AtomicU64,
    /// Jobs whose agent exited 0, and every other end.
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub heartbeats: AtomicU64,
    pub heartbeat_failures: AtomicU64,
}

impl Metrics {
    pub fn render(&self, name: &str) -> String {
        let name = escape(name);
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let mut o = String::new();
        let mut one = |metric: &str, kind: &str, help: &str, labels: &str, v: u64| {
            o.push_str(&format!(
                "# HELP {metric} {help}\n# TYPE {metric} {kind}\n{metric}{{worker=\"{name}\"{labels}}} {v}\n"
            ));
        };
        one(
            "agentctl_worker_up",
            "gauge",
            "1 while the worker is registered.",
            "",
            1,
        );
        one(
            "agentctl_worker_capacity_sessions",
            "gauge",
            "Sessions the worker runs at once.",
            "",
            g(&self.capacity),
        );
        one(
            "agentctl_worker_running_sessions",
            "gauge",
            "Jobs running now.",
            "",
            g(&self.running),
        );
        one(
            "agentctl_worker_draining",
            "gauge",
            "1 while draining.",
            "",
            g(&self.draining),
        );
        one(
            "agentctl_worker_claims_total",
            "counter",
            "Requests claimed.",
            "",
            g(&self.claimed),
        );
        one(
            "agentctl_worker_jobs_succeeded_total",
            "counter",
            "Jobs whose agent exited 0.",
            "",
            g(&self.succeeded),
        );
        one(
            "agentctl_worker_jobs_failed_total",
            "counter",
            "Jobs that ended any other way.",
            "",
            g(&self.failed),
        );
        one(
            "agentctl_worker_heartbeats_total",
            "counter",
            "Heartbeats written to the store.",
            "",
            g(&self.heartbeats),
        );
        one(
            "agentctl_worker_heartbeat_failures_total",
            "counter",
            "Heartbeats that failed.",
            "",
            g(&self.heartbeat_failures),
        );
        o
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `GET /metrics` on `listener` until the process ends: a plain
/// HTTP/1.0 answer per connection, nothing else (404, 405).
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, name: String) {
    loop {
        let (mut conn, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!("metrics: cannot accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            // The request line and headers, within a size and a time.
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while buf.len() < 8192 && !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = conn.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                std::io::Result::Ok(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let head = String::from_utf8_lossy(&buf);
            let mut parts = head.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, body) = match (method, path) {
                ("GET", "/metrics") => ("200 OK", metrics.render(&name)),
                ("GET", _) => ("404 Not Found", "not found\n".to_string()),
                _ => ("405 Method Not Allowed", "only GET\n".to_string()),
            };
            let resp = format!(
                "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_the_worker_and_counts() {
        let m = Metrics::default();
        m.capacity.store(2, Ordering::Relaxed);
        m.claimed.fetch_add(3, Ordering::Relaxed);
        let t = m.render("w\"1");
        assert!(
            t.contains("agentctl_worker_capacity_sessions{worker=\"w\\\"1\"} 2\n"),
            "{t}"
        );
        assert!(
            t.contains("agentctl_worker_claims_total{worker=\"w\\\"1\"} 3\n"),
            "{t}"
        );
        assert!(
            t.contains("# TYPE agentctl_worker_claims_total counter\n"),
            "{t}"
        );
    }
}
