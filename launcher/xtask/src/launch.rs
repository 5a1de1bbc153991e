//! `cargo xtask bench-launch`: time-to-exit of a sandboxed `true`, with
//! agentctl's native backend and with crun and runc running the bundle
//! that `agentctl bundle` writes for the same session.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};

use crate::Ctx;
use crate::hyperfine::{self, Bench};
use crate::stats::Summary;

pub const WARMUP: usize = 3;

pub struct LaunchReport {
    pub runs: usize,
    pub rounds: usize,
    pub warmup: usize,
    /// `sh -c true`: what the wrapper shell costs every other row.
    pub baseline: Summary,
    pub agentctl_run: Summary,
    /// `agentctl explain`: planning (profile, scan, spec) without a sandbox.
    pub agentctl_plan: Summary,
    pub crun: Summary,
    pub runc: Summary,
    /// `agentctl run --store none`: the same session without a record, so
    /// that the difference to `agentctl_run` is what the store costs.
    pub agentctl_unrecorded: Summary,
    /// Each round's summaries: wrapper, agentctl run, crun, runc.
    pub per_round: Vec<[Summary; 4]>,
    /// `--baseline`: the other build (its path, `agentctl --version`), its
    /// unrecorded row, and per round this build's unrecorded median minus
    /// the other's.
    pub baseline_build: Option<(String, Summary, Vec<f64>)>,
    /// The scheduling load before and after the hyperfine run.
    pub load: (String, String),
}

/// Quotes a word for a POSIX shell (and for hyperfine's word splitting).
pub fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `sh -c 'exec <words>'`: every timed row goes through the same wrapper
/// shell, which the runtimes need anyway for a unique container id
/// (`$$`, the wrapper's pid). `exec` keeps the process tree the same for
/// all rows; `tail` is appended unquoted so that the shell expands it.
pub fn wrapped(words: &[&str], tail: &str) -> Vec<String> {
    let mut script = String::from("exec");
    for w in words {
        script.push(' ');
        script.push_str(&quote(w));
    }
    script.push_str(tail);
    vec!["sh".into(), "-c".into(), script]
}

pub fn bench(name: &str, words: &[String]) -> Bench {
    Bench {
        name: name.into(),
        command: words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" "),
    }
}

pub fn bench_launch(ctx: &Ctx, runs: usize, rounds: usize) -> Result<LaunchReport> {
    let tmp = tempfile::Builder::new()
        .prefix("agentctl-bench-launch-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let base = tmp.path();
    // A fresh git repository with one commit, as a project would be: its
    // git directory is what agentctl makes read-only (issue 9, item 12),
    // in agentctl's rows and in the bundle the runtimes run alike.
    let ws = base.join("workspace");
    std::fs::create_dir(&ws)?;
    std::fs::write(ws.join("README"), "bench\n")?;
    for args in [
        &["init", "-q"][..],
        &["add", "README"],
        &[
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@localhost",
            "commit",
            "-qm",
            "bench",
        ],
    ] {
        let ok = Command::new("git")
            .args(args)
            .current_dir(&ws)
            .status()
            .context("cannot run git")?
            .success();
        ensure!(ok, "git {args:?} failed in the launch workspace");
    }
    let tag = std::process::id();
    let agentctl = ctx.agentctl.to_string_lossy().into_owned();

    // One bundle per runtime, each with its own cgroup, written from the
    // same (empty) workspace that agentctl runs in.
    let mut bundles = Vec::new();
    for rt in ["crun", "runc"] {
        let dir = base.join(format!("bundle-{rt}"));
        let cgroup = format!("/agentctl/bench-{tag}-{rt}");
        let out = agentctl_cmd(ctx, &ws)
            .arg("bundle")
            .arg("--out")
            .arg(&dir)
            .args(["--cgroups-path", &cgroup, "--", "true"])
            .output()
            .context("cannot run agentctl bundle")?;
        ensure!(
            out.status.success(),
            "agentctl bundle failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let state = base.join(format!("{rt}-state"));
        std::fs::create_dir(&state)?;
        bundles.push((rt, dir, state));
    }

    // The recorded row writes to a throwaway SQLite store rather than the
    // user's own, on the same file system as the default one would be.
    let store = format!("sqlite://{}", base.join("sessions.db").display());
    let id = " bench-$$";
    let mut rows: Vec<(&str, Vec<String>)> = vec![
        ("sh -c true", vec!["sh".into(), "-c".into(), "true".into()]),
        (
            "agentctl run -q -- true",
            wrapped(
                &[&agentctl, "--store", &store, "run", "-q", "--", "true"],
                "",
            ),
        ),
        ("agentctl explain", wrapped(&[&agentctl, "explain"], "")),
    ];
    for (rt, dir, state) in &bundles {
        let (dir, state) = (dir.to_string_lossy(), state.to_string_lossy());
        let words = wrapped(&[rt, "--root", &state, "run", "--bundle", &dir], id);
        rows.push((rt, words));
    }
    rows.push((
        "agentctl run -q --store none -- true",
        wrapped(
            &[&agentctl, "--store", "none", "run", "-q", "--", "true"],
            "",
        ),
    ));
    let other = ctx
        .baseline
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned());
    if let Some(other) = &other {
        rows.push((
            "baseline agentctl run -q --store none -- true",
            wrapped(&[other, "--store", "none", "run", "-q", "--", "true"], ""),
        ));
    }

    eprintln!("xtask: checking that every command exits 0 in the benchmark namespace");
    for (name, words) in &rows {
        hyperfine::verify(words, &ws, true).with_context(|| format!("{name} does not work"))?;
    }

    let benches: Vec<Bench> = rows.iter().map(|(n, w)| bench(n, w)).collect();
    let load_before = crate::machine::loadavg();
    let result = hyperfine::run_rounds(
        &benches,
        &hyperfine::Options {
            runs,
            warmup: WARMUP,
            cwd: &ws,
            json: base.join("launch.json"),
            cgroup_v1_ns: true,
            env: &[],
            prepare: None,
        },
        rounds,
    );
    let load_after = crate::machine::loadavg();
    remove_cgroups(tag);
    let t = result?;
    let [base_r, run_r, crun_r, runc_r] = [0, 1, 3, 4].map(|i| t.per_round(i));
    let (base_r, run_r, crun_r, runc_r) = (base_r?, run_r?, crun_r?, runc_r?);
    let per_round = (0..rounds)
        .map(|r| [base_r[r], run_r[r], crun_r[r], runc_r[r]])
        .collect();
    let baseline_build = match &other {
        Some(path) => {
            let version = Command::new(path)
                .arg("--version")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
            let this = t.per_round(5)?;
            let that = t.per_round(6)?;
            let diffs = (0..rounds)
                .map(|r| this[r].median - that[r].median)
                .collect();
            Some((format!("{path} ({version})"), t.pooled(6)?, diffs))
        }
        None => None,
    };
    Ok(LaunchReport {
        runs,
        rounds,
        warmup: WARMUP,
        baseline: t.pooled(0)?,
        agentctl_run: t.pooled(1)?,
        agentctl_plan: t.pooled(2)?,
        crun: t.pooled(3)?,
        runc: t.pooled(4)?,
        agentctl_unrecorded: t.pooled(5)?,
        per_round,
        baseline_build,
        load: (load_before, load_after),
    })
}

/// agentctl in `cwd`, with its defaults (see [`hyperfine::clean_env`]).
pub fn agentctl_cmd(ctx: &Ctx, cwd: &Path) -> Command {
    let mut c = Command::new(&ctx.agentctl);
    hyperfine::clean_env(&mut c).current_dir(cwd);
    c
}

/// Removes the (empty) cgroups the runtimes may have left behind.
fn remove_cgroups(tag: u32) {
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for c in controllers.flatten() {
        for rt in ["crun", "runc"] {
            let dir = c.path().join(format!("agentctl/bench-{tag}-{rt}"));
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("/usr/bin/crun"), "/usr/bin/crun");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn the_wrapper_expands_only_the_tail() {
        let w = wrapped(&["runc", "--root", "/tmp/a b"], " bench-$$");
        assert_eq!(w[2], "exec runc --root '/tmp/a b' bench-$$");
        let b = bench("x", &w);
        assert_eq!(
            b.command,
            r"sh -c 'exec runc --root '\''/tmp/a b'\'' bench-$$'"
        );
    }
}
