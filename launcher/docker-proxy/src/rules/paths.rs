//! Host paths and mounts: which bind sources and mounts a container may
//! have, checked by real path at create and again at every start.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use crate::body::{self, types};
use crate::role::Binds;
use crate::session::SessionScope;
use crate::upstream::UpstreamError;

use super::daemon::Daemon;
use super::decision::*;
use super::labels::*;
use super::owner::*;

/// Whether a path inside a container is under /proc once `.`, `..`, `//`
/// and trailing slashes are read the way the kernel reads them (a relative
/// path as if from `/`).
pub fn under_proc(path: &str) -> bool {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.first() == Some(&"proc")
}

/// The engine sockets no container may get.
pub(super) fn engine_sockets(cx: &Ctx<'_>) -> Vec<PathBuf> {
    let mut v = vec![
        PathBuf::from("/var/run/docker.sock"),
        PathBuf::from("/run/docker.sock"),
        PathBuf::from("/run/containerd/containerd.sock"),
    ];
    if let crate::upstream::Addr::Unix(p) = &cx.cfg.upstream {
        v.push(p.clone());
        if let Ok(c) = p.canonicalize() {
            v.push(c);
        }
    }
    v
}

/// Whether `real`, a canonical path, is one of the proxy's bind roots or
/// under one (by whole components: `/srv/ab` is not under `/srv/a`). No
/// roots: no such restriction.
pub fn within_bind_roots(roots: &[PathBuf], real: &Path) -> bool {
    roots.is_empty() || roots.iter().any(|r| real.starts_with(r))
}

/// The roots, for messages.
fn roots_list(cx: &Ctx<'_>) -> String {
    cx.cfg
        .bind_roots
        .iter()
        .map(|r| r.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why the bind source `src` of a container the daemon already has (as it
/// keeps it) may not be mounted under the bind roots, if it may not: the
/// daemon resolves it again at every start, in its own namespace, and what
/// it finds must still be under a root in the proxy's view. `/dev/null`
/// (to hide a file) is the one source outside them.
fn kept_source_outside_roots(cx: &Ctx<'_>, src: &str) -> Option<String> {
    if src == "/dev/null" {
        return None;
    }
    match Path::new(src).canonicalize() {
        // The daemon would create a missing source (for `Binds`) through
        // whatever its parent resolves to.
        Err(e) => Some(format!(
            "its bind source {src:?} cannot be checked against the proxy's bind roots ({e})"
        )),
        Ok(real) if !within_bind_roots(&cx.cfg.bind_roots, &real) => Some(format!(
            "its bind source {src:?}{} is outside the proxy's bind roots ({})",
            resolved_to(src, &real),
            roots_list(cx)
        )),
        Ok(_) => None,
    }
}

fn resolved_to(src: &str, real: &Path) -> String {
    if Path::new(src) == real {
        String::new()
    } else {
        format!(" (resolved to {:?})", real.display().to_string())
    }
}

/// The bind sources of a container as the daemon keeps it: those of its
/// `HostConfig` and those of its mount points, which also hold the binds
/// it got through `VolumesFrom`.
pub(super) fn bind_sources(c: &Value) -> Vec<String> {
    let mut out: Vec<String> = binds_of(c).into_iter().map(|(src, _, _)| src).collect();
    for m in c
        .get("Mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if m.get("Type").and_then(Value::as_str) == Some("bind")
            && let Some(src) = m.get("Source").and_then(Value::as_str)
        {
            out.push(src.to_string());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// With bind roots, a container of a global role is checked again when it
/// starts or restarts: the daemon resolves its bind sources then, and a
/// directory on the way may have been swapped for a symlink since the
/// create was checked. (A session's containers get `check_binds_at_start`,
/// which holds them to the workspace.)
pub(super) async fn check_bind_roots_at_start(
    cx: &Ctx<'_>,
    up: &mut impl Daemon,
    id: &str,
) -> Result<(), Why> {
    let Some(c) = lookup(cx, up, &["containers", id, "json"]).await? else {
        return not_found("container", id);
    };
    for src in bind_sources(&c) {
        if let Some(why) = kept_source_outside_roots(cx, &src) {
            return deny(format!(
                "container {id} cannot start (role {}): {why}",
                cx.role
            ));
        }
    }
    Ok(())
}

/// `VolumesFrom` of a global role may name only containers whose binds
/// this create could have asked for itself: the new container gets them
/// too (a socket proxy's container lends the engine's socket), so each is
/// judged as a bind of this create, and with bind roots held to them.
pub(super) async fn check_volumes_from(
    cx: &Ctx<'_>,
    up: &mut impl Daemon,
    from: &str,
) -> Result<(), Why> {
    let field = format!("HostConfig.VolumesFrom {from:?}");
    let id = from.split_once(':').map_or(from, |(id, _)| id);
    let Some(c) = lookup(cx, up, &["containers", id, "json"]).await? else {
        return not_found("container", id);
    };
    for src in bind_sources(&c) {
        // /dev/null masks are the one kernel path a bind may name.
        if src != "/dev/null" {
            check_host_path(
                cx,
                &format!("{field}: container {id} lends {src:?}:"),
                &src,
                "/",
                true,
                cx.cfg.role.binds,
                &mut Vec::new(),
            )?;
        }
    }
    if cx.cfg.bind_roots.is_empty() {
        return Ok(());
    }
    for src in bind_sources(&c) {
        if let Some(why) = kept_source_outside_roots(cx, &src) {
            return deny(format!(
                "{field}: container {id} cannot lend its volumes: {why} (role {})",
                cx.role
            ));
        }
    }
    Ok(())
}

/// Checks a host path a container wants bound, and gives back the path the
/// daemon will bind: symlinks resolved, so what was checked is what is
/// bound. Mask mounts for the session's secrets under it go into `masks`.
pub(super) fn check_host_path(
    cx: &Ctx<'_>,
    field: &str,
    src: &str,
    target: &str,
    read_only: bool,
    binds: Binds,
    masks: &mut Vec<types::Mount>,
) -> Result<String, Why> {
    let role = cx.role;
    if binds == Binds::None {
        return deny(format!(
            "{field}: host path {src:?} is not allowed for role {role}"
        ));
    }
    let p = Path::new(src);
    if !p.is_absolute()
        || p.components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return deny(format!(
            "{field}: host path {src:?} must be absolute and without . or .. (role {role})"
        ));
    }
    kernel_filesystems(cx, field, src, p)?;
    let real = match p.canonicalize() {
        Ok(r) => r,
        Err(e) => {
            return deny(format!(
                "{field}: host path {src:?} cannot be checked ({e}); it must exist (role {role})"
            ));
        }
    };
    // Resolved in the proxy's view: a symlink under a root that leads out
    // of it is outside.
    if src != "/dev/null" && !within_bind_roots(&cx.cfg.bind_roots, &real) {
        return deny(format!(
            "{field}: host path {src:?}{} is outside the proxy's bind roots ({}) (role {role})",
            resolved_to(src, &real),
            roots_list(cx)
        ));
    }
    for sock in engine_sockets(cx) {
        if sock.starts_with(&real) {
            return deny(format!(
                "{field}: {src:?} would give the container the engine's socket (role {role})"
            ));
        }
    }
    if let Ok(meta) = std::fs::metadata(&real) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_socket() {
            return deny(format!("{field}: {src:?} is a socket (role {role})"));
        }
    }
    if binds == Binds::Workspace {
        let s = cx.session.expect("workspace binds need a session");
        if !real.starts_with(&s.workspace) {
            return deny(format!(
                "{field}: host path {src:?} is outside the session's workspace {} (role {role})",
                s.workspace.display()
            ));
        }
        // The daemon resolves a bind's source when the container starts,
        // which the agent chooses; a directory inside the workspace can be
        // swapped for a symlink (to `/`) by then. The workspace root
        // cannot: its parent is outside the agent's reach.
        if real != s.workspace {
            return deny(format!(
                "{field}: only the workspace root {ws} may be bound, not {src:?} (role {role}): \
                 the agent could swap a path inside it for a symlink between create and start, \
                 and the daemon would follow it. Bind the workspace and work inside it \
                 (-v {ws}:{ws} -w {ws}/...); no flag allows more",
                ws = s.workspace.display()
            ));
        }
    }
    if let Some(s) = cx.session {
        match workspace_guards(s, &real, target, read_only) {
            Ok(guards) => masks.extend(guards),
            Err(why) => return deny(format!("{field}: {why} (role {role})")),
        }
    }
    Ok(real.display().to_string())
}

/// What a child that binds `source` at `target` must get on top of it: the
/// session's pinned directories under it, bound onto themselves (they
/// cannot be renamed, in the child either), and a mask over every secret
/// the session's sandbox masks there. Parents come first; the daemon sorts
/// by depth anyway.
///
/// A secret or pinned directory that is no longer where the session found
/// it is an error: the masks would land on nothing (and the runtime would
/// create an empty file in its place) while the secret sits elsewhere.
pub fn workspace_guards(
    s: &SessionScope,
    source: &Path,
    target: &str,
    read_only: bool,
) -> Result<Vec<types::Mount>, String> {
    let mut out = Vec::new();
    for dir in sandbox_pins(s, source) {
        let real_dir = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir())
            && std::fs::canonicalize(&dir).ok().as_deref() == Some(dir.as_path());
        if !real_dir {
            return Err(format!(
                "{} leads to a secret the session masks, and is no longer a directory there; start a new session",
                dir.display()
            ));
        }
        let rel = dir.strip_prefix(source).expect("pins lie under the source");
        out.push(types::Mount {
            type_: Some("bind".into()),
            source: Some(dir.display().to_string()),
            target: Some(Path::new(target).join(rel).display().to_string()),
            read_only: Some(read_only),
            ..Default::default()
        });
    }
    // Files the host runs later stay read-only in children, which could
    // otherwise write `.git/config` for the host's git to run.
    for p in &s.read_only {
        let Ok(rel) = p.strip_prefix(source) else {
            continue;
        };
        if !std::fs::symlink_metadata(p).is_ok_and(|m| !m.file_type().is_symlink()) {
            return Err(format!(
                "{} is read-only in the session because the host runs it, and is no longer there; start a new session",
                p.display()
            ));
        }
        out.push(types::Mount {
            type_: Some("bind".into()),
            source: Some(p.display().to_string()),
            target: Some(Path::new(target).join(rel).display().to_string()),
            read_only: Some(true),
            ..Default::default()
        });
    }
    for m in &s.masked {
        let Ok(rel) = m.strip_prefix(source) else {
            continue;
        };
        let tgt = Path::new(target).join(rel).display().to_string();
        // What it is now: a directory is masked by an empty tmpfs, anything
        // else by /dev/null. Pinned parents keep this from changing.
        let dir = match std::fs::symlink_metadata(m) {
            Ok(md) => md.is_dir(),
            Err(_) => {
                return Err(format!(
                    "the secret {} that the session masks is gone from where it was found; start a new session",
                    m.display()
                ));
            }
        };
        out.push(if dir {
            types::Mount {
                type_: Some("tmpfs".into()),
                target: Some(tgt),
                ..Default::default()
            }
        } else {
            types::Mount {
                type_: Some("bind".into()),
                source: Some("/dev/null".into()),
                target: Some(tgt),
                read_only: Some(true),
                ..Default::default()
            }
        });
    }
    Ok(out)
}

/// The directories between `source` and the session's masks and read-only
/// files: the ones the session's sandbox pins.
pub(super) fn sandbox_pins(s: &SessionScope, source: &Path) -> Vec<PathBuf> {
    let paths: Vec<PathBuf> = s.masked.iter().chain(&s.read_only).cloned().collect();
    policy::pins::ancestors_to_pin(source, &paths)
}

/// A bind of a container as the daemon keeps it: (source, target,
/// read-only). Named volumes and tmpfs mounts are not binds.
pub(super) fn binds_of(c: &Value) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for b in c
        .pointer("/HostConfig/Binds")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let parts: Vec<&str> = b.split(':').collect();
        if let [src, dst, rest @ ..] = parts.as_slice()
            && src.starts_with('/')
        {
            let ro = rest
                .first()
                .is_some_and(|o| o.split(',').any(|x| x == "ro"));
            out.push((src.to_string(), dst.to_string(), ro));
        }
    }
    for m in c
        .pointer("/HostConfig/Mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if m.get("Type").and_then(Value::as_str) != Some("bind") {
            continue;
        }
        let get = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        out.push((
            get("Source"),
            get("Target"),
            m.get("ReadOnly").and_then(Value::as_bool) == Some(true),
        ));
    }
    out
}

/// Checked again when a container of the session starts or restarts,
/// because that is when the daemon resolves the paths it binds, and the
/// agent chooses when that is: every bind source must still be the
/// workspace root, one of its pinned directories (a directory, reached
/// through no symlink) or `/dev/null`, and every bind of the workspace must
/// still carry the pins and masks the session's secrets call for now.
pub(super) async fn check_binds_at_start(
    cx: &Ctx<'_>,
    s: &SessionScope,
    up: &mut impl Daemon,
    id: &str,
) -> Result<(), Why> {
    let role = cx.role;
    let Some(c) = lookup(cx, up, &["containers", id, "json"]).await? else {
        return not_found("container", id);
    };
    let binds = binds_of(&c);
    let ws = s.workspace.display().to_string();
    let refuse = |why: String| {
        deny(format!(
            "container {id} cannot start (role {role}): {why}; remove it and create it again"
        ))
    };
    if std::fs::canonicalize(&s.workspace).ok().as_deref() != Some(s.workspace.as_path()) {
        return refuse(format!("the workspace {ws} is no longer where it was"));
    }
    let pins = sandbox_pins(s, &s.workspace);
    if binds
        .iter()
        .any(|(src, _, _)| *src == ws || pins.iter().any(|d| d == Path::new(src)))
        && let Err(why) = workspace_guards(s, &s.workspace, "/", false)
    {
        return refuse(why);
    }
    for (src, _, _) in &binds {
        if let Some(why) = kept_source_outside_roots(cx, src) {
            return refuse(why);
        }
        if src == "/dev/null" || *src == ws {
            continue;
        }
        // Whether each pin is still a real directory is checked with the
        // guards below.
        if !pins.iter().chain(&s.read_only).any(|d| d == Path::new(src)) {
            return refuse(format!(
                "its bind source {src:?} is not the workspace root or one of its pinned or read-only paths"
            ));
        }
    }
    for (_, target, ro) in binds.iter().filter(|(src, _, _)| *src == ws) {
        let guards = match workspace_guards(s, &s.workspace, target, *ro) {
            Ok(g) => g,
            Err(why) => return refuse(why),
        };
        for want in guards {
            let have = match want.type_.as_deref() {
                Some("tmpfs") => c
                    .pointer("/HostConfig/Mounts")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|m| {
                        m.get("Type").and_then(Value::as_str) == Some("tmpfs")
                            && m.get("Target").and_then(Value::as_str) == want.target.as_deref()
                    }),
                _ => binds.iter().any(|(src, dst, ro)| {
                    Some(src.as_str()) == want.source.as_deref()
                        && Some(dst.as_str()) == want.target.as_deref()
                        && Some(*ro) == want.read_only
                }),
            };
            if !have {
                return refuse(format!(
                    "the workspace bound at {target} lacks {} over {} that the session's secrets call for",
                    if want.source.as_deref() == Some("/dev/null")
                        || want.type_.as_deref() == Some("tmpfs")
                    {
                        "the mask"
                    } else {
                        "the pin"
                    },
                    want.target.as_deref().unwrap_or_default()
                ));
            }
        }
    }
    Ok(())
}

/// The host's kernel interfaces, which no container may bind from, by any
/// role: /proc (`/proc/PID/root` is another process's root, read by the
/// daemon in its own namespace, so nothing checked here holds for it), /sys
/// and /dev. Called with each step of a bind source's resolution.
pub(super) const HOST_FILESYSTEM_DIRS: &[&str] = &["proc", "sys", "dev"];

pub(super) fn host_filesystem(field: &str, src: &str, p: &Path, role: &str) -> Result<(), Why> {
    // `components` reads `//proc` and `/proc/` as `/proc`; the steps of a
    // resolution have no `.` or `..`.
    let mut c = p.components();
    if c.next() == Some(Component::RootDir)
        && let Some(Component::Normal(first)) = c.next()
        && let Some(dir) = HOST_FILESYSTEM_DIRS.iter().find(|d| first == **d)
    {
        let via = if Path::new(src) == p {
            String::new()
        } else {
            format!(" (through {})", p.display())
        };
        return deny(format!(
            "{field}: {src:?} is under /{dir}{via}, the host's kernel interface, which is not allowed for role {role}"
        ));
    }
    Ok(())
}

/// Filesystems that are the kernel's interfaces (by their mountinfo type),
/// wherever they are mounted.
pub(super) const KERNEL_FILESYSTEMS: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "mqueue",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "bpf",
    "configfs",
    "efivarfs",
    "pstore",
    "fusectl",
    "binfmt_misc",
];

/// One line of /proc/self/mountinfo: where, and what.
pub(super) struct MountPoint {
    pub(super) point: PathBuf,
    pub(super) fstype: String,
}

pub(super) fn mount_points() -> std::io::Result<Vec<MountPoint>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = fields.get(4)?;
            let sep = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(sep + 1)?;
            Some(MountPoint {
                point: PathBuf::from(unescape_mountinfo(point)),
                fstype: fstype.to_string(),
            })
        })
        .collect())
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
pub(super) fn unescape_mountinfo(s: &str) -> String {
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

/// Every path the kernel passes through when it resolves `p`, one
/// component at a time, symlinks followed: each is a path without symlinks
/// above its last component. Stops (leaving the error to the caller's own
/// resolution) at a component that cannot be read.
pub(super) fn resolution_steps(p: &Path) -> Vec<PathBuf> {
    let mut steps = Vec::new();
    let mut current = PathBuf::from("/");
    let mut todo: Vec<std::ffi::OsString> = p
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            current.pop();
            continue;
        }
        let next = current.join(&name);
        steps.push(next.clone());
        match std::fs::symlink_metadata(&next) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                let Ok(target) = std::fs::read_link(&next) else {
                    break;
                };
                // The kernel's own limit on links in one resolution.
                if links > 40 {
                    break;
                }
                if target.is_absolute() {
                    current = PathBuf::from("/");
                }
                todo.extend(target.components().rev().filter_map(|c| match c {
                    Component::Normal(n) => Some(n.to_os_string()),
                    Component::ParentDir => Some("..".into()),
                    _ => None,
                }));
            }
            Ok(_) => current = next,
            Err(_) => break,
        }
    }
    steps
}

/// The mount a path without symlinks is on: the longest mount point above
/// it, the later of equal ones (mounted over the earlier).
pub(super) fn mount_of<'a>(mounts: &'a [MountPoint], p: &Path) -> Option<&'a MountPoint> {
    mounts
        .iter()
        .filter(|m| p.starts_with(&m.point))
        .max_by_key(|m| m.point.components().count())
}

/// A bind source may not pass through /proc, /sys or /dev, or a kernel
/// filesystem mounted elsewhere, at any step of its resolution (a symlink
/// to /proc, then `/proc/PID/root`, would be followed by the daemon in its
/// own namespace); it may not contain a mount of one; and it may not be or
/// contain an engine socket under another path (a bind mount of /run):
/// sockets and the directories above them are compared by device and
/// inode, not only by path.
pub(super) fn kernel_filesystems(
    cx: &Ctx<'_>,
    field: &str,
    src: &str,
    p: &Path,
) -> Result<(), Why> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let role = cx.role;
    // The one node of /dev a bind may take, to hide a file: it is the null
    // device (1:3), which every container may open anyway.
    if p == Path::new("/dev/null")
        && std::fs::symlink_metadata(p)
            .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0x103)
    {
        return Ok(());
    }
    let mounts = match mount_points() {
        Ok(m) => m,
        Err(e) => {
            return deny(format!(
                "{field}: {src:?} cannot be checked: /proc/self/mountinfo: {e} (role {role})"
            ));
        }
    };
    let steps = resolution_steps(p);
    for step in &steps {
        host_filesystem(field, src, step, role)?;
        if let Some(m) = mount_of(&mounts, step)
            && KERNEL_FILESYSTEMS.contains(&m.fstype.as_str())
        {
            return deny(format!(
                "{field}: {src:?} reaches the host's {} filesystem (mounted at {}), which is not allowed for role {role}",
                m.fstype,
                m.point.display()
            ));
        }
    }
    // Resolved completely: what is under it matters too. (If it was not,
    // the caller's own resolution refuses it.)
    let Ok(real) = p.canonicalize() else {
        return Ok(());
    };
    let real = real.as_path();
    if let Some(m) = mounts
        .iter()
        .find(|m| m.point.starts_with(real) && KERNEL_FILESYSTEMS.contains(&m.fstype.as_str()))
    {
        return deny(format!(
            "{field}: {src:?} contains the host's {} filesystem at {}, which is not allowed for role {role}",
            m.fstype,
            m.point.display()
        ));
    }
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let mut socket_ids = Vec::new();
    for sock in engine_sockets(cx) {
        let sock = sock.canonicalize().unwrap_or(sock);
        socket_ids.extend(sock.ancestors().filter_map(id));
    }
    let under: Vec<&Path> = std::iter::once(real)
        .chain(
            mounts
                .iter()
                .filter(|m| m.point.starts_with(real))
                .map(|m| m.point.as_path()),
        )
        .collect();
    for p in under {
        if let Some(i) = id(p)
            && socket_ids.contains(&i)
        {
            return deny(format!(
                "{field}: {src:?} would give the container the engine's socket (at {}; role {role})",
                p.display()
            ));
        }
    }
    Ok(())
}

pub(super) async fn named_volume(
    cx: &Ctx<'_>,
    up: &mut impl Daemon,
    field: &str,
    name: &str,
) -> Result<(), Why> {
    let Some(s) = cx.session else { return Ok(()) };
    match lookup(cx, up, &["volumes", name]).await? {
        Some(v) if s.owns(v.get("Labels")) => Ok(()),
        Some(_) => deny(format!(
            "{field}: volume {name} is not one of session {}'s (role {})",
            s.id, cx.role
        )),
        None => {
            // The daemon would make it unlabelled; make it the session's first.
            let mut v = types::VolumeCreate {
                name: Some(name.to_string()),
                ..Default::default()
            };
            inject_labels(&mut v.labels, s);
            let target =
                crate::route::build_target(&cx.cfg.api_string(), &["volumes", "create"], &[]);
            let (status, _) = up.call("POST", &target, Some(body::encode(&v))).await?;
            if status != 201 && status != 200 {
                return Err(Why::Fail(UpstreamError::Status {
                    what: target,
                    status,
                }));
            }
            Ok(())
        }
    }
}

pub(super) async fn check_bind_string(
    cx: &Ctx<'_>,
    up: &mut impl Daemon,
    bind: &str,
    binds: Binds,
    masks: &mut Vec<types::Mount>,
) -> Result<String, Why> {
    let field = format!("HostConfig.Binds {bind:?}");
    let parts: Vec<&str> = bind.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [s, d] => (*s, *d, None),
        [s, d, o] => (*s, *d, Some(*o)),
        _ => {
            return deny(format!(
                "{field}: expected SOURCE:TARGET[:OPTIONS] (role {})",
                cx.role
            ));
        }
    };
    if let Some(o) = opts {
        for opt in o.split(',') {
            match opt {
                "ro" | "rw" | "z" | "Z" | "nocopy" | "private" | "rprivate" | "slave"
                | "rslave" | "consistent" | "cached" | "delegated" => {}
                other => {
                    return deny(format!(
                        "{field}: option {other:?} is not allowed for role {}",
                        cx.role
                    ));
                }
            }
        }
    }
    if src.starts_with('/') {
        // A session that may not write its workspace gives its children
        // none to write either.
        let forced_ro = cx.session.is_some_and(|s| !s.workspace_writable);
        let opts: Option<String> = if forced_ro {
            let mut o: Vec<&str> = opts
                .unwrap_or("")
                .split(',')
                .filter(|x| !x.is_empty() && *x != "rw" && *x != "ro")
                .collect();
            o.push("ro");
            Some(o.join(","))
        } else {
            opts.map(str::to_string)
        };
        let read_only = opts
            .as_deref()
            .is_some_and(|o| o.split(',').any(|x| x == "ro"));
        let real = check_host_path(cx, &field, src, dst, read_only, binds, masks)?;
        Ok(match opts {
            Some(o) => format!("{real}:{dst}:{o}"),
            None => format!("{real}:{dst}"),
        })
    } else {
        named_volume(cx, up, &field, src).await?;
        Ok(bind.to_string())
    }
}

pub(super) async fn check_mount(
    cx: &Ctx<'_>,
    up: &mut impl Daemon,
    i: usize,
    m: &mut types::Mount,
    binds: Binds,
    masks: &mut Vec<types::Mount>,
) -> Result<(), Why> {
    let role = cx.role;
    let field = format!("HostConfig.Mounts[{i}]");
    // A volume the mount creates (anonymous, or named and new) gets these.
    if let Some(vo) = &m.volume_options {
        check_labels(cx, &vo.labels, &format!("{field}.VolumeOptions"))?;
    }
    match m.type_.as_deref().unwrap_or("") {
        "bind" => {
            if let Some(b) = &m.bind_options
                && let Some(p) = b.propagation.as_deref()
                && p.contains("shared")
            {
                return deny(format!(
                    "{field}.BindOptions.Propagation {p:?} is not allowed for role {role}"
                ));
            }
            let src = m.source.clone().unwrap_or_default();
            let dst = m.target.clone().unwrap_or_default();
            if cx.session.is_some_and(|s| !s.workspace_writable) {
                m.read_only = Some(true);
            }
            let read_only = m.read_only == Some(true);
            let real = check_host_path(cx, &field, &src, &dst, read_only, binds, masks)?;
            m.source = Some(real);
        }
        "volume" => {
            if let Some(vo) = &m.volume_options
                && let Some(dc) = &vo.driver_config
                && (dc
                    .name
                    .as_deref()
                    .is_some_and(|n| !n.is_empty() && n != "local")
                    || dc.options.as_ref().is_some_and(|o| !o.is_empty()))
            {
                return deny(format!(
                    "{field}.VolumeOptions.DriverConfig is not allowed for role {role} (volume driver options can mount any host path)"
                ));
            }
            if let Some(name) = m.source.clone().filter(|n| !n.is_empty()) {
                named_volume(cx, up, &field, &name).await?;
            }
        }
        "tmpfs" => {}
        other => {
            return deny(format!(
                "{field}.Type {other:?} is not allowed for role {role}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_roots_hold_whole_components() {
        let roots = [PathBuf::from("/srv/a"), PathBuf::from("/var/lib/ws")];
        for inside in ["/srv/a", "/srv/a/b", "/var/lib/ws/x/y"] {
            assert!(within_bind_roots(&roots, Path::new(inside)), "{inside}");
        }
        for outside in ["/srv", "/srv/ab", "/etc", "/", "/var/lib/wsx"] {
            assert!(!within_bind_roots(&roots, Path::new(outside)), "{outside}");
        }
        assert!(
            within_bind_roots(&[], Path::new("/etc")),
            "no roots: no restriction"
        );
    }

    #[test]
    fn bind_sources_include_the_mount_points() {
        let c = serde_json::json!({
            "HostConfig": {
                "Binds": ["/a:/x:ro", "named:/v"],
                "Mounts": [{"Type": "bind", "Source": "/b", "Target": "/y"}]
            },
            "Mounts": [
                {"Type": "bind", "Source": "/a", "Destination": "/x"},
                {"Type": "bind", "Source": "/from-other", "Destination": "/z"},
                {"Type": "volume", "Name": "named", "Source": "/var/lib/docker/volumes/named/_data"}
            ]
        });
        assert_eq!(bind_sources(&c), ["/a", "/b", "/from-other"]);
    }

    #[test]
    fn mountinfo_escapes_are_read_back() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo(r"/x\134y"), r"/x\y");
        assert_eq!(unescape_mountinfo(r"/tail\04"), r"/tail\04");
        let mounts = mount_points().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m.point == Path::new("/proc") && m.fstype == "proc")
        );
    }

    #[test]
    fn resolution_steps_follow_each_link() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        std::os::unix::fs::symlink("/proc", base.join("p")).unwrap();
        std::os::unix::fs::symlink("p/self", base.join("rel")).unwrap();
        let steps = resolution_steps(&base.join("rel/root"));
        assert!(steps.contains(&PathBuf::from("/proc")), "{steps:?}");
        assert!(steps.contains(&PathBuf::from("/proc/self")), "{steps:?}");
        // A loop ends.
        std::os::unix::fs::symlink("loop", base.join("loop")).unwrap();
        assert!(resolution_steps(&base.join("loop")).len() < 50);
    }
}
