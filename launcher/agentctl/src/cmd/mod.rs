//! One module per subcommand; `wiring` holds what they share. Each
//! parses nothing (clap did), asks the lifecycle or a crate, and prints.

mod admin;
mod bundle;
mod completions;
mod doctor;
mod egress;
mod explain;
mod image;
mod profiles;
mod proxy;
mod ps;
mod remote;
mod run;
mod serve;
mod session;
mod setup;
mod stack;
mod wiring;
mod worker;

use anyhow::{Context, Result};
use lifecycle::StoreLocation;

use crate::cli::Command;

pub fn dispatch(command: Command, store: StoreLocation, server: Option<String>) -> Result<u8> {
    if let Some(server) = server.as_deref().filter(|s| !s.is_empty())
        && remote::handles(&command)
    {
        return remote::dispatch(server, command);
    }
    if matches!(command, Command::Login { .. } | Command::Logout) {
        anyhow::bail!("login and logout need --server URL (or AGENTCTL_SERVER)");
    }
    // The sandbox's init and the native helper and exec run inside or
    // beside a sandbox before it is whole: nothing of the lifecycle is built
    // for them (its user lookup would load NSS modules from the sandbox's
    // root into agentctl's init), so it is built on first use.
    let location = store.clone();
    let lc = std::cell::LazyCell::new(|| wiring::lifecycle(store));
    let store = &lc;
    match command {
        c @ (Command::Init { .. }
        | Command::NativeExec { .. }
        | Command::NativeHelper { .. }
        | Command::VmHelper { .. }
        | Command::VmExec { .. }) => internal(c),
        Command::Run(args) => run::run(args, store),
        Command::Doctor(args) => doctor::doctor(args, &location),
        Command::Completions { shell } => completions::completions(shell),
        Command::Man { dir } => completions::man(&dir),
        Command::Ps(args) => ps::ps(args, store),
        // A service of the stack has a name no session id can have.
        Command::Logs {
            session, follow, ..
        } if ::stack::services::known(&session) => stack::logs(&session, follow),
        Command::Logs {
            session,
            follow,
            raw,
        } => session::logs(&session, follow, raw, store),
        Command::Stop { session, time } => session::stop(&session, time, store),
        Command::Rm { session, force } => session::rm(&session, force, store),
        Command::Exec {
            session,
            no_tty,
            command,
        } => session::exec(&session, no_tty, command, store),
        Command::Audit {
            session,
            verify,
            json,
        } => session::audit(&session, verify, json, store),
        Command::Gc => session::gc(store),
        Command::Proxy(args) => proxy::proxy(args, store),
        Command::Serve(args) => serve::serve(args, store),
        Command::Admin(cmd) => admin::admin(cmd, store),
        Command::SessionExit { session } => session::session_exit(&session, store),
        Command::WatchStops { session } => {
            store.watch_stops(&session)?;
            Ok(0)
        }
        Command::Worker(args) => worker::worker(args, store),
        Command::WorkerJob => worker::job(),
        Command::Login { .. } | Command::Logout => unreachable!("handled above"),
        Command::Explain(args) => explain::explain(args, store),
        Command::Profiles(args) => profiles::profiles(args),
        Command::Setup(args) => setup::setup(args),
        Command::Bundle(args) => bundle::bundle(args, store),
        Command::Image(cmd) => image::image(cmd),
        Command::Up(args) => stack::up(args),
        Command::Down { volumes, yes } => stack::down(volumes, yes),
        Command::Status { json } => stack::status(json),
        Command::Probe { url } => stack::probe(&url),
        Command::Backtrace => {
            // What a panic under RUST_BACKTRACE=1 would show, without one.
            println!("{}", std::backtrace::Backtrace::force_capture());
            Ok(0)
        }
        Command::Egress {
            session_dir,
            ready_fd,
            hold_fd,
        } => egress::egress(&session_dir, ready_fd, hold_fd, lc.store.clone()),
        // Inside a container: nothing of the lifecycle is built for it.
        Command::EgressPlant { send_to, ports } => egress::plant(&send_to, &ports),
    }
}

/// The hidden entry points of the sandbox's processes.
fn internal(command: Command) -> Result<u8> {
    match command {
        Command::Init {
            tty,
            size,
            scope_abstract_unix,
            verify_masks,
            command,
        } => {
            if let Err(e) = backend_native::verify_masks_of("self", &verify_masks) {
                eprintln!("agentctl: {e}");
                return Ok(backend_native::LAUNCHER_FAILURE as u8);
            }
            if let Some((rows, cols)) = size.as_deref().and_then(|s| s.split_once('x')) {
                let ws = libc::winsize {
                    ws_row: rows.parse().unwrap_or(0),
                    ws_col: cols.parse().unwrap_or(0),
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                // SAFETY: TIOCSWINSZ reads a winsize we own.
                unsafe { libc::ioctl(0, libc::TIOCSWINSZ, &ws) };
            }
            let argv: Vec<std::ffi::CString> = command
                .into_iter()
                .map(|a| std::ffi::CString::new(a).context("an argument contains a NUL byte"))
                .collect::<Result<_>>()?;
            backend_native::run_as_init(&argv, tty, scope_abstract_unix, false)
        }
        Command::NativeExec {
            session_dir,
            tty,
            command,
        } => {
            let code = backend_native::exec_main(&session_dir, tty, command);
            Ok(u8::try_from(code).unwrap_or(backend_native::LAUNCHER_FAILURE as u8))
        }
        Command::NativeHelper { session_dir } => {
            let code = backend_native::helper_main(&session_dir);
            Ok(u8::try_from(code).unwrap_or(backend_native::LAUNCHER_FAILURE as u8))
        }
        Command::VmHelper { session_dir } => {
            let code = backend_vm::helper_main(&session_dir);
            Ok(u8::try_from(code).unwrap_or(backend_native::LAUNCHER_FAILURE as u8))
        }
        Command::VmExec {
            session_dir,
            tty,
            command,
        } => {
            let code = backend_vm::relay::exec_main(&session_dir, tty, command);
            Ok(u8::try_from(code).unwrap_or(backend_native::LAUNCHER_FAILURE as u8))
        }
        _ => anyhow::bail!("not an internal command"),
    }
}
