//! The JSON documents of an image: indexes (OCI index, Docker manifest
//! list), manifests (OCI, Docker schema 2) and the image config, plus the
//! choice of one manifest from an index for this machine.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::ImageError;

pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The `Accept` header for manifest requests.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub(crate) const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Largest manifest or index accepted (registries cap them at 4 MiB).
pub(crate) const MAX_MANIFEST: u64 = 4 << 20;
/// Largest image config accepted.
pub(crate) const MAX_CONFIG: u64 = 64 << 20;

#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

impl Descriptor {
    pub(crate) fn digest(&self) -> Result<Digest, ImageError> {
        Digest::parse(&self.digest).map_err(|r| ImageError::invalid("descriptor", r))
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub(crate) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Index {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Manifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

pub(crate) enum Parsed {
    Index(Index),
    Manifest(Manifest),
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    layers: Option<serde_json::Value>,
}

/// Parses a manifest or an index. `content_type` is the registry's
/// Content-Type if any; the document's own `mediaType` and shape decide
/// otherwise.
pub(crate) fn parse(
    bytes: &[u8],
    content_type: Option<&str>,
    what: &str,
) -> Result<Parsed, ImageError> {
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| ImageError::invalid(what, e.to_string()))?;
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim().to_owned())
        .filter(|c| is_manifest_type(c));
    let media_type = header.or(probe.media_type.clone()).unwrap_or_else(|| {
        if probe.manifests.is_some() {
            OCI_INDEX.to_owned()
        } else if probe.layers.is_some() {
            OCI_MANIFEST.to_owned()
        } else {
            String::new()
        }
    });
    if probe.schema_version == Some(1)
        || media_type == DOCKER_SCHEMA1
        || media_type == DOCKER_SCHEMA1_SIGNED
    {
        return Err(ImageError::Unsupported {
            what: "manifest".into(),
            detail: "docker schema 1 manifests are obsolete; push the image again with a current \
                     docker or buildah"
                .into(),
        });
    }
    let json = |e: serde_json::Error| ImageError::invalid(what, e.to_string());
    match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => Ok(Parsed::Index(serde_json::from_slice(bytes).map_err(json)?)),
        OCI_MANIFEST | DOCKER_MANIFEST => Ok(Parsed::Manifest(
            serde_json::from_slice(bytes).map_err(json)?,
        )),
        "" => Err(ImageError::invalid(
            what,
            "it is neither an image index nor an image manifest",
        )),
        other => Err(ImageError::Unsupported {
            what: "manifest media type".into(),
            detail: format!(
                "'{other}' (supported: OCI index and manifest, Docker manifest list and schema 2)"
            ),
        }),
    }
}

fn is_manifest_type(t: &str) -> bool {
    [
        OCI_INDEX,
        OCI_MANIFEST,
        DOCKER_LIST,
        DOCKER_MANIFEST,
        DOCKER_SCHEMA1,
        DOCKER_SCHEMA1_SIGNED,
    ]
    .contains(&t)
}

/// Refuses layers this store cannot unpack (it detects tar, gzip and zstd
/// by their first bytes, so the media type only has to be a tar layer).
pub(crate) fn check_layer(desc: &Descriptor) -> Result<(), ImageError> {
    let t = desc.media_type.as_str();
    let foreign = t.contains("foreign") || t.contains("nondistributable");
    if foreign {
        return Err(ImageError::Unsupported {
            what: "layer".into(),
            detail: format!(
                "{} is a non-distributable layer ({t}), which is only used by Windows images",
                desc.digest
            ),
        });
    }
    let known = t.is_empty()
        || t.starts_with("application/vnd.oci.image.layer.v1.tar")
        || t.starts_with("application/vnd.docker.image.rootfs.diff.tar")
        || t == "application/x-tar";
    if !known {
        return Err(ImageError::Unsupported {
            what: "layer".into(),
            detail: format!(
                "{} has media type '{t}', which is not a file-system layer (is this an artifact, \
                 not an image?)",
                desc.digest
            ),
        });
    }
    if t.ends_with("+encrypted") {
        return Err(ImageError::Unsupported {
            what: "layer".into(),
            detail: format!("{} is encrypted", desc.digest),
        });
    }
    Ok(())
}

/// Refuses a config descriptor that is not an image config (artifacts such
/// as signatures or Helm charts use their own config types).
pub(crate) fn check_config(desc: &Descriptor) -> Result<(), ImageError> {
    let t = desc.media_type.as_str();
    if t.is_empty()
        || t == "application/vnd.oci.image.config.v1+json"
        || t == "application/vnd.docker.container.image.v1+json"
    {
        Ok(())
    } else {
        Err(ImageError::Unsupported {
            what: "config".into(),
            detail: format!(
                "media type '{t}' is not an image config (this is an artifact, not an image)"
            ),
        })
    }
}

/// The image config document (the parts the store uses).
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<RunConfig>,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct RunConfig {
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl ConfigFile {
    pub(crate) fn parse(bytes: &[u8]) -> Result<ConfigFile, ImageError> {
        serde_json::from_slice(bytes).map_err(|e| ImageError::invalid("config", e.to_string()))
    }

    pub(crate) fn diff_ids(&self) -> &[String] {
        self.rootfs.as_ref().map_or(&[], |r| &r.diff_ids)
    }
}

/// The platform images are chosen for: linux and this machine's
/// architecture, in the names Go (and so every registry) uses.
pub(crate) fn host_platform() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
        "loongarch64" => ("loong64", None),
        other => (other, None),
    };
    Platform {
        architecture: architecture.to_owned(),
        os: "linux".to_owned(),
        variant: variant.map(str::to_owned),
    }
}

/// Picks the manifest for `want` from an index: same os and architecture,
/// preferring the same variant (a missing variant matches too).
pub(crate) fn select_platform<'a>(
    index: &'a Index,
    want: &Platform,
    reference: &str,
) -> Result<&'a Descriptor, ImageError> {
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| d.media_type != OCI_INDEX && d.media_type != DOCKER_LIST)
        .collect();
    // An index whose entries carry no platform at all (a plain OCI layout
    // with one image) has nothing to choose from.
    if candidates.len() == 1 && candidates[0].platform.is_none() {
        return Ok(candidates[0]);
    }
    let matching = |d: &&Descriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == want.os && p.architecture == want.architecture)
    };
    let mut best: Option<&Descriptor> = None;
    for d in candidates.iter().copied().filter(matching) {
        let variant = d.platform.as_ref().and_then(|p| p.variant.as_deref());
        if variant == want.variant.as_deref() {
            return Ok(d);
        }
        if best.is_none() && variant.is_none() {
            best = Some(d);
        }
    }
    if let Some(d) = best {
        return Ok(d);
    }
    let available: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(|p| p.to_string())
        .collect();
    Err(ImageError::NoMatchingPlatform {
        reference: reference.to_owned(),
        wanted: want.to_string(),
        available: if available.is_empty() {
            "nothing".into()
        } else {
            available.join(", ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(arch: &str, variant: Option<&str>, n: u8) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: format!("sha256:{}", format!("{n:02x}").repeat(32)),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: if arch == "unknown" {
                    "unknown"
                } else {
                    "linux"
                }
                .into(),
                variant: variant.map(Into::into),
            }),
            annotations: BTreeMap::new(),
            urls: vec![],
        }
    }

    #[test]
    fn picks_host_platform() {
        let index = Index {
            manifests: vec![
                desc("unknown", None, 0),
                desc("arm", Some("v6"), 1),
                desc("arm64", None, 2),
                desc("arm64", Some("v8"), 3),
                desc("amd64", None, 4),
            ],
        };
        let want = |a: &str, v: Option<&str>| Platform {
            architecture: a.into(),
            os: "linux".into(),
            variant: v.map(Into::into),
        };
        let pick = |p: Platform| select_platform(&index, &p, "x").map(|d| d.digest.clone());
        assert_eq!(
            pick(want("amd64", None)).unwrap(),
            index.manifests[4].digest
        );
        assert_eq!(
            pick(want("arm64", Some("v8"))).unwrap(),
            index.manifests[3].digest
        );
        let err = pick(want("s390x", None)).unwrap_err().to_string();
        assert!(err.contains("linux/s390x"), "{err}");
        assert!(err.contains("linux/arm/v6, linux/arm64"), "{err}");
        assert!(!err.contains("unknown"), "{err}");
        assert!(pick(host_platform()).is_ok() || std::env::consts::ARCH != "x86_64");
    }

    #[test]
    fn parses_by_header_field_or_shape() {
        let m = br#"{"schemaVersion":2,"config":{"digest":"sha256:00","size":1},"layers":[]}"#;
        assert!(matches!(parse(m, None, "m").unwrap(), Parsed::Manifest(_)));
        assert!(matches!(
            parse(
                m,
                Some("application/vnd.docker.distribution.manifest.v2+json"),
                "m"
            )
            .unwrap(),
            Parsed::Manifest(_)
        ));
        let i = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
        assert!(matches!(
            parse(i, Some("application/json"), "i").unwrap(),
            Parsed::Index(_)
        ));
        let v1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        assert!(matches!(
            parse(v1, None, "m"),
            Err(ImageError::Unsupported { .. })
        ));
        let art =
            br#"{"schemaVersion":2,"mediaType":"application/vnd.cncf.helm.chart","layers":[]}"#;
        assert!(matches!(
            parse(art, None, "m"),
            Err(ImageError::Unsupported { .. })
        ));
        assert!(parse(b"not json", None, "m").is_err());
    }

    #[test]
    fn layer_types() {
        let mut d = desc("amd64", None, 1);
        for ok in [
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ] {
            d.media_type = ok.into();
            assert!(check_layer(&d).is_ok(), "{ok}");
        }
        for bad in [
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
        ] {
            d.media_type = bad.into();
            assert!(check_layer(&d).is_err(), "{bad}");
        }
    }
}
