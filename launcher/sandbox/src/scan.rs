//! The secret scanner: a parallel walk over everything the sandbox will
//! see, which finds the paths to mask.
//!
//! It reads directory entries with their types and inode numbers and, like
//! `find -name`, stats almost nothing: only secrets themselves (whose device
//! and inode identify their hard links) and, after the walk, the few files
//! whose inode number equals a secret's. Where a file system's directory
//! inode numbers cannot be trusted to equal `stat`'s (overlayfs, FUSE,
//! network file systems), every file there is stat'ed instead. It never
//! consults `.gitignore`: ignored files are exactly where secrets live.

use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use policy::secrets::{HOME_DENY, SecretRules, home_denied};

use crate::spec::{MaskKind, MaskReason, Masked, ScanStats, SymlinkAlias};

/// What to do with one tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootKind {
    /// Mounted into the sandbox: find secrets by name, home deny list,
    /// sockets and hard links.
    Content { name_rules: bool },
    /// Not mounted; its files are secrets whose hard links must be masked
    /// wherever they appear (the home deny list, /etc/shadow).
    DeniedInodes,
    /// Mounted; mask whatever is not world-readable (the host's /etc when
    /// the sandbox runs as host root).
    PrivateFiles,
}

#[derive(Clone, Debug)]
pub struct ScanRoot {
    /// Canonical host path, a directory or a file.
    pub host: PathBuf,
    /// Where `host` appears in the sandbox.
    pub container: PathBuf,
    pub kind: RootKind,
}

pub struct ScanInput<'a> {
    pub roots: Vec<ScanRoot>,
    pub rules: &'a SecretRules,
    /// The invoking user's home, for the home deny list.
    pub home: &'a Path,
    /// Home-relative paths the profile grants by name; never masked by the
    /// home deny list.
    pub granted: &'a [String],
    pub threads: usize,
}

#[derive(Debug, Default)]
pub struct ScanOutput {
    pub masked: Vec<Masked>,
    pub aliases: Vec<SymlinkAlias>,
    /// Entries named like files the host runs (`crate::hostrun::NAMES`),
    /// by root index and host path, for `crate::hostrun::find`.
    pub host_run: Vec<(usize, PathBuf)>,
    /// Paths the walk could not read and could not mask as a whole, with
    /// why: the planner refuses the session rather than miss a secret.
    pub errors: Vec<(PathBuf, String)>,
    /// `.env*` directories that are Python virtual environments, where they
    /// appear in the sandbox: walked like any directory, not masked.
    pub venvs: Vec<PathBuf>,
    pub stats: ScanStats,
}

struct Job {
    dir: PathBuf,
    root: usize,
    /// Inside a masked directory: only collect inodes.
    under_mask: bool,
    /// Directory inode numbers here may differ from stat's: stat files.
    stat_all: bool,
}

#[derive(Default)]
struct Found {
    masked: Vec<(usize, PathBuf, MaskKind, MaskReason)>,
    /// Stat'ed files with more than one link: (dev, ino), path, root, secret.
    linked: Vec<((u64, u64), PathBuf, usize, bool)>,
    /// Files known only by their directory entry: (d_ino, index into
    /// `dir_list`). Checked against the secrets' inodes after the walk.
    plain: Vec<(u64, u32)>,
    dir_list: Vec<(PathBuf, usize)>,
    symlinks: Vec<(usize, PathBuf, PathBuf)>,
    host_run: Vec<(usize, PathBuf)>,
    /// What the walk could not read and could not mask either: the
    /// session is refused.
    errors: Vec<(PathBuf, String)>,
    /// `.env*` directories walked, not masked, because they hold a Python
    /// virtual environment (`pyvenv.cfg`).
    venvs: Vec<(usize, PathBuf)>,
    dirs: u64,
    files: u64,
}

struct Queue {
    jobs: Vec<Job>,
    pending: usize,
}

pub fn scan(input: &ScanInput<'_>) -> ScanOutput {
    let start = Instant::now();
    let queue = Mutex::new(Queue {
        jobs: Vec::new(),
        pending: 0,
    });
    let ready = Condvar::new();
    let mut top = Found::default();
    let trusted = DinoTrust::read(&input.roots);

    for (i, root) in input.roots.iter().enumerate() {
        let Ok(meta) = fs::symlink_metadata(&root.host) else {
            continue;
        };
        if meta.is_dir() {
            let under_mask = matches!(root.kind, RootKind::DeniedInodes);
            let mut q = queue.lock().unwrap();
            q.jobs.push(Job {
                dir: root.host.clone(),
                root: i,
                under_mask,
                stat_all: !trusted.trusted(&root.host),
            });
            q.pending += 1;
        } else if meta.is_file() {
            top.files += 1;
            let secret = matches!(root.kind, RootKind::DeniedInodes);
            if meta.nlink() > 1 || secret {
                top.linked
                    .push(((meta.dev(), meta.ino()), root.host.clone(), i, secret));
            }
        }
    }

    let threads = input.threads.max(1);
    let results: Vec<Found> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| worker(input, &trusted, &queue, &ready)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("scanner thread panicked"))
            .collect()
    });

    let mut all = top;
    for r in results {
        let offset = all.dir_list.len() as u32;
        all.plain
            .extend(r.plain.into_iter().map(|(ino, d)| (ino, d + offset)));
        all.dir_list.extend(r.dir_list);
        all.masked.extend(r.masked);
        all.linked.extend(r.linked);
        all.symlinks.extend(r.symlinks);
        all.host_run.extend(r.host_run);
        all.errors.extend(r.errors);
        all.venvs.extend(r.venvs);
        all.dirs += r.dirs;
        all.files += r.files;
    }
    let mut out = finish(input, all);
    out.stats.roots = input.roots.len();
    out.stats.micros = start.elapsed().as_micros() as u64;
    out
}

fn worker(
    input: &ScanInput<'_>,
    trusted: &DinoTrust,
    queue: &Mutex<Queue>,
    ready: &Condvar,
) -> Found {
    let mut found = Found::default();
    let mut local: Vec<Job> = Vec::new();
    loop {
        let job = {
            let mut q = queue.lock().unwrap();
            // Hand surplus work to idle threads before taking more.
            if local.len() > 1 {
                let keep = local.len() / 2;
                q.jobs.extend(local.drain(keep..));
                ready.notify_all();
            }
            if let Some(job) = local.pop() {
                job
            } else {
                loop {
                    if let Some(job) = q.jobs.pop() {
                        break job;
                    }
                    if q.pending == 0 {
                        ready.notify_all();
                        return found;
                    }
                    q = ready.wait(q).unwrap();
                }
            }
        };
        let before = local.len();
        visit(input, trusted, &job, &mut found, &mut local);
        let added = local.len() - before;
        let mut q = queue.lock().unwrap();
        q.pending += added;
        q.pending -= 1;
        if q.pending == 0 {
            ready.notify_all();
        }
    }
}

/// Names (children of `dir`) that the home deny list covers. A directory
/// counts as in the home when its host path is, or when the place it
/// appears in the sandbox is: a granted `~/.config` may be a symlink to
/// `~/dotfiles/config`, and its `gcloud` is still `~/.config/gcloud`.
fn home_deny_children(
    input: &ScanInput<'_>,
    host_dir: &Path,
    container_dir: &Path,
) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for dir in [host_dir, container_dir] {
        let Ok(rel) = dir.strip_prefix(input.home) else {
            continue;
        };
        let rel = rel.as_os_str().as_bytes();
        for (entry, _) in HOME_DENY {
            let (parent, name) = match entry.rfind('/') {
                Some(i) => (&entry[..i], &entry[i + 1..]),
                None => ("", *entry),
            };
            if parent.as_bytes() == rel
                && !input.granted.iter().any(|g| g == entry)
                && !out.iter().any(|(e, _)| e == entry)
            {
                out.push((entry, name));
            }
        }
    }
    out
}

fn visit(
    input: &ScanInput<'_>,
    trusted: &DinoTrust,
    job: &Job,
    found: &mut Found,
    out: &mut Vec<Job>,
) {
    use nix::dir::{Dir, Type};
    use nix::fcntl::{AtFlags, OFlag};
    use nix::sys::stat::{Mode, SFlag, fstatat};

    let root = &input.roots[job.root];
    let mut dir = match Dir::open(
        &job.dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(d) => d,
        Err(e) => {
            unlistable(root, job, &format!("cannot list it: {e}"), e, found);
            return;
        }
    };
    found.dirs += 1;
    let dir_index = found.dir_list.len() as u32;
    found.dir_list.push((job.dir.clone(), job.root));
    let content = matches!(root.kind, RootKind::Content { .. }) && !job.under_mask;
    let name_rules = matches!(root.kind, RootKind::Content { name_rules: true });
    let private = matches!(root.kind, RootKind::PrivateFiles) && !job.under_mask;
    let home_names = if content {
        home_deny_children(input, &job.dir, &to_container(root, &job.dir))
    } else {
        Vec::new()
    };
    let needs_rel = name_rules && input.rules.has_path_rules();
    let rel_dir = if needs_rel {
        job.dir
            .strip_prefix(&root.host)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let depth_names = if content && name_rules {
        any_depth_children(&job.dir, &root.host)
    } else {
        Vec::new()
    };
    let dirfd = std::os::fd::AsRawFd::as_raw_fd(&dir);

    let mut read_error = None;
    for entry in dir.iter() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                // A listing cut short hides whatever came after: the
                // directory is handled as one that cannot be listed.
                read_error = Some(e);
                break;
            }
        };
        let cname = entry.file_name();
        let bytes = cname.to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        let lossy;
        let name: &str = match std::str::from_utf8(bytes) {
            Ok(n) => n,
            Err(_) => {
                lossy = String::from_utf8_lossy(bytes).into_owned();
                &lossy
            }
        };
        let stat = || fstatat(Some(dirfd), cname, AtFlags::AT_SYMLINK_NOFOLLOW).ok();
        let mut st = None;
        let kind = match entry.file_type() {
            Some(t) => Some(t),
            None => {
                // DT_UNKNOWN: the file system does not say; ask stat. Gone
                // since the listing is fine; anything else is not knowing.
                match fstatat(Some(dirfd), cname, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(s) => st = Some(s),
                    Err(nix::errno::Errno::ENOENT) => {}
                    Err(e) if content || private => {
                        found
                            .errors
                            .push((path_of(&job.dir, bytes), format!("cannot stat it: {e}")));
                    }
                    Err(_) => {}
                }
                st.map(
                    |s| match SFlag::from_bits_truncate(s.st_mode) & SFlag::S_IFMT {
                        SFlag::S_IFDIR => Type::Directory,
                        SFlag::S_IFREG => Type::File,
                        SFlag::S_IFLNK => Type::Symlink,
                        SFlag::S_IFSOCK => Type::Socket,
                        _ => Type::Fifo,
                    },
                )
            }
        };
        let Some(kind) = kind else { continue };
        let path = || job.dir.join(std::ffi::OsStr::from_bytes(bytes));
        // `.git`, `.vscode`, ...: a byte compare on names starting with a
        // dot, for the host-run files planned after the walk.
        if content
            && bytes.first() == Some(&b'.')
            && crate::hostrun::NAMES.iter().any(|n| n.as_bytes() == bytes)
        {
            found.host_run.push((job.root, path()));
        }
        let rel_owned;
        let rel: &str = if needs_rel {
            rel_owned = if rel_dir.is_empty() {
                name.to_string()
            } else {
                format!("{rel_dir}/{name}")
            };
            &rel_owned
        } else {
            ""
        };

        match kind {
            Type::Directory => {
                let path = path();
                let mut masked = job.under_mask;
                if private {
                    if let Some(s) = st.or_else(stat)
                        && s.st_mode & 0o004 == 0
                    {
                        found.masked.push((
                            job.root,
                            path.clone(),
                            MaskKind::Dir,
                            MaskReason::PrivateSystemFile,
                        ));
                        masked = true;
                    }
                } else if content {
                    if let Some((entry_name, _)) = home_names.iter().find(|(_, n)| *n == name) {
                        found.masked.push((
                            job.root,
                            path.clone(),
                            MaskKind::Dir,
                            home_reason(entry_name),
                        ));
                        masked = true;
                    } else if let Some((entry, what)) = depth_names
                        .iter()
                        .find(|(_, n, _)| *n == name)
                        .map(|(e, _, w)| (e, w))
                    {
                        found.masked.push((
                            job.root,
                            path.clone(),
                            MaskKind::Dir,
                            MaskReason::CredentialFile {
                                entry: entry.to_string(),
                                what: what.to_string(),
                            },
                        ));
                        masked = true;
                    } else if name_rules && let Some(rule) = input.rules.classify(rel, name, true) {
                        if rule.is_dotenv() && is_venv(dirfd, cname) {
                            found.venvs.push((job.root, path.clone()));
                        } else {
                            found.masked.push((
                                job.root,
                                path.clone(),
                                MaskKind::Dir,
                                MaskReason::NameRule {
                                    rule: if rule.is_dotenv() {
                                        rule.describe_dir()
                                    } else {
                                        rule.describe()
                                    },
                                },
                            ));
                            masked = true;
                        }
                    }
                }
                let stat_all = job.stat_all || !trusted.trusted(&path);
                out.push(Job {
                    dir: path,
                    root: job.root,
                    under_mask: masked,
                    stat_all,
                });
            }
            Type::File => {
                found.files += 1;
                let mut reason = None;
                if content {
                    if let Some((entry_name, _)) = home_names.iter().find(|(_, n)| *n == name) {
                        reason = Some(home_reason(entry_name));
                    } else if let Some((entry, _, what)) =
                        depth_names.iter().find(|(_, n, _)| *n == name)
                    {
                        reason = Some(MaskReason::CredentialFile {
                            entry: entry.to_string(),
                            what: what.to_string(),
                        });
                    } else if name_rules && let Some(rule) = input.rules.classify(rel, name, false)
                    {
                        reason = Some(MaskReason::NameRule {
                            rule: rule.describe(),
                        });
                    }
                }
                let secret = job.under_mask || reason.is_some();
                if !secret && !private && !job.stat_all {
                    // The common case: no stat, the inode from the entry.
                    found.plain.push((entry.ino(), dir_index));
                    continue;
                }
                // A secret is masked whether or not stat still finds it:
                // one that vanished now must not be back, unmasked, at
                // mount time (the mount then fails and the session with it).
                let s = st.or_else(stat);
                if private && s.is_some_and(|s| s.st_mode & 0o004 == 0) {
                    reason = Some(MaskReason::PrivateSystemFile);
                }
                let secret = secret || reason.is_some();
                if let Some(reason) = reason {
                    found
                        .masked
                        .push((job.root, path(), MaskKind::File, reason));
                }
                let Some(s) = s else { continue };
                if s.st_nlink > 1 {
                    found
                        .linked
                        .push(((s.st_dev, s.st_ino), path(), job.root, secret));
                }
            }
            Type::Symlink => {
                if content && let Ok(target) = fs::read_link(path()) {
                    found.symlinks.push((job.root, path(), target));
                }
            }
            Type::Socket if content => {
                found
                    .masked
                    .push((job.root, path(), MaskKind::File, MaskReason::Socket));
            }
            _ => {}
        }
    }
    if let Some(e) = read_error {
        unlistable(root, job, &format!("its listing failed: {e}"), e, found);
    }
}

fn path_of(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(std::ffi::OsStr::from_bytes(name))
}

/// A directory the walk could not (fully) list. Inside the sandbox's trees
/// it is masked as a whole: `chmod 0111 config` left `config/.env` open by
/// name while the scan saw nothing in it. The root of a tree cannot be
/// masked without losing the tree, so it refuses the session instead, as
/// does any error other than "not allowed" and "gone".
fn unlistable(root: &ScanRoot, job: &Job, why: &str, errno: nix::errno::Errno, found: &mut Found) {
    use nix::errno::Errno;
    match root.kind {
        // Not mounted: walked only for its secrets' inodes. A directory
        // the user cannot list there is one the agent (the same user)
        // cannot reach into either.
        RootKind::DeniedInodes => {}
        _ if job.under_mask => {}
        _ if errno == Errno::ENOENT && job.dir != root.host => {}
        _ if job.dir != root.host && matches!(errno, Errno::EACCES | Errno::EPERM) => {
            found.masked.push((
                job.root,
                job.dir.clone(),
                MaskKind::Dir,
                MaskReason::Unlistable {
                    error: why.to_string(),
                },
            ));
        }
        _ => found.errors.push((job.dir.clone(), why.to_string())),
    }
}

/// True when directory `name` (in `dirfd`) holds `pyvenv.cfg`: a Python
/// virtual environment called `.env`, not a directory of env files.
fn is_venv(dirfd: std::os::fd::RawFd, name: &std::ffi::CStr) -> bool {
    use nix::fcntl::AtFlags;
    let mut p = name.to_bytes().to_vec();
    p.extend_from_slice(b"/pyvenv.cfg");
    let Ok(p) = std::ffi::CString::new(p) else {
        return false;
    };
    nix::sys::stat::fstatat(Some(dirfd), p.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFREG)
}

/// A deny list name matched at any depth, split once (not per directory):
/// `.config/gcloud` is `gcloud` in a directory whose path ends in `.config`.
struct AnyDepth {
    entry: &'static str,
    parent: &'static str,
    name: &'static str,
    what: &'static str,
}

fn any_depth_table() -> &'static [AnyDepth] {
    static TABLE: std::sync::OnceLock<Vec<AnyDepth>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        policy::secrets::any_depth_entries()
            .map(|(entry, what)| {
                let (parent, name) = match entry.rfind('/') {
                    Some(i) => (&entry[..i], &entry[i + 1..]),
                    None => ("", entry),
                };
                AnyDepth {
                    entry,
                    parent,
                    name,
                    what,
                }
            })
            .collect()
    })
}

/// Children of `dir` that the deny list's names cover at any depth
/// (`proj/.kube/config`, `ci/.docker/config.json`): (entry, name, what).
fn any_depth_children(dir: &Path, root: &Path) -> Vec<(&'static str, &'static str, &'static str)> {
    let rel = dir.strip_prefix(root).unwrap_or(Path::new(""));
    let rel = rel.as_os_str().as_bytes();
    any_depth_table()
        .iter()
        .filter(|a| {
            let p = a.parent.as_bytes();
            p.is_empty()
                || rel == p
                || (rel.len() > p.len() && rel.ends_with(p) && rel[rel.len() - p.len() - 1] == b'/')
        })
        .map(|a| (a.entry, a.name, a.what))
        .collect()
}

/// Which mounts report directory inode numbers that equal `stat`'s. Local
/// disk file systems and tmpfs do; overlayfs (without xino), FUSE and
/// network file systems may not, so files there are stat'ed one by one.
struct DinoTrust {
    /// Mount points under the scanned roots, with whether to trust them.
    mounts: Vec<(PathBuf, bool)>,
}

impl DinoTrust {
    const TRUSTED: &'static [&'static str] = &[
        "ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "zfs", "f2fs", "jfs", "bcachefs",
        "reiserfs", "ramfs",
    ];

    fn read(roots: &[ScanRoot]) -> DinoTrust {
        let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<(PathBuf, bool)> = Vec::new();
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let (Some(point), Some(fstype)) = (
                left.split_whitespace().nth(4),
                right.split_whitespace().next(),
            ) else {
                continue;
            };
            let point = PathBuf::from(unescape_mountinfo(point));
            // Keep the mounts that hold a root or lie inside one.
            if roots
                .iter()
                .any(|r| r.host.starts_with(&point) || point.starts_with(&r.host))
            {
                mounts.push((point, Self::TRUSTED.contains(&fstype)));
            }
        }
        // Longest mount point first: the innermost mount decides.
        mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.as_os_str().len()));
        DinoTrust { mounts }
    }

    fn trusted(&self, dir: &Path) -> bool {
        self.mounts
            .iter()
            .find(|(p, _)| dir.starts_with(p))
            .is_none_or(|(_, ok)| *ok)
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn home_reason(entry: &str) -> MaskReason {
    MaskReason::HomeDenied {
        entry: entry.to_string(),
        what: home_denied(entry).unwrap_or("secret").to_string(),
    }
}

/// Maps a host path inside `root` to where it appears in the sandbox.
fn to_container(root: &ScanRoot, host: &Path) -> PathBuf {
    match host.strip_prefix(&root.host) {
        Ok(rest) if rest.as_os_str().is_empty() => root.container.clone(),
        Ok(rest) => root.container.join(rest),
        Err(_) => host.to_path_buf(),
    }
}

/// Resolves `..` and `.` without touching the disk.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn hard_link_mask(root: &ScanRoot, path: &Path, of: &Path) -> Masked {
    Masked {
        path: to_container(root, path),
        kind: MaskKind::File,
        reason: MaskReason::HardLink {
            of: of.to_path_buf(),
        },
    }
}

/// True when `p` is a masked file or lies in a masked directory.
fn is_masked(masked: &[(PathBuf, MaskKind)], p: &Path) -> bool {
    masked.iter().any(|(m, kind)| match kind {
        MaskKind::File => m == p,
        MaskKind::Dir => p.starts_with(m),
    })
}

fn finish(input: &ScanInput<'_>, found: Found) -> ScanOutput {
    let mut out = ScanOutput {
        stats: ScanStats {
            dirs: found.dirs,
            files: found.files,
            ..ScanStats::default()
        },
        host_run: found.host_run,
        errors: found.errors,
        venvs: found
            .venvs
            .iter()
            .map(|(root, host)| to_container(&input.roots[*root], host))
            .collect(),
        ..ScanOutput::default()
    };
    let mounted = |root: usize| !matches!(input.roots[root].kind, RootKind::DeniedInodes);

    let mut masked_hosts: Vec<(PathBuf, MaskKind)> = Vec::new();
    for (root, host, kind, reason) in found.masked {
        if mounted(root) {
            out.masked.push(Masked {
                path: to_container(&input.roots[root], &host),
                kind,
                reason,
            });
            masked_hosts.push((host, kind));
        }
    }

    // Resolve every symlink once, against the host.
    let links: Vec<(usize, PathBuf, PathBuf)> = found
        .symlinks
        .into_iter()
        .map(|(root, link, raw)| {
            let joined = link.parent().unwrap_or(Path::new("/")).join(&raw);
            let target = fs::canonicalize(&joined).unwrap_or_else(|_| normalize(&joined));
            (root, link, target)
        })
        .collect();
    let inside = |target: &Path| {
        input
            .roots
            .iter()
            .position(|r| !matches!(r.kind, RootKind::DeniedInodes) && target.starts_with(&r.host))
    };

    // A link named like a secret (`.env -> config/prod.txt`) says what its
    // target holds: the target is a secret too. This comes first, so that
    // the target's hard links and every other link to it are caught below.
    for (_, link, target) in &links {
        let named = link
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| input.rules.classify(n, n, false));
        if let (Some(rule), Some(root)) = (named, inside(target))
            && target.is_file()
            && !is_masked(&masked_hosts, target)
        {
            out.masked.push(Masked {
                path: to_container(&input.roots[root], target),
                kind: MaskKind::File,
                reason: MaskReason::NameRule {
                    rule: format!("target of symlink {} ({})", link.display(), rule.describe()),
                },
            });
            masked_hosts.push((target.clone(), MaskKind::File));
        }
    }

    // Hard links: any file sharing (dev, ino) with a secret is a secret.
    let is_secret = |path: &Path, flagged: bool| flagged || is_masked(&masked_hosts, path);
    let mut secret_inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for (key, path, _, secret) in &found.linked {
        if is_secret(path, *secret) {
            secret_inodes.entry(*key).or_insert_with(|| path.clone());
        }
    }
    // Targets of secret-named links were not stat'ed during the walk.
    for (target, _) in &masked_hosts {
        if let Ok(m) = fs::symlink_metadata(target)
            && m.is_file()
            && m.nlink() > 1
        {
            secret_inodes
                .entry((m.dev(), m.ino()))
                .or_insert_with(|| target.clone());
        }
    }
    let mut hard: Vec<(Masked, PathBuf)> = Vec::new();
    for (key, path, root, secret) in &found.linked {
        if is_secret(path, *secret) || !mounted(*root) {
            continue;
        }
        if let Some(of) = secret_inodes.get(key) {
            hard.push((hard_link_mask(&input.roots[*root], path, of), path.clone()));
        }
    }
    // Files known by their directory entry alone: only those whose inode
    // number equals a secret's are stat'ed, to compare the device too.
    let secret_inos: std::collections::HashSet<u64> =
        secret_inodes.keys().map(|(_, ino)| *ino).collect();
    let mut candidates: Vec<(u32, u64)> = found
        .plain
        .iter()
        .filter(|(ino, _)| secret_inos.contains(ino))
        .map(|(ino, d)| (*d, *ino))
        .collect();
    candidates.sort_unstable();
    candidates.dedup();
    for (d, ino) in candidates {
        let (dir, root) = &found.dir_list[d as usize];
        if !mounted(*root) {
            continue;
        }
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            use std::os::unix::fs::DirEntryExt;
            if e.ino() != ino {
                continue;
            }
            let path = e.path();
            let Ok(m) = fs::symlink_metadata(&path) else {
                continue;
            };
            if m.is_file()
                && !is_masked(&masked_hosts, &path)
                && let Some(of) = secret_inodes.get(&(m.dev(), m.ino()))
            {
                hard.push((hard_link_mask(&input.roots[*root], &path, of), path));
            }
        }
    }
    for (m, host) in hard {
        out.masked.push(m);
        masked_hosts.push((host, MaskKind::File));
    }

    // Now that every mask is known, list the symlinks that lead to a
    // secret; their targets are masked or not mounted at all.
    for (root, link, target) in links {
        let denied_home = target
            .strip_prefix(input.home)
            .ok()
            .and_then(|r| r.to_str())
            .filter(|r| {
                home_denied(r).is_some()
                    && !input
                        .granted
                        .iter()
                        .any(|g| r == g || r.starts_with(&format!("{g}/")))
            })
            .is_some();
        let denied_system = policy::secrets::SYSTEM_DENY
            .iter()
            .any(|(p, _)| target.starts_with(p));
        let masked = is_masked(&masked_hosts, &target);
        if masked || denied_home || denied_system {
            out.aliases.push(SymlinkAlias {
                link: to_container(&input.roots[root], &link),
                target_state: if denied_system {
                    "masked (system)".into()
                } else if masked && inside(&target).is_some() {
                    "masked".into()
                } else {
                    "not mounted".into()
                },
                target,
            });
        }
    }

    out.masked.sort_by(|a, b| a.path.cmp(&b.path));
    out.masked.dedup_by(|a, b| a.path == b.path);
    // A path under a masked directory needs no mask of its own.
    let dirs: Vec<PathBuf> = out
        .masked
        .iter()
        .filter(|m| m.kind == MaskKind::Dir)
        .map(|m| m.path.clone())
        .collect();
    out.masked
        .retain(|m| !dirs.iter().any(|d| m.path != *d && m.path.starts_with(d)));
    out.aliases.sort_by(|a, b| a.link.cmp(&b.link));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo(r"/x\134y"), r"/x\y");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
    }

    #[test]
    fn innermost_mount_decides_trust() {
        let t = DinoTrust {
            mounts: vec![
                (PathBuf::from("/w/overlay/sub"), true),
                (PathBuf::from("/w/overlay"), false),
                (PathBuf::from("/"), true),
            ],
        };
        assert!(t.trusted(Path::new("/w/src")));
        assert!(!t.trusted(Path::new("/w/overlay/x")));
        assert!(t.trusted(Path::new("/w/overlay/sub/y")));
    }
}
