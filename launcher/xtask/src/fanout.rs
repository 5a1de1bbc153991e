//! `cargo xtask bench-fanout`: the live log's fan-out. One session writes
//! lines at a steady rate, as its supervisor would (batched every 25 ms
//! into the store); many browsers follow it over server-sent events from
//! `agentctl serve`. Every line must reach every client, in order; the
//! report gives the delivery latency from the moment a line was written
//! to the moment a client read it, and the server's memory.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use http_body_util::BodyExt;
use store::testing;
use store::{NewEvent, NewSession, SessionStore, SessionUpdate, Status};

use crate::Ctx;

pub const DEFAULT_CLIENTS: usize = 500;
pub const DEFAULT_RATE: u64 = 1000;
pub const DEFAULT_SECONDS: u64 = 10;
/// Goal (issue 12): p99 delivery under 100 ms.
pub const P99_GOAL_MS: f64 = 100.0;

pub struct FanoutRun {
    pub store: String,
    pub lines: u64,
    pub deliveries: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub rss_idle_kib: u64,
    pub rss_loaded_kib: u64,
}

pub struct FanoutReport {
    pub clients: usize,
    pub rate: u64,
    pub seconds: u64,
    pub runs: Vec<FanoutRun>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What one client saw: the latency of each line (µs), and whether the
/// lines came in order with none missing.
struct Seen {
    latencies: Vec<u32>,
    next: u64,
    out_of_order: u64,
    ended: bool,
}

/// Follows `/events/sessions/{id}/output` until the `end` event.
async fn client(addr: String, id: String) -> Result<Seen> {
    let stream = tokio::net::TcpStream::connect(&addr).await?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("/events/sessions/{id}/output"))
        .header("host", "localhost")
        .header("accept", "text/event-stream")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())?;
    let resp = send.send_request(req).await?;
    if !resp.status().is_success() {
        bail!("the live log answered {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut seen = Seen {
        latencies: Vec::new(),
        next: 1,
        out_of_order: 0,
        ended: false,
    };
    let mut buf = String::new();
    let mut partial_line = String::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let at = now_us();
        buf.push_str(&String::from_utf8_lossy(data));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if event.contains("event: end") {
                seen.ended = true;
                return Ok(seen);
            }
            let Some(json) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(json)?;
            let Some(segs) = v["g"].as_array() else {
                continue;
            };
            for s in segs {
                partial_line.push_str(s[1].as_str().unwrap_or_default());
            }
            while let Some(nl) = partial_line.find('\n') {
                let line: String = partial_line.drain(..nl + 1).collect();
                // "t=<µs> n=<k>"
                let mut t = 0u64;
                let mut n = 0u64;
                for part in line.split_whitespace() {
                    if let Some(v) = part.strip_prefix("t=") {
                        t = v.parse().unwrap_or(0);
                    } else if let Some(v) = part.strip_prefix("n=") {
                        n = v.parse().unwrap_or(0);
                    }
                }
                if n != seen.next {
                    seen.out_of_order += 1;
                }
                seen.next = n + 1;
                seen.latencies
                    .push(u32::try_from(at.saturating_sub(t)).unwrap_or(u32::MAX));
            }
        }
    }
    Ok(seen)
}

fn policy() -> String {
    r#"{"network":"none"}"#.to_string()
}

/// Writes `rate` lines a second for `seconds`, flushed every 25 ms like a
/// supervisor; returns how many lines.
async fn writer(store: Arc<SessionStore>, id: String, rate: u64, seconds: u64) -> Result<u64> {
    let start = Instant::now();
    let start_us = now_us();
    let total = rate * seconds;
    let mut written = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    while written < total {
        tick.tick().await;
        let due = ((start.elapsed().as_micros() as u64) * rate / 1_000_000).min(total);
        let mut chunk = String::new();
        while written < due {
            written += 1;
            // The moment the line was due: what a reader's latency counts
            // from, batching included.
            let t = start_us + written * 1_000_000 / rate;
            chunk.push_str(&format!("t={t} n={written} \x1b[32mok\x1b[0m\n"));
        }
        if !chunk.is_empty() {
            store
                .append_output(
                    &id,
                    store::now_ms(),
                    chunk.as_bytes(),
                    store::DEFAULT_OUTPUT_CAP,
                )
                .await?;
        }
    }
    Ok(written)
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

pub fn bench_fanout(ctx: &Ctx, clients: usize, rate: u64, seconds: u64) -> Result<FanoutReport> {
    let crate::web::BenchStores {
        rt,
        sqlite,
        pg,
        dir: _dir,
    } = crate::web::bench_stores("agentctl-bench-fanout-")?;
    let mut runs = Vec::new();
    for (name, url) in [("SQLite", sqlite), ("PostgreSQL", pg.url.clone())] {
        let id = testing::random_hex(16);
        let store = rt.block_on(async {
            let store = Arc::new(SessionStore::connect(&url).await?);
            let policy = policy();
            store
                .create_session(
                    &NewSession {
                        id: id.clone(),
                        profile: "bench".into(),
                        backend: store::Backend::Native,
                        image: None,
                        workspace: "/bench".into(),
                        command: vec!["bench".into()],
                        user: "bench".into(),
                        uid: 0,
                        host: "bench".into(),
                        created_at: None,
                        detached: true,
                        policy_sha256: store::chain::sha256_hex(policy.as_bytes()),
                        policy,
                    },
                    NewEvent::new("created"),
                )
                .await?;
            store
                .update(
                    &id,
                    &SessionUpdate {
                        status: Some(Status::Running),
                        started_at: Some(store::now_ms()),
                        ..Default::default()
                    },
                )
                .await?;
            anyhow::Ok(store)
        })?;
        let (server, addr) = crate::web::serve(ctx, &url)?;
        let rss_idle_kib = crate::web::rss_kib(server.0.id());
        eprintln!(
            "xtask: {name}: {clients} clients follow one session writing {rate} lines/s for {seconds} s"
        );
        let followers: Vec<_> = (0..clients)
            .map(|_| rt.spawn(client(addr.clone(), id.clone())))
            .collect();
        // Every client connected and caught up before the first line.
        std::thread::sleep(Duration::from_secs(2));
        let pid = server.0.id();
        let sampler = std::thread::spawn(move || {
            let mut top = 0;
            let deadline = Instant::now() + Duration::from_secs(seconds);
            while Instant::now() < deadline {
                top = top.max(crate::web::rss_kib(pid));
                std::thread::sleep(Duration::from_millis(250));
            }
            top
        });
        let lines = rt.block_on(writer(store.clone(), id.clone(), rate, seconds))?;
        let rss_loaded_kib = sampler.join().unwrap_or(0);
        rt.block_on(store.record(
            &id,
            vec![NewEvent::new("exited")],
            &SessionUpdate {
                status: Some(Status::Exited),
                exit_code: Some(0),
                ended_at: Some(store::now_ms()),
                ..Default::default()
            },
        ))?;
        let mut all = Vec::with_capacity(clients * lines as usize);
        for f in followers {
            let seen = rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(60), f).await })
                .context("a client did not see the end within a minute")???;
            if !seen.ended || seen.next != lines + 1 || seen.out_of_order > 0 {
                bail!(
                    "{name}: a client saw {} of {lines} lines ({} out of order, ended: {}): every line must reach every client",
                    seen.next - 1,
                    seen.out_of_order,
                    seen.ended
                );
            }
            all.extend(seen.latencies);
        }
        drop(server);
        rt.block_on(store.close());
        all.sort_unstable();
        runs.push(FanoutRun {
            store: name.into(),
            lines,
            deliveries: all.len() as u64,
            p50_ms: pct(&all, 0.50),
            p99_ms: pct(&all, 0.99),
            max_ms: pct(&all, 1.0),
            rss_idle_kib,
            rss_loaded_kib,
        });
    }
    Ok(FanoutReport {
        clients,
        rate,
        seconds,
        runs,
    })
}

pub fn section(r: &FanoutReport, command: &str) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "## The live log: {} browsers following one session\n",
        r.clients
    );
    let _ = writeln!(
        o,
        "One session writes {} lines a second for {} s, appended to the store every 25 ms as its supervisor does; {} clients follow `/events/sessions/{{id}}/output` on `agentctl serve` (release build) over server-sent events, parse each event and check that every line arrives, in order. Latency runs from the moment a line was due (the 25 ms batching included) to the moment a client read it; the clients run in the same 2-core machine as the server and the store.\n",
        r.rate, r.seconds, r.clients
    );
    let _ = writeln!(
        o,
        "| Store | Lines | Deliveries | p50 | p99 | max | RSS idle | RSS under load |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for run in &r.runs {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} MiB | {:.1} MiB |",
            run.store,
            run.lines,
            run.deliveries,
            run.p50_ms,
            run.p99_ms,
            run.max_ms,
            run.rss_idle_kib as f64 / 1024.0,
            run.rss_loaded_kib as f64 / 1024.0
        );
    }
    let _ = writeln!(o);
    for run in &r.runs {
        let met = if run.p99_ms < P99_GOAL_MS {
            "**met**"
        } else {
            "**not met**"
        };
        let _ = writeln!(
            o,
            "{}: every line reached every client; p99 delivery {:.1} ms, goal under {P99_GOAL_MS} ms {met}.\n",
            run.store, run.p99_ms
        );
    }
    let _ = writeln!(o, "Made by `{command}`.\n");
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_of_sorted_microseconds() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert!(
            (super::pct(&v, 0.5) - 51.0).abs() < 1e-9 || (super::pct(&v, 0.5) - 50.0).abs() < 1e-9
        );
        assert!((super::pct(&v, 0.99) - 99.0).abs() < 1.01);
        assert!((super::pct(&v, 1.0) - 100.0).abs() < 1e-9);
        assert_eq!(super::pct(&[], 0.5), 0.0);
    }
}
