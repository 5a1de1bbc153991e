//! Starting a session: on record first, then the host prepared, then the
//! sandbox, in the foreground or detached.

use serde_json::json;
use store::{NewEvent, SessionUpdate, Status};

use sandbox::{BackendError, RunOptions, SandboxSpec};

use crate::context::{Lifecycle, test_pause};
use crate::docker::SessionProxy;
use crate::error::{Error, Result};
use crate::lock::LauncherLock;
use crate::record::{Outcome, created_event, new_session, record_failure, release_placeholders};
use crate::recording::{Opening, Recording};

/// A session on record whose sandbox is about to start: the plan, the
/// launcher's lock, the placeholders it created, its Docker proxy. Drop it
/// only through [`Launch::run`] or [`Launch::detach`].
pub struct Launch<'a> {
    lc: &'a Lifecycle,
    spec: SandboxSpec,
    backend: store::Backend,
    placeholders: Vec<std::path::PathBuf>,
    proxy: Option<SessionProxy>,
    _lock: Option<LauncherLock>,
}

/// How a foreground session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The agent's exit code, or the launcher's when the command could
    /// not be started (127, 126).
    pub code: i32,
    /// Why the command could not be started, when it could not.
    pub message: Option<String>,
}

impl Lifecycle {
    /// Plans a session with `plan`, puts it on record (reconciling the
    /// store first, while planning runs), prepares the host (agentctl's
    /// own directories, placeholders, the Docker proxy) and hands back the
    /// launch. Every failure after the record is recorded too.
    pub fn prepare(
        &self,
        plan: impl FnOnce() -> Result<SandboxSpec>,
        backend: store::Backend,
        detached: bool,
    ) -> Result<Launch<'_>> {
        self.prepare_asked(plan, Some(backend), detached, &serde_json::json!({}))
    }

    /// [`prepare`](Self::prepare), with what the request asked beyond its
    /// profile on record (`SessionRequest::asked`).
    pub fn prepare_asked(
        &self,
        plan: impl FnOnce() -> Result<SandboxSpec>,
        backend: Option<store::Backend>,
        detached: bool,
        asked: &serde_json::Value,
    ) -> Result<Launch<'_>> {
        // The store opens while the session is planned.
        tracing::debug!("prepare");
        let opening = self.store.keeps_records().then(|| Opening::start(self));
        let mut spec = plan()?;
        tracing::debug!("planned");
        let backend = choose_backend(backend, &spec)?;
        after_plan_handshake();
        if detached && !self.store.keeps_records() {
            return Err(Error::Refused(
                "a detached session needs the session store to be found again; drop `--store none`"
                    .into(),
            ));
        }
        let id = spec.session.to_string();
        let lock = match self.store.keeps_records() {
            true => Some(LauncherLock::take(&self.runtime, &id)?),
            false => None,
        };
        // On record before anything runs; reconciling first keeps `ps` true.
        if let Some(opening) = opening {
            let mut row = new_session(&spec, backend, detached)?;
            if let Some(owner) = &self.owner {
                row.user = owner.clone();
            }
            opening.create(self, row, created_event(&spec, &self.actor, asked))?;
            tracing::debug!("on record");
        }
        // What the plan needs made on the host, made now that it is on
        // record: agentctl's own directories, home entries to create.
        if let Err(e) = sandbox::prepare::apply(&spec) {
            self.fail_on_record(&id, &e.to_string());
            return Err(e.into());
        }
        // Placeholders for the host-run files git would read if they
        // existed (`.git/commondir`), so that they can be mounted read-only.
        let placeholders = match sandbox::hostrun::create_placeholders(&spec.host_run) {
            Ok(created) => created,
            Err(e) => {
                self.fail_on_record(&id, &e.to_string());
                return Err(e.into());
            }
        };
        let mut launch = Launch {
            lc: self,
            spec: SandboxSpec::clone(&spec),
            backend,
            placeholders,
            proxy: None,
            _lock: lock,
        };
        // The agent's Docker socket, when the profile gives it one: started
        // after the session is on record, so its denials land in the trail.
        if spec.docker {
            match SessionProxy::start(self, &spec) {
                Ok(p) => {
                    p.attach(&mut spec);
                    launch.spec = spec;
                    launch.proxy = Some(p);
                }
                Err(e) => {
                    self.fail_on_record(&id, &e.to_string());
                    launch.release();
                    return Err(e);
                }
            }
        }
        Ok(launch)
    }

    /// Records a launch that failed before the sandbox ran.
    fn fail_on_record(&self, id: &str, error: &str) {
        if !self.store.keeps_records() {
            return;
        }
        let _ = self.store.with(async |store| {
            record_failure(store, id, error, Vec::new(), SessionUpdate::default()).await
        });
    }
}

impl Launch<'_> {
    pub fn id(&self) -> String {
        self.spec.session.to_string()
    }

    /// The plan as the sandbox gets it (with the Docker socket, if any).
    /// The backend the session runs on (asked for, or the profile's).
    pub fn backend(&self) -> store::Backend {
        self.backend
    }

    pub fn spec(&self) -> &SandboxSpec {
        &self.spec
    }

    /// Runs the session in the foreground with the caller's stdio, keeps
    /// it on record while it runs, and records how it ended. `on_start`
    /// is told when the agent runs. The exit code is the caller's whatever
    /// happens to the record (a record that fails is a notice).
    pub fn run(self, opts: &RunOptions, on_start: &dyn Fn(Option<u32>)) -> Result<Ended> {
        let id = self.id();
        let backend = self.lc.backend(self.backend);
        // The backend appends the output here too; the live record copies
        // it into the store as it comes.
        let output = self
            .lc
            .store
            .keeps_records()
            .then(|| output_copy(&self.lc.runtime, &id))
            .flatten();
        let opts = RunOptions {
            output_copy: output.clone(),
            ..opts.clone()
        };
        let mut recording = Recording::new(&self.lc.store, &id, output.clone(), on_start);
        if self.backend == store::Backend::Docker {
            // The engine may run elsewhere (or this launcher in a container):
            // a stop goes through it, never to a pid of this host.
            let (exe, session) = (self.lc.self_exe.clone(), id.clone());
            recording = recording.with_engine_stop(std::sync::Arc::new(move |grace| {
                let h = sandbox::Handle {
                    session: session.clone(),
                    ..sandbox::Handle::default()
                };
                let docker = backend_docker::DockerBackend::new(exe.clone());
                if let Err(e) = sandbox::Backend::stop(&docker, &h, grace) {
                    tracing::warn!("cannot stop the session's container: {e}");
                }
            }));
        }
        let result = backend.run(&self.spec, &opts, &recording);
        tracing::debug!("sandbox gone");
        if let Some(p) = &self.proxy {
            p.stop(self.lc);
        }
        if self.lc.store.keeps_records() {
            let outcome = match &result {
                Ok(status) => Outcome::Exit(status.code()),
                Err(BackendError::Exec { code, .. }) => Outcome::Exit(*code),
                Err(e) => Outcome::Failed(e.to_string()),
            };
            if let Err(e) = recording.finish(outcome) {
                (self.lc.notify)(&format!(
                    "agentctl: the session's end was not recorded: {e}"
                ));
            }
        }
        self.release();
        if let Some(p) = &output {
            let _ = std::fs::remove_file(p);
        }
        tracing::debug!("end on record");
        match result {
            Ok(status) => Ok(Ended {
                code: status.code(),
                message: None,
            }),
            Err(BackendError::Exec { message, code }) => Ok(Ended {
                code,
                message: Some(message),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts the session in the background, supervised by its backend
    /// (the native helper, the Docker engine), and returns its id once it
    /// runs and its whereabouts are on record.
    pub fn detach(self, opts: &RunOptions) -> Result<String> {
        let id = self.id();
        let on_exit = vec![
            self.lc.self_exe.to_string_lossy().into_owned(),
            "--store".to_string(),
            self.lc.store.0.clone().unwrap_or_default(),
            "__session-exit".to_string(),
            id.clone(),
        ];
        let backend = self.lc.backend(self.backend);
        let result = backend.start_detached(&self.spec, opts, &on_exit);
        if result.is_err() {
            if let Some(p) = &self.proxy {
                p.stop(self.lc);
            }
            self.release();
        }
        test_pause("AGENTCTL_TEST_DETACHED_RECORD_PAUSE_MS");
        self.lc.store.with(async |store| {
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
                    Ok(())
                }
                Err(e) => {
                    record_failure(
                        store,
                        &id,
                        &e.to_string(),
                        Vec::new(),
                        SessionUpdate::default(),
                    )
                    .await
                }
            }
        })?;
        result?;
        self.watch_stops(&id);
        Ok(id)
    }

    /// Starts the process that carries out stops asked for in the store
    /// for this detached session (see [`Lifecycle::watch_stops`]). One
    /// that cannot start leaves `agentctl stop` working; the user is told.
    fn watch_stops(&self, id: &str) {
        use std::os::unix::process::CommandExt;
        let spawned = std::process::Command::new(&self.lc.self_exe)
            .arg("--store")
            .arg(self.lc.store.0.as_deref().unwrap_or("none"))
            .args(["__watch-stops", id])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn();
        if let Err(e) = spawned {
            (self.lc.notify)(&format!(
                "agentctl: cannot watch session {id} for stops asked in the dashboard ({e}); `agentctl stop` still works"
            ));
        }
    }

    /// Removes the placeholders this launch created, unless another live
    /// session relies on them. A detached session's are removed by
    /// whoever records its end.
    fn release(&self) {
        if self.placeholders.is_empty() {
            return;
        }
        if !self.lc.store.keeps_records() {
            sandbox::hostrun::remove_placeholders(&self.spec.host_run, &self.placeholders);
            return;
        }
        let (id, files) = (self.id(), &self.spec.host_run);
        let _ = self.lc.store.with(async |store| {
            release_placeholders(store, &id, files).await;
            Ok(())
        });
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

/// Makes the file a foreground session's output is copied to, beside the
/// launcher's lock (a directory only this user may enter): new, 0600.
/// Without it the session runs, its output not recorded, and says so.
fn output_copy(runtime: &std::path::Path, id: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = runtime.join("launchers").join(format!("{id}.output"));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(_) => Some(path),
        Err(e) => {
            tracing::warn!(
                "the session's output is not recorded: {}: {e}",
                path.display()
            );
            None
        }
    }
}

/// The backend a session runs on: the caller's choice, else the profile's
/// (`backend:`), else native. A caller's choice that contradicts the
/// profile's is refused: a profile that asks for a VM's own kernel must
/// not end up in a container without anyone saying so.
fn choose_backend(asked: Option<store::Backend>, spec: &SandboxSpec) -> Result<store::Backend> {
    let wanted = spec.backend.map(|b| match b {
        policy::BackendName::Native => store::Backend::Native,
        policy::BackendName::Docker => store::Backend::Docker,
        policy::BackendName::Vm => store::Backend::Vm,
    });
    match (asked, wanted) {
        (Some(a), Some(w)) if a != w => Err(Error::Refused(format!(
            "profile {} runs on the {w} backend (`backend: {w}`); --backend {a} (or AGENTCTL_BACKEND) would run it on another: leave it out, or use a profile without `backend:`",
            spec.profile
        ))),
        (Some(a), _) => Ok(a),
        (None, Some(w)) => Ok(w),
        (None, None) => Ok(store::Backend::Native),
    }
}
