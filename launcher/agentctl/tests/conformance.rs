//! The sandbox conformance suite, run through the real agentctl binary.
//!
//! It plants a fake home full of credentials and a workspace full of traps,
//! runs `probe.sh` inside `agentctl run`, and checks from the outside what
//! the probe could see and do. Nothing here knows how a backend works: a
//! backend passes when the probe's observations are right, so every backend
//! runs this suite unchanged.

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Runner, chown_tree, leftovers, require, run, session_id, text};

const PROBE: &str = include_str!("conformance/probe.sh");
const SECCOMP32: &str = include_str!("conformance/seccomp32.py");

/// A backend under test, as `agentctl run --backend` names it, with the
/// arguments that choose its root filesystem (`--image ...`).
#[derive(Clone, Debug)]
struct Backend(&'static str, Vec<String>);

impl Backend {
    fn host(name: &'static str) -> Backend {
        Backend(name, Vec::new())
    }

    fn image(name: &'static str, image: &str) -> Backend {
        Backend(name, vec!["--image".into(), image.into()])
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    home: PathBuf,
    ws: PathBuf,
    ro: PathBuf,
    profile: PathBuf,
}

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn fixture(runner: &Runner, pids: u32) -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("agentctl-conformance-")
        .tempdir()
        .unwrap();
    let root = dir.path().to_path_buf();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    let home = root.join("home");
    let ws = root.join("ws");
    let ro = root.join("ro");

    for (p, c) in [
        (".ssh/id_rsa", "SECRET-ssh-key"),
        (".ssh/id_rsa.pub", "ssh-rsa PUBLIC"),
        (".aws/credentials", "SECRET-aws"),
        (".gnupg/private-keys-v1.d/key", "SECRET-gpg"),
        (".kube/config", "SECRET-kube"),
        (".docker/config.json", "SECRET-docker"),
        (".config/gcloud/creds.json", "SECRET-gcloud"),
        (".netrc", "SECRET-netrc"),
        (".pgpass", "SECRET-pgpass"),
        (".bash_history", "SECRET-history"),
        (".password-store/x.gpg", "SECRET-pass"),
        (
            ".gitconfig",
            "[user]\n\tname = Probe\n\temail = probe@example.com\n",
        ),
    ] {
        write(&home.join(p), c);
    }
    for (p, c) in [
        ("README.md", "hello"),
        (".env", "SECRET-env"),
        (".env.local", "SECRET-env-local"),
        ("sub/deeper/.env.production", "SECRET-env-prod"),
        (".envrc", "SECRET-envrc"),
        (".env.example", "PUBLIC-EXAMPLE"),
        ("id_rsa", "SECRET-ws-key"),
        ("id_rsa.pub", "PUBLIC-KEY"),
        ("keys/id_ed25519", "SECRET-ed25519"),
        ("server.key", "SECRET-server-key"),
        ("cert.pem", "SECRET-pem"),
        (".npmrc", "SECRET-npmrc"),
        (".netrc", "SECRET-ws-netrc"),
        (".pypirc", "SECRET-pypirc"),
        (".git-credentials", "SECRET-git-creds"),
        ("gcp/credentials.json", "SECRET-gcp"),
        ("prod.tfvars", "SECRET-tfvars"),
        ("custom.secret", "SECRET-custom"),
        ("private-dir/inside.txt", "SECRET-private-dir"),
        ("ignored/.env", "SECRET-ignored"),
        (".gitignore", "ignored/\n.env.local\n"),
        ("not-executable.sh", "#!/bin/sh\necho no\n"),
        ("probe.sh", PROBE),
        ("seccomp32.py", SECCOMP32),
    ] {
        write(&ws.join(p), c);
    }
    write(&ro.join("file.txt"), "RO-CONTENT");
    fs::hard_link(ws.join(".env"), ws.join("hardlink-to-env")).unwrap();
    fs::hard_link(home.join(".ssh/id_rsa"), ws.join("hardlink-to-ssh-key")).unwrap();
    fs::hard_link(home.join(".aws/credentials"), ws.join("hardlink-to-aws")).unwrap();
    symlink(".env", ws.join("symlink-to-env")).unwrap();
    symlink(home.join(".ssh/id_rsa"), ws.join("symlink-to-ssh-key")).unwrap();
    symlink("../home/.aws/credentials", ws.join("symlink-to-aws")).unwrap();
    symlink("/etc/shadow", ws.join("symlink-to-shadow")).unwrap();

    if Command::new("git").arg("--version").output().is_ok() {
        let git = |args: &[&str]| {
            let ok = Command::new("git")
                .args(args)
                .current_dir(&ws)
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@t")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@t")
                .env("HOME", &home)
                .output()
                .unwrap();
            assert!(ok.status.success(), "git {args:?}: {}", text(&ok.stderr));
        };
        git(&["init", "-q"]);
        git(&["add", "README.md", ".gitignore"]);
        git(&["commit", "-q", "-m", "initial"]);
    }

    let profile = root.join("test-profile.yaml");
    write(
        &profile,
        &format!(
            "extends: generic\nsecrets:\n  deny: [\"*.secret\", \"private-dir/\"]\nmounts:\n  - path: {}\nlimits:\n  pids: {pids}\n",
            ro.display()
        ),
    );
    if let Runner::User { uid, gid, .. } = runner {
        chown_tree(&root, *uid, *gid);
    }
    Fixture {
        _dir: dir,
        home,
        ws,
        ro,
        profile,
    }
}

struct Session {
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

fn agentctl_run(
    runner: &Runner,
    fx: &Fixture,
    backend: &Backend,
    extra: &[&str],
    cmd: &[&str],
    stdin: &[u8],
) -> Session {
    let mut c = runner.agentctl(&fx.home, &fx.ws);
    c.args(["run", "--backend", backend.0, "--profile"])
        .arg(&fx.profile)
        .args(&backend.1)
        .args(extra)
        .arg("--")
        .args(cmd);
    let out = run(c, stdin);
    Session {
        stdout: text(&out.stdout),
        stderr: text(&out.stderr),
        code: out.status.code(),
    }
}

fn assert_clean(runner: &Runner, s: &Session, failures: &mut Vec<String>) {
    let Some(id) = session_id(&s.stderr) else {
        failures.push(format!("no session id in stderr: {}", s.stderr));
        return;
    };
    // The helper hands back the exit code before it takes the sandbox
    // apart, so give the cleanup a moment to finish.
    let deadline = Instant::now() + Duration::from_secs(3);
    let all = |id: &str| {
        let mut l = leftovers(&runner.runtime_base(), id);
        l.extend(support::processes_with(id));
        l
    };
    let mut left = all(&id);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        left = all(&id);
    }
    if !left.is_empty() {
        failures.push(format!("session {id} left behind: {left:?}"));
    }
}

/// The whole suite for one backend and one identity. Collects every
/// failure, so one run shows all that is wrong.
fn conformance(backend: Backend, runner: Runner) {
    let backend = &backend;
    let fx = fixture(&runner, 256);
    let mut failures: Vec<String> = Vec::new();
    let probe = probe_command(&fx);
    let probe: Vec<&str> = probe.iter().map(String::as_str).collect();
    let s = agentctl_run(&runner, &fx, backend, &[], &probe, b"");
    failures.extend(probe_checks(
        &s.stdout, s.code, &s.stderr, &runner, &fx, "agent",
    ));
    let out = &s.stdout;
    assert_clean(&runner, &s, &mut failures);

    exec_pass(backend, &runner, &fx, &mut failures);
    exit_codes(backend, &runner, &fx, &mut failures);
    stdin_passes(backend, &runner, &fx, &mut failures);
    signals(backend, &runner, &fx, &mut failures);
    fork_bomb(backend, &runner, &mut failures);
    if backend.0 == "docker" {
        let left = docker_leftovers(&fx.profile);
        if !left.is_empty() {
            failures.push(format!("containers left behind: {left:?}"));
        }
    }

    assert!(
        failures.is_empty(),
        "{} conformance failures for backend {} as {runner:?}:\n- {}\n\nprobe output:\n{out}\nstderr:\n{}",
        failures.len(),
        backend.0,
        failures.join("\n- "),
        s.stderr
    );
}

/// `sh probe.sh WS HOME RO`.
fn probe_command(fx: &Fixture) -> Vec<String> {
    vec![
        "sh".into(),
        fx.ws.join("probe.sh").to_string_lossy().into_owned(),
        fx.ws.to_string_lossy().into_owned(),
        fx.home.to_string_lossy().into_owned(),
        fx.ro.to_string_lossy().into_owned(),
    ]
}

/// The exec pass: everything checked for the agent, checked again for a
/// process `agentctl exec` starts in a running session (filter,
/// capabilities, no_new_privs, masks, descriptors, keyring), and the
/// session's pids limit holds for it too.
fn exec_pass(backend: &Backend, runner: &Runner, fx: &Fixture, failures: &mut Vec<String>) {
    let mut c = runner.agentctl(&fx.home, &fx.ws);
    c.args(["run", "-d", "-q", "--backend", backend.0, "--profile"])
        .arg(&fx.profile)
        .args(&backend.1)
        .args(["--", "sleep", "300"]);
    let started = run(c, b"");
    let id = text(&started.stdout).trim().to_string();
    if !started.status.success() || id.is_empty() {
        failures.push(format!(
            "exec pass: the session did not start: {}",
            text(&started.stderr)
        ));
        return;
    }
    let exec = |cmd: &[&str]| {
        let mut c = runner.agentctl(&fx.home, &fx.ws);
        c.args(["exec", &id, "--"]).args(cmd);
        run(c, b"")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !exec(&["true"]).status.success() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let probe = probe_command(fx);
    let probe: Vec<&str> = probe.iter().map(String::as_str).collect();
    let o = exec(&probe);
    let found = probe_checks(
        &text(&o.stdout),
        o.status.code(),
        &text(&o.stderr),
        runner,
        fx,
        "exec",
    );
    if !found.is_empty() {
        failures.extend(found);
        failures.push(format!("exec probe output:\n{}", text(&o.stdout)));
    }
    let o = exec(&["python3", "-c", FORK_BOMB]);
    let out = text(&o.stdout);
    let forked: Option<u32> = out.split_whitespace().nth(1).and_then(|n| n.parse().ok());
    match forked {
        Some(n) if n < 256 && out.contains("errno 11") => {}
        _ => failures.push(format!(
            "exec: the session's pids limit (256) did not stop a fork bomb: {out:?} {}",
            text(&o.stderr)
        )),
    }
    for args in [
        vec!["stop", "-t", "2", id.as_str()],
        vec!["rm", id.as_str()],
    ] {
        let mut c = runner.agentctl(&fx.home, &fx.ws);
        c.args(&args);
        let o = run(c, b"");
        if !o.status.success() {
            failures.push(format!("exec pass: {args:?}: {}", text(&o.stderr)));
        }
    }
}

/// What the probe reported, judged: the same rules for the agent and for a
/// process `agentctl exec` started in its session (`who` says which).
fn probe_checks(
    out: &str,
    code: Option<i32>,
    stderr: &str,
    runner: &Runner,
    fx: &Fixture,
    who: &str,
) -> Vec<String> {
    let mut failures: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            failures.push(format!("{who}: {what}"));
        }
    };
    let has = |line: &str| out.lines().any(|l| l == line);
    check(
        code == Some(0) && has("probe-done"),
        format!("probe did not finish (exit {:?}):\n{out}\n{}", code, stderr),
    );
    for line in out.lines().filter(|l| l.contains("SECRET-")) {
        check(false, format!("a secret is visible inside: {line}"));
    }
    check(has("grep []"), "grep found secrets inside".into());
    check(
        has("public-example [PUBLIC-EXAMPLE]"),
        ".env.example must stay readable".into(),
    );
    check(
        has("public-key [PUBLIC-KEY]"),
        "public keys must stay readable".into(),
    );
    check(
        out.contains("gitconfig [[user]"),
        "~/.gitconfig must be granted".into(),
    );
    check(
        has("readme [hello]"),
        "workspace files must be readable".into(),
    );
    check(!has("rm-env 0"), "a masked secret could be removed".into());
    check(!has("mv-key 0"), "a masked secret could be renamed".into());
    check(
        fs::read_to_string(fx.ws.join(".env")).unwrap() == "SECRET-env",
        "the host's .env changed".into(),
    );
    check(
        fs::read_to_string(fx.home.join(".ssh/id_rsa")).unwrap() == "SECRET-ssh-key",
        "the host's ssh key changed".into(),
    );
    check(
        has("ws-write 0") && has("ws-mkdir 0"),
        "the workspace must be writable".into(),
    );
    match fs::metadata(fx.ws.join("created-inside.txt")) {
        Ok(m) => check(
            m.uid() == runner.uid() && m.gid() == runner.gid(),
            format!(
                "files created inside belong to {}:{}, expected {}:{}",
                m.uid(),
                m.gid(),
                runner.uid(),
                runner.gid()
            ),
        ),
        Err(e) => check(
            false,
            format!("created-inside.txt missing on the host: {e}"),
        ),
    }
    for l in out.lines().filter(|l| l.starts_with("writable ")) {
        check(false, format!("must be read-only: {l}"));
    }
    check(
        out.lines().filter(|l| l.starts_with("readonly ")).count() == 6,
        "read-only checks missing".into(),
    );
    check(has("tmp-writable"), "/tmp must be writable".into());
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        check(
            has(&format!("status {cap}:0000000000000000")),
            format!("{cap} must be 0"),
        );
    }
    check(has("status NoNewPrivs:1"), "NoNewPrivs must be 1".into());
    check(
        has("status Seccomp:2"),
        "seccomp must be in filter mode".into(),
    );
    check(
        has("uid 0 gid 0"),
        "the agent is uid 0 of its own namespace".into(),
    );
    check(
        has("unshare-user refused"),
        "unshare -U must be refused".into(),
    );
    check(
        has("unshare-root refused"),
        "unshare -r must be refused".into(),
    );
    check(has("mount refused"), "mount must be refused".into());
    check(has("interfaces [lo ]"), "network none means only lo".into());
    if out.contains("connect [") {
        check(
            !out.contains("connect [connected]"),
            "network none must not reach outside".into(),
        );
        check(has("loopback [ok]"), "loopback must work".into());
    }
    if out.contains("seccomp32 [") {
        check(
            has(
                "seccomp32 [vsock=errno1 vsock-high=errno1 tiocsti=errno1 tiocsti-high=errno1 unix=ok]",
            ),
            "AF_VSOCK and TIOCSTI must be refused whatever the high 32 bits hold".into(),
        );
    }
    if Command::new("git").arg("--version").output().is_ok() {
        check(
            has("git [initial]"),
            "git must work in the workspace".into(),
        );
    }
    if out.contains("fds [") {
        check(
            has("fds [0 1 2]"),
            "a program started inside inherits only stdin, stdout and stderr".into(),
        );
    }
    if out.contains("keyctl [") {
        check(has("keyctl [errno1]"), "keyctl must be refused".into());
    }
    check(has("keys [0]"), "/proc/keys must show nothing".into());
    failures
}

fn exit_codes(backend: &Backend, runner: &Runner, fx: &Fixture, failures: &mut Vec<String>) {
    for (cmd, want) in [
        (vec!["sh", "-c", "exit 42"], 42),
        (vec!["true"], 0),
        (vec!["no-such-command-agentctl"], 127),
        (vec!["./not-executable.sh"], 126),
        (vec!["sh", "-c", "kill -KILL $$"], 137),
    ] {
        let s = agentctl_run(runner, fx, backend, &["-q"], &cmd, b"");
        if s.code != Some(want) {
            failures.push(format!(
                "{cmd:?} exited {:?}, expected {want}: {}",
                s.code, s.stderr
            ));
        }
        if want == 127 && !s.stderr.contains("no-such-command-agentctl") {
            failures.push(format!("a missing command must be named: {}", s.stderr));
        }
    }
}

fn stdin_passes(backend: &Backend, runner: &Runner, fx: &Fixture, failures: &mut Vec<String>) {
    let s = agentctl_run(
        runner,
        fx,
        backend,
        &["-q"],
        &["cat"],
        b"hello through stdin\n",
    );
    if s.stdout != "hello through stdin\n" || s.code != Some(0) {
        failures.push(format!(
            "stdin did not pass through: {:?} (exit {:?}) {}",
            s.stdout, s.code, s.stderr
        ));
    }
}

fn signals(backend: &Backend, runner: &Runner, fx: &Fixture, failures: &mut Vec<String>) {
    use std::io::{BufRead, BufReader};
    for (sig, want) in [
        (nix::sys::signal::Signal::SIGTERM, 143),
        (nix::sys::signal::Signal::SIGINT, 130),
    ] {
        let mut c = runner.agentctl(&fx.home, &fx.ws);
        c.args(["run", "-q", "--backend", backend.0, "--profile"])
            .arg(&fx.profile)
            .args(&backend.1)
            .args(["--", "sh", "-c", "echo ready; exec sleep 60"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.trim() != "ready" {
            failures.push(format!(
                "session did not start for the {sig} test: {line:?}"
            ));
            let _ = child.kill();
            continue;
        }
        let start = Instant::now();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        match status.and_then(|s| s.code()) {
            Some(code) if code == want => {}
            other => failures.push(format!("{sig} to agentctl gave {other:?}, expected {want}")),
        }
    }
}

/// Forks until refused (or 500 times); prints `forked N errno E`.
const FORK_BOMB: &str = r#"
import os, time
n = 0
err = None
while n < 500:
    try:
        pid = os.fork()
    except OSError as e:
        err = e.errno
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    n += 1
print("forked", n, "errno", err)
"#;

fn fork_bomb(backend: &Backend, runner: &Runner, failures: &mut Vec<String>) {
    if Command::new("python3").arg("-V").output().is_err() {
        failures.push("python3 is needed for the fork-bomb check".into());
        return;
    }
    let fx = fixture(runner, 64);
    let script = FORK_BOMB;
    let s = agentctl_run(
        runner,
        &fx,
        backend,
        &["-q"],
        &["python3", "-c", script],
        b"",
    );
    let forked: Option<u32> = s
        .stdout
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok());
    match forked {
        Some(n) if n < 64 && s.stdout.contains("errno 11") => {}
        _ => failures.push(format!(
            "the pids limit (64) did not stop a fork bomb: {:?} {}",
            s.stdout, s.stderr
        )),
    }
    if backend.0 == "docker" {
        let left = docker_leftovers(&fx.profile);
        if !left.is_empty() {
            failures.push(format!("containers left behind: {left:?}"));
        }
    }
}

#[test]
fn native_as_invoking_user() {
    conformance(Backend::host("native"), Runner::Current);
}

#[test]
fn native_rootless() {
    let Some(runner) = Runner::unprivileged() else {
        return;
    };
    if !require(true, "") {
        return;
    }
    conformance(Backend::host("native"), runner);
}

use support::docker_available;

#[test]
fn vm_as_invoking_user() {
    if !support::vm_available() {
        return;
    }
    conformance(Backend::host("vm"), Runner::Current);
}

#[test]
fn vm_rootless() {
    if !support::vm_available() {
        return;
    }
    let Some(runner) = Runner::unprivileged() else {
        return;
    };
    conformance(Backend::host("vm"), runner);
}

/// Containers left by sessions run with `profile` (unique per fixture, so
/// tests running side by side do not see each other's).
fn docker_leftovers(profile: &Path) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=io.agentctl.profile={}", profile.display()),
            "--format",
            "{{.Names}} {{.Status}}",
        ])
        .output()
        .unwrap();
    text(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn docker_as_invoking_user() {
    if !support::require(
        docker_available(),
        "a Docker daemon (`apt-get install docker.io`, then start dockerd)",
    ) {
        return;
    }
    conformance(Backend::host("docker"), Runner::Current);
}

#[test]
fn docker_from_an_image() {
    let Some(image) = support::test_image() else {
        return;
    };
    conformance(Backend::image("docker", &image), Runner::Current);
}

/// Runs `f` with the native backend's image cache in a fresh directory, so
/// the test pulls for real.
fn with_fresh_image_cache(f: impl FnOnce()) {
    let cache = tempfile::tempdir().unwrap();
    // SAFETY: the tests in this file that touch the variable run one at a
    // time (IMAGE_CACHE), and nothing reads it concurrently.
    let _guard = IMAGE_CACHE.lock().unwrap_or_else(|e| e.into_inner());
    unsafe { std::env::set_var("AGENTCTL_IMAGES", cache.path()) };
    f();
    unsafe { std::env::remove_var("AGENTCTL_IMAGES") };
}

static IMAGE_CACHE: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn native_from_a_registry_image() {
    let Some(image) = support::test_image() else {
        return;
    };
    let Some(registry) = support::Registry::start() else {
        return;
    };
    let remote = registry.push(&image, "agentctl-conformance:test");
    with_fresh_image_cache(|| conformance(Backend::image("native", &remote), Runner::Current));
}

#[test]
fn native_from_a_docker_save_archive() {
    let Some(image) = support::test_image() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    let o = Command::new("docker")
        .args(["save", "-o"])
        .arg(&archive)
        .arg(&image)
        .output()
        .unwrap();
    assert!(o.status.success(), "docker save: {}", text(&o.stderr));
    let source = format!("docker-archive:{}", archive.display());
    with_fresh_image_cache(|| conformance(Backend::image("native", &source), Runner::Current));
}

/// The vm backend from an image in the native cache (a `docker save`
/// archive pulled into a fresh cache): the tree's root is an overlay of
/// the unpacked image, built on the host.
#[test]
fn vm_from_a_docker_save_archive() {
    if !support::vm_available() {
        return;
    }
    let Some(image) = support::test_image() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    let o = Command::new("docker")
        .args(["save", "-o"])
        .arg(&archive)
        .arg(&image)
        .output()
        .unwrap();
    assert!(o.status.success(), "docker save: {}", text(&o.stderr));
    let source = format!("docker-archive:{}", archive.display());
    with_fresh_image_cache(|| conformance(Backend::image("vm", &source), Runner::Current));
}

/// Regression (issue 9, item 12): files the host runs later were writable.
/// An agent appended `core.fsmonitor` to `.git/config`, wrote a hook,
/// pointed `.git/commondir` at a repository of its own, or moved `.git`
/// aside and made a new one, and the user's next `git status` ran its
/// code on the host. As the unprivileged user: git still commits inside,
/// every one of those writes fails, nothing is left behind, and a profile
/// grant makes the config writable again.
#[test]
fn host_run_files_are_read_only_and_git_still_works() {
    let Some(runner) = Runner::unprivileged() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let ws = home.path().join("repo");
    std::fs::create_dir_all(ws.join(".vscode")).unwrap();
    std::fs::write(ws.join("a.txt"), "a\n").unwrap();
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .args(args)
            .current_dir(&ws)
            .env("HOME", home.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {}", text(&o.stderr));
    };
    git(&["init", "-q"]);
    std::fs::create_dir_all(ws.join(".git/hooks")).unwrap();
    let config_before = std::fs::read_to_string(ws.join(".git/config")).unwrap();
    Command::new("chown")
        .args(["-R", &format!("{}:{}", runner.uid(), runner.gid())])
        .arg(home.path())
        .status()
        .unwrap();
    std::fs::set_permissions(
        home.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let attack = "git add a.txt && git -c user.name=a -c user.email=a@b commit -qm one && echo committed; \
        printf '[core]\\n\\tfsmonitor = touch /tmp/pwned\\n' >> .git/config 2>/dev/null && echo wrote-config; \
        echo 'touch /tmp/pwned' > .git/hooks/post-checkout 2>/dev/null && echo wrote-hook; \
        echo ../evil > .git/commondir 2>/dev/null && echo wrote-commondir; \
        echo '{}' > .vscode/tasks.json 2>/dev/null && echo wrote-vscode; \
        mv .git .git-aside 2>/dev/null && echo moved-git; \
        true";
    let run = |profile: Option<&Path>| {
        let mut c = runner.agentctl(home.path(), &ws);
        c.args(["--store", "none", "run", "-q", "--no-limits"]);
        if let Some(p) = profile {
            c.arg("--profile").arg(p);
        }
        c.args(["--", "sh", "-c", attack])
            .stdin(std::process::Stdio::null());
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        text(&o.stdout)
    };
    let out = run(None);
    assert!(out.contains("committed"), "git must still commit: {out}");
    for w in [
        "wrote-config",
        "wrote-hook",
        "wrote-commondir",
        "wrote-vscode",
        "moved-git",
    ] {
        assert!(!out.contains(w), "the agent could do `{w}`: {out}");
    }
    assert_eq!(
        std::fs::read_to_string(ws.join(".git/config")).unwrap(),
        config_before
    );
    assert!(!ws.join(".git/hooks/post-checkout").exists());
    assert!(!ws.join(".vscode/tasks.json").exists());
    assert!(
        !ws.join(".git/commondir").exists(),
        "the placeholder is removed after the session"
    );
    assert!(ws.join(".git").is_dir() && !ws.join(".git-aside").exists());

    // A profile that lets the agent change git's config.
    let profile = home.path().join("gitcfg.yaml");
    std::fs::write(
        &profile,
        "extends: generic\nwritable_host_files: [git-config]\n",
    )
    .unwrap();
    std::os::unix::fs::chown(&profile, Some(runner.uid()), Some(runner.gid())).unwrap();
    let out = run(Some(&profile));
    assert!(out.contains("wrote-config"), "{out}");
    assert!(
        !out.contains("wrote-hook") && !out.contains("wrote-commondir"),
        "{out}"
    );
}

/// Regression (issue 9, items 8, 9 and 10), as the unprivileged user whose
/// files these are:
/// - a directory the scan cannot list (`chmod 0111 config`) hid
///   `config/.env` from it while `cat config/.env` still worked;
/// - `.envs/.production/.django` and a `.env/` directory of env files were
///   walked, not masked (a `.env` virtual environment stays readable);
/// - a project's own `deploy/.kube/config` and `ci/.docker/config.json`
///   were readable (the project's Dockerfiles stay so);
/// - with `~/.aws -> ~/dotfiles/aws`, a workspace of `~/dotfiles` exposed
///   `aws/credentials`;
/// - `~/.config/git/credentials` came in with the granted `~/.config/git`;
/// - a token in the granted `~/.gitconfig` went unmentioned.
#[test]
fn the_scan_fails_closed_and_denies_by_real_path() {
    let Some(runner) = Runner::unprivileged() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let ws = h.join("proj");
    let files = [
        ("proj/config/.env", "SECRET-unlistable"),
        ("proj/.envs/.production/.django", "SECRET-envs"),
        ("proj/.env/prod", "SECRET-envdir"),
        ("proj/tools/.env/pyvenv.cfg", "home = /usr/bin"),
        ("proj/tools/.env/lib/site.py", "venv-code"),
        ("proj/deploy/.kube/config", "SECRET-kube"),
        ("proj/ci/.docker/config.json", "SECRET-docker"),
        ("proj/ci/.docker/Dockerfile", "FROM scratch"),
        ("dotfiles/aws/credentials", "SECRET-dotfiles-aws"),
        ("dotfiles/README", "dotfiles-readme"),
        (".config/git/credentials", "SECRET-git-xdg"),
        (".config/git/ignore", "git-ignore"),
        (
            ".gitconfig",
            "[http]\n\textraheader = AUTHORIZATION: basic tok-in-header\n",
        ),
    ];
    for (rel, content) in files {
        write(&h.join(rel), content);
    }
    std::os::unix::fs::symlink("dotfiles/aws", h.join(".aws")).unwrap();
    runner.own_home(h);
    std::fs::set_permissions(ws.join("config"), fs::Permissions::from_mode(0o111)).unwrap();

    let run = |cwd: &Path, script: &str| {
        let mut c = runner.agentctl(h, cwd);
        c.args([
            "--store",
            "none",
            "run",
            "-q",
            "--no-limits",
            "--",
            "sh",
            "-c",
            script,
        ])
        .stdin(std::process::Stdio::null());
        let o = c.output().unwrap();
        (o.status.code(), text(&o.stdout), text(&o.stderr))
    };
    let (code, out, err) = run(
        &ws,
        "for f in config/.env .envs/.production/.django .env/prod tools/.env/lib/site.py \
         deploy/.kube/config ci/.docker/config.json ci/.docker/Dockerfile \
         \"$HOME/.config/git/credentials\" \"$HOME/.config/git/ignore\"; do \
         echo \"$f=[$(cat \"$f\" 2>/dev/null)]\"; done",
    );
    assert_eq!(code, Some(0), "{err}");
    let mut failures = Vec::new();
    for line in out.lines().filter(|l| l.contains("SECRET-")) {
        failures.push(format!("visible inside: {line}"));
    }
    for (want, what) in [
        (
            "tools/.env/lib/site.py=[venv-code]",
            "a virtual environment named .env stays readable",
        ),
        (
            "ci/.docker/Dockerfile=[FROM scratch]",
            "a project's .docker/Dockerfile stays readable",
        ),
        (
            "/.config/git/ignore=[git-ignore]",
            "the rest of ~/.config/git stays granted",
        ),
    ] {
        if !out.lines().any(|l| l.ends_with(want)) {
            failures.push(format!("{what}: {out}"));
        }
    }
    // A token in the granted ~/.gitconfig is named, never shown.
    if !err.contains("~/.gitconfig carries a credential (http.*.extraHeader)") {
        failures.push(format!("no warning for the token in ~/.gitconfig: {err}"));
    }
    let explain = {
        let mut c = runner.agentctl(h, &ws);
        c.args(["--store", "none", "explain"]);
        text(&c.output().unwrap().stdout)
    };
    if explain.contains("tok-in-header") {
        failures.push("explain printed the token".into());
    }
    for want in [
        "the scan cannot look inside",
        "Python virtual environment: walked, not masked",
        "dotenv directory, masked as a whole",
    ] {
        if !explain.contains(want) {
            failures.push(format!("explain does not say `{want}`: {explain}"));
        }
    }

    // The dotfiles repository as the workspace.
    let (code, out, err) = run(&h.join("dotfiles"), "cat aws/credentials; cat README");
    assert_eq!(code, Some(0), "{err}");
    if out.contains("SECRET-") || !out.contains("dotfiles-readme") {
        failures.push(format!("~/.aws by its real path: {out}"));
    }
    // Mounting the real path of a denied entry is refused like the entry.
    let mut c = runner.agentctl(h, &ws);
    c.args(["--store", "none", "run", "-q", "--mount"])
        .arg(h.join("dotfiles/aws"))
        .args(["--", "true"]);
    let o = c.output().unwrap();
    if o.status.success() || !text(&o.stderr).contains("real path of ~/.aws") {
        failures.push(format!(
            "a mount of ~/.aws's real path: {}",
            text(&o.stderr)
        ));
    }

    std::fs::set_permissions(ws.join("config"), fs::Permissions::from_mode(0o755)).unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Regression (issue 9, item 8): a secret that moved between the scan and
/// the mounts (`mv .env notes.txt`) was dropped: the runtime skips a masked
/// path it cannot find, the read-back accepted that, and the agent read the
/// secret under its new name. A planned mask whose path is gone now stops
/// the session.
#[test]
fn a_secret_moved_after_the_scan_stops_the_session() {
    let Some(runner) = Runner::unprivileged() else {
        return;
    };
    moved_secret(&runner, "native");
    // The vm backend builds the tree itself: a mask whose path is gone
    // (or a symlink now) refuses the session.
    if support::vm_available() {
        moved_secret(&runner, "vm");
    }
    // On Docker (root): runc skips the missing mask the same way; the
    // sandbox's init checks the planned masks before the agent runs.
    if require(docker_available(), "a Docker daemon") {
        moved_secret(&Runner::Current, "docker");
    }
}

fn moved_secret(runner: &Runner, backend: &str) {
    let home = tempfile::tempdir().unwrap();
    let ws = home.path().join("proj");
    write(&ws.join(".env"), "SECRET-moved");
    support::chown_tree(home.path(), runner.uid(), runner.gid());
    std::fs::set_permissions(home.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let go = home.path().join("go");
    let mut c = runner.agentctl(home.path(), &ws);
    c.env("AGENTCTL_TEST_AFTER_PLAN", &go)
        .args([
            "--store",
            "none",
            "run",
            "-q",
            "--no-limits",
            "--backend",
            backend,
            "--",
            "sh",
            "-c",
            "cat notes.txt",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let planned = home.path().join("go.planned");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !planned.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the launcher never planned"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::fs::rename(ws.join(".env"), ws.join("notes.txt")).unwrap();
    std::fs::write(&go, "").unwrap();
    let o = child.wait_with_output().unwrap();
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(
        !out.contains("SECRET-"),
        "{backend}: the moved secret was read: {out}"
    );
    assert!(
        !o.status.success(),
        "{backend}: the session ran: {out} {err}"
    );
    assert!(
        err.contains("was to be masked but is gone"),
        "{backend}: {err}"
    );
}

/// A home with another tool's settings in `~/.config`, and a profile
/// (returned) that grants `~/.config` and `~/.local/share` read-write.
fn wide_grant_home(h: &Path) -> std::path::PathBuf {
    write(&h.join(".config/other/settings"), "other-tool");
    let profile = h.join("wide.yaml");
    write(
        &profile,
        "extends: generic\nhome:\n  - path: ~/.config\n    mode: rw\n  - path: ~/.local/share\n    mode: rw\n    create: true\n",
    );
    profile
}

/// Regression (issue 10, item 6): a profile granting `~/.config` and
/// `~/.local/share` read-write showed the agent agentctl's own state: its
/// profiles (the next session's policy), the session store and the image
/// cache. They are masked whatever is granted, and a mount of them is
/// refused.
#[test]
fn agentctl_s_own_state_is_never_in_a_session() {
    let Some(runner) = Runner::unprivileged() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let ws = h.join("proj");
    write(&ws.join("README"), "hello");
    write(
        &h.join(".config/agentctl/profiles/mine.yaml"),
        "extends: generic\n",
    );
    let wide = wide_grant_home(h);
    runner.own_home(h);
    let mut c = runner.agentctl(h, &ws);
    c.args(["run", "-q", "--no-limits", "--profile"])
        .arg(&wide)
        .args([
            "--",
            "sh",
            "-c",
            "ls -A ~/.config/agentctl ~/.local/share/agentctl; \
             echo 'network: host' >> ~/.config/agentctl/profiles/mine.yaml && echo wrote-profile; \
             cat ~/.config/other/settings",
        ])
        .stdin(std::process::Stdio::null());
    let o = c.output().unwrap();
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{err}");
    for leaked in ["profiles", "agentctl.db", "wrote-profile"] {
        assert!(!out.contains(leaked), "the agent reached `{leaked}`: {out}");
    }
    assert!(
        out.contains("other-tool"),
        "the rest of ~/.config stays granted: {out}"
    );
    assert_eq!(
        fs::read_to_string(h.join(".config/agentctl/profiles/mine.yaml")).unwrap(),
        "extends: generic\n"
    );
    let mut c = runner.agentctl(h, &ws);
    c.args(["--store", "none", "run", "-q", "--mount"])
        .arg(h.join(".config/agentctl"))
        .args(["--", "true"]);
    let o = c.output().unwrap();
    assert!(
        !o.status.success(),
        "a mount of agentctl's profiles was accepted"
    );
    assert!(
        text(&o.stderr).contains("agentctl's own state"),
        "{}",
        text(&o.stderr)
    );
}

/// Regression (review of issue 10, item 6): agentctl's own directories
/// were masked only when they existed at plan time. With `~/.config`
/// granted read-write and no `~/.config/agentctl` yet, the agent made it
/// and planted a profile that the user's next session would load. They are
/// made (0700) before the plan, and masked like any other.
#[test]
fn agentctl_s_own_state_cannot_be_planted_before_it_exists() {
    let Some(runner) = Runner::unprivileged() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let ws = h.join("proj");
    write(&ws.join("README"), "hello");
    let wide = wide_grant_home(h);
    runner.own_home(h);
    let mut c = runner.agentctl(h, &ws);
    c.args(["--store", "none", "run", "-q", "--no-limits", "--profile"])
        .arg(&wide)
        .args([
            "--",
            "sh",
            "-c",
            "mkdir -p ~/.config/agentctl/profiles && echo 'network: host' > ~/.config/agentctl/profiles/evil.yaml && echo planted-profile; \
             mkdir -p ~/.local/share/agentctl/images && echo x > ~/.local/share/agentctl/images/x && echo planted-data; \
             cat ~/.config/other/settings",
        ])
        .stdin(std::process::Stdio::null());
    let o = c.output().unwrap();
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("other-tool"),
        "the rest of ~/.config stays granted: {out}"
    );
    for planted in ["planted-profile", "planted-data"] {
        assert!(!out.contains(planted), "the agent wrote `{planted}`: {out}");
    }
    assert!(!h.join(".config/agentctl/profiles/evil.yaml").exists());
    assert!(!h.join(".local/share/agentctl/images/x").exists());
}

/// Regression (issue 10, item 5): the claude-code profile mounted
/// `~/.claude` read-write, settings included: the agent wrote a hook into
/// `settings.json` that Claude Code outside the sandbox would run. The
/// settings, memory, commands, agents and plugins are read-only now (and
/// made when missing, so no first one can be planted); the rest of the
/// state stays writable. The same for codex's config.toml.
#[test]
fn agent_tools_settings_are_read_only() {
    let Some(runner) = Runner::unprivileged() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let ws = h.join("proj");
    write(&ws.join("README"), "hello");
    runner.own_home(h);
    for (profile, dir, settings) in [
        ("claude-code", ".claude", "settings.json"),
        ("codex", ".codex", "config.toml"),
    ] {
        let script = format!(
            "echo '{{\"hooks\": 1}}' > ~/{dir}/{settings} && echo wrote-settings; \
             mkdir -p ~/{dir}/commands/x 2>/dev/null && echo wrote-commands; \
             echo kept > ~/{dir}/state.txt && echo wrote-state; true"
        );
        let mut c = runner.agentctl(h, &ws);
        c.args([
            "--store",
            "none",
            "run",
            "-q",
            "--no-limits",
            "--network",
            "none",
        ])
        .args(["--profile", profile, "--", "sh", "-c", &script])
        .stdin(std::process::Stdio::null());
        let o = c.output().unwrap();
        let out = text(&o.stdout);
        assert!(o.status.success(), "{profile}: {}", text(&o.stderr));
        assert!(!out.contains("wrote-settings"), "{profile}: {out}");
        assert!(
            out.contains("wrote-state"),
            "{profile}: the state must stay writable: {out}"
        );
        if profile == "claude-code" {
            assert!(!out.contains("wrote-commands"), "{profile}: {out}");
        }
        let on_host = fs::read_to_string(h.join(dir).join(settings)).unwrap();
        assert!(!on_host.contains("hooks"), "{profile}: {on_host}");
    }
}

/// Regression (issue 10, item 7): the Docker backend reused whatever image
/// was tagged `agentctl/hostroot:<hash>` (the hash is predictable, and an
/// agent with `docker: true` and a network could tag one). An image with a
/// volume of its own gave every later sandbox that volume. The host-root
/// image is now checked by content (one known layer, no configuration) and
/// used by its ID; anything else under the name is replaced.
#[test]
fn a_forged_host_root_image_is_not_used() {
    if !require(docker_available(), "a Docker daemon") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let o = Command::new(support::binary())
            .args(["--store", "none", "run", "-q", "--backend", "docker", "--"])
            .args([
                "sh",
                "-c",
                "test -e /forged && echo forged-volume; echo ran",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        text(&o.stdout)
    };
    // The first run makes (or finds) the real image; its name is the one
    // to forge.
    assert!(run().contains("ran"));
    let images = Command::new("docker")
        .args([
            "images",
            "agentctl/hostroot",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ])
        .output()
        .unwrap();
    let names = text(&images.stdout);
    let name = names.lines().next().expect("a host-root image").to_string();
    let docker = |args: &[&str]| {
        let o = Command::new("docker").args(args).output().unwrap();
        assert!(o.status.success(), "docker {args:?}: {}", text(&o.stderr));
        text(&o.stdout).trim().to_string()
    };
    let c = docker(&["create", &name, "/none"]);
    docker(&["commit", "--change", "VOLUME [\"/forged\"]", &c, &name]);
    docker(&["rm", &c]);
    let out = run();
    assert!(out.contains("ran"), "{out}");
    assert!(
        !out.contains("forged-volume"),
        "the forged image was used: {out}"
    );
    let layers = docker(&[
        "image",
        "inspect",
        &name,
        "--format",
        "{{len .RootFS.Layers}} {{json .Config.Volumes}}",
    ]);
    assert_eq!(layers, "1 null", "the name holds agentctl's image again");
}

/// Regression (issue 10, item 8): the image cache unpacked layers with no
/// cap on their decompressed size or entry count (a small layer could fill
/// the disk). A layer past the cap is refused with the variable that
/// raises it; here the cap is lowered to 1 MiB so that a real image's base
/// layer is past it.
#[test]
fn image_layers_past_the_cap_are_refused() {
    let Some(image) = support::test_image() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    let o = Command::new("docker")
        .args(["save", "-o"])
        .arg(&archive)
        .arg(&image)
        .output()
        .unwrap();
    assert!(o.status.success(), "docker save: {}", text(&o.stderr));
    let cache = tempfile::tempdir().unwrap();
    let o = Command::new(support::binary())
        .args(["--store", "none", "run", "-q", "--image"])
        .arg(format!("docker-archive:{}", archive.display()))
        .args(["--", "true"])
        .env("AGENTCTL_IMAGES", cache.path())
        .env("AGENTCTL_IMAGE_MAX_LAYER_BYTES", "1048576")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert!(!o.status.success(), "the oversized layer was unpacked");
    assert!(err.contains("AGENTCTL_IMAGE_MAX_LAYER_BYTES"), "{err}");
}
