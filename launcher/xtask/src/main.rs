//! Development tasks for the workspace, run as `cargo xtask <task>` (the
//! alias lives in `.cargo/config.toml`).
//!
//! The benchmarks are not timed tests: they never fail on a slow number.
//! They time real commands with hyperfine, compute min, median and p95
//! from its per-run times, compare agentctl with crun, runc, find, the
//! docker CLI and tar side by side (every hyperfine run times all the
//! commands of a benchmark, and a few such rounds run back to back), and
//! `cargo xtask bench` writes the result, with the machine it ran on, to
//! `docs/BENCHMARKS.md`. The session store's benchmark times its API in
//! process instead, on SQLite and Postgres side by side; the Docker API
//! proxy's benchmark puts load on three unix sockets from this process: the
//! daemon's own, `agentctl proxy`'s and HAProxy's.

mod docker;
mod egress;
mod fanout;
mod hyperfine;
mod launch;
mod machine;
mod proxy;
mod report;
mod scan;
mod session_store;
mod stack;
mod stats;
mod team;
mod unpack;
mod vm;
mod web;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand};

/// Fewer runs than this make the p95 meaningless.
const MIN_RUNS: usize = 30;
const DEFAULT_RUNS: usize = 50;
const DEFAULT_FILES: usize = 100_000;
const DEFAULT_ROUNDS: usize = 5;
/// An unpack takes seconds: fewer runs per round, and the p95 comes from
/// the runs of all rounds pooled (at least `MIN_RUNS` of them).
const DEFAULT_UNPACK_RUNS: usize = 10;
const DEFAULT_UNPACK_ROUNDS: usize = 5;
const MIN_UNPACK_RUNS: usize = 5;

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Development tasks for agentctl"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Time-to-exit of `agentctl run -q -- true` against crun and runc
    /// running the same bundle; prints a markdown section.
    BenchLaunch {
        /// Timed runs per command and round (at least 30).
        #[arg(long, default_value_t = DEFAULT_RUNS)]
        runs: usize,
        /// Hyperfine runs, one after the other, each timing every command.
        #[arg(long, default_value_t = DEFAULT_ROUNDS)]
        rounds: usize,
        /// Another agentctl binary (an earlier commit's release build) timed
        /// beside this one, unrecorded, to show what a change costs.
        #[arg(long, value_name = "AGENTCTL")]
        baseline: Option<PathBuf>,
    },
    /// `agentctl explain` (the full secret scan) against `find` over a
    /// generated tree; prints a markdown section.
    BenchScan {
        /// Files in the generated tree.
        #[arg(long, default_value_t = DEFAULT_FILES)]
        files: usize,
        /// Timed runs per command and round (at least 30).
        #[arg(long, default_value_t = DEFAULT_RUNS)]
        runs: usize,
        /// Hyperfine runs, one after the other, each timing every command.
        #[arg(long, default_value_t = DEFAULT_ROUNDS)]
        rounds: usize,
    },
    /// A `true` in a container of agentctl/debian:bookworm: agentctl's
    /// Docker backend against the docker CLI and agentctl's native backend
    /// (from its image cache); prints a markdown section.
    BenchDocker {
        /// Timed runs per command and round (at least 30).
        #[arg(long, default_value_t = DEFAULT_RUNS)]
        runs: usize,
        /// Hyperfine runs, one after the other, each timing every command.
        #[arg(long, default_value_t = DEFAULT_ROUNDS)]
        rounds: usize,
    },
    /// Unpacking agentctl/agent-base:latest: `agentctl image pull` of its
    /// `docker save` archive against `tar -x` of its layers and the
    /// unpacker alone; prints a markdown section.
    BenchUnpack {
        /// Timed runs per command and round (at least 5, and 30 over all
        /// rounds).
        #[arg(long, default_value_t = DEFAULT_UNPACK_RUNS)]
        runs: usize,
        /// Hyperfine runs, one after the other, each timing every command.
        #[arg(long, default_value_t = DEFAULT_UNPACK_ROUNDS)]
        rounds: usize,
    },
    /// The session store on SQLite and Postgres side by side: event
    /// appends with the hash chain, and `list` and friends with 100,000
    /// sessions in the store; prints a markdown section.
    BenchStore {
        /// Sessions recorded in each store before the reads are timed.
        #[arg(long, default_value_t = session_store::DEFAULT_SESSIONS)]
        sessions: usize,
        /// Events appended per round by each append benchmark.
        #[arg(long, default_value_t = session_store::DEFAULT_EVENTS)]
        events: usize,
        /// Timed runs of each read per round (at least 30).
        #[arg(long, default_value_t = DEFAULT_RUNS)]
        runs: usize,
        /// Rounds, one after the other, each timing everything.
        #[arg(long, default_value_t = DEFAULT_ROUNDS)]
        rounds: usize,
        /// Also put the section into docs/BENCHMARKS.md, replacing the
        /// one there (the rest of the document stays as it is).
        #[arg(long)]
        write: bool,
    },
    /// The dashboard (`agentctl serve`) over 100,000 sessions on SQLite and
    /// Postgres, loaded by wrk; prints a markdown section.
    BenchWeb {
        /// Sessions recorded in each store first.
        #[arg(long, default_value_t = web::DEFAULT_SESSIONS)]
        sessions: usize,
        /// Seconds of load per page.
        #[arg(long, default_value_t = web::DEFAULT_SECONDS)]
        seconds: u64,
    },
    /// The live log's fan-out: many clients following one session's output
    /// over SSE from `agentctl serve`, on SQLite and Postgres; prints a
    /// markdown section.
    BenchFanout {
        #[arg(long, default_value_t = fanout::DEFAULT_CLIENTS)]
        clients: usize,
        /// Lines a second the session writes.
        #[arg(long, default_value_t = fanout::DEFAULT_RATE)]
        rate: u64,
        #[arg(long, default_value_t = fanout::DEFAULT_SECONDS)]
        seconds: u64,
    },
    /// The team server: claim latency from `POST /api/v1/sessions` to a
    /// session running on one of two workers against a direct launch,
    /// sessions a second against `agentctl run` loops, and the claim at
    /// 10 and 10,000 queued; prints a markdown section.
    BenchTeam {
        /// Requests timed one at a time (and as many direct launches).
        #[arg(long, default_value_t = team::DEFAULT_LATENCY_RUNS)]
        runs: usize,
        /// Requests queued at once for the throughput run.
        #[arg(long, default_value_t = team::DEFAULT_THROUGHPUT)]
        queued: usize,
    },
    /// `agentctl up dev` against Compose's own `up` of the same file to
    /// every service healthy, and the dev stack's idle memory; prints a
    /// markdown section.
    BenchStack {
        /// Rounds, each timing both.
        #[arg(long, default_value_t = stack::DEFAULT_ROUNDS)]
        rounds: usize,
    },
    /// The allowlist network's egress proxy against a direct connection
    /// (as root: it makes network namespaces); prints a markdown section.
    BenchEgress,
    /// `agentctl run --backend vm -- true` against bare QEMU booting the
    /// same kernel and initramfs, with the session's boot phases; prints a
    /// markdown section.
    BenchVm {
        /// Runs of each, interleaved.
        #[arg(long, default_value_t = vm::DEFAULT_RUNS)]
        runs: usize,
    },
    /// The Docker Engine API through `agentctl proxy`, through HAProxy
    /// configured as Tecnativa's docker-socket-proxy, and on the daemon's
    /// own socket: `_ping`, `containers/json` and streamed logs; prints a
    /// markdown section.
    BenchProxy {
        /// Seconds of load per request type, path and round.
        #[arg(long, default_value_t = proxy::DEFAULT_SECONDS)]
        seconds: usize,
        /// Rounds, one after the other, each measuring every path.
        #[arg(long, default_value_t = proxy::DEFAULT_ROUNDS)]
        rounds: usize,
        /// Keep-alive connections sending requests at once.
        #[arg(long, default_value_t = proxy::DEFAULT_CONNECTIONS)]
        connections: usize,
    },
    /// All benchmarks; rewrites docs/BENCHMARKS.md.
    Bench {
        /// Timed runs per command and round (at least 30).
        #[arg(long, default_value_t = DEFAULT_RUNS)]
        runs: usize,
        /// Hyperfine runs, one after the other, each timing every command.
        #[arg(long, default_value_t = DEFAULT_ROUNDS)]
        rounds: usize,
        /// Files in the generated tree of the scan benchmark.
        #[arg(long, default_value_t = DEFAULT_FILES)]
        files: usize,
        /// Timed runs per command and round of the unpack benchmark.
        #[arg(long, default_value_t = DEFAULT_UNPACK_RUNS)]
        unpack_runs: usize,
        /// Rounds of the unpack benchmark.
        #[arg(long, default_value_t = DEFAULT_UNPACK_ROUNDS)]
        unpack_rounds: usize,
        /// Sessions in the stores of the session store benchmark.
        #[arg(long, default_value_t = session_store::DEFAULT_SESSIONS)]
        store_sessions: usize,
        /// Events appended per round by each session store append benchmark.
        #[arg(long, default_value_t = session_store::DEFAULT_EVENTS)]
        store_events: usize,
        /// Seconds of load per request type, path and round of the proxy
        /// benchmark.
        #[arg(long, default_value_t = proxy::DEFAULT_SECONDS)]
        proxy_seconds: usize,
        /// Rounds of the proxy benchmark.
        #[arg(long, default_value_t = proxy::DEFAULT_ROUNDS)]
        proxy_rounds: usize,
        /// Keep-alive connections of the proxy benchmark's load.
        #[arg(long, default_value_t = proxy::DEFAULT_CONNECTIONS)]
        proxy_connections: usize,
        /// Print the document instead of writing docs/BENCHMARKS.md.
        #[arg(long)]
        print: bool,
        /// Another agentctl binary timed beside this one in the launch
        /// benchmark (see bench-launch).
        #[arg(long, value_name = "AGENTCTL")]
        baseline: Option<PathBuf>,
    },
    /// Applies docker-save layer tars in order to the empty directory DEST
    /// with image-store's Unpacker (the third row of bench-unpack).
    #[command(hide = true)]
    UnpackLayers {
        dest: PathBuf,
        #[arg(required = true)]
        layers: Vec<PathBuf>,
    },
}

/// Where things are: the workspace root and the agentctl binary.
pub struct Ctx {
    pub root: PathBuf,
    pub agentctl: PathBuf,
    /// An earlier build to time beside `agentctl` in the launch benchmark.
    pub baseline: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    match task {
        Task::BenchLaunch {
            runs,
            rounds,
            baseline,
        } => {
            check_runs(runs, rounds)?;
            let mut ctx = prepare(LAUNCH_TOOLS)?;
            ctx.baseline = baseline;
            let launch = launch::bench_launch(&ctx, runs, rounds)?;
            print!("{}", report::launch_section(&launch));
        }
        Task::BenchWeb { sessions, seconds } => {
            ensure!(sessions >= 1_000, "--sessions: at least 1000");
            let ctx = prepare(&["wrk"])?;
            let report = web::bench_web(&ctx, sessions, seconds)?;
            let mut cmd = String::from("cargo xtask bench-web");
            if sessions != web::DEFAULT_SESSIONS {
                cmd.push_str(&format!(" --sessions {sessions}"));
            }
            if seconds != web::DEFAULT_SECONDS {
                cmd.push_str(&format!(" --seconds {seconds}"));
            }
            print!("{}", web::section(&report, &cmd));
        }
        Task::BenchFanout {
            clients,
            rate,
            seconds,
        } => {
            ensure!(
                clients >= 1 && rate >= 1 && seconds >= 1,
                "every count at least 1"
            );
            let ctx = prepare(&[])?;
            let report = fanout::bench_fanout(&ctx, clients, rate, seconds)?;
            let mut cmd = String::from("cargo xtask bench-fanout");
            if clients != fanout::DEFAULT_CLIENTS {
                cmd.push_str(&format!(" --clients {clients}"));
            }
            if rate != fanout::DEFAULT_RATE {
                cmd.push_str(&format!(" --rate {rate}"));
            }
            if seconds != fanout::DEFAULT_SECONDS {
                cmd.push_str(&format!(" --seconds {seconds}"));
            }
            print!("{}", fanout::section(&report, &cmd));
        }
        Task::BenchTeam { runs, queued } => {
            ensure!(runs >= 10 && queued >= 10, "at least 10 runs and 10 queued");
            let ctx = prepare(&[])?;
            let report = team::bench_team(&ctx, runs, queued)?;
            let mut cmd = String::from("cargo xtask bench-team");
            if runs != team::DEFAULT_LATENCY_RUNS {
                cmd.push_str(&format!(" --runs {runs}"));
            }
            if queued != team::DEFAULT_THROUGHPUT {
                cmd.push_str(&format!(" --queued {queued}"));
            }
            print!("{}", team::section(&report, &cmd)?);
        }
        Task::BenchVm { runs } => {
            ensure!(runs >= 5, "at least 5 runs");
            let ctx = prepare(&["qemu-system-x86_64"])?;
            let report = vm::bench_vm(&ctx, runs)?;
            let mut cmd = String::from("cargo xtask bench-vm");
            if runs != vm::DEFAULT_RUNS {
                cmd.push_str(&format!(" --runs {runs}"));
            }
            print!("{}", vm::section(&report, &cmd)?);
        }
        Task::BenchEgress => {
            let ctx = prepare(&["python3", "ip", "unshare", "nsenter", "pgrep"])?;
            let report = egress::bench_egress(&ctx)?;
            print!("{}", egress::section(&report, "cargo xtask bench-egress")?);
        }
        Task::BenchStack { rounds } => {
            ensure!(rounds >= 3, "at least 3 rounds");
            let ctx = prepare(&[])?;
            let report = stack::bench_stack(&ctx, rounds)?;
            let mut cmd = String::from("cargo xtask bench-stack");
            if rounds != stack::DEFAULT_ROUNDS {
                cmd.push_str(&format!(" --rounds {rounds}"));
            }
            print!("{}", stack::section(&report, &cmd)?);
        }
        Task::BenchScan {
            files,
            runs,
            rounds,
        } => {
            check_runs(runs, rounds)?;
            scan::check_files(files)?;
            let ctx = prepare(SCAN_TOOLS)?;
            let scan = scan::bench_scan(&ctx, files, runs, rounds)?;
            print!("{}", report::scan_section(&scan));
        }
        Task::BenchDocker { runs, rounds } => {
            check_runs(runs, rounds)?;
            let ctx = prepare(DOCKER_TOOLS)?;
            let docker = docker::bench_docker(&ctx, runs, rounds)?;
            print!("{}", report::docker_section(&docker));
        }
        Task::BenchUnpack { runs, rounds } => {
            check_unpack_runs(runs, rounds)?;
            let ctx = prepare(UNPACK_TOOLS)?;
            let unpack = unpack::bench_unpack(&ctx, runs, rounds)?;
            print!("{}", report::unpack_section(&unpack));
        }
        Task::BenchStore {
            sessions,
            events,
            runs,
            rounds,
            write,
        } => {
            check_runs(runs, rounds)?;
            session_store::check_sizes(sessions, events)?;
            session_store::preflight()?;
            let root = workspace_root();
            let store = session_store::bench_store(sessions, events, runs, rounds)?;
            let mut cmd = String::from("cargo xtask bench-store");
            if sessions != session_store::DEFAULT_SESSIONS {
                cmd.push_str(&format!(" --sessions {sessions}"));
            }
            if events != session_store::DEFAULT_EVENTS {
                cmd.push_str(&format!(" --events {events}"));
            }
            if runs != DEFAULT_RUNS {
                cmd.push_str(&format!(" --runs {runs}"));
            }
            if rounds != DEFAULT_ROUNDS {
                cmd.push_str(&format!(" --rounds {rounds}"));
            }
            if write {
                cmd.push_str(" --write");
                let m = machine::Machine::collect(&root);
                let apart = report::Provenance {
                    command: cmd,
                    machine: format!("{} CPUs ({}), kernel {}", m.nproc, m.cpu, m.kernel),
                    date: m.date,
                    commit: m.commit,
                };
                let section = report::store_section(&store, Some(&apart));
                let path = root.join("docs/BENCHMARKS.md");
                let doc = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                std::fs::write(&path, report::splice_store_section(&doc, &section))
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!(
                    "xtask: wrote the session store section of {}",
                    path.display()
                );
                print!("{section}");
            } else {
                print!("{}", report::store_section(&store, None));
            }
        }
        Task::BenchProxy {
            seconds,
            rounds,
            connections,
        } => {
            proxy::check_sizes(seconds, rounds, connections)?;
            proxy::preflight()?;
            let ctx = prepare(PROXY_TOOLS)?;
            let proxy = proxy::bench_proxy(&ctx, seconds, rounds, connections)?;
            print!("{}", report::proxy_section(&proxy));
        }
        Task::UnpackLayers { dest, layers } => unpack::unpack_layers(&dest, &layers)?,
        Task::Bench {
            runs,
            rounds,
            files,
            unpack_runs,
            unpack_rounds,
            store_sessions,
            store_events,
            proxy_seconds,
            proxy_rounds,
            proxy_connections,
            print,
            baseline,
        } => {
            check_runs(runs, rounds)?;
            check_unpack_runs(unpack_runs, unpack_rounds)?;
            scan::check_files(files)?;
            session_store::check_sizes(store_sessions, store_events)?;
            session_store::preflight()?;
            proxy::check_sizes(proxy_seconds, proxy_rounds, proxy_connections)?;
            proxy::preflight()?;
            let tools: Vec<&str> = [
                LAUNCH_TOOLS,
                SCAN_TOOLS,
                DOCKER_TOOLS,
                UNPACK_TOOLS,
                PROXY_TOOLS,
            ]
            .concat();
            let mut ctx = prepare(&tools)?;
            ctx.baseline = baseline;
            let before = machine::Machine::collect(&ctx.root);
            let results = report::Results {
                launch: launch::bench_launch(&ctx, runs, rounds)?,
                scan: scan::bench_scan(&ctx, files, runs, rounds)?,
                docker: docker::bench_docker(&ctx, runs, rounds)?,
                unpack: unpack::bench_unpack(&ctx, unpack_runs, unpack_rounds)?,
                store: session_store::bench_store(store_sessions, store_events, runs, rounds)?,
                proxy: proxy::bench_proxy(&ctx, proxy_seconds, proxy_rounds, proxy_connections)?,
            };
            let load_after = machine::loadavg();
            let mut command = bench_command(&BenchArgs {
                runs,
                rounds,
                files,
                unpack_runs,
                unpack_rounds,
                store_sessions,
                store_events,
                proxy_seconds,
                proxy_rounds,
                proxy_connections,
            });
            if let Some(b) = &ctx.baseline {
                command.push_str(&format!(" --baseline {}", b.display()));
            }
            let doc = report::document(&command, &before, &load_after, &results);
            if print {
                print!("{doc}");
            } else {
                let path = ctx.root.join("docs/BENCHMARKS.md");
                std::fs::write(&path, doc)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("xtask: wrote {}", path.display());
            }
        }
    }
    Ok(())
}

fn check_runs(runs: usize, rounds: usize) -> Result<()> {
    ensure!(
        runs >= MIN_RUNS,
        "--runs {runs}: at least {MIN_RUNS} runs are needed for a meaningful p95"
    );
    ensure!(rounds >= 1, "--rounds {rounds}: at least one round");
    Ok(())
}

fn check_unpack_runs(runs: usize, rounds: usize) -> Result<()> {
    ensure!(
        runs >= MIN_UNPACK_RUNS,
        "{runs} unpack runs: at least {MIN_UNPACK_RUNS} per round"
    );
    ensure!(
        runs * rounds >= MIN_RUNS,
        "{runs} unpack runs in {rounds} rounds: at least {MIN_RUNS} runs over all rounds \
         are needed for a meaningful p95"
    );
    Ok(())
}

/// The sizes `cargo xtask bench` was given.
struct BenchArgs {
    runs: usize,
    rounds: usize,
    files: usize,
    unpack_runs: usize,
    unpack_rounds: usize,
    store_sessions: usize,
    store_events: usize,
    proxy_seconds: usize,
    proxy_rounds: usize,
    proxy_connections: usize,
}

/// The command that reproduces the document, as the reader would type it.
fn bench_command(a: &BenchArgs) -> String {
    let mut cmd = String::from("cargo xtask bench");
    for (flag, value, default) in [
        ("--runs", a.runs, DEFAULT_RUNS),
        ("--rounds", a.rounds, DEFAULT_ROUNDS),
        ("--files", a.files, DEFAULT_FILES),
        ("--unpack-runs", a.unpack_runs, DEFAULT_UNPACK_RUNS),
        ("--unpack-rounds", a.unpack_rounds, DEFAULT_UNPACK_ROUNDS),
        (
            "--store-sessions",
            a.store_sessions,
            session_store::DEFAULT_SESSIONS,
        ),
        (
            "--store-events",
            a.store_events,
            session_store::DEFAULT_EVENTS,
        ),
        ("--proxy-seconds", a.proxy_seconds, proxy::DEFAULT_SECONDS),
        ("--proxy-rounds", a.proxy_rounds, proxy::DEFAULT_ROUNDS),
        (
            "--proxy-connections",
            a.proxy_connections,
            proxy::DEFAULT_CONNECTIONS,
        ),
    ] {
        if value != default {
            cmd.push_str(&format!(" {flag} {value}"));
        }
    }
    cmd
}

/// The programs each benchmark runs.
const LAUNCH_TOOLS: &[&str] = &["hyperfine", "crun", "runc", "unshare", "sh", "git"];
const SCAN_TOOLS: &[&str] = &["hyperfine", "find"];
const DOCKER_TOOLS: &[&str] = &["hyperfine", "docker", "sh"];
const UNPACK_TOOLS: &[&str] = &["hyperfine", "docker", "tar", "sh"];
/// HAProxy is looked for apart (see [`proxy::preflight`]): Debian puts it
/// in /usr/sbin.
const PROXY_TOOLS: &[&str] = &["docker"];

/// Checks the tools, builds agentctl in release mode and finds it.
fn prepare(tools: &[&str]) -> Result<Ctx> {
    for tool in tools {
        ensure!(
            which(tool).is_some(),
            "`{tool}` is not on PATH; the benchmarks need it"
        );
    }
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("xtask: cargo build --release -p agentctl");
    let status = Command::new(&cargo)
        .args(["build", "--release", "-p", "agentctl"])
        .current_dir(&root)
        .status()
        .context("cannot run cargo")?;
    ensure!(status.success(), "cargo build --release -p agentctl failed");
    let agentctl = target_dir(&cargo, &root)?.join("release/agentctl");
    ensure!(agentctl.is_file(), "{} was not built", agentctl.display());
    Ok(Ctx {
        root,
        agentctl,
        baseline: None,
    })
}

fn workspace_root() -> PathBuf {
    // launcher/xtask -> the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("xtask lives two levels below the workspace root")
        .to_path_buf()
}

fn target_dir(cargo: &std::ffi::OsStr, root: &Path) -> Result<PathBuf> {
    let out = Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(root)
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata printed invalid JSON")?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}

/// The first executable called `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}
