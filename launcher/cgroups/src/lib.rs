//! Where a session's cgroup lives and who applies its limits.
//!
//! As root the runtime does it all. An unprivileged user can write only a
//! subtree that root delegated to them:
//! - on cgroup v1, `agentctl setup` creates `/agentctl/<uid>` in every
//!   hierarchy and hands it to the user; agentctl then creates the session's
//!   cgroup there and writes pids, memory and cpu limits itself. It does not
//!   write the devices controller, which only root may do: inside a user
//!   namespace no device node can be created anyway, and the sandbox's /dev
//!   holds only the standard harmless devices;
//! - on cgroup v2, systemd delegates a scope to the user (`systemd-run
//!   --user --scope`), and agentctl creates the session's cgroup inside it.
//!
//! Whatever the mode, after the sandbox's init process exists and before
//! it runs the agent, [`verify`] reads its cgroup membership and limits back
//! from the kernel. A limit that did not take refuses the session.
//!
//! Shared by the native backend (the sandbox's cgroup) and the vm backend
//! (QEMU's): the same modes, the same delegation, the same checks.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sandbox::spec::LimitsPlan;
use serde::{Deserialize, Serialize};

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CGROUP2_MAGIC: i64 = 0x6367_7270;

/// The controllers whose limits the sandbox depends on.
pub const LIMIT_CONTROLLERS: &[&str] = &["pids", "memory", "cpu"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v1 (legacy or hybrid): one mount per controller set.
    V1 { mounts: Vec<V1Mount> },
    /// cgroup v2 only.
    V2,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V1Mount {
    pub path: PathBuf,
    pub controllers: Vec<String>,
}

impl Hierarchy {
    pub fn name(&self) -> &'static str {
        match self {
            Hierarchy::V1 { .. } => "cgroup v1",
            Hierarchy::V2 => "cgroup v2",
        }
    }
}

/// Reads the host's cgroup layout.
pub fn detect() -> io::Result<Hierarchy> {
    let st = nix::sys::statfs::statfs(CGROUP_ROOT).map_err(io::Error::from)?;
    if st.filesystem_type().0 as i64 == CGROUP2_MAGIC {
        return Ok(Hierarchy::V2);
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(Hierarchy::V1 {
        mounts: parse_v1_mounts(&mountinfo),
    })
}

/// The cgroup v1 mounts in a mountinfo text, skipping named hierarchies
/// (`name=systemd`) which hold no controllers.
pub fn parse_v1_mounts(mountinfo: &str) -> Vec<V1Mount> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split_whitespace();
        if r.next() != Some("cgroup") {
            continue;
        }
        let super_opts = r.nth(1).unwrap_or("");
        let controllers: Vec<String> = super_opts
            .split(',')
            .filter(|o| {
                !o.starts_with("name=")
                    && !matches!(
                        *o,
                        "rw" | "ro" | "relatime" | "noatime" | "nosuid" | "nodev" | "noexec"
                    )
                    && !o.contains('=')
                    && *o != "clone_children"
                    && *o != "xattr"
            })
            .map(str::to_string)
            .collect();
        if controllers.is_empty() {
            continue;
        }
        if let Some(mount_point) = left.split_whitespace().nth(4) {
            out.push(V1Mount {
                path: PathBuf::from(mount_point),
                controllers,
            });
        }
    }
    out
}

/// Who creates the session's cgroup and applies its limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum CgroupMode {
    /// The runtime creates `path` and applies the limits (root).
    Runtime { path: String },
    /// agentctl creates `path` in each delegated v1 hierarchy and writes the
    /// limits; the runtime only joins it.
    DelegatedV1 { path: String },
    /// agentctl creates `path` (absolute in the v2 tree) inside a subtree
    /// systemd delegated to the user, and writes the limits.
    DelegatedV2 { path: String },
    /// `--no-limits`: no limits. The runtime is still given a path, which
    /// it may be unable to create.
    Unlimited { path: String },
    /// `--no-limits` for a user with no writable cgroup on v1, where the
    /// runtime would fail to create any cgroup: the helper gives the runtime
    /// a private, empty /sys/fs/cgroup, so its cgroup writes go nowhere.
    Hidden { path: String },
}

impl CgroupMode {
    pub fn path(&self) -> &str {
        match self {
            CgroupMode::Runtime { path }
            | CgroupMode::DelegatedV1 { path }
            | CgroupMode::DelegatedV2 { path }
            | CgroupMode::Unlimited { path }
            | CgroupMode::Hidden { path } => path,
        }
    }

    pub fn runtime_applies_limits(&self) -> bool {
        matches!(self, CgroupMode::Runtime { .. })
    }

    pub fn limited(&self) -> bool {
        !matches!(
            self,
            CgroupMode::Unlimited { .. } | CgroupMode::Hidden { .. }
        )
    }
}

/// The per-user base that `agentctl setup` delegates on cgroup v1.
pub fn v1_delegated_base(uid: u32) -> String {
    format!("/agentctl/{uid}")
}

/// Checks the v1 delegation for `uid`: every hierarchy must have a
/// writable `/agentctl/<uid>`. Returns the hierarchies that lack it.
pub fn v1_missing_delegation(mounts: &[V1Mount], uid: u32) -> Vec<PathBuf> {
    let base = v1_delegated_base(uid);
    mounts
        .iter()
        .map(|m| m.path.join(base.trim_start_matches('/')))
        .filter(|dir| nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_err())
        .collect()
}

/// The v2 cgroup of the current process, as an absolute path in the tree.
pub fn own_v2_cgroup() -> io::Result<String> {
    let text = fs::read_to_string("/proc/self/cgroup")?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
        .ok_or_else(|| io::Error::other("no cgroup v2 entry in /proc/self/cgroup"))
}

/// True when the current process may create cgroups below its own v2
/// cgroup, i.e. systemd (or root) delegated it.
pub fn v2_delegated_here() -> bool {
    let Ok(own) = own_v2_cgroup() else {
        return false;
    };
    let dir = Path::new(CGROUP_ROOT).join(own.trim_start_matches('/'));
    let writable =
        |f: &str| nix::unistd::access(&dir.join(f), nix::unistd::AccessFlags::W_OK).is_ok();
    nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK).is_ok()
        && writable("cgroup.procs")
        && writable("cgroup.subtree_control")
}

/// Creates the session cgroup in every v1 hierarchy and writes the limits.
pub fn create_v1(mounts: &[V1Mount], path: &str, limits: &LimitsPlan) -> io::Result<()> {
    for m in mounts {
        let dir = m.path.join(path.trim_start_matches('/'));
        mkdir(&dir)?;
        if m.controllers.iter().any(|c| c == "cpuset") {
            // A new cpuset starts empty and accepts no task until filled.
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let parent = fs::read_to_string(dir.parent().unwrap_or(&dir).join(f))?;
                write(&dir.join(f), parent.trim())?;
            }
        }
        for c in &m.controllers {
            match c.as_str() {
                "pids" => write(&dir.join("pids.max"), &limits.pids.to_string())?,
                "memory" => {
                    write(
                        &dir.join("memory.limit_in_bytes"),
                        &limits.memory_bytes.to_string(),
                    )?;
                    // Present only with swap accounting; the limit then
                    // covers memory plus swap.
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write(&memsw, &limits.memory_bytes.to_string())?;
                    }
                }
                "cpu" => {
                    write(&dir.join("cpu.cfs_period_us"), "100000")?;
                    write(
                        &dir.join("cpu.cfs_quota_us"),
                        &(u64::from(limits.cpu_millis) * 100).to_string(),
                    )?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Creates the session cgroup under a delegated v2 subtree and writes the
/// limits. `parent` must already have the controllers enabled.
pub fn create_v2(path: &str, limits: &LimitsPlan) -> io::Result<()> {
    let dir = Path::new(CGROUP_ROOT).join(path.trim_start_matches('/'));
    mkdir(&dir)?;
    write(&dir.join("pids.max"), &limits.pids.to_string())?;
    write(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
    let swap = dir.join("memory.swap.max");
    if swap.exists() {
        write(&swap, "0")?;
    }
    write(
        &dir.join("cpu.max"),
        &format!("{} 100000", u64::from(limits.cpu_millis) * 100),
    )?;
    Ok(())
}

/// Moves the calling process into a child of its own v2 cgroup, so that
/// its former cgroup has no processes and may enable controllers for its
/// children ("no internal processes"). Returns the former cgroup.
pub fn v2_prepare_delegated_scope() -> io::Result<String> {
    let own = own_v2_cgroup()?;
    let base = Path::new(CGROUP_ROOT).join(own.trim_start_matches('/'));
    let supervisor = base.join("supervisor");
    mkdir(&supervisor)?;
    write(
        &supervisor.join("cgroup.procs"),
        &std::process::id().to_string(),
    )?;
    let available = fs::read_to_string(base.join("cgroup.controllers"))?;
    let mut enable = String::new();
    for c in LIMIT_CONTROLLERS {
        if !available.split_whitespace().any(|a| a == *c) {
            return Err(io::Error::other(format!(
                "the {c} controller is not delegated to {own}"
            )));
        }
        enable.push_str(&format!("+{c} "));
    }
    write(&base.join("cgroup.subtree_control"), enable.trim())?;
    Ok(own)
}

/// Reads back, from the kernel, that `pid` is in the session's cgroup and
/// the limits hold. Returns what is wrong, if anything.
pub fn verify(
    hierarchy: &Hierarchy,
    path: &str,
    pid: i32,
    limits: &LimitsPlan,
) -> Result<(), String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| format!("cannot read the cgroup of process {pid}: {e}"))?;
    let read = |p: PathBuf| {
        fs::read_to_string(&p)
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let expect = |p: PathBuf, want: &str| -> Result<(), String> {
        let got = read(p.clone())?;
        if got == want {
            Ok(())
        } else {
            Err(format!("{} is {got}, expected {want}", p.display()))
        }
    };
    match hierarchy {
        Hierarchy::V1 { mounts } => {
            for controller in LIMIT_CONTROLLERS {
                let member = text.lines().find_map(|l| {
                    let mut parts = l.splitn(3, ':');
                    let (_, ctrls, p) = (parts.next()?, parts.next()?, parts.next()?);
                    ctrls.split(',').any(|c| c == *controller).then_some(p)
                });
                if member != Some(path) {
                    return Err(format!(
                        "the sandbox is in {controller} cgroup {}, not {path}",
                        member.unwrap_or("(none)")
                    ));
                }
                let mount = mounts
                    .iter()
                    .find(|m| m.controllers.iter().any(|c| c == controller))
                    .ok_or_else(|| format!("the {controller} controller is not mounted"))?;
                let dir = mount.path.join(path.trim_start_matches('/'));
                match *controller {
                    "pids" => expect(dir.join("pids.max"), &limits.pids.to_string())?,
                    "memory" => {
                        let got: u64 = read(dir.join("memory.limit_in_bytes"))?
                            .parse()
                            .map_err(|_| "unreadable memory limit".to_string())?;
                        // The kernel rounds the limit down to whole pages.
                        if got > limits.memory_bytes || limits.memory_bytes - got >= 4096 * 16 {
                            return Err(format!(
                                "memory limit is {got}, expected {}",
                                limits.memory_bytes
                            ));
                        }
                    }
                    "cpu" => expect(
                        dir.join("cpu.cfs_quota_us"),
                        &(u64::from(limits.cpu_millis) * 100).to_string(),
                    )?,
                    _ => {}
                }
            }
        }
        Hierarchy::V2 => {
            let member = text.lines().find_map(|l| l.strip_prefix("0::"));
            if member != Some(path) {
                return Err(format!(
                    "the sandbox is in cgroup {}, not {path}",
                    member.unwrap_or("(none)")
                ));
            }
            let dir = Path::new(CGROUP_ROOT).join(path.trim_start_matches('/'));
            expect(dir.join("pids.max"), &limits.pids.to_string())?;
            let got: u64 = read(dir.join("memory.max"))?
                .parse()
                .map_err(|_| "unreadable memory.max".to_string())?;
            if got > limits.memory_bytes || limits.memory_bytes - got >= 4096 * 16 {
                return Err(format!(
                    "memory.max is {got}, expected {}",
                    limits.memory_bytes
                ));
            }
            let cpu = read(dir.join("cpu.max"))?;
            let want = format!("{} 100000", u64::from(limits.cpu_millis) * 100);
            if cpu != want {
                return Err(format!("cpu.max is {cpu}, expected {want}"));
            }
        }
    }
    Ok(())
}

/// Why a session's limits cannot be applied, and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    pub fix: String,
}

/// Who makes session `id`'s cgroup and applies its limits, for `uid`
/// (`rootless`: not root), or why it cannot be done. `no_limits`: the user
/// asked to go without.
pub fn mode_for(
    id: &str,
    uid: u32,
    rootless: bool,
    no_limits: bool,
) -> Result<CgroupMode, Refusal> {
    let hierarchy = detect().map_err(|e| Refusal {
        reason: format!("cannot read the cgroup layout: {e}"),
        fix: "mount cgroupfs at /sys/fs/cgroup".into(),
    })?;
    let both_fixes = |what: String| Refusal {
        reason: what,
        fix: "run `sudo agentctl setup` once to delegate a cgroup to your user, \
              or pass --no-limits to run without pids, memory and cpu limits"
            .into(),
    };
    if !rootless {
        if !no_limits {
            missing_controllers(&hierarchy).map_err(|m| Refusal {
                reason: format!("the {m} cgroup controller is not available"),
                fix: "enable it in the kernel, or pass --no-limits".into(),
            })?;
        }
        let path = format!("/agentctl/{id}");
        return Ok(if no_limits {
            CgroupMode::Unlimited { path }
        } else {
            CgroupMode::Runtime { path }
        });
    }
    match &hierarchy {
        Hierarchy::V1 { mounts } => {
            let missing = v1_missing_delegation(mounts, uid);
            let path = format!("{}/{id}", v1_delegated_base(uid));
            if missing.is_empty() {
                Ok(if no_limits {
                    CgroupMode::Unlimited { path }
                } else {
                    CgroupMode::DelegatedV1 { path }
                })
            } else if no_limits {
                Ok(CgroupMode::Hidden { path })
            } else {
                Err(both_fixes(format!(
                    "cgroup v1 has no subtree delegated to uid {uid} ({} is missing or not writable)",
                    missing[0].display()
                )))
            }
        }
        Hierarchy::V2 => {
            let own = own_v2_cgroup().unwrap_or_default();
            if no_limits {
                return Ok(CgroupMode::Unlimited {
                    path: format!("{own}/agentctl-{id}"),
                });
            }
            // The helper runs in a scope of its own that systemd delegates
            // to the user; the session's cgroup is made inside it then.
            if systemd_user_manager() {
                Ok(CgroupMode::DelegatedV2 {
                    path: String::new(),
                })
            } else {
                Err(both_fixes(format!(
                    "cgroup v2: your cgroup {own} is not delegated to you, and there is no \
                     systemd user manager to delegate one (`systemd-run --user --scope`)"
                )))
            }
        }
    }
}

/// True when `systemd-run --user` can reach the user's systemd manager.
fn systemd_user_manager() -> bool {
    let bus = std::env::var_os("XDG_RUNTIME_DIR")
        .map(|d| Path::new(&d).join("bus").exists())
        .unwrap_or(false);
    bus && sandbox::find_program("systemd-run").is_some()
}

/// The first limit controller the host lacks, if any.
fn missing_controllers(h: &Hierarchy) -> Result<(), &'static str> {
    match h {
        Hierarchy::V1 { mounts } => {
            for c in LIMIT_CONTROLLERS {
                if !mounts.iter().any(|m| m.controllers.iter().any(|x| x == c)) {
                    return Err(c);
                }
            }
            Ok(())
        }
        Hierarchy::V2 => {
            let avail = fs::read_to_string(Path::new(CGROUP_ROOT).join("cgroup.controllers"))
                .unwrap_or_default();
            for c in LIMIT_CONTROLLERS {
                if !avail.split_whitespace().any(|a| a == *c) {
                    return Err(c);
                }
            }
            Ok(())
        }
    }
}

/// Makes a cgroup in `mode` that the caller fills itself (the vm
/// backend's, for QEMU), with `limits`, and returns its path. Root writes
/// it where the runtime would (`Runtime`); a user where root or systemd
/// delegated (`DelegatedV1`; `DelegatedV2` inside the caller's own scope,
/// named `leaf`, after moving the caller aside). Modes without limits make
/// nothing: None.
pub fn create_for(
    mode: &CgroupMode,
    hierarchy: &Hierarchy,
    limits: &LimitsPlan,
    leaf: &str,
) -> io::Result<Option<String>> {
    match (mode, hierarchy) {
        (
            CgroupMode::Runtime { path } | CgroupMode::DelegatedV1 { path },
            Hierarchy::V1 { mounts },
        ) => {
            create_v1(mounts, path, limits)?;
            Ok(Some(path.clone()))
        }
        (CgroupMode::Runtime { path }, Hierarchy::V2) => {
            // Root: the controllers enabled down to the new cgroup's parent.
            let rel = path.trim_start_matches('/');
            let mut dir = PathBuf::from(CGROUP_ROOT);
            let enable: Vec<String> = LIMIT_CONTROLLERS.iter().map(|c| format!("+{c}")).collect();
            let parts: Vec<&str> = rel.split('/').collect();
            for part in &parts[..parts.len().saturating_sub(1)] {
                write(&dir.join("cgroup.subtree_control"), &enable.join(" "))?;
                dir = dir.join(part);
                mkdir(&dir)?;
            }
            write(&dir.join("cgroup.subtree_control"), &enable.join(" "))?;
            create_v2(path, limits)?;
            Ok(Some(path.clone()))
        }
        (CgroupMode::DelegatedV2 { .. }, Hierarchy::V2) => {
            let scope = v2_prepare_delegated_scope()?;
            let path = format!("{scope}/{leaf}");
            create_v2(&path, limits)?;
            Ok(Some(path))
        }
        (CgroupMode::Unlimited { .. } | CgroupMode::Hidden { .. }, _) => Ok(None),
        (mode, h) => Err(io::Error::other(format!(
            "{mode:?} does not fit this host's {}",
            h.name()
        ))),
    }
}

/// Moves process `pid` (all its threads) into the cgroup at `path`.
pub fn join(hierarchy: &Hierarchy, path: &str, pid: i32) -> io::Result<()> {
    let rel = path.trim_start_matches('/');
    match hierarchy {
        Hierarchy::V1 { mounts } => {
            for m in mounts {
                write(&m.path.join(rel).join("cgroup.procs"), &pid.to_string())?;
            }
        }
        Hierarchy::V2 => write(
            &Path::new(CGROUP_ROOT).join(rel).join("cgroup.procs"),
            &pid.to_string(),
        )?,
    }
    Ok(())
}

/// `program` run in a scope of its own that systemd delegates to the user
/// (cgroup v2 lets a user move processes only within a subtree it was
/// given): how a `DelegatedV2` session's helper is started.
pub fn delegated_scope_command(program: &str) -> std::process::Command {
    let mut c = std::process::Command::new("systemd-run");
    c.args([
        "--user",
        "--scope",
        "--quiet",
        "--collect",
        "-p",
        "Delegate=yes",
        "--",
    ])
    .arg(program);
    c
}

/// Removes the session cgroup wherever it exists. Best effort: it is the
/// fallback when the runtime did not clean up.
pub fn remove(hierarchy: &Hierarchy, path: &str) {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    match hierarchy {
        Hierarchy::V1 { mounts } => {
            for m in mounts {
                let _ = fs::remove_dir(m.path.join(rel));
            }
        }
        Hierarchy::V2 => {
            let _ = fs::remove_dir(Path::new(CGROUP_ROOT).join(rel));
        }
    }
}

/// Removes the session cgroup, waiting briefly for the kernel to finish
/// killing its processes (rmdir answers EBUSY until then). Returns whether
/// every directory is gone.
pub fn remove_waiting(hierarchy: &Hierarchy, path: &str) -> bool {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return true;
    }
    let dirs: Vec<PathBuf> = match hierarchy {
        Hierarchy::V1 { mounts } => mounts.iter().map(|m| m.path.join(rel)).collect(),
        Hierarchy::V2 => vec![Path::new(CGROUP_ROOT).join(rel)],
    };
    for dir in dirs {
        let mut tries = 0;
        loop {
            match fs::remove_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 2000 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_micros(50));
                }
                Err(_) => return false,
            }
        }
    }
    true
}

/// `agentctl setup` on cgroup v1: delegates `/agentctl/<uid>` in every
/// hierarchy to the user. Idempotent.
pub fn setup_v1(mounts: &[V1Mount], uid: u32, gid: u32) -> io::Result<Vec<PathBuf>> {
    let mut made = Vec::new();
    for m in mounts {
        let top = m.path.join("agentctl");
        mkdir(&top)?;
        let dir = top.join(uid.to_string());
        mkdir(&dir)?;
        if m.controllers.iter().any(|c| c == "cpuset") {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let root = fs::read_to_string(m.path.join(f))?;
                for d in [&top, &dir] {
                    let cur = fs::read_to_string(d.join(f)).unwrap_or_default();
                    if cur.trim().is_empty() {
                        write(&d.join(f), root.trim())?;
                    }
                }
            }
        }
        // The user owns the directory and the files that move tasks, so it
        // can create session cgroups below and put its processes in them.
        let chown = |p: &Path| {
            nix::unistd::chown(
                p,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .map_err(io::Error::from)
        };
        chown(&dir)?;
        for f in ["cgroup.procs", "tasks"] {
            let p = dir.join(f);
            if p.exists() {
                chown(&p)?;
            }
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        made.push(dir);
    }
    Ok(made)
}

fn mkdir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    }
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hybrid_mountinfo() {
        let text = "\
30 24 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,xattr,name=systemd
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw shared:15 - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / /sys/fs/cgroup/pids rw shared:16 - cgroup cgroup rw,pids
";
        let mounts = parse_v1_mounts(text);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].path, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(mounts[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(mounts[1].controllers, ["pids"]);
    }
}
