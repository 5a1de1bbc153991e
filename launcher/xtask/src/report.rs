//! The markdown: sections for each benchmark and the whole
//! docs/BENCHMARKS.md.

use std::fmt::Write as _;

use crate::docker::DockerReport;
use crate::launch::LaunchReport;
use crate::machine::Machine;
use crate::proxy::{self, Load, ProxyReport, Requests, Stream, VIAS, Via};
use crate::scan::ScanReport;
use crate::session_store::{self, StoreReport};
use crate::stats::Summary;
use crate::unpack::UnpackReport;

/// The goal the team set for the launch and scan benchmarks: agentctl's
/// median at most this many times the reference's median.
pub const GOAL: f64 = 1.5;
/// The goal for the Docker backend: its median at most this many times the
/// docker CLI's.
pub const DOCKER_GOAL: f64 = 0.7;

/// Every benchmark's results, for the whole document.
pub struct Results {
    pub launch: LaunchReport,
    pub scan: ScanReport,
    pub docker: DockerReport,
    pub unpack: UnpackReport,
    pub store: StoreReport,
    pub proxy: ProxyReport,
}

fn row(o: &mut String, label: &str, s: &Summary) {
    let _ = writeln!(
        o,
        "| {label} | {:.2} | {:.2} | {:.2} |",
        s.min, s.median, s.p95
    );
}

fn table_head(o: &mut String) {
    let _ = writeln!(o, "| Command | min | median | p95 |");
    let _ = writeln!(o, "|---|---:|---:|---:|");
}

fn verdict(ratio: f64, goal: f64) -> String {
    if ratio <= goal {
        format!("**met** ({ratio:.2}× ≤ {goal}×)")
    } else {
        format!("**not met** ({ratio:.2}× > {goal}×)")
    }
}

/// The team's ceiling on what keeping a session on record may add to a
/// launch (issue 11).
pub const STORE_GOAL_MS: f64 = 2.0;

fn store_verdict(ms: f64) -> String {
    if ms <= STORE_GOAL_MS {
        format!("{ms:.2} ms, goal at most {STORE_GOAL_MS} ms **met**")
    } else {
        format!("{ms:.2} ms, goal at most {STORE_GOAL_MS} ms **not met**")
    }
}

/// The ratio of medians, and the same with `base` (the wrapper's median)
/// taken off both sides.
fn ratios(a: &Summary, b: &Summary, base: &Summary) -> (f64, f64) {
    (
        a.median / b.median,
        (a.median - base.median) / (b.median - base.median),
    )
}

/// "1.30×–1.62×, ≤ 1.5× in 2 of 5 rounds".
fn round_spread(ratios: &[f64], goal: f64) -> String {
    let met = ratios.iter().filter(|r| **r <= goal).count();
    format!(
        "{}, ≤ {goal}× in {met} of {} rounds",
        round_range(ratios),
        ratios.len()
    )
}

/// "1.30×–1.62×": the lowest and highest of the rounds' ratios.
fn round_range(ratios: &[f64]) -> String {
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.2}×–{hi:.2}×")
}

pub fn launch_section(r: &LaunchReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "## Launch: a sandboxed `true`, from start to exit
"
    );
    let _ = writeln!(
        o,
        "{} rounds back to back; in each, one hyperfine run times all the commands \
         side by side, {} timed runs each after {} warm-up runs, in one private mount \
         namespace. The recorded row writes every session and its audit events to a \
         fresh SQLite store on the same disk as the default one. The table pools the {} runs of each command. Milliseconds.\n",
        r.rounds,
        r.runs,
        r.warmup,
        r.rounds * r.runs
    );
    table_head(&mut o);
    row(&mut o, "`sh -c true` (the wrapper alone)", &r.baseline);
    row(
        &mut o,
        "`agentctl run -q -- true` (recorded in a SQLite store)",
        &r.agentctl_run,
    );
    row(
        &mut o,
        "`agentctl run -q --store none -- true` (no record)",
        &r.agentctl_unrecorded,
    );
    row(
        &mut o,
        "`agentctl explain` (planning only, nothing started)",
        &r.agentctl_plan,
    );
    row(&mut o, "`crun run` (the same bundle)", &r.crun);
    row(&mut o, "`runc run` (the same bundle)", &r.runc);
    let (crun, crun_net) = ratios(&r.agentctl_run, &r.crun, &r.baseline);
    let (runc, runc_net) = ratios(&r.agentctl_run, &r.runc, &r.baseline);
    let per_round = |i: usize| -> Vec<f64> {
        r.per_round
            .iter()
            .map(|s| ratios(&s[1], &s[i], &s[0]).1)
            .collect()
    };
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "| Ratio of medians | as measured | wrapper subtracted | wrapper subtracted, each round |"
    );
    let _ = writeln!(o, "|---|---:|---:|---|");
    let _ = writeln!(
        o,
        "| agentctl / crun | {crun:.2}× | {crun_net:.2}× | {} |",
        round_spread(&per_round(2), GOAL)
    );
    let _ = writeln!(
        o,
        "| agentctl / runc | {runc:.2}× | {runc_net:.2}× | {} |",
        round_spread(&per_round(3), GOAL)
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "Goal, the recorded agentctl's median at most {GOAL}× crun's (pooled, wrapper subtracted): {}.\n",
        verdict(crun_net, GOAL)
    );
    let _ = writeln!(
        o,
        "Recording the session (recorded median minus unrecorded median): {}.\n",
        store_verdict(r.agentctl_run.median - r.agentctl_unrecorded.median)
    );
    if let Some((what, other, diffs)) = &r.baseline_build {
        let d = r.agentctl_unrecorded.median - other.median;
        let lo = diffs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = diffs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let _ = writeln!(
            o,
            "Against an earlier build timed in the same rounds (`--baseline`, {what}), unrecorded:\n"
        );
        table_head(&mut o);
        row(&mut o, "this build, `--store none`", &r.agentctl_unrecorded);
        row(&mut o, "the earlier build, `--store none`", other);
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "This build's median minus the earlier one's: {d:+.2} ms pooled ({lo:+.2} to {hi:+.2} ms per round); goal at most +{BASELINE_GOAL_MS:.0} ms: {}.\n",
            if d <= BASELINE_GOAL_MS {
                "**met**"
            } else {
                "**not met**"
            }
        );
    }
    let _ = writeln!(
        o,
        "Load average (1, 5, 15 min) before / after: {} / {}.\n",
        r.load.0, r.load.1
    );
    o
}

/// What issue 9's checks may add to the native launch median.
const BASELINE_GOAL_MS: f64 = 1.0;

pub fn scan_section(r: &ScanReport) -> String {
    let t = &r.tree;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "## Workspace scan: {} files, warm cache\n",
        group(t.files)
    );
    let _ = writeln!(
        o,
        "A generated tree (fixed seed) on {}: {} files in {} directories (20 to 50 \
         per directory), {} `.env*` files, {} hard links, {} of them to `.env` \
         files under other names. {} rounds back to back; in each, one hyperfine \
         run times both commands side by side, {} timed runs each after {} warm-up \
         runs. The table pools the {} runs of each command. Milliseconds.\n",
        t.fs_type,
        group(t.files),
        group(t.dirs),
        t.env_files,
        t.hard_links,
        t.env_hard_links,
        r.rounds,
        r.runs,
        r.warmup,
        r.rounds * r.runs
    );
    table_head(&mut o);
    row(&mut o, "`agentctl explain --workspace DIR`", &r.explain);
    row(&mut o, "`find DIR -name '.env*'`", &r.find);
    row(
        &mut o,
        &format!(
            "agentctl's own scan time (its `Secret scan:` line, {} more runs)",
            r.internal.runs
        ),
        &r.internal,
    );
    let ratio = r.explain.median / r.find.median;
    let rounds: Vec<f64> = r
        .per_round
        .iter()
        .map(|s| s[0].median / s[1].median)
        .collect();
    let (files, dirs, trees) = r.scanned;
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "agentctl walked {} files in {} directories across {trees} trees (the \
         workspace, and the host paths the profile mounts or denies) and masks {} \
         paths; find printed {} (it does not see the hard links).\n",
        group(files as usize),
        group(dirs as usize),
        r.masked,
        r.find_matches
    );
    let _ = writeln!(o, "| Ratio of medians | pooled | each round |");
    let _ = writeln!(o, "|---|---:|---|");
    let _ = writeln!(
        o,
        "| agentctl explain / find | {ratio:.2}× | {} |",
        round_spread(&rounds, GOAL)
    );
    let _ = writeln!(
        o,
        "| agentctl's own scan / find | {:.2}× | |",
        r.internal.median / r.find.median
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "Goal, `agentctl explain`'s median at most {GOAL}× find's (pooled): {}.\n",
        verdict(ratio, GOAL)
    );
    let _ = writeln!(
        o,
        "Load average (1, 5, 15 min) before / after: {} / {}.\n",
        r.load.0, r.load.1
    );
    o
}

pub fn docker_section(r: &DockerReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "## Docker backend: a `true` in a container, from start to exit\n"
    );
    let _ = writeln!(
        o,
        "{} rounds back to back; in each, one hyperfine run times all five commands \
         side by side, {} timed runs each after {} warm-up runs, from an empty \
         workspace. The table pools the {} runs of each command. Milliseconds.\n",
        r.rounds,
        r.runs,
        r.warmup,
        r.rounds * r.runs
    );
    let image = &r.image;
    table_head(&mut o);
    row(&mut o, "`sh -c true` (the wrapper alone)", &r.baseline);
    row(
        &mut o,
        &format!("`agentctl run -q --backend docker --image {image} -- true`"),
        &r.agentctl_docker,
    );
    row(
        &mut o,
        &format!("`docker run --rm {image} true` (the docker CLI)"),
        &r.docker_cli,
    );
    row(
        &mut o,
        &format!(
            "`docker run --rm --network none {image} true` (the docker CLI, \
             agentctl's network mode)"
        ),
        &r.docker_cli_no_net,
    );
    row(
        &mut o,
        &format!(
            "`agentctl run -q --image {} -- true` (native backend, from its image cache)",
            r.native_ref
        ),
        &r.native,
    );
    // Indexes into each round's summaries.
    let (docker, cli, cli_no_net, native) = (1, 2, 3, 4);
    let per_round = |a: usize, b: usize| -> Vec<f64> {
        r.per_round
            .iter()
            .map(|s| ratios(&s[a], &s[b], &s[0]).1)
            .collect()
    };
    let (vs_cli, vs_cli_net) = ratios(&r.agentctl_docker, &r.docker_cli, &r.baseline);
    let (vs_no_net, vs_no_net_net) = ratios(&r.agentctl_docker, &r.docker_cli_no_net, &r.baseline);
    let (daemon, daemon_net) = ratios(&r.native, &r.agentctl_docker, &r.baseline);
    let (native_cli, native_cli_net) = ratios(&r.native, &r.docker_cli, &r.baseline);
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "| Ratio of medians | as measured | wrapper subtracted | wrapper subtracted, each round |"
    );
    let _ = writeln!(o, "|---|---:|---:|---|");
    let _ = writeln!(
        o,
        "| agentctl docker / docker CLI | {vs_cli:.2}× | {vs_cli_net:.2}× | {} |",
        round_spread(&per_round(docker, cli), DOCKER_GOAL)
    );
    let _ = writeln!(
        o,
        "| agentctl docker / docker CLI `--network none` | {vs_no_net:.2}× | \
         {vs_no_net_net:.2}× | {} |",
        round_range(&per_round(docker, cli_no_net))
    );
    let _ = writeln!(
        o,
        "| agentctl native / agentctl docker | {daemon:.2}× | {daemon_net:.2}× | {} |",
        round_range(&per_round(native, docker))
    );
    let _ = writeln!(
        o,
        "| agentctl native / docker CLI | {native_cli:.2}× | {native_cli_net:.2}× | {} |",
        round_range(&per_round(native, cli))
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "Goal, agentctl docker's median at most {DOCKER_GOAL}× the docker CLI's \
         (pooled, wrapper subtracted): {}.\n",
        verdict(vs_cli_net, DOCKER_GOAL)
    );
    let _ = writeln!(
        o,
        "The cost of the daemon: for the same image and the same `true`, agentctl's \
         Docker backend takes {:.1} ms (median) longer than its native backend; the \
         native backend needs {:.2}× the Docker backend's time (wrapper subtracted).\n",
        r.agentctl_docker.median - r.native.median,
        daemon_net
    );
    let _ = writeln!(
        o,
        "Every row runs through the same `sh -c 'exec …'` wrapper as the launch \
         benchmark, with the same environment (AGENTCTL_IMAGES set to the cache \
         below for all of them). agentctl plans each session as in the launch \
         benchmark (profile, secret scan); its Docker backend then talks to the \
         daemon over its API socket: it negotiates the API version, inspects the \
         image, then creates, attaches to, starts, waits for and removes the \
         container. That container gets what the plan asks for: the default \
         profile's network `none`, a read-only root with tmpfs on /tmp and the home, \
         the workspace bind-mounted, agentctl's seccomp profile, no capabilities, \
         memory, pids and CPU limits, and Docker's init as PID 1. `docker run --rm` \
         takes the daemon's defaults instead (a bridge network, a writable root, \
         Docker's seccomp profile, no limits) and leaves the removal to the daemon, \
         waiting for it; \
         the `--network none` row takes the bridge network away, which agentctl's \
         profile does not ask for. The native backend needs no daemon: the image \
         was imported into a temporary image cache once before timing (`docker save` \
         of {image}, then `agentctl image pull docker-archive:FILE` with \
         AGENTCTL_IMAGES pointing at the cache), and every run mounts a fresh \
         overlay over the unpacked root filesystem and runs it with libcontainer, \
         as in the launch benchmark.\n"
    );
    let _ = writeln!(
        o,
        "The native backend's `--image` takes the cache's reference (`{}`, what \
         `agentctl image ls` shows after the import) or a source; given the \
         `docker-archive:FILE` source instead, it imports the archive again on every \
         run before finding the root filesystem already unpacked. One more hyperfine \
         run timed both side by side, {} runs each: median {:.2} ms by the reference, \
         {:.2} ms by the archive (p95 {:.2} and {:.2} ms). The table uses the \
         reference.\n",
        r.native_ref,
        r.by_reference.runs,
        r.by_reference.median,
        r.by_archive.median,
        r.by_reference.p95,
        r.by_archive.p95
    );
    let others = match r.others {
        0 => String::new(),
        n => format!(
            " ({n} labelled containers of other users of the daemon, with none of this \
             benchmark's directories mounted, were there too)"
        ),
    };
    if r.leftovers.is_empty() {
        let _ = writeln!(
            o,
            "Containers labelled `io.agentctl.managed=true` left behind by this \
             benchmark afterwards (`docker ps -a --filter \
             label=io.agentctl.managed=true`, those that mount its directories): \
             none{others}.\n"
        );
    } else {
        let _ = writeln!(
            o,
            "Containers labelled `io.agentctl.managed=true` left behind by this \
             benchmark afterwards (`docker ps -a --filter \
             label=io.agentctl.managed=true`, those that mount its directories): \
             **{}**: {}{others}.\n",
            r.leftovers.len(),
            r.leftovers
                .iter()
                .map(|id| format!("`{}`", id.get(..12).unwrap_or(id)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(
        o,
        "Load average (1, 5, 15 min) before / after: {} / {}.\n",
        r.load.0, r.load.1
    );
    o
}

/// Decimal megabytes, as the MB/s column counts them.
fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

pub fn unpack_section(r: &UnpackReport) -> String {
    let a = &r.applied;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "## Image unpack: {}, {} of layers\n",
        r.image,
        mb(a.tar_bytes)
    );
    let plain = if r.layer_file_bytes == a.tar_bytes {
        "plain tar (Docker 20.10's save format), so their size is the uncompressed size".to_string()
    } else {
        format!("compressed, {} on disk", mb(r.layer_file_bytes))
    };
    let _ = writeln!(
        o,
        "`docker save {}` wrote a {} archive with {} layers: {} of tar ({} entries, \
         {} regular files, {} whiteouts, and {} device nodes, which agentctl skips); \
         the layer files are {plain}. The archive was unpacked once beforehand so that \
         tar reads the same layer files as the others. All three commands turn those \
         layers, in order, into an empty directory on {} (under {}), which hyperfine's \
         `--prepare` empties before every run, untimed. The page cache was warmed \
         once by reading the archive and the layer files, then by one untimed run of \
         each command (to check that it exits 0); there are no hyperfine warm-up \
         runs. {} rounds back to back; in each, one hyperfine run times the three \
         commands side by side, {} timed runs each. The table pools the {} runs of \
         each command. Milliseconds, and MB/s: the {} of uncompressed layers (10^6 \
         bytes a MB) over the median.\n",
        r.image,
        mb(r.archive_bytes),
        a.layers,
        mb(a.tar_bytes),
        group(a.entries as usize),
        group(a.files as usize),
        a.whiteouts,
        a.skipped,
        r.fs_type,
        r.dest_dir,
        r.rounds,
        r.runs,
        r.rounds * r.runs,
        mb(a.tar_bytes),
    );
    let _ = writeln!(o, "| Command | min | median | p95 | MB/s |");
    let _ = writeln!(o, "|---|---:|---:|---:|---:|");
    for (label, s) in [
        (
            "`agentctl image pull docker-archive:FILE` (into an empty `AGENTCTL_IMAGES`)",
            &r.pull,
        ),
        ("`tar -xf LAYER -C DIR` for each layer (GNU tar)", &r.tar),
        (
            "`Unpacker::apply_layer` for each layer, then `finish` (`xtask unpack-layers`)",
            &r.apply,
        ),
    ] {
        let _ = writeln!(
            o,
            "| {label} | {:.0} | {:.0} | {:.0} | {:.0} |",
            s.min,
            s.median,
            s.p95,
            r.mb_per_s(s)
        );
    }
    let per_round = |a: usize, b: usize| -> Vec<f64> {
        r.per_round
            .iter()
            .map(|s| s[a].median / s[b].median)
            .collect()
    };
    let (pull, tar, apply) = (0, 1, 2);
    let _ = writeln!(o);
    let _ = writeln!(o, "| Ratio of medians | pooled | each round |");
    let _ = writeln!(o, "|---|---:|---|");
    for (label, x, y, sx, sy) in [
        ("agentctl image pull / tar", pull, tar, &r.pull, &r.tar),
        ("Unpacker / tar", apply, tar, &r.apply, &r.tar),
        (
            "agentctl image pull / Unpacker",
            pull,
            apply,
            &r.pull,
            &r.apply,
        ),
    ] {
        let _ = writeln!(
            o,
            "| {label} | {:.2}× | {} |",
            sx.median / sy.median,
            round_range(&per_round(x, y))
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "The pull is the whole import that `agentctl run --image` would do on a cold \
         cache, and it includes hashing: it reads the archive twice (its table of \
         contents, then the files it needs), copies every layer into the blob store \
         while computing its sha256, then unpacks from the blob store, hashing each \
         blob again against its digest and its uncompressed stream against the \
         config's diff id, and finally measures the root filesystem's size. The \
         `Unpacker` row is the unpack alone, in one process: every path resolved \
         from a descriptor of the root without following links, whiteouts applied, \
         device nodes skipped, owners, modes and times restored, and the diff id \
         (sha256) of each layer computed as it is read, but no blob copied or \
         hashed. tar does the least: it hashes nothing and applies no whiteouts (it \
         writes them as plain files), and it creates the device nodes. There is no \
         goal for this benchmark.\n"
    );
    let here = if r.tmp_is_unjournaled_ext4 {
        " (the file system of this machine's temporary directory)"
    } else {
        ""
    };
    let _ = writeln!(
        o,
        "The destination is on tmpfs so that the rows compare the unpackers, not the \
         disk and how its file system copes with the previous run's deletions: ext4 \
         without a journal{here}, for one, does not reuse an inode for a minute or \
         more after its deletion and checks every such inode again on each inode \
         allocation, so a run that follows the removal of the previous run's tens of \
         thousands of files spends most of its time in that check, whichever command \
         it is.\n"
    );
    let _ = writeln!(
        o,
        "Load average (1, 5, 15 min) before / after: {} / {}.\n",
        r.load.0, r.load.1
    );
    o
}

/// When a section was measured apart from the rest of the document.
pub struct Provenance {
    pub command: String,
    pub date: String,
    pub commit: String,
    /// CPUs, CPU model, kernel.
    pub machine: String,
}

/// "1,234 (1,100–1,300)": the median round's rate, and the range.
fn rate(per_round: &[f64]) -> String {
    let mut v = per_round.to_vec();
    v.sort_by(f64::total_cmp);
    let r = |x: f64| group(x.round() as usize);
    format!("{} ({}–{})", r(median_of(&v)), r(v[0]), r(v[v.len() - 1]))
}

/// The median of values in any order; the mean of the two middle ones when
/// their number is even.
fn median_of(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

/// The session store: appends and reads on SQLite and Postgres side by
/// side. `apart` says when the section was measured on its own.
pub fn store_section(r: &StoreReport, apart: Option<&Provenance>) -> String {
    let (sq, pg) = (&r.sqlite, &r.postgres);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "## Session store: {} sessions, SQLite and Postgres\n",
        group(r.sessions)
    );
    if let Some(p) = apart {
        let _ = writeln!(
            o,
            "Measured apart from the sections above, by `{}` on {} at commit {}, on {}; `cargo \
             xtask bench` measures it with the others.\n",
            p.command, p.date, p.commit, p.machine
        );
    }
    let _ = writeln!(
        o,
        "The session store (launcher/store) through its public API, in one process: no \
         command runs, and each operation is timed with a clock around the awaited call, the \
         round trip to the database included. {}: one file on {}, in WAL mode with \
         `synchronous=FULL` (every commit reaches the disk). {}: {} ({}), over TCP on \
         127.0.0.1. Each store has a pool of {} connections.\n",
        sq.version, r.sqlite_fs, pg.version, r.postgres_origin, r.postgres_settings, r.writers
    );
    let per_s = |secs: f64| group((r.sessions as f64 / secs).round() as usize);
    let _ = writeln!(
        o,
        "Both stores first got their {} sessions through `create_session`, from {} tasks: one \
         in {} stays live (created or running; {} in all), and every other one is then \
         `update`d to exited, failed, stopped or lost, so most sessions take two transactions \
         (one more session, ended, holds the chain that `verify` reads below). That took {:.1} s on SQLite ({} sessions/s) and {:.1} s on Postgres ({} sessions/s).\n",
        group(r.sessions),
        r.writers,
        session_store::LIVE_EVERY,
        group(r.live),
        sq.populate_secs,
        per_s(sq.populate_secs),
        pg.populate_secs,
        per_s(pg.populate_secs)
    );
    let _ = writeln!(
        o,
        "**Event appends**, with the hash chain. An append is one transaction: it locks the \
         session's row (SQLite: the database, from `BEGIN IMMEDIATE`) and reads its event count \
         and head, hashes the event onto the previous hash, inserts it and moves the count and \
         head. {} rounds \
         back to back; in each, every benchmark appends {} events on SQLite, then on Postgres: \
         one writer to one session, {} writers (tasks, sharing the pool) to one session, and {} \
         writers to a session each. Events per second over the wall-clock time of a round: the \
         median round, and the slowest and fastest in parentheses. Every chain verified \
         afterwards.\n",
        r.rounds,
        group(r.events),
        r.writers,
        r.writers
    );
    let _ = writeln!(o, "| Appends | SQLite, events/s | Postgres, events/s |");
    let _ = writeln!(o, "|---|---:|---:|");
    let _ = writeln!(
        o,
        "| 1 writer, 1 session | {} | {} |",
        rate(&sq.one_writer),
        rate(&pg.one_writer)
    );
    let _ = writeln!(
        o,
        "| {} writers, 1 session (one chain) | {} | {} |",
        r.writers,
        rate(&sq.contended),
        rate(&pg.contended)
    );
    let _ = writeln!(
        o,
        "| {} writers, {} sessions | {} | {} |",
        r.writers,
        r.writers,
        rate(&sq.spread),
        rate(&pg.spread)
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "**Latency**, with {} sessions in the store. {} rounds back to back; in each, {} runs of \
         every read on SQLite, then on Postgres. The table pools the {} runs of each (the \
         append row: all {} appends of the one-writer benchmark above). Milliseconds.\n",
        group(r.sessions),
        r.rounds,
        r.runs,
        r.rounds * r.runs,
        group(r.rounds * r.events)
    );
    let _ = writeln!(
        o,
        "| Operation | SQLite min | median | p95 | Postgres min | median | p95 |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|");
    let both = |o: &mut String, label: &str, a: &Summary, b: &Summary| {
        let _ = writeln!(
            o,
            "| {label} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            a.min, a.median, a.p95, b.min, b.median, b.p95
        );
    };
    both(&mut o, "`append_event`, 1 writer", &sq.append, &pg.append);
    both(
        &mut o,
        &format!(
            "`list`, default page (the newest {} of the {} live sessions)",
            (store::DEFAULT_PAGE as usize).min(r.live),
            group(r.live)
        ),
        &sq.list_live,
        &pg.list_live,
    );
    both(
        &mut o,
        &format!(
            "`list` with `all`, first page (of {})",
            group(r.sessions + 1)
        ),
        &sq.list_all,
        &pg.list_all,
    );
    both(
        &mut o,
        "`get` by a 12-digit prefix (a different session each run)",
        &sq.get_prefix,
        &pg.get_prefix,
    );
    both(&mut o, "`count`", &sq.count, &pg.count);
    both(
        &mut o,
        &format!("`verify`, a chain of {} events", group(r.events + 1)),
        &sq.verify,
        &pg.verify,
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "The live and the full listing each walk an index in `created_at` order (a partial \
         index holds the live sessions), so a page near the top costs the same whatever the \
         store's size; \
         `get` resolves a prefix as a range of the primary key, as docker does; `count` counts \
         every row.\n"
    );
    let goal = session_store::LIST_GOAL_MS;
    let met = |s: &Summary| s.p95 < goal;
    let verdict = if met(&sq.list_live) && met(&pg.list_live) {
        "**met**"
    } else {
        "**not met**"
    };
    let _ = writeln!(
        o,
        "Goal, `list`'s default page under {goal:.0} ms (p95) with {} sessions: {verdict} \
         (SQLite {:.2} ms, Postgres {:.2} ms).\n",
        group(r.sessions),
        sq.list_live.p95,
        pg.list_live.p95
    );
    let _ = writeln!(
        o,
        "Load average (1, 5, 15 min) before / after: {} / {}.\n",
        r.load.0, r.load.1
    );
    o
}

/// `doc` with its session store section replaced by `section`, or with
/// `section` appended if it has none.
pub fn splice_store_section(doc: &str, section: &str) -> String {
    const HEADING: &str = "## Session store";
    let mut out = String::new();
    let mut lines = doc.lines().peekable();
    let mut replaced = false;
    while let Some(line) = lines.next() {
        if line.starts_with(HEADING) && !replaced {
            out.push_str(section.trim_end());
            out.push_str("\n\n");
            while lines.peek().is_some_and(|l| !l.starts_with("## ")) {
                lines.next();
            }
            replaced = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        while out.ends_with("\n\n") {
            out.pop();
        }
        out.push('\n');
        out.push_str(section.trim_end());
    }
    let mut out = out.trim_end().to_string();
    out.push('\n');
    out
}

/// "+85": a difference in microseconds, signed.
fn us(x: f64) -> String {
    format!("{x:+.0}")
}

/// "+80 to +95": the lowest and highest of the rounds' differences.
fn us_range(diffs: &[f64]) -> String {
    let lo = diffs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = diffs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{} to {}", us(lo), us(hi))
}

/// Each round's `op(a, b)`, element by element.
fn per_round(a: &[f64], b: &[f64], op: fn(f64, f64) -> f64) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| op(*x, *y)).collect()
}

/// The median latency of `via` minus direct's, in microseconds: all rounds
/// pooled, and each round.
fn added_latency(l: &[Load; 3], via: Via) -> (f64, Vec<f64>) {
    let (this, direct) = (&l[via as usize], &l[Via::Direct as usize]);
    (
        this.latency.median - direct.latency.median,
        per_round(&this.round_medians, &direct.round_medians, |x, y| x - y),
    )
}

/// The throughput of `a` over `b`: of the median rounds, and each round.
fn throughput(a: &[f64], b: &[f64]) -> (f64, Vec<f64>) {
    (median_of(a) / median_of(b), per_round(a, b, |x, y| x / y))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// One request type: the one-connection rows, then the many-connection
/// rows.
fn requests_table(o: &mut String, title: &str, r: &Requests, connections: usize) {
    let _ = writeln!(o, "{title}\n");
    let _ = writeln!(
        o,
        "| Path | connections | requests | stalled | requests/s | min | median | p95 | p99 | \
         median over direct |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (conns, l) in [(1, &r.single), (connections, &r.concurrent)] {
        for via in VIAS {
            let x = &l[via as usize];
            let over = match via {
                Via::Direct => String::new(),
                _ => us(added_latency(l, via).0),
            };
            let _ = writeln!(
                o,
                "| {} | {conns} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {over} |",
                via.label(),
                group(x.requests),
                x.stalls,
                rate(&x.rates),
                x.latency.min,
                x.latency.median,
                x.latency.p95,
                x.p99,
            );
        }
    }
    let _ = writeln!(o);
}

/// `agentctl proxy` against the daemon's own socket and HAProxy.
pub fn proxy_section(r: &ProxyReport) -> String {
    let mut o = String::new();
    let api = proxy::API;
    let n = r.connections;
    let _ = writeln!(
        o,
        "## Docker API proxy: agentctl proxy, HAProxy and the daemon's own socket\n"
    );
    let [_, denied_agentctl, denied_haproxy] = r.denied;
    // "HAProxy 2.6.12-1+deb12u4" out of `haproxy -v`'s "HAProxy version
    // 2.6.12-1+deb12u4 2026/10/17".
    let haproxy = match r.haproxy_version.strip_prefix("HAProxy version ") {
        Some(v) => format!("HAProxy {}", v.split_whitespace().next().unwrap_or(v)),
        None => r.haproxy_version.clone(),
    };
    let _ = writeln!(
        o,
        "Three ways to the same Docker daemon, all over unix sockets: its own socket \
         ({}); `agentctl proxy --role {}` in front of it; and {} configured as Tecnativa's \
         docker-socket-proxy is, with CONTAINERS=1 and INFO=1 added to its defaults (ping, \
         version, events), which is what the role allows. HAProxy checks the method (GET \
         only) and the path against a regular expression and passes the rest through \
         unread; as docker-socket-proxy does, it opens a new connection to the daemon for \
         every request (`option http-server-close`) and logs every request (to /dev/null \
         here). agentctl proxy parses every request strictly, rewrites it to one API \
         version and checks it against the role. Both refuse what the role leaves out: \
         `GET {api}/images/json` got {denied_agentctl} from agentctl proxy and \
         {denied_haproxy} from HAProxy.\n",
        proxy::DOCKER_SOCK,
        proxy::ROLE,
        haproxy,
    );
    let _ = writeln!(
        o,
        "wrk cannot use a unix socket, so the load comes from xtask itself: hyper's \
         HTTP/1 client on one thread and keep-alive connections, each sending its next \
         request as soon as it has read the last response, for {} s per measurement, \
         after {} s of untimed load on every path. Every response must be a 200. One \
         connection measures what a request costs with nothing queued before it (the \
         latency goal); {n} connections at once measure throughput, and their latency \
         is mostly the wait behind the other connections' requests. The load generator, \
         the proxy and the daemon share the machine's CPUs. {} rounds back to back; in each, every measurement runs on the three paths in turn (direct, \
         agentctl proxy, HAProxy). Requests: all rounds; requests per second: the median \
         round, and the slowest and fastest in parentheses. Latency: from sending a \
         request to reading the last byte of its response, every request of all rounds \
         pooled, in microseconds.\n",
        r.seconds,
        proxy::WARMUP_MS as f64 / 1000.0,
        r.rounds
    );
    requests_table(
        &mut o,
        &format!("**`GET {api}/_ping`** (the body `OK`)"),
        &r.ping,
        n,
    );
    requests_table(
        &mut o,
        &format!(
            "**`GET {api}/containers/json`** ({} running containers, {} bytes of JSON)",
            r.listed,
            group(r.list_bytes)
        ),
        &r.list,
        n,
    );
    let _ = writeln!(
        o,
        "**Streamed logs**: `GET {api}/containers/ID/logs?stdout=1` of an exited container \
         of {} that wrote {} lines of {} bytes to stdout ({} of output), read to the end \
         on a fresh connection, {} times per path and round. MB/s of log output (10^6 \
         bytes), every read pooled.\n",
        crate::docker::IMAGE,
        group(proxy::LOG_LINES as usize),
        proxy::LOG_LINE,
        mb(proxy::LOG_BYTES),
        proxy::LOG_READS,
    );
    let _ = writeln!(o, "| Path | reads | stalled | median | slowest | fastest |");
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|");
    for via in VIAS {
        let s: &Stream = &r.logs[via as usize];
        let lo = s.reads.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = s.reads.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:.1} | {lo:.1} | {hi:.1} |",
            via.label(),
            s.reads.len(),
            s.stalls,
            s.median
        );
    }
    let _ = writeln!(o);
    let stalls = |via: Via| {
        let i = via as usize;
        [&r.ping, &r.list]
            .iter()
            .map(|q| q.single[i].stalls + q.concurrent[i].stalls)
            .sum::<usize>()
            + r.logs[i].stalls
    };
    let _ = writeln!(
        o,
        "A response that sends no byte for {} s counts as stalled: the load generator \
         drops its connection and goes on with a fresh one, and reads the logs again; \
         the stalled columns count those, and the other columns leave them out (but the \
         requests per second of a round count the time lost).{}\n",
        proxy::STALL.as_secs(),
        if stalls(Via::Haproxy) > 0 && haproxy.starts_with("HAProxy 2.6.12") {
            " HAProxy's stalls match a bug of the HAProxy 2.6.12 that Debian 12 ships: when \
             its buffer fills at the boundary of a chunk of a chunked response it stops \
             reading the daemon's response, and the transfer hangs until a timeout \
             (`timeout server`, 10 minutes here). The daemon sends every log line as a \
             chunk of its own, so a read of the logs crosses such boundaries over a hundred \
             thousand times. Most likely haproxy/haproxy#2262, fixed upstream in September \
             2023 (\"BUG/MEDIUM: h1-htx: Ensure chunked parsing with full output buffer\")."
        } else {
            ""
        }
    );

    let (a, h, d) = (
        Via::Agentctl as usize,
        Via::Haproxy as usize,
        Via::Direct as usize,
    );
    let ping_added = added_latency(&r.ping.single, Via::Agentctl);
    let list_added = added_latency(&r.list.single, Via::Agentctl);
    let ping_ha = added_latency(&r.ping.single, Via::Haproxy);
    let list_ha = added_latency(&r.list.single, Via::Haproxy);
    let (pn, ln) = (&r.ping.concurrent, &r.list.concurrent);
    let ping_vs = throughput(&pn[a].rates, &pn[h].rates);
    let list_vs = throughput(&ln[a].rates, &ln[h].rates);
    let logs_vs = (
        r.logs[a].median / r.logs[h].median,
        per_round(
            &r.logs[a].round_medians,
            &r.logs[h].round_medians,
            |x, y| x / y,
        ),
    );
    let ping_direct = throughput(&pn[a].rates, &pn[d].rates);
    let list_direct = throughput(&ln[a].rates, &ln[d].rates);
    let logs_direct = r.logs[a].median / r.logs[d].median;
    let _ = writeln!(
        o,
        "| Difference or ratio | `_ping` | `containers/json` | logs |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|");
    let _ = writeln!(
        o,
        "| agentctl proxy − direct, median latency, 1 connection (µs) | {} | {} | |",
        us(ping_added.0),
        us(list_added.0)
    );
    let _ = writeln!(
        o,
        "| the same, each round | {} | {} | |",
        us_range(&ping_added.1),
        us_range(&list_added.1)
    );
    let _ = writeln!(
        o,
        "| HAProxy − direct, median latency, 1 connection (µs) | {} | {} | |",
        us(ping_ha.0),
        us(list_ha.0)
    );
    let _ = writeln!(
        o,
        "| agentctl proxy / HAProxy, throughput ({n} connections; logs: 1) | {:.2}× | {:.2}× | \
         {:.2}× |",
        ping_vs.0, list_vs.0, logs_vs.0
    );
    let _ = writeln!(
        o,
        "| the same, each round | {} | {} | {} |",
        round_range(&ping_vs.1),
        round_range(&list_vs.1),
        round_range(&logs_vs.1)
    );
    let _ = writeln!(
        o,
        "| agentctl proxy / direct, throughput ({n} connections; logs: 1) | {:.2}× | {:.2}× | \
         {:.2}× |",
        ping_direct.0, list_direct.0, logs_direct
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "The logs column is one connection reading one stream: its ratios are of the \
         median reads, and each round's of that round's median reads.\n"
    );
    let met = |ok: bool| if ok { "**met**" } else { "**not met**" };
    let goal = proxy::LATENCY_GOAL_US;
    let _ = writeln!(
        o,
        "Goal, agentctl proxy adds at most {goal:.0} µs to the median latency over direct \
         (one connection, all rounds pooled): {} (`_ping` {} µs, `containers/json` {} µs).\n",
        met(ping_added.0 <= goal && list_added.0 <= goal),
        us(ping_added.0),
        us(list_added.0)
    );
    let goal = proxy::THROUGHPUT_GOAL;
    let _ = writeln!(
        o,
        "Goal, agentctl proxy's throughput at least {goal:.1}× HAProxy's (requests: {n} \
         connections, the median rounds; logs: the median reads): {} (`_ping` {:.2}×, \
         `containers/json` {:.2}×, logs {:.2}×).\n",
        met(ping_vs.0 >= goal && list_vs.0 >= goal && logs_vs.0 >= goal),
        ping_vs.0,
        list_vs.0,
        logs_vs.0
    );
    let goal = proxy::RSS_GOAL_MIB;
    let (ar, hr) = (r.agentctl_rss, r.haproxy_rss);
    let _ = writeln!(
        o,
        "Goal, agentctl proxy's resident memory at most {goal:.0} MiB when idle (VmRSS, \
         after it started and answered the checks above, then 1 s idle): {} ({}; {} idle \
         after all rounds). HAProxy: {} and {}.\n",
        met(ar.idle_kib as f64 / 1024.0 <= goal),
        mib(ar.idle_kib),
        mib(ar.after_kib),
        mib(hr.idle_kib),
        mib(hr.after_kib)
    );
    let _ = writeln!(
        o,
        "Load average (1, 5, 15 min) before / after: {} / {}.\n",
        r.load.0, r.load.1
    );
    o
}

const HOW_TO_READ: &str = "\
Every number is wall-clock time, from hyperfine starting the command to its \
exit, in milliseconds. min is the best run, median the typical one, p95 the \
time 95% of the runs did not exceed (nearest rank: always a measured run). \
xtask computes all three from the per-run times of hyperfine's JSON export. \
Lower is better; a ratio is agentctl's median over the other command's, so \
below 1× means agentctl is faster; a verdict is on the ratio of the medians \
of all rounds pooled, and the per-round range shows how far one round alone \
could have swayed it. Nothing here is a test: a slow number \
fails nothing. Compare numbers only within one invocation: on a shared or \
virtual machine two invocations minutes apart can differ by more than the \
rows of one (the load averages show how quiet it was). Within a round \
hyperfine runs all runs of one command before the next command, so a burst \
of background work can hurt one row alone; the rounds spread that risk over \
all rows.

In the launch benchmark crun and runc run the bundle that `agentctl bundle` \
writes for the same session, from the same workspace (a fresh git repository with one commit): the same \
mounts, masks, seccomp filter, namespaces and cgroup limits. agentctl also \
plans the session for every run (profile, secret scan of the workspace and \
of the host paths it mounts), which the runtimes got for free; the \
`agentctl explain` row is that planning alone. Every row runs through the \
same `sh -c 'exec …'` wrapper, which crun and runc need for a unique \
container id (`bench-$$`); the `sh -c true` row is what that wrapper costs, \
and the goal is judged on medians with it subtracted. Debian's crun 1.8 \
refuses a hybrid cgroup host, so hyperfine and every command it times run in \
one private mount namespace (`unshare --mount`) where the cgroup2 mount is \
hidden: all three use the cgroup v1 controllers there. On cgroup v1, the \
first move of a process into a cgroup after a quiet spell waits for an RCU \
grace period (several milliseconds); every runtime pays it on some runs and \
not on others, and it is much of the distance between min and p95.";

pub fn document(command: &str, m: &Machine, load_after: &str, results: &Results) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Benchmarks\n");
    let _ = writeln!(
        o,
        "Written by `cargo xtask bench` (launcher/xtask); do not edit the numbers by \
         hand. Every number below comes from one run of this command, as root, from \
         the repository root (it needs hyperfine, crun, runc, unshare, GNU tar, \
         PostgreSQL's server programs or a server at AGENTCTL_TEST_POSTGRES, HAProxy, \
         and a Docker daemon with the images agentctl/debian:bookworm, from \
         images/make-base.sh, and agentctl/agent-base:latest, from `agentctl image \
         build`):\n"
    );
    let _ = writeln!(o, "```sh\n{command}\n```\n");
    let _ = writeln!(o, "- Date: {}", m.date);
    let _ = writeln!(o, "- Commit: {}", m.commit);
    let _ = writeln!(
        o,
        "- agentctl: `cargo build --release -p agentctl` (built by the command)\n"
    );
    let _ = writeln!(o, "## Machine\n");
    let _ = writeln!(o, "| | |");
    let _ = writeln!(o, "|---|---|");
    for (k, v) in [
        ("CPUs (`nproc`)", &m.nproc),
        ("CPU", &m.cpu),
        ("Memory", &m.memory),
        ("Kernel (`uname -r`)", &m.kernel),
        ("OS", &m.os),
        ("cgroups", &m.cgroups),
        ("crun", &m.crun),
        ("runc", &m.runc),
        ("hyperfine", &m.hyperfine),
        ("Docker", &m.docker_engine),
        ("docker CLI", &m.docker_cli),
        ("tar", &m.tar),
        ("HAProxy", &m.haproxy),
        ("rustc", &m.rustc),
    ] {
        let _ = writeln!(o, "| {k} | {v} |");
    }
    let _ = writeln!(
        o,
        "| Load average (1, 5, 15 min), start / end | {} / {load_after} |",
        m.loadavg
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "## How to read\n\n{HOW_TO_READ}\n");
    o.push_str(&launch_section(&results.launch));
    o.push_str(&scan_section(&results.scan));
    o.push_str(&docker_section(&results.docker));
    o.push_str(&unpack_section(&results.unpack));
    o.push_str(&store_section(&results.store, None));
    o.push_str(&proxy_section(&results.proxy));
    // One newline at the end of the file, not a blank line.
    while o.ends_with("\n\n") {
        o.pop();
    }
    o
}

/// 100000 -> "100,000".
fn group(n: usize) -> String {
    let digits = n.to_string().into_bytes();
    let mut groups: Vec<&[u8]> = digits.rchunks(3).collect();
    groups.reverse();
    groups
        .iter()
        .map(|g| String::from_utf8_lossy(g))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(group(7), "7");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(100_000), "100,000");
        assert_eq!(group(1_234_567), "1,234,567");
    }

    #[test]
    fn spreads() {
        assert_eq!(
            round_spread(&[1.2, 1.7, 1.4], GOAL),
            "1.20×–1.70×, ≤ 1.5× in 2 of 3 rounds"
        );
        assert_eq!(
            round_spread(&[0.5, 0.8], DOCKER_GOAL),
            "0.50×–0.80×, ≤ 0.7× in 1 of 2 rounds"
        );
        assert_eq!(round_range(&[2.0, 1.0]), "1.00×–2.00×");
    }

    #[test]
    fn verdicts() {
        assert!(store_verdict(2.0).ends_with("**met**"));
        assert!(store_verdict(2.01).ends_with("**not met**"));
        assert!(verdict(1.5, GOAL).starts_with("**met**"));
        assert!(verdict(1.51, GOAL).starts_with("**not met**"));
        assert!(verdict(0.7, DOCKER_GOAL).starts_with("**met**"));
        assert!(verdict(0.71, DOCKER_GOAL).starts_with("**not met**"));
    }

    #[test]
    fn rates_show_the_median_round_and_the_range() {
        assert_eq!(rate(&[1200.4, 998.0, 1500.0]), "1,200 (998–1,500)");
        assert_eq!(rate(&[10.0, 20.0]), "15 (10–20)");
    }

    #[test]
    fn splices_the_store_section() {
        let doc = "# B\n\n## A\n\nx\n\n## Session store: 5 sessions\n\nold\n\n## C\n\ny\n";
        let new = "## Session store: 9 sessions\n\nnew\n\n";
        assert_eq!(
            splice_store_section(doc, new),
            "# B\n\n## A\n\nx\n\n## Session store: 9 sessions\n\nnew\n\n## C\n\ny\n"
        );
        let without = "# B\n\n## A\n\nx\n";
        assert_eq!(
            splice_store_section(without, new),
            "# B\n\n## A\n\nx\n\n## Session store: 9 sessions\n\nnew\n"
        );
        let last = "# B\n\n## Session store: 5\n\nold\n";
        assert_eq!(
            splice_store_section(last, new),
            "# B\n\n## Session store: 9 sessions\n\nnew\n"
        );
    }

    fn load(median: f64, rates: &[f64], stalls: usize) -> Load {
        Load {
            requests: 1000,
            rates: rates.to_vec(),
            latency: Summary {
                runs: 1000,
                min: median / 2.0,
                median,
                p95: median * 2.0,
            },
            p99: median * 3.0,
            round_medians: vec![median - 5.0, median + 5.0],
            stalls,
        }
    }

    fn stream(median: f64, stalls: usize) -> Stream {
        Stream {
            reads: vec![median - 1.0, median, median + 1.0],
            median,
            round_medians: vec![median, median],
            stalls,
        }
    }

    /// Direct, agentctl proxy, HAProxy: `_ping` medians 60/140/200 µs
    /// (one connection), throughput 30,000/20,000/10,000 a second.
    fn proxy_report(haproxy_stalls: usize, agentctl_rss_kib: u64) -> ProxyReport {
        let requests = |medians: [f64; 3]| Requests {
            single: medians.map(|m| load(m, &[1e6 / m, 1e6 / m], 0)),
            concurrent: [
                load(300.0, &[30_000.0, 31_000.0], 0),
                load(400.0, &[20_000.0, 19_000.0], 0),
                load(800.0, &[10_000.0, 10_500.0], 0),
            ],
        };
        ProxyReport {
            seconds: 3,
            rounds: 2,
            connections: 8,
            haproxy_version: "HAProxy version 2.6.12-1+deb12u4 2026/10/17".into(),
            ping: requests([60.0, 140.0, 200.0]),
            list: requests([500.0, 550.0, 700.0]),
            logs: [
                stream(30.0, 0),
                stream(20.0, 0),
                stream(25.0, haproxy_stalls),
            ],
            listed: 10,
            list_bytes: 10_500,
            denied: [200, 403, 403],
            agentctl_rss: proxy::Rss {
                idle_kib: agentctl_rss_kib,
                after_kib: agentctl_rss_kib + 512,
            },
            haproxy_rss: proxy::Rss {
                idle_kib: 15_000,
                after_kib: 15_500,
            },
            load: ("1.00 1.00 1.00".into(), "1.10 1.00 1.00".into()),
        }
    }

    #[test]
    fn proxy_section_judges_the_goals() {
        let s = proxy_section(&proxy_report(0, 9 * 1024));
        assert!(s.starts_with("## Docker API proxy"));
        assert!(s.contains("and HAProxy 2.6.12-1+deb12u4 configured as"));
        // +80 µs on `_ping`, +50 µs on containers/json: at most 100.
        assert!(s.contains(
            "over direct (one connection, all rounds pooled): **met** (`_ping` +80 µs, \
             `containers/json` +50 µs)."
        ));
        // 19,500 / 10,250 for the requests, 20 / 25 MB/s for the logs.
        assert!(s.contains("**not met** (`_ping` 1.90×, `containers/json` 1.90×, logs 0.80×)."));
        assert!(s.contains("idle): **met** (9.0 MiB; 9.5 MiB idle after all rounds)"));
        assert!(s.contains(
            "| agentctl proxy | 1 | 1,000 | 0 | 7,143 (7,143–7,143) | 70 | 140 | 280 | 420 | +80 |"
        ));
        assert!(s.contains("| the same, each round | +80 to +80 | +50 to +50 | |"));
        assert!(!s.contains("haproxy/haproxy#2262"));
        assert!(s.ends_with("/ 1.10 1.00 1.00.\n\n"));
    }

    #[test]
    fn proxy_section_explains_haproxy_stalls_and_memory() {
        let s = proxy_section(&proxy_report(2, 11 * 1024));
        assert!(s.contains("| HAProxy (docker-socket-proxy's configuration) | 3 | 2 | 25.0 |"));
        assert!(s.contains("haproxy/haproxy#2262"));
        assert!(s.contains("idle): **not met** (11.0 MiB;"));
    }

    #[test]
    fn proxy_differences_and_ratios() {
        let l = [
            load(60.0, &[1.0], 0),
            load(140.0, &[1.0], 0),
            load(200.0, &[1.0], 0),
        ];
        let (added, rounds) = added_latency(&l, Via::Agentctl);
        assert_eq!(added, 80.0);
        assert_eq!(rounds, vec![80.0, 80.0]);
        assert_eq!(us_range(&[-3.0, 12.4, 7.0]), "-3 to +12");
        let (ratio, each) = throughput(&[30.0, 10.0, 20.0], &[10.0, 10.0, 10.0]);
        assert_eq!(ratio, 2.0);
        assert_eq!(each, vec![3.0, 1.0, 2.0]);
        assert_eq!(median_of(&[3.0, 1.0, 2.0, 10.0]), 2.5);
    }

    #[test]
    fn wrapper_is_taken_off_both_sides() {
        let s = |median| Summary {
            runs: 1,
            min: median,
            median,
            p95: median,
        };
        let (raw, net) = ratios(&s(21.0), &s(11.0), &s(1.0));
        assert!((raw - 21.0 / 11.0).abs() < 1e-9);
        assert!((net - 2.0).abs() < 1e-9);
    }
}
