//! `cargo xtask bench-unpack`: how fast the layers of a large image become
//! a root filesystem: `agentctl image pull docker-archive:FILE` (the whole
//! import), GNU tar extracting the same layer tars in order, and
//! image-store's `Unpacker` alone over the same layer files (xtask's
//! hidden `unpack-layers` task).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::Ctx;
use crate::hyperfine::{self, Bench};
use crate::launch::{bench, quote, wrapped};
use crate::stats::Summary;

/// The image: over 100 MB of layers (made by `agentctl image build`).
pub const IMAGE: &str = "agentctl/agent-base:latest";
/// Where the layers are unpacked to: a tmpfs.
pub const SHM: &str = "/dev/shm";

/// What `unpack-layers` applied, from the line it prints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub layers: u64,
    /// Uncompressed tar bytes read.
    pub tar_bytes: u64,
    pub entries: u64,
    pub files: u64,
    pub whiteouts: u64,
    pub skipped: u64,
}

pub struct UnpackReport {
    pub runs: usize,
    pub rounds: usize,
    pub image: String,
    /// Size of the `docker save` archive.
    pub archive_bytes: u64,
    /// Sum of the layer files' sizes, and whether they are plain tar
    /// (then it equals the uncompressed bytes).
    pub layer_file_bytes: u64,
    pub applied: Applied,
    /// The file system every unpack writes to.
    pub fs_type: String,
    /// Where: a directory under [`SHM`].
    pub dest_dir: String,
    /// Whether the temporary directory is on ext4 without a journal.
    pub tmp_is_unjournaled_ext4: bool,
    pub pull: Summary,
    pub tar: Summary,
    pub apply: Summary,
    /// Each round's summaries: pull, tar, apply.
    pub per_round: Vec<[Summary; 3]>,
    pub load: (String, String),
}

impl UnpackReport {
    /// Uncompressed layer bytes per second of `s`'s median, in MB/s (10^6).
    pub fn mb_per_s(&self, s: &Summary) -> f64 {
        self.applied.tar_bytes as f64 / 1e6 / (s.median / 1000.0)
    }
}

pub fn bench_unpack(ctx: &Ctx, runs: usize, rounds: usize) -> Result<UnpackReport> {
    let tmp = tempfile::Builder::new()
        .prefix("agentctl-bench-unpack-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let base = tmp.path();
    let archive = base.join("image.tar");
    let extracted = base.join("archive");
    // The destination is on tmpfs: see DEST_ON_TMPFS in report.rs.
    let shm = tempfile::Builder::new()
        .prefix("agentctl-bench-unpack-")
        .tempdir_in(SHM)
        .with_context(|| format!("cannot create a temporary directory in {SHM}"))?;
    let fs_type = crate::machine::fs_type(shm.path());
    ensure!(
        fs_type == "tmpfs",
        "{SHM} is {fs_type}, not tmpfs; the unpack benchmark writes there"
    );
    let dest = shm.path().join("dest");

    eprintln!("xtask: docker save -o {} {IMAGE}", archive.display());
    crate::docker::docker_save(IMAGE, &archive)?;
    let archive_bytes = archive.metadata()?.len();
    std::fs::create_dir(&extracted)?;
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&extracted)
        .status()
        .context("cannot run tar")?;
    ensure!(status.success(), "tar -xf {} failed", archive.display());
    let manifest = std::fs::read_to_string(extracted.join("manifest.json"))
        .context("the docker save archive has no manifest.json")?;
    let layers: Vec<PathBuf> = layer_paths(&manifest)?
        .into_iter()
        .map(|l| extracted.join(l))
        .collect();
    let mut layer_file_bytes = 0;
    for l in &layers {
        layer_file_bytes += l
            .metadata()
            .with_context(|| format!("cannot read {}", l.display()))?
            .len();
    }

    let xtask = std::env::current_exe().context("cannot find the xtask binary")?;
    let (archive_s, dest_s) = (path_str(&archive), path_str(&dest));
    let layer_s: Vec<String> = layers.iter().map(|l| path_str(l)).collect();
    let source = format!("docker-archive:{archive_s}");
    let env = vec![("AGENTCTL_IMAGES".to_string(), dest_s.clone())];

    let mut apply_words = vec![path_str(&xtask), "unpack-layers".into(), dest_s.clone()];
    apply_words.extend(layer_s.iter().cloned());
    let apply_refs: Vec<&str> = apply_words.iter().map(String::as_str).collect();
    let agentctl = path_str(&ctx.agentctl);
    let rows: Vec<(&str, Vec<String>)> = vec![
        (
            "agentctl image pull",
            wrapped(&[&agentctl, "image", "pull", &source], ""),
        ),
        ("tar -x", tar_script(&layer_s, &dest_s)),
        ("Unpacker::apply_layer", wrapped(&apply_refs, "")),
    ];
    // Untimed before every run: an empty destination (the image cache of
    // the pull).
    let prepare_words = vec![
        "sh".to_string(),
        "-c".to_string(),
        format!("rm -rf {0} && mkdir {0}", quote(&dest_s)),
    ];
    let prepare = bench("prepare", &prepare_words).command;

    // Reading everything once warms the page cache for every row alike;
    // checking every command then reads it all again.
    eprintln!("xtask: reading the archive and the layers once (page cache)");
    for f in std::iter::once(&archive).chain(&layers) {
        let mut file = File::open(f).with_context(|| format!("cannot read {}", f.display()))?;
        std::io::copy(&mut file, &mut std::io::sink())?;
    }
    eprintln!("xtask: checking that every command exits 0");
    let mut applied = None;
    for (name, words) in &rows {
        hyperfine::verify(&prepare_words, base, false)?;
        let out = hyperfine::verify_with(words, base, false, &env)
            .with_context(|| format!("{name} does not work"))?;
        if *name == "Unpacker::apply_layer" {
            applied = Some(parse_applied(&out).context("unpack-layers printed no summary")?);
        }
    }
    let applied = applied.expect("the apply row is checked");
    hyperfine::verify(&prepare_words, base, false)?;

    let benches: Vec<Bench> = rows.iter().map(|(n, w)| bench(n, w)).collect();
    let load_before = crate::machine::loadavg();
    let t = hyperfine::run_rounds(
        &benches,
        &hyperfine::Options {
            runs,
            warmup: 0,
            cwd: base,
            json: base.join("unpack.json"),
            cgroup_v1_ns: false,
            env: &env,
            prepare: Some(&prepare),
        },
        rounds,
    )?;
    let load_after = crate::machine::loadavg();
    let per: Vec<Vec<Summary>> = (0..rows.len())
        .map(|i| t.per_round(i))
        .collect::<Result<_>>()?;
    let per_round = (0..rounds).map(|r| [0, 1, 2].map(|i| per[i][r])).collect();
    Ok(UnpackReport {
        runs,
        rounds,
        image: IMAGE.into(),
        archive_bytes,
        layer_file_bytes,
        applied,
        fs_type,
        dest_dir: SHM.into(),
        tmp_is_unjournaled_ext4: crate::machine::ext4_without_journal(base),
        pull: t.pooled(0)?,
        tar: t.pooled(1)?,
        apply: t.pooled(2)?,
        per_round,
        load: (load_before, load_after),
    })
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `sh -c 'tar -xf L1 -C DEST && … && exec tar -xf LN -C DEST'`: the
/// layers in order, the last one exec'd like every other row's command.
fn tar_script(layers: &[String], dest: &str) -> Vec<String> {
    let steps: Vec<String> = layers
        .iter()
        .map(|l| format!("tar -xf {} -C {}", quote(l), quote(dest)))
        .collect();
    let script = match steps.split_last() {
        Some((last, [])) => format!("exec {last}"),
        Some((last, rest)) => format!("{} && exec {last}", rest.join(" && ")),
        None => "true".into(),
    };
    vec!["sh".into(), "-c".into(), script]
}

/// The layer files of the one image in a `docker save` manifest.json, in
/// order, relative to the archive's root.
fn layer_paths(manifest: &str) -> Result<Vec<String>> {
    let json: serde_json::Value =
        serde_json::from_str(manifest).context("manifest.json is invalid")?;
    let images = json.as_array().context("manifest.json is not a list")?;
    ensure!(
        images.len() == 1,
        "the archive holds {} images, not one",
        images.len()
    );
    let layers = images[0]["Layers"]
        .as_array()
        .context("manifest.json lists no Layers")?;
    let paths: Vec<String> = layers
        .iter()
        .map(|l| l.as_str().map(str::to_string))
        .collect::<Option<_>>()
        .context("a layer in manifest.json is not a path")?;
    for p in &paths {
        if p.starts_with('/') || p.split('/').any(|c| c == "..") {
            bail!("manifest.json names a layer outside the archive: {p}");
        }
    }
    ensure!(!paths.is_empty(), "manifest.json lists no layers");
    Ok(paths)
}

/// `cargo xtask unpack-layers DEST LAYER…`: applies the layers in order to
/// the (existing, empty) directory DEST with image-store's `Unpacker`, as
/// a pull does after fetching, and prints what it did on one line.
pub fn unpack_layers(dest: &Path, layers: &[PathBuf]) -> Result<()> {
    let mut unpacker = image_store::Unpacker::new(dest)?;
    let mut total = Applied::default();
    for l in layers {
        let file = File::open(l).with_context(|| format!("cannot read {}", l.display()))?;
        let stats = unpacker.apply_layer(file, &l.to_string_lossy())?;
        total.layers += 1;
        total.tar_bytes += stats.tar_bytes;
        total.entries += stats.entries;
        total.files += stats.files;
        total.whiteouts += stats.whiteouts;
        total.skipped += stats.skipped.len() as u64;
    }
    unpacker.finish()?;
    println!(
        "layers={} tar_bytes={} entries={} files={} whiteouts={} skipped={}",
        total.layers, total.tar_bytes, total.entries, total.files, total.whiteouts, total.skipped
    );
    Ok(())
}

fn parse_applied(text: &str) -> Option<Applied> {
    let line = text.lines().find(|l| l.starts_with("layers="))?;
    let mut a = Applied::default();
    for word in line.split_whitespace() {
        let (k, v) = word.split_once('=')?;
        let v: u64 = v.parse().ok()?;
        match k {
            "layers" => a.layers = v,
            "tar_bytes" => a.tar_bytes = v,
            "entries" => a.entries = v,
            "files" => a.files = v,
            "whiteouts" => a.whiteouts = v,
            "skipped" => a.skipped = v,
            _ => return None,
        }
    }
    (a.layers > 0).then_some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_layers_of_a_docker_save_manifest() {
        let m = r#"[{"Config": "c.json", "RepoTags": ["a:b"],
                     "Layers": ["x/layer.tar", "y/layer.tar"]}]"#;
        assert_eq!(layer_paths(m).unwrap(), ["x/layer.tar", "y/layer.tar"]);
        assert!(layer_paths(r#"[{"Layers": ["../etc/passwd"]}]"#).is_err());
        assert!(layer_paths(r#"[{"Layers": []}]"#).is_err());
        assert!(layer_paths("[]").is_err());
    }

    #[test]
    fn the_tar_script_execs_the_last_layer() {
        let s = tar_script(&["/a/1.tar".into(), "/a/2 b.tar".into()], "/d");
        assert_eq!(
            s[2],
            "tar -xf /a/1.tar -C /d && exec tar -xf '/a/2 b.tar' -C /d"
        );
        assert_eq!(tar_script(&["/x".into()], "/d")[2], "exec tar -xf /x -C /d");
    }

    #[test]
    fn parses_the_summary_line() {
        let a = parse_applied(
            "layers=3 tar_bytes=520043520 entries=13939 files=9000 whiteouts=184 skipped=8\n",
        )
        .unwrap();
        assert_eq!((a.layers, a.tar_bytes, a.whiteouts), (3, 520_043_520, 184));
        assert_eq!(parse_applied("nothing"), None);
        assert_eq!(parse_applied("layers=x"), None);
    }

    #[test]
    fn unpacks_layers_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let mut layers = Vec::new();
        for (i, content) in ["one", "two"].iter().enumerate() {
            std::fs::write(src.join("a"), content).unwrap();
            let layer = tmp.path().join(format!("{i}.tar"));
            let tar = Command::new("tar")
                .arg("-cf")
                .arg(&layer)
                .arg("-C")
                .arg(&src)
                .arg("a")
                .status();
            match tar {
                Ok(s) => assert!(s.success()),
                Err(_) => return, // no tar on this machine
            }
            layers.push(layer);
        }
        let dest = tmp.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        unpack_layers(&dest, &layers).unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("a")).unwrap(), "two");
    }
}
