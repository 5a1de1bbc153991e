//! `/metrics` in Prometheus' text format: sessions by status and refused
//! actions (read from the store at each scrape, so any dashboard over the
//! same store reports the same), and this server's HTTP requests and their
//! latency (counted here).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::WebError;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Counters of the requests this server answered.
#[derive(Default)]
pub struct Http {
    /// Per bucket (and one past the last: +Inf), cumulative at render.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    by_class: [AtomicU64; 6],
}

impl Http {
    fn observe(&self, secs: f64, status: u16) {
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
        let class = usize::from(status / 100).min(5);
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
    }
}

pub async fn count_requests(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let resp = next.run(req).await;
    st.http
        .observe(start.elapsed().as_secs_f64(), resp.status().as_u16());
    resp
}

pub async fn render(State(st): State<AppState>) -> Response {
    match scrape(&st).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn scrape(st: &AppState) -> Result<String, WebError> {
    let mut o = String::new();
    let by_status = st.store.count_by_status().await?;
    let _ = writeln!(o, "# HELP agentctl_sessions Sessions on record, by status.");
    let _ = writeln!(o, "# TYPE agentctl_sessions gauge");
    for status in ["created", "running", "exited", "failed", "stopped", "lost"] {
        let n = by_status
            .iter()
            .find(|(s, _)| s.as_str() == status)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(o, "agentctl_sessions{{status=\"{status}\"}} {n}");
    }
    let launches: u64 = by_status.iter().map(|(_, n)| n).sum();
    let _ = writeln!(
        o,
        "# HELP agentctl_launches_total Sessions ever put on record (and not removed)."
    );
    let _ = writeln!(o, "# TYPE agentctl_launches_total counter");
    let _ = writeln!(o, "agentctl_launches_total {launches}");
    let refused = st
        .store
        .count_events(&["proxy_denied", "policy_denied", "egress_denied"])
        .await?;
    let _ = writeln!(
        o,
        "# HELP agentctl_refusals_total Actions a sandbox refused (Docker API calls, policy, connections out)."
    );
    let _ = writeln!(o, "# TYPE agentctl_refusals_total counter");
    let _ = writeln!(o, "agentctl_refusals_total {refused}");
    let egress = st.store.count_events(&["egress_denied"]).await?;
    let _ = writeln!(
        o,
        "# HELP agentctl_egress_refusals_total Connections and DNS names an allowlist network refused."
    );
    let _ = writeln!(o, "# TYPE agentctl_egress_refusals_total counter");
    let _ = writeln!(o, "agentctl_egress_refusals_total {egress}");
    if st.store.has_queue() {
        queue_metrics(st, &mut o).await?;
    }

    let h = &st.http;
    let _ = writeln!(
        o,
        "# HELP agentctl_http_requests_total Requests this server answered, by status class."
    );
    let _ = writeln!(o, "# TYPE agentctl_http_requests_total counter");
    for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
        let n = h.by_class[i + 1].load(Ordering::Relaxed);
        let _ = writeln!(o, "agentctl_http_requests_total{{code=\"{class}\"}} {n}");
    }
    let _ = writeln!(
        o,
        "# HELP agentctl_http_request_duration_seconds Time to answer a request."
    );
    let _ = writeln!(o, "# TYPE agentctl_http_request_duration_seconds histogram");
    let mut cumulative = 0;
    for (i, bound) in BUCKETS.iter().enumerate() {
        cumulative += h.buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(
            o,
            "agentctl_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    cumulative += h.buckets[BUCKETS.len()].load(Ordering::Relaxed);
    let _ = writeln!(
        o,
        "agentctl_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(o, "agentctl_http_request_duration_seconds_sum {sum}");
    let _ = writeln!(
        o,
        "agentctl_http_request_duration_seconds_count {cumulative}"
    );
    Ok(o)
}

/// The team server's queue: requests by state, claim latency, and per
/// worker its capacity, what it holds and how long since its heartbeat.
async fn queue_metrics(st: &AppState, o: &mut String) -> Result<(), WebError> {
    let now = store::now_ms();
    let q = st.store.queue_stats(now).await?;
    let _ = writeln!(
        o,
        "# HELP agentctl_queue_requests Session requests not yet over, by state."
    );
    let _ = writeln!(o, "# TYPE agentctl_queue_requests gauge");
    for (state, n) in [
        ("queued", q.queued),
        ("claimed", q.claimed),
        ("started", q.started),
    ] {
        let _ = writeln!(o, "agentctl_queue_requests{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(
        o,
        "# HELP agentctl_queue_claim_latency_seconds From a request to its claim by a worker, over the last five minutes."
    );
    let _ = writeln!(o, "# TYPE agentctl_queue_claim_latency_seconds summary");
    for (quantile, v) in [("0.5", q.claim_p50_ms), ("0.99", q.claim_p99_ms)] {
        if let Some(v) = v {
            let _ = writeln!(
                o,
                "agentctl_queue_claim_latency_seconds{{quantile=\"{quantile}\"}} {}",
                v / 1000.0
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP agentctl_queue_start_latency_seconds From a request to its session on record, over the last five minutes."
    );
    let _ = writeln!(o, "# TYPE agentctl_queue_start_latency_seconds summary");
    for (quantile, v) in [("0.5", q.start_p50_ms), ("0.99", q.start_p99_ms)] {
        if let Some(v) = v {
            let _ = writeln!(
                o,
                "agentctl_queue_start_latency_seconds{{quantile=\"{quantile}\"}} {}",
                v / 1000.0
            );
        }
    }
    let workers = st.store.workers().await?;
    let live: Vec<_> = workers
        .iter()
        .filter(|w| w.state != store::queue::WorkerState::Gone)
        .collect();
    for (name, help, f) in [
        (
            "agentctl_worker_capacity",
            "Sessions a worker runs at once.",
            (|w: &store::queue::Worker| w.capacity as f64) as fn(&store::queue::Worker) -> f64,
        ),
        (
            "agentctl_worker_claimed",
            "Requests a worker claimed and is starting.",
            |w| w.claimed as f64,
        ),
        (
            "agentctl_worker_running",
            "Sessions running on a worker.",
            |w| w.running as f64,
        ),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} gauge");
        for w in &live {
            let _ = writeln!(
                o,
                "{name}{{worker=\"{}\",state=\"{}\"}} {}",
                label(&w.name),
                w.state.as_str(),
                f(w)
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP agentctl_worker_heartbeat_age_seconds Time since a worker last said it was alive."
    );
    let _ = writeln!(o, "# TYPE agentctl_worker_heartbeat_age_seconds gauge");
    for w in &live {
        let _ = writeln!(
            o,
            "agentctl_worker_heartbeat_age_seconds{{worker=\"{}\"}} {}",
            label(&w.name),
            (now - w.heartbeat_at).max(0) as f64 / 1000.0
        );
    }
    Ok(())
}

/// A label value in the text format: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
