//! The secret scanner: a parallel walk over everything the sandbox will
//! see, which finds the paths to mask.
//!
//! It reads directory entries with their types (no stat for directories or
//! symlinks) and stats only regular files, whose link count and inode are
//! needed to find hard-link aliases of secrets. It never consults
//! `.gitignore`: ignored files are exactly where secrets tend to live.

use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
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
    pub stats: ScanStats,
}

struct Job {
    dir: PathBuf,
    root: usize,
    /// Inside a masked directory: only collect inodes.
    under_mask: bool,
}

#[derive(Default)]
struct Found {
    masked: Vec<(usize, PathBuf, MaskKind, MaskReason)>,
    /// Files with more than one link: (dev, ino) -> (host path, root, is secret).
    linked: Vec<((u64, u64), PathBuf, usize, bool)>,
    symlinks: Vec<(usize, PathBuf, PathBuf)>,
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
            .map(|_| s.spawn(|| worker(input, &queue, &ready)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("scanner thread panicked"))
            .collect()
    });

    let mut all = top;
    for r in results {
        all.masked.extend(r.masked);
        all.linked.extend(r.linked);
        all.symlinks.extend(r.symlinks);
        all.dirs += r.dirs;
        all.files += r.files;
    }
    let mut out = finish(input, all);
    out.stats.roots = input.roots.len();
    out.stats.micros = start.elapsed().as_micros() as u64;
    out
}

fn worker(input: &ScanInput<'_>, queue: &Mutex<Queue>, ready: &Condvar) -> Found {
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
        visit(input, &job, &mut found, &mut local);
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

fn visit(input: &ScanInput<'_>, job: &Job, found: &mut Found, out: &mut Vec<Job>) {
    let Ok(entries) = fs::read_dir(&job.dir) else {
        return;
    };
    found.dirs += 1;
    let root = &input.roots[job.root];
    let content = matches!(root.kind, RootKind::Content { .. }) && !job.under_mask;
    let name_rules = matches!(root.kind, RootKind::Content { name_rules: true });
    let private = matches!(root.kind, RootKind::PrivateFiles) && !job.under_mask;
    let home_names = if content {
        home_deny_children(input, &job.dir, &to_container(root, &job.dir))
    } else {
        Vec::new()
    };
    let needs_rel = name_rules && input.rules.has_path_rules();

    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        let name_os = entry.file_name();
        let path = entry.path();
        let lossy;
        let name: &str = match name_os.to_str() {
            Some(n) => n,
            None => {
                lossy = name_os.to_string_lossy().into_owned();
                &lossy
            }
        };
        let rel_owned;
        let rel: &str = if needs_rel {
            rel_owned = path
                .strip_prefix(&root.host)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            &rel_owned
        } else {
            ""
        };

        if ft.is_dir() {
            let mut masked = job.under_mask;
            if private && let Ok(meta) = entry.metadata() {
                if meta.mode() & 0o004 == 0 {
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
                } else if name_rules && let Some(rule) = input.rules.classify(rel, name, true) {
                    found.masked.push((
                        job.root,
                        path.clone(),
                        MaskKind::Dir,
                        MaskReason::NameRule {
                            rule: rule.describe(),
                        },
                    ));
                    masked = true;
                }
            }
            out.push(Job {
                dir: path,
                root: job.root,
                under_mask: masked,
            });
        } else if ft.is_file() {
            found.files += 1;
            let mut secret = job.under_mask;
            let mut reason = None;
            if content {
                if let Some((entry_name, _)) = home_names.iter().find(|(_, n)| *n == name) {
                    reason = Some(home_reason(entry_name));
                } else if name_rules && let Some(rule) = input.rules.classify(rel, name, false) {
                    reason = Some(MaskReason::NameRule {
                        rule: rule.describe(),
                    });
                }
            }
            let Ok(meta) = entry.metadata() else { continue };
            if private && meta.mode() & 0o004 == 0 {
                reason = Some(MaskReason::PrivateSystemFile);
            }
            if let Some(reason) = reason {
                found
                    .masked
                    .push((job.root, path.clone(), MaskKind::File, reason));
                secret = true;
            }
            if meta.nlink() > 1 {
                found
                    .linked
                    .push(((meta.dev(), meta.ino()), path, job.root, secret));
            }
        } else if ft.is_symlink() {
            if content && let Ok(target) = fs::read_link(&path) {
                found.symlinks.push((job.root, path, target));
            }
        } else if ft.is_socket() && content {
            found
                .masked
                .push((job.root, path, MaskKind::File, MaskReason::Socket));
        }
    }
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
    let mut secret_inodes: HashMap<(u64, u64), &Path> = HashMap::new();
    for (key, path, _, secret) in &found.linked {
        if is_secret(path, *secret) {
            secret_inodes.entry(*key).or_insert(path);
        }
    }
    let mut hard = Vec::new();
    for (key, path, root, secret) in &found.linked {
        if is_secret(path, *secret) || !mounted(*root) {
            continue;
        }
        if let Some(of) = secret_inodes.get(key) {
            hard.push((
                Masked {
                    path: to_container(&input.roots[*root], path),
                    kind: MaskKind::File,
                    reason: MaskReason::HardLink {
                        of: of.to_path_buf(),
                    },
                },
                path.clone(),
            ));
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
