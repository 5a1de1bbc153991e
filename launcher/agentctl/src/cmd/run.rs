use std::cell::RefCell;
use std::io::IsTerminal;

use anyhow::Result;
use sandbox::{BackendError, Observer, RunOptions};
use serde_json::json;
use store::{NewEvent, SessionUpdate, Status};

use crate::cli::{BackendKind, RunArgs};
use crate::record::{self, StoreUrl, block_on};

/// Collects what happens during a foreground session, to record it after:
/// no store connection may be open while the native backend forks.
#[derive(Default)]
struct Collected {
    started: RefCell<Option<(i64, Option<u32>)>>,
    signals: RefCell<Vec<(i64, String)>>,
}

impl Observer for Collected {
    fn started(&self, pid: Option<u32>) {
        *self.started.borrow_mut() = Some((store::now_ms(), pid));
    }
    fn signal(&self, name: &str) {
        self.signals
            .borrow_mut()
            .push((store::now_ms(), name.to_string()));
    }
}

pub fn run(args: RunArgs, store_url: &StoreUrl) -> Result<u8> {
    let spec = super::plan(&args.policy, args.command.clone())?;
    let opts = RunOptions {
        tty: !args.detach
            && !args.no_tty
            && std::io::stdin().is_terminal()
            && std::io::stdout().is_terminal(),
        no_limits: args.no_limits,
    };
    let (backend, backend_name): (Box<dyn sandbox::Backend>, &str) = match args.backend {
        BackendKind::Native => (Box::new(super::native_backend()), "native"),
        BackendKind::Docker => (
            Box::new(backend_docker::DockerBackend::new(super::self_path())),
            "docker",
        ),
    };
    if args.detach && store_url.0.is_none() {
        anyhow::bail!(
            "a detached session needs the session store to be found again; drop `--store none`"
        );
    }
    let id = spec.session.to_string();
    let _launcher = match store_url.0 {
        Some(_) => Some(record::LauncherLock::take(&id)?),
        None => None,
    };
    // On record before anything runs; reconciling first keeps `ps` true.
    if store_url.0.is_some() {
        record::reconcile(store_url)?;
        block_on(async {
            let store = store_url.open().await?;
            store
                .create_session(
                    &record::new_session(&spec, backend_name, args.detach)?,
                    record::created_event(&spec),
                )
                .await?;
            store.close().await;
            anyhow::Ok(())
        })?;
    }
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

    if args.detach {
        let on_exit = vec![
            super::self_path().to_string_lossy().into_owned(),
            "--store".to_string(),
            store_url.0.clone().unwrap_or_default(),
            "__session-exit".to_string(),
            id.clone(),
        ];
        let result = backend.start_detached(&spec, &opts, &on_exit);
        block_on(async {
            let store = store_url.open().await?;
            match &result {
                Ok(h) => {
                    store
                        .append_event(
                            &id,
                            NewEvent::new("started").data(json!({"detached": true})),
                        )
                        .await?;
                    store
                        .update(
                            &id,
                            &SessionUpdate {
                                status: Some(Status::Running),
                                started_at: Some(store::now_ms()),
                                helper_pid: h.helper_pid,
                                container_id: h.container_id.clone(),
                                log_path: h
                                    .log_path
                                    .as_ref()
                                    .map(|p| p.to_string_lossy().into_owned()),
                                ..SessionUpdate::default()
                            },
                        )
                        .await?;
                }
                Err(e) => fail(&store, &id, &e.to_string()).await?,
            }
            store.close().await;
            anyhow::Ok(())
        })?;
        result?;
        println!("{id}");
        return Ok(0);
    }

    let observer = Collected::default();
    let result = backend.run(&spec, &opts, &observer);
    if store_url.0.is_some() {
        let started = *observer.started.borrow();
        let signals = observer.signals.take();
        // The exit code is the user's whatever happens to the record.
        let recorded = block_on(async {
            let store = store_url.open().await?;
            if let Some((at, pid)) = started {
                store
                    .append_event(&id, NewEvent::new("started").data(json!({"pid": pid})))
                    .await?;
                store
                    .update(
                        &id,
                        &SessionUpdate {
                            status: Some(Status::Running),
                            started_at: Some(at),
                            ..SessionUpdate::default()
                        },
                    )
                    .await?;
            }
            for (at, sig) in &signals {
                store
                    .append_event(
                        &id,
                        NewEvent::new("signal").data(json!({"signal": sig, "at": at})),
                    )
                    .await?;
            }
            match &result {
                Ok(status) => record::record_end(&store, &id, status.code()).await?,
                Err(BackendError::Exec { code, .. }) => {
                    record::record_end(&store, &id, *code).await?
                }
                Err(e) => fail(&store, &id, &e.to_string()).await?,
            }
            store.close().await;
            anyhow::Ok(())
        });
        if let Err(e) = recorded {
            eprintln!("agentctl: the session's end was not recorded: {e:#}");
        }
    }
    match result {
        Ok(status) => Ok(status.code().clamp(0, 255) as u8),
        Err(BackendError::Exec { message, code }) => {
            eprintln!("agentctl: {message}");
            Ok(code as u8)
        }
        Err(e) => Err(e.into()),
    }
}

async fn fail(store: &store::Store, id: &str, error: &str) -> Result<()> {
    store
        .append_event(id, NewEvent::new("failed").data(json!({"error": error})))
        .await?;
    store
        .update(
            id,
            &SessionUpdate {
                status: Some(Status::Failed),
                ended_at: Some(store::now_ms()),
                exit_code: Some(backend_native::LAUNCHER_FAILURE),
                ..SessionUpdate::default()
            },
        )
        .await?;
    Ok(())
}

pub fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
