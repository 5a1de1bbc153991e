//! `cargo xtask bench-egress`: the allowlist network's proxy against a
//! direct connection, in one run, on a lab of two network namespaces (as
//! the tests build it): agentctl and the direct client in the "host" one,
//! a server in the "net" one, reached at 11.0.0.10:8080 by the name
//! bench.lab-allowed.org (an /etc/hosts entry in a private mount
//! namespace, read by the proxy's resolver).
//!
//! The same Python client measures both ways (egress/client.py): time to
//! a tunnel's first echoed byte (open, CONNECT for the proxy, one byte out
//! and back), 1 GiB downloads, the DNS stub's answer time, and, while it
//! holds 100 tunnels open, the growth of the egress process's resident set.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::Ctx;
use crate::stats::percentile;

const CLIENT: &str = include_str!("egress/client.py");
/// Goals (issue 15).
pub const GOAL_ADDED_P50_MS: f64 = 1.0;
pub const GOAL_THROUGHPUT: f64 = 0.9;

pub struct EgressReport {
    pub direct_ms: Vec<f64>,
    pub proxy_ms: Vec<f64>,
    pub direct_mib_s: Vec<f64>,
    pub proxy_mib_s: Vec<f64>,
    pub dns_ms: Vec<f64>,
    pub rss_base_kib: u64,
    pub rss_100_kib: u64,
}

fn sh(args: &[&str]) -> Result<()> {
    let o = Command::new(args[0]).args(&args[1..]).output()?;
    ensure!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}

struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The lab server: `E` echoes one byte; `B` and a big-endian u64 sends
/// that many bytes.
fn serve(listener: TcpListener) {
    for conn in listener.incoming() {
        let Ok(mut c) = conn else { continue };
        std::thread::spawn(move || {
            let _ = c.set_nodelay(true);
            let mut op = [0u8; 1];
            if c.read_exact(&mut op).is_err() {
                return;
            }
            match op[0] {
                b'E' => {
                    let _ = c.write_all(b"E");
                    let _ = c.read(&mut op);
                }
                b'B' => {
                    let mut n = [0u8; 8];
                    if c.read_exact(&mut n).is_err() {
                        return;
                    }
                    let mut left = u64::from_be_bytes(n);
                    let chunk = vec![b'x'; 1 << 20];
                    while left > 0 {
                        let k = left.min(chunk.len() as u64) as usize;
                        if c.write_all(&chunk[..k]).is_err() {
                            return;
                        }
                        left -= k as u64;
                    }
                }
                _ => {}
            }
        });
    }
}

fn rss_kib(pid: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

fn egress_pid() -> Result<String> {
    let o = Command::new("pgrep").args(["-f", "__egress"]).output()?;
    let pids: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    ensure!(
        pids.len() == 1,
        "expected one egress process, found {pids:?}"
    );
    Ok(pids[0].clone())
}

fn wait_file(p: &Path, deadline: Instant) -> Result<()> {
    while !p.exists() {
        ensure!(
            Instant::now() < deadline,
            "timed out waiting for {}",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

pub fn bench_egress(ctx: &Ctx) -> Result<EgressReport> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "bench-egress makes network namespaces: run it as root"
    );
    let tag = format!("agb{}", std::process::id());
    let (h, n) = (format!("{tag}h"), format!("{tag}n"));
    sh(&["ip", "netns", "add", &h])?;
    let _guard = Netns(vec![h.clone(), n.clone()]);
    sh(&["ip", "netns", "add", &n])?;
    let (vh, vn) = (format!("{tag}a"), format!("{tag}b"));
    sh(&[
        "ip", "link", "add", &vh, "type", "veth", "peer", "name", &vn,
    ])?;
    sh(&["ip", "link", "set", &vh, "netns", &h])?;
    sh(&["ip", "link", "set", &vn, "netns", &n])?;
    for (ns, dev, addr) in [(&h, &vh, "11.0.0.1/24"), (&n, &vn, "11.0.0.10/24")] {
        sh(&["ip", "-n", ns, "addr", "add", addr, "dev", dev])?;
        sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
    }
    // The server's thread joins the lab's "net" namespace (setns changes
    // the calling thread only).
    let (tx, rx) = std::sync::mpsc::channel();
    let netns = format!("/run/netns/{n}");
    std::thread::spawn(move || {
        let r = (|| -> Result<TcpListener> {
            let f = std::fs::File::open(&netns)?;
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)?;
            Ok(TcpListener::bind("11.0.0.10:8080")?)
        })();
        match r {
            Ok(l) => {
                let _ = tx.send(Ok(()));
                serve(l);
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    });
    rx.recv()??;

    let work = tempfile::Builder::new()
        .prefix("agentctl-bench-egress")
        .tempdir()?;
    let hosts = work.path().join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n11.0.0.10 bench.lab-allowed.org\n",
    )?;
    std::fs::write(work.path().join("client.py"), CLIENT)?;
    let in_lab = |argv: &[&str]| {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"f=$1; n=$2; shift 2; mount --bind "$f" /etc/hosts && exec nsenter --net="$n" -- "$@""#)
            .arg("sh")
            .arg(&hosts)
            .arg(format!("/run/netns/{h}"))
            .args(argv)
            .current_dir(work.path());
        c
    };
    let wp = work.path().to_string_lossy().into_owned();
    eprintln!("bench-egress: direct");
    let direct = in_lab(&["python3", "client.py", "direct", &wp]).output()?;
    ensure!(
        direct.status.success(),
        "direct client: {}",
        String::from_utf8_lossy(&direct.stderr)
    );
    let direct: Value = serde_json::from_slice(&direct.stdout)?;

    eprintln!("bench-egress: through the proxy");
    let agentctl = ctx.agentctl.to_string_lossy().into_owned();
    let mut proxied = in_lab(&[
        &agentctl,
        "--store",
        "none",
        "run",
        "-q",
        "--allow",
        "bench.lab-allowed.org:8080",
        "--",
        "python3",
        "client.py",
        "proxy",
        &wp,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(900);
    wait_file(&work.path().join("held-0"), deadline)?;
    let pid = egress_pid()?;
    let rss_base_kib = rss_kib(&pid)?;
    std::fs::write(work.path().join("go-0"), "")?;
    wait_file(&work.path().join("held-100"), deadline)?;
    let rss_100_kib = rss_kib(&pid)?;
    std::fs::write(work.path().join("go-100"), "")?;
    let mut out = String::new();
    proxied
        .stdout
        .take()
        .context("stdout")?
        .read_to_string(&mut out)?;
    let status = proxied.wait()?;
    if !status.success() {
        let mut err = String::new();
        let _ = proxied
            .stderr
            .take()
            .map(|mut e| e.read_to_string(&mut err));
        bail!("proxied client: {err}");
    }
    let proxied: Value = serde_json::from_str(&out)?;
    let nums = |v: &Value, k: &str| -> Vec<f64> {
        v[k].as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    Ok(EgressReport {
        direct_ms: nums(&direct, "latency_ms"),
        proxy_ms: nums(&proxied, "latency_ms"),
        direct_mib_s: nums(&direct, "mib_per_s"),
        proxy_mib_s: nums(&proxied, "mib_per_s"),
        dns_ms: nums(&proxied, "dns_ms"),
        rss_base_kib,
        rss_100_kib,
    })
}

fn median(v: &[f64]) -> Result<f64> {
    percentile(v, 50)
}

pub fn section(r: &EgressReport, cmd: &str) -> Result<String> {
    let (d50, d99) = (percentile(&r.direct_ms, 50)?, percentile(&r.direct_ms, 99)?);
    let (p50, p99) = (percentile(&r.proxy_ms, 50)?, percentile(&r.proxy_ms, 99)?);
    let (dt, pt) = (median(&r.direct_mib_s)?, median(&r.proxy_mib_s)?);
    let added = p50 - d50;
    let ratio = pt / dt;
    let mut o = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        o,
        "## The allowlist network: agentctl's egress proxy against a direct connection\n"
    );
    let _ = writeln!(
        o,
        "`{cmd}` (as root: it makes two network namespaces, a lab \"host\" where agentctl runs and a lab \"net\" with the server). The same Python client runs directly in the lab host and inside an allowlist sandbox (`--allow bench.lab-allowed.org:8080`), where its only way out is the planted proxy listener served by `agentctl __egress`.\n"
    );
    let _ = writeln!(o, "| | direct | through the proxy | |");
    let _ = writeln!(o, "|---|---:|---:|---|");
    let _ = writeln!(
        o,
        "| time to first echoed byte, p50 ({} runs) | {d50:.3} ms | {p50:.3} ms | added {added:.3} ms (goal < {GOAL_ADDED_P50_MS} ms: {}) |",
        r.proxy_ms.len(),
        if added < GOAL_ADDED_P50_MS {
            "met"
        } else {
            "NOT met"
        }
    );
    let _ = writeln!(
        o,
        "| time to first echoed byte, p99 | {d99:.3} ms | {p99:.3} ms | added {:.3} ms |",
        p99 - d99
    );
    let _ = writeln!(
        o,
        "| 1 GiB download, median of {} | {dt:.0} MiB/s | {pt:.0} MiB/s | {ratio:.2}× (goal ≥ {GOAL_THROUGHPUT}×: {}) |",
        r.proxy_mib_s.len(),
        if ratio >= GOAL_THROUGHPUT {
            "met"
        } else {
            "NOT met"
        }
    );
    let _ = writeln!(
        o,
        "| DNS stub answer, p50 / p99 ({} queries) | | {:.3} / {:.3} ms | |",
        r.dns_ms.len(),
        percentile(&r.dns_ms, 50)?,
        percentile(&r.dns_ms, 99)?
    );
    let _ = writeln!(
        o,
        "| egress process resident set, idle → 100 open tunnels | | {:.1} → {:.1} MiB | {:.1} KiB per tunnel |",
        r.rss_base_kib as f64 / 1024.0,
        r.rss_100_kib as f64 / 1024.0,
        (r.rss_100_kib.saturating_sub(r.rss_base_kib)) as f64 / 100.0
    );
    let _ = writeln!(
        o,
        "\nThe time to first byte includes opening the connection; through the proxy that is the connection to the planted listener, the CONNECT exchange (the name decided, resolved from /etc/hosts, the address decided) and the proxy's own connection to the server. The download is one tunnel: the proxy copies between two sockets with tokio's `copy_bidirectional`."
    );
    Ok(o)
}
