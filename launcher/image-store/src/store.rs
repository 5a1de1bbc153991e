//! The store on disk: blobs, rootfs directories, the tag index and the
//! locks that let several processes use one store.
//!
//! Locking: a pull holds `locks/gc.lock` shared for its whole run and
//! `prune` holds it exclusively, so prune never deletes what a pull is
//! about to tag. A blob download holds `locks/blob-<hex>.lock` and an
//! unpack `locks/rootfs-<hex>.lock`, so two processes pulling the same image
//! do the work once; both write to unique names (blobs under `tmp/`, a
//! rootfs under `rootfs/.<hex>-…`) and rename into place, so a crash leaves
//! no half-written blob or rootfs under its final name. Index updates hold `locks/index.lock` and replace
//! `index.json` by rename. Readers (`get`, `list`) take no lock.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, HashingReader, is_lower_hex};
use crate::error::{ImageError, io_err};
use crate::fsutil::{self, Lock};
use crate::manifest::{ConfigFile, MAX_CONFIG};
use crate::reference::{ImageSource, Reference};
use crate::unpack::Unpacker;
use crate::{Phase, Progress};

const INDEX_VERSION: u32 = 1;

/// A content-addressed image store rooted at one directory.
#[derive(Clone, Debug)]
pub struct ImageCache {
    root: PathBuf,
}

/// An image in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// What it is called in the store: a normalised reference
    /// (`docker.io/library/debian:bookworm`), or the config digest for an
    /// untagged image from an archive.
    pub reference: String,
    /// `sha256:…` of the config: the image id.
    pub config_digest: String,
    /// The manifest's digest, for images that have one (registry, layout).
    pub manifest_digest: Option<String>,
    /// The (compressed) layer digests, bottom first.
    pub layers: Vec<String>,
    /// The unpacked, flattened rootfs. Shared by every tag of the image:
    /// treat it as read-only (mount it read-only, or under an overlay).
    pub rootfs: PathBuf,
    pub config: ImageConfig,
    /// Bytes on disk of the rootfs.
    pub size: u64,
    /// The config's `created` time (RFC 3339), if any.
    pub created: Option<String>,
}

/// How the image says to run it (the `config` object of the image config).
/// Empty vectors mean "not set".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `linux`.
    pub os: String,
}

/// What [`ImageCache::prune`] deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub blobs_removed: usize,
    pub rootfs_removed: usize,
    /// Bytes on disk freed (blobs, rootfs directories, leftovers in tmp/).
    pub bytes_freed: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    images: BTreeMap<String, TagEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TagEntry {
    config: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    index: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    manifest: Option<String>,
    layers: Vec<String>,
    size: u64,
    source: String,
    pulled: u64,
}

impl TagEntry {
    fn blobs(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.config.as_str())
            .chain(self.index.as_deref())
            .chain(self.manifest.as_deref())
            .chain(self.layers.iter().map(String::as_str))
    }
}

/// What a source resolved to, with every blob already in the store.
pub(crate) struct Resolved {
    pub name: String,
    pub index: Option<Digest>,
    pub manifest: Option<Digest>,
    pub config: Digest,
    pub layers: Vec<Digest>,
    pub source: String,
}

/// Reports every read to a [`Progress`] as `advanced`.
struct Counting<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
    label: &'a str,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.progress.advanced(self.label, n as u64);
        }
        Ok(n)
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn short(d: &str) -> &str {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    &hex[..hex.len().min(12)]
}

impl ImageCache {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<ImageCache, ImageError> {
        let root = root.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(io_err("create the image store", &root))?;
        let store = ImageCache { root };
        for dir in ["blobs/sha256", "rootfs", "tmp", "locks"] {
            let p = store.root.join(dir);
            fs::create_dir_all(&p).map_err(io_err("create", p))?;
        }
        Ok(store)
    }

    /// `/var/lib/agentctl/images` for root, `$XDG_DATA_HOME/agentctl/images`
    /// (`~/.local/share/agentctl/images`) for other users.
    pub fn default_root() -> PathBuf {
        let uid = rustix::process::geteuid();
        if uid.is_root() {
            return PathBuf::from("/var/lib/agentctl/images");
        }
        let env_dir = |name: &str| {
            std::env::var_os(name)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        if let Some(data) = env_dir("XDG_DATA_HOME") {
            return data.join("agentctl/images");
        }
        if let Some(home) = env_dir("HOME") {
            return home.join(".local/share/agentctl/images");
        }
        PathBuf::from(format!("/tmp/agentctl-{}/images", uid.as_raw()))
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Fetches what is missing and unpacks the image if its rootfs is not
    /// there yet; tags it in the store and returns it. A registry tag is
    /// always resolved against the registry (to see whether it moved); a
    /// reference pinned by digest whose blobs are all present needs no
    /// network.
    pub fn pull(&self, source: &ImageSource, progress: &dyn Progress) -> Result<Image, ImageError> {
        let _gc = self.lock("gc", false, progress)?;
        let resolved = match source {
            ImageSource::Registry { reference } => {
                let reference =
                    Reference::parse(reference.strip_prefix("docker://").unwrap_or(reference))?;
                crate::registry::pull(self, &reference, progress)?
            }
            ImageSource::OciLayout { path, tag } => {
                crate::local::import_oci_layout(self, path, tag.as_deref(), progress)?
            }
            ImageSource::DockerArchive { path, tag } => {
                crate::local::import_docker_archive(self, path, tag.as_deref(), progress)?
            }
        };
        let config_bytes = self.read_blob(&resolved.config, MAX_CONFIG, "image config")?;
        let config = ConfigFile::parse(&config_bytes)?;
        if config.diff_ids().len() != resolved.layers.len() {
            return Err(ImageError::invalid(
                "config",
                format!(
                    "it lists {} layers (rootfs.diff_ids) but the manifest has {}",
                    config.diff_ids().len(),
                    resolved.layers.len()
                ),
            ));
        }
        let size = self.ensure_rootfs(&resolved, &config, progress)?;
        let entry = TagEntry {
            config: resolved.config.to_string(),
            index: resolved.index.as_ref().map(Digest::to_string),
            manifest: resolved.manifest.as_ref().map(Digest::to_string),
            layers: resolved.layers.iter().map(Digest::to_string).collect(),
            size,
            source: resolved.source.clone(),
            pulled: now(),
        };
        self.update_index(|index| {
            index.images.insert(resolved.name.clone(), entry.clone());
            Ok(())
        })?;
        tracing::info!(
            reference = %resolved.name,
            id = %resolved.config,
            size,
            "image ready"
        );
        Ok(self.image(&resolved.name, &entry, &config))
    }

    /// An image in the store, by the reference it was pulled as (normalised
    /// or not: `debian` finds `docker.io/library/debian:latest`), or by
    /// config digest (`sha256:…`, or a unique prefix of its hex digits).
    pub fn get(&self, reference: &str) -> Result<Option<Image>, ImageError> {
        let index = self.read_index()?;
        let Some(name) = lookup(&index, reference)?.into_iter().next() else {
            return Ok(None);
        };
        let entry = &index.images[&name];
        self.load(&name, entry).map(Some)
    }

    /// Every tag in the store, sorted by reference. Tags whose blobs or
    /// rootfs went missing are left out (and logged).
    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        let index = self.read_index()?;
        let mut images = Vec::new();
        for (name, entry) in &index.images {
            match self.load(name, entry) {
                Ok(image) => images.push(image),
                Err(e) => tracing::warn!(reference = %name, "leaving out of the list: {e}"),
            }
        }
        Ok(images)
    }

    /// Removes a tag (by reference), or every tag of an image (by config
    /// digest or unique prefix). Blobs and the rootfs stay until
    /// [`ImageCache::prune`].
    pub fn remove(&self, reference: &str) -> Result<(), ImageError> {
        self.update_index(|index| {
            let names = lookup(index, reference)?;
            if names.is_empty() {
                return Err(ImageError::NotInStore {
                    reference: reference.to_owned(),
                });
            }
            for name in names {
                index.images.remove(&name);
                tracing::info!(reference = %name, "removed tag");
            }
            Ok(())
        })
    }

    /// Deletes the blobs and rootfs directories that no tag references, and
    /// what crashed pulls left behind. Waits for pulls in progress.
    pub fn prune(&self) -> Result<PruneReport, ImageError> {
        let _gc = self.lock("gc", true, &crate::NoProgress)?;
        let index = self.read_index()?;
        let mut keep_blobs = BTreeSet::new();
        let mut keep_rootfs = BTreeSet::new();
        for entry in index.images.values() {
            keep_blobs.extend(entry.blobs().map(|d| short_hex(d).to_owned()));
            keep_rootfs.insert(short_hex(&entry.config).to_owned());
        }
        let mut report = PruneReport::default();
        let blobs = self.root.join("blobs/sha256");
        for name in read_names(&blobs)? {
            if keep_blobs.contains(&name) {
                continue;
            }
            let path = blobs.join(&name);
            report.bytes_freed += fsutil::disk_usage(&path);
            fsutil::remove_all(&path).map_err(io_err("remove", &path))?;
            report.blobs_removed += 1;
        }
        let rootfs = self.root.join("rootfs");
        for name in read_names(&rootfs)? {
            if keep_rootfs.contains(&name) {
                continue;
            }
            let path = rootfs.join(&name);
            report.bytes_freed += fsutil::disk_usage(&path);
            fsutil::remove_all(&path).map_err(io_err("remove", &path))?;
            // ".<hex>-…" is an unpack a crash left behind, not an image.
            if !name.starts_with('.') {
                report.rootfs_removed += 1;
            }
        }
        // No pull runs (we hold gc exclusively): everything in tmp/ is
        // left over, and no one holds or waits for the per-object locks.
        let tmp = self.root.join("tmp");
        for name in read_names(&tmp)? {
            let path = tmp.join(&name);
            report.bytes_freed += fsutil::disk_usage(&path);
            fsutil::remove_all(&path).map_err(io_err("remove", &path))?;
        }
        let locks = self.root.join("locks");
        for name in read_names(&locks)? {
            if name.starts_with("blob-") || name.starts_with("rootfs-") {
                let path = locks.join(&name);
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
        }
        tracing::info!(
            blobs = report.blobs_removed,
            rootfs = report.rootfs_removed,
            bytes = report.bytes_freed,
            "pruned"
        );
        Ok(report)
    }

    // ----- blobs -----

    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub(crate) fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub(crate) fn tmp_path(&self, prefix: &str) -> PathBuf {
        self.root.join("tmp").join(fsutil::unique_name(prefix))
    }

    /// Copies `reader` into the store, hashing it. With `expected`, content
    /// that hashes to anything else is refused (and not kept); without, the
    /// blob is named by its hash. `read_error` turns a failing read into
    /// the right error (a lost connection, a truncated archive). Reports
    /// bytes to `progress` under `label` if given.
    pub(crate) fn ingest(
        &self,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
        reader: &mut dyn Read,
        progress: Option<(&dyn Progress, &str)>,
        read_error: &dyn Fn(io::Error) -> ImageError,
    ) -> Result<Digest, ImageError> {
        let tmp = self.tmp_path("blob");
        let result = (|| {
            let mut file = File::create_new(&tmp).map_err(io_err("create", &tmp))?;
            let mut hashing = HashingReader::new(reader);
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                let n = hashing.read(&mut buf).map_err(read_error)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                if let Some(size) = expected_size
                    && total > size
                {
                    return Err(ImageError::invalid(
                        "blob",
                        format!(
                            "{} is larger than the {size} bytes its descriptor says",
                            expected.map_or("(unnamed)", Digest::as_str)
                        ),
                    ));
                }
                file.write_all(&buf[..n]).map_err(io_err("write", &tmp))?;
                if let Some((p, label)) = progress {
                    p.advanced(label, n as u64);
                }
            }
            let (digest, _) = hashing.finish().map_err(read_error)?;
            if let Some(expected) = expected
                && *expected != digest
            {
                return Err(ImageError::DigestMismatch {
                    what: "blob".into(),
                    expected: expected.to_string(),
                    actual: digest.to_string(),
                });
            }
            if let Some(size) = expected_size
                && total != size
            {
                return Err(ImageError::invalid(
                    "blob",
                    format!("{digest} has {total} bytes, not the {size} its descriptor says"),
                ));
            }
            let dest = self.blob_path(&digest);
            fs::rename(&tmp, &dest).map_err(io_err("store the blob at", &dest))?;
            Ok(digest)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Stores bytes already in memory under their digest.
    pub(crate) fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), ImageError> {
        if self.has_blob(digest) {
            return Ok(());
        }
        self.ingest(
            Some(digest),
            Some(bytes.len() as u64),
            &mut &bytes[..],
            None,
            &|e| ImageError::io("read", "memory", e),
        )?;
        Ok(())
    }

    /// Reads a (small) blob, checking its digest; a corrupted blob is
    /// deleted so that the next pull fetches it again.
    pub(crate) fn read_blob(
        &self,
        digest: &Digest,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest);
        let file = File::open(&path).map_err(io_err("read", &path))?;
        let mut bytes = Vec::new();
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err("read", &path))?;
        if bytes.len() as u64 > limit {
            return Err(ImageError::invalid(
                what,
                format!("it is larger than {limit} bytes"),
            ));
        }
        let actual = Digest::of(&bytes);
        if actual != *digest {
            let _ = fs::remove_file(&path);
            return Err(ImageError::DigestMismatch {
                what: format!("stored {what}"),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    pub(crate) fn lock(
        &self,
        name: &str,
        exclusive: bool,
        progress: &dyn Progress,
    ) -> Result<Lock, ImageError> {
        let path = self.root.join("locks").join(format!("{name}.lock"));
        fsutil::lock(&path, exclusive, || {
            tracing::info!(
                lock = name,
                "waiting for another process using the image store"
            );
            progress.message("waiting for another process using the image store");
        })
        .map_err(io_err("lock", &path))
    }

    // ----- rootfs -----

    fn rootfs_path(&self, config: &str) -> PathBuf {
        self.root.join("rootfs").join(short_hex(config))
    }

    /// Makes sure `rootfs/<config-hex>` exists, unpacking the layers into a
    /// temporary directory and renaming it if not. Returns its size.
    fn ensure_rootfs(
        &self,
        resolved: &Resolved,
        config: &ConfigFile,
        progress: &dyn Progress,
    ) -> Result<u64, ImageError> {
        let dir = self.rootfs_path(resolved.config.as_str());
        if dir.is_dir() {
            progress.message(&format!(
                "{}: rootfs already unpacked",
                short(resolved.config.as_str())
            ));
            return Ok(self.known_size(&resolved.config, &dir));
        }
        let _lock = self.lock(&format!("rootfs-{}", resolved.config.hex()), true, progress)?;
        if dir.is_dir() {
            return Ok(self.known_size(&resolved.config, &dir));
        }
        progress.phase(Phase::Unpacking);
        // Unpacked next to its final name: renaming a directory into another
        // parent needs write permission on it, which an image may withhold
        // (a read-only "./"). prune removes leftovers (names starting with ".").
        let tmp = self
            .root
            .join("rootfs")
            .join(format!(".{}", fsutil::unique_name(resolved.config.hex())));
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&tmp)
            .map_err(io_err("create", &tmp))?;
        let result = self.unpack_all(&tmp, resolved, config, progress);
        let size = match result {
            Ok(size) => size,
            Err(e) => {
                if let Err(rm) = fsutil::remove_all(&tmp) {
                    tracing::warn!(path = %tmp.display(), "cannot clean up: {rm}");
                }
                return Err(e);
            }
        };
        fs::rename(&tmp, &dir).map_err(io_err("move the unpacked rootfs to", &dir))?;
        Ok(size)
    }

    fn unpack_all(
        &self,
        tmp: &Path,
        resolved: &Resolved,
        config: &ConfigFile,
        progress: &dyn Progress,
    ) -> Result<u64, ImageError> {
        let mut unpacker = Unpacker::new(tmp)?;
        for (layer, diff_id) in resolved.layers.iter().zip(config.diff_ids()) {
            let label = layer.as_str();
            let path = self.blob_path(layer);
            let file = File::open(&path).map_err(io_err("read", &path))?;
            let size = file.metadata().ok().map(|m| m.len());
            progress.layer_started(label, size);
            let mut hashing = HashingReader::new(Counting {
                inner: file,
                progress,
                label,
            });
            let stats = unpacker.apply_layer(&mut hashing, label);
            let (actual, _) = hashing.finish().map_err(io_err("read", &path))?;
            if actual != *layer {
                // Checked before the layer's own errors: a corrupted blob
                // explains a broken tar stream.
                let _ = fs::remove_file(&path);
                return Err(ImageError::DigestMismatch {
                    what: "stored layer".into(),
                    expected: layer.to_string(),
                    actual: actual.to_string(),
                });
            }
            let stats = stats?;
            if stats.diff_id != *diff_id {
                return Err(ImageError::DigestMismatch {
                    what: format!("uncompressed content of layer {layer}, listed in the config as"),
                    expected: diff_id.clone(),
                    actual: stats.diff_id,
                });
            }
            for skipped in &stats.skipped {
                progress.message(&format!(
                    "{}: skipped {}: it {}",
                    short(label),
                    skipped.path,
                    skipped.reason
                ));
            }
            progress.layer_done(label);
        }
        let size = fsutil::disk_usage(tmp);
        unpacker.finish()?;
        Ok(size)
    }

    fn known_size(&self, config: &Digest, dir: &Path) -> u64 {
        if let Ok(index) = self.read_index()
            && let Some(e) = index.images.values().find(|e| e.config == config.as_str())
        {
            return e.size;
        }
        fsutil::disk_usage(dir)
    }

    // ----- index -----

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn read_index(&self) -> Result<IndexFile, ImageError> {
        let path = self.index_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(IndexFile {
                    version: INDEX_VERSION,
                    images: BTreeMap::new(),
                });
            }
            Err(e) => return Err(ImageError::io("read", path, e)),
        };
        let corrupt = |reason: String| ImageError::CorruptIndex {
            path: path.clone(),
            reason,
        };
        let index: IndexFile =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if index.version != INDEX_VERSION {
            return Err(corrupt(format!(
                "it has version {}, this program knows {INDEX_VERSION}",
                index.version
            )));
        }
        // Digests become file names: check them all.
        for (name, entry) in &index.images {
            for d in entry.blobs() {
                Digest::parse(d).map_err(|r| corrupt(format!("entry '{name}': {r}")))?;
            }
        }
        Ok(index)
    }

    fn update_index(
        &self,
        change: impl FnOnce(&mut IndexFile) -> Result<(), ImageError>,
    ) -> Result<(), ImageError> {
        let _lock = self.lock("index", true, &crate::NoProgress)?;
        let mut index = self.read_index()?;
        change(&mut index)?;
        let bytes = serde_json::to_vec_pretty(&index).expect("the index serialises");
        let path = self.index_path();
        fsutil::write_atomic(&path, &bytes).map_err(io_err("write", &path))
    }

    /// Builds the [`Image`] of a tag, checking that its config and rootfs
    /// are there.
    fn load(&self, name: &str, entry: &TagEntry) -> Result<Image, ImageError> {
        let incomplete = |detail: String| ImageError::Incomplete {
            reference: name.to_owned(),
            detail,
        };
        let digest = Digest::parse(&entry.config).map_err(&incomplete)?;
        if !self.has_blob(&digest) {
            return Err(incomplete(format!(
                "its config {} is missing",
                entry.config
            )));
        }
        let bytes = self.read_blob(&digest, MAX_CONFIG, "image config")?;
        let config = ConfigFile::parse(&bytes)?;
        let image = self.image(name, entry, &config);
        if !image.rootfs.is_dir() {
            return Err(incomplete(format!("{} is missing", image.rootfs.display())));
        }
        Ok(image)
    }

    fn image(&self, name: &str, entry: &TagEntry, config: &ConfigFile) -> Image {
        let run = config.config.clone().unwrap_or_default();
        Image {
            reference: name.to_owned(),
            config_digest: entry.config.clone(),
            manifest_digest: entry.manifest.clone(),
            layers: entry.layers.clone(),
            rootfs: self.rootfs_path(&entry.config),
            config: ImageConfig {
                env: run.env.unwrap_or_default(),
                entrypoint: run.entrypoint.unwrap_or_default(),
                cmd: run.cmd.unwrap_or_default(),
                working_dir: run.working_dir.filter(|s| !s.is_empty()),
                user: run.user.filter(|s| !s.is_empty()),
                labels: run.labels.unwrap_or_default(),
                architecture: config.architecture.clone(),
                os: config.os.clone(),
            },
            size: entry.size,
            created: config.created.clone(),
        }
    }
}

fn short_hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn read_names(dir: &Path) -> Result<Vec<String>, ImageError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// The tags `reference` names: itself, its normalised form, or every tag of
/// the one image whose config digest it is (or uniquely prefixes).
fn lookup(index: &IndexFile, reference: &str) -> Result<Vec<String>, ImageError> {
    if index.images.contains_key(reference) {
        return Ok(vec![reference.to_owned()]);
    }
    // An imported image by its short name: `local:ubuntu` is
    // `local:docker.io/library/ubuntu:latest`.
    if let Some(rest) = reference.strip_prefix(crate::local::IMPORTED_PREFIX)
        && let Ok(r) = Reference::parse(rest)
    {
        let full = format!("{}{r}", crate::local::IMPORTED_PREFIX);
        return Ok(if index.images.contains_key(&full) {
            vec![full]
        } else {
            Vec::new()
        });
    }
    if let Ok(r) = Reference::parse(reference.strip_prefix("docker://").unwrap_or(reference)) {
        let full = r.to_string();
        if index.images.contains_key(&full) {
            return Ok(vec![full]);
        }
    }
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    if hex.is_empty() || hex.len() > 64 || !is_lower_hex(hex) {
        return Ok(Vec::new());
    }
    let ids: BTreeSet<&str> = index
        .images
        .values()
        .map(|e| e.config.as_str())
        .filter(|c| short_hex(c).starts_with(hex))
        .collect();
    match ids.len() {
        0 => Ok(Vec::new()),
        1 => {
            let id = ids.into_iter().next().expect("one id");
            Ok(index
                .images
                .iter()
                .filter(|(_, e)| e.config == id)
                .map(|(n, _)| n.clone())
                .collect())
        }
        _ => Err(ImageError::Ambiguous {
            prefix: reference.to_owned(),
            matches: ids
                .into_iter()
                .map(|c| short(c).to_owned())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}
