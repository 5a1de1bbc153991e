//! The Debian packages launcher/agentctl/package/build-deb.sh makes (.ci/test
//! builds them from this checkout and names their directory in
//! AGENTCTL_TEST_DEBS): what they hold, that the binary's backtraces find
//! the debug package's line tables, and that the package installs in a
//! clean Debian container and runs README's first screen there.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{require, text};

/// At most this big, installed (issue 17).
const MAX_BINARY: u64 = 30_000_000;

struct Debs {
    main: PathBuf,
    dbgsym: PathBuf,
}

fn debs() -> Option<Debs> {
    let dir = std::env::var_os("AGENTCTL_TEST_DEBS").map(PathBuf::from);
    if !require(
        dir.is_some(),
        "AGENTCTL_TEST_DEBS, a directory holding the packages of \
         launcher/agentctl/package/build-deb.sh (.ci/test builds them)",
    ) {
        return None;
    }
    let dir = dir.unwrap();
    let find = |prefix: &str| -> PathBuf {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with(prefix) && name.ends_with(".deb")
            })
            .collect();
        assert_eq!(found.len(), 1, "one {prefix}*.deb in {}", dir.display());
        found.pop().unwrap()
    };
    Some(Debs {
        main: find("agentctl_"),
        dbgsym: find("agentctl-dbgsym_"),
    })
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let o = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .unwrap();
    assert!(o.status.success(), "dpkg-deb {args:?}: {}", text(&o.stderr));
    text(&o.stdout)
}

fn extract(deb: &Path, into: &Path) {
    let o = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(into)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
}

fn build_id(elf: &Path) -> String {
    let o = Command::new("readelf").arg("-n").arg(elf).output().unwrap();
    text(&o.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_string))
        .unwrap_or_else(|| panic!("{} has no build ID", elf.display()))
}

fn sections(elf: &Path) -> String {
    let o = Command::new("readelf").arg("-S").arg(elf).output().unwrap();
    assert!(o.status.success());
    text(&o.stdout)
}

#[test]
fn the_package_holds_a_small_binary_completions_man_pages_and_units() {
    let Some(debs) = debs() else { return };
    let listing = dpkg_deb(&["-c"], &debs.main);
    for path in [
        "./usr/bin/agentctl",
        "./usr/share/bash-completion/completions/agentctl",
        "./usr/share/zsh/vendor-completions/_agentctl",
        "./usr/share/fish/vendor_completions.d/agentctl.fish",
        "./usr/share/man/man1/agentctl.1.gz",
        "./usr/share/man/man1/agentctl-run.1.gz",
        "./usr/share/man/man1/agentctl-serve.1.gz",
        "./usr/share/man/man1/agentctl-worker.1.gz",
        "./lib/systemd/system/agentctl-serve.service",
        "./lib/systemd/system/agentctl-worker.service",
        "./usr/share/doc/agentctl/copyright",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(&format!(" {path}"))),
            "{path} is not in the package:\n{listing}"
        );
    }
    // The settings may hold the store's password: root's alone.
    let default = listing
        .lines()
        .find(|l| l.ends_with(" ./etc/default/agentctl"))
        .expect("/etc/default/agentctl");
    assert!(default.starts_with("-rw------- root/root"), "{default}");
    assert!(
        listing.lines().all(|l| l.contains(" root/root ")),
        "{listing}"
    );
    // No debug file in the main package; it is the dbgsym package's.
    assert!(!listing.contains("/usr/lib/debug/"), "{listing}");

    let depends = dpkg_deb(&["-f"], &debs.main).replace('\n', " ");
    for lib in ["libc6", "libseccomp2", "libsqlite3-0"] {
        assert!(depends.contains(lib), "Depends lacks {lib}: {depends}");
    }

    let root = tempfile::tempdir().unwrap();
    extract(&debs.main, root.path());
    extract(&debs.dbgsym, root.path());
    let bin = root.path().join("usr/bin/agentctl");
    let size = std::fs::metadata(&bin).unwrap().len();
    assert!(
        size <= MAX_BINARY,
        "the installed binary is {size} bytes, more than {MAX_BINARY}"
    );
    let bin_sections = sections(&bin);
    assert!(!bin_sections.contains(".debug_line"), "{bin_sections}");
    assert!(bin_sections.contains(".gnu_debuglink"), "{bin_sections}");

    // The dbgsym package holds the binary's line tables where debuggers and
    // Rust's backtraces look them up by build ID, and says which build.
    let id = build_id(&bin);
    let debug_file = root.path().join(format!(
        "usr/lib/debug/.build-id/{}/{}.debug",
        &id[..2],
        &id[2..]
    ));
    assert!(debug_file.is_file(), "{} is missing", debug_file.display());
    assert_eq!(build_id(&debug_file), id);
    assert!(sections(&debug_file).contains(".debug_line"));
    let fields = dpkg_deb(&["-f"], &debs.dbgsym);
    assert!(fields.contains(&format!("Build-Ids: {id}")), "{fields}");
    let version = dpkg_deb(&["-f"], &debs.main)
        .lines()
        .find_map(|l| l.strip_prefix("Version: ").map(str::to_string))
        .unwrap();
    assert!(
        fields.contains(&format!("Depends: agentctl (= {version})")),
        "{fields}"
    );

    // systemd reads both units without a complaint. verify checks that the
    // binary ExecStart names exists: each is checked as a copy that starts
    // the extracted one.
    for unit in ["agentctl-serve.service", "agentctl-worker.service"] {
        let source =
            std::fs::read_to_string(root.path().join("lib/systemd/system").join(unit)).unwrap();
        assert!(source.contains("ExecStart=/usr/bin/agentctl "), "{source}");
        let copy = root.path().join(unit);
        std::fs::write(
            &copy,
            source.replace("/usr/bin/agentctl", &bin.to_string_lossy()),
        )
        .unwrap();
        let o = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&copy)
            .output();
        let Ok(o) = o else {
            require(false, "systemd-analyze (Debian: systemd)");
            return;
        };
        assert!(
            o.status.success() && text(&o.stderr).trim().is_empty(),
            "{unit}: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
    }
}

#[test]
fn backtraces_find_the_line_tables_the_debug_package_holds() {
    let Some(debs) = debs() else { return };
    let root = tempfile::tempdir().unwrap();
    extract(&debs.main, root.path());
    let bin = root.path().join("usr/bin/agentctl");
    let backtrace = || {
        let o = Command::new(&bin).arg("__backtrace").output().unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        text(&o.stdout)
    };
    // Alone, the stripped binary has nothing to name its frames with.
    let bare = backtrace();
    assert!(!bare.contains("src/cmd/mod.rs:"), "{bare}");

    // Its debug file beside it, where its .gnu_debuglink points (the
    // /usr/lib/debug/.build-id route is the container test's).
    extract(&debs.dbgsym, root.path());
    let id = build_id(&bin);
    let debug = root.path().join("usr/bin/.debug");
    std::fs::create_dir_all(&debug).unwrap();
    std::fs::copy(
        root.path().join(format!(
            "usr/lib/debug/.build-id/{}/{}.debug",
            &id[..2],
            &id[2..]
        )),
        debug.join("agentctl.debug"),
    )
    .unwrap();
    let full = backtrace();
    assert!(
        full.contains(": dispatch\n") && full.contains("src/cmd/mod.rs:"),
        "{full}"
    );
}

#[test]
fn the_package_installs_in_a_clean_container_and_runs_readmes_first_screen() {
    let Some(debs) = debs() else { return };
    if !require(support::docker_available(), "a Docker daemon") {
        return;
    }
    let base = std::env::var("AGENTCTL_TEST_BASE_IMAGE")
        .unwrap_or_else(|_| "agentctl/debian:bookworm".into());
    let present = Command::new("docker")
        .args(["image", "inspect", &base])
        .output()
        .is_ok_and(|o| o.status.success());
    if !require(
        present,
        &format!("the local Debian base {base} (images/make-base.sh builds it)"),
    ) {
        return;
    }
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let first_screen = format!(
        "{}\n{}",
        support::readme_block(&readme, "Check this host"),
        support::readme_block(&readme, "30-second demo")
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&debs.main, dir.path().join("agentctl.deb")).unwrap();
    std::fs::copy(&debs.dbgsym, dir.path().join("agentctl-dbgsym.deb")).unwrap();
    // Installed with apt, which fetches the libraries it depends on; then
    // README's blocks word for word, as root in a fresh home.
    let script = format!(
        "set -e\n\
         export DEBIAN_FRONTEND=noninteractive\n\
         apt-get update -qq >/dev/null\n\
         apt-get install -y -qq /debs/agentctl.deb /debs/agentctl-dbgsym.deb >/dev/null\n\
         echo '== installed'\n\
         bash -c '. /usr/share/bash-completion/completions/agentctl && complete -p agentctl'\n\
         cd ~\n\
         {first_screen}\n\
         echo '== backtrace'\n\
         agentctl __backtrace\n"
    );
    // What --privileged gives, spelled out: the sandbox inside needs
    // namespaces, mounts and cgroups of its own, which Docker's defaults
    // deny a container. --privileged itself asks for every capability, and
    // this kind of host (a VM without CAP_SYS_RESOURCE) refuses that. The
    // host's /sys read-write: the kernel refuses a new sysfs in a user
    // namespace while the only one visible is read-only.
    let o = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--cap-add",
            "ALL",
            "--cap-drop",
            "SYS_RESOURCE",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
            "--security-opt",
            "systempaths=unconfined",
            "--cgroupns",
            "host",
            "-v",
            "/sys:/sys",
            "-v",
        ])
        .arg(format!("{}:/debs:ro", dir.path().display()))
        .args([&base, "bash", "-c", &script])
        .output()
        .unwrap();
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("== installed"), "{out}");
    assert!(
        out.contains("-F _agentctl agentctl"),
        "bash completion loaded: {out}"
    );
    assert!(out.contains("agentctl doctor: "), "{out}\n{err}");
    assert!(out.contains("---\nOPENAI_API_KEY=\n"), "{out}\n{err}");
    assert!(!out.contains("sk-live-123"), "the secret leaked: {out}");
    assert!(out.contains("no ~/.ssh in here"), "{out}");
    let bt = &out[out.find("== backtrace").unwrap()..];
    assert!(
        bt.contains("src/cmd/mod.rs:"),
        "file and line from /usr/lib/debug: {bt}"
    );
}
