//! The allowlist network, end to end through the real binary: a fake
//! internet made of network namespaces this test creates (tests/lab/
//! labnet.py: a lab DNS that logs every query, web servers with a lab CA,
//! mirrors of git, PyPI and npm, an "evil" origin and host services that
//! count every connection), and a script inside the sandbox
//! (tests/lab/attacks.py) that uses the allowed paths and tries the
//! attacks. The lab's own logs then show what left the sandbox: no query
//! for a denied name, no connection to anything not allowed.
//!
//!   sandbox netns (empty; listeners planted by agentctl)
//!   lab "host" netns: agentctl and its egress proxy run here
//!        veth 11.0.0.1/24 · 169.254.169.254, 10.0.0.5 on lo · services on :5432
//!   lab "net" netns: 11.0.0.10 web, 11.0.0.11 evil, 11.0.0.53 DNS

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab");

/// The allowlist attacks.py expects.
const RULES: &[&str] = &[
    "api.anthropic.com",
    "registry.npmjs.org",
    "pypi.org",
    "files.pythonhosted.org",
    "git.lab-allowed.org",
    "http://plain.lab-allowed.org",
    "ssh.lab-allowed.org:22",
    "*.rebind.lab-allowed.org",
    "*.rebind.lab-allowed.org:5432",
    "**.cloudflare-dns.com",
];

struct Lab {
    host_ns: String,
    net_ns: String,
    dir: tempfile::TempDir,
    servers: Vec<Child>,
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Lab {
    fn up() -> Option<Lab> {
        if !require(is_root(), "root, to make the lab's network namespaces") {
            return None;
        }
        for p in [
            "ip", "python3", "openssl", "nsenter", "unshare", "setpriv", "git", "curl",
        ] {
            if !require(have(p), &format!("{p} for the lab")) {
                return None;
            }
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "agl{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let (host_ns, net_ns) = (format!("{tag}h"), format!("{tag}n"));
        let dir = tempfile::Builder::new()
            .prefix("agentctl-lab")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let mut lab = Lab {
            host_ns: host_ns.clone(),
            net_ns: net_ns.clone(),
            dir,
            servers: Vec::new(),
        };
        let (vh, vn) = (format!("{tag}a"), format!("{tag}b"));
        sh(&["ip", "netns", "add", &host_ns]);
        sh(&["ip", "netns", "add", &net_ns]);
        sh(&[
            "ip", "link", "add", &vh, "type", "veth", "peer", "name", &vn,
        ]);
        sh(&["ip", "link", "set", &vh, "netns", &host_ns]);
        sh(&["ip", "link", "set", &vn, "netns", &net_ns]);
        for (ns, dev, addrs) in [
            (&host_ns, &vh, &["11.0.0.1/24"][..]),
            (
                &net_ns,
                &vn,
                &["11.0.0.10/24", "11.0.0.11/24", "11.0.0.53/24"][..],
            ),
        ] {
            for a in addrs {
                sh(&["ip", "-n", ns, "addr", "add", a, "dev", dev]);
            }
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // The "host" also has a metadata imposter and a private address
        // (on its loopback: containers that run CI often lack the dummy
        // interface's module).
        for a in ["169.254.169.254/32", "10.0.0.5/32"] {
            sh(&["ip", "-n", &host_ns, "addr", "add", a, "dev", "lo"]);
        }
        // A new namespace may inherit forwarding from the host's (Docker
        // turns it on there): the lab host is no router.
        sh(&[
            "ip",
            "netns",
            "exec",
            &host_ns,
            "sh",
            "-c",
            "echo 0 > /proc/sys/net/ipv4/ip_forward",
        ]);
        let fwd = Command::new("ip")
            .args([
                "netns",
                "exec",
                &host_ns,
                "cat",
                "/proc/sys/net/ipv4/ip_forward",
            ])
            .output()
            .unwrap();
        assert_eq!(
            text(&fwd.stdout).trim(),
            "0",
            "the lab host must not forward"
        );
        std::fs::write(lab.path().join("resolv.conf"), "nameserver 11.0.0.53\n").unwrap();
        for (role, ns) in [("net", &net_ns), ("host", &host_ns)] {
            let log = std::fs::File::create(lab.path().join(format!("{role}.err"))).unwrap();
            lab.servers.push(
                Command::new("ip")
                    .args(["netns", "exec", ns, "python3"])
                    .arg(Path::new(LAB).join("labnet.py"))
                    .arg(role)
                    .arg(lab.path())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .unwrap(),
            );
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(lab.path().join("net.ready").exists() && lab.path().join("host.ready").exists()) {
            assert!(
                Instant::now() < deadline,
                "the lab did not come up: {} {}",
                lab.read("net.err"),
                lab.read("host.err")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(lab)
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name)).unwrap_or_default()
    }

    /// agentctl as `runner`, in the lab's host namespace with the lab's
    /// resolver (a private mount namespace binds it over
    /// /etc/resolv.conf; `ip netns exec` would also remount /sys, and with
    /// it the cgroup hierarchy the sandbox needs).
    fn agentctl(&self, runner: &Runner, home: &Path, cwd: &Path) -> Command {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"r=$1; n=$2; shift 2; mount --bind "$r" /etc/resolv.conf && exec nsenter --net="$n" -- "$@""#)
            .arg("sh")
            .arg(self.path().join("resolv.conf"))
            .arg(format!("/run/netns/{}", self.host_ns));
        if let Runner::User { uid, gid, .. } = runner {
            cmd.args([
                "setpriv",
                "--reuid",
                &uid.to_string(),
                "--regid",
                &gid.to_string(),
            ])
            .args(["--clear-groups", "--"]);
        }
        cmd.arg(binary())
            .env_clear()
            .env("HOME", home)
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C.UTF-8")
            .envs(std::env::var_os("AGENTCTL_VM_KERNEL_DIR").map(|d| ("AGENTCTL_VM_KERNEL_DIR", d)))
            .env(
                "USER",
                match runner {
                    Runner::User { name, .. } => name.clone(),
                    Runner::Current => "root".into(),
                },
            )
            .current_dir(cwd);
        cmd
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        for ns in [&self.host_ns, &self.net_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn allowlist_holds(runner: Runner, backend: &str) {
    let Some(lab) = Lab::up() else { return };
    let home = tempfile::Builder::new()
        .prefix("agentctl-egress-home")
        .tempdir()
        .unwrap();
    let ws = home.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::copy(Path::new(LAB).join("attacks.py"), ws.join("attacks.py")).unwrap();
    std::fs::copy(lab.path().join("ca.pem"), ws.join("lab-ca.crt")).unwrap();
    let profile = home.path().join("lab.yaml");
    let rules: Vec<String> = RULES.iter().map(|r| format!("    - \"{r}\"\n")).collect();
    std::fs::write(
        &profile,
        format!("extends: generic\nnetwork:\n  allow:\n{}", rules.concat()),
    )
    .unwrap();
    runner.own_home(home.path());
    let store = format!("sqlite://{}", home.path().join("agentctl.db").display());
    let ca: PathBuf = ws.join("lab-ca.crt");

    let out = lab
        .agentctl(&runner, home.path(), &ws)
        .args(["--store", &store, "run", "--backend", backend, "--profile"])
        .arg(&profile)
        .arg("-e")
        .arg(format!("LAB_CA={}", ca.display()))
        .args(["--", "/usr/bin/python3", "attacks.py"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    let results: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let failed: Vec<&Value> = results.iter().filter(|r| r["pass"] != true).collect();
    assert!(
        failed.is_empty() && out.status.success(),
        "status {:?}; failed:\n{}\nstderr: {stderr}\negress.log: see the session dir",
        out.status,
        failed
            .iter()
            .map(|r| format!("  {} ({}): {}", r["name"], r["kind"], r["detail"]))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for r in &results {
        eprintln!("  {} {}: {}", r["kind"], r["name"], r["detail"]);
    }
    let attacks = results.iter().filter(|r| r["kind"] == "attack").count();
    let allowed = results.iter().filter(|r| r["kind"] == "allowed").count();
    assert!(
        attacks >= 40,
        "only {attacks} attacks ran:\n{stdout}\n{stderr}"
    );
    assert!(
        allowed >= 11,
        "only {allowed} allowed paths ran:\n{stdout}\n{stderr}"
    );

    // What the lab saw. The DNS log is the proof that a denied name was
    // never looked up anywhere; the counters that nothing reached a
    // destination outside the rules.
    let dns = lab.read("dns.log");
    assert!(
        dns.contains("api.anthropic.com 1"),
        "the lab DNS logged nothing:\n{dns}"
    );
    for denied in [
        "evil",
        "cloudflare-dns",
        "dns.google",
        "localhost",
        "xn--",
        "ifzuk",
        "c2vjcmv0",
    ] {
        assert!(
            !dns.to_lowercase().contains(denied),
            "the lab DNS was asked for a denied name ({denied}):\n{dns}"
        );
    }
    let counters = lab.read("counters.log");
    for name in ["evil", "host-", "metadata", "private", "quic", "udp"] {
        assert!(
            !counters.contains(name),
            "something reached {name}:\n{counters}"
        );
    }
    let web = lab.read("web.log");
    assert!(
        !web.contains("evil"),
        "a denied host name reached the lab's web server:\n{web}"
    );

    // Every refusal is on record, with the host, the port and why; a DNS
    // tunnel's payload is cut, not stored.
    let id = session_id(&stderr).expect("session id");
    let audit = lab
        .agentctl(&runner, home.path(), &ws)
        .args(["--store", &store, "audit", "--json", &id])
        .output()
        .unwrap();
    let audit_text = text(&audit.stdout);
    let v: Value = serde_json::from_str(&audit_text)
        .unwrap_or_else(|e| panic!("{e}: {audit_text} {}", text(&audit.stderr)));
    let denied: Vec<&Value> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "egress_denied")
        .collect();
    let has = |host: &str, port: u64, via: &str| {
        denied.iter().any(|e| {
            e["data"]["host"] == host && e["data"]["port"] == port && e["data"]["via"] == via
        })
    };
    assert!(has("evil.example", 443, "http"), "{denied:#?}");
    assert!(has("evil.example", 443, "socks"), "{denied:#?}");
    assert!(has("evil.example", 53, "dns"), "{denied:#?}");
    assert!(
        !audit_text.contains("ifzukskjj5lfgt2ii5hek6cbjzkxsn"),
        "a DNS tunnel's payload was stored whole"
    );
    // The egress process went with its session, and on Docker the
    // network holder and its directory.
    let left = Command::new("pgrep")
        .args(["-af", &format!("__egress.*{id}")])
        .output()
        .unwrap();
    assert!(
        text(&left.stdout).trim().is_empty(),
        "the egress process outlived its session: {}",
        text(&left.stdout)
    );
    if backend == "docker" {
        let holders = Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("name=agentctl-{id}-net"))
            .output()
            .unwrap();
        assert!(
            text(&holders.stdout).trim().is_empty(),
            "the network holder outlived its session"
        );
    }
    let verify = lab
        .agentctl(&runner, home.path(), &ws)
        .args(["--store", &store, "audit", "--verify", &id])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", text(&verify.stderr));
}

#[test]
fn allowlist_holds_as_root() {
    allowlist_holds(Runner::Current, "native");
}

#[test]
fn allowlist_holds_on_docker() {
    if !require(docker_available(), "a Docker engine") {
        return;
    }
    allowlist_holds(Runner::Current, "docker");
}

/// The same lab and attacks against a VM's guest: QEMU's user-mode
/// network in a namespace holding only the planted listeners.
#[test]
fn allowlist_holds_on_vm() {
    if !vm_available() {
        return;
    }
    allowlist_holds(Runner::Current, "vm");
}

#[test]
fn allowlist_holds_rootless() {
    let Some(runner) = Runner::unprivileged() else {
        return;
    };
    allowlist_holds(runner, "native");
}

/// A detached allowlist session: its listeners serve `exec` too, its
/// refusals are on record, and `stop` leaves nothing behind (no egress
/// process, no holder, no directory). No lab: a denied name is refused
/// before any lookup.
fn detached_session_ends_cleanly(backend: &str) {
    let home = tempfile::Builder::new()
        .prefix("agentctl-egress-detached")
        .tempdir()
        .unwrap();
    let ws = home.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let store = format!("sqlite://{}", home.path().join("agentctl.db").display());
    let agentctl = |args: &[&str]| {
        let mut c = Runner::Current.agentctl(home.path(), &ws);
        c.args(["--store", &store]).args(args);
        c.stdin(Stdio::null()).output().unwrap()
    };
    let out = agentctl(&[
        "run",
        "-d",
        "--backend",
        backend,
        "--allow",
        "api.example.com",
        "--",
        "sleep",
        "60",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 32, "{}", text(&out.stdout));
    let short = &id[..12];
    let exec = agentctl(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "curl -s -o /dev/null -w '%{http_connect}' https://evil.example/; echo; \
         getent hosts api.example.com; getent hosts evil.example || echo refused",
    ]);
    let said = text(&exec.stdout);
    assert!(said.contains("403"), "{said} {}", text(&exec.stderr));
    // The DNS stub's first fake address: a VM's guest gets one it can
    // route to its gateway.
    let fake = if backend == "vm" {
        "198.18.0.1"
    } else {
        "127.1.0.1"
    };
    assert!(said.contains(fake), "{said}");
    assert!(said.contains("refused"), "{said}");
    let stop = agentctl(&["stop", &id]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    // The egress process ends with the sandbox (on Docker it watches the
    // container's init): give it a moment.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = Command::new("pgrep")
            .args(["-af", &format!("__egress.*{short}")])
            .output()
            .unwrap();
        let holders = Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("name=agentctl-{short}-net"))
            .output()
            .map(|o| text(&o.stdout))
            .unwrap_or_default();
        // Runner::agentctl clears the environment: no TMPDIR, no XDG_RUNTIME_DIR.
        let dirs = std::fs::read_dir("/tmp")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy() == format!("agentctl-egress-{short}"))
            .count();
        if text(&left.stdout).trim().is_empty() && holders.trim().is_empty() && dirs == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: processes {:?}, holders {holders:?}, directories {dirs}",
            text(&left.stdout)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let audit = agentctl(&["audit", "--json", &id]);
    let v: Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert!(
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "egress_denied" && e["data"]["host"] == "evil.example"),
        "{v}"
    );
    let rm = agentctl(&["rm", &id]);
    assert!(rm.status.success(), "{}", text(&rm.stderr));
}

#[test]
fn a_detached_native_allowlist_session_ends_cleanly() {
    if !require(is_root(), "root") {
        return;
    }
    detached_session_ends_cleanly("native");
}

#[test]
fn a_detached_docker_allowlist_session_ends_cleanly() {
    if !require(is_root() && docker_available(), "root and a Docker engine") {
        return;
    }
    detached_session_ends_cleanly("docker");
}

#[test]
fn a_detached_vm_allowlist_session_ends_cleanly() {
    if !vm_available() {
        return;
    }
    detached_session_ends_cleanly("vm");
}

#[test]
fn a_remote_engine_refuses_the_allowlist_network() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .args(["--store", "none", "run", "--backend", "docker"])
        .args(["--allow", "api.example.com", "--", "true"])
        .env("DOCKER_HOST", "tcp://127.0.0.1:9")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("DOCKER_HOST=tcp://127.0.0.1:9"), "{err}");
    assert!(err.contains("--backend native"), "{err}");
}
