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
) -> Result<Handle, BackendError> {
    let docker = connect().await?;
    let opts = RunOptions {
        tty: false,
        ..opts.clone()
    };
    let id = crate::create(&docker, spec, &opts, init, false).await?;
    if let Err(e) = docker.start_container(&id, None).await {
        let _ = remove_container(&docker, &id).await;
        return Err(start_error(e));
    }
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
    let exec = docker
        .create_exec(
            &id,
            ExecConfig {
                cmd: Some(command.to_vec()),
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
    while let Some(Ok(item)) = output.next().await {
        write_output(item);
    }
    let inspect = docker
        .inspect_exec(&exec)
        .await
        .map_err(|e| runtime_err("cannot inspect the exec", e))?;
    Ok(ExitStatus::Code(inspect.exit_code.unwrap_or(0) as i32))
}

fn write_output(item: LogOutput) {
    match item {
        LogOutput::StdErr { message } => {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(&message);
            let _ = e.flush();
        }
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(&message);
            let _ = o.flush();
        }
        LogOutput::StdIn { .. } => {}
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
