//! `cargo xtask bench-proxy`: the Docker Engine API three ways, all over
//! unix sockets: the daemon's own socket, `agentctl proxy` in front of it,
//! and HAProxy configured as Tecnativa's docker-socket-proxy configures it.
//!
//! wrk cannot speak to a unix socket, so the load comes from this process:
//! hyper's HTTP/1 client on a single-threaded tokio runtime, a few
//! keep-alive connections each sending one request after the other for a
//! few seconds, every request's latency recorded. Streamed logs are one
//! request on one connection, read to the end. Each round measures every
//! request on the three paths in turn, so that a change in the machine's
//! load touches all three alike.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::task::JoinSet;

use crate::Ctx;
use crate::stats::{self, Summary};

pub const DEFAULT_SECONDS: usize = 3;
pub const DEFAULT_ROUNDS: usize = 3;
pub const DEFAULT_CONNECTIONS: usize = 8;
/// The daemon every path ends at.
pub const DOCKER_SOCK: &str = "/var/run/docker.sock";
/// The API version every request names (Docker 20.10's).
pub const API: &str = "/v1.41";
/// The role `agentctl proxy` runs with: discovery and logs, read-only.
pub const ROLE: &str = "logs-reader";
/// Running containers created for `containers/json` to list.
pub const LISTED: usize = 10;
/// The log container writes this many lines of this many bytes (the
/// newline included): 16 MB.
pub const LOG_LINES: u64 = 125_000;
pub const LOG_LINE: u64 = 128;
pub const LOG_BYTES: u64 = LOG_LINES * LOG_LINE;
/// Reads of the logs per path and round.
pub const LOG_READS: usize = 2;
/// Untimed load on every path before the first round, in milliseconds.
pub const WARMUP_MS: u64 = 500;
/// How long a started proxy has to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a proxy sits idle before its RSS is read.
const IDLE: Duration = Duration::from_secs(1);

/// The goals the issue set: what agentctl proxy may add to the median
/// latency over the daemon's own socket, its throughput against HAProxy's,
/// and its RSS when idle.
pub const LATENCY_GOAL_US: f64 = 100.0;
pub const THROUGHPUT_GOAL: f64 = 1.0;
pub const RSS_GOAL_MIB: f64 = 10.0;

/// The three ways to the daemon, in the order every round takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Direct,
    Agentctl,
    Haproxy,
}

pub const VIAS: [Via; 3] = [Via::Direct, Via::Agentctl, Via::Haproxy];

impl Via {
    pub fn label(self) -> &'static str {
        match self {
            Via::Direct => "direct (the daemon's socket)",
            Via::Agentctl => "agentctl proxy",
            Via::Haproxy => "HAProxy (docker-socket-proxy's configuration)",
        }
    }
}

/// One request type on one path, all rounds.
pub struct Load {
    /// Requests completed in all rounds.
    pub requests: usize,
    /// Requests per second in each round.
    pub rates: Vec<f64>,
    /// Every request's latency, all rounds pooled, in microseconds.
    pub latency: Summary,
    pub p99: f64,
    /// Each round's median latency, in microseconds.
    pub round_medians: Vec<f64>,
    /// Requests that got no byte for [`STALL`], left out of the above.
    pub stalls: usize,
}

/// The streamed logs on one path: MB/s (10^6 bytes of log output a
/// second) of every read, and each round's median read.
pub struct Stream {
    pub reads: Vec<f64>,
    pub median: f64,
    pub round_medians: Vec<f64>,
    /// Reads that stalled (no byte for [`STALL`]) and were read again.
    pub stalls: usize,
}

/// One request type: its latency with one connection (nothing queued
/// behind another request), and its throughput with many.
pub struct Requests {
    /// Indexed by [`Via`] in [`VIAS`] order.
    pub single: [Load; 3],
    pub concurrent: [Load; 3],
}

/// Resident memory of a proxy, in KiB: after it started and served the
/// checks, then idle for a second; and idle for a second after all rounds.
#[derive(Clone, Copy, Debug)]
pub struct Rss {
    pub idle_kib: u64,
    pub after_kib: u64,
}

pub struct ProxyReport {
    pub seconds: usize,
    pub rounds: usize,
    pub connections: usize,
    /// `haproxy -v`, its first line.
    pub haproxy_version: String,
    pub ping: Requests,
    pub list: Requests,
    /// Indexed by [`Via`] in [`VIAS`] order.
    pub logs: [Stream; 3],
    /// Containers `containers/json` returned, and its body's size (direct).
    pub listed: usize,
    pub list_bytes: usize,
    /// What `GET /v1.41/images/json`, which neither proxy allows, got on
    /// each path.
    pub denied: [u16; 3],
    pub agentctl_rss: Rss,
    pub haproxy_rss: Rss,
    pub load: (String, String),
}

pub fn check_sizes(seconds: usize, rounds: usize, connections: usize) -> Result<()> {
    ensure!(seconds >= 1, "--seconds {seconds}: at least 1");
    ensure!(rounds >= 1, "--rounds {rounds}: at least one round");
    ensure!(
        (2..=256).contains(&connections),
        "--connections {connections}: 2 to 256 (the latency with one connection is measured \
         anyway)"
    );
    Ok(())
}

/// HAProxy on PATH, or where Debian installs it (/usr/sbin is not on every
/// user's PATH).
pub fn haproxy_bin() -> Option<PathBuf> {
    crate::which("haproxy").or_else(|| {
        ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]
            .map(PathBuf::from)
            .into_iter()
            .find(|p| p.is_file())
    })
}

/// "HAProxy version 2.6.12-1+deb12u4 2026/10/17", or "unknown".
pub fn haproxy_version() -> String {
    haproxy_bin()
        .and_then(|bin| crate::machine::first_line(&bin.to_string_lossy(), &["-v"]))
        .map(|line| line.split(" - ").next().unwrap_or(&line).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Fails early, before any other benchmark runs, without HAProxy or the
/// daemon's socket.
pub fn preflight() -> Result<()> {
    ensure!(
        haproxy_bin().is_some(),
        "the proxy benchmark needs HAProxy (on Debian `apt-get install haproxy`)"
    );
    ensure!(
        Path::new(DOCKER_SOCK).exists(),
        "the proxy benchmark needs the Docker daemon at {DOCKER_SOCK}"
    );
    Ok(())
}

/// HAProxy's configuration: what Tecnativa's docker-socket-proxy runs with
/// CONTAINERS=1 and INFO=1 added to its defaults (PING, VERSION and
/// EVENTS), which is what the logs-reader role allows. GET only, an
/// allow-list of paths, HTTP mode with `http-server-close` (a new
/// connection to the daemon for every request), a log line for every
/// request (on HAProxy's stdout), and no server timeout for events.
pub fn haproxy_config(listen: &Path, upstream: &Path) -> String {
    const ALLOWED: &str = r"^(/v[\d\.]+)?(/\w+)?/(_ping|containers|events|info|version)";
    const EVENTS: &str = r"^(/v[\d\.]+)?(/\w+)?/events";
    format!(
        "\
# Written by `cargo xtask bench-proxy`: Tecnativa docker-socket-proxy's
# design with CONTAINERS=1 and INFO=1 (PING, VERSION, EVENTS by default).
global
    log stdout format raw daemon info
    maxconn 4000

defaults
    mode http
    log global
    option httplog
    option dontlognull
    option http-server-close
    option redispatch
    retries 3
    timeout http-request 10s
    timeout queue 1m
    timeout connect 10s
    timeout client 10m
    timeout server 10m
    timeout http-keep-alive 10s
    timeout check 10s
    maxconn 3000

backend dockerbackend
    server dockersocket {upstream}

backend docker-events
    server dockersocket {upstream}
    timeout server 0

frontend dockerfrontend
    bind {listen} mode 600
    http-request deny unless METH_GET
    http-request allow if {{ path,url_dec -m reg -i {ALLOWED} }}
    http-request deny
    use_backend docker-events if {{ path,url_dec -m reg -i {EVENTS} }}
    default_backend dockerbackend
",
        upstream = upstream.display(),
        listen = listen.display(),
    )
}

/// VmRSS from /proc/PID/status, in KiB.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let kib = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(kib)
}

fn rss_of(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    vm_rss_kib(&text).with_context(|| format!("{path} has no VmRSS line"))
}

/// Counts the log output in Docker's multiplexed stream: frames of an
/// 8-byte header (stream 0, 1 or 2, three zero bytes, the length as a
/// big-endian u32) and that many bytes.
#[derive(Default, Debug)]
pub struct LogFrames {
    header: [u8; 8],
    have: usize,
    left: u64,
    pub payload: u64,
    pub frames: u64,
}

impl LogFrames {
    pub fn feed(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            if self.left > 0 {
                let n = data
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                self.left -= n as u64;
                self.payload += n as u64;
                data = &data[n..];
                continue;
            }
            let n = (8 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 8 {
                let h = self.header;
                ensure!(
                    h[0] <= 2 && h[1..4] == [0, 0, 0],
                    "not Docker's multiplexed log stream (a frame header {h:02x?})"
                );
                self.left = u64::from(u32::from_be_bytes([h[4], h[5], h[6], h[7]]));
                self.have = 0;
                self.frames += 1;
            }
        }
        Ok(())
    }

    /// Whether the stream ended at a frame's end.
    pub fn complete(&self) -> bool {
        self.have == 0 && self.left == 0
    }
}

/// A started proxy, killed when dropped.
struct Daemon {
    name: &'static str,
    child: std::process::Child,
    sock: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn start(name: &'static str, mut cmd: Command, sock: &Path, log: &Path) -> Result<Daemon> {
        let err = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let mut d = Daemon {
            name,
            child,
            sock: sock.to_path_buf(),
            log: log.to_path_buf(),
        };
        d.wait_ready()?;
        Ok(d)
    }

    /// Waits until the socket accepts a connection.
    fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) instead of listening on {}: {}",
                    self.name,
                    self.sock.display(),
                    self.stderr()
                );
            }
            if std::os::unix::net::UnixStream::connect(&self.sock).is_ok() {
                return Ok(());
            }
            if start.elapsed() > START_TIMEOUT {
                bail!(
                    "{} did not listen on {} within {} s: {}",
                    self.name,
                    self.sock.display(),
                    START_TIMEOUT.as_secs(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What it wrote to stderr so far, or a note that it wrote nothing.
    fn stderr(&self) -> String {
        match std::fs::read_to_string(&self.log) {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => "(nothing on stderr)".into(),
        }
    }

    fn rss(&mut self) -> Result<u64> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}): {}", self.name, self.stderr());
        }
        rss_of(self.child.id())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The containers this benchmark created, all with one label; removed when
/// dropped, whatever happened.
struct Containers {
    label: String,
}

impl Containers {
    fn remove(&self) -> Result<()> {
        let out = Command::new("docker")
            .args(["ps", "-a", "-q", "--no-trunc", "--filter"])
            .arg(format!("label={}", self.label))
            .output()
            .context("cannot run docker ps")?;
        ensure!(
            out.status.success(),
            "docker ps failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let out = Command::new("docker")
            .args(["rm", "-f", "-v"])
            .args(&ids)
            .output()
            .context("cannot run docker rm")?;
        ensure!(
            out.status.success(),
            "docker rm -f of the benchmark's containers failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    /// `docker run -d` with the label, started; see [`started`].
    fn run(&self, args: &[&str]) -> Result<std::process::Child> {
        Command::new("docker")
            .args(["run", "-d", "--network", "none", "--label", &self.label])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run docker")
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("xtask: {e:#}");
        }
    }
}

/// The id `docker run -d` printed.
fn started(child: std::process::Child) -> Result<String> {
    let out = child.wait_with_output().context("cannot run docker")?;
    if !out.status.success() {
        bail!(
            "docker run {} failed (make the image with images/make-base.sh): {}",
            crate::docker::IMAGE,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    ensure!(!id.is_empty(), "docker run -d printed no container id");
    Ok(id)
}

pub fn bench_proxy(
    ctx: &Ctx,
    seconds: usize,
    rounds: usize,
    connections: usize,
) -> Result<ProxyReport> {
    preflight()?;
    let haproxy = haproxy_bin().context("no haproxy")?;
    let tmp = tempfile::Builder::new()
        .prefix("agentctl-bench-proxy-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let base = tmp.path();
    let containers = Containers {
        label: format!("io.agentctl.bench=proxy-{}", std::process::id()),
    };

    let image = crate::docker::IMAGE;
    eprintln!("xtask: starting {LISTED} containers of {image} for containers/json to list");
    // All of them started at once; every one waited for before an error
    // counts, so that none is created after the guard removed the others.
    let children: Vec<_> = (0..LISTED)
        .map(|_| containers.run(&[image, "sleep", "infinity"]))
        .collect();
    let ids: Vec<Result<String>> = children.into_iter().map(|c| c.and_then(started)).collect();
    let ids: Vec<String> = ids.into_iter().collect::<Result<_>>()?;
    eprintln!(
        "xtask: a container of {image} writing {LOG_LINES} lines of {LOG_LINE} bytes to stdout"
    );
    let script = format!(
        "yes \"$(printf '%0{}d' 0)\" | head -n {LOG_LINES}",
        LOG_LINE - 1
    );
    let logger = started(containers.run(&[image, "sh", "-c", &script])?)?;
    let out = Command::new("docker")
        .args(["wait", &logger])
        .output()
        .context("cannot run docker wait")?;
    ensure!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "0",
        "the log container did not exit 0: {}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );

    let upstream = Path::new(DOCKER_SOCK);
    let agentctl_sock = base.join("agentctl.sock");
    eprintln!(
        "xtask: agentctl proxy --role {ROLE} on {}",
        agentctl_sock.display()
    );
    let mut cmd = crate::launch::agentctl_cmd(ctx, base);
    cmd.args(["--store", "none", "proxy", "--listen"])
        .arg(format!("unix://{}", agentctl_sock.display()))
        .arg("--upstream")
        .arg(format!("unix://{}", upstream.display()))
        .args(["--role", ROLE]);
    let mut agentctl = Daemon::start(
        "agentctl proxy",
        cmd,
        &agentctl_sock,
        &base.join("agentctl.log"),
    )
    .context("the agentctl proxy path does not work")?;

    let haproxy_sock = base.join("haproxy.sock");
    let cfg = base.join("haproxy.cfg");
    std::fs::write(&cfg, haproxy_config(&haproxy_sock, upstream))
        .with_context(|| format!("cannot write {}", cfg.display()))?;
    eprintln!("xtask: haproxy -f {} -db", cfg.display());
    let mut cmd = Command::new(&haproxy);
    cmd.arg("-f").arg(&cfg).arg("-db");
    let mut haproxy = Daemon::start("HAProxy", cmd, &haproxy_sock, &base.join("haproxy.log"))?;

    let socks = [upstream.to_path_buf(), agentctl_sock, haproxy_sock];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")?;
    let plan = Plan {
        socks: &socks,
        seconds,
        rounds,
        connections,
        ids: &ids,
        logger: &logger,
    };
    let checked = rt.block_on(plan.check())?;
    std::thread::sleep(IDLE);
    let idle = (agentctl.rss()?, haproxy.rss()?);

    let load_before = crate::machine::loadavg();
    let m = rt.block_on(plan.measure())?;
    let load_after = crate::machine::loadavg();
    std::thread::sleep(IDLE);
    let after = (agentctl.rss()?, haproxy.rss()?);
    drop(agentctl);
    drop(haproxy);
    containers.remove()?;

    Ok(ProxyReport {
        seconds,
        rounds,
        connections,
        haproxy_version: haproxy_version(),
        ping: m.ping,
        list: m.list,
        logs: m.logs,
        listed: checked.listed,
        list_bytes: checked.list_bytes,
        denied: checked.denied,
        agentctl_rss: Rss {
            idle_kib: idle.0,
            after_kib: after.0,
        },
        haproxy_rss: Rss {
            idle_kib: idle.1,
            after_kib: after.1,
        },
        load: (load_before, load_after),
    })
}

type Sender = SendRequest<Empty<Bytes>>;

/// A keep-alive HTTP/1 connection to the socket.
async fn connect(sock: &Path) -> Result<Sender> {
    let stream = UnixStream::connect(sock)
        .await
        .with_context(|| format!("cannot connect to {}", sock.display()))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP handshake on {} failed", sock.display()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// No byte of a response for this long: the request stalled. A healthy
/// response here takes a millisecond, a whole read of the logs about one
/// second.
pub const STALL: Duration = Duration::from_secs(2);
/// Stalls in a row after which a path counts as broken.
const MAX_STALLS: usize = 10;

/// The error of a request that got no byte for [`STALL`].
#[derive(Debug)]
struct Stalled;

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no byte of the response for {} s", STALL.as_secs())
    }
}

impl std::error::Error for Stalled {}

fn is_stall(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Stalled>().is_some()
}

/// `f`, or [`Stalled`] if it takes longer than [`STALL`].
async fn within<T>(f: impl std::future::Future<Output = T>) -> Result<T> {
    tokio::time::timeout(STALL, f)
        .await
        .map_err(|_| anyhow::Error::new(Stalled))
}

/// `GET uri` on the connection; the body goes to `data` as it comes.
async fn get(
    s: &mut Sender,
    uri: &str,
    mut data: impl FnMut(&[u8]) -> Result<()>,
) -> Result<StatusCode> {
    within(s.ready()).await?.context("the connection closed")?;
    let req = Request::get(uri)
        .header(hyper::header::HOST, "docker")
        .body(Empty::new())?;
    let resp = within(s.send_request(req)).await??;
    let status = resp.status();
    let mut body = resp.into_body();
    while let Some(frame) = within(body.frame()).await? {
        if let Some(d) = frame?.data_ref() {
            data(d)?;
        }
    }
    Ok(status)
}

/// One `GET` on a fresh connection: the status and the body.
async fn fetch(sock: &Path, uri: &str) -> Result<(StatusCode, Vec<u8>)> {
    let mut s = connect(sock).await?;
    let mut body = Vec::new();
    let status = get(&mut s, uri, |d| {
        body.extend_from_slice(d);
        Ok(())
    })
    .await
    .with_context(|| format!("GET {uri} on {} failed", sock.display()))?;
    Ok((status, body))
}

/// What one measurement of request load gave.
struct LoadRun {
    latencies: Vec<f64>,
    rate: f64,
    stalls: usize,
}

/// `connections` connections sending `GET uri` back to back for `dur`. A
/// stalled request is counted, and a fresh connection takes the place of
/// its own.
async fn load(sock: &Path, uri: &str, connections: usize, dur: Duration) -> Result<LoadRun> {
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        senders.push(connect(sock).await?);
    }
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = JoinSet::new();
    for mut s in senders {
        let uri = uri.to_string();
        let sock = sock.to_path_buf();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            let mut last = start;
            let (mut stalls, mut in_a_row) = (0, 0);
            while Instant::now() < deadline {
                let t = Instant::now();
                let status = match get(&mut s, &uri, |_| Ok(())).await {
                    Ok(status) => status,
                    Err(e) if is_stall(&e) && in_a_row < MAX_STALLS => {
                        stalls += 1;
                        in_a_row += 1;
                        s = connect(&sock).await?;
                        continue;
                    }
                    Err(e) => return Err(e.context(format!("GET {uri}"))),
                };
                ensure!(status == StatusCode::OK, "GET {uri} got {status}");
                in_a_row = 0;
                last = Instant::now();
                latencies.push((last - t).as_secs_f64() * 1e6);
            }
            Ok((latencies, last, stalls))
        });
    }
    let mut latencies = Vec::new();
    let mut end = start;
    let mut stalls = 0;
    while let Some(r) = tasks.join_next().await {
        let (l, last, n) = r.context("a load task panicked")??;
        latencies.extend(l);
        end = end.max(last);
        stalls += n;
    }
    let secs = (end - start).as_secs_f64();
    ensure!(!latencies.is_empty(), "no GET {uri} completed");
    Ok(LoadRun {
        rate: latencies.len() as f64 / secs,
        latencies,
        stalls,
    })
}

/// One read of the log container's logs to the end, over a fresh
/// connection: the log bytes and MB/s, or `None` if it stalled.
async fn read_logs_once(sock: &Path, uri: &str) -> Result<Option<(u64, f64)>> {
    let mut s = connect(sock).await?;
    let mut frames = LogFrames::default();
    let t = Instant::now();
    let status = match get(&mut s, uri, |d| frames.feed(d)).await {
        Ok(status) => status,
        Err(e) if is_stall(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let secs = t.elapsed().as_secs_f64();
    ensure!(status == StatusCode::OK, "GET {uri} got {status}");
    ensure!(frames.complete(), "the log stream ended inside a frame");
    Ok(Some((frames.payload, frames.payload as f64 / 1e6 / secs)))
}

/// The logs read to the end, again after every stall: the log bytes, MB/s
/// and the stalls before it.
async fn read_logs(sock: &Path, uri: &str) -> Result<(u64, f64, usize)> {
    for stalls in 0..=MAX_STALLS {
        if let Some((bytes, mbps)) = read_logs_once(sock, uri).await? {
            return Ok((bytes, mbps, stalls));
        }
    }
    bail!("GET {uri} stalled {} times in a row", MAX_STALLS + 1)
}

/// The sockets and what to ask them.
struct Plan<'a> {
    socks: &'a [PathBuf; 3],
    seconds: usize,
    rounds: usize,
    connections: usize,
    ids: &'a [String],
    logger: &'a str,
}

/// What the checks before the rounds found.
struct Checked {
    listed: usize,
    list_bytes: usize,
    denied: [u16; 3],
}

/// Every round's numbers.
struct Measured {
    ping: Requests,
    list: Requests,
    logs: [Stream; 3],
}

#[derive(Default)]
struct LoadAcc {
    rates: Vec<f64>,
    latencies: Vec<f64>,
    round_medians: Vec<f64>,
    stalls: usize,
}

impl LoadAcc {
    fn add(&mut self, run: LoadRun) -> Result<()> {
        self.rates.push(run.rate);
        self.stalls += run.stalls;
        // Microseconds: Summary does not mind the unit.
        self.round_medians
            .push(Summary::from_millis(&run.latencies)?.median);
        self.latencies.extend(run.latencies);
        Ok(())
    }

    fn finish(self) -> Result<Load> {
        Ok(Load {
            requests: self.latencies.len(),
            latency: Summary::from_millis(&self.latencies)?,
            p99: stats::percentile(&self.latencies, 99)?,
            rates: self.rates,
            round_medians: self.round_medians,
            stalls: self.stalls,
        })
    }
}

#[derive(Default)]
struct StreamAcc {
    reads: Vec<f64>,
    round_medians: Vec<f64>,
    stalls: usize,
}

impl StreamAcc {
    fn finish(self) -> Result<Stream> {
        Ok(Stream {
            median: Summary::from_millis(&self.reads)?.median,
            reads: self.reads,
            round_medians: self.round_medians,
            stalls: self.stalls,
        })
    }
}

impl Plan<'_> {
    fn ping(&self) -> String {
        format!("{API}/_ping")
    }

    fn list(&self) -> String {
        format!("{API}/containers/json")
    }

    fn logs(&self) -> String {
        format!("{API}/containers/{}/logs?stdout=1", self.logger)
    }

    /// Every path answers every request as the daemon does, and both
    /// proxies refuse what their role leaves out.
    async fn check(&self) -> Result<Checked> {
        let mut listed = 0;
        let mut list_bytes = 0;
        let mut denied = [0; 3];
        for (via, sock) in VIAS.iter().zip(self.socks) {
            let name = via.label();
            let (status, body) = fetch(sock, &self.ping()).await?;
            ensure!(
                status == StatusCode::OK && body == b"OK",
                "{name}: GET {} got {status} {:?}",
                self.ping(),
                String::from_utf8_lossy(&body)
            );
            let (status, body) = fetch(sock, &self.list()).await?;
            ensure!(
                status == StatusCode::OK,
                "{name}: GET {} got {status} {:?}",
                self.list(),
                String::from_utf8_lossy(&body)
            );
            let list: serde_json::Value = serde_json::from_slice(&body)
                .with_context(|| format!("{name}: containers/json is not JSON"))?;
            let list = list
                .as_array()
                .with_context(|| format!("{name}: containers/json is not a list"))?;
            for id in self.ids {
                ensure!(
                    list.iter().any(|c| c["Id"].as_str() == Some(id)),
                    "{name}: containers/json does not list container {id}"
                );
            }
            if *via == Via::Direct {
                (listed, list_bytes) = (list.len(), body.len());
            }
            let (bytes, _, _) = read_logs(sock, &self.logs())
                .await
                .with_context(|| format!("{name}: reading the logs"))?;
            ensure!(
                bytes == LOG_BYTES,
                "{name}: the logs hold {bytes} bytes of output, not the {LOG_BYTES} written \
                 (does the daemon's log driver rotate or drop them?)"
            );
            let uri = format!("{API}/images/json");
            let (status, _) = fetch(sock, &uri).await?;
            denied[*via as usize] = status.as_u16();
            if *via != Via::Direct {
                ensure!(
                    status.is_client_error(),
                    "{name}: GET {uri} got {status}; the proxy should refuse it"
                );
            }
        }
        Ok(Checked {
            listed,
            list_bytes,
            denied,
        })
    }

    async fn measure(&self) -> Result<Measured> {
        let dur = Duration::from_secs(self.seconds as u64);
        let (ping, list, logs) = (self.ping(), self.list(), self.logs());
        eprintln!("xtask: warming up every path");
        for sock in self.socks {
            for uri in [&ping, &list] {
                load(
                    sock,
                    uri,
                    self.connections,
                    Duration::from_millis(WARMUP_MS),
                )
                .await?;
            }
        }
        // Per request type: one connection, then many; each on every path.
        let mut accs: [[[LoadAcc; 3]; 2]; 2] = Default::default();
        let mut streams: [StreamAcc; 3] = Default::default();
        for r in 1..=self.rounds {
            eprintln!("xtask: round {r} of {}", self.rounds);
            for (uri, acc) in [&ping, &list].into_iter().zip(accs.iter_mut()) {
                for (conns, acc) in [1, self.connections].into_iter().zip(acc.iter_mut()) {
                    for (via, sock) in VIAS.iter().zip(self.socks) {
                        let run = load(sock, uri, conns, dur).await.context(via.label())?;
                        acc[*via as usize].add(run)?;
                    }
                }
            }
            for (via, sock) in VIAS.iter().zip(self.socks) {
                let acc = &mut streams[*via as usize];
                let mut this_round = Vec::new();
                for _ in 0..LOG_READS {
                    let (bytes, mbps, stalls) = read_logs(sock, &logs)
                        .await
                        .with_context(|| format!("{}: reading the logs", via.label()))?;
                    ensure!(bytes == LOG_BYTES, "{}: {bytes} bytes of logs", via.label());
                    this_round.push(mbps);
                    acc.stalls += stalls;
                }
                acc.round_medians
                    .push(Summary::from_millis(&this_round)?.median);
                acc.reads.extend(this_round);
            }
        }
        let finish = |[a, b, c]: [LoadAcc; 3]| -> Result<[Load; 3]> {
            Ok([a.finish()?, b.finish()?, c.finish()?])
        };
        let [[ping_1, ping_n], [list_1, list_n]] = accs;
        let ping = Requests {
            single: finish(ping_1)?,
            concurrent: finish(ping_n)?,
        };
        let list = Requests {
            single: finish(list_1)?,
            concurrent: finish(list_n)?,
        };
        let [a, b, c] = streams;
        let logs = [a.finish()?, b.finish()?, c.finish()?];
        Ok(Measured { ping, list, logs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxy_config_binds_the_socket_and_allows_the_role() {
        let cfg = haproxy_config(Path::new("/tmp/x/haproxy.sock"), Path::new(DOCKER_SOCK));
        assert!(cfg.contains("    bind /tmp/x/haproxy.sock mode 600\n"));
        assert!(cfg.contains("    server dockersocket /var/run/docker.sock\n"));
        assert!(cfg.contains("option http-server-close"));
        assert!(cfg.contains("http-request deny unless METH_GET"));
        assert!(cfg.contains(
            r"http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?(/\w+)?/(_ping|containers|events|info|version) }"
        ));
        // The allow rule comes before the catch-all deny.
        let allow = cfg.find("http-request allow").unwrap();
        let deny = cfg.find("    http-request deny\n").unwrap();
        assert!(allow < deny);
        // Events stream without a server timeout.
        let events = cfg.find("backend docker-events").unwrap();
        assert!(cfg[events..].contains("timeout server 0"));
    }

    /// HAProxy itself accepts the configuration, where it is installed.
    #[test]
    fn haproxy_accepts_the_config() {
        let Some(bin) = haproxy_bin() else {
            eprintln!("haproxy is not installed; skipping");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(
            &cfg,
            haproxy_config(&dir.path().join("h.sock"), Path::new(DOCKER_SOCK)),
        )
        .unwrap();
        let out = Command::new(bin)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn reads_vm_rss() {
        let status = "Name:\thaproxy\nVmPeak:\t  20000 kB\nVmRSS:\t    7424 kB\nThreads:\t2\n";
        assert_eq!(vm_rss_kib(status), Some(7424));
        assert_eq!(vm_rss_kib("Name:\tx\n"), None);
        assert_eq!(vm_rss_kib("VmRSS:\t12 MB\n"), None);
        // Our own process has one.
        let me = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(vm_rss_kib(&me).unwrap() > 0);
    }

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![stream, 0, 0, 0];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn counts_log_frames_across_chunks() {
        let mut stream = frame(1, b"hello\n");
        stream.extend(frame(2, b""));
        stream.extend(frame(1, &[b'x'; 300]));
        // Every way of cutting the stream in two, and byte by byte.
        for cut in 0..=stream.len() {
            let mut f = LogFrames::default();
            f.feed(&stream[..cut]).unwrap();
            f.feed(&stream[cut..]).unwrap();
            assert_eq!((f.payload, f.frames), (306, 3));
            assert!(f.complete());
        }
        let mut f = LogFrames::default();
        for b in &stream {
            f.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!((f.payload, f.frames), (306, 3));
        // Cut short inside a header, or inside a payload.
        let mut f = LogFrames::default();
        f.feed(&stream[..3]).unwrap();
        assert!(!f.complete());
        let mut f = LogFrames::default();
        f.feed(&stream[..10]).unwrap();
        assert!(!f.complete());
    }

    #[test]
    fn refuses_what_is_not_a_log_stream() {
        let mut f = LogFrames::default();
        assert!(f.feed(b"{\"message\":\"no such container\"}").is_err());
    }

    #[test]
    fn load_summaries_pool_the_rounds() {
        let mut acc = LoadAcc::default();
        for round in [vec![100.0, 200.0, 300.0], vec![400.0, 500.0]] {
            acc.add(LoadRun {
                rate: round.len() as f64,
                latencies: round,
                stalls: 1,
            })
            .unwrap();
        }
        let l = acc.finish().unwrap();
        assert_eq!((l.requests, l.stalls), (5, 2));
        assert_eq!(l.rates, vec![3.0, 2.0]);
        assert_eq!(l.round_medians, vec![200.0, 450.0]);
        assert_eq!((l.latency.min, l.latency.median), (100.0, 300.0));
        assert_eq!((l.latency.p95, l.p99), (500.0, 500.0));
    }

    #[test]
    fn sizes() {
        assert!(check_sizes(1, 1, 2).is_ok());
        assert!(check_sizes(0, 1, 2).is_err());
        assert!(check_sizes(1, 0, 2).is_err());
        assert!(check_sizes(1, 1, 1).is_err());
        assert_eq!(LOG_BYTES, 16_000_000);
    }
}
