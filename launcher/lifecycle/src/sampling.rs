//! CPU, memory and pids of a session's cgroup, read from cgroupfs the way
//! any process on the host can: the sandbox's init pid leads to its cgroup
//! (`/proc/PID/cgroup`), whose files say what it uses. The same for every
//! backend, cgroup v1 and v2.
//!
//! A pid can be stale (the sandbox ended and the number was reused), and a
//! sandbox without a cgroup of its own sits in its launcher's: a cgroup is
//! sampled only when its path names the session (the native backend's
//! `/agentctl/<id>`) or its container (Docker's `docker-<id>.scope`), or,
//! for a pid the caller holds a live pidfd of, when it is not the
//! caller's own cgroup.

use std::path::{Path, PathBuf};

use store::Sample;

/// Where a cgroup's numbers are, per controller.
#[derive(Debug, Default, PartialEq, Eq)]
struct Files {
    cpu: Option<(PathBuf, CpuUnit)>,
    memory: Option<PathBuf>,
    pids: Option<PathBuf>,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum CpuUnit {
    /// v2 `cpu.stat`, its `usage_usec` line.
    StatUsec,
    /// v1 `cpuacct.usage`, nanoseconds.
    Nanos,
}

/// A cgroup filesystem mounted on the host: v2, or v1 with its
/// controllers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    at: PathBuf,
    v2: bool,
    controllers: Vec<String>,
}

/// The cgroup mounts in a mountinfo text.
fn mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut right = right.split_whitespace();
            let fstype = right.next()?;
            let _source = right.next()?;
            let options = right.next().unwrap_or_default();
            let at = left.split_whitespace().nth(4)?;
            match fstype {
                "cgroup2" => Some(Mount {
                    at: at.into(),
                    v2: true,
                    controllers: Vec::new(),
                }),
                "cgroup" => Some(Mount {
                    at: at.into(),
                    v2: false,
                    controllers: options
                        .split(',')
                        .filter(|o| matches!(*o, "cpuacct" | "memory" | "pids"))
                        .map(str::to_string)
                        .collect(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// Which cgroup is the session's.
pub enum Accept<'a> {
    /// One whose path names one of these (the session id, the container
    /// id).
    Named(&'a [&'a str]),
    /// Any but the caller's own and the root: for a pid known to be the
    /// sandbox's (a live pidfd of it is held).
    NotOurs,
}

/// `controllers` -> path, from a `/proc/PID/cgroup` text.
fn paths(proc_cgroup: &str) -> Vec<(&str, &str)> {
    proc_cgroup
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _ = parts.next()?;
            Some((parts.next()?, parts.next()?))
        })
        .collect()
}

/// Where the numbers of the cgroup in `proc_cgroup` (a `/proc/PID/cgroup`
/// text) are, if `accept` says it is the session's; `own` is the caller's
/// `/proc/self/cgroup`.
fn files(proc_cgroup: &str, own: &str, mounts: &[Mount], accept: &Accept<'_>) -> Files {
    let mut f = Files::default();
    let own = paths(own);
    let accepted = |controllers: &str, path: &str| match accept {
        Accept::Named(marks) => marks.iter().any(|m| !m.is_empty() && path.contains(m)),
        Accept::NotOurs => path != "/" && !own.iter().any(|(c, p)| *c == controllers && *p == path),
    };
    for (controllers, path) in paths(proc_cgroup) {
        if !accepted(controllers, path) {
            continue;
        }
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            // v2: one tree for every controller.
            if let Some(m) = mounts.iter().find(|m| m.v2) {
                let dir = m.at.join(rel);
                f.cpu
                    .get_or_insert((dir.join("cpu.stat"), CpuUnit::StatUsec));
                f.memory.get_or_insert(dir.join("memory.current"));
                f.pids.get_or_insert(dir.join("pids.current"));
            }
            continue;
        }
        for c in controllers.split(',') {
            let Some(m) = mounts
                .iter()
                .find(|m| !m.v2 && m.controllers.iter().any(|x| x == c))
            else {
                continue;
            };
            let dir = m.at.join(rel);
            match c {
                "cpuacct" => f.cpu = Some((dir.join("cpuacct.usage"), CpuUnit::Nanos)),
                "memory" => f.memory = Some(dir.join("memory.usage_in_bytes")),
                "pids" => f.pids = Some(dir.join("pids.current")),
                _ => {}
            }
        }
    }
    f
}

fn number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn cpu_usec((path, unit): &(PathBuf, CpuUnit)) -> Option<u64> {
    match unit {
        CpuUnit::Nanos => number(path).map(|ns| ns / 1000),
        CpuUnit::StatUsec => std::fs::read_to_string(path)
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse().ok()),
    }
}

/// What the cgroup of `pid` uses now, if `accept` says it is the
/// session's and any of its numbers can be read.
pub fn sample(pid: u32, accept: &Accept<'_>, at: i64) -> Option<Sample> {
    let proc_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let f = files(&proc_cgroup, &own, &mounts(&mountinfo), accept);
    let s = Sample {
        at,
        cpu_usec: f.cpu.as_ref().and_then(cpu_usec),
        memory_bytes: f.memory.as_deref().and_then(number),
        pids: f.pids.as_deref().and_then(number),
    };
    (s.cpu_usec.is_some() || s.memory_bytes.is_some() || s.pids.is_some()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
35 25 0:30 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
36 25 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
37 25 0:32 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct
38 25 0:33 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
39 25 0:34 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
40 25 0:35 / /proc rw - proc proc rw";

    #[test]
    fn v1_controllers_each_in_their_hierarchy() {
        let m = mounts(MOUNTINFO);
        let cg = "4:memory:/agentctl/abc\n2:cpuacct:/agentctl/abc\n8:pids:/agentctl/abc\n0::/";
        let f = files(cg, "", &m, &Accept::Named(&["abc"]));
        assert_eq!(
            f.cpu,
            Some((
                "/sys/fs/cgroup/cpuacct/agentctl/abc/cpuacct.usage".into(),
                CpuUnit::Nanos
            ))
        );
        assert_eq!(
            f.memory,
            Some("/sys/fs/cgroup/memory/agentctl/abc/memory.usage_in_bytes".into())
        );
        assert_eq!(
            f.pids,
            Some("/sys/fs/cgroup/pids/agentctl/abc/pids.current".into())
        );
    }

    #[test]
    fn v2_has_one_tree() {
        let m = mounts("30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw");
        let f = files(
            "0::/system.slice/docker-abc123.scope",
            "",
            &m,
            &Accept::Named(&["nope", "abc123"]),
        );
        assert_eq!(
            f.memory,
            Some("/sys/fs/cgroup/system.slice/docker-abc123.scope/memory.current".into())
        );
        assert_eq!(f.cpu.unwrap().1, CpuUnit::StatUsec);
    }

    #[test]
    fn a_cgroup_that_is_not_the_sessions_is_not_sampled() {
        let m = mounts(MOUNTINFO);
        // The launcher's own cgroup (a sandbox without one of its own), or
        // a reused pid somewhere else.
        let cg = "4:memory:/user.slice\n2:cpuacct:/\n0::/user.slice/session-1.scope";
        assert_eq!(
            files(cg, "", &m, &Accept::Named(&["abc"])),
            Files::default()
        );
        assert_eq!(
            files("4:memory:/x", "", &m, &Accept::Named(&[""])),
            Files::default()
        );
        // Held by pidfd: any cgroup but ours and the root.
        assert_eq!(files(cg, cg, &m, &Accept::NotOurs), Files::default());
        let theirs = "4:memory:/docker/f00\n2:cpuacct:/docker/f00";
        let f = files(theirs, cg, &m, &Accept::NotOurs);
        assert!(
            f.memory.is_some() && f.cpu.is_some() && f.pids.is_none(),
            "{f:?}"
        );
    }
}
