//! Sessions after `run`: detached sessions, `stop`, `exec`, `logs`, and
//! what reconciliation needs to know (is a session's supervisor alive,
//! what is left of a session nobody supervises).
//!
//! The helper holds a lock on `<session>/lock` for as long as it lives, so
//! "is this session supervised" is one non-blocking flock, immune to pid
//! reuse.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcontainer::container::Container;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sandbox::{BackendError, ExitStatus, Handle, Liveness, Orphan, RunOptions, SandboxSpec};

use crate::helper::{self, HelperConfig, PID_FILE, supervised};
use crate::{NativeBackend, StatusMsg, StatusReader, preflight};

pub fn start_detached(
    b: &NativeBackend,
    spec: &SandboxSpec,
    opts: &RunOptions,
    on_exit: &[String],
) -> Result<Handle, BackendError> {
    // A detached session's output goes to its log, which its supervisor
    // follows into the store.
    let opts = RunOptions {
        tty: false,
        output_copy: None,
        ..opts.clone()
    };
    let cgroup = preflight::check(spec, &opts)?;
    let image = spec.image.as_deref().map(|r| b.image(r)).transpose()?;
    let id = spec.session.as_str();
    let mut cfg = match b.prepare(spec, &opts, cgroup, image.as_ref()) {
        Ok(cfg) => cfg,
        Err(e) => {
            let _ = fs::remove_dir_all(b.dirs.sessions().join(id));
            return Err(e);
        }
    };
    cfg.detached = true;
    // The launcher returns at once; the session outlives it.
    cfg.launcher_pid = None;
    cfg.on_exit = on_exit.to_vec();
    let json = serde_json::to_vec_pretty(&cfg).expect("helper config serializes");
    fs::write(cfg.session_dir.join(HelperConfig::FILE), json)
        .map_err(|e| BackendError::io("cannot write the helper config", e))?;

    sandbox::detached::private_dir(&b.logs)?;
    let log = b.logs.join(format!("{id}.log"));
    let (status_r, status_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| BackendError::Runtime(format!("cannot create a pipe: {e}")))?;
    let mut child = b.spawn_helper(&cfg, &status_w, Some(&log))?;
    drop(status_w);
    let mut reader = StatusReader::default();
    loop {
        match reader.read(&status_r) {
            Ok(Some(StatusMsg::Started(_))) => {
                return Ok(Handle {
                    session: id.to_string(),
                    helper_pid: Some(child.id()),
                    container_id: None,
                    log_path: Some(log),
                });
            }
            Ok(Some(StatusMsg::Exited(code))) => {
                let _ = child.wait();
                return Err(BackendError::Runtime(format!(
                    "the session failed to start (code {code}): {}",
                    sandbox::detached::last_lines(&log, 3)
                )));
            }
            Ok(None) => {}
            Err(()) => {
                let _ = child.wait();
                if cfg.session_dir.exists() {
                    helper::cleanup_session(&cfg, None);
                }
                return Err(BackendError::Runtime(format!(
                    "the session helper died while starting: {}",
                    sandbox::detached::last_lines(&log, 3)
                )));
            }
        }
    }
}

fn session_dir(b: &NativeBackend, id: &str) -> PathBuf {
    b.dirs.sessions().join(id)
}

/// The sandbox's init, as its helper wrote it, while the helper lives.
pub fn sandbox_pid(b: &NativeBackend, id: &str) -> Option<u32> {
    let dir = session_dir(b, id);
    if !supervised(&dir) {
        return None;
    }
    fs::read_to_string(dir.join(helper::SANDBOX_PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn helper_pid(dir: &Path) -> Option<Pid> {
    fs::read_to_string(dir.join(PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map(Pid::from_raw)
}

fn wait_unsupervised(dir: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while supervised(dir) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    true
}

pub fn stop(b: &NativeBackend, handle: &Handle, timeout: Duration) -> Result<(), BackendError> {
    let dir = session_dir(b, &handle.session);
    if !supervised(&dir) {
        return Ok(());
    }
    let pid = helper_pid(&dir)
        .or(handle.helper_pid.map(|p| Pid::from_raw(p as i32)))
        .ok_or_else(|| BackendError::Runtime("the session's helper is unknown".into()))?;
    // The helper passes SIGTERM on to the agent.
    kill(pid, Signal::SIGTERM)
        .map_err(|e| BackendError::Runtime(format!("cannot signal the session: {e}")))?;
    if wait_unsupervised(&dir, timeout) {
        return Ok(());
    }
    // Still running after the grace period: kill the sandbox's init, which
    // takes everything in its pid namespace with it.
    if let Ok(c) = Container::load(b.dirs.state().join(&handle.session))
        && let Some(init) = c.pid()
    {
        let _ = kill(init, Signal::SIGKILL);
    }
    if wait_unsupervised(&dir, Duration::from_secs(10)) {
        Ok(())
    } else {
        Err(BackendError::Runtime(
            "the session did not stop after SIGKILL".into(),
        ))
    }
}

pub fn exec(
    b: &NativeBackend,
    handle: &Handle,
    command: &[String],
    tty: bool,
) -> Result<ExitStatus, BackendError> {
    let dir = session_dir(b, &handle.session);
    if !supervised(&dir) {
        return Err(BackendError::Runtime(format!(
            "session {} is not running",
            handle.session
        )));
    }
    let (program, args) = b
        .exec_helper
        .split_first()
        .ok_or_else(|| BackendError::Runtime("no exec helper configured".into()))?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).arg(&dir);
    if tty {
        cmd.arg("--tty");
    }
    cmd.arg("--").args(command);
    let status = cmd
        .status()
        .map_err(|e| BackendError::io("cannot start the exec helper", e))?;
    Ok(match status.code() {
        Some(c) => ExitStatus::Code(c),
        None => ExitStatus::Code(crate::LAUNCHER_FAILURE),
    })
}

pub fn logs(
    b: &NativeBackend,
    handle: &Handle,
    follow: bool,
    out: &mut dyn Write,
) -> Result<(), BackendError> {
    let path = handle
        .log_path
        .clone()
        .unwrap_or_else(|| b.logs.join(format!("{}.log", handle.session)));
    let dir = session_dir(b, &handle.session);
    sandbox::detached::copy_log(&path, follow, &|| supervised(&dir), out)
}

pub fn liveness(b: &NativeBackend, id: &str) -> Liveness {
    let dir = session_dir(b, id);
    if dir.exists() && supervised(&dir) {
        return Liveness::Running;
    }
    // The helper writes the exit code before it takes the session directory
    // apart, so while it does (the directory still there, its lock file
    // already gone) the session has ended, not vanished.
    match fs::read_to_string(b.dirs.exits().join(id))
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        Some(code) => Liveness::Exited(ExitStatus::Code(code)),
        None => Liveness::Gone,
    }
}

/// Removes what is left of a session nobody supervises: the sandbox (its
/// processes are killed), the cgroup, the runtime state, the recorded exit
/// code and the kept output.
pub fn remove(b: &NativeBackend, id: &str) {
    let dir = session_dir(b, id);
    if dir.exists() && !supervised(&dir) {
        match HelperConfig::load(&dir) {
            Ok(cfg) => helper::cleanup_session(&cfg, None),
            Err(_) => {
                let _ = fs::remove_dir_all(&dir);
            }
        }
    }
    let state = b.dirs.state().join(id);
    if state.exists()
        && let Ok(mut c) = Container::load(state.clone())
    {
        let _ = c.delete(true);
    }
    let _ = fs::remove_dir_all(state);
    let _ = fs::remove_file(b.dirs.exits().join(id));
    let _ = fs::remove_file(b.logs.join(format!("{id}.log")));
}

/// Recorded exit codes can be forgotten once the store has them.
pub fn forget_exit(b: &NativeBackend, id: &str) {
    // Only the file; the session itself is gone.
    let _ = fs::remove_file(b.dirs.exits().join(id));
}

pub fn orphans(b: &NativeBackend, known: &dyn Fn(&str) -> bool) -> Vec<Orphan> {
    let mut out = Vec::new();
    for (dir, what) in [
        (b.dirs.sessions(), "session directory"),
        (b.dirs.state(), "runtime state"),
    ] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if known(&id) || out.iter().any(|o: &Orphan| o.session == id) {
                continue;
            }
            let running = supervised(&dir.join(&id));
            out.push(Orphan {
                what: format!(
                    "{what} {}{}",
                    e.path().display(),
                    if running { " (running)" } else { "" }
                ),
                session: id,
            });
        }
    }
    out
}
