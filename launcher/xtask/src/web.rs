//! `cargo xtask bench-web`: the dashboard (`agentctl serve`) over a store
//! of 100,000 sessions, SQLite and Postgres side by side, loaded by wrk:
//! the sessions page, the JSON list and `/healthz` (the server's own
//! floor), and the server's resident memory idle and under load.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use store::SessionStore;
use store::testing::{self, Durability, TestDatabase};

use crate::Ctx;

pub const DEFAULT_SESSIONS: usize = 100_000;
pub const DEFAULT_SECONDS: u64 = 10;
/// Goals (issue 12): the sessions page's p99 under 50 ms, the JSON list at
/// least 2,000 requests/s, and the server under 50 MiB under load.
pub const PAGE_P99_GOAL_MS: f64 = 50.0;
pub const LIST_RATE_GOAL: f64 = 2_000.0;
pub const RSS_GOAL_MIB: f64 = 50.0;

/// One wrk run.
pub struct Load {
    pub path: &'static str,
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

pub struct StoreRun {
    pub store: String,
    pub loads: Vec<Load>,
    pub rss_idle_kib: u64,
    pub rss_loaded_kib: u64,
}

pub struct WebReport {
    pub sessions: usize,
    pub seconds: u64,
    pub runs: Vec<StoreRun>,
}

const PATHS: [&str; 3] = ["/healthz", "/api/v1/sessions", "/"];

pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// wrk's latency ("1.23ms", "850.00us", "1.02s") in milliseconds.
fn ms(v: &str) -> Option<f64> {
    let v = v.trim();
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

/// Reads wrk's `--latency` report.
pub fn parse_wrk(out: &str, path: &'static str) -> Result<Load> {
    let pct = |p: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(p).and_then(ms))
            .with_context(|| format!("no {p} latency in wrk's report:\n{out}"))
    };
    let rate = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's report:\n{out}"))?;
    // "Non-2xx or 3xx responses: N", and "Socket errors: connect 0, read
    // 0, write 0, timeout N" when any: each is a request not answered.
    let non_2xx: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let socket: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map(|v| {
            v.split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let errors = non_2xx + socket;
    Ok(Load {
        path,
        rate,
        p50_ms: pct("50%")?,
        p99_ms: pct("99%")?,
        errors,
    })
}

pub fn serve(ctx: &Ctx, url: &str) -> Result<(Kill, String)> {
    let mut child = Command::new(&ctx.agentctl)
        .args(["--store", url, "serve", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start agentctl serve")?;
    let mut line = String::new();
    std::io::BufReader::new(child.stderr.take().context("no stderr")?).read_line(&mut line)?;
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .with_context(|| format!("agentctl serve said {line:?}"))?
        .to_string();
    Ok((Kill(child), addr))
}

fn wrk(addr: &str, path: &'static str, seconds: u64) -> Result<Load> {
    let out = Command::new("wrk")
        .args(["-t2", "-c16", &format!("-d{seconds}s"), "--latency"])
        .args(["-H", "Host: localhost"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .context("cannot run wrk")?;
    ensure!(
        out.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&String::from_utf8_lossy(&out.stdout), path)
}

/// A runtime and one store of each kind for a benchmark: a SQLite file in
/// a temporary directory, and a fresh database on AGENTCTL_TEST_POSTGRES's
/// server or on a throwaway cluster.
pub struct BenchStores {
    pub rt: tokio::runtime::Runtime,
    pub sqlite: String,
    pub pg: TestDatabase,
    /// Holds the SQLite file; the stores go with it.
    pub dir: tempfile::TempDir,
}

pub fn bench_stores(prefix: &str) -> Result<BenchStores> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")?;
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    let sqlite = format!("sqlite://{}", dir.path().join("agentctl.db").display());
    let server = match std::env::var(testing::ENV) {
        Ok(url) if !url.is_empty() => testing::PgServer {
            url,
            origin: testing::ENV.into(),
        },
        _ => testing::start_cluster(Durability::Default).map_err(anyhow::Error::msg)?,
    };
    let pg = rt
        .block_on(TestDatabase::create(&server))
        .map_err(anyhow::Error::msg)?;
    Ok(BenchStores {
        rt,
        sqlite,
        pg,
        dir,
    })
}

pub fn bench_web(ctx: &Ctx, sessions: usize, seconds: u64) -> Result<WebReport> {
    let BenchStores {
        rt,
        sqlite,
        pg,
        dir: _dir,
    } = bench_stores("agentctl-bench-web-")?;
    let ids: Arc<Vec<String>> = Arc::new((0..sessions).map(|_| testing::random_hex(16)).collect());
    let mut runs = Vec::new();
    for (name, url) in [("SQLite", sqlite.clone()), ("PostgreSQL", pg.url.clone())] {
        eprintln!("xtask: recording {sessions} sessions in {name}");
        rt.block_on(async {
            let store = Arc::new(SessionStore::connect(&url).await?);
            crate::session_store::populate_store(store.clone(), ids.clone()).await?;
            store.close().await;
            anyhow::Ok(())
        })?;
        let (server, addr) = serve(ctx, &url)?;
        // Warm: each page once.
        for p in PATHS {
            let _ = wrk_once(&addr, p);
        }
        let rss_idle_kib = rss_kib(server.0.id());
        let mut loads = Vec::new();
        let mut rss_loaded_kib = 0;
        for p in PATHS {
            eprintln!("xtask: wrk {name} {p} for {seconds} s");
            loads.push(wrk(&addr, p, seconds)?);
            rss_loaded_kib = rss_loaded_kib.max(rss_kib(server.0.id()));
        }
        runs.push(StoreRun {
            store: name.into(),
            loads,
            rss_idle_kib,
            rss_loaded_kib,
        });
    }
    for r in &runs {
        for l in &r.loads {
            if l.errors > 0 {
                bail!(
                    "{} {}: {} requests not answered 2xx within wrk's timeout; the numbers would not mean anything",
                    r.store,
                    l.path,
                    l.errors
                );
            }
        }
    }
    Ok(WebReport {
        sessions,
        seconds,
        runs,
    })
}

fn wrk_once(addr: &str, path: &str) -> Result<()> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(())
}

pub fn section(r: &WebReport, command: &str) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "## The dashboard: `agentctl serve` over {} sessions\n",
        r.sessions
    );
    let _ = writeln!(
        o,
        "wrk, 2 threads and 16 connections for {} s per page, against `agentctl serve` (release build) on loopback, one store after the other; the sessions were recorded through the store's API first (as in the session store section). `/healthz` asks the store its version: the server's own floor. Latencies in milliseconds.\n",
        r.seconds
    );
    let _ = writeln!(o, "| Store | Page | Requests/s | vs /healthz | p50 | p99 |");
    let _ = writeln!(o, "|---|---|---:|---:|---:|---:|");
    for run in &r.runs {
        let floor = run
            .loads
            .iter()
            .find(|l| l.path == "/healthz")
            .map_or(1.0, |l| l.rate);
        for l in &run.loads {
            let _ = writeln!(
                o,
                "| {} | `{}` | {:.0} | {:.2}× | {:.2} | {:.2} |",
                run.store,
                l.path,
                l.rate,
                l.rate / floor,
                l.p50_ms,
                l.p99_ms
            );
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "| Store | RSS idle | RSS under load |");
    let _ = writeln!(o, "|---|---:|---:|");
    for run in &r.runs {
        let _ = writeln!(
            o,
            "| {} | {:.1} MiB | {:.1} MiB |",
            run.store,
            run.rss_idle_kib as f64 / 1024.0,
            run.rss_loaded_kib as f64 / 1024.0
        );
    }
    let _ = writeln!(o);
    let met = |ok: bool| if ok { "**met**" } else { "**not met**" };
    for run in &r.runs {
        let page = run.loads.iter().find(|l| l.path == "/");
        let list = run.loads.iter().find(|l| l.path == "/api/v1/sessions");
        if let (Some(page), Some(list)) = (page, list) {
            let _ = writeln!(
                o,
                "{}: sessions page p99 {:.1} ms, goal under {PAGE_P99_GOAL_MS} ms {}; JSON list {:.0} requests/s, goal at least {LIST_RATE_GOAL} {}; RSS under load {:.1} MiB, goal under {RSS_GOAL_MIB} MiB {}.\n",
                run.store,
                page.p99_ms,
                met(page.p99_ms < PAGE_P99_GOAL_MS),
                list.rate,
                met(list.rate >= LIST_RATE_GOAL),
                run.rss_loaded_kib as f64 / 1024.0,
                met((run.rss_loaded_kib as f64 / 1024.0) < RSS_GOAL_MIB),
            );
        }
    }
    let _ = writeln!(o, "Made by `{command}`.\n");
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_wrk_latency_reports() {
        let out = "Running 10s test @ http://127.0.0.1:1/\n  2 threads and 16 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     1.20ms  300.00us   9.00ms   90.00%\n  Latency Distribution\n     50%  850.00us\n     75%    1.30ms\n     90%    2.00ms\n     99%    1.02s\n  1000 requests in 10.00s, 1.00MB read\nRequests/sec:   2500.50\nTransfer/sec:    100.00KB\n";
        let l = super::parse_wrk(out, "/").unwrap();
        assert!((l.p50_ms - 0.85).abs() < 1e-9);
        assert!((l.p99_ms - 1020.0).abs() < 1e-9);
        assert!((l.rate - 2500.5).abs() < 1e-9);
        assert_eq!(l.errors, 0);
        assert!(super::parse_wrk("nothing", "/").is_err());
        let timeouts = out.replace(
            "Requests/sec:",
            "  Socket errors: connect 0, read 0, write 0, timeout 37\nRequests/sec:",
        );
        assert_eq!(super::parse_wrk(&timeouts, "/").unwrap().errors, 37);
    }
}
