//! `cargo xtask bench-scan`: agentctl's planning, whose cost is the
//! parallel secret scan, against `find -name '.env*'` over the same tree,
//! with a warm cache.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};

use crate::Ctx;
use crate::hyperfine::{self, Bench};
use crate::launch::{agentctl_cmd, quote};
use crate::stats::Summary;

pub const WARMUP: usize = 3;
const MIN_FILES: usize = 1000;
/// Fixed, so that every run generates the same tree.
const SEED: u64 = 0x00a6_e47c_7100_5eed;

pub fn check_files(files: usize) -> Result<()> {
    ensure!(
        files >= MIN_FILES,
        "--files {files}: use at least {MIN_FILES} files"
    );
    Ok(())
}

/// The shape of the generated tree.
#[derive(Debug, Default)]
pub struct Tree {
    pub files: usize,
    pub dirs: usize,
    pub env_files: usize,
    pub hard_links: usize,
    /// Hard links to `.env` files under innocent names: find does not see
    /// them as secrets, agentctl must.
    pub env_hard_links: usize,
    pub fs_type: String,
}

pub struct ScanReport {
    pub runs: usize,
    pub rounds: usize,
    pub warmup: usize,
    pub tree: Tree,
    pub explain: Summary,
    pub find: Summary,
    /// Each round's summaries: explain, find.
    pub per_round: Vec<[Summary; 2]>,
    /// agentctl's own "Secret scan: ... ms" over `runs` further runs.
    pub internal: Summary,
    /// From agentctl's "Secret scan:" line: files, dirs and trees walked.
    pub scanned: (u64, u64, u64),
    /// Paths agentctl masks, and lines find prints.
    pub masked: usize,
    pub find_matches: usize,
    pub load: (String, String),
}

pub fn bench_scan(ctx: &Ctx, files: usize, runs: usize, rounds: usize) -> Result<ScanReport> {
    let tmp = tempfile::Builder::new()
        .prefix("agentctl-bench-scan-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let base = tmp.path();
    let root = base.join("tree");
    eprintln!("xtask: generating {files} files under {}", root.display());
    let mut tree = generate(&root, files, SEED)?;
    tree.fs_type = crate::machine::fs_type(&root);
    eprintln!(
        "xtask: {} files in {} directories, {} .env files, {} hard links ({} to .env files)",
        tree.files, tree.dirs, tree.env_files, tree.hard_links, tree.env_hard_links
    );

    let agentctl = ctx.agentctl.to_string_lossy().into_owned();
    let root_s = root.to_string_lossy().into_owned();
    let explain_words: Vec<String> = vec![
        agentctl.clone(),
        "explain".into(),
        "--workspace".into(),
        root_s.clone(),
    ];
    let find_words: Vec<String> = vec!["find".into(), root_s, "-name".into(), ".env*".into()];

    let explained = hyperfine::verify(&explain_words, base, false)?;
    let masked = parse_masked(&explained).context("agentctl explain printed no Masked line")?;
    let found = hyperfine::verify(&find_words, base, false)?;
    let find_matches = found.lines().count();

    let join = |w: &[String]| w.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ");
    let benches = [
        Bench {
            name: "agentctl explain --workspace DIR".into(),
            command: join(&explain_words),
        },
        Bench {
            name: "find DIR -name '.env*'".into(),
            command: join(&find_words),
        },
    ];
    let load_before = crate::machine::loadavg();
    let t = hyperfine::run_rounds(
        &benches,
        &hyperfine::Options {
            runs,
            warmup: WARMUP,
            cwd: base,
            json: base.join("scan.json"),
            cgroup_v1_ns: false,
            env: &[],
            prepare: None,
        },
        rounds,
    )?;
    let (explain_r, find_r) = (t.per_round(0)?, t.per_round(1)?);
    let per_round = explain_r
        .into_iter()
        .zip(find_r)
        .map(|(e, f)| [e, f])
        .collect();

    eprintln!("xtask: reading agentctl's own scan time over {runs} more runs");
    let mut internal = Vec::with_capacity(runs);
    let mut scanned = (0, 0, 0);
    for _ in 0..runs {
        let out = agentctl_cmd(ctx, base)
            .args(["explain", "--workspace"])
            .arg(&root)
            .output()
            .context("cannot run agentctl explain")?;
        ensure!(out.status.success(), "agentctl explain failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = parse_scan_line(&text).context("agentctl explain printed no scan time")?;
        scanned = (line.files, line.dirs, line.trees);
        internal.push(line.millis);
    }
    let load_after = crate::machine::loadavg();

    Ok(ScanReport {
        runs,
        rounds,
        warmup: WARMUP,
        tree,
        explain: t.pooled(0)?,
        find: t.pooled(1)?,
        per_round,
        internal: Summary::from_millis(&internal)?,
        scanned,
        masked,
        find_matches,
        load: (load_before, load_after),
    })
}

#[derive(Debug, PartialEq)]
struct ScanLine {
    files: u64,
    dirs: u64,
    trees: u64,
    millis: f64,
}

/// "Secret scan: 498 files in 161 directories across 10 trees, 3.2 ms"
fn parse_scan_line(text: &str) -> Option<ScanLine> {
    let line = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("Secret scan:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |key: &str| -> Option<&str> {
        let i = words.iter().position(|w| *w == key)?;
        words.get(i + 1).copied()
    };
    let number_before = |key: &str| -> Option<&str> {
        let i = words.iter().position(|w| w.trim_end_matches(',') == key)?;
        words.get(i.checked_sub(1)?).copied()
    };
    Some(ScanLine {
        files: words.first()?.parse().ok()?,
        dirs: after("in")?.parse().ok()?,
        trees: after("across")?.parse().ok()?,
        millis: number_before("ms")?.parse().ok()?,
    })
}

/// "Masked (12): read as empty, cannot be written"
fn parse_masked(text: &str) -> Option<usize> {
    let rest = text.lines().find_map(|l| l.strip_prefix("Masked ("))?;
    rest.split(')').next()?.parse().ok()
}

/// A small deterministic generator (splitmix64): the same seed gives the
/// same tree on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const DIR_NAMES: &[&str] = &[
    "src", "lib", "tests", "docs", "assets", "config", "scripts", "vendor", "pkg", "internal",
    "cmd", "api", "utils", "models", "views", "fixtures", "build", "examples",
];
const FILE_STEMS: &[&str] = &[
    "main", "mod", "index", "util", "handler", "schema", "test", "client", "server", "types",
    "README", "data", "view", "model",
];
const EXTENSIONS: &[&str] = &[
    "rs", "py", "js", "ts", "json", "md", "txt", "toml", "yaml", "go", "c", "h",
];
const ENV_NAMES: &[&str] = &[".env", ".env.local", ".env.production", ".env.development"];

/// Writes `files` files under `root`: about 35 (20 to 50) per directory in
/// a random tree of `files / 35` directories, a `.env*` file in about one
/// directory in 40, and one entry in 250 a hard link to an earlier file
/// (a quarter of those to a `.env` file).
fn generate(root: &Path, files: usize, seed: u64) -> Result<Tree> {
    let mut rng = Rng(seed);
    let n_dirs = (files / 35).max(1);
    let mut dirs: Vec<PathBuf> = Vec::with_capacity(n_dirs);
    fs::create_dir(root).with_context(|| format!("cannot create {}", root.display()))?;
    dirs.push(root.to_path_buf());
    for i in 1..n_dirs {
        // A random earlier directory: a random recursive tree, a few
        // levels deep on average with some deep paths.
        let parent = dirs[rng.below(i)].clone();
        let dir = parent.join(format!("{}_{i}", rng.pick(DIR_NAMES)));
        fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        dirs.push(dir);
    }

    let mut tree = Tree {
        dirs: n_dirs,
        ..Tree::default()
    };
    let mut plain: Vec<PathBuf> = Vec::with_capacity(files);
    let mut envs: Vec<PathBuf> = Vec::new();
    let mut d = 0;
    while tree.files < files {
        let dir = &dirs[d % n_dirs];
        let first_pass = d < n_dirs;
        let k = (20 + rng.below(31)).min(files - tree.files);
        for j in 0..k {
            let n = tree.files;
            if j == 0 && first_pass && rng.one_in(40) {
                let path = dir.join(rng.pick(ENV_NAMES));
                fs::write(&path, "API_KEY=not-a-real-secret\n")
                    .with_context(|| format!("cannot write {}", path.display()))?;
                envs.push(path);
                tree.env_files += 1;
            } else if !plain.is_empty() && rng.one_in(250) {
                let to_env = !envs.is_empty() && rng.one_in(4);
                let target = if to_env {
                    rng.pick(&envs)
                } else {
                    rng.pick(&plain)
                };
                let link = dir.join(format!("copy_{n}.{}", rng.pick(EXTENSIONS)));
                fs::hard_link(target, &link)
                    .with_context(|| format!("cannot link {}", link.display()))?;
                tree.hard_links += 1;
                tree.env_hard_links += usize::from(to_env);
            } else {
                let stem = rng.pick(FILE_STEMS);
                let path = dir.join(format!("{stem}_{n}.{}", rng.pick(EXTENSIONS)));
                fs::write(&path, format!("{stem} {n}\n"))
                    .with_context(|| format!("cannot write {}", path.display()))?;
                plain.push(path);
            }
            tree.files += 1;
        }
        d += 1;
    }
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_scan_line() {
        let text =
            "Hardening: ...\nSecret scan: 498 files in 161 directories across 10 trees, 3.2 ms\n";
        assert_eq!(
            parse_scan_line(text),
            Some(ScanLine {
                files: 498,
                dirs: 161,
                trees: 10,
                millis: 3.2
            })
        );
        assert_eq!(parse_scan_line("nothing"), None);
    }

    #[test]
    fn parses_the_masked_count() {
        assert_eq!(
            parse_masked("x\nMasked (12): read as empty, cannot be written\n"),
            Some(12)
        );
        assert_eq!(parse_masked("Masked: none"), None);
    }

    #[test]
    fn generates_the_asked_number_of_files_reproducibly() {
        let tmp = tempfile::tempdir().unwrap();
        let a = generate(&tmp.path().join("a"), 5000, SEED).unwrap();
        let b = generate(&tmp.path().join("b"), 5000, SEED).unwrap();
        assert_eq!(a.files, 5000);
        assert_eq!(a.dirs, 5000 / 35);
        assert!(a.env_files > 0 && a.hard_links > 0);
        assert_eq!(
            (a.env_files, a.hard_links, a.env_hard_links),
            (b.env_files, b.hard_links, b.env_hard_links)
        );
        let mut count = 0;
        let mut stack = vec![tmp.path().join("a")];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(dir).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    count += 1;
                }
            }
        }
        assert_eq!(count, 5000);
    }
}
