//! `agentctl doctor`: what this host can run, checked for every feature at
//! once, each line OK or what to do. The same checks the first run of each
//! feature makes (the libraries' own: user namespaces, cgroup delegation,
//! the engine, the store's schema, the guest kernel), run side by side so
//! that the whole takes about as long as the slowest. Nothing is changed:
//! a store that does not exist yet is not made, a schema is not migrated.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Result;
use lifecycle::StoreLocation;
use serde::Serialize;

use crate::cli::DoctorArgs;

/// Checks that every session needs; the others are per feature.
const EVERY_SESSION: &str = "every session";

#[derive(Serialize, Debug)]
struct Finding {
    /// A stable name, for scripts.
    check: &'static str,
    /// What the check is needed for: every session, or a feature.
    needed_for: &'static str,
    ok: bool,
    /// What was found.
    detail: String,
    /// What to do when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

impl Finding {
    fn ok(check: &'static str, needed_for: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            check,
            needed_for,
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    fn missing(
        check: &'static str,
        needed_for: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            check,
            needed_for,
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

#[derive(Serialize)]
struct Report {
    user: String,
    uid: u32,
    kernel: String,
    findings: Vec<Finding>,
}

pub fn doctor(args: DoctorArgs, store: &StoreLocation) -> Result<u8> {
    let uid = nix::unistd::geteuid();
    let rootless = !uid.is_root();
    // Before any thread exists: the check forks.
    let userns = user_namespaces(rootless);
    let url = store.0.clone();
    let findings: Vec<Finding> = std::thread::scope(|s| {
        let checks: Vec<std::thread::ScopedJoinHandle<'_, Vec<Finding>>> = vec![
            s.spawn(|| vec![seccomp()]),
            s.spawn(|| vec![cgroup_limits(uid.as_raw(), rootless)]),
            s.spawn(|| vec![session_store(url.as_deref())]),
            s.spawn(|| vec![bridge_network()]),
            s.spawn(|| vec![docker_engine()]),
            s.spawn(|| vec![compose_tool()]),
            s.spawn(vm),
            s.spawn(|| vec![browser()]),
        ];
        let mut all = vec![userns];
        for c in checks {
            all.extend(c.join().unwrap_or_else(|_| {
                vec![Finding::missing(
                    "doctor",
                    EVERY_SESSION,
                    "a check failed unexpectedly",
                    "report this as a bug",
                )]
            }));
        }
        all
    });
    let report = Report {
        user: nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| uid.to_string()),
        uid: uid.as_raw(),
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        findings,
    };
    let core_ok = report
        .findings
        .iter()
        .all(|f| f.ok || f.needed_for != EVERY_SESSION);
    let text = if args.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        render(&report)
    };
    // A reader that stops early (`| head`) is not an error.
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    Ok(if core_ok { 0 } else { 1 })
}

fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "agentctl doctor: {} (uid {}), Linux {}",
        r.user, r.uid, r.kernel
    );
    for f in &r.findings {
        let mark = if f.ok { "ok" } else { "MISSING" };
        let _ = writeln!(o, "  {mark:<8} {:<16} {}", f.check, f.detail);
        if let Some(fix) = &f.fix {
            let _ = writeln!(o, "  {:<8} {:<16} needed for {}", "", "", f.needed_for);
            let _ = writeln!(o, "  {:<8} {:<16} fix: {fix}", "", "");
        }
    }
    let missing: Vec<&Finding> = r.findings.iter().filter(|f| !f.ok).collect();
    let _ = writeln!(
        o,
        "{}",
        if missing.is_empty() {
            "every feature can run here"
        } else if missing.iter().any(|f| f.needed_for == EVERY_SESSION) {
            "sessions cannot run here until the MISSING lines needed for every session are fixed"
        } else {
            "sessions can run here; the features marked MISSING cannot yet"
        }
    );
    o
}

/// Whether this user can make a user namespace: tried in a child, since
/// sysctls do not tell everything (AppArmor's restriction, a seccomp
/// filter of a container agentctl runs in).
fn user_namespaces(rootless: bool) -> Finding {
    const CHECK: &str = "user-namespaces";
    // SAFETY: no thread has been started; the child makes two system calls
    // and leaves with _exit.
    let code = match unsafe { libc::fork() } {
        0 => unsafe {
            let r = libc::unshare(libc::CLONE_NEWUSER);
            libc::_exit(if r == 0 { 0 } else { *libc::__errno_location() })
        },
        -1 => -1,
        pid => {
            let mut status = 0;
            // SAFETY: waiting for the child just forked.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -1
            }
        }
    };
    let hint = backend_native::preflight::UsernsSysctls::read().problem(rootless);
    if code == 0 {
        return Finding::ok(
            CHECK,
            EVERY_SESSION,
            if rootless {
                "unprivileged user namespaces work"
            } else {
                "user namespaces work"
            },
        );
    }
    let why = if code > 0 {
        nix::errno::Errno::from_raw(code).desc().to_string()
    } else {
        "the test process failed".into()
    };
    Finding::missing(
        CHECK,
        EVERY_SESSION,
        format!("cannot make a user namespace: {why}"),
        hint.unwrap_or_else(|| {
            "allow unprivileged user namespaces (docs/ROOTLESS.md), or run agentctl as root".into()
        }),
    )
}

fn seccomp() -> Finding {
    const CHECK: &str = "seccomp";
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let actions =
        std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    if status.lines().any(|l| l.starts_with("Seccomp:"))
        && actions.split_whitespace().any(|a| a == "errno")
    {
        Finding::ok(CHECK, EVERY_SESSION, "filters available")
    } else {
        Finding::missing(
            CHECK,
            EVERY_SESSION,
            "this kernel has no seccomp filters",
            "use a kernel built with CONFIG_SECCOMP_FILTER",
        )
    }
}

fn cgroup_limits(uid: u32, rootless: bool) -> Finding {
    const CHECK: &str = "cgroup-limits";
    let layout = cgroups::detect()
        .map(|h| h.name().to_string())
        .unwrap_or_else(|_| "no cgroupfs".into());
    match cgroups::mode_for("doctor", uid, rootless, false) {
        Ok(cgroups::CgroupMode::DelegatedV1 { .. }) => Finding::ok(
            CHECK,
            EVERY_SESSION,
            format!("{layout}: /agentctl/{uid} is delegated to this user (agentctl setup)"),
        ),
        Ok(cgroups::CgroupMode::DelegatedV2 { .. }) => Finding::ok(
            CHECK,
            EVERY_SESSION,
            format!("{layout}: systemd delegates a scope to this user"),
        ),
        Ok(_) => Finding::ok(
            CHECK,
            EVERY_SESSION,
            format!("{layout}: pids, memory and cpu, as root"),
        ),
        Err(r) => Finding::missing(CHECK, EVERY_SESSION, r.reason, r.fix),
    }
}

fn session_store(url: Option<&str>) -> Finding {
    const CHECK: &str = "session-store";
    let Some(url) = url else {
        return Finding::ok(CHECK, EVERY_SESSION, "--store none: no record is kept");
    };
    let shown = store::redact_url(url);
    if let Some(path) = store::sqlite_file(url) {
        let Ok(meta) = std::fs::metadata(&path) else {
            // Made on the first run (its directory 0700, the file 0600).
            let dir = path
                .ancestors()
                .skip(1)
                .find(|a| a.exists())
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let writable = nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK).is_ok();
            return if writable {
                Finding::ok(
                    CHECK,
                    EVERY_SESSION,
                    format!("{shown}: none yet; the first session makes it"),
                )
            } else {
                Finding::missing(
                    CHECK,
                    EVERY_SESSION,
                    format!("{shown}: none yet, and {} is not writable", dir.display()),
                    "choose another with --store sqlite://PATH (or AGENTCTL_STORE)",
                )
            };
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Finding::missing(
                CHECK,
                EVERY_SESSION,
                format!(
                    "{shown}: mode {mode:03o}, readable by others (it holds every session's output)"
                ),
                format!("chmod 600 {}", path.display()),
            );
        }
    }
    let opened = blocking::block_on(async {
        let connect = store::SessionStore::connect_with(
            url,
            &store::ConnectOptions {
                max_connections: 1,
                migrate: false,
            },
        );
        let s = tokio::time::timeout(std::time::Duration::from_secs(3), connect)
            .await
            .map_err(|_| "no answer within 3 s".to_string())?
            .map_err(|e| e.to_string())?;
        let version = s.version().await.map_err(|e| e.to_string())?;
        let schema = s.schema_status().await.map_err(|e| e.to_string())?;
        s.close().await;
        Ok::<_, String>((version, schema))
    });
    match opened {
        Err(e) => Finding::missing(
            CHECK,
            EVERY_SESSION,
            format!("{shown}: {e}"),
            "check the URL, that the database runs and this user may open it",
        ),
        Ok((_, schema)) if !schema.unknown().is_empty() || !schema.failed.is_empty() => {
            Finding::missing(
                CHECK,
                EVERY_SESSION,
                format!(
                    "{shown}: migrations {:?} are a newer agentctl's, {:?} failed halfway",
                    schema.unknown(),
                    schema.failed
                ),
                "upgrade agentctl, or repair the database (docs/STORE.md)",
            )
        }
        Ok((version, schema)) => {
            let pending = schema.pending();
            Finding::ok(
                CHECK,
                EVERY_SESSION,
                if pending.is_empty() {
                    format!(
                        "{shown}: {version}, schema up to date ({} migrations)",
                        schema.applied.len()
                    )
                } else {
                    format!(
                        "{shown}: {version}, {} migrations to apply on the next run",
                        pending.len()
                    )
                },
            )
        }
    }
}

fn bridge_network() -> Finding {
    const CHECK: &str = "slirp4netns";
    const FOR: &str = "--network bridge (native, vm)";
    let Some(bin) = sandbox::slirp::find() else {
        return Finding::missing(
            CHECK,
            FOR,
            "slirp4netns is not installed",
            "apt-get install slirp4netns",
        );
    };
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(_) => Finding::ok(
            CHECK,
            FOR,
            format!("{}, /dev/net/tun usable", bin.display()),
        ),
        Err(e) => Finding::missing(
            CHECK,
            FOR,
            format!("/dev/net/tun: {e}"),
            "sudo chmod 0666 /dev/net/tun (most distributions ship it so), or modprobe tun",
        ),
    }
}

fn docker_engine() -> Finding {
    const CHECK: &str = "docker-engine";
    const FOR: &str = "--backend docker, the Docker proxy, agentctl up";
    match lifecycle::backends::docker_engine() {
        Ok((version, api)) => Finding::ok(CHECK, FOR, format!("Docker {version}, API {api}")),
        Err((reason, fix)) => Finding::missing(CHECK, FOR, reason, fix),
    }
}

fn compose_tool() -> Finding {
    const CHECK: &str = "compose";
    const FOR: &str = "agentctl up";
    match stack::compose::detect() {
        Ok(tool) => Finding::ok(CHECK, FOR, format!("`{}`", tool.name())),
        Err(e) => Finding::missing(
            CHECK,
            FOR,
            e.to_string(),
            "apt-get install docker-compose (v1), or Docker's docker-compose-plugin (v2)",
        ),
    }
}

fn vm() -> Vec<Finding> {
    const FOR: &str = "--backend vm";
    // Looked up as the backend looks it up (PATH only).
    let qemu = match backend_vm::find_program(Path::new("qemu-system-x86_64")) {
        None => Finding::missing(
            "qemu",
            FOR,
            "qemu-system-x86_64 is not installed",
            "apt-get install qemu-system-x86",
        ),
        Some(p) => {
            let accel = match vmm::Probe::host().kvm_unusable() {
                None => "KVM".to_string(),
                Some(why) => format!("TCG (software emulation, slower): {why}"),
            };
            Finding::ok("qemu", FOR, format!("{}; {accel}", p.display()))
        }
    };
    let kernel = match backend_vm::guest::find_kernel(&backend_vm::guest::search_roots()) {
        Ok(k) => Finding::ok("guest-kernel", FOR, k.vmlinuz.display().to_string()),
        Err(e) => Finding::missing("guest-kernel", FOR, e, backend_vm::guest::no_kernel_fix()),
    };
    vec![qemu, kernel]
}

fn browser() -> Finding {
    const CHECK: &str = "browser";
    const FOR: &str = "developers: the dashboard's browser tests";
    // The tests find them on PATH.
    let on_path = |name: &str| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join(name).is_file())
    };
    let missing: Vec<&str> = ["chromium", "chromedriver"]
        .into_iter()
        .filter(|p| !on_path(p))
        .collect();
    if missing.is_empty() {
        Finding::ok(CHECK, FOR, "chromium and chromedriver")
    } else {
        Finding::missing(
            CHECK,
            FOR,
            format!("{} not installed", missing.join(" and ")),
            "apt-get install chromium chromium-driver",
        )
    }
}
