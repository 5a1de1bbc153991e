//! `agentctl doctor` through the real binary: each finding checked against
//! what the test observes on this host itself, a user without a delegated
//! cgroup reported as such and then OK after `agentctl setup`, and the
//! store's findings (none yet, up to date, readable by others, Postgres).

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::{binary, is_root, require, text};

fn doctor(store: &str) -> (Option<i32>, Value) {
    let o = Command::new(binary())
        .args(["--store", store, "doctor", "--json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", text(&o.stdout), text(&o.stderr)));
    (o.status.code(), v)
}

fn finding<'a>(report: &'a Value, check: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no finding {check}: {report:#}"))
}

fn on_path(program: &str) -> bool {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join(program).is_file())
}

#[test]
fn every_finding_matches_what_the_host_has() {
    if !require(is_root(), "root (the findings are checked as root)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store").join("agentctl.db");
    let url = format!("sqlite://{}", db.display());
    let (code, report) = doctor(&url);
    assert_eq!(code, Some(0), "{report:#}");
    for check in ["user-namespaces", "seccomp", "cgroup-limits"] {
        assert_eq!(finding(&report, check)["ok"], true, "{report:#}");
    }
    let store = finding(&report, "session-store");
    assert_eq!(store["ok"], true, "{store}");
    assert!(
        store["detail"].as_str().unwrap().contains("none yet"),
        "{store}"
    );
    assert!(!db.exists(), "doctor made the store");

    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .is_ok();
    let slirp = Path::new("/usr/bin/slirp4netns").exists() && tun;
    assert_eq!(finding(&report, "slirp4netns")["ok"], slirp, "{report:#}");
    let docker = support::docker_available();
    let engine = finding(&report, "docker-engine");
    assert_eq!(engine["ok"], docker, "{engine}");
    if docker {
        let v = Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
            .unwrap();
        assert!(
            engine["detail"]
                .as_str()
                .unwrap()
                .contains(text(&v.stdout).trim()),
            "{engine}"
        );
    } else {
        assert!(
            engine["fix"].as_str().unwrap().contains("dockerd"),
            "{engine}"
        );
    }
    let compose = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success())
        || on_path("docker-compose");
    assert_eq!(finding(&report, "compose")["ok"], compose, "{report:#}");
    let qemu = finding(&report, "qemu");
    assert_eq!(qemu["ok"], on_path("qemu-system-x86_64"), "{qemu}");
    if let Some(why) = vmm::Probe::host().kvm_unusable() {
        assert!(qemu["detail"].as_str().unwrap().contains(&why), "{qemu}");
    }
    let kernel = std::env::var_os("AGENTCTL_VM_KERNEL_DIR")
        .map(std::path::PathBuf::from)
        .and_then(|d| std::fs::read_dir(d.join("boot")).ok())
        .is_some_and(|mut entries| {
            entries
                .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-")))
        });
    let guest = finding(&report, "guest-kernel");
    assert_eq!(guest["ok"], kernel, "{guest}");
    let browser = on_path("chromium") && on_path("chromedriver");
    assert_eq!(finding(&report, "browser")["ok"], browser, "{report:#}");

    // The store once a command has opened it: up to date; then readable
    // by others, which doctor names with the fix.
    let o = Command::new(binary())
        .args(["--store", &url, "ps", "-a"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let (_, report) = doctor(&url);
    let store = finding(&report, "session-store");
    assert_eq!(store["ok"], true, "{store}");
    assert!(
        store["detail"].as_str().unwrap().contains("up to date"),
        "{store}"
    );
    std::fs::set_permissions(&db, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (code, report) = doctor(&url);
    let store = finding(&report, "session-store");
    assert_eq!(store["ok"], false, "{store}");
    assert_eq!(
        code,
        Some(1),
        "a store others can read is not fit for sessions"
    );
    assert!(
        store["fix"].as_str().unwrap().contains("chmod 600"),
        "{store}"
    );
}

#[test]
fn a_postgres_store_and_an_unreachable_one() {
    let Some(url) = std::env::var("AGENTCTL_TEST_POSTGRES").ok() else {
        require(
            false,
            "AGENTCTL_TEST_POSTGRES (a Postgres the tests may use)",
        );
        return;
    };
    let (_, report) = doctor(&url);
    let store = finding(&report, "session-store");
    assert_eq!(store["ok"], true, "{store}");
    assert!(
        store["detail"].as_str().unwrap().contains("PostgreSQL"),
        "{store}"
    );
    let (code, report) = doctor("postgres://nobody@127.0.0.1:9/nothing");
    let store = finding(&report, "session-store");
    assert_eq!(store["ok"], false, "{store}");
    assert_eq!(code, Some(1));
}

/// A user of their own, removed at the end with what setup made.
struct TestUser {
    name: String,
    uid: u32,
}

impl TestUser {
    fn new() -> TestUser {
        let name = format!("agentctl-doc{}", std::process::id() % 100_000);
        let o = Command::new("useradd")
            .args(["--no-create-home", "--shell", "/usr/sbin/nologin", &name])
            .output()
            .unwrap();
        assert!(o.status.success(), "useradd: {}", text(&o.stderr));
        let uid = nix::unistd::User::from_name(&name)
            .unwrap()
            .unwrap()
            .uid
            .as_raw();
        TestUser { name, uid }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        for e in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(e.path().join("agentctl").join(self.uid.to_string()));
        }
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

#[test]
fn a_user_without_a_delegated_cgroup_is_told_to_run_setup() {
    if !require(is_root(), "root (to make a user and run setup)") {
        return;
    }
    let user = TestUser::new();
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        home.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let as_user = || {
        let o = Command::new("setpriv")
            .args([
                "--reuid",
                &user.uid.to_string(),
                "--regid",
                &user.uid.to_string(),
                "--clear-groups",
                "--",
            ])
            .arg(binary())
            .args(["doctor", "--json"])
            .env_clear()
            .env("HOME", home.path())
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .current_dir(home.path())
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {} {}", text(&o.stdout), text(&o.stderr)));
        (o.status.code(), v)
    };
    let (code, report) = as_user();
    let cgroup = finding(&report, "cgroup-limits").clone();
    let v2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type().0 == 0x6367_7270);
    if v2 {
        // Delegation on v2 is systemd's, for a user who logs in: what
        // setup does there cannot be shown by this test.
        eprintln!("cgroup v2: only the finding's shape is checked: {cgroup}");
        return;
    }
    assert_eq!(cgroup["ok"], false, "{cgroup}");
    assert!(
        cgroup["fix"].as_str().unwrap().contains("agentctl setup"),
        "{cgroup}"
    );
    assert!(
        cgroup["detail"]
            .as_str()
            .unwrap()
            .contains(&user.uid.to_string()),
        "{cgroup}"
    );
    assert_eq!(code, Some(1), "sessions cannot run: {report:#}");
    let o = Command::new(binary())
        .args(["setup", "--user", &user.name])
        .output()
        .unwrap();
    assert!(o.status.success(), "setup: {}", text(&o.stderr));
    let (code, report) = as_user();
    let cgroup = finding(&report, "cgroup-limits");
    assert_eq!(cgroup["ok"], true, "{cgroup}");
    assert!(
        cgroup["detail"]
            .as_str()
            .unwrap()
            .contains("agentctl setup"),
        "{cgroup}"
    );
    assert_eq!(code, Some(0), "{report:#}");
}

#[test]
fn the_text_report_says_ok_or_what_to_do_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(binary())
        .args(["--store", "none", "doctor"])
        .env("PATH", dir.path())
        .output()
        .unwrap();
    let out = text(&o.stdout);
    // With an empty PATH, QEMU and the browser are missing: each says so
    // and what to install.
    assert!(out.contains("MISSING  qemu"), "{out}");
    assert!(out.contains("apt-get install qemu-system-x86"), "{out}");
    assert!(
        out.contains("apt-get install chromium chromium-driver"),
        "{out}"
    );
    for line in out.lines().skip(1) {
        let line = line.trim_start();
        assert!(
            line.starts_with("ok ")
                || line.starts_with("MISSING ")
                || line.starts_with("needed for ")
                || line.starts_with("fix: ")
                || line.starts_with("every feature")
                || line.starts_with("sessions "),
            "a line that is neither OK nor what to do: {line:?}\n{out}"
        );
    }
}
