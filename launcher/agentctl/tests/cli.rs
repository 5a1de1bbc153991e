//! The command line's promises: clear errors that name the file, the field
//! and the fix; `explain` output; refusing to start when a control cannot
//! be applied; a working terminal.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use support::{binary, is_root, require, text};

fn agentctl(args: &[&str], cwd: &std::path::Path) -> std::process::Output {
    Command::new(binary())
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

#[test]
fn unknown_profile_lists_the_available_ones() {
    let dir = tempfile::tempdir().unwrap();
    let o = agentctl(&["explain", "--profile", "claud"], dir.path());
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        text(&o.stderr).trim(),
        "agentctl: unknown profile \"claud\"; available: aider, claude-code, codex, generic"
    );
}

#[test]
fn bad_profile_names_file_line_field_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mine.yaml");
    std::fs::write(
        &p,
        "extends: claude-code\nlimits:\n  pids: 100\n  memroy: 2g\n",
    )
    .unwrap();
    let o = agentctl(&["explain", "--profile", p.to_str().unwrap()], dir.path());
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains(&format!("{}:4:", p.display())), "{err}");
    assert!(err.contains("memroy"), "{err}");
    assert!(err.contains("did you mean `memory`"), "{err}");
}

#[test]
fn profiles_lists_builtins() {
    let dir = tempfile::tempdir().unwrap();
    let o = agentctl(&["profiles", "--json"], dir.path());
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for n in ["aider", "claude-code", "codex", "generic"] {
        assert!(names.contains(&n), "{names:?}");
    }
}

#[test]
fn explain_shows_masks_reasons_and_env_names_never_values() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "TOKEN=abc").unwrap();
    std::fs::write(dir.path().join(".env.example"), "TOKEN=").unwrap();
    let o = Command::new(binary())
        .args(["explain", "--json", "--profile", "claude-code"])
        .current_dir(dir.path())
        .env("ANTHROPIC_API_KEY", "sk-ant-do-not-print")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        !out.contains("sk-ant-do-not-print"),
        "a value leaked into explain"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let masked = v["masked"].as_array().unwrap();
    let env_mask = masked
        .iter()
        .find(|m| m["path"].as_str().unwrap().ends_with("/.env"))
        .expect(".env masked");
    assert_eq!(env_mask["reason"]["kind"], "name_rule");
    assert!(
        !masked
            .iter()
            .any(|m| m["path"].as_str().unwrap().ends_with(".env.example"))
    );
    let env: Vec<&str> = v["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(env.contains(&"ANTHROPIC_API_KEY"), "{env:?}");
    assert_eq!(v["network"], "allowlist");
    assert!(
        v["network_allow"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "api.anthropic.com"),
        "{}",
        v["network_allow"]
    );
    assert!(
        v["network_reason"]
            .as_str()
            .unwrap()
            .contains("api.anthropic.com"),
        "explain must say plainly why the profile has a network"
    );
    assert_eq!(v["hardening"]["no_new_privileges"], true);

    let text_out = Command::new(binary())
        .args(["explain", "--profile", "claude-code"])
        .current_dir(dir.path())
        .env("ANTHROPIC_API_KEY", "sk-ant-do-not-print")
        .output()
        .unwrap();
    let t = text(&text_out.stdout);
    assert!(!t.contains("sk-ant-do-not-print"));
    assert!(t.contains("dotenv file (built-in rule `.env*`)"), "{t}");
    assert!(
        t.contains("network    allowlist: Claude Code must reach")
            && t.contains("api.anthropic.com                "),
        "{t}"
    );
}

#[test]
fn explain_shows_how_many_containers_an_agent_with_docker_may_hold() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("few.yaml");
    std::fs::write(
        &profile,
        "extends: generic\ndocker: true\nlimits: { containers: 7 }\n",
    )
    .unwrap();
    let o = agentctl(
        &["explain", "--profile", profile.to_str().unwrap()],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("· containers 7"),
        "{}",
        text(&o.stdout)
    );
    let o = agentctl(&["explain", "--profile", "generic"], dir.path());
    assert!(
        !text(&o.stdout).contains("containers"),
        "{}",
        text(&o.stdout)
    );
    std::fs::write(&profile, "extends: generic\nlimits: { containers: 0 }\n").unwrap();
    let o = agentctl(
        &["explain", "--profile", profile.to_str().unwrap()],
        dir.path(),
    );
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("limits.containers is 0"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn refuses_a_workspace_that_would_expose_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let o = agentctl(&["run", "--workspace", "/", "--", "true"], dir.path());
    assert_eq!(o.status.code(), Some(125));
    let err = text(&o.stderr);
    assert!(err.contains("workspace /"), "{err}");
    assert!(
        err.contains("--workspace"),
        "the error must say how to fix it: {err}"
    );
}

#[test]
fn refuses_to_start_without_user_namespaces_and_names_the_sysctl() {
    if !require(
        is_root(),
        "root (to lower user.max_user_namespaces in a child namespace)",
    ) {
        return;
    }
    // The limit is per user namespace: setting it inside a throwaway one
    // leaves the host untouched.
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces && exec {} run -q -- true",
        binary().display()
    );
    let o = Command::new("unshare")
        .args(["-U", "-r", "sh", "-c", &script])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains("user.max_user_namespaces is 0"), "{err}");
    assert!(err.contains("sysctl -w user.max_user_namespaces="), "{err}");
}

#[test]
fn unprivileged_user_without_a_cgroup_is_told_both_fixes_and_no_limits_works() {
    if !require(
        is_root(),
        "root (to switch to the test user without a cgroup)",
    ) {
        return;
    }
    let name = std::env::var("AGENTCTL_TEST_USER_NOCG").unwrap_or_else(|_| "agentctl-nocg".into());
    let user = nix::unistd::User::from_name(&name).ok().flatten();
    if !require(
        user.is_some(),
        &format!("the user {name} (.ci/test creates it)"),
    ) {
        return;
    }
    let user = user.unwrap();
    let dir = tempfile::Builder::new()
        .prefix("agentctl-nocg-")
        .tempdir()
        .unwrap();
    std::fs::create_dir(dir.path().join("ws")).unwrap();
    support::chown_tree(dir.path(), user.uid.as_raw(), user.gid.as_raw());
    let runner = support::Runner::User {
        name: name.clone(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    };
    let mut c = runner.agentctl(dir.path(), &dir.path().join("ws"));
    c.args(["run", "-q", "--", "true"]);
    let o = c.output().unwrap();
    let err = text(&o.stderr);
    if err.contains("delegated") {
        assert_eq!(o.status.code(), Some(125), "{err}");
        assert!(err.contains("agentctl setup"), "{err}");
        assert!(err.contains("--no-limits"), "{err}");
    } else {
        // A cgroup v2 host with systemd delegation needs no setup.
        assert!(o.status.success(), "{err}");
    }
    let mut c = runner.agentctl(dir.path(), &dir.path().join("ws"));
    c.args(["run", "--no-limits", "--", "sh", "-c", "echo limited-not"]);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "limited-not\n");
    assert!(
        text(&o.stderr).contains("NO LIMITS"),
        "the summary must say so"
    );
}

/// Drives agentctl from a pseudo-terminal, as a user at a keyboard would.
const TTY_DRIVER: &str = r#"
import os, pty, sys, time, fcntl, termios, struct, select
argv = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 41, 101, 0, 0))
out = b""
def pump(until, timeout):
    global out
    end = time.time() + timeout
    while time.time() < end and until not in out:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            out += chunk
pump(b"READY", 20)
os.write(fd, b"typed-line\r")
pump(b"got:typed-line", 10)
# Let the shell get into `sleep`: a SIGINT that reaches dash between
# commands is held until the next command ends.
time.sleep(0.5)
os.write(fd, b"\x03")
pump(b"\x00never", 5)
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
print("\nEXIT", os.waitstatus_to_exitcode(status))
"#;

#[test]
fn interactive_sessions_get_a_terminal_with_size_input_and_ctrl_c() {
    interactive("native");
}

#[test]
fn interactive_docker_sessions_get_a_terminal_with_size_input_and_ctrl_c() {
    if require(support::docker_available(), "a Docker daemon") {
        interactive("docker");
    }
}

fn interactive(backend: &str) {
    if !require(
        Command::new("python3").arg("-V").output().is_ok(),
        "python3 (drives a pseudo-terminal)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new("python3")
        .args(["-c", TTY_DRIVER])
        .arg(binary())
        .args([
            "run",
            "-q",
            "--backend",
            backend,
            "--",
            "sh",
            "-c",
            "tty; stty size; echo READY; read x; echo got:$x; exec sleep 30",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert!(
        out.contains("/dev/pts/"),
        "{backend}: no terminal inside: {out}"
    );
    assert!(out.contains("41 101"), "window size not passed: {out}");
    assert!(out.contains("got:typed-line"), "input not passed: {out}");
    assert!(
        out.contains("EXIT 130"),
        "Ctrl-C must stop the agent with 130: {out}"
    );
}

#[test]
fn command_line_mounts_are_read_only_unless_rw() {
    let ws = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("in.txt"), "DATA").unwrap();
    let d = data.path().display().to_string();
    let o = agentctl(
        &[
            "run",
            "-q",
            "--mount",
            &format!("{d}:/mnt/ro"),
            "--mount",
            &format!("{d}:/mnt/rw:rw"),
            "--",
            "sh",
            "-c",
            "cat /mnt/ro/in.txt; (echo x > /mnt/ro/new) 2>/dev/null && echo ro-writable; echo y > /mnt/rw/new && echo rw-ok",
        ],
        ws.path(),
    );
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out} {}", text(&o.stderr));
    assert!(out.contains("DATA"), "{out}");
    assert!(!out.contains("ro-writable"), "{out}");
    assert!(out.contains("rw-ok"), "{out}");
    assert_eq!(
        std::fs::read_to_string(data.path().join("new")).unwrap(),
        "y\n"
    );
}

#[test]
fn bridge_network_reaches_out_but_not_the_hosts_loopback() {
    if !require(
        std::path::Path::new("/usr/bin/slirp4netns").exists(),
        "slirp4netns (`apt-get install slirp4netns`)",
    ) || !require(
        is_root() || std::fs::metadata("/dev/net/tun").is_ok(),
        "/dev/net/tun",
    ) {
        return;
    }
    // A service on the host's loopback that a bridged agent must not reach.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ws = tempfile::tempdir().unwrap();
    let script = format!(
        "cat /etc/resolv.conf; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; \
         python3 -c '\nimport socket\nfor host in (\"10.0.2.2\", \"127.0.0.1\"):\n    s = socket.socket(); s.settimeout(3)\n    try:\n        s.connect((host, {port})); print(\"reached\", host)\n    except OSError as e:\n        print(\"blocked\", host)\n'"
    );
    let o = agentctl(
        &[
            "run",
            "-q",
            "--network",
            "bridge",
            "--",
            "sh",
            "-c",
            &script,
        ],
        ws.path(),
    );
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out} {}", text(&o.stderr));
    assert!(out.contains("nameserver 10.0.2.3"), "{out}");
    assert!(
        out.lines().any(|l| l == "tap0"),
        "no bridge interface: {out}"
    );
    assert!(
        out.contains("blocked 10.0.2.2"),
        "the host's loopback is reachable: {out}"
    );
    assert!(out.contains("blocked 127.0.0.1"), "{out}");
    drop(listener);
}

#[test]
fn host_network_shares_the_hosts_interfaces() {
    let ws = tempfile::tempdir().unwrap();
    let o = agentctl(
        &[
            "run",
            "-q",
            "--network",
            "host",
            "--",
            "sh",
            "-c",
            "tail -n +3 /proc/net/dev | wc -l",
        ],
        ws.path(),
    );
    let inside: usize = text(&o.stdout).trim().parse().unwrap_or(0);
    let host = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .count()
        - 2;
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(inside, host);
}

#[test]
fn docker_backend_refuses_an_unreachable_daemon_with_the_fixes() {
    let ws = tempfile::tempdir().unwrap();
    let o = Command::new(binary())
        .args(["run", "-q", "--backend", "docker", "--", "true"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .current_dir(ws.path())
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains("unix:///nonexistent/docker.sock"), "{err}");
    assert!(err.contains("--backend native"), "{err}");
    assert!(err.contains("start"), "{err}");
}

/// Forwards TCP connections to the local Docker socket: a remote engine,
/// as far as agentctl can tell.
fn tcp_to_docker_socket() -> u16 {
    use std::io::copy;
    use std::net::TcpListener;
    use std::os::unix::net::UnixStream;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let Ok(unix) = UnixStream::connect("/var/run/docker.sock") else {
                continue;
            };
            let (mut a, mut b) = (conn.try_clone().unwrap(), unix.try_clone().unwrap());
            let (mut c, mut d) = (conn, unix);
            std::thread::spawn(move || {
                let _ = copy(&mut a, &mut b);
                let _ = b.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = copy(&mut d, &mut c);
                let _ = c.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

#[test]
fn docker_backend_works_over_tcp() {
    if !require(
        support::docker_available(),
        "a Docker daemon on /var/run/docker.sock",
    ) {
        return;
    }
    let port = tcp_to_docker_socket();
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join(".env"), "SECRET-tcp").unwrap();
    let o = Command::new(binary())
        .args([
            "run",
            "-q",
            "--backend",
            "docker",
            "--",
            "sh",
            "-c",
            "cat .env; echo via-tcp; exit 5",
        ])
        .env("DOCKER_HOST", format!("tcp://127.0.0.1:{port}"))
        .current_dir(ws.path())
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(5), "{out} {}", text(&o.stderr));
    assert_eq!(out, "via-tcp\n");
}

#[test]
fn image_cache_commands_pull_list_remove_and_prune() {
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
    assert!(o.status.success());
    let cache = dir.path().join("cache");
    let run = |args: &[&str]| {
        let o = Command::new(binary())
            .args(args)
            .env("AGENTCTL_IMAGES", &cache)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
        text(&o.stdout)
    };
    let pulled = run(&[
        "image",
        "pull",
        &format!("docker-archive:{}", archive.display()),
    ]);
    assert!(pulled.contains("sha256:"), "{pulled}");
    let list: serde_json::Value = serde_json::from_str(&run(&["image", "ls", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let reference = list[0]["reference"].as_str().unwrap().to_string();
    // Regression (issue 10, item 7): an archive tagged like a registry
    // image shadowed it for every later `--image` of that name. An import
    // keeps a `local:` name of its own; the registry's name still means
    // the registry's image (unreachable here, so that run fails).
    assert!(reference.starts_with("local:"), "{reference}");
    let ws = tempfile::tempdir().unwrap();
    let session = |img: &str| {
        Command::new(binary())
            .args(["--store", "none", "run", "-q", "--image", img, "--", "true"])
            .env("AGENTCTL_IMAGES", &cache)
            .current_dir(ws.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let o = session(&format!("local:{image}"));
    assert!(
        o.status.success(),
        "the import by its local name: {}",
        text(&o.stderr)
    );
    let o = session(&image);
    assert!(
        !o.status.success(),
        "`--image {image}` ran the imported archive instead of the registry's image"
    );
    assert!(
        std::path::Path::new(list[0]["rootfs"].as_str().unwrap())
            .join("usr/bin/git")
            .exists()
    );
    run(&["image", "rm", &reference]);
    let pruned = run(&["image", "prune"]);
    assert!(pruned.contains("1 root filesystems"), "{pruned}");
    let list: serde_json::Value = serde_json::from_str(&run(&["image", "ls", "--json"])).unwrap();
    assert!(list.as_array().unwrap().is_empty());
}

/// Regression (issue 9, item 15): a sandbox on the host's network used to
/// reach the host's abstract unix sockets (X11's `@/tmp/.X11-unix/X0`,
/// D-Bus buses) and see the host's /sys. Now Landlock keeps abstract
/// sockets made outside the sandbox out of reach, and /sys is an empty
/// read-only tmpfs with only the CPU topology in it. Native as the
/// unprivileged user (and root), Docker host-root as root.
#[test]
fn host_network_keeps_out_abstract_sockets_and_the_hosts_sysfs() {
    use std::os::linux::net::SocketAddrExt;
    if sandbox::landlock::abstract_unix_scoping().is_err() {
        // The warning path: the session says so.
        let ws = tempfile::tempdir().unwrap();
        let o = agentctl(&["run", "-q", "--network", "host", "--", "true"], ws.path());
        assert!(
            text(&o.stderr).contains("abstract unix sockets (X11, D-Bus) are reachable"),
            "{}",
            text(&o.stderr)
        );
        support::require(false, "a kernel with Landlock ABI 6 (Linux 6.12)");
        return;
    }
    let name = format!("agentctl-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let script = format!(
        "python3 -c '\nimport socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect(\"\\0{name}\"); print(\"reached\")\nexcept OSError as e:\n    print(\"refused\", e.errno)\n'; \
         ls /sys/class/net >/dev/null 2>&1 && echo sys-net-visible; \
         test -r /sys/devices/system/cpu/online && echo cpu-online; \
         touch /sys/x 2>/dev/null && echo sys-writable; \
         ls /sys"
    );
    let mut runs: Vec<(&str, support::Runner)> = vec![("native", support::Runner::Current)];
    runs.extend(support::Runner::unprivileged().map(|r| ("native", r)));
    if support::docker_available() {
        runs.push(("docker", support::Runner::Current));
    } else {
        support::require(false, "a Docker engine, for the Docker backend's half");
    }
    for (backend, runner) in runs {
        let home = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            home.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let ws = home.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        for p in [home.path(), &ws] {
            nix::unistd::chown(
                p,
                Some(nix::unistd::Uid::from_raw(runner.uid())),
                Some(nix::unistd::Gid::from_raw(runner.gid())),
            )
            .unwrap();
        }
        let o = runner
            .agentctl(home.path(), &ws)
            .args([
                "--store",
                "none",
                "run",
                "-q",
                "--backend",
                backend,
                "--network",
                "host",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let out = text(&o.stdout);
        let tag = format!("[{backend} {runner:?}]");
        assert!(o.status.success(), "{tag} {out} {}", text(&o.stderr));
        assert!(
            out.contains("refused 1"),
            "{tag} the host's abstract socket was reachable: {out}"
        );
        assert!(!out.contains("sys-net-visible"), "{tag} {out}");
        assert!(!out.contains("sys-writable"), "{tag} {out}");
        assert!(
            out.contains("cpu-online"),
            "{tag} the CPU topology is gone: {out}"
        );
        // Nothing reached the listener.
        assert!(listener.accept().is_err(), "{tag} a connection arrived");
    }
}

/// Regression (issue 9, item 11): `cd ~ && agentctl run -- claude` gave the
/// agent a read-write home (minus the deny list): `~/.bashrc`,
/// `~/.local/bin`, `~/.config/agentctl`, which run or are read on the host
/// afterwards. The home itself and its trees of start-up files are refused
/// as the workspace unless the user says so, as the unprivileged user.
#[test]
fn refuses_the_home_directory_as_the_workspace_unless_asked() {
    let Some(runner) = support::Runner::unprivileged() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".config")).unwrap();
    std::fs::create_dir_all(home.path().join("project")).unwrap();
    for p in ["", ".config", "project"] {
        let p = home.path().join(p);
        std::os::unix::fs::chown(&p, Some(runner.uid()), Some(runner.gid())).unwrap();
    }
    std::fs::set_permissions(
        home.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let run = |cwd: &std::path::Path, extra: &[&str]| {
        let mut c = runner.agentctl(home.path(), cwd);
        c.args(["--store", "none", "run", "-q", "--no-limits"])
            .args(extra)
            .args(["--", "sh", "-c", "echo ran > .bashrc-from-agent"])
            .stdin(std::process::Stdio::null());
        c.output().unwrap()
    };
    for cwd in [home.path().to_path_buf(), home.path().join(".config")] {
        let o = run(&cwd, &[]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(125), "{} ran: {err}", cwd.display());
        assert!(err.contains("--allow-home-workspace"), "{err}");
        assert!(err.contains("run on the host"), "{err}");
        assert!(!cwd.join(".bashrc-from-agent").exists());
    }
    // A project inside the home is the normal case.
    let o = run(&home.path().join("project"), &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // And the home itself when asked for.
    let o = run(home.path(), &["--allow-home-workspace"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(home.path().join(".bashrc-from-agent").exists());
}

/// Regression (issue 9, item 16): a profile's `AIDER_*` passed
/// `AIDER_MYSQL_PWD`, `*PASSPHRASE*`, `*_JWT` and any variable holding a URL
/// with a password into the sandbox. They are refused now (explain names
/// them and says why, never with their values); a URL without a password
/// still passes.
#[test]
fn credential_shaped_variables_and_url_passwords_stay_out() {
    let dir = tempfile::tempdir().unwrap();
    let vars = [
        ("AIDER_MYSQL_PWD", "pwd-value-1"),
        ("AIDER_GPG_PASSPHRASE", "pass-value-2"),
        ("AIDER_API_JWT", "jwt-value-3"),
        ("AIDER_BROKER", "amqp://bot:url-secret-4@broker:5672/"),
        ("AIDER_INDEX", "https://pypi.org/simple"),
    ];
    let mut c = Command::new(binary());
    c.args([
        "run",
        "-q",
        "--store",
        "none",
        "--profile",
        "aider",
        "--network",
        "none",
        "--",
        "env",
    ])
    .current_dir(dir.path());
    for (k, v) in vars {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let inside = text(&o.stdout);
    for (k, v) in &vars[..4] {
        assert!(
            !inside.contains(k) && !inside.contains(v),
            "{k} reached the sandbox: {inside}"
        );
    }
    assert!(
        inside.contains("AIDER_INDEX=https://pypi.org/simple"),
        "{inside}"
    );

    let mut e = Command::new(binary());
    e.args(["explain", "--profile", "aider"])
        .current_dir(dir.path());
    for (k, v) in vars {
        e.env(k, v);
    }
    let o = e.output().unwrap();
    let t = text(&o.stdout);
    for (k, v) in &vars[..4] {
        assert!(
            t.contains(&format!("refused {k}")),
            "{k} not explained: {t}"
        );
        assert!(!t.contains(v), "explain printed a value: {t}");
    }
    assert!(t.contains("its value is a URL with a password"), "{t}");
}

/// Regression (issue 10, item 9): a profile of 100,000 nested `[` kept the
/// YAML parser busy past 20 s (its time grows with the square of the
/// depth). Oversized and deeply nested profiles are refused before they
/// are parsed, naming the file; a large file is not read whole.
#[test]
fn hostile_profiles_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("deep.yaml");
    std::fs::write(&deep, "[".repeat(100_000)).unwrap();
    let big = dir.path().join("big.yaml");
    std::fs::write(
        &big,
        format!("description: padded\n#{}\n", "x".repeat(200_000)),
    )
    .unwrap();
    for (file, why) in [(&deep, "nested"), (&big, "bytes")] {
        let start = std::time::Instant::now();
        let o = Command::new(binary())
            .args(["explain", "--profile"])
            .arg(file)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{}: accepted", file.display());
        assert!(
            err.contains(&file.display().to_string()) && err.contains(why),
            "{err}"
        );
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "{}: took {:?}",
            file.display(),
            start.elapsed()
        );
    }
}

/// `explain` decides and prints; it makes nothing. agentctl's own
/// directories and the home entries a profile creates are made by a launch
/// (after the session is on record), never by planning.
#[test]
fn explain_changes_nothing_on_the_host() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let ws = h.join("proj");
    std::fs::create_dir(&ws).unwrap();
    let profile = h.join("mine.yaml");
    std::fs::write(
        &profile,
        "extends: generic\nhome:\n  - path: ~/.tool-state\n    mode: rw\n    create: true\n",
    )
    .unwrap();
    let before: Vec<_> = walk(h);
    let o = Command::new(binary())
        .args(["explain", "--json", "--profile"])
        .arg(&profile)
        .current_dir(&ws)
        .env("HOME", h)
        .env("XDG_CONFIG_HOME", h.join(".config"))
        .env("XDG_DATA_HOME", h.join(".local/share"))
        .env_remove("AGENTCTL_IMAGES")
        .env_remove("AGENTCTL_STORE")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(walk(h), before, "explain changed {}", h.display());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let prepare: Vec<String> = v["prepare"]
        .as_array()
        .expect("the plan lists what a launch makes")
        .iter()
        .map(|p| p["path"].as_str().unwrap().to_string())
        .collect();
    let real = std::fs::canonicalize(h).unwrap();
    // (The data directory is under XDG_DATA_HOME only for other users than
    // root, who keeps it in /var/lib/agentctl.)
    for want in [".tool-state", ".config/agentctl"] {
        let want = real.join(want).display().to_string();
        assert!(prepare.contains(&want), "{want} not in {prepare:?}");
    }
}

/// Every path under `dir`, sorted.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// `agentctl serve` refuses an address other machines can reach while the
/// store has no users, and on loopback answers only for loopback's names.
#[test]
fn serve_listens_on_loopback_only_and_answers_only_loopback_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("s.db").display());
    let o = agentctl(
        &["--store", &store, "serve", "--listen", "0.0.0.0:7878"],
        dir.path(),
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(
        err.contains("no dashboard users")
            && err.contains("agentctl admin user add")
            && err.contains("ssh -L"),
        "{err}"
    );

    let (mut server, addr) = support::serve(
        Command::new(binary())
            .args(["--store", &store, "serve", "--listen", "127.0.0.1:0"])
            .current_dir(dir.path()),
    );
    let ask = |host: &str| -> String {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            c,
            "GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    };
    let ok = ask(&addr);
    let evil = ask("evil.example");
    let _ = server.kill();
    let _ = server.wait();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains("\"ok\":true"), "{ok}");
    assert!(evil.starts_with("HTTP/1.1 403"), "{evil}");
}

/// Runs `agentctl admin ...` with `stdin` written to it.
fn admin(store: &str, dir: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(binary())
        .args(["--store", store, "admin"])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// Users and tokens through the binary: a short password and a second
/// user of one name are refused with what to do; a token is printed once
/// and never listed; every change is on the accounts' trail.
#[test]
fn admin_manages_users_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("s.db").display());
    let d = dir.path();
    let o = admin(
        &store,
        d,
        &["user", "add", "alice", "--password-stdin"],
        "short\n",
    );
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("at least 12 characters"),
        "{}",
        text(&o.stderr)
    );
    let pw = "a long enough password\n";
    let o = admin(
        &store,
        d,
        &[
            "user",
            "add",
            "alice",
            "--role",
            "admin",
            "--password-stdin",
        ],
        pw,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = admin(&store, d, &["user", "add", "alice", "--password-stdin"], pw);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("exists already"),
        "{}",
        text(&o.stderr)
    );
    let o = admin(
        &store,
        d,
        &["user", "add", "bob", "--role", "root", "--password-stdin"],
        pw,
    );
    assert!(
        text(&o.stderr).contains("viewer, operator or admin"),
        "{}",
        text(&o.stderr)
    );
    // Without a terminal and without --password-stdin: refused, not hung.
    let o = admin(&store, d, &["user", "passwd", "alice"], "");
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("--password-stdin"),
        "{}",
        text(&o.stderr)
    );

    // A token's scope is asked for, never assumed.
    let o = admin(
        &store,
        d,
        &["token", "create", "--user", "alice", "--label", "ci"],
        "",
    );
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains("--scope"), "{}", text(&o.stderr));
    let o = admin(
        &store,
        d,
        &[
            "token", "create", "--user", "alice", "--label", "ci", "--scope", "all",
        ],
        "",
    );
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains("read, run or admin"),
        "{}",
        text(&o.stderr)
    );
    let o = admin(
        &store,
        d,
        &[
            "token", "create", "--user", "alice", "--label", "ci", "--scope", "run",
        ],
        "",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let token = text(&o.stdout).trim().to_string();
    assert!(token.starts_with("agt_") && token.len() > 70, "{token}");
    let o = admin(&store, d, &["token", "ls", "--json"], "");
    let listed = text(&o.stdout);
    let secret = token.rsplit('_').next().unwrap();
    assert!(
        listed.contains("\"label\": \"ci\"")
            && listed.contains("\"scope\": \"run\"")
            && !listed.contains(secret),
        "{listed}"
    );
    let id = token.split('_').nth(1).unwrap();
    let o = admin(&store, d, &["token", "revoke", id], "");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = admin(&store, d, &["user", "ls"], "");
    assert!(text(&o.stdout).contains("alice") && text(&o.stdout).contains("admin"));
    let o = admin(&store, d, &["user", "rm", "alice"], "");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = admin(&store, d, &["user", "rm", "alice"], "");
    assert!(
        text(&o.stderr).contains("no user \"alice\""),
        "{}",
        text(&o.stderr)
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let trail = rt.block_on(async {
        let s = store::SessionStore::connect(&store).await.unwrap();
        s.account_events(100).await.unwrap()
    });
    let kinds: Vec<_> = trail.iter().rev().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "user_added",
            "token_created",
            "token_revoked",
            "user_removed"
        ]
    );
    assert!(
        trail.iter().all(|e| e.actor.ends_with("(agentctl admin)")),
        "{trail:?}"
    );
}

/// Beyond loopback: with users but no TLS, refused (passwords in clear);
/// with a certificate, HTTPS that asks for a login.
#[test]
fn serve_beyond_loopback_needs_users_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("s.db").display());
    let d = dir.path();
    let o = admin(
        &store,
        d,
        &["user", "add", "alice", "--password-stdin"],
        "a long enough password\n",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = agentctl(&["--store", &store, "serve", "--listen", "0.0.0.0:0"], d);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("clear text") && text(&o.stderr).contains("--tls-cert"),
        "{}",
        text(&o.stderr)
    );
    let (cert, key) = (d.join("cert.pem"), d.join("key.pem"));
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    // The key where the certificate belongs: named, with the fix.
    let o = agentctl(
        &[
            "--store",
            &store,
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--tls-cert",
        ],
        d,
    );
    assert_ne!(o.status.code(), Some(0));
    let o = Command::new(binary())
        .args(["--store", &store, "serve", "--listen", "0.0.0.0:0"])
        .arg("--tls-cert")
        .arg(&key)
        .arg("--tls-key")
        .arg(&key)
        .current_dir(d)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("--tls-cert"),
        "{}",
        text(&o.stderr)
    );

    let (mut server, addr) = support::serve(
        Command::new(binary())
            .args(["--store", &store, "serve", "--listen", "0.0.0.0:0"])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .current_dir(d),
    );
    let port = addr.rsplit(':').next().unwrap();
    let curl = |path: &str| {
        let o = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&cert)
            .arg(format!("https://localhost:{port}{path}"))
            .output()
            .unwrap();
        text(&o.stdout)
    };
    let health = curl("/healthz");
    let api = curl("/api/v1/sessions");
    let plain = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://localhost:{port}/healthz"))
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(health, "200");
    assert_eq!(api, "401");
    assert_ne!(text(&plain.stdout), "200", "plain HTTP on the TLS port");
}
