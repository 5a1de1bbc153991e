use std::fmt::Write as _;

use anyhow::Result;
use policy::NetworkMode;
use sandbox::SandboxSpec;
use sandbox::spec::{MaskKind, MountPurpose, MountSource};

use super::wiring::request;
use crate::cli::ExplainArgs;

/// Prints the plan; changes nothing on the host.
pub fn explain(args: ExplainArgs, lc: &lifecycle::Lifecycle) -> Result<u8> {
    let spec = lc.plan(&request(&args.policy, args.command))?;
    if args.json {
        let mut value = serde_json::to_value(&spec)?;
        value["hardening"] = serde_json::json!({
            "capabilities": [],
            "no_new_privileges": true,
            "readonly_rootfs": true,
            "seccomp": {
                "default_errno": spec.seccomp.default_errno,
                "rules": spec.seccomp.rules.len(),
            },
            "namespaces": namespaces(&spec),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", render(&spec));
    }
    Ok(0)
}

/// One allow rule with what it reaches, in words.
fn describe_rule(rule: &str) -> String {
    use policy::egress::Pattern;
    match policy::egress::parse_rule(rule) {
        Ok(r) => {
            let what = match &r.pattern {
                Pattern::Exact(n) => n.clone(),
                Pattern::Below(n) => format!("any name below {n}"),
                Pattern::AtOrBelow(n) => format!("{n} and any name below it"),
                Pattern::Cidr(ip, len) => format!("addresses {ip}/{len}"),
            };
            format!("{rule:<32} {what}, port {}", r.port)
        }
        Err(e) => format!("{rule:<32} INVALID: {}", e.why),
    }
}

fn namespaces(spec: &SandboxSpec) -> Vec<&'static str> {
    let mut ns = vec!["pid", "ipc", "uts", "mount", "cgroup", "user"];
    if spec.network != NetworkMode::Host {
        ns.push("network");
    }
    ns
}

pub fn render(spec: &SandboxSpec) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Sandbox plan (nothing was started)");
    let _ = writeln!(
        o,
        "  profile    {} ({})",
        spec.profile,
        spec.profile_chain.join(" -> ")
    );
    let _ = writeln!(o, "  policy     sha256:{}", spec.policy_sha256);
    let _ = writeln!(o, "  command    {}", shell_words(&spec.command));
    let ws_mode = spec
        .mounts
        .iter()
        .find(|m| m.purpose == MountPurpose::Workspace)
        .map(|m| {
            if m.writable {
                "read-write"
            } else {
                "read-only"
            }
        })
        .unwrap_or("?");
    let _ = writeln!(
        o,
        "  workspace  {} ({ws_mode}, working directory)",
        spec.workspace.display()
    );
    let _ = writeln!(
        o,
        "  user       host uid {} gid {} ({}); uid 0 inside its own user namespace, with no capabilities",
        spec.identity.host_uid, spec.identity.host_gid, spec.identity.user_name
    );
    match (&spec.network, &spec.network_reason) {
        (NetworkMode::None, _) => {
            let _ = writeln!(o, "  network    none (loopback only)");
        }
        (n, Some(why)) => {
            let _ = writeln!(o, "  network    {n}: {why}");
        }
        (n, None) => {
            let _ = writeln!(o, "  network    {n}");
        }
    }
    if spec.network == NetworkMode::Allowlist {
        let _ = writeln!(
            o,
            "             only these destinations, through agentctl's proxy outside the sandbox (nothing else: no other host, no DNS beyond these names, no UDP, no IPv6):"
        );
        for rule in &spec.network_allow {
            let _ = writeln!(o, "               {}", describe_rule(rule));
        }
        let _ = writeln!(
            o,
            "             proxy http://{} · socks5h://{} · DNS stub {} · transparent ports {}",
            sandbox::egress::HTTP_PROXY,
            sandbox::egress::SOCKS_PROXY,
            sandbox::egress::DNS,
            policy::egress::Allowlist::parse(&spec.network_allow)
                .map(|a| sandbox::egress::transparent_ports(&a)
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        );
    }
    if spec.network == NetworkMode::Host {
        let _ = writeln!(
            o,
            "             the host's network stack: every service on its loopback and interfaces is reachable"
        );
        let _ = writeln!(
            o,
            "             abstract unix sockets (X11, D-Bus): {}",
            match sandbox::landlock::abstract_unix_scoping() {
                Ok(()) => "kept out (Landlock); REACHABLE from Docker image sessions, whose init cannot apply it".to_string(),
                Err(why) => format!("REACHABLE ({why})"),
            }
        );
        let _ = writeln!(
            o,
            "             /sys: empty, except the CPU topology ({})",
            backend_native::oci::SYS_CPU
        );
    }
    let l = &spec.limits;
    // The number of containers matters only to an agent with Docker.
    let containers = if spec.docker {
        format!(" · containers {}", l.containers)
    } else {
        String::new()
    };
    let _ = writeln!(
        o,
        "  limits     pids {} · memory {} · cpus {}{containers}",
        l.pids,
        policy::ByteSize(l.memory_bytes),
        f64::from(l.cpu_millis) / 1000.0
    );

    let _ = writeln!(o, "\nMounts (the root filesystem is read-only)");
    for link in &spec.rootfs_symlinks {
        let _ = writeln!(
            o,
            "  ro  {:<40} symlink to {}",
            link.0.display(),
            link.1.display()
        );
    }
    for m in &spec.mounts {
        let what = match (&m.source, &m.purpose) {
            (_, MountPurpose::FreshHome) => "fresh empty home (only the grants below)".to_string(),
            (MountSource::Tmpfs { .. }, _) => "fresh tmpfs".to_string(),
            (MountSource::Bind { path, .. }, MountPurpose::Workspace) => {
                format!("workspace, host {}", path.display())
            }
            (MountSource::Bind { .. }, MountPurpose::HostRun) => {
                "read-only: the host runs it later (see below)".to_string()
            }
            (MountSource::Bind { .. }, MountPurpose::Pin) => {
                "pinned: cannot be renamed or replaced (it leads to a masked secret or a read-only file)".to_string()
            }
            (MountSource::Bind { path, .. }, p) => {
                let kind = match p {
                    MountPurpose::Rootfs => "host",
                    MountPurpose::HomeGrant => "granted by profile, host",
                    MountPurpose::ProfileMount => "profile mount, host",
                    MountPurpose::CommandLineMount => "--mount, host",
                    _ => "host",
                };
                format!("{kind} {}", path.display())
            }
        };
        let _ = writeln!(
            o,
            "  {}  {:<40} {what}",
            if m.writable { "rw" } else { "ro" },
            m.destination.display()
        );
    }

    let _ = writeln!(
        o,
        "\nMasked ({}): read as empty, cannot be written",
        spec.masked.len()
    );
    for m in &spec.masked {
        let kind = match m.kind {
            MaskKind::File => "file",
            MaskKind::Dir => "dir ",
        };
        let _ = writeln!(o, "  {kind}  {:<40} {}", m.path.display(), m.reason);
    }
    let _ = writeln!(
        o,
        "  and under /proc and /sys: {}",
        spec.masked_proc_paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    if !spec.host_run.is_empty() {
        let _ = writeln!(
            o,
            "\nRead-only because the host runs them later (a profile may allow kinds with writable_host_files)"
        );
        for f in &spec.host_run {
            let kind = f.kind.map_or("always".to_string(), |k| k.to_string());
            let created = match &f.placeholder {
                Some(_) => " (absent: a placeholder is created for the session)",
                None => "",
            };
            let _ = writeln!(o, "  {:<12} {}{created}: {}", kind, f.path.display(), f.why);
        }
    }
    if !spec.symlink_aliases.is_empty() {
        let _ = writeln!(o, "\nSymlinks that lead to secrets");
        for a in &spec.symlink_aliases {
            let _ = writeln!(
                o,
                "  {} -> {} ({})",
                a.link.display(),
                a.target.display(),
                a.target_state
            );
        }
    }
    if !spec.skipped.is_empty() {
        let _ = writeln!(o, "\nGranted but not on this host (skipped)");
        for s in &spec.skipped {
            let _ = writeln!(o, "  {s}");
        }
    }
    if !spec.notes.is_empty() {
        let _ = writeln!(o, "\nNotes");
        for n in &spec.notes {
            let _ = writeln!(o, "  {n}");
        }
    }

    let _ = writeln!(o, "\nEnvironment (names only; values are never shown)");
    for e in &spec.env {
        let source = match &e.source {
            policy::env::EnvSource::Base => "base".to_string(),
            policy::env::EnvSource::Profile { pattern } => format!("profile env `{pattern}`"),
            policy::env::EnvSource::ProfileSet => "profile env_set".to_string(),
            policy::env::EnvSource::CommandLine => "-e".to_string(),
            policy::env::EnvSource::Network => "the allowlist network's proxy".to_string(),
        };
        let _ = writeln!(o, "  {:<32} {source}", e.name);
    }
    for r in &spec.env_refused {
        let _ = writeln!(o, "  refused {}: {}", r.name, r.reason);
    }

    let _ = writeln!(
        o,
        "\nHardening: all capabilities dropped · no_new_privs · seccomp allowlist ({} rules, others fail with EPERM) · namespaces: {}",
        spec.seccomp.rules.len(),
        namespaces(spec).join(", ")
    );
    let s = &spec.scan;
    let _ = writeln!(
        o,
        "Secret scan: {} files in {} directories across {} trees, {:.1} ms",
        s.files,
        s.dirs,
        s.roots,
        s.micros as f64 / 1000.0
    );
    o
}

fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
