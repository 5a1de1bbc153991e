mod bundle;
mod explain;
mod image;
mod profiles;
mod proxy;

pub use proxy::stop_session_proxy;
mod ps;
mod run;
mod session;
mod setup;

use std::path::PathBuf;

use anyhow::{Context, Result};
use sandbox::{HostFacts, PlanRequest, SandboxSpec};

use crate::cli::{Command, PolicyArgs};
use crate::loader::FsLoader;

pub fn dispatch(command: Command, store: &crate::record::StoreUrl) -> Result<u8> {
    match command {
        Command::Run(args) => run::run(args, store),
        Command::Ps(args) => ps::ps(args, store),
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
        Command::SessionExit { session } => session::session_exit(&session, store),
        Command::Explain(args) => explain::explain(args),
        Command::Profiles(args) => profiles::profiles(args),
        Command::Setup(args) => setup::setup(args),
        Command::Bundle(args) => bundle::bundle(args),
        Command::Image(cmd) => image::image(cmd),
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
    }
}

/// Resolves the profile and plans the session: shared by run, explain and
/// bundle, so all three show and run exactly the same thing.
pub fn plan(args: &PolicyArgs, command: Vec<String>) -> Result<SandboxSpec> {
    let policy = policy::resolve(&args.profile, &FsLoader::new())?;
    let workspace = match &args.workspace {
        Some(w) => w.clone(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let host = HostFacts::current()?;
    let spec = sandbox::plan(
        PlanRequest {
            policy,
            workspace,
            command,
            network: args.network.map(Into::into),
            mounts: args.mounts.clone(),
            env: args.env.clone(),
            image: args.image.clone(),
            allow_home_workspace: args.allow_home_workspace,
            own_state: own_state()?,
        },
        &host,
    )?;
    Ok(spec)
}

/// agentctl's own files for this user: profiles, the data directory
/// (store, logs, the image cache), the runtime directory, and wherever
/// AGENTCTL_IMAGES and a SQLite AGENTCTL_STORE point.
///
/// The directories are made (0700) when missing: the plan masks only what
/// exists, and a directory that does not exist yet under a read-write grant
/// (`~/.config:rw` without `~/.config/agentctl`) would let the agent make
/// it and plant a profile that the next session loads. explain and bundle
/// make them too; they are agentctl's own and it makes them on first use
/// anyway.
fn own_state() -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = Vec::new();
    if let Some(d) = FsLoader::new().user_dir
        && let Some(parent) = d.parent()
    {
        dirs.push(parent.to_path_buf());
    }
    dirs.push(backend_native::Dirs::for_current_user().base);
    dirs.push(image_root());
    if let Some(parent) = backend_native::default_logs_dir().parent() {
        dirs.push(parent.to_path_buf());
    }
    for dir in dirs {
        use std::os::unix::fs::DirBuilderExt;
        if let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
        {
            anyhow::bail!(
                "cannot make {}, agentctl's own directory, so that no session can plant files in it: {e}\n  fix: make it yourself (`mkdir -p -m 700 {}`) or point XDG_CONFIG_HOME / XDG_DATA_HOME / AGENTCTL_IMAGES at a writable place",
                dir.display(),
                dir.display()
            );
        }
        out.push(dir);
    }
    // A SQLite store named elsewhere: the file and its journals only (its
    // directory may be anything, /tmp included).
    for url in [
        std::env::var("AGENTCTL_STORE").ok(),
        Some(store::SessionStore::default_url()),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(path) = url.strip_prefix("sqlite://") {
            let file = path.split('?').next().unwrap_or(path);
            for suffix in ["", "-wal", "-shm", "-journal"] {
                out.push(std::path::PathBuf::from(format!("{file}{suffix}")));
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The backend that runs (or ran) sessions of `kind`.
pub fn backend_for(kind: store::Backend) -> Box<dyn sandbox::Backend> {
    match kind {
        store::Backend::Native => Box::new(native_backend()),
        store::Backend::Docker => Box::new(backend_docker::DockerBackend::new(self_path())),
    }
}

/// The native backend, with the image cache from AGENTCTL_IMAGES if set,
/// and a progress display for pulls when stderr is a terminal.
pub fn native_backend() -> backend_native::NativeBackend {
    let mut b = backend_native::NativeBackend::new(helper_command());
    b.images = image_root();
    b.progress = crate::progress::Bars::for_stderr();
    b
}

/// The native image cache: AGENTCTL_IMAGES, or the per-user default.
pub fn image_root() -> PathBuf {
    std::env::var_os("AGENTCTL_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(image_store::ImageCache::default_root)
}

/// This binary, for backends that run it again (inside or beside a sandbox).
pub fn self_path() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"))
}

/// The argv that starts this binary's helper mode.
pub fn helper_command() -> Vec<String> {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    vec![
        exe.to_string_lossy().into_owned(),
        "__native-helper".to_string(),
    ]
}
