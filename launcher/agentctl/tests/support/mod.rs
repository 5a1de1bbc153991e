//! Shared pieces of the end-to-end tests: locating the binary, running it
//! as root or as an unprivileged user, and the rule for missing parts
//! (skip loudly on a laptop, fail under `CI=true`).

#![allow(dead_code)]

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns false (and says why, loudly) when a test cannot run here. Under
/// CI a missing part is a failure, never a skip.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if ci() {
        panic!("CI=true but this test needs {what}");
    }
    eprintln!("\n*** SKIPPED: this test needs {what} (it would fail under CI=true) ***\n");
    false
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The agentctl binary, copied to a world-readable place so that an
/// unprivileged test user can run it wherever the checkout lives. One copy
/// per build (named by the binary's size and mtime), shared by every test
/// process: a copy per process filled /tmp with hundreds of MB per run.
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let built = PathBuf::from(env!("CARGO_BIN_EXE_agentctl"));
        let meta = std::fs::metadata(&built).unwrap();
        let stamp = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let root = std::env::temp_dir().join("agentctl-test-bin");
        let dir = root.join(format!("{}-{stamp}", meta.len()));
        let copy = dir.join("agentctl");
        if std::fs::metadata(&copy).is_ok_and(|m| m.len() == meta.len()) {
            return copy;
        }
        std::fs::create_dir_all(&dir).unwrap();
        for d in [&root, &dir] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // Older builds' copies go; a process still running one keeps its
        // open file.
        for old in std::fs::read_dir(&root).unwrap().flatten() {
            if old.path() != dir {
                let _ = std::fs::remove_dir_all(old.path());
            }
        }
        // Copied under a private name and renamed, so that concurrent test
        // processes never run a half-written binary.
        let tmp = dir.join(format!(".agentctl-{}", std::process::id()));
        std::fs::copy(&built, &tmp).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &copy).unwrap();
        copy
    })
    .clone()
}

/// Who runs agentctl in a test.
#[derive(Clone, Debug)]
pub enum Runner {
    /// The current user (root in CI).
    Current,
    /// An unprivileged user, switched to from root.
    User { name: String, uid: u32, gid: u32 },
}

impl Runner {
    pub fn uid(&self) -> u32 {
        match self {
            Runner::Current => nix::unistd::getuid().as_raw(),
            Runner::User { uid, .. } => *uid,
        }
    }

    pub fn gid(&self) -> u32 {
        match self {
            Runner::Current => nix::unistd::getgid().as_raw(),
            Runner::User { gid, .. } => *gid,
        }
    }

    /// Hands a test's home tree to this runner: owned by it, the top
    /// directory 0755 (tempdir makes it 0700; root-run parts read it).
    pub fn own_home(&self, home: &Path) {
        chown_tree(home, self.uid(), self.gid());
        std::fs::set_permissions(home, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }

    /// The unprivileged test user, created by .ci/test. Its cgroup
    /// delegation is set up here with `agentctl setup`, which is idempotent.
    pub fn unprivileged() -> Option<Runner> {
        let name = std::env::var("AGENTCTL_TEST_USER").unwrap_or_else(|_| "agentctl-test".into());
        if !require(is_root(), "root, to switch to the unprivileged test user") {
            return None;
        }
        let user = nix::unistd::User::from_name(&name).ok().flatten();
        if !require(
            user.is_some(),
            &format!("the unprivileged user {name} (`useradd -m {name}`; .ci/test creates it)"),
        ) {
            return None;
        }
        let user = user.unwrap();
        let out = Command::new(binary())
            .args(["setup", "--user", &name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "agentctl setup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Runner::User {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }

    /// A command running agentctl as this runner, with a clean environment
    /// whose HOME is `home`.
    pub fn agentctl(&self, home: &Path, cwd: &Path) -> Command {
        let mut cmd = Command::new(binary());
        cmd.env_clear()
            .env("HOME", home)
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C.UTF-8")
            .current_dir(cwd);
        for var in [
            "AGENTCTL_LOG",
            "AGENTCTL_IMAGES",
            "AGENTCTL_VM_KERNEL_DIR",
            "AGENTCTL_VM_ACCEL",
        ] {
            if let Ok(v) = std::env::var(var) {
                cmd.env(var, v);
            }
        }
        match self {
            Runner::Current => {
                cmd.env("USER", whoami());
            }
            Runner::User { name, uid, gid } => {
                // std drops root's supplementary groups when it sets the uid.
                cmd.env("USER", name).uid(*uid).gid(*gid);
            }
        }
        cmd
    }

    /// Where this runner's native sessions keep state.
    pub fn runtime_base(&self) -> PathBuf {
        match self {
            Runner::Current if is_root() => PathBuf::from("/run/agentctl"),
            _ => PathBuf::from(format!("/tmp/agentctl-{}", self.uid())),
        }
    }
}

fn whoami() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".into())
}

/// Whether the vm backend can run here: QEMU, and a guest kernel where
/// AGENTCTL_VM_KERNEL_DIR says (.ci/test unpacks Debian's).
pub fn vm_available() -> bool {
    let qemu = Command::new("sh")
        .args(["-c", "command -v qemu-system-x86_64"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let kernel = std::env::var_os("AGENTCTL_VM_KERNEL_DIR")
        .map(PathBuf::from)
        .is_some_and(|d| d.join("boot").is_dir());
    require(
        qemu && kernel,
        "qemu-system-x86_64 (apt-get install qemu-system-x86) and a guest kernel at AGENTCTL_VM_KERNEL_DIR (.ci/test unpacks one)",
    )
}

/// Processes whose command line holds `needle` (a session id): a VM's
/// QEMU names its session directory.
pub fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) && !cmd.contains("cargo") {
            found.push(format!(
                "{}: {}",
                e.file_name().to_string_lossy(),
                cmd.trim()
            ));
        }
    }
    found
}

/// Runs `cmd`, feeding `stdin`, and returns everything it printed.
pub fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("agentctl starts");
    child.stdin.take().unwrap().write_all(stdin).ok();
    child.wait_with_output().unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The short session id from agentctl's summary line.
pub fn session_id(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find_map(|l| l.split("session ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
}

/// What a finished session may not leave behind: its directories, its
/// cgroups, its mounts.
pub fn leftovers(base: &Path, short_id: &str) -> Vec<String> {
    let mut found = Vec::new();
    for sub in ["sessions", "state", "vm"] {
        if let Ok(entries) = std::fs::read_dir(base.join(sub)) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(short_id) {
                    found.push(e.path().display().to_string());
                }
            }
        }
    }
    let mut stack: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.flatten().map(|e| e.path().join("agentctl")).collect())
        .unwrap_or_default();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            if e.file_name().to_string_lossy().starts_with(short_id) {
                found.push(e.path().display().to_string());
            } else {
                stack.push(e.path());
            }
        }
    }
    if let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") {
        for l in mi.lines().filter(|l| l.contains(short_id)) {
            found.push(format!("mount: {l}"));
        }
    }
    found
}

pub fn chown_tree(root: &Path, uid: u32, gid: u32) {
    let status = Command::new("chown")
        .arg("-R")
        .arg("-h")
        .arg(format!("{uid}:{gid}"))
        .arg(root)
        .status()
        .unwrap();
    assert!(status.success());
}

pub fn os(s: &str) -> OsString {
    OsString::from(s)
}

/// A Docker daemon answers.
pub fn docker_available() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The image the image-based tests run from: AGENTCTL_TEST_IMAGE, or the
/// agent-base image that `images/test.sh` builds. `None` (after a loud
/// skip, or a failure under CI) when it is not on the Docker Engine.
pub fn test_image() -> Option<String> {
    let image = std::env::var("AGENTCTL_TEST_IMAGE")
        .unwrap_or_else(|_| "agentctl/agent-base:latest".into());
    let present = docker_available()
        && Command::new("docker")
            .args(["image", "inspect", &image])
            .output()
            .is_ok_and(|o| o.status.success());
    require(
        present,
        &format!("the image {image} on the Docker Engine (`bash images/test.sh` builds it)"),
    )
    .then_some(image)
}

/// A real registry (Debian's docker-registry) on a free loopback port,
/// stopped when dropped.
pub struct Registry {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Option<Registry> {
        let bin = Path::new("/usr/bin/docker-registry");
        if !require(
            bin.exists(),
            "Debian's docker-registry (`apt-get install docker-registry`)",
        ) {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let mut child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Registry {
                    child,
                    port,
                    _dir: dir,
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("docker-registry did not start on port {port}");
    }

    /// Pushes a local Docker image into this registry; returns its name here.
    pub fn push(&self, image: &str, name: &str) -> String {
        let remote = format!("127.0.0.1:{}/{name}", self.port);
        for args in [vec!["tag", image, &remote], vec!["push", &remote]] {
            let o = Command::new("docker").args(&args).output().unwrap();
            assert!(o.status.success(), "docker {args:?}: {}", text(&o.stderr));
        }
        let _ = Command::new("docker").args(["rmi", &remote]).output();
        remote
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `agentctl … serve --listen 127.0.0.1:0` (`cmd`, with its stderr
/// piped here) and returns it with the address it listens on, read from
/// the line it prints first.
pub fn serve(cmd: &mut Command) -> (std::process::Child, String) {
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stderr.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr = line
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (child, addr)
}

/// The first ```sh block after README's heading `## {heading}`.
pub fn readme_block(readme: &str, heading: &str) -> String {
    let start = readme
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("README has no section {heading:?}"));
    let rest = &readme[start..];
    let open = rest.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let close = rest[open..].find("```").expect("the block's end");
    rest[open..open + close].to_string()
}
