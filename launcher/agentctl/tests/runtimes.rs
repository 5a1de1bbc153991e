//! The bundles agentctl generates run unchanged under Debian's runc and
//! crun: `agentctl bundle` writes exactly what the native backend runs.

mod support;

use std::path::Path;
use std::process::Command;

use support::{is_root, require, text};

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("agentctl-rt-")
        .tempdir()
        .unwrap();
    std::fs::write(dir.path().join(".env"), "SECRET-runtime").unwrap();
    std::fs::write(dir.path().join("README.md"), "visible").unwrap();
    std::fs::write(dir.path().join("seccomp32.py"), SECCOMP32).unwrap();
    dir
}

/// AF_VSOCK and TIOCSTI with and without high bits set (the script says
/// why), shared with the conformance probe.
const SECCOMP32: &str = include_str!("conformance/seccomp32.py");

fn bundle(ws: &Path, out: &Path, id: &str) {
    let o = Command::new(support::binary())
        .args(["bundle", "--out"])
        .arg(out)
        .args(["--cgroups-path", &format!("/agentctl/{id}"), "--"])
        .args([
            "sh",
            "-c",
            "cat .env; cat README.md; echo; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\\t'; python3 seccomp32.py </dev/null; exit 7",
        ])
        .current_dir(ws)
        .output()
        .unwrap();
    assert!(o.status.success(), "agentctl bundle: {}", text(&o.stderr));
}

fn check(runtime: &str, out: &std::process::Output) {
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{runtime} exit: {stdout} {}",
        text(&out.stderr)
    );
    assert!(stdout.contains("visible"), "{runtime}: {stdout}");
    assert!(
        !stdout.contains("SECRET-"),
        "{runtime} exposed a secret: {stdout}"
    );
    assert!(
        stdout.contains("CapEff:0000000000000000"),
        "{runtime}: {stdout}"
    );
    assert!(stdout.contains("NoNewPrivs:1"), "{runtime}: {stdout}");
    assert!(stdout.contains("Seccomp:2"), "{runtime}: {stdout}");
    assert!(
        stdout
            .contains("vsock=errno1 vsock-high=errno1 tiocsti=errno1 tiocsti-high=errno1 unix=ok"),
        "{runtime}: AF_VSOCK or TIOCSTI passed the filter with high bits set: {stdout}"
    );
}

fn installed(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn runc_runs_the_generated_bundle() {
    if !require(is_root(), "root (runc needs it for this bundle)")
        || !require(installed("runc"), "runc (`apt-get install runc`)")
    {
        return;
    }
    let ws = workspace();
    let b = tempfile::tempdir().unwrap();
    let id = format!("agentctl-runc-test-{}", std::process::id());
    bundle(ws.path(), b.path(), &id);
    let state = tempfile::tempdir().unwrap();
    let out = Command::new("runc")
        .arg("--root")
        .arg(state.path())
        .args(["run", "--bundle"])
        .arg(b.path())
        .arg(&id)
        .output()
        .unwrap();
    check("runc", &out);
}

#[test]
fn crun_runs_the_generated_bundle() {
    if !require(is_root(), "root (crun needs it for this bundle)")
        || !require(installed("crun"), "crun (`apt-get install crun`)")
    {
        return;
    }
    let ws = workspace();
    let b = tempfile::tempdir().unwrap();
    let id = format!("agentctl-crun-test-{}", std::process::id());
    bundle(ws.path(), b.path(), &id);
    let state = tempfile::tempdir().unwrap();
    // crun 1.8 refuses a hybrid cgroup host while the v2 mount is visible;
    // hide it in a private mount namespace, as its error message advises.
    let script = format!(
        "if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified; fi; exec crun --root {} run --bundle {} {id}",
        state.path().display(),
        b.path().display()
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    check("crun", &out);
}
