//! `cargo xtask bench-docker`: time-to-exit of a `true` in a container made
//! from one image, with agentctl's Docker backend, with the docker CLI, and
//! with agentctl's native backend from its own image cache (the same image,
//! imported from a `docker save` archive).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::Ctx;
use crate::hyperfine::{self, Bench};
use crate::launch::{agentctl_cmd, bench, wrapped};
use crate::stats::Summary;

pub const WARMUP: usize = 3;
/// The image every row runs (made by images/make-base.sh).
pub const IMAGE: &str = "agentctl/debian:bookworm";
/// The label agentctl's Docker backend puts on its containers.
const MANAGED: &str = "label=io.agentctl.managed=true";

pub struct DockerReport {
    pub runs: usize,
    pub rounds: usize,
    pub warmup: usize,
    pub image: String,
    /// The reference `agentctl image ls` shows for the imported image.
    pub native_ref: String,
    /// `sh -c true`: what the wrapper shell costs every other row.
    pub baseline: Summary,
    pub agentctl_docker: Summary,
    pub docker_cli: Summary,
    /// The docker CLI with the network mode agentctl's default profile asks
    /// for (none): what the CLI's default bridge network costs.
    pub docker_cli_no_net: Summary,
    pub native: Summary,
    /// Each round's summaries, in the order of the fields above.
    pub per_round: Vec<[Summary; 5]>,
    /// One more hyperfine run: the native backend given the cache's
    /// reference, and given the `docker-archive:` source itself.
    pub by_reference: Summary,
    pub by_archive: Summary,
    /// Containers labelled io.agentctl.managed=true that mount this
    /// benchmark's directory, still there at the end.
    pub leftovers: Vec<String>,
    /// Labelled containers of other users of the daemon seen at the end.
    pub others: usize,
    pub load: (String, String),
}

pub fn bench_docker(ctx: &Ctx, runs: usize, rounds: usize) -> Result<DockerReport> {
    let tmp = tempfile::Builder::new()
        .prefix("agentctl-bench-docker-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let base = tmp.path();
    let ws = base.join("workspace");
    std::fs::create_dir(&ws)?;
    let images = base.join("images");
    let archive = base.join("image.tar");
    let agentctl = ctx.agentctl.to_string_lossy().into_owned();

    eprintln!("xtask: docker save -o {} {IMAGE}", archive.display());
    docker_save(IMAGE, &archive)?;
    let source = format!("docker-archive:{}", archive.display());
    let env = vec![(
        "AGENTCTL_IMAGES".to_string(),
        images.to_string_lossy().into_owned(),
    )];
    eprintln!("xtask: agentctl image pull {source}");
    let out = agentctl_cmd(ctx, &ws)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["image", "pull", &source])
        .output()
        .context("cannot run agentctl image pull")?;
    ensure!(
        out.status.success(),
        "agentctl image pull {source} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = agentctl_cmd(ctx, &ws)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["image", "ls", "--json"])
        .output()
        .context("cannot run agentctl image ls")?;
    ensure!(out.status.success(), "agentctl image ls failed");
    let native_ref = only_reference(&String::from_utf8_lossy(&out.stdout))?;

    let rows: Vec<(&str, Vec<String>)> = vec![
        ("sh -c true", vec!["sh".into(), "-c".into(), "true".into()]),
        (
            "agentctl run --backend docker",
            wrapped(
                &[
                    &agentctl,
                    "run",
                    "-q",
                    "--backend",
                    "docker",
                    "--image",
                    IMAGE,
                    "--",
                    "true",
                ],
                "",
            ),
        ),
        (
            "docker run --rm",
            wrapped(&["docker", "run", "--rm", IMAGE, "true"], ""),
        ),
        (
            "docker run --rm --network none",
            wrapped(
                &["docker", "run", "--rm", "--network", "none", IMAGE, "true"],
                "",
            ),
        ),
        (
            "agentctl run (native, cached reference)",
            native_run(&agentctl, &native_ref),
        ),
    ];
    let by_archive_row = (
        "agentctl run (native, docker-archive source)",
        native_run(&agentctl, &source),
    );

    eprintln!("xtask: checking that every command exits 0");
    for (name, words) in rows.iter().chain([&by_archive_row]) {
        hyperfine::verify_with(words, &ws, false, &env)
            .with_context(|| format!("{name} does not work"))?;
    }

    let opts = |json: &str| hyperfine::Options {
        runs,
        warmup: WARMUP,
        cwd: &ws,
        json: base.join(json),
        cgroup_v1_ns: false,
        env: &env,
        prepare: None,
    };
    let benches: Vec<Bench> = rows.iter().map(|(n, w)| bench(n, w)).collect();
    let load_before = crate::machine::loadavg();
    let t = hyperfine::run_rounds(&benches, &opts("docker.json"), rounds)?;
    eprintln!("xtask: the native backend by the cache's reference and by the archive source");
    let check = [&rows[4], &by_archive_row].map(|(n, w)| bench(n, w));
    let refs = hyperfine::run(&check, &opts("reference.json"))?;
    let load_after = crate::machine::loadavg();

    let mut leftovers = Vec::new();
    let mut others = 0;
    for id in managed_containers()? {
        if mounts_under(&id, base) {
            leftovers.push(id);
        } else {
            others += 1;
        }
    }
    if !leftovers.is_empty() {
        eprintln!(
            "xtask: {} containers of this benchmark were left: {}",
            leftovers.len(),
            leftovers.join(" ")
        );
    }

    let per: Vec<Vec<Summary>> = (0..rows.len())
        .map(|i| t.per_round(i))
        .collect::<Result<_>>()?;
    let per_round = (0..rounds)
        .map(|r| [0, 1, 2, 3, 4].map(|i| per[i][r]))
        .collect();
    Ok(DockerReport {
        runs,
        rounds,
        warmup: WARMUP,
        image: IMAGE.into(),
        native_ref,
        baseline: t.pooled(0)?,
        agentctl_docker: t.pooled(1)?,
        docker_cli: t.pooled(2)?,
        docker_cli_no_net: t.pooled(3)?,
        native: t.pooled(4)?,
        per_round,
        by_reference: Summary::from_millis(&refs[0])?,
        by_archive: Summary::from_millis(&refs[1])?,
        leftovers,
        others,
        load: (load_before, load_after),
    })
}

fn native_run(agentctl: &str, image: &str) -> Vec<String> {
    wrapped(&[agentctl, "run", "-q", "--image", image, "--", "true"], "")
}

/// `docker save -o FILE IMAGE`, with a hint when the image is missing.
pub fn docker_save(image: &str, file: &Path) -> Result<()> {
    let out = Command::new("docker")
        .args(["save", "-o"])
        .arg(file)
        .arg(image)
        .output()
        .context("cannot run docker")?;
    if !out.status.success() {
        bail!(
            "docker save {image} failed (make the images with images/make-base.sh and \
             `agentctl image build`): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The one reference in `agentctl image ls --json`.
fn only_reference(json: &str) -> Result<String> {
    let list: serde_json::Value =
        serde_json::from_str(json).context("agentctl image ls --json printed invalid JSON")?;
    let images = list
        .as_array()
        .context("agentctl image ls --json printed no list")?;
    ensure!(
        images.len() == 1,
        "the fresh image cache holds {} images, not one",
        images.len()
    );
    images[0]["reference"]
        .as_str()
        .map(str::to_string)
        .context("agentctl image ls --json printed no reference")
}

/// The ids of all containers agentctl's Docker backend labelled.
fn managed_containers() -> Result<Vec<String>> {
    let out = Command::new("docker")
        .args(["ps", "-a", "-q", "--no-trunc", "--filter", MANAGED])
        .output()
        .context("cannot run docker ps")?;
    ensure!(
        out.status.success(),
        "docker ps failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

/// Whether container `id` mounts something under `dir` (this benchmark's
/// workspace). Others using the same daemon (tests, agents) have their own.
fn mounts_under(id: &str, dir: &Path) -> bool {
    let out = Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{range .Mounts}}{{.Source}}{{\"\\n\"}}{{end}}",
            id,
        ])
        .output();
    let Ok(out) = out else { return false };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| Path::new(l.trim()).starts_with(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_only_reference() {
        let json = r#"[{"reference": "docker.io/agentctl/debian:bookworm", "id": "sha256:ab"}]"#;
        assert_eq!(
            only_reference(json).unwrap(),
            "docker.io/agentctl/debian:bookworm"
        );
        assert!(only_reference("[]").is_err());
        assert!(only_reference(r#"[{"reference": "a"}, {"reference": "b"}]"#).is_err());
    }
}
