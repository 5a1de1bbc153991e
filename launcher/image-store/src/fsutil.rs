//! File-system helpers: removing trees that may hold read-only directories,
//! disk usage, lock files, atomic writes and unique temporary names.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{self as rfs, AtFlags, Dir, Mode, OFlags};
use rustix::io::Errno;

/// A name no other process or thread will pick: pid, time and a counter.
pub(crate) fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes `bytes` to a temporary file next to `path` and renames it over
/// `path`, so readers see the old or the new content, never a mix.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path.file_name().unwrap_or(OsStr::new("file"));
    let tmp = path.with_file_name(format!(
        ".{}.{}",
        name.to_string_lossy(),
        unique_name("tmp")
    ));
    let result = (|| {
        let mut f = File::create_new(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A held lock on the cache (see the `fslock` crate); released when dropped.
pub(crate) type Lock = fslock::Lock;

/// Takes a shared or exclusive lock on `path` (created if missing). Calls
/// `on_wait` once if another process holds it, then blocks.
pub(crate) fn lock(path: &Path, exclusive: bool, on_wait: impl FnOnce()) -> io::Result<Lock> {
    let mode = if exclusive {
        fslock::Mode::Exclusive
    } else {
        fslock::Mode::Shared
    };
    fslock::lock(path, mode, on_wait)
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Removes `name` in `parent` and everything below it, without following
/// symbolic links. Directories that the image made read-only are made
/// writable first (an unprivileged owner needs that to empty them).
/// A missing `name` is not an error.
pub(crate) fn remove_all_at(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match rfs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) => {}
        // Some file systems answer EPERM for unlink(dir).
        Err(Errno::PERM)
            if rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
                rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory
            }) => {}
        Err(e) => return Err(e.into()),
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = match rfs::openat(parent, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ACCESS) if !is_root() => {
            // Ours but unreadable (mode 0o000 or 0o311 from an image).
            // `name` is a directory (unlink said so), not a link.
            rfs::chmodat(parent, name, Mode::from_raw_mode(0o700), AtFlags::empty())?;
            rfs::openat(parent, name, flags, Mode::empty())?
        }
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if !is_root() {
        // Ignored: if it fails, the unlinks below report the real problem.
        let _ = rfs::fchmod(&dir, Mode::from_raw_mode(0o700));
    }
    for child in dir_names(&dir)? {
        remove_all_at(dir.as_fd(), &child)?;
    }
    drop(dir);
    match rfs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// [`remove_all_at`] for a path; a missing path is not an error.
pub(crate) fn remove_all(path: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to remove a root directory",
        ));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let pfd = match rfs::open(
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    remove_all_at(pfd.as_fd(), name)
}

/// The names in an open directory, without `.` and `..`.
pub(crate) fn dir_names(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let reader = rfs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = Dir::new(reader)?;
    let mut names = Vec::new();
    while let Some(entry) = d.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    Ok(names)
}

/// Bytes on disk (allocated blocks) under `path`, each hard-linked inode
/// counted once. Entries that cannot be read are skipped.
pub(crate) fn disk_usage(path: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![path.to_owned()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
        if meta.is_dir()
            && let Ok(rd) = fs::read_dir(&p)
        {
            stack.extend(rd.flatten().map(|e| e.path()));
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn removes_read_only_trees_without_following_links() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), "x").unwrap();
        let tree = t.path().join("tree");
        fs::create_dir_all(tree.join("a/b")).unwrap();
        fs::write(tree.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/link")).unwrap();
        fs::set_permissions(tree.join("a/b"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::set_permissions(tree.join("a"), fs::Permissions::from_mode(0o000)).unwrap();
        remove_all(&tree).unwrap();
        assert!(!tree.exists());
        assert!(outside.join("keep").exists());
        remove_all(&tree).unwrap();
    }

    #[test]
    fn atomic_write_replaces() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("index.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
    }

    #[test]
    fn locks_exclude_each_other() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("l.lock");
        let a = lock(&p, false, || panic!("shared locks do not wait")).unwrap();
        let b = lock(&p, false, || panic!("shared locks do not wait")).unwrap();
        drop((a, b));
        let held = lock(&p, true, || {}).unwrap();
        let p2 = p.clone();
        let waited = std::thread::spawn(move || {
            let mut waited = false;
            let _l = lock(&p2, true, || waited = true).unwrap();
            waited
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(held);
        assert!(waited.join().unwrap());
    }
}
