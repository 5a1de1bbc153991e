//! Shell completions and man pages, generated from the CLI's own
//! definitions: the scripts load in bash and zsh without a word on stderr
//! and complete `agentctl run --prof` to `--profile`; the man pages render
//! and name what the parser accepts.

mod support;

use std::process::Command;

use support::{binary, require, text};

fn have(program: &str) -> bool {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join(program).is_file())
}

/// A PATH whose first directory holds this build's agentctl.
fn path_with_agentctl() -> String {
    format!(
        "{}:{}",
        binary().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn script(shell: &str) -> String {
    let o = Command::new(binary())
        .args(["completions", shell])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    text(&o.stdout)
}

#[test]
fn bash_completes_run_prof_to_profile() {
    if !require(have("bash"), "bash") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agentctl.bash");
    std::fs::write(&file, script("bash")).unwrap();
    // What bash does on Tab: the words, the cursor's word, the function.
    let o = Command::new("bash")
        .arg("-c")
        .arg(
            r#"source "$1" || exit 3
COMP_WORDS=(agentctl run --prof); COMP_CWORD=2
COMP_LINE="agentctl run --prof"; COMP_POINT=${#COMP_LINE}
_agentctl agentctl --prof run
printf '%s\n' "${COMPREPLY[@]}""#,
        )
        .arg("bash")
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stderr), "", "the script says something when loaded");
    let got: Vec<String> = text(&o.stdout).lines().map(str::to_string).collect();
    assert_eq!(got, ["--profile"], "completions of --prof");
}

#[test]
fn zsh_loads_the_script_and_completes_run_prof_to_profile() {
    if !require(have("zsh"), "zsh (`apt-get install zsh`)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("_agentctl"), script("zsh")).unwrap();
    let load = Command::new("zsh")
        .args(["-f", "-c"])
        .arg(r#"fpath=($1 $fpath); autoload -U compinit && compinit -u && autoload -U _agentctl && echo loaded"#)
        .arg("zsh")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(load.status.success(), "{}", text(&load.stderr));
    assert_eq!(text(&load.stderr), "");
    let typed = Command::new("timeout")
        .arg("60")
        .args(["zsh", "-f"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/shell/complete.zsh"
        ))
        .arg(dir.path())
        .env("PATH", path_with_agentctl())
        .output()
        .unwrap();
    let out = text(&typed.stdout);
    assert!(
        out.contains("agentctl run --profile"),
        "zsh did not complete --prof to --profile: {out:?} {}",
        text(&typed.stderr)
    );
}

#[test]
fn man_pages_render_and_leave_internal_commands_out() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(binary())
        .args(["man", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for want in [
        "agentctl.1",
        "agentctl-run.1",
        "agentctl-doctor.1",
        "agentctl-completions.1",
    ] {
        assert!(
            pages.contains(&want.to_string()),
            "{want} missing: {pages:?}"
        );
    }
    assert!(
        pages
            .iter()
            .all(|p| !p.contains("__") && !p.contains("helper")),
        "an internal command has a page: {pages:?}"
    );
    let run = std::fs::read_to_string(dir.path().join("agentctl-run.1")).unwrap();
    assert!(run.contains("profile"), "{run}");
    if !require(have("man"), "man (`apt-get install man-db`)") {
        return;
    }
    let shown = Command::new("man")
        .arg("-l")
        .arg(dir.path().join("agentctl-run.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let page = text(&shown.stdout);
    assert!(page.contains("agentctl-run - Run a command"), "{page}");
    assert!(page.contains("--no-limits"), "{page}");
}
