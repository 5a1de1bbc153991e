//! `agentctl image build NAME`: builds the agent images from `images/` on
//! the Docker Engine. The Dockerfiles and the catalogue (images.json) are
//! embedded, so the binary builds them without a checkout.

use std::collections::HashMap;
use std::io::Write;

use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;
use sandbox::BackendError;
use serde_json::Value;

const CATALOGUE: &str = include_str!("../../../images/images.json");
const DOCKERFILES: &[(&str, &str)] = &[
    (
        "agent-base",
        include_str!("../../../images/agent-base/Dockerfile"),
    ),
    (
        "claude-code",
        include_str!("../../../images/claude-code/Dockerfile"),
    ),
    ("codex", include_str!("../../../images/codex/Dockerfile")),
    ("aider", include_str!("../../../images/aider/Dockerfile")),
];

/// One buildable image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageDef {
    pub name: String,
    /// The tag it is built as.
    pub image: String,
    /// Its default `BASE` build argument.
    pub base: String,
    /// Another image of the catalogue it builds on.
    pub from: Option<String>,
}

pub fn catalogue() -> Vec<ImageDef> {
    let v: Value = serde_json::from_str(CATALOGUE).expect("images.json is valid");
    v["images"]
        .as_array()
        .expect("images.json lists images")
        .iter()
        .map(|i| ImageDef {
            name: i["name"].as_str().unwrap_or_default().to_string(),
            image: i["image"].as_str().unwrap_or_default().to_string(),
            base: i["base"].as_str().unwrap_or_default().to_string(),
            from: i["from"].as_str().map(str::to_string),
        })
        .collect()
}

/// The images to build for `name`, dependencies first.
pub fn build_order(name: &str) -> Result<Vec<ImageDef>, BackendError> {
    let all = catalogue();
    let mut order = Vec::new();
    let mut next = Some(name.to_string());
    while let Some(n) = next.take() {
        let def = all.iter().find(|d| d.name == n).ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|d| d.name.as_str()).collect();
            BackendError::Control {
                control: "image build",
                reason: format!("unknown image \"{n}\""),
                fix: format!("build one of: {}", names.join(", ")),
            }
        })?;
        if order.iter().any(|d: &ImageDef| d.name == def.name) {
            break;
        }
        next = def.from.clone();
        order.push(def.clone());
    }
    order.reverse();
    Ok(order)
}

fn context(name: &str) -> Result<Vec<u8>, BackendError> {
    let dockerfile = DOCKERFILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, d)| *d)
        .ok_or_else(|| BackendError::Runtime(format!("no Dockerfile for {name}")))?;
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(dockerfile.len() as u64);
    header.set_mode(0o644);
    tar.append_data(&mut header, "Dockerfile", dockerfile.as_bytes())
        .and_then(|()| tar.into_inner())
        .map_err(|e| BackendError::Runtime(format!("cannot pack the build context: {e}")))
}

/// Builds `name` (and the images it builds on, when they are missing or
/// `rebuild_deps` is set). `base` replaces the first image's `BASE`.
/// Build output goes to stderr as it comes.
pub async fn build(
    docker: &Docker,
    name: &str,
    base: Option<&str>,
    rebuild_deps: bool,
) -> Result<String, BackendError> {
    let order = build_order(name)?;
    let last = order.len() - 1;
    for (i, def) in order.iter().enumerate() {
        if i < last && !rebuild_deps && docker.inspect_image(&def.image).await.is_ok() {
            eprintln!("agentctl: using {} (already built)", def.image);
            continue;
        }
        let base = match (i, base) {
            (0, Some(b)) => b.to_string(),
            _ => def.base.clone(),
        };
        eprintln!("agentctl: building {} (BASE={base})", def.image);
        let args = HashMap::from([("BASE".to_string(), base.clone())]);
        let options = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(&def.image)
            .rm(true)
            .forcerm(true)
            .buildargs(&args)
            .build();
        let mut stream = docker.build_image(
            options,
            None,
            Some(bollard::body_full(context(&def.name)?.into())),
        );
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| BackendError::Control {
                control: "image build",
                reason: format!("building {} failed: {e}", def.image),
                fix: format!(
                    "check that the base image {base} exists (`images/make-base.sh` makes a \
                     local Debian one; then pass --base agentctl/debian:bookworm)"
                ),
            })?;
            if let Some(text) = info.stream {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(text.as_bytes());
                let _ = err.flush();
            }
            if let Some(detail) = info.error_detail {
                return Err(BackendError::Control {
                    control: "image build",
                    reason: format!(
                        "building {} failed: {}",
                        def.image,
                        detail.message.unwrap_or_default()
                    ),
                    fix: "read the build output above".into(),
                });
            }
        }
    }
    Ok(order[last].image.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogued_image_has_a_dockerfile_with_a_base_argument() {
        for def in catalogue() {
            let (_, dockerfile) = DOCKERFILES
                .iter()
                .find(|(n, _)| *n == def.name)
                .unwrap_or_else(|| panic!("{} has no embedded Dockerfile", def.name));
            assert!(
                dockerfile.contains("ARG BASE"),
                "{}: BASE must be an argument",
                def.name
            );
            assert!(dockerfile.contains("FROM ${BASE}") || dockerfile.contains("FROM $BASE"));
        }
    }

    #[test]
    fn dependencies_come_first() {
        let order: Vec<String> = build_order("claude-code")
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(order, ["agent-base", "claude-code"]);
        assert!(
            build_order("nope")
                .unwrap_err()
                .to_string()
                .contains("agent-base")
        );
    }
}
