//! The agentctl binary: argument parsing and wiring. Decisions live in the
//! policy crate, planning in sandbox, execution in the backends.

mod cli;
mod cmd;
mod progress;

use std::process::ExitCode;

use clap::Parser;

/// docker's code for "the launcher itself failed".
const LAUNCHER_FAILURE: u8 = 125;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing();
    if matches!(
        cli.command,
        cli::Command::Run(_) | cli::Command::Exec { .. } | cli::Command::WorkerJob
    ) {
        // First, while this process has one thread (the call changes only
        // the calling thread's keyring): nothing agentctl opens or starts
        // for a session holds the caller's session keyring. The helper
        // gives each sandbox one of its own as well.
        if let Err(e) = backend_native::fresh_session_keyring() {
            eprintln!("agentctl: {e}");
            return ExitCode::from(LAUNCHER_FAILURE);
        }
    }
    // Without --store, the stack's store while `agentctl up` has it up
    // (the marker goes with `agentctl down`), else the local default.
    let store = lifecycle::StoreLocation::resolve(
        cli.store
            .or_else(|| stack::store_marker(&stack::default_dir())),
    );
    match cmd::dispatch(cli.command, store, cli.server) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let text = format!("{err:#}");
            eprintln!("agentctl: {text}");
            // A control this host could not apply: the user learns about
            // the rest at once rather than one refusal at a time.
            if text.contains("\n  fix: ") {
                eprintln!("  `agentctl doctor` checks this host for every feature at once");
            }
            ExitCode::from(LAUNCHER_FAILURE)
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    // libcontainer logs every failure it returns; agentctl prints the
    // error once, so its logs stay off unless asked for.
    let filter = EnvFilter::try_from_env("AGENTCTL_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,libcontainer=off,libcgroups=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
