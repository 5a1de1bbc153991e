use std::cell::{Cell, RefCell};
use std::io::IsTerminal;

use anyhow::Result;
use sandbox::{BackendError, Observer, RunOptions};
use serde_json::json;
use store::{NewEvent, SessionUpdate, Status};

use crate::cli::{BackendKind, RunArgs};
use crate::record::{self, LiveRecord, Outcome, StoreUrl, Written, block_on};

/// Keeps the record of a foreground session while it runs: a
/// [`LiveRecord`] from the moment the sandbox runs (the native backend has
/// forked by then), and what happened, in case that record cannot finish.
struct Recording<'a> {
    store_url: &'a StoreUrl,
    id: &'a str,
    started: Cell<Option<(i64, Option<u32>)>>,
    signals: RefCell<Vec<(i64, String)>>,
    live: RefCell<Option<LiveRecord>>,
}

impl Observer for Recording<'_> {
    fn started(&self, pid: Option<u32>) {
        let at = store::now_ms();
        self.started.set(Some((at, pid)));
        if self.store_url.0.is_some() {
            *self.live.borrow_mut() = Some(LiveRecord::start(self.store_url, self.id, at, pid));
        }
    }
    fn signal(&self, name: &str) {
        self.signals
            .borrow_mut()
            .push((store::now_ms(), name.to_string()));
    }
}

impl Recording<'_> {
    /// Puts the end on record: through the live record, or, if it never
    /// started or failed, over a new connection with whatever it missed.
    fn finish(self, outcome: Outcome) -> Result<()> {
        let signals: Vec<NewEvent> = self
            .signals
            .take()
            .into_iter()
            .map(|(at, sig)| NewEvent::new("signal").data(json!({"signal": sig, "at": at})))
            .collect();
        let written = match self.live.take() {
            Some(live) => live.finish(signals.clone(), outcome.clone()),
            None => Written::default(),
        };
        if written.ended {
            return Ok(());
        }
        if let Some(e) = &written.error {
            tracing::warn!("recording the running session failed, trying again: {e:#}");
        }
        let mut events = Vec::new();
        let mut update = SessionUpdate::default();
        if let Some((at, pid)) = self.started.get().filter(|_| !written.started) {
            events.push(NewEvent::new("started").data(json!({"pid": pid})));
            update.started_at = Some(at);
        }
        events.extend(signals);
        let id = self.id;
        block_on(async {
            let store = self.store_url.open().await?;
            outcome.record(&store, id, events, update).await?;
            store.close().await;
            anyhow::Ok(())
        })
    }
}

pub fn run(args: RunArgs, store_url: &StoreUrl) -> Result<u8> {
    // The store opens while the session is planned.
    let opening = store_url
        .0
        .as_ref()
        .map(|_| record::Opening::start(store_url));
    let mut spec = super::plan(&args.policy, args.command.clone())?;
    after_plan_handshake();
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
    if let Some(opening) = opening {
        opening.create(
            record::new_session(&spec, backend_name, args.detach)?,
            record::created_event(&spec),
        )?;
    }
    // Placeholders for the host-run files git would read if they existed
    // (`.git/commondir`), so that they can be mounted read-only.
    let placeholders = match sandbox::hostrun::create_placeholders(&spec.host_run) {
        Ok(created) => Placeholders {
            store_url,
            id: &id,
            files: spec.host_run.clone(),
            created,
        },
        Err(e) => {
            fail_on_record(store_url, &id, &e.to_string());
            return Err(e.into());
        }
    };
    // The agent's Docker socket, when the profile gives it one: started
    // after the session is on record, so its denials land in the trail.
    let docker_proxy = if spec.docker {
        match super::proxy::SessionProxy::start(&spec, store_url) {
            Ok(p) => {
                p.attach(&mut spec);
                Some(p)
            }
            Err(e) => {
                fail_on_record(store_url, &id, &format!("{e:#}"));
                placeholders.release();
                return Err(e);
            }
        }
    } else {
        None
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
        if spec.docker {
            eprintln!(
                "agentctl: Docker at /var/run/docker.sock through agentctl's proxy (role session): the agent's own containers only"
            );
        }
    }
    // Not behind -q: a credential the agent can read is worth a line.
    for warning in spec.notes.iter().filter(|n| n.starts_with("warning: ")) {
        eprintln!("agentctl: {warning}");
    }
    // Not behind -q: the user chose the host network, but may not know that
    // it carries the desktop's sockets with it where they cannot be kept out.
    if spec.network == policy::NetworkMode::Host {
        let why = match sandbox::landlock::abstract_unix_scoping() {
            Err(why) => Some(why),
            Ok(()) if args.backend == BackendKind::Docker && spec.image.is_some() => {
                Some("an image's own init cannot apply Landlock".to_string())
            }
            Ok(()) => None,
        };
        if let Some(why) = why {
            eprintln!(
                "agentctl: warning: network host: the host's abstract unix sockets (X11, D-Bus) are reachable from the sandbox: {why}"
            );
        }
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
        if result.is_err() {
            if let Some(p) = &docker_proxy {
                p.stop();
            }
            placeholders.release();
        }
        record::test_pause("AGENTCTL_TEST_DETACHED_RECORD_PAUSE_MS");
        block_on(async {
            let store = store_url.open().await?;
            match &result {
                Ok(h) => {
                    let whereabouts = SessionUpdate {
                        helper_pid: h.helper_pid,
                        container_id: h.container_id.clone(),
                        log_path: h
                            .log_path
                            .as_ref()
                            .map(|p| p.to_string_lossy().into_owned()),
                        ..SessionUpdate::default()
                    };
                    // A quick session may have ended, and its supervisor
                    // recorded the end, before this line: "running" then
                    // would undo the end, and the next reconcile would find
                    // nothing running and delete the kept output.
                    let started = store
                        .record_if(
                            &id,
                            &[Status::Created],
                            vec![NewEvent::new("started").data(json!({"detached": true}))],
                            &SessionUpdate {
                                status: Some(Status::Running),
                                started_at: Some(store::now_ms()),
                                ..whereabouts.clone()
                            },
                        )
                        .await?;
                    if started.is_none() {
                        store.record(&id, Vec::new(), &whereabouts).await?;
                    }
                }
                Err(e) => {
                    record::record_failure(
                        &store,
                        &id,
                        &e.to_string(),
                        Vec::new(),
                        SessionUpdate::default(),
                    )
                    .await?
                }
            }
            store.close().await;
            anyhow::Ok(())
        })?;
        result?;
        println!("{id}");
        return Ok(0);
    }

    let recording = Recording {
        store_url,
        id: &id,
        started: Cell::new(None),
        signals: RefCell::default(),
        live: RefCell::default(),
    };
    let result = backend.run(&spec, &opts, &recording);
    if let Some(p) = &docker_proxy {
        p.stop();
    }
    if store_url.0.is_some() {
        let outcome = match &result {
            Ok(status) => Outcome::Exit(status.code()),
            Err(BackendError::Exec { code, .. }) => Outcome::Exit(*code),
            Err(e) => Outcome::Failed(e.to_string()),
        };
        // The exit code is the user's whatever happens to the record.
        if let Err(e) = recording.finish(outcome) {
            eprintln!("agentctl: the session's end was not recorded: {e:#}");
        }
    }
    placeholders.release();
    match result {
        Ok(status) => Ok(status.code().clamp(0, 255) as u8),
        Err(BackendError::Exec { message, code }) => {
            eprintln!("agentctl: {message}");
            Ok(code as u8)
        }
        Err(e) => Err(e.into()),
    }
}

/// Tests put the workspace's changes between the scan and the sandbox's
/// mounts: with AGENTCTL_TEST_AFTER_PLAN=PATH the launcher creates
/// `PATH.planned` once the plan is made and waits (at most 30 s) until
/// PATH exists. Nothing else reads this variable.
fn after_plan_handshake() {
    let Some(go) = std::env::var_os("AGENTCTL_TEST_AFTER_PLAN") else {
        return;
    };
    let go = std::path::PathBuf::from(go);
    let mut planned = go.clone().into_os_string();
    planned.push(".planned");
    let _ = std::fs::write(&planned, "");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !go.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Records a launch that failed before the sandbox ran.
fn fail_on_record(store_url: &StoreUrl, id: &str, error: &str) {
    if store_url.0.is_none() {
        return;
    }
    let _ = block_on(async {
        let store = store_url.open().await?;
        record::record_failure(&store, id, error, Vec::new(), SessionUpdate::default()).await?;
        store.close().await;
        anyhow::Ok(())
    });
}

/// The placeholders this launch created (see `sandbox::hostrun`), removed
/// when the session ends, unless another live session relies on them. A
/// detached session's are removed by whoever records its end.
struct Placeholders<'a> {
    store_url: &'a StoreUrl,
    id: &'a str,
    files: Vec<sandbox::hostrun::HostRunFile>,
    created: Vec<std::path::PathBuf>,
}

impl Placeholders<'_> {
    fn release(&self) {
        if self.created.is_empty() {
            return;
        }
        if self.store_url.0.is_none() {
            sandbox::hostrun::remove_placeholders(&self.files, &self.created);
            return;
        }
        let _ = block_on(async {
            let store = self.store_url.open().await?;
            record::release_placeholders(&store, self.id, &self.files).await;
            store.close().await;
            anyhow::Ok(())
        });
    }
}

pub fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
