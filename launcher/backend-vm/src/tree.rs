//! Builds the sandbox's tree on the host, in the private mount namespace
//! of the process that becomes QEMU: a fresh tmpfs as its root, the plan's
//! binds (read-only all the way down unless writable), its tmpfs mounts,
//! then the masks, and finally the root itself made read-only. QEMU
//! exports the result; whatever the guest does, a write to a read-only
//! part fails in the host's kernel.
//!
//! The workspace is the agent's (another session's agent may be changing
//! it right now), so nothing here follows a symlink: every path is opened
//! with `openat2` and `RESOLVE_NO_SYMLINKS`, inside the tree with
//! `RESOLVE_IN_ROOT` as well, and mounts are made on the descriptors so
//! opened (`open_tree`, `mount_setattr`, `move_mount`), never on a path
//! looked up a second time. A path that became a symlink since planning
//! refuses the session.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use crate::plan::TreeOp;

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_IN_ROOT: u64 = 0x10;
const OPEN_TREE_CLONE: u32 = 1;
const AT_RECURSIVE: u32 = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x04;
const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct TreeError {
    what: &'static str,
    path: String,
    #[source]
    source: io::Error,
}

fn err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> TreeError + use<> {
    let path = path.display().to_string();
    move |source| TreeError { what, path, source }
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput.into())
}

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `openat2` with `resolve` flags, as an O_PATH descriptor.
fn open_path(dir: RawFd, path: &Path, resolve: u64, extra: i32) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC | extra) as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: a NUL-terminated path and an open_how of the size given.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })?;
    // SAFETY: a descriptor just made, owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A path of the tree, relative to its root, with no `..`.
fn relative(path: &Path) -> io::Result<&Path> {
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a path with `..`",
        ));
    }
    Ok(path.strip_prefix("/").unwrap_or(path))
}

/// Opens `path` inside the tree, following no symlink.
fn open_in(root: &OwnedFd, path: &Path) -> io::Result<OwnedFd> {
    let rel = relative(path)?;
    open_path(
        root.as_raw_fd(),
        if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        },
        RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        0,
    )
}

/// Makes `path`'s missing directories (and the last component: a
/// directory, or an empty file when `file`) one by one, following no
/// symlink.
fn make_path(root: &OwnedFd, path: &Path, file: bool) -> io::Result<()> {
    let rel = relative(path)?;
    let parts: Vec<&std::ffi::OsStr> = rel.iter().collect();
    let mut dir = root.try_clone()?;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let name = cpath(Path::new(part))?;
        match open_path(
            dir.as_raw_fd(),
            Path::new(part),
            RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
            0,
        ) {
            Ok(fd) => {
                dir = fd;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if last && file {
            // An O_PATH descriptor cannot create: reopened as a directory.
            let dfd = reopen_dir(&dir)?;
            // SAFETY: a valid directory descriptor and NUL-terminated name.
            let fd = check(unsafe {
                libc::openat(
                    dfd.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_WRONLY
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o644,
                )
            } as libc::c_long);
            match fd {
                // SAFETY: a descriptor just made.
                Ok(fd) => drop(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            return Ok(());
        }
        let dfd = reopen_dir(&dir)?;
        // SAFETY: a valid directory descriptor and NUL-terminated name.
        match check(unsafe { libc::mkdirat(dfd.as_raw_fd(), name.as_ptr(), 0o755) } as libc::c_long)
        {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        dir = open_path(
            dir.as_raw_fd(),
            Path::new(part),
            RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
            0,
        )?;
    }
    Ok(())
}

/// An O_PATH directory descriptor reopened for `*at` calls that create.
fn reopen_dir(dir: &OwnedFd) -> io::Result<OwnedFd> {
    let c = CString::new(format!("/proc/self/fd/{}", dir.as_raw_fd()))
        .map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: a NUL-terminated path.
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    } as libc::c_long)?;
    // SAFETY: a descriptor just made.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A detached copy of the mount tree at `source` (opened without
/// following symlinks), with `attrs` set all the way down.
fn clone_tree(source: &OwnedFd, attrs: u64) -> io::Result<OwnedFd> {
    // SAFETY: open_tree on a descriptor with AT_EMPTY_PATH and an empty path.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            source.as_raw_fd(),
            c"".as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | AT_RECURSIVE | libc::AT_EMPTY_PATH as u32,
        )
    })?;
    // SAFETY: a descriptor just made.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    set_attrs(&tree, attrs, true)?;
    Ok(tree)
}

fn set_attrs(fd: &OwnedFd, attrs: u64, recursive: bool) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = libc::AT_EMPTY_PATH as u32 | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: mount_setattr on a descriptor, with a mount_attr of the size given.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

fn move_onto(tree: &OwnedFd, dest: &OwnedFd) -> io::Result<()> {
    // SAFETY: move_mount between two descriptors with empty paths.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            dest.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
    .map(drop)
}

fn mount_tmpfs(dest: &OwnedFd, mode: u32, size: Option<u64>) -> io::Result<()> {
    let target = CString::new(format!("/proc/self/fd/{}", dest.as_raw_fd()))
        .map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut data = format!("mode={mode:o}");
    if let Some(s) = size {
        data.push_str(&format!(",size={s}"));
    }
    let data = CString::new(data).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: NUL-terminated strings; the target is the descriptor's own
    // magic link, so the mount lands on what was opened.
    check(unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    } as libc::c_long)
    .map(drop)
}

/// Builds the tree at `root` (an empty directory of the session's own).
/// `scratch` holds the empty file and directory that masks are made of.
pub fn build(
    root: &Path,
    scratch: &Path,
    ops: &[TreeOp],
    image: Option<&Path>,
) -> Result<(), TreeError> {
    let root_c = cpath(root).map_err(err("the tree's root", root))?;
    let tmpfs_on = |at: &CString, what: &Path| -> Result<(), TreeError> {
        // SAFETY: NUL-terminated strings.
        check(unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                at.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"mode=755,size=16m".as_ptr().cast(),
            )
        } as libc::c_long)
        .map(drop)
        .map_err(err("mounting a tmpfs on", what))
    };
    match image {
        None => tmpfs_on(&root_c, root)?,
        Some(lower) => {
            // The image's root under an overlay whose upper layer is a
            // tmpfs of this namespace: mount points are made there, the
            // cache is never written, and it all goes with the namespace.
            let layer = scratch.join("overlay");
            let layer_c = cpath(&layer).map_err(err("the overlay", &layer))?;
            tmpfs_on(&layer_c, &layer)?;
            for d in ["upper", "work"] {
                std::fs::create_dir(layer.join(d)).map_err(err("making", &layer.join(d)))?;
            }
            let data = CString::new(format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                layer.join("upper").display(),
                layer.join("work").display()
            ))
            .map_err(|_| err("the overlay of", lower)(io::ErrorKind::InvalidInput.into()))?;
            // SAFETY: NUL-terminated strings.
            check(unsafe {
                libc::mount(
                    c"overlay".as_ptr(),
                    root_c.as_ptr(),
                    c"overlay".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    data.as_ptr().cast(),
                )
            } as libc::c_long)
            .map_err(err("mounting the image's overlay on", root))?;
        }
    }
    // The session's own directories are agentctl's, not the agent's: they
    // are opened as they are.
    let root_fd =
        open_path(libc::AT_FDCWD, root, 0, libc::O_DIRECTORY).map_err(err("opening", root))?;
    let empty_file = scratch.join("empty");
    let empty_dir = scratch.join("empty.d");
    let mut read_only_tmpfs = Vec::new();
    for op in ops {
        match op {
            TreeOp::Dir { path } => {
                make_path(&root_fd, path, false).map_err(err("making", path))?
            }
            TreeOp::Symlink { path, target } => {
                if let Some(parent) = path.parent() {
                    make_path(&root_fd, parent, false).map_err(err("making", parent))?;
                }
                let parent = open_in(&root_fd, path.parent().unwrap_or(Path::new("/")))
                    .and_then(|d| reopen_dir(&d))
                    .map_err(err("opening the parent of", path))?;
                let name = path.file_name().map(Path::new).unwrap_or(path);
                let (t, n) = (
                    cpath(target).map_err(err("the link", path))?,
                    cpath(name).map_err(err("the link", path))?,
                );
                // SAFETY: NUL-terminated strings and a directory descriptor.
                check(
                    unsafe { libc::symlinkat(t.as_ptr(), parent.as_raw_fd(), n.as_ptr()) }
                        as libc::c_long,
                )
                .map_err(err("linking", path))?;
            }
            TreeOp::Bind {
                source,
                path,
                file,
                writable,
                follow,
                over_link,
            } => {
                // In the agent's reach (the workspace), a symlink is never
                // followed; elsewhere (a dotfile manager's ~/.gitconfig) it
                // is, as the container runtimes do.
                let resolve = if *follow {
                    RESOLVE_NO_MAGICLINKS
                } else {
                    RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
                };
                let src = open_path(libc::AT_FDCWD, source, resolve, 0)
                    .map_err(err("opening the host path", source))?;
                let mut attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
                if !writable {
                    attrs |= MOUNT_ATTR_RDONLY;
                }
                let tree = clone_tree(&src, attrs).map_err(err("binding", source))?;
                // Over a link: the link itself (O_PATH | O_NOFOLLOW with
                // RESOLVE_NO_SYMLINKS opens it, not what it names); a
                // mount over it is what the guest's lookups then find.
                let existing = if *over_link {
                    match open_path(
                        root_fd.as_raw_fd(),
                        relative(path).map_err(err("opening the mount point", path))?,
                        RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
                        libc::O_NOFOLLOW,
                    ) {
                        Ok(fd) => Some(fd),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                        Err(e) => return Err(err("opening the mount point", path)(e)),
                    }
                } else {
                    None
                };
                let dest = match existing {
                    Some(fd) => fd,
                    None => {
                        make_path(&root_fd, path, *file)
                            .map_err(err("making the mount point", path))?;
                        open_in(&root_fd, path).map_err(err("opening the mount point", path))?
                    }
                };
                move_onto(&tree, &dest).map_err(err("mounting on", path))?;
            }
            TreeOp::Tmpfs {
                path,
                size,
                mode,
                writable,
            } => {
                make_path(&root_fd, path, false).map_err(err("making", path))?;
                let dest = open_in(&root_fd, path).map_err(err("opening the mount point", path))?;
                mount_tmpfs(&dest, *mode, *size).map_err(err("mounting a tmpfs on", path))?;
                if !writable {
                    read_only_tmpfs.push(path.clone());
                }
            }
            TreeOp::Mask { path, dir } => {
                // Gone since planning is not "nothing to hide": the secret
                // may live on under another name the scan never saw
                // (`mv .env notes.txt`). Refused, as a symlink there is.
                let dest = match open_in(&root_fd, path) {
                    Ok(d) => d,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(TreeError {
                            what: "the secret",
                            path: format!(
                                "{} was to be masked but is gone from the sandbox (moved or removed since the scan); start the session again",
                                path.display()
                            ),
                            source: e,
                        });
                    }
                    Err(e) => return Err(err("cannot mask (a symlink there now?)", path)(e)),
                };
                let source = if *dir { &empty_dir } else { &empty_file };
                let src =
                    open_path(libc::AT_FDCWD, source, 0, 0).map_err(err("opening", source))?;
                let tree = clone_tree(
                    &src,
                    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
                )
                .map_err(err("making the mask of", path))?;
                move_onto(&tree, &dest).map_err(err("masking", path))?;
            }
        }
    }
    for path in read_only_tmpfs {
        let fd = open_in(&root_fd, &path).map_err(err("opening", &path))?;
        set_attrs(&fd, MOUNT_ATTR_RDONLY, false).map_err(err("making read-only", &path))?;
    }
    // The root last: nothing can be created at the top of the tree.
    let fd = open_path(libc::AT_FDCWD, root, 0, libc::O_DIRECTORY).map_err(err("opening", root))?;
    set_attrs(&fd, MOUNT_ATTR_RDONLY, false).map_err(err("making read-only", root))?;
    Ok(())
}
