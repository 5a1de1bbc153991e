//! Cloning a requested repository into a fresh workspace with the
//! worker's own credentials: a deploy key or a credential helper named in
//! the worker's configuration, given to git on its command line, so that
//! nothing of them is written into the clone the sandbox sees.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::WorkerError;

/// How this worker clones.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GitConfig {
    /// An SSH private key for ssh URLs (a deploy key).
    pub ssh_key: Option<PathBuf>,
    /// A credential helper for https URLs (git's `credential.helper`).
    pub credential_helper: Option<String>,
    /// The transports git may use: https and ssh unless the admin says
    /// otherwise (`file` only for tests).
    pub protocols: Vec<String>,
}

impl Default for GitConfig {
    fn default() -> GitConfig {
        GitConfig {
            ssh_key: None,
            credential_helper: None,
            protocols: vec!["https".into(), "ssh".into()],
        }
    }
}

/// Clones `url` (at `rev`, a branch or tag, when given) into `dest`, which
/// must not exist: that branch and its history.
pub fn clone(
    cfg: &GitConfig,
    url: &str,
    rev: Option<&str>,
    dest: &Path,
) -> Result<(), WorkerError> {
    if url.starts_with('-') || rev.is_some_and(|r| r.starts_with('-')) {
        return Err(WorkerError::Clone(format!(
            "\"{url}\" is not a repository URL"
        )));
    }
    let mut cmd = Command::new("git");
    // Only the transports allowed: never `ext::` (runs a command), never
    // a local path unless the admin asked for `file`.
    cmd.args(["-c", "protocol.allow=never"]);
    for p in &cfg.protocols {
        cmd.arg("-c").arg(format!("protocol.{p}.allow=always"));
    }
    if let Some(helper) = &cfg.credential_helper {
        cmd.arg("-c").arg(format!("credential.helper={helper}"));
    }
    // The whole history of the one branch: agents read logs and blame,
    // and git's dumb HTTP transport cannot make a shallow clone.
    cmd.args(["clone", "--quiet", "--single-branch"]);
    if let Some(r) = rev {
        cmd.args(["--branch", r]);
    }
    cmd.arg("--").arg(url).arg(dest);
    cmd.env("GIT_TERMINAL_PROMPT", "0");
    cmd.env("GIT_ASKPASS", "/bin/false");
    cmd.env_remove("GIT_SSH");
    match &cfg.ssh_key {
        Some(key) => {
            cmd.env(
                "GIT_SSH_COMMAND",
                format!(
                    "ssh -i '{}' -o IdentitiesOnly=yes -o BatchMode=yes",
                    key.display().to_string().replace('\'', "")
                ),
            );
        }
        None => {
            cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let out = cmd.output().map_err(|e| {
        WorkerError::Clone(format!(
            "cannot run git ({e}); install it on the worker (apt-get install git)"
        ))
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(WorkerError::Clone(format!(
            "git clone {url}: {}",
            last.trim()
        )));
    }
    // What git wrote into the clone's configuration is the URL given
    // (never with a password: the server refuses those) and the branch:
    // nothing of the worker's credentials.
    Ok(())
}
