//! QEMU's own root: after the tree is built, the process that becomes
//! QEMU pivots into a fresh tmpfs holding only what QEMU needs (the
//! host's /usr read-only and its top-level links, the dynamic loader's
//! cache, a /proc of QEMU's own PID namespace and the host's /sys, a few
//! device nodes, the session directory and the kernel, at their own
//! paths). A guest that escaped its kernel and
//! then QEMU would still see none of the user's files: the layer
//! Firecracker's jailer adds, for QEMU.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("QEMU's root: {what} {path}: {source}")]
pub struct JailError {
    what: &'static str,
    path: String,
    #[source]
    source: io::Error,
}

fn fail(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> JailError + use<> {
    let path = path.display().to_string();
    move |source| JailError { what, path, source }
}

fn c(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput.into())
}

fn mount(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let src = src.map(c).transpose()?;
    let target = c(target)?;
    let fstype = fstype
        .map(|f| CString::new(f).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput)))
        .transpose()?;
    let data = data
        .map(|d| CString::new(d).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput)))
        .transpose()?;
    // SAFETY: NUL-terminated strings (or null) that outlive the call.
    let r = unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Binds host path `p` at the same path under `jail`, read-only unless
/// `writable`.
fn bind_same(jail: &Path, p: &Path, writable: bool) -> Result<(), JailError> {
    bind_at(jail, p, p, writable)
}

/// Binds host path `p` at path `inside` under `jail`, read-only unless
/// `writable`.
fn bind_at(jail: &Path, p: &Path, inside: &Path, writable: bool) -> Result<(), JailError> {
    let meta = std::fs::metadata(p).map_err(fail("reading", p))?;
    let at = jail.join(inside.strip_prefix("/").unwrap_or(inside));
    if meta.is_dir() {
        std::fs::create_dir_all(&at).map_err(fail("making", &at))?;
    } else {
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent).map_err(fail("making", parent))?;
        }
        std::fs::write(&at, b"").map_err(fail("making", &at))?;
    }
    mount(Some(p), &at, None, libc::MS_BIND | libc::MS_REC, None).map_err(fail("binding", p))?;
    if !writable {
        mount(
            None,
            &at,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            None,
        )
        .map_err(fail("making read-only", p))?;
    }
    Ok(())
}

/// Pivots into QEMU's root at `jail` (an empty directory of the session's
/// own): `writable` paths (the session directory) and `readable` ones
/// (the kernel) keep their paths; `devices` (e.g. /dev/kvm) are bound in;
/// `resolv_conf`, when given, is QEMU's /etc/resolv.conf (read-only).
pub fn enter(
    jail: &Path,
    writable: &[PathBuf],
    readable: &[PathBuf],
    devices: &[&str],
    resolv_conf: Option<&Path>,
) -> Result<(), JailError> {
    mount(
        Some(Path::new("tmpfs")),
        jail,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=755,size=1m"),
    )
    .map_err(fail("mounting a tmpfs on", jail))?;
    bind_same(jail, Path::new("/usr"), false)?;
    // The top-level links of a merged /usr (/bin -> usr/bin...), or the
    // directories themselves where they are not links.
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(top);
        match std::fs::read_link(&host) {
            Ok(target) => std::os::unix::fs::symlink(&target, jail.join(top))
                .map_err(fail("linking", &host))?,
            Err(_) if host.is_dir() => bind_same(jail, &host, false)?,
            Err(_) => {}
        }
    }
    for f in ["/etc/ld.so.cache"] {
        if Path::new(f).exists() {
            bind_same(jail, Path::new(f), false)?;
        }
    }
    if let Some(src) = resolv_conf {
        bind_at(jail, src, Path::new("/etc/resolv.conf"), false)?;
    }
    // QEMU reads its own status and the CPU and memory topology: a /proc
    // of its own PID namespace (it is PID 1 there), which shows no host
    // process, and the host's /sys read-only.
    let proc = jail.join("proc");
    std::fs::create_dir(&proc).map_err(fail("making", &proc))?;
    mount(
        Some(Path::new("proc")),
        &proc,
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
    .map_err(fail("mounting", &proc))?;
    bind_same(jail, Path::new("/sys"), false)?;
    let dev = jail.join("dev");
    std::fs::create_dir(&dev).map_err(fail("making", &dev))?;
    for d in ["/dev/null", "/dev/zero", "/dev/urandom"]
        .iter()
        .chain(devices)
    {
        bind_same(jail, Path::new(d), true)?;
    }
    for p in writable {
        bind_same(jail, p, true)?;
    }
    for p in readable {
        bind_same(jail, p, false)?;
    }
    let old = jail.join(".old");
    std::fs::create_dir(&old).map_err(fail("making", &old))?;
    let (new_c, old_c) = (
        c(jail).map_err(fail("pivoting to", jail))?,
        c(&old).map_err(fail("pivoting to", jail))?,
    );
    // SAFETY: pivot_root with two NUL-terminated paths.
    if unsafe { libc::syscall(libc::SYS_pivot_root, new_c.as_ptr(), old_c.as_ptr()) } < 0 {
        return Err(fail("pivoting to", jail)(io::Error::last_os_error()));
    }
    // SAFETY: chdir and umount2 with static paths.
    unsafe {
        libc::chdir(c"/".as_ptr());
        if libc::umount2(c"/.old".as_ptr(), libc::MNT_DETACH) < 0 {
            return Err(fail("detaching the old root", Path::new("/.old"))(
                io::Error::last_os_error(),
            ));
        }
        libc::rmdir(c"/.old".as_ptr());
    }
    // Nothing more is made here.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )
    .map_err(fail("making read-only", Path::new("/")))?;
    Ok(())
}
