//! `agentctl run`: the lifecycle starts the session; this prints what the
//! user should know and turns the end into an exit code.

use std::io::IsTerminal;

use anyhow::Result;
use lifecycle::Lifecycle;
use sandbox::RunOptions;

use super::wiring::{backend_kind, plural, request};
use crate::cli::{AccelArg, RunArgs};

pub fn run(args: RunArgs, lc: &Lifecycle) -> Result<u8> {
    if args.git.is_some() || !args.labels.is_empty() {
        anyhow::bail!(
            "--git and --label ask a team server's workers; give --server URL (or AGENTCTL_SERVER)"
        );
    }
    if let Some(a) = args.accel {
        backend_vm::set_accel(match a {
            AccelArg::Auto => vmm::AccelChoice::Auto,
            AccelArg::Kvm => vmm::AccelChoice::Kvm,
            AccelArg::Tcg => vmm::AccelChoice::Tcg,
        });
    }
    let req = request(&args.policy, args.command.clone());
    let launch = lc.prepare_asked(
        || lc.plan(&req),
        args.backend.map(backend_kind),
        args.detach,
        &req.asked(),
    )?;
    let spec = launch.spec();
    if !args.quiet {
        let network = match &spec.network_reason {
            Some(_) => format!("{} (see `agentctl explain`)", spec.network),
            None => spec.network.to_string(),
        };
        eprintln!(
            "agentctl: session {} · profile {} · {} masked · network {}{}",
            spec.session.short(),
            spec.profile,
            plural(spec.masked.len(), "path"),
            network,
            if args.no_limits { " · NO LIMITS" } else { "" },
        );
        if spec.docker {
            eprintln!(
                "agentctl: Docker at /var/run/docker.sock through agentctl's proxy (role session): the agent's own containers only"
            );
        }
    }
    // Not behind -q: a credential the agent can read is worth a line.
    for warning in spec.notes.iter().filter(|n| n.starts_with("warning: ")) {
        eprintln!("agentctl: {warning}");
    }
    // Not behind -q: the user chose the host network, but may not know that
    // it carries the desktop's sockets with it where they cannot be kept out.
    if spec.network == policy::NetworkMode::Host {
        let why = match sandbox::landlock::abstract_unix_scoping() {
            Err(why) => Some(why),
            Ok(()) if launch.backend() == store::Backend::Docker && spec.image.is_some() => {
                Some("an image's own init cannot apply Landlock".to_string())
            }
            Ok(()) => None,
        };
        if let Some(why) = why {
            eprintln!(
                "agentctl: warning: network host: the host's abstract unix sockets (X11, D-Bus) are reachable from the sandbox: {why}"
            );
        }
    }
    let opts = RunOptions {
        tty: !args.detach
            && !args.no_tty
            && std::io::stdin().is_terminal()
            && std::io::stdout().is_terminal(),
        no_limits: args.no_limits,
        // The launch sets it for a foreground session.
        output_copy: None,
    };
    if args.detach {
        println!("{}", launch.detach(&opts)?);
        return Ok(0);
    }
    let ended = launch.run(&opts, &|_| {})?;
    if let Some(message) = &ended.message {
        eprintln!("agentctl: {message}");
    }
    Ok(ended.code.clamp(0, 255) as u8)
}
