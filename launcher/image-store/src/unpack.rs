//! Applying layers (tar, tar+gzip, tar+zstd) to a rootfs directory, safely.
//!
//! Every path in a layer is resolved one component at a time from a file
//! descriptor of the rootfs, with `O_NOFOLLOW`: a layer can never make the
//! unpacker follow a symbolic link, whether an earlier layer or an earlier
//! entry of the same layer created it. An entry whose path goes through a
//! link (or contains `..`) refuses the whole layer, so nothing is written
//! outside the rootfs and a malicious image is not half-applied silently.
//! Files are created with `O_EXCL` after removing what was there, so a
//! link in the final component is replaced, never written through. Hard
//! links are resolved the same way, so they can only point into the rootfs.
//!
//! OCI whiteouts are applied (`.wh.NAME` deletes NAME of lower layers,
//! `.wh..wh..opq` empties a directory of its lower-layer content); device
//! nodes are skipped and reported; setuid and setgid bits are cleared.
//! Modes and modification times are kept; ownership is kept only when the
//! process is root (otherwise everything belongs to the caller, whom the
//! sandbox maps to uid 0). Directory modes and times are applied by
//! [`Unpacker::finish`], deepest first, so read-only directories do not stop
//! later layers and adding entries does not change recorded times.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};
use tar::EntryType;

use crate::digest::HashingReader;
use crate::error::ImageError;
use crate::fsutil::{dir_names, remove_all_at};

/// Deeper entry paths are refused (keeps removal recursion bounded).
const MAX_DEPTH: usize = 512;

/// How much one layer may unpack to. An image is untrusted input: a small
/// compressed layer can decompress to fill the disk, or hold millions of
/// empty files that exhaust its inodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of uncompressed tar (AGENTCTL_IMAGE_MAX_LAYER_BYTES).
    pub layer_bytes: u64,
    /// Tar entries (AGENTCTL_IMAGE_MAX_LAYER_ENTRIES).
    pub layer_entries: u64,
}

impl Default for Limits {
    /// 16 GiB and 1,000,000 entries per layer (the largest public images'
    /// layers stay well below both), or what the environment sets.
    fn default() -> Limits {
        let env = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Limits {
            layer_bytes: env("AGENTCTL_IMAGE_MAX_LAYER_BYTES", 16 << 30),
            layer_entries: env("AGENTCTL_IMAGE_MAX_LAYER_ENTRIES", 1_000_000),
        }
    }
}

/// A reader that fails once more than `cap` bytes have come through, and
/// says so in `over`.
struct Capped<R> {
    inner: R,
    left: u64,
    over: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            self.over.set(true);
            return Err(io::Error::other("the layer decompresses past its cap"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// What applying one layer did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// `sha256:` of the uncompressed tar (the layer's diff id).
    pub diff_id: String,
    /// Bytes of uncompressed tar read.
    pub tar_bytes: u64,
    /// Tar entries seen.
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Bytes of file content written.
    pub file_bytes: u64,
    /// Whiteouts applied.
    pub whiteouts: u64,
    /// Entries that were not applied, with why (device nodes, …).
    pub skipped: Vec<SkippedEntry>,
}

/// An entry that was left out on purpose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedEntry {
    pub path: String,
    pub reason: String,
}

#[derive(Clone, Copy, Debug)]
struct DirMeta {
    mode: u32,
    mtime: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

/// Applies layers in order to one rootfs directory.
pub struct Unpacker {
    root: OwnedFd,
    chown: bool,
    /// Directory metadata applied by `finish`, keyed by path in the rootfs.
    dirs: HashMap<PathBuf, DirMeta>,
    /// The directory of the previous entry (tar entries come grouped).
    cache: Option<(PathBuf, OwnedFd)>,
    buf: Vec<u8>,
    limits: Limits,
}

/// Applies one layer to `dest` (an existing directory) and finishes.
/// Compression (none, gzip, zstd) is detected from the first bytes.
pub fn unpack_layer<R: Read>(layer: R, dest: &Path) -> Result<LayerStats, ImageError> {
    let mut u = Unpacker::new(dest)?;
    let stats = u.apply_layer(layer, "layer")?;
    u.finish()?;
    Ok(stats)
}

enum WalkError {
    /// Component `.0` is a symbolic link.
    Link(usize),
    /// Component `.0` is neither a directory nor a link.
    NotDir(usize),
    Io(io::Error),
}

struct Ctx<'a> {
    layer: &'a str,
    entry: &'a str,
}

impl Ctx<'_> {
    fn io(&self, e: impl Into<io::Error>) -> ImageError {
        ImageError::Unpack {
            layer: self.layer.to_owned(),
            entry: self.entry.to_owned(),
            source: e.into(),
        }
    }

    fn refuse(&self, reason: impl Into<String>) -> ImageError {
        ImageError::UnsafeLayerEntry {
            layer: self.layer.to_owned(),
            entry: self.entry.to_owned(),
            reason: reason.into(),
        }
    }

    fn walk(&self, comps: &[&OsStr], e: WalkError, what: &str) -> ImageError {
        let prefix = |i: usize| join(&comps[..=i]).display().to_string();
        match e {
            WalkError::Link(i) => self.refuse(format!(
                "{what} the symbolic link '{}'; layers may not write through links",
                prefix(i)
            )),
            WalkError::NotDir(i) => {
                self.refuse(format!("{what} '{}', which is not a directory", prefix(i)))
            }
            WalkError::Io(e) => self.io(e),
        }
    }
}

fn join(comps: &[&OsStr]) -> PathBuf {
    comps.iter().collect()
}

/// Splits a tar path into components: `/`, `.` and empty ones dropped, `..`
/// refused.
fn split_path(raw: &[u8]) -> Result<Vec<&OsStr>, String> {
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(
                    "contains '..', which could leave the image's root directory".to_owned(),
                );
            }
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    if out.len() > MAX_DEPTH {
        return Err(format!("is nested deeper than {MAX_DEPTH} directories"));
    }
    Ok(out)
}

const PATH_FLAGS: OFlags = OFlags::PATH
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens the directory `comps` below `start` one component at a time,
/// never following a link. Missing directories are created (mode 0755,
/// their indexes pushed to `created`) when `create`, else `Ok(None)`.
fn walk(
    start: BorrowedFd<'_>,
    comps: &[&OsStr],
    create: bool,
    created: &mut Vec<usize>,
) -> Result<Option<OwnedFd>, WalkError> {
    let mut cur =
        rfs::openat(start, ".", PATH_FLAGS, Mode::empty()).map_err(|e| WalkError::Io(e.into()))?;
    for (i, c) in comps.iter().enumerate() {
        let next = match rfs::openat(&cur, *c, PATH_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if create => {
                match rfs::mkdirat(&cur, *c, Mode::from_raw_mode(0o755)) {
                    Ok(()) => created.push(i),
                    Err(Errno::EXIST) => {}
                    Err(e) => return Err(WalkError::Io(e.into())),
                }
                rfs::openat(&cur, *c, PATH_FLAGS, Mode::empty())
                    .map_err(|e| classify(&cur, c, i, e))?
            }
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(classify(&cur, c, i, e)),
        };
        cur = next;
    }
    Ok(Some(cur))
}

fn classify(dir: &OwnedFd, name: &OsStr, i: usize, e: Errno) -> WalkError {
    if e == Errno::NOTDIR || e == Errno::LOOP {
        match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                WalkError::Link(i)
            }
            Ok(_) => WalkError::NotDir(i),
            Err(e) => WalkError::Io(e.into()),
        }
    } else {
        WalkError::Io(e.into())
    }
}

/// What was at an entry's path before it was applied.
#[derive(PartialEq, Eq)]
enum Existing {
    Nothing,
    /// A directory, kept because the entry is a directory too.
    KeptDir,
    /// Something that was removed (`true` if it was a directory).
    Removed(bool),
}

/// Makes room for a new entry `name` in `dir`: removes what is there unless
/// both are directories. Never follows a link.
fn make_room(dir: BorrowedFd<'_>, name: &OsStr, want_dir: bool) -> io::Result<Existing> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(Existing::Nothing),
        Err(e) => Err(e.into()),
        Ok(st) => {
            let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
            if is_dir && want_dir {
                return Ok(Existing::KeptDir);
            }
            if is_dir {
                remove_all_at(dir, name)?;
            } else {
                rfs::unlinkat(dir, name, AtFlags::empty())?;
            }
            Ok(Existing::Removed(is_dir))
        }
    }
}

/// Permission bits with setuid and setgid cleared.
fn safe_mode(mode: u32) -> Mode {
    Mode::from_raw_mode(mode & 0o1777)
}

fn timestamps(mtime: u64) -> Timestamps {
    let t = Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

enum Compression {
    None,
    Gzip,
    Zstd,
}

fn detect(head: &[u8]) -> Result<Compression, String> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Compression::Zstd)
    } else if head.starts_with(b"BZh") {
        Err("bzip2-compressed layers are not supported".to_owned())
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Err("xz-compressed layers are not supported".to_owned())
    } else {
        Ok(Compression::None)
    }
}

/// The per-layer state: paths this layer created (whiteouts apply to lower
/// layers only) and the statistics.
struct LayerState {
    created: HashSet<PathBuf>,
    stats: LayerStats,
}

impl LayerState {
    fn mark(&mut self, path: &Path) {
        let mut p = Some(path);
        while let Some(q) = p {
            if q.as_os_str().is_empty() || !self.created.insert(q.to_owned()) {
                break;
            }
            p = q.parent();
        }
    }
}

impl Unpacker {
    /// Prepares to unpack into `dest`, which must be an existing directory.
    /// Ownership from the layers is applied only when running as root.
    pub fn new(dest: &Path) -> Result<Unpacker, ImageError> {
        let root = rfs::open(
            dest,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ImageError::io("open the rootfs directory", dest, e.into()))?;
        Ok(Unpacker {
            root,
            chown: rustix::process::geteuid().is_root(),
            dirs: HashMap::new(),
            cache: None,
            buf: vec![0; 256 * 1024],
            limits: Limits::default(),
        })
    }

    /// Caps on what one layer may unpack to.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Whether to apply the layers' uid and gid (default: only as root).
    pub fn set_chown(&mut self, chown: bool) {
        self.chown = chown;
    }

    /// Applies one layer on top of what is there. `name` (usually the
    /// layer's digest) is used in messages.
    pub fn apply_layer<R: Read>(&mut self, layer: R, name: &str) -> Result<LayerStats, ImageError> {
        let invalid = |reason: String| ImageError::invalid(format!("layer {name}"), reason);
        let mut input = BufReader::with_capacity(128 * 1024, layer);
        let head = input
            .fill_buf()
            .map_err(|e| invalid(format!("cannot read it: {e}")))?;
        let decoded: Box<dyn Read + '_> = match detect(head).map_err(&invalid)? {
            Compression::None => Box::new(input),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(input)
                    .map_err(|e| invalid(format!("cannot start zstd: {e}")))?,
            ),
        };
        let over = std::rc::Rc::new(std::cell::Cell::new(false));
        let limits = self.limits;
        let capped = Capped {
            inner: decoded,
            left: limits.layer_bytes,
            over: over.clone(),
        };
        let too_big = || ImageError::TooLarge {
            layer: name.to_string(),
            reason: format!(
                "it decompresses to more than {} bytes; if the image is trusted, raise AGENTCTL_IMAGE_MAX_LAYER_BYTES",
                limits.layer_bytes
            ),
        };
        let mut tar_stream = HashingReader::new(capped);
        let mut state = LayerState {
            created: HashSet::new(),
            stats: LayerStats::default(),
        };
        {
            let mut archive = tar::Archive::new(&mut tar_stream);
            let entries = archive.entries().map_err(|e| {
                if over.get() {
                    too_big()
                } else {
                    invalid(format!("it is not a tar archive: {e}"))
                }
            })?;
            for (seen, entry) in entries.enumerate() {
                if seen as u64 >= limits.layer_entries {
                    return Err(ImageError::TooLarge {
                        layer: name.to_string(),
                        reason: format!(
                            "it holds more than {} entries; if the image is trusted, raise AGENTCTL_IMAGE_MAX_LAYER_ENTRIES",
                            limits.layer_entries
                        ),
                    });
                }
                let mut entry = entry.map_err(|e| {
                    if over.get() {
                        too_big()
                    } else {
                        invalid(format!("it is not a valid tar archive: {e}"))
                    }
                })?;
                let applied = self.apply_entry(&mut entry, name, &mut state);
                if over.get() {
                    return Err(too_big());
                }
                applied?;
            }
        }
        let (diff_id, tar_bytes) = tar_stream.finish().map_err(|e| {
            if over.get() {
                too_big()
            } else {
                invalid(format!("cannot read its end: {e}"))
            }
        })?;
        state.stats.diff_id = diff_id.to_string();
        state.stats.tar_bytes = tar_bytes;
        tracing::debug!(
            layer = name,
            entries = state.stats.entries,
            files = state.stats.files,
            whiteouts = state.stats.whiteouts,
            skipped = state.stats.skipped.len(),
            "applied layer"
        );
        Ok(state.stats)
    }

    /// Takes the directory `comps` (created if missing) out of the cache or
    /// walks to it from the nearest cached ancestor or the root.
    fn take_dir(
        &mut self,
        comps: &[&OsStr],
        create: bool,
    ) -> Result<Option<(PathBuf, OwnedFd)>, WalkError> {
        let key = join(comps);
        if let Some((k, fd)) = self.cache.take() {
            if k == key {
                return Ok(Some((k, fd)));
            }
            if key.starts_with(&k) {
                let skip = k.components().count();
                let mut created = Vec::new();
                let found = walk(fd.as_fd(), &comps[skip..], create, &mut created).map_err(
                    |e| match e {
                        // Indexes count from the cached directory.
                        WalkError::Link(i) => WalkError::Link(skip + i),
                        WalkError::NotDir(i) => WalkError::NotDir(skip + i),
                        e => e,
                    },
                )?;
                self.note_created(comps, &created, skip);
                return Ok(found.map(|fd| (key, fd)));
            }
        }
        let mut created = Vec::new();
        let found = walk(self.root.as_fd(), comps, create, &mut created)?;
        self.note_created(comps, &created, 0);
        Ok(found.map(|fd| (key, fd)))
    }

    fn note_created(&mut self, comps: &[&OsStr], created: &[usize], offset: usize) {
        for &i in created {
            self.dirs
                .entry(join(&comps[..=offset + i]))
                .or_insert(DirMeta {
                    mode: 0o755,
                    mtime: None,
                });
        }
    }

    /// Forgets the cached directory if `removed` was it or an ancestor.
    fn invalidate(&mut self, removed: &Path) {
        if self
            .cache
            .as_ref()
            .is_some_and(|(k, _)| k.starts_with(removed))
        {
            self.cache = None;
        }
    }

    fn owner(
        &mut self,
        ctx: &Ctx<'_>,
        meta: &Meta,
        apply: impl FnOnce(Uid, Gid) -> Result<(), Errno>,
    ) -> Result<(), ImageError> {
        if !self.chown {
            return Ok(());
        }
        let (Ok(uid), Ok(gid)) = (u32::try_from(meta.uid), u32::try_from(meta.gid)) else {
            return Ok(());
        };
        if uid == u32::MAX || gid == u32::MAX {
            return Ok(());
        }
        match apply(Uid::from_raw(uid), Gid::from_raw(gid)) {
            Ok(()) => Ok(()),
            Err(e @ (Errno::INVAL | Errno::PERM)) => {
                // Root in a user namespace without those ids mapped.
                tracing::warn!(
                    layer = ctx.layer,
                    entry = ctx.entry,
                    "cannot change ownership ({e}); keeping files owned by the current user"
                );
                self.chown = false;
                Ok(())
            }
            Err(e) => Err(ctx.io(e)),
        }
    }

    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        layer: &str,
        state: &mut LayerState,
    ) -> Result<(), ImageError> {
        state.stats.entries += 1;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let ctx = Ctx {
            layer,
            entry: &shown,
        };
        let header = entry.header();
        let kind = header.entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let mut meta = Meta {
            mode: header.mode().map_err(|e| ctx.io(e))?,
            uid: header.uid().unwrap_or(0),
            gid: header.gid().unwrap_or(0),
            mtime: header.mtime().unwrap_or(0),
        };
        // PAX records override the header's (large ids, exact times).
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                let value = || ext.value().ok().map(str::trim);
                match ext.key() {
                    Ok("uid") => {
                        meta.uid = value().and_then(|v| v.parse().ok()).unwrap_or(meta.uid)
                    }
                    Ok("gid") => {
                        meta.gid = value().and_then(|v| v.parse().ok()).unwrap_or(meta.gid)
                    }
                    Ok("mtime") => {
                        let secs = value().map(|v| v.split('.').next().unwrap_or(v));
                        meta.mtime = secs.and_then(|v| v.parse().ok()).unwrap_or(meta.mtime);
                    }
                    _ => {}
                }
            }
        }
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let comps = split_path(&raw).map_err(|r| ctx.refuse(r))?;
        let path = join(&comps);

        let Some((&name, parent)) = comps.split_last() else {
            // The root directory itself ("./").
            if kind == EntryType::Directory {
                self.dirs.insert(
                    PathBuf::new(),
                    DirMeta {
                        mode: meta.mode,
                        mtime: Some(meta.mtime),
                    },
                );
                let root = self.root.try_clone().map_err(|e| ctx.io(e))?;
                self.owner(&ctx, &meta, |u, g| rfs::fchown(&root, Some(u), Some(g)))?;
            }
            return Ok(());
        };

        if name.as_bytes().starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(&ctx, parent, name, state);
        }

        if matches!(kind, EntryType::Char | EntryType::Block) {
            return self.skip(
                &ctx,
                state,
                "is a device node; images may not create devices",
            );
        }
        if !matches!(
            kind,
            EntryType::Regular
                | EntryType::Continuous
                | EntryType::GNUSparse
                | EntryType::Directory
                | EntryType::Symlink
                | EntryType::Link
                | EntryType::Fifo
        ) {
            return self.skip(
                &ctx,
                state,
                &format!("has the unsupported tar entry type {kind:?}"),
            );
        }

        // A hard link's target is resolved before the cache is taken.
        let link_target = if kind == EntryType::Link {
            let target = link.as_deref().unwrap_or_default();
            let tcomps = split_path(target).map_err(|r| {
                ctx.refuse(format!(
                    "is a hard link to '{}', which {r}",
                    String::from_utf8_lossy(target)
                ))
            })?;
            let Some((&tname, tparent)) = tcomps.split_last() else {
                return Err(ctx.refuse("is a hard link to the root directory"));
            };
            if join(&tcomps) == path {
                return Ok(());
            }
            let shown_target = String::from_utf8_lossy(target).into_owned();
            let tdir = walk(self.root.as_fd(), tparent, false, &mut Vec::new())
                .map_err(|e| {
                    ctx.walk(
                        tparent,
                        e,
                        &format!("is a hard link to '{shown_target}' through"),
                    )
                })?
                .ok_or_else(|| {
                    ctx.refuse(format!(
                        "is a hard link to '{shown_target}', which does not exist"
                    ))
                })?;
            match rfs::statat(&tdir, tname, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                    return Err(
                        ctx.refuse(format!("is a hard link to the directory '{shown_target}'"))
                    );
                }
                Ok(_) => {}
                Err(Errno::NOENT) => {
                    return Err(ctx.refuse(format!(
                        "is a hard link to '{shown_target}', which does not exist"
                    )));
                }
                Err(e) => return Err(ctx.io(e)),
            }
            Some((tdir, tname.to_owned()))
        } else {
            None
        };

        let (key, dir) = self
            .take_dir(parent, true)
            .map_err(|e| ctx.walk(parent, e, "goes through"))?
            .expect("walk with create=true finds the directory");
        let result = self.apply_kind(
            &ctx,
            entry,
            kind,
            dir.as_fd(),
            name,
            &path,
            &meta,
            link.as_deref(),
            link_target,
            state,
        );
        self.cache = Some((key, dir));
        let existing = result?;
        if let Existing::Removed(true) = existing {
            self.invalidate(&path);
        }
        state.mark(&path);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_kind<R: Read>(
        &mut self,
        ctx: &Ctx<'_>,
        entry: &mut tar::Entry<'_, R>,
        kind: EntryType,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: &Path,
        meta: &Meta,
        link: Option<&[u8]>,
        link_target: Option<(OwnedFd, std::ffi::OsString)>,
        state: &mut LayerState,
    ) -> Result<Existing, ImageError> {
        let want_dir = kind == EntryType::Directory;
        let existing = make_room(dir, name, want_dir).map_err(|e| ctx.io(e))?;
        match kind {
            EntryType::Directory => {
                if existing != Existing::KeptDir {
                    rfs::mkdirat(dir, name, Mode::from_raw_mode(0o755)).map_err(|e| ctx.io(e))?;
                }
                self.owner(ctx, meta, |u, g| {
                    rfs::chownat(dir, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
                })?;
                self.dirs.insert(
                    path.to_owned(),
                    DirMeta {
                        mode: meta.mode,
                        mtime: Some(meta.mtime),
                    },
                );
            }
            EntryType::Symlink => {
                let target = link.unwrap_or_default();
                if target.is_empty() {
                    self.skip(ctx, state, "is a symbolic link with an empty target")?;
                    return Ok(existing);
                }
                rfs::symlinkat(target, dir, name).map_err(|e| ctx.io(e))?;
                self.owner(ctx, meta, |u, g| {
                    rfs::chownat(dir, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
                })?;
                rfs::utimensat(
                    dir,
                    name,
                    &timestamps(meta.mtime),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| ctx.io(e))?;
            }
            EntryType::Link => {
                let (tdir, tname) = link_target.expect("resolved before");
                // Without AT_SYMLINK_FOLLOW a link to a symlink links the
                // symlink itself: nothing outside the rootfs is reachable.
                rfs::linkat(&tdir, &tname, dir, name, AtFlags::empty()).map_err(|e| ctx.io(e))?;
            }
            EntryType::Fifo => {
                rfs::mknodat(dir, name, FileType::Fifo, safe_mode(meta.mode), 0)
                    .map_err(|e| ctx.io(e))?;
                // The umask applied to mknod; set the mode exactly (the name
                // is the fifo just made, not a link).
                rfs::chmodat(dir, name, safe_mode(meta.mode), AtFlags::empty())
                    .map_err(|e| ctx.io(e))?;
                self.owner(ctx, meta, |u, g| {
                    rfs::chownat(dir, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
                })?;
                rfs::utimensat(
                    dir,
                    name,
                    &timestamps(meta.mtime),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| ctx.io(e))?;
            }
            _ => {
                // Regular file. O_EXCL: never opens anything that exists,
                // links included.
                let fd = rfs::openat(
                    dir,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| ctx.io(e))?;
                let mut file = File::from(fd);
                let mut written = 0u64;
                loop {
                    let n = entry.read(&mut self.buf).map_err(|e| {
                        ImageError::invalid(
                            format!("layer {}", ctx.layer),
                            format!("cannot read '{}': {e}", ctx.entry),
                        )
                    })?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&self.buf[..n]).map_err(|e| ctx.io(e))?;
                    written += n as u64;
                }
                self.owner(ctx, meta, |u, g| rfs::fchown(&file, Some(u), Some(g)))?;
                rfs::fchmod(&file, safe_mode(meta.mode)).map_err(|e| ctx.io(e))?;
                rfs::futimens(&file, &timestamps(meta.mtime)).map_err(|e| ctx.io(e))?;
                state.stats.files += 1;
                state.stats.file_bytes += written;
            }
        }
        Ok(existing)
    }

    fn skip(
        &mut self,
        ctx: &Ctx<'_>,
        state: &mut LayerState,
        reason: &str,
    ) -> Result<(), ImageError> {
        tracing::warn!(
            layer = ctx.layer,
            entry = ctx.entry,
            "skipping entry that {reason}"
        );
        state.stats.skipped.push(SkippedEntry {
            path: ctx.entry.to_owned(),
            reason: reason.to_owned(),
        });
        Ok(())
    }

    fn whiteout(
        &mut self,
        ctx: &Ctx<'_>,
        parent: &[&OsStr],
        name: &OsStr,
        state: &mut LayerState,
    ) -> Result<(), ImageError> {
        let bytes = name.as_bytes();
        let parent_path = join(parent);
        if bytes == OPAQUE {
            state.stats.whiteouts += 1;
            let Some((key, dir)) = self
                .take_dir(parent, false)
                .map_err(|e| ctx.walk(parent, e, "is a whiteout through"))?
            else {
                return Ok(());
            };
            let result = clear_lower(dir.as_fd(), &parent_path, &state.created);
            self.cache = Some((key, dir));
            result.map_err(|e| ctx.io(e))?;
            self.invalidate(&parent_path);
            // The directory itself stays, as part of this layer.
            state.mark(&parent_path);
            return Ok(());
        }
        let target = &bytes[WHITEOUT_PREFIX.len()..];
        if target.starts_with(WHITEOUT_PREFIX) {
            // Other `.wh..wh.` names are aufs bookkeeping, not whiteouts.
            return Ok(());
        }
        if target.is_empty() || target == b"." || target == b".." {
            return Err(ctx.refuse("is a whiteout without a valid name"));
        }
        state.stats.whiteouts += 1;
        let target = OsStr::from_bytes(target);
        let target_path = parent_path.join(target);
        if state.created.contains(&target_path) {
            // Whiteouts hide lower layers only.
            return Ok(());
        }
        let Some((key, dir)) = self
            .take_dir(parent, false)
            .map_err(|e| ctx.walk(parent, e, "is a whiteout through"))?
        else {
            return Ok(());
        };
        let result = remove_all_at(dir.as_fd(), target);
        self.cache = Some((key, dir));
        result.map_err(|e| ctx.io(e))?;
        self.invalidate(&target_path);
        Ok(())
    }

    /// Applies the recorded directory modes and times (deepest first) and
    /// returns. The rootfs is complete after this.
    pub fn finish(mut self) -> Result<(), ImageError> {
        self.cache = None;
        let mut dirs: Vec<(PathBuf, DirMeta)> = self.dirs.drain().collect();
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (path, meta) in dirs {
            let shown = path.display().to_string();
            let ctx = Ctx {
                layer: "(directory metadata)",
                entry: &shown,
            };
            let comps: Vec<&OsStr> = path.iter().collect();
            let fd = match comps.split_last() {
                None => self.root.try_clone().map_err(|e| ctx.io(e))?,
                Some((name, parent)) => {
                    let Ok(Some(pdir)) = walk(self.root.as_fd(), parent, false, &mut Vec::new())
                    else {
                        continue; // removed or replaced by a later layer
                    };
                    match rfs::openat(
                        &pdir,
                        *name,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    ) {
                        Ok(fd) => fd,
                        Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                        Err(e) => return Err(ctx.io(e)),
                    }
                }
            };
            rfs::fchmod(&fd, safe_mode(meta.mode)).map_err(|e| ctx.io(e))?;
            if let Some(mtime) = meta.mtime {
                rfs::futimens(&fd, &timestamps(mtime)).map_err(|e| ctx.io(e))?;
            }
        }
        Ok(())
    }
}

/// Removes what lower layers put in `dir` (an opaque whiteout), keeping
/// what this layer created (`created`, paths relative to the rootfs).
fn clear_lower(dir: BorrowedFd<'_>, dir_path: &Path, created: &HashSet<PathBuf>) -> io::Result<()> {
    let owned = rfs::openat(dir, ".", PATH_FLAGS, Mode::empty())?;
    for child in dir_names(&owned)? {
        let child_path = dir_path.join(&child);
        if !created.contains(&child_path) {
            remove_all_at(owned.as_fd(), &child)?;
            continue;
        }
        match rfs::openat(&owned, &child, PATH_FLAGS, Mode::empty()) {
            Ok(sub) => clear_lower(sub.as_fd(), &child_path, created)?,
            Err(Errno::NOTDIR | Errno::LOOP) => {} // a file of this layer
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: usize, size: usize) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..files {
            let mut h = tar::Header::new_gnu();
            h.set_size(size as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, format!("f{i}"), &vec![0u8; size][..])
                .unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn layers_past_their_caps_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut u = Unpacker::new(dir.path()).unwrap();
        u.set_limits(Limits {
            layer_bytes: 64 * 1024,
            layer_entries: 1000,
        });
        let e = u
            .apply_layer(&tar_of(2, 100_000)[..], "big")
            .unwrap_err()
            .to_string();
        assert!(e.contains("AGENTCTL_IMAGE_MAX_LAYER_BYTES"), "{e}");
        u.set_limits(Limits {
            layer_bytes: 1 << 30,
            layer_entries: 1000,
        });
        let e = u
            .apply_layer(&tar_of(1001, 0)[..], "many")
            .unwrap_err()
            .to_string();
        assert!(e.contains("AGENTCTL_IMAGE_MAX_LAYER_ENTRIES"), "{e}");
        assert!(u.apply_layer(&tar_of(10, 1000)[..], "fine").is_ok());
    }

    #[test]
    fn splits_paths() {
        let s = |p: &str| {
            split_path(p.as_bytes()).map(|v| {
                v.iter()
                    .map(|c| c.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(s("./a/b/").unwrap(), ["a", "b"]);
        assert_eq!(s("/etc//passwd").unwrap(), ["etc", "passwd"]);
        assert!(s("./").unwrap().is_empty());
        assert!(s("a/../../etc").is_err());
        assert!(s("..").is_err());
        assert_eq!(s("a/..b/c..").unwrap(), ["a", "..b", "c.."]);
        assert!(s(&"d/".repeat(MAX_DEPTH + 1)).is_err());
    }

    #[test]
    fn detects_compression() {
        assert!(matches!(detect(&[0x1f, 0x8b, 8, 0]), Ok(Compression::Gzip)));
        assert!(matches!(
            detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Ok(Compression::Zstd)
        ));
        assert!(matches!(detect(b"etc/"), Ok(Compression::None)));
        assert!(matches!(detect(b""), Ok(Compression::None)));
        assert!(detect(b"BZh91AY").is_err());
    }
}
