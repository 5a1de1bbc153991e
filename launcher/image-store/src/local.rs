//! Local sources: OCI image layout directories and `docker save` archives.
//! Their blobs are copied into the store (checked against their digests on
//! the way), so the store never depends on the source staying around.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::digest::Digest;
use crate::error::{ImageError, io_err};
use crate::manifest::{
    self, CONTAINERD_NAME, Descriptor, Index, MAX_CONFIG, MAX_MANIFEST, OCI_INDEX, Parsed, REF_NAME,
};
use crate::reference::Reference;
use crate::store::{ImageCache, Resolved};
use crate::{Phase, Progress};

/// Most symlink hops followed inside a docker archive.
const MAX_HOPS: usize = 32;

// ----- OCI image layout -----

struct Layout<'a> {
    path: &'a Path,
}

impl Layout<'_> {
    fn what(&self) -> String {
        format!("OCI layout {}", self.path.display())
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.path.join("blobs/sha256").join(d.hex())
    }

    /// A small blob of the layout, checked against its digest.
    fn read_blob(&self, d: &Digest, limit: u64) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(d);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
            .map_err(io_err("read", &path))?;
        if bytes.len() as u64 > limit {
            return Err(ImageError::invalid(
                self.what(),
                format!("{d} is larger than {limit} bytes"),
            ));
        }
        let actual = Digest::of(&bytes);
        if actual != *d {
            return Err(ImageError::DigestMismatch {
                what: format!("blob of {}", self.what()),
                expected: d.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// Copies a blob into the store unless it is there.
    fn copy(
        &self,
        store: &ImageCache,
        desc: &Descriptor,
        progress: Option<&dyn Progress>,
    ) -> Result<Digest, ImageError> {
        let d = desc.digest()?;
        if store.has_blob(&d) {
            return Ok(d);
        }
        let path = self.blob_path(&d);
        let mut file = File::open(&path).map_err(io_err("read", &path))?;
        let size = (desc.size > 0).then_some(desc.size);
        if let Some(p) = progress {
            p.layer_started(d.as_str(), size);
        }
        let on_error = |e| ImageError::io("read", path.clone(), e);
        store.ingest(
            Some(&d),
            size,
            &mut file,
            progress.map(|p| (p, d.as_str())),
            &on_error,
        )?;
        if let Some(p) = progress {
            p.layer_done(d.as_str());
        }
        Ok(d)
    }
}

/// Names the image of an OCI layout: a full reference from the tag or the
/// annotations, else `<directory name>:<tag>`.
/// The prefix of every name an imported image (an OCI layout, a `docker
/// save` archive) gets in the cache. An archive tagged `ubuntu:latest` is
/// stored as `local:docker.io/library/ubuntu:latest`, so that a later
/// `--image ubuntu` still means the registry's image, not one someone
/// dropped in a file; the imported one is run by its `local:` name (or its
/// source, or its digest). No registry reference can start with it.
pub const IMPORTED_PREFIX: &str = "local:";

fn imported_name(name: String) -> String {
    if name.starts_with("sha256:") {
        name
    } else {
        format!("{IMPORTED_PREFIX}{name}")
    }
}

fn layout_name(path: &Path, tag: Option<&str>, desc: &Descriptor) -> Result<String, ImageError> {
    let full = |t: &str| t.contains('/') || t.contains(':') || t.contains('@');
    if let Some(t) = tag.filter(|t| full(t)) {
        return Ok(Reference::parse(t)?.to_string());
    }
    if let Some(name) = desc.annotations.get(CONTAINERD_NAME)
        && let Ok(r) = Reference::parse(name)
    {
        return Ok(r.to_string());
    }
    let ref_name = desc.annotations.get(REF_NAME).map(String::as_str);
    if let Some(t) = ref_name.filter(|t| full(t))
        && let Ok(r) = Reference::parse(t)
    {
        return Ok(r.to_string());
    }
    let tag = tag.or(ref_name).unwrap_or("latest");
    Ok(Reference::parse(&format!("{}:{tag}", repo_name_from_path(path)))?.to_string())
}

/// A valid repository name made from a directory or file name.
fn repo_name_from_path(path: &Path) -> String {
    let base = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut out = String::new();
    for c in stem.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-');
    if out.is_empty() {
        "image".to_owned()
    } else {
        out.to_owned()
    }
}

fn names_in(index: &Index) -> String {
    let names: Vec<&str> = index
        .manifests
        .iter()
        .filter_map(|d| {
            d.annotations
                .get(REF_NAME)
                .or(d.annotations.get(CONTAINERD_NAME))
        })
        .map(String::as_str)
        .collect();
    if names.is_empty() {
        "no named images".into()
    } else {
        names.join(", ")
    }
}

pub(crate) fn import_oci_layout(
    store: &ImageCache,
    path: &Path,
    tag: Option<&str>,
    progress: &dyn Progress,
) -> Result<Resolved, ImageError> {
    let layout = Layout { path };
    let marker = path.join("oci-layout");
    let marker_bytes = match fs::read(&marker) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound && path.is_dir() => {
            return Err(ImageError::invalid(
                layout.what(),
                "it has no oci-layout file, so it is not an OCI image layout",
            ));
        }
        Err(e) => return Err(ImageError::io("read", marker, e)),
    };
    #[derive(Deserialize)]
    struct Marker {
        #[serde(rename = "imageLayoutVersion")]
        version: String,
    }
    let m: Marker = serde_json::from_slice(&marker_bytes)
        .map_err(|e| ImageError::invalid(layout.what(), format!("oci-layout: {e}")))?;
    if !m.version.starts_with("1.") {
        return Err(ImageError::Unsupported {
            what: "OCI layout version".into(),
            detail: format!("{} (this store reads 1.x)", m.version),
        });
    }
    let index_path = path.join("index.json");
    let index_bytes = fs::read(&index_path).map_err(io_err("read", &index_path))?;
    let index = match manifest::parse(&index_bytes, Some(OCI_INDEX), "index.json")? {
        Parsed::Index(i) => i,
        Parsed::Manifest(_) => unreachable!("parsed as an index"),
    };
    let host = manifest::host_platform();
    let shown = format!("{}", path.display());

    // The top descriptor: by tag, or the only one, or by platform.
    let top: Descriptor = match tag {
        Some(t) => {
            let wanted = Reference::parse(t).ok().map(|r| r.to_string());
            let matches: Vec<Descriptor> = index
                .manifests
                .iter()
                .filter(|d| {
                    d.annotations.get(REF_NAME).map(String::as_str) == Some(t)
                        || d.annotations.get(CONTAINERD_NAME).is_some_and(|n| {
                            n == t || Reference::parse(n).ok().map(|r| r.to_string()) == wanted
                        })
                })
                .cloned()
                .collect();
            match matches.len() {
                0 => {
                    return Err(ImageError::NotFound {
                        reference: t.to_owned(),
                        location: format!("{} (it has: {})", layout.what(), names_in(&index)),
                    });
                }
                1 => matches.into_iter().next().expect("one"),
                _ => manifest::select_platform(&Index { manifests: matches }, &host, t)?.clone(),
            }
        }
        None if index.manifests.len() == 1 => index.manifests[0].clone(),
        None if index.manifests.iter().all(|d| d.platform.is_some())
            && !index.manifests.is_empty() =>
        {
            manifest::select_platform(&index, &host, &shown)?.clone()
        }
        None => {
            return Err(ImageError::InvalidSource {
                text: format!("oci:{shown}"),
                reason: format!(
                    "the layout holds {} images; name one with oci:PATH:TAG (it has: {})",
                    index.manifests.len(),
                    names_in(&index)
                ),
            });
        }
    };
    let name = layout_name(path, tag, &top)?;

    let top_digest = top.digest()?;
    let bytes = layout.read_blob(&top_digest, MAX_MANIFEST)?;
    let media = (!top.media_type.is_empty()).then_some(top.media_type.as_str());
    let (index_digest, manifest_digest, manifest) =
        match manifest::parse(&bytes, media, "manifest")? {
            Parsed::Manifest(m) => {
                store.put_blob(&top_digest, &bytes)?;
                (None, top_digest, m)
            }
            Parsed::Index(inner) => {
                let desc = manifest::select_platform(&inner, &host, &name)?;
                let d = desc.digest()?;
                let mbytes = layout.read_blob(&d, MAX_MANIFEST)?;
                let media = (!desc.media_type.is_empty()).then_some(desc.media_type.as_str());
                let m = match manifest::parse(&mbytes, media, "manifest")? {
                    Parsed::Manifest(m) => m,
                    Parsed::Index(_) => {
                        return Err(ImageError::invalid(
                            layout.what(),
                            "an index points to another index",
                        ));
                    }
                };
                store.put_blob(&top_digest, &bytes)?;
                store.put_blob(&d, &mbytes)?;
                (Some(top_digest), d, m)
            }
        };
    manifest::check_config(&manifest.config)?;
    for l in &manifest.layers {
        manifest::check_layer(l)?;
    }
    let config = layout.copy(store, &manifest.config, None)?;
    let missing = manifest
        .layers
        .iter()
        .any(|l| l.digest().is_ok_and(|d| !store.has_blob(&d)));
    if missing {
        progress.phase(Phase::Fetching);
    }
    let mut layers = Vec::new();
    for l in &manifest.layers {
        layers.push(layout.copy(store, l, Some(progress))?);
    }
    Ok(Resolved {
        name: imported_name(name),
        index: index_digest,
        manifest: Some(manifest_digest),
        config,
        layers,
        source: format!("oci:{shown}"),
    })
}

// ----- docker save archives -----

#[derive(Deserialize)]
struct ArchiveImage {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

enum ArchiveEntry {
    File(u64),
    /// A symbolic or hard link, to this archive path.
    Link(String),
}

/// A path inside the archive, without `./` and leading or doubled slashes,
/// with `..` resolved (and refused above the top).
fn archive_path(p: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// Opens the archive, undoing a gzip compression (`docker save | gzip`).
fn open_archive(path: &Path) -> Result<tar::Archive<Box<dyn Read>>, ImageError> {
    let file = File::open(path).map_err(io_err("read", path))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let head = reader.fill_buf().map_err(io_err("read", path))?;
    let inner: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    Ok(tar::Archive::new(inner))
}

pub(crate) fn import_docker_archive(
    store: &ImageCache,
    path: &Path,
    tag: Option<&str>,
    progress: &dyn Progress,
) -> Result<Resolved, ImageError> {
    let what = format!("docker archive {}", path.display());
    let invalid = |reason: String| ImageError::invalid(what.clone(), reason);
    let tar_error = |e: io::Error| invalid(format!("it is not a readable tar archive: {e}"));

    // Pass 1: the table of contents and manifest.json.
    let mut toc: HashMap<String, ArchiveEntry> = HashMap::new();
    let mut manifest_json = None;
    let mut archive = open_archive(path)?;
    for entry in archive.entries().map_err(tar_error)? {
        let mut entry = entry.map_err(tar_error)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(name) = archive_path(&raw) else {
            continue;
        };
        let kind = entry.header().entry_type();
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if name == "manifest.json" {
                    let mut bytes = Vec::new();
                    (&mut entry)
                        .take(MAX_MANIFEST + 1)
                        .read_to_end(&mut bytes)
                        .map_err(tar_error)?;
                    manifest_json = Some(bytes);
                }
                toc.insert(name, ArchiveEntry::File(entry.size()));
            }
            tar::EntryType::Symlink => {
                let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                if let Some(target) = link.and_then(|l| archive_path(&format!("{dir}/{l}"))) {
                    toc.insert(name, ArchiveEntry::Link(target));
                }
            }
            tar::EntryType::Link => {
                if let Some(target) = link.and_then(|l| archive_path(&l)) {
                    toc.insert(name, ArchiveEntry::Link(target));
                }
            }
            _ => {}
        }
    }
    let manifest_json = manifest_json
        .ok_or_else(|| invalid("it has no manifest.json (was it made by `docker save`?)".into()))?;
    let images: Vec<ArchiveImage> = serde_json::from_slice(&manifest_json)
        .map_err(|e| invalid(format!("manifest.json: {e}")))?;
    let all_tags = || {
        let tags: Vec<&str> = images
            .iter()
            .flat_map(|i| i.repo_tags.iter().flatten())
            .map(String::as_str)
            .collect();
        if tags.is_empty() {
            "no tags".to_owned()
        } else {
            tags.join(", ")
        }
    };
    let image = match tag {
        Some(t) => {
            let wanted = Reference::parse(t).ok().map(|r| r.to_string());
            images
                .iter()
                .find(|i| {
                    i.repo_tags.iter().flatten().any(|rt| {
                        rt == t
                            || (wanted.is_some()
                                && Reference::parse(rt).ok().map(|r| r.to_string()) == wanted)
                    })
                })
                .ok_or_else(|| ImageError::NotFound {
                    reference: t.to_owned(),
                    location: format!("{what} (it has: {})", all_tags()),
                })?
        }
        None if images.len() == 1 => &images[0],
        None => {
            return Err(ImageError::InvalidSource {
                text: format!("docker-archive:{}", path.display()),
                reason: format!(
                    "the archive holds {} images; name one with docker-archive:PATH:TAG (it has: {})",
                    images.len(),
                    all_tags()
                ),
            });
        }
    };

    // Follow links to the files that hold the config and the layers.
    let resolve = |p: &str| -> Result<(String, u64), ImageError> {
        let mut cur =
            archive_path(p).ok_or_else(|| invalid(format!("'{p}' leaves the archive")))?;
        for _ in 0..MAX_HOPS {
            match toc.get(&cur) {
                Some(ArchiveEntry::File(size)) => return Ok((cur, *size)),
                Some(ArchiveEntry::Link(t)) => cur = t.clone(),
                None => {
                    return Err(invalid(format!(
                        "manifest.json names '{p}', which is not in the archive"
                    )));
                }
            }
        }
        Err(invalid(format!("'{p}' is a loop of links")))
    };
    let (config_path, config_size) = resolve(&image.config)?;
    if config_size > MAX_CONFIG {
        return Err(invalid(format!(
            "its config is larger than {MAX_CONFIG} bytes"
        )));
    }
    let mut layer_paths = Vec::new();
    for l in &image.layers {
        layer_paths.push(resolve(l)?);
    }

    // The digest a file name promises: blobs/sha256/<hex> or <hex>.json.
    let promised = |p: &str| -> Option<Digest> {
        let hex = p
            .strip_prefix("blobs/sha256/")
            .or_else(|| p.strip_suffix(".json"))?;
        Digest::parse(&format!("sha256:{hex}")).ok()
    };

    // Pass 2: copy the wanted files into the store.
    let mut wanted: BTreeMap<String, Option<Digest>> = BTreeMap::new();
    wanted.insert(config_path.clone(), None);
    for (p, _) in &layer_paths {
        wanted.insert(p.clone(), None);
    }
    let mut announced = false;
    let mut archive = open_archive(path)?;
    for entry in archive.entries().map_err(tar_error)? {
        let mut entry = entry.map_err(tar_error)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(name) = archive_path(&raw) else {
            continue;
        };
        let Some(slot) = wanted.get_mut(&name) else {
            continue;
        };
        if slot.is_some() || !matches!(toc.get(&name), Some(ArchiveEntry::File(_))) {
            continue;
        }
        let expected = promised(&name);
        if let Some(d) = expected.as_ref().filter(|d| store.has_blob(d)) {
            *slot = Some(d.clone());
            continue;
        }
        let is_layer = name != config_path;
        let label = expected.as_ref().map_or(name.clone(), |d| d.to_string());
        let size = entry.size();
        if is_layer {
            if !announced {
                progress.phase(Phase::Fetching);
                announced = true;
            }
            progress.layer_started(&label, Some(size));
        }
        let reporter = is_layer.then_some((progress, label.as_str()));
        let digest = store.ingest(
            expected.as_ref(),
            Some(size),
            &mut entry,
            reporter,
            &tar_error,
        )?;
        if is_layer {
            progress.layer_done(&label);
        }
        *slot = Some(digest);
    }
    let digest_of = |p: &str| -> Result<Digest, ImageError> {
        wanted
            .get(p)
            .cloned()
            .flatten()
            .ok_or_else(|| invalid(format!("'{p}' could not be read from the archive")))
    };
    let config = digest_of(&config_path)?;
    let layers = layer_paths
        .iter()
        .map(|(p, _)| digest_of(p))
        .collect::<Result<Vec<_>, _>>()?;
    let name = match tag {
        Some(t) => Reference::parse(t)?.to_string(),
        None => match image
            .repo_tags
            .iter()
            .flatten()
            .find_map(|t| Reference::parse(t).ok())
        {
            Some(r) => r.to_string(),
            None => config.to_string(),
        },
    };
    Ok(Resolved {
        name: imported_name(name),
        index: None,
        manifest: None,
        config,
        layers,
        source: format!("docker-archive:{}", path.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths() {
        assert_eq!(archive_path("./a/b.tar").as_deref(), Some("a/b.tar"));
        assert_eq!(
            archive_path("a/../b/layer.tar").as_deref(),
            Some("b/layer.tar")
        );
        assert_eq!(archive_path("x/../../etc"), None);
    }

    #[test]
    fn names_from_paths() {
        assert_eq!(
            repo_name_from_path(Path::new("/nonexistent/My Layout_v2")),
            "my-layout-v2"
        );
        assert_eq!(
            repo_name_from_path(Path::new("/nonexistent/agent-base.tar")),
            "agent-base"
        );
        assert_eq!(repo_name_from_path(Path::new("/nonexistent/___")), "image");
    }
}
