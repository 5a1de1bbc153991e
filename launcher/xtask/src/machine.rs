//! What the numbers were measured on.

use std::path::Path;
use std::process::Command;

pub struct Machine {
    pub date: String,
    pub nproc: String,
    pub cpu: String,
    pub memory: String,
    pub kernel: String,
    pub os: String,
    pub cgroups: String,
    pub crun: String,
    pub runc: String,
    pub hyperfine: String,
    /// The daemon's version, API version and storage driver.
    pub docker_engine: String,
    pub docker_cli: String,
    pub tar: String,
    /// `haproxy -v`, the proxy benchmark's reference.
    pub haproxy: String,
    pub rustc: String,
    pub commit: String,
    pub loadavg: String,
}

impl Machine {
    pub fn collect(root: &Path) -> Machine {
        let unknown = || "unknown".to_string();
        let commit = first_line("git", &["-C", &root.to_string_lossy(), "rev-parse", "HEAD"])
            .map(|c| {
                let dirty = Command::new("git")
                    .args(["-C", &root.to_string_lossy(), "status", "--porcelain"])
                    .output()
                    .map(|o| !o.stdout.is_empty())
                    .unwrap_or(false);
                let short = c.get(..12).unwrap_or(&c).to_string();
                if dirty {
                    format!("{short} (with uncommitted changes in the working tree)")
                } else {
                    short
                }
            })
            .unwrap_or_else(unknown);
        Machine {
            date: first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(unknown),
            nproc: first_line("nproc", &[]).unwrap_or_else(unknown),
            cpu: proc_field("/proc/cpuinfo", "model name").unwrap_or_else(unknown),
            memory: proc_field("/proc/meminfo", "MemTotal")
                .and_then(|m| {
                    let kib: f64 = m.split_whitespace().next()?.parse().ok()?;
                    Some(format!("{:.1} GiB", kib / 1024.0 / 1024.0))
                })
                .unwrap_or_else(unknown),
            kernel: first_line("uname", &["-r"]).unwrap_or_else(unknown),
            os: os_release().unwrap_or_else(unknown),
            cgroups: cgroups(),
            crun: first_line("crun", &["--version"]).unwrap_or_else(unknown),
            runc: first_line("runc", &["--version"]).unwrap_or_else(unknown),
            hyperfine: first_line("hyperfine", &["--version"]).unwrap_or_else(unknown),
            docker_engine: first_line(
                "docker",
                &[
                    "info",
                    "--format",
                    "Docker Engine {{.ServerVersion}}, storage driver {{.Driver}}",
                ],
            )
            .map(|engine| {
                let api = first_line("docker", &["version", "--format", "{{.Server.APIVersion}}"]);
                match api {
                    Some(api) => format!("{engine}, API {api}"),
                    None => engine,
                }
            })
            .unwrap_or_else(unknown),
            docker_cli: first_line("docker", &["version", "--format", "{{.Client.Version}}"])
                .map(|v| format!("docker {v}"))
                .unwrap_or_else(unknown),
            tar: first_line("tar", &["--version"]).unwrap_or_else(unknown),
            haproxy: crate::proxy::haproxy_version(),
            rustc: first_line("rustc", &["--version"]).unwrap_or_else(unknown),
            commit,
            loadavg: loadavg(),
        }
    }
}

/// The first line a command prints, trimmed.
pub fn first_line(prog: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(prog).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_string())
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// The filesystem type of `path`: findmnt's name (ext4), else `stat -f`'s.
pub fn fs_type(path: &Path) -> String {
    let p = path.to_string_lossy();
    first_line("findmnt", &["-n", "-o", "FSTYPE", "--target", &p])
        .or_else(|| first_line("stat", &["-f", "-c", "%T", &p]))
        .unwrap_or_else(|| "unknown".into())
}

/// Whether `path` is on an ext4 file system without a journal.
pub fn ext4_without_journal(path: &Path) -> bool {
    let p = path.to_string_lossy();
    let Some(source) = first_line("findmnt", &["-n", "-o", "FSTYPE,SOURCE", "--target", &p]) else {
        return false;
    };
    let mut words = source.split_whitespace();
    let (Some("ext4"), Some(dev)) = (words.next(), words.next()) else {
        return false;
    };
    let dev = dev.rsplit('/').next().unwrap_or(dev);
    std::fs::read_to_string(format!("/sys/fs/ext4/{dev}/journal_task"))
        .map(|t| t.trim() == "<none>")
        .unwrap_or(false)
}

fn proc_field(file: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

fn os_release() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    let pretty = text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    let pretty = pretty.trim_matches('"').to_string();
    match std::fs::read_to_string("/etc/debian_version") {
        Ok(v) => Some(format!("{pretty}, Debian {}", v.trim())),
        Err(_) => Some(pretty),
    }
}

fn cgroups() -> String {
    let root = Path::new("/sys/fs/cgroup");
    if fs_type(root) == "cgroup2" {
        return "v2 (unified)".into();
    }
    let hybrid = Command::new("mountpoint")
        .args(["-q", "/sys/fs/cgroup/unified"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if hybrid {
        "hybrid (v1 controllers, cgroup2 at /sys/fs/cgroup/unified)".into()
    } else {
        "v1".into()
    }
}
