//! `cargo xtask bench-stack`: `agentctl up dev` against Compose itself.
//!
//! - Start: from built images and a bootstrapped store (a stack that was
//!   up once, then `down` without -v) to every service healthy, timed for
//!   `agentctl up dev` and for `<compose> up -d` of the same file, .env
//!   and project followed by the same health wait (`docker compose up -d
//!   --wait` where v2 is installed; v1 has no --wait, so the wait polls
//!   `docker inspect` every 250 ms as agentctl does). Rounds alternate.
//! - Idle memory: the dev stack left alone for 30 s, the resident set of
//!   every process of its containers (`docker top … -o pid,rss`), summed
//!   per service, and what `docker stats` calls their usage.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::Ctx;
use crate::stats::percentile;

pub const DEFAULT_ROUNDS: usize = 5;
/// Goals (issue 14).
pub const GOAL_RATIO: f64 = 1.1;
pub const GOAL_IDLE_MIB: f64 = 300.0;
const PROJECT: &str = "agentctlbench";
const BASE: &str = "agentctl/debian:bookworm";
const DEV: &[&str] = &["postgres", "dashboard", "docker-proxy", "worker"];

pub struct StackReport {
    pub rounds: usize,
    pub compose: String,
    pub agentctl_s: Vec<f64>,
    pub compose_s: Vec<f64>,
    /// (service, RSS MiB, docker stats MiB)
    pub idle: Vec<(String, f64, f64)>,
}

fn agentctl(ctx: &Ctx, dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(&ctx.agentctl);
    c.env("AGENTCTL_STACK_DIR", dir)
        .env("AGENTCTL_STACK_NAME", PROJECT)
        .env("AGENTCTL_BASE_IMAGE", BASE)
        .env("AGENTCTL_DASHBOARD_PORT", "17878")
        .env("AGENTCTL_POSTGRES_PORT", "17879")
        .env("AGENTCTL_PROMETHEUS_PORT", "19090")
        .env_remove("AGENTCTL_STORE")
        .args(args);
    c
}

fn ok(mut c: Command, what: &str) -> Result<()> {
    let o = c
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    ensure!(
        o.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}

fn compose_tool() -> Vec<&'static str> {
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if v2 {
        vec!["docker", "compose"]
    } else {
        vec!["docker-compose"]
    }
}

/// Every dev service of the project running and healthy.
fn all_healthy() -> Result<bool> {
    let o = Command::new("docker")
        .args(["ps", "-q", "--filter"])
        .arg(format!("label=com.docker.compose.project={PROJECT}"))
        .output()?;
    let ids: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    if ids.len() < DEV.len() {
        return Ok(false);
    }
    let o = Command::new("docker")
        .args(["inspect", "--format", "{{.State.Health.Status}}"])
        .args(&ids)
        .output()?;
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .all(|l| l == "healthy"))
}

pub fn bench_stack(ctx: &Ctx, rounds: usize) -> Result<StackReport> {
    let dir = tempfile::Builder::new()
        .prefix("agentctl-bench-stack-")
        .tempdir()?;
    let tool = compose_tool();
    let down = |volumes: bool| {
        let mut args = vec!["down"];
        if volumes {
            args.extend(["-v", "--yes"]);
        }
        ok(agentctl(ctx, dir.path(), &args), "agentctl down")
    };
    // Once: images built and the store bootstrapped, outside the timing.
    eprintln!("xtask: a first agentctl up dev (images, store)");
    ok(agentctl(ctx, dir.path(), &["up", "dev"]), "agentctl up dev")?;
    let compose = |args: &[&str]| {
        let mut c = Command::new(tool[0]);
        c.args(&tool[1..])
            .arg("-f")
            .arg(dir.path().join("compose/compose.yaml"))
            .arg("--env-file")
            .arg(dir.path().join(".env"))
            .args(["-p", PROJECT, "--profile", "dev"])
            .args(args);
        c
    };
    let mut agentctl_s = Vec::new();
    let mut compose_s = Vec::new();
    for round in 0..rounds {
        down(false)?;
        let t = Instant::now();
        ok(agentctl(ctx, dir.path(), &["up", "dev"]), "agentctl up dev")?;
        agentctl_s.push(t.elapsed().as_secs_f64());

        down(false)?;
        let t = Instant::now();
        if tool.len() == 2 {
            ok(
                compose(&["up", "-d", "--wait"]),
                "docker compose up -d --wait",
            )?;
        } else {
            ok(compose(&["up", "-d"]), "docker-compose up -d")?;
            while !all_healthy()? {
                if t.elapsed() > Duration::from_secs(300) {
                    bail!("the stack was not healthy after 300 s");
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        compose_s.push(t.elapsed().as_secs_f64());
        eprintln!(
            "xtask: round {}: agentctl up {:.2} s, {} {:.2} s",
            round + 1,
            agentctl_s[round],
            tool.join(" "),
            compose_s[round]
        );
    }
    // Idle: the compose-started stack is up and healthy; leave it alone.
    std::thread::sleep(Duration::from_secs(30));
    let mut idle = Vec::new();
    for service in DEV {
        let o = Command::new("docker")
            .args(["ps", "-q", "--filter"])
            .arg(format!("label=com.docker.compose.project={PROJECT}"))
            .arg("--filter")
            .arg(format!("label=com.docker.compose.service={service}"))
            .output()?;
        let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
        ensure!(!id.is_empty(), "no {service} container");
        let o = Command::new("docker")
            .args(["top", &id, "-o", "pid,rss"])
            .output()?;
        let rss_kib: f64 = String::from_utf8_lossy(&o.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .sum();
        let o = Command::new("docker")
            .args(["stats", "--no-stream", "--format", "{{.MemUsage}}", &id])
            .output()?;
        let usage = String::from_utf8_lossy(&o.stdout);
        let used = usage.split('/').next().unwrap_or("").trim().to_string();
        idle.push((service.to_string(), rss_kib / 1024.0, mib(&used)));
    }
    down(true)?;
    Ok(StackReport {
        rounds,
        compose: if tool.len() == 2 {
            "docker compose up -d --wait".into()
        } else {
            "docker-compose up -d + health wait".into()
        },
        agentctl_s,
        compose_s,
        idle,
    })
}

/// "12.3MiB" and friends in MiB.
fn mib(s: &str) -> f64 {
    let num: String = s
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let v: f64 = num.parse().unwrap_or(0.0);
    let unit = &s[num.len()..];
    match unit.trim() {
        "GiB" | "GB" => v * 1024.0,
        "KiB" | "kB" | "KB" => v / 1024.0,
        "B" => v / 1024.0 / 1024.0,
        _ => v,
    }
}

pub fn section(r: &StackReport, command: &str) -> Result<String> {
    use std::fmt::Write as _;
    let mut o = String::new();
    let a50 = percentile(&r.agentctl_s, 50)?;
    let c50 = percentile(&r.compose_s, 50)?;
    let amax = r.agentctl_s.iter().cloned().fold(0.0, f64::max);
    let cmax = r.compose_s.iter().cloned().fold(0.0, f64::max);
    let ratio = a50 / c50;
    let _ = writeln!(o, "## The stack: `agentctl up dev`\n");
    let _ = writeln!(
        o,
        "From built images and a store that has its first admin (the stack was up once, then `agentctl down` kept its volume) to every `dev` service healthy: `agentctl up dev` against `{}` of the same file, .env and project (where the dashboard and the worker wait for Postgres' health, so both paths pay two healthcheck intervals). {} rounds, alternating; seconds.\n",
        r.compose, r.rounds
    );
    let _ = writeln!(o, "| Path | median | max | Ratio |");
    let _ = writeln!(o, "|---|---:|---:|---:|");
    let _ = writeln!(
        o,
        "| `agentctl up dev` | {a50:.2} | {amax:.2} | {ratio:.2}× |"
    );
    let _ = writeln!(o, "| `{}` | {c50:.2} | {cmax:.2} | 1.00× |", r.compose);
    let _ = writeln!(
        o,
        "\nGoal: at most {GOAL_RATIO}×: {}.\n",
        if ratio <= GOAL_RATIO {
            "met"
        } else {
            "not met"
        }
    );
    let total_rss: f64 = r.idle.iter().map(|i| i.1).sum();
    let total_stats: f64 = r.idle.iter().map(|i| i.2).sum();
    let _ = writeln!(
        o,
        "Idle memory of the `dev` stack after 30 s alone: the resident set of every process in each container summed (`docker top -o pid,rss`; an upper bound, since pages shared between processes, such as Postgres' shared buffers, count once per process), and the container's memory use as `docker stats` shows it (its cgroup's usage less the page cache). MiB.\n"
    );
    let _ = writeln!(o, "| Service | RSS | docker stats |");
    let _ = writeln!(o, "|---|---:|---:|");
    for (s, rss, st) in &r.idle {
        let _ = writeln!(o, "| {s} | {rss:.1} | {st:.1} |");
    }
    let _ = writeln!(o, "| **all** | **{total_rss:.1}** | **{total_stats:.1}** |");
    let _ = writeln!(
        o,
        "\nGoal: under {GOAL_IDLE_MIB:.0} MiB: {}.\n",
        if total_rss < GOAL_IDLE_MIB {
            "met"
        } else {
            "not met"
        }
    );
    let _ = writeln!(o, "Made by `{command}`.\n");
    Ok(o)
}
