//! What the daemonless backends (native and vm) share for detached
//! sessions: the private directory of kept logs, a session's log opened
//! for its helper, following a log until the session ends, and the
//! command that records a session's end.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::backend::BackendError;

/// Creates the directory of kept logs private to its owner (0700), and
/// makes an existing one private too: a session's output may hold what the
/// agent printed of the workspace, and other users must not read it even
/// when a parent directory is opened up.
pub fn private_dir(dir: &Path) -> Result<(), BackendError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |e| BackendError::io(format!("cannot create {}", dir.display()), e);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    let meta = fs::symlink_metadata(dir).map_err(err)?;
    if !meta.is_dir() {
        return Err(BackendError::Runtime(format!(
            "{} is not a directory; move it away so agentctl can keep session logs there",
            dir.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}

/// A detached helper's stdout and stderr: the session's log, private
/// from the start (0600) and never opened through a link planted where
/// the log goes.
pub fn open_log(log: &Path) -> Result<(fs::File, fs::File), BackendError> {
    use std::os::unix::fs::OpenOptionsExt;
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(log)
        .map_err(|e| BackendError::io(format!("cannot open {}", log.display()), e))?;
    let err = out
        .try_clone()
        .map_err(|e| BackendError::io("cannot open the log", e))?;
    Ok((out, err))
}

/// The last `n` lines of a log, for an error message.
pub fn last_lines(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

/// Copies a detached session's log to `out`; with `follow`, until
/// `running` says the session ended (then once more: it may have written
/// since).
pub fn copy_log(
    path: &Path,
    follow: bool,
    running: &dyn Fn() -> bool,
    out: &mut dyn Write,
) -> Result<(), BackendError> {
    let mut file = fs::File::open(path).map_err(|e| {
        BackendError::io(
            format!(
                "no output kept for this session ({}); only detached sessions' output is kept",
                path.display()
            ),
            e,
        )
    })?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| BackendError::io("cannot read the log", e))?;
        if n > 0 {
            out.write_all(&buf[..n])
                .and_then(|()| out.flush())
                .map_err(|e| BackendError::io("cannot write", e))?;
            continue;
        }
        if !follow || !running() {
            let mut rest = Vec::new();
            let _ = file.read_to_end(&mut rest);
            let _ = out.write_all(&rest);
            let _ = out.flush();
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the command that records a detached session's end, with
/// `AGENTCTL_EXIT_CODE`; a failure is said on the helper's stderr (the
/// session's log), since nobody else is there to hear it.
pub fn run_on_exit(argv: &[String], code: i32) {
    let Some((program, args)) = argv.split_first() else {
        return;
    };
    match std::process::Command::new(program)
        .args(args)
        .env("AGENTCTL_EXIT_CODE", code.to_string())
        .stdin(std::process::Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!("agentctl: recording the session's end failed ({s})"),
        Err(e) => eprintln!("agentctl: cannot record the session's end: {e}"),
    }
}
