//! Detached sessions on the Docker Engine. The engine is the supervisor:
//! it keeps the container, its output and its exit status, so nothing of
//! agentctl needs to stay running.

use std::io::Write;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    ResizeExecOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use sandbox::{BackendError, ExitStatus, Handle, Liveness, Orphan, RunOptions, SandboxSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::translate::{LABEL_MANAGED, LABEL_SESSION};
use crate::{RawMode, connect, runtime_err, start_error, terminal_size};

pub async fn start_detached(
    spec: &SandboxSpec,
    opts: &RunOptions,
    init: &std::path::Path,
    egress_cmd: &[String],
) -> Result<Handle, BackendError> {
    let docker = connect().await?;
    let opts = RunOptions {
        tty: false,
        output_copy: None,
        ..opts.clone()
    };
    let network = match spec.network {
        policy::NetworkMode::Allowlist => {
            Some(crate::egress::start(&docker, spec, init, egress_cmd).await?)
        }
        _ => None,
    };
    let started = async {
        let id = crate::create(&docker, spec, &opts, init, false, network.as_ref()).await?;
        if let Err(e) = docker.start_container(&id, None).await {
            let _ = remove_container(&docker, &id).await;
            return Err(start_error(e));
        }
        Ok(id)
    }
    .await;
    let id = match (started, network) {
        (Ok(id), None) => id,
        (Ok(id), Some(n)) => {
            // The egress proxy serves until the sandbox's init is gone.
            let pid = crate::local_pid(&docker, &id).await;
            let handed = match pid {
                Some(pid) => n.detach(pid),
                None => {
                    n.stop(&docker).await;
                    Err(BackendError::Runtime(
                        "the sandbox's process is not on this host; its network cannot be \
                         served"
                            .into(),
                    ))
                }
            };
            if let Err(e) = handed {
                let _ = remove_container(&docker, &id).await;
                return Err(e);
            }
            id
        }
        (Err(e), n) => {
            if let Some(n) = n {
                n.stop(&docker).await;
            }
            return Err(e);
        }
    };
    Ok(Handle {
        session: spec.session.to_string(),
        helper_pid: None,
        container_id: Some(id),
        log_path: None,
    })
}

/// The container of a session: the handle's, or found by its label.
async fn container(docker: &Docker, handle: &Handle) -> Result<Option<String>, BackendError> {
    if let Some(id) = &handle.container_id
        && docker.inspect_container(id, None).await.is_ok()
    {
        return Ok(Some(id.clone()));
    }
    // The session's own sandbox, never one of the containers its agent made
    // through its Docker proxy: those carry the session label too, but not
    // `managed` (no client may set an io.agentctl.* label).
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![
            format!("{LABEL_SESSION}={}", handle.session),
            format!("{}=true", crate::translate::LABEL_MANAGED),
        ],
    )]);
    let list = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| runtime_err("cannot list containers", e))?;
    Ok(list.into_iter().find_map(|c| c.id))
}

async fn remove_container(docker: &Docker, id: &str) -> Result<(), BackendError> {
    docker
        .remove_container(
            id,
            Some(
                RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        )
        .await
        .map_err(|e| runtime_err("cannot remove the container", e))
}

pub async fn stop(handle: &Handle, timeout: Duration) -> Result<(), BackendError> {
    let docker = connect().await?;
    let Some(id) = container(&docker, handle).await? else {
        return Ok(());
    };
    docker
        .stop_container(
            &id,
            Some(
                StopContainerOptionsBuilder::default()
                    .t(timeout.as_secs() as i32)
                    .build(),
            ),
        )
        .await
        .map_err(|e| runtime_err("cannot stop the container", e))
}

pub async fn exec(
    handle: &Handle,
    command: &[String],
    tty: bool,
) -> Result<ExitStatus, BackendError> {
    let docker = connect().await?;
    let id = container(&docker, handle).await?.ok_or_else(|| {
        BackendError::Runtime(format!("session {} is not running", handle.session))
    })?;
    let stdin = tty || crate::has_stdin();
    // A bare command name is looked up (by the runtime, in the container)
    // only on the PATH entries the agent cannot write: the user typed it
    // and means the system's, not one the agent planted in ~/.local/bin.
    let bare = command.first().is_some_and(|c| !c.contains('/'));
    let lookup = if bare {
        Some(exec_path(&docker, &id).await?)
    } else {
        None
    };
    let exec = docker
        .create_exec(
            &id,
            ExecConfig {
                cmd: Some(command.to_vec()),
                env: lookup
                    .as_ref()
                    .filter(|l| !l.dropped.is_empty())
                    .map(|l| vec![format!("PATH={}", l.kept)]),
                tty: Some(tty),
                attach_stdin: Some(stdin),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| runtime_err("cannot create the exec", e))?
        .id;
    let started = docker
        .start_exec(
            &exec,
            Some(StartExecOptions {
                detach: false,
                tty,
                output_capacity: None,
            }),
        )
        .await
        .map_err(start_error)?;
    let StartExecResults::Attached {
        mut output,
        mut input,
    } = started
    else {
        return Err(BackendError::Runtime("the exec did not attach".into()));
    };
    let _raw = RawMode::enter(tty);
    if tty && let Some((h, w)) = terminal_size() {
        let _ = docker
            .resize_exec(
                &exec,
                ResizeExecOptionsBuilder::default()
                    .h(i32::from(h))
                    .w(i32::from(w))
                    .build(),
            )
            .await;
    }
    if stdin {
        tokio::spawn(async move {
            let mut from = tokio::io::stdin();
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = from.read(&mut buf).await {
                if n == 0 || input.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                let _ = input.flush().await;
            }
            let _ = input.shutdown().await;
        });
    }
    let mut shown = Shown::new(tty);
    while let Some(Ok(item)) = output.next().await {
        shown.write(item);
    }
    let inspect = docker
        .inspect_exec(&exec)
        .await
        .map_err(|e| runtime_err("cannot inspect the exec", e))?;
    let mut code = inspect.exit_code.unwrap_or(0) as i32;
    if code == 126 && shown.not_found {
        // The runtime could not find it: "command not found", as docker's
        // own CLI and the native backend say.
        code = 127;
    }
    if code == 127
        && let Some(l) = lookup.filter(|l| !l.dropped.is_empty())
    {
        eprintln!(
            "agentctl: {} was looked up on PATH without {}, where the agent can write; give its full path if you trust what is there",
            command[0],
            l.dropped.join(", ")
        );
    }
    Ok(ExitStatus::Code(code))
}

/// The session's PATH split by whether the agent can write there.
struct ExecPath {
    kept: String,
    dropped: Vec<String>,
}

/// Reads the container's PATH and its writable mounts from the daemon
/// (what it actually runs, not what was asked for).
async fn exec_path(docker: &Docker, id: &str) -> Result<ExecPath, BackendError> {
    let info = docker
        .inspect_container(id, None)
        .await
        .map_err(|e| runtime_err("cannot inspect the container", e))?;
    let path = info
        .config
        .as_ref()
        .and_then(|c| c.env.as_ref())
        .and_then(|env| env.iter().find_map(|e| e.strip_prefix("PATH=")))
        .unwrap_or("")
        .to_string();
    let host = info.host_config.as_ref();
    let mut writable: Vec<String> = Vec::new();
    if !host.and_then(|h| h.readonly_rootfs).unwrap_or(false) {
        writable.push("/".into());
    }
    for m in info.mounts.iter().flatten() {
        if m.rw != Some(false)
            && let Some(d) = &m.destination
        {
            writable.push(d.clone());
        }
    }
    for (dest, opts) in host.and_then(|h| h.tmpfs.as_ref()).into_iter().flatten() {
        if !opts.split(',').any(|o| o == "ro") {
            writable.push(dest.clone());
        }
    }
    let (kept, dropped) = split_path(&path, &writable);
    Ok(ExecPath { kept, dropped })
}

/// PATH's absolute entries outside every writable destination, and the
/// others.
fn split_path(path: &str, writable: &[String]) -> (String, Vec<String>) {
    let under = |entry: &str, dir: &str| {
        let dir = dir.trim_end_matches('/');
        entry == dir || dir.is_empty() || entry.starts_with(&format!("{dir}/"))
    };
    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
    for entry in path.split(':') {
        if entry.starts_with('/') && !writable.iter().any(|w| under(entry, w)) {
            kept.push(entry);
        } else {
            dropped.push(entry.to_string());
        }
    }
    (kept.join(":"), dropped)
}

/// The exec's output to the caller: to a terminal, filtered as a live
/// session's is (a terminal session) or as `logs` is (plain output); to a
/// file or a pipe, every byte.
struct Shown {
    out: sandbox::termfilter::TermOutput,
    err: sandbox::termfilter::TermOutput,
    /// The runtime said it found no such command. (A command that prints
    /// the same words and exits 126 itself is reported as 127: only the
    /// exit code differs.)
    not_found: bool,
}

impl Shown {
    fn new(tty: bool) -> Shown {
        use sandbox::termfilter::{Mode, TermOutput};
        use std::io::IsTerminal;
        let mode = if tty { Mode::Interactive } else { Mode::Text };
        Shown {
            out: TermOutput::new(std::io::stdout().is_terminal(), mode),
            err: TermOutput::new(std::io::stderr().is_terminal(), mode),
            not_found: false,
        }
    }

    fn write(&mut self, item: LogOutput) {
        const NOT_FOUND: &[u8] = b"executable file not found in $PATH";
        let (message, to_stderr) = match item {
            LogOutput::StdErr { message } => (message, true),
            LogOutput::StdOut { message } | LogOutput::Console { message } => (message, false),
            LogOutput::StdIn { .. } => return,
        };
        self.not_found |= message.windows(NOT_FOUND.len()).any(|w| w == NOT_FOUND);
        if to_stderr {
            let mut e = std::io::stderr().lock();
            let _ = self.err.write(&message, &mut e);
            let _ = e.flush();
        } else {
            let mut o = std::io::stdout().lock();
            let _ = self.out.write(&message, &mut o);
            let _ = o.flush();
        }
    }
}

pub async fn logs(handle: &Handle, follow: bool, out: &mut dyn Write) -> Result<(), BackendError> {
    let docker = connect().await?;
    let id = container(&docker, handle).await?.ok_or_else(|| {
        BackendError::Runtime(format!(
            "the container of session {} is gone, and its output with it",
            handle.session
        ))
    })?;
    let mut stream = docker.logs(
        &id,
        Some(
            LogsOptionsBuilder::default()
                .follow(follow)
                .stdout(true)
                .stderr(true)
                .build(),
        ),
    );
    while let Some(item) = stream.next().await {
        let item = item.map_err(|e| runtime_err("cannot read the logs", e))?;
        let bytes = item.into_bytes();
        out.write_all(&bytes)
            .and_then(|()| out.flush())
            .map_err(|e| BackendError::io("cannot write", e))?;
    }
    Ok(())
}

pub async fn liveness(handle: &Handle) -> Result<Liveness, BackendError> {
    let docker = connect().await?;
    let Some(id) = container(&docker, handle).await? else {
        return Ok(Liveness::Gone);
    };
    let info = docker
        .inspect_container(&id, None)
        .await
        .map_err(|e| runtime_err("cannot inspect the container", e))?;
    let state = info.state.unwrap_or_default();
    if state.running == Some(true) {
        return Ok(Liveness::Running);
    }
    match state.exit_code {
        Some(code) if state.finished_at.is_some() => {
            Ok(Liveness::Exited(ExitStatus::Code(code as i32)))
        }
        _ => Ok(Liveness::Gone),
    }
}

/// The container's init on the host, while it runs.
pub async fn sandbox_pid(handle: &Handle) -> Result<Option<u32>, BackendError> {
    let docker = connect().await?;
    let Some(id) = container(&docker, handle).await? else {
        return Ok(None);
    };
    let info = docker
        .inspect_container(&id, None)
        .await
        .map_err(|e| runtime_err("cannot inspect the container", e))?;
    let state = info.state.unwrap_or_default();
    Ok(state
        .pid
        .filter(|p| *p > 0 && state.running == Some(true))
        .and_then(|p| u32::try_from(p).ok()))
}

pub async fn remove(handle: &Handle) -> Result<(), BackendError> {
    let docker = connect().await?;
    if let Some(id) = container(&docker, handle).await? {
        remove_container(&docker, &id).await?;
    }
    Ok(())
}

pub async fn orphans(known: &dyn Fn(&str) -> bool) -> Result<Vec<Orphan>, BackendError> {
    let docker = match connect().await {
        Ok(d) => d,
        // No daemon, no Docker sandboxes to report.
        Err(_) => return Ok(Vec::new()),
    };
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_MANAGED}=true")],
    )]);
    let list = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| runtime_err("cannot list containers", e))?;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            let session = c.labels.as_ref()?.get(LABEL_SESSION)?.clone();
            (!known(&session)).then(|| Orphan {
                what: format!(
                    "docker container {} ({})",
                    c.names.unwrap_or_default().join(","),
                    c.state.map(|s| format!("{s:?}")).unwrap_or_default()
                ),
                session,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::split_path;

    #[test]
    fn writable_entries_leave_the_exec_path() {
        let writable = vec![
            "/home/u".to_string(),
            "/tmp/".to_string(),
            "/work/proj".into(),
        ];
        let (kept, dropped) = split_path(
            "/home/u/.local/bin:/usr/local/bin:/tmp:/work/proj/node_modules/.bin:bin::/usr/bin:/home/user2/bin",
            &writable,
        );
        assert_eq!(kept, "/usr/local/bin:/usr/bin:/home/user2/bin");
        assert_eq!(
            dropped,
            vec![
                "/home/u/.local/bin",
                "/tmp",
                "/work/proj/node_modules/.bin",
                "bin",
                ""
            ]
        );
        let (kept, _) = split_path("/usr/bin:/bin", &["/".to_string()]);
        assert_eq!(kept, "", "a writable root leaves nothing");
    }
}
