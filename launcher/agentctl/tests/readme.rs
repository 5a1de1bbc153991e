//! README's first screen works as written: the `sh` blocks under "Check
//! this host" and "30-second demo" run, word for word, with this build's
//! agentctl first on PATH, as root and as an unprivileged user (the one
//! `agentctl setup` was run for). The install block's script is what
//! .ci/test's package step runs (its .deb is tests/package.rs's).

mod support;

use std::path::Path;
use std::process::Command;

use support::{Runner, binary, text};

fn run_first_screen(runner: Runner) {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let script = format!(
        "set -e\n{}\n{}",
        support::readme_block(&readme, "Check this host"),
        support::readme_block(&readme, "30-second demo")
    );
    assert!(script.contains("agentctl doctor"), "{script}");
    let home = tempfile::tempdir().unwrap();
    runner.own_home(home.path());
    // The runner's clean environment (HOME, USER, the VM's kernel...),
    // with this build's agentctl first on PATH and a store of the test's.
    let base = runner.agentctl(home.path(), home.path());
    let mut sh = Command::new("sh");
    sh.args(["-c", &script]).env_clear();
    for (k, v) in base.get_envs() {
        if let Some(v) = v {
            sh.env(k, v);
        }
    }
    sh.env(
        "PATH",
        format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            binary().parent().unwrap().display()
        ),
    )
    .env(
        "AGENTCTL_STORE",
        format!("sqlite://{}", home.path().join("store.db").display()),
    )
    .current_dir(home.path());
    if let Runner::User { uid, gid, .. } = &runner {
        use std::os::unix::process::CommandExt;
        sh.uid(*uid).gid(*gid);
    }
    let o = sh.output().unwrap();
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("agentctl doctor: "), "{out}");
    assert!(
        out.contains("---\nOPENAI_API_KEY=\n"),
        "the demo's output: {out}\n{err}"
    );
    assert!(!out.contains("sk-live-123"), "the secret leaked: {out}");
    assert!(out.contains("no ~/.ssh in here"), "{out}");
    // And on the host, the secret is untouched.
    assert_eq!(
        std::fs::read_to_string(home.path().join("agentctl-demo/.env")).unwrap(),
        "OPENAI_API_KEY=sk-live-123\n"
    );
}

#[test]
fn the_first_screen_works_as_root() {
    if !support::require(support::is_root(), "root") {
        return;
    }
    run_first_screen(Runner::Current);
}

#[test]
fn the_first_screen_works_for_a_user_after_setup() {
    let Some(runner) = Runner::unprivileged() else {
        return;
    };
    run_first_screen(runner);
}
