//! Running hyperfine and reading its JSON export.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};

use crate::stats::Summary;

/// One command to time.
#[derive(Clone, Debug)]
pub struct Bench {
    /// The row label.
    pub name: String,
    /// The command line; hyperfine runs it without a shell (`-N`) after
    /// splitting it into words, so quote arguments that have spaces.
    pub command: String,
}

pub struct Options<'a> {
    pub runs: usize,
    pub warmup: usize,
    pub cwd: &'a Path,
    /// Where hyperfine writes its JSON export.
    pub json: PathBuf,
    /// Run hyperfine (and so every command) in a private mount namespace
    /// with the cgroup2 mount of a hybrid host hidden; see [`in_cgroup_v1_ns`].
    pub cgroup_v1_ns: bool,
    /// Variables set for hyperfine, and so for every command alike.
    pub env: &'a [(String, String)],
    /// A command hyperfine runs before every run of every command (its
    /// `--prepare`), untimed; split into words like [`Bench::command`].
    pub prepare: Option<&'a str>,
}

/// Per-run times in milliseconds, indexed `[round][command][run]`.
pub struct Rounds(pub Vec<Vec<Vec<f64>>>);

impl Rounds {
    /// Command `cmd` over the runs of every round.
    pub fn pooled(&self, cmd: usize) -> Result<Summary> {
        let all: Vec<f64> = self.0.iter().flat_map(|r| r[cmd].clone()).collect();
        Summary::from_millis(&all)
    }

    /// Command `cmd`'s summary in each round.
    pub fn per_round(&self, cmd: usize) -> Result<Vec<Summary>> {
        self.0
            .iter()
            .map(|r| Summary::from_millis(&r[cmd]))
            .collect()
    }
}

/// `rounds` hyperfine runs one after the other, each timing all `benches`
/// side by side, so that a change in the machine's state between the
/// first and the last command hits every command alike.
pub fn run_rounds(benches: &[Bench], opts: &Options, rounds: usize) -> Result<Rounds> {
    let mut all = Vec::with_capacity(rounds);
    for r in 1..=rounds {
        eprintln!("xtask: round {r} of {rounds}");
        let json = opts.json.with_extension(format!("{r}.json"));
        all.push(run(benches, &Options { json, ..*opts })?);
    }
    Ok(Rounds(all))
}

/// Times all `benches` in one hyperfine run; their per-run times in
/// milliseconds, in order.
pub fn run(benches: &[Bench], opts: &Options) -> Result<Vec<Vec<f64>>> {
    let mut args: Vec<String> = vec![
        "hyperfine".into(),
        "-N".into(),
        "--style".into(),
        "basic".into(),
        "--time-unit".into(),
        "millisecond".into(),
        "--warmup".into(),
        opts.warmup.to_string(),
        "--runs".into(),
        opts.runs.to_string(),
        "--export-json".into(),
        opts.json.to_string_lossy().into_owned(),
    ];
    if let Some(prepare) = opts.prepare {
        args.push("--prepare".into());
        args.push(prepare.into());
    }
    for b in benches {
        args.push("--command-name".into());
        args.push(b.name.clone());
    }
    args.extend(benches.iter().map(|b| b.command.clone()));

    let mut cmd = if opts.cgroup_v1_ns {
        in_cgroup_v1_ns(&args)
    } else {
        let mut c = Command::new(&args[0]);
        c.args(&args[1..]);
        c
    };
    // hyperfine's report goes to stderr, so that stdout carries only the
    // markdown that the task prints.
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    let status = clean_env(&mut cmd)
        .envs(opts.env.iter().map(|(k, v)| (k, v)))
        .current_dir(opts.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .status()
        .context("cannot run hyperfine")?;
    ensure!(status.success(), "hyperfine failed ({status})");

    let text = std::fs::read_to_string(&opts.json)
        .with_context(|| format!("cannot read {}", opts.json.display()))?;
    parse_export(&text, benches)
}

fn parse_export(text: &str, benches: &[Bench]) -> Result<Vec<Vec<f64>>> {
    let json: serde_json::Value =
        serde_json::from_str(text).context("hyperfine's JSON export is invalid")?;
    let results = json["results"]
        .as_array()
        .context("hyperfine's JSON export has no results")?;
    if results.len() != benches.len() {
        bail!(
            "hyperfine reported {} results for {} commands",
            results.len(),
            benches.len()
        );
    }
    results
        .iter()
        .zip(benches)
        .map(|(r, b)| {
            let times: Vec<f64> = r["times"]
                .as_array()
                .with_context(|| format!("no times for {}", b.name))?
                .iter()
                .map(|t| t.as_f64().context("a time is not a number"))
                .collect::<Result<_>>()?;
            if let Some(codes) = r["exit_codes"].as_array() {
                ensure!(
                    codes.iter().all(|c| c.as_i64() == Some(0)),
                    "{} exited non-zero during the benchmark",
                    b.name
                );
            }
            ensure!(!times.is_empty(), "no runs of {}", b.name);
            Ok(times.iter().map(|t| t * 1000.0).collect())
        })
        .collect()
}

/// Removes the variables that would change agentctl's profile, backend,
/// logging or image cache, so that its defaults are what is measured (a
/// benchmark that needs an image cache sets AGENTCTL_IMAGES itself).
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    cmd.env_remove("AGENTCTL_PROFILE")
        .env_remove("AGENTCTL_BACKEND")
        .env_remove("AGENTCTL_LOG")
        .env_remove("AGENTCTL_IMAGES")
        .env_remove("AGENTCTL_STORE")
}

/// The shell script that sets up the namespace, then execs its arguments.
///
/// crun 1.8 refuses a hybrid cgroup host ("cgroups in hybrid mode not
/// supported"); hiding the cgroup2 mount in a private mount namespace makes
/// the host look like plain cgroup v1 to every runtime alike. On a host
/// without that mount nothing is changed.
const CGROUP_V1_NS: &str = "if mountpoint -q /sys/fs/cgroup/unified; then \
     umount /sys/fs/cgroup/unified || exit 125; fi; exec \"$@\"";

/// `argv`, run in a private mount namespace without the cgroup2 mount.
pub fn in_cgroup_v1_ns(argv: &[String]) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(CGROUP_V1_NS)
        .arg("sh")
        .args(argv);
    c
}

/// Runs a benchmarked command once, outside hyperfine, and fails with its
/// output unless it exits 0. `words` is the command already split.
pub fn verify(words: &[String], cwd: &Path, cgroup_v1_ns: bool) -> Result<String> {
    verify_with(words, cwd, cgroup_v1_ns, &[])
}

/// [`verify`] with variables set, as [`Options::env`] sets them for hyperfine.
pub fn verify_with(
    words: &[String],
    cwd: &Path,
    cgroup_v1_ns: bool,
    env: &[(String, String)],
) -> Result<String> {
    let mut cmd = if cgroup_v1_ns {
        in_cgroup_v1_ns(words)
    } else {
        let mut c = Command::new(&words[0]);
        c.args(&words[1..]);
        c
    };
    let out = clean_env(&mut cmd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", words.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}) before timing:\n{}{}",
            words.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bench(name: &str) -> Bench {
        Bench {
            name: name.into(),
            command: "true".into(),
        }
    }

    #[test]
    fn reads_times_in_order() {
        let json = r#"{"results": [
            {"command": "a", "times": [0.001, 0.003, 0.002], "exit_codes": [0, 0, 0]},
            {"command": "b", "times": [0.010], "exit_codes": [0]}
        ]}"#;
        let t = parse_export(json, &[bench("a"), bench("b")]).unwrap();
        assert_eq!(t[0].len(), 3);
        assert!((t[0][1] - 3.0).abs() < 1e-9);
        assert!((t[1][0] - 10.0).abs() < 1e-9);
    }

    #[test]
    fn pools_rounds() {
        let r = Rounds(vec![vec![vec![1.0, 2.0]], vec![vec![3.0, 4.0]]]);
        let pooled = r.pooled(0).unwrap();
        assert_eq!((pooled.runs, pooled.min, pooled.median), (4, 1.0, 2.5));
        let per = r.per_round(0).unwrap();
        assert_eq!((per[0].median, per[1].median), (1.5, 3.5));
    }

    #[test]
    fn refuses_failures_and_mismatches() {
        let json = r#"{"results": [{"times": [0.001], "exit_codes": [1]}]}"#;
        assert!(parse_export(json, &[bench("a")]).is_err());
        let json = r#"{"results": []}"#;
        assert!(parse_export(json, &[bench("a")]).is_err());
    }
}
