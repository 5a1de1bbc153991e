//! `cargo xtask bench-team`: the team server's queue on Postgres.
//!
//! - Claim latency: from `POST /api/v1/sessions` (sent to `agentctl serve`)
//!   to the session running on one of two workers (its `started_at`),
//!   against a direct `agentctl run` on the same store, from its spawn to
//!   its `started_at`. Both read the same clock (this host's).
//! - Throughput: sessions started a second by two workers (capacity 2
//!   each) draining a queue of `true`s, against two `agentctl run` loops.
//! - Depth: the claim statement itself at 10 and at 10,000 queued
//!   requests (no worker running; a registered worker id claims).

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use http_body_util::BodyExt;
use store::SessionStore;
use store::queue::{NewRequest, NewWorker, RequestState, WorkspaceSource};
use store::testing;

use crate::Ctx;
use crate::stats::percentile;
use crate::web::{BenchStores, Kill, bench_stores, serve};

pub const DEFAULT_LATENCY_RUNS: usize = 100;
pub const DEFAULT_THROUGHPUT: usize = 300;
/// Goal (issue 13): p50 claim latency no more than a direct launch + 20 ms.
pub const GOAL_MS: f64 = 20.0;

pub struct TeamReport {
    pub runs: usize,
    pub queued: usize,
    pub team_ms: Vec<f64>,
    pub direct_ms: Vec<f64>,
    pub team_rate: f64,
    pub direct_rate: f64,
    pub depth: Vec<(usize, Vec<f64>)>,
}

fn now_ms() -> i64 {
    store::now_ms()
}

fn worker(
    ctx: &Ctx,
    url: &str,
    dir: &std::path::Path,
    name: &str,
    roots: &std::path::Path,
) -> Result<Kill> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let mut c = Command::new(&ctx.agentctl)
        .args(["--store", url, "worker", "--name", name, "--capacity", "2"])
        .arg("--data-dir")
        .arg(dir.join(name))
        .arg("--workspace-root")
        .arg(roots)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start agentctl worker")?;
    let mut line = String::new();
    std::io::BufReader::new(c.stderr.take().context("no stderr")?).read_line(&mut line)?;
    ensure!(line.contains("ready"), "the worker said {line:?}");
    drop(log);
    Ok(Kill(c))
}

/// POSTs a session request for `true` (no users: loopback is admin).
async fn post(addr: &str) -> Result<String> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    let body = r#"{"profile":"generic","workspace":{"path":"proj"},"command":["true"]}"#;
    let req = hyper::Request::post("/api/v1/sessions")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))?;
    let resp = send.send_request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    ensure!(
        status.as_u16() == 202,
        "POST answered {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    let v: serde_json::Value = serde_json::from_slice(&bytes)?;
    Ok(v["request"].as_str().context("no request id")?.to_string())
}

async fn started_at(store: &SessionStore, id: &str, limit: Duration) -> Result<i64> {
    let until = Instant::now() + limit;
    loop {
        if let Ok(s) = store.get(id).await
            && let Some(at) = s.started_at
        {
            return Ok(at);
        }
        if Instant::now() > until {
            bail!("session {id} did not start within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub fn bench_team(ctx: &Ctx, runs: usize, queued: usize) -> Result<TeamReport> {
    let BenchStores { rt, pg, dir, .. } = bench_stores("agentctl-bench-team-")?;
    let url = pg.url.clone();
    let roots = dir.path().join("roots");
    // Workers run as root: everyone's root is roots/<user>, and the
    // loopback user without accounts is the Unix user.
    let user = crate::machine::first_line("id", &["-un"]).context("who runs this (id -un)")?;
    std::fs::create_dir_all(roots.join(&user).join("proj"))?;
    let proj = roots.join(&user).join("proj");
    let store = rt.block_on(SessionStore::connect(&url))?;
    let (server, addr) = serve(ctx, &url)?;
    let w1 = worker(ctx, &url, dir.path(), "bench-w1", &roots)?;
    let w2 = worker(ctx, &url, dir.path(), "bench-w2", &roots)?;

    // Latency, one request at a time, the direct launch beside it.
    let mut team_ms = Vec::new();
    let mut direct_ms = Vec::new();
    for i in 0..runs + 5 {
        let t0 = now_ms();
        let id = rt.block_on(post(&addr))?;
        let at = rt.block_on(started_at(&store, &id, Duration::from_secs(30)))?;
        let done_until = Instant::now() + Duration::from_secs(30);
        while rt.block_on(store.request(&id))?.state != RequestState::Done {
            ensure!(Instant::now() < done_until, "request {id} never finished");
            std::thread::sleep(Duration::from_millis(2));
        }
        let t1 = now_ms();
        let o = Command::new(&ctx.agentctl)
            .args(["--store", &url, "run", "-q", "-w"])
            .arg(&proj)
            .args(["--", "true"])
            .stdin(Stdio::null())
            .output()?;
        ensure!(
            o.status.success(),
            "agentctl run: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let last = rt.block_on(store.list(&store::ListQuery {
            all: true,
            limit: 1,
            offset: 0,
        }))?;
        let direct_at = last
            .first()
            .and_then(|s| s.started_at)
            .context("the direct run has no started_at")?;
        // The first few warm both paths up.
        if i >= 5 {
            team_ms.push((at - t0) as f64);
            direct_ms.push((direct_at - t1) as f64);
        }
    }

    // Throughput: a queue of `queued` trues drained by both workers.
    let t0 = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..queued {
        let id = testing::random_hex(16);
        rt.block_on(store.enqueue(&request(&id, &user)))?;
        ids.push(id);
    }
    let until = Instant::now() + Duration::from_secs(600);
    loop {
        // One indexed row or none: the poll costs the store little.
        let open = rt.block_on(store.requests(
            None,
            &[
                RequestState::Queued,
                RequestState::Claimed,
                RequestState::Started,
            ],
            1,
        ))?;
        if open.is_empty() {
            break;
        }
        ensure!(Instant::now() < until, "the queue did not drain");
        std::thread::sleep(Duration::from_millis(20));
    }
    let team_rate = queued as f64 / t0.elapsed().as_secs_f64();
    drop(w1);
    drop(w2);
    // The same number of direct runs from two loops, side by side.
    let t0 = Instant::now();
    let per = queued / 2;
    let loops: Vec<std::thread::JoinHandle<Result<()>>> = (0..2)
        .map(|_| {
            let (agentctl, url, proj) = (ctx.agentctl.clone(), url.clone(), proj.clone());
            std::thread::spawn(move || {
                for _ in 0..per {
                    let o = Command::new(&agentctl)
                        .args(["--store", &url, "run", "-q", "-w"])
                        .arg(&proj)
                        .args(["--", "true"])
                        .stdin(Stdio::null())
                        .output()?;
                    ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                }
                Ok(())
            })
        })
        .collect();
    for l in loops {
        l.join().map_err(|_| anyhow::anyhow!("a loop panicked"))??;
    }
    let direct_rate = (per * 2) as f64 / t0.elapsed().as_secs_f64();

    // Depth: the claim statement at 10 and at 10,000 queued.
    let mut depth = Vec::new();
    let fake = testing::random_hex(16);
    rt.block_on(store.register_worker(
        &NewWorker {
            id: fake.clone(),
            name: "bench-claimer".into(),
            host: "bench".into(),
            backend: store::Backend::Native,
            labels: Default::default(),
            capacity: 1,
        },
        now_ms(),
    ))?;
    for n in [10usize, 10_000] {
        let filler: Vec<String> = (0..n).map(|_| testing::random_hex(16)).collect();
        rt.block_on(async {
            for id in &filler {
                store.enqueue(&request(id, &user)).await?;
            }
            Ok::<_, anyhow::Error>(())
        })?;
        let mut times = Vec::new();
        for _ in 0..200 {
            // One in, one out: the depth stays at n.
            rt.block_on(store.enqueue(&request(&testing::random_hex(16), &user)))?;
            let t = Instant::now();
            let got = rt.block_on(store.claim_request(&fake, now_ms()))?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            let r = got.context("nothing to claim")?;
            rt.block_on(store.finish_request(&r.id, &fake, RequestState::Done, None, now_ms()))?;
        }
        // Empty the queue for the next depth.
        while let Some(r) = rt.block_on(store.claim_request(&fake, now_ms()))? {
            rt.block_on(store.finish_request(&r.id, &fake, RequestState::Done, None, now_ms()))?;
        }
        depth.push((n, times));
    }
    drop(server);
    rt.block_on(store.close());
    rt.block_on(pg.finish());
    Ok(TeamReport {
        runs,
        queued,
        team_ms,
        direct_ms,
        team_rate,
        direct_rate,
        depth,
    })
}

fn request(id: &str, user: &str) -> NewRequest {
    NewRequest {
        id: id.to_string(),
        user: user.to_string(),
        actor: "bench".into(),
        profile: "generic".into(),
        workspace: WorkspaceSource::Path {
            path: "proj".into(),
        },
        command: vec!["true".into()],
        image: None,
        backend: None,
        labels: Default::default(),
        created_at: now_ms(),
    }
}

pub fn section(r: &TeamReport, command: &str) -> Result<String> {
    use std::fmt::Write as _;
    let mut o = String::new();
    let p = |v: &[f64], q| percentile(v, q);
    let (t50, t99) = (p(&r.team_ms, 50)?, p(&r.team_ms, 99)?);
    let (d50, d99) = (p(&r.direct_ms, 50)?, p(&r.direct_ms, 99)?);
    let _ = writeln!(o, "## The team server: the queue on Postgres\n");
    let _ = writeln!(
        o,
        "`agentctl serve` and two `agentctl worker`s (native backend, capacity 2 each) on this host over one Postgres database (release build). Claim latency: from sending `POST /api/v1/sessions` to the session's `started_at` on record, one request at a time ({} runs after 5 warm-up), against a direct `agentctl run -q -- true` on the same store from its spawn to its `started_at`. Milliseconds, store clock (this host).\n",
        r.runs
    );
    let _ = writeln!(o, "| Path | p50 | p99 |");
    let _ = writeln!(o, "|---|---:|---:|");
    let _ = writeln!(
        o,
        "| `POST /api/v1/sessions` → running on a worker | {t50:.0} | {t99:.0} |"
    );
    let _ = writeln!(o, "| `agentctl run` → running | {d50:.0} | {d99:.0} |");
    let _ = writeln!(
        o,
        "\nGoal: p50 no more than the direct launch + {GOAL_MS:.0} ms: {} ({:+.0} ms).\n",
        if t50 <= d50 + GOAL_MS {
            "met"
        } else {
            "not met"
        },
        t50 - d50
    );
    let _ = writeln!(
        o,
        "Throughput: {} requests of `true` queued at once and drained by the two workers, against the same number of `agentctl run -q -- true` from two loops side by side.\n",
        r.queued
    );
    let _ = writeln!(o, "| Path | Sessions/s | Ratio |");
    let _ = writeln!(o, "|---|---:|---:|");
    let _ = writeln!(
        o,
        "| two workers | {:.1} | {:.2}× |",
        r.team_rate,
        r.team_rate / r.direct_rate
    );
    let _ = writeln!(
        o,
        "| two `agentctl run` loops | {:.1} | 1.00× |",
        r.direct_rate
    );
    let _ = writeln!(
        o,
        "\nQueue depth: the claim statement (`FOR UPDATE SKIP LOCKED` on the partial index of queued requests) timed from the client, 200 claims with the depth held by one request in for each out.\n"
    );
    let _ = writeln!(o, "| Queued | p50 | p99 |");
    let _ = writeln!(o, "|---:|---:|---:|");
    for (n, t) in &r.depth {
        let _ = writeln!(o, "| {n} | {:.2} ms | {:.2} ms |", p(t, 50)?, p(t, 99)?);
    }
    let _ = writeln!(o, "\nMade with `{command}`.\n");
    Ok(o)
}
