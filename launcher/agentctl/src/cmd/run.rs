use std::io::IsTerminal;

use anyhow::Result;
use sandbox::{Backend, BackendError, RunOptions};

use crate::cli::{BackendKind, RunArgs};

pub fn run(args: RunArgs) -> Result<u8> {
    let spec = super::plan(&args.policy, args.command.clone())?;
    let opts = RunOptions {
        tty: !args.no_tty && std::io::stdin().is_terminal() && std::io::stdout().is_terminal(),
        no_limits: args.no_limits,
    };
    let backend: Box<dyn Backend> = match args.backend {
        BackendKind::Native => Box::new(super::native_backend()),
        BackendKind::Docker => Box::new(backend_docker::DockerBackend::new(super::self_path())),
    };
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
    }
    match backend.run(&spec, &opts, &sandbox::NoObserver) {
        Ok(status) => Ok(status.code().clamp(0, 255) as u8),
        Err(BackendError::Exec { message, code }) => {
            eprintln!("agentctl: {message}");
            Ok(code as u8)
        }
        Err(e) => Err(e.into()),
    }
}

pub fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
