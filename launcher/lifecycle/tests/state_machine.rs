//! The session state machine with a fake backend and a temporary SQLite
//! store: no root, no Docker, no sandbox. What the store says after each
//! path through a session's life is what `ps`, the dashboard and workers
//! will see.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lifecycle::{Backends, Error, Lifecycle, StopRequest, Stopped, StoreLocation};
use sandbox::{
    Backend, BackendError, ExitStatus, Handle, Liveness, Observer, Orphan, RunOptions, SandboxSpec,
};
use store::Status;

/// A step another process takes while the backend is asked.
type Interleave = Box<dyn FnMut(&str) + Send>;

/// What the fake backend does, and what it was asked.
#[derive(Default)]
struct World {
    /// How the next foreground run goes.
    run: Option<Result<ExitStatus, String>>,
    /// The command could not be started (BackendError::Exec).
    exec_refused: Option<(String, i32)>,
    /// Per session: what liveness reports.
    live: HashMap<String, Liveness>,
    /// Called inside `liveness`, before it answers: lets a test put
    /// another process's step (a supervisor recording the end) there.
    on_liveness: Option<Interleave>,
    /// Called while the agent "runs", after `started`.
    while_running: Option<Interleave>,
    calls: Vec<String>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<World>>);

impl Fake {
    fn calls(&self) -> Vec<String> {
        self.0.lock().unwrap().calls.clone()
    }
    fn set(&self, id: &str, l: Liveness) {
        self.0.lock().unwrap().live.insert(id.to_string(), l);
    }
    fn log(&self, call: String) {
        self.0.lock().unwrap().calls.push(call);
    }
}

impl Backends for Fake {
    fn get(&self, _kind: store::Backend) -> Box<dyn Backend> {
        Box::new(self.clone())
    }
}

impl Backend for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn preflight(&self, _: &SandboxSpec, _: &RunOptions) -> Result<(), BackendError> {
        Ok(())
    }
    fn run(
        &self,
        spec: &SandboxSpec,
        _: &RunOptions,
        observer: &dyn Observer,
    ) -> Result<ExitStatus, BackendError> {
        let id = spec.session.to_string();
        self.log(format!("run {id}"));
        let (run, refused) = {
            let mut w = self.0.lock().unwrap();
            (w.run.take(), w.exec_refused.take())
        };
        if let Some((message, code)) = refused {
            return Err(BackendError::Exec { message, code });
        }
        match run.unwrap_or(Ok(ExitStatus::Code(0))) {
            Ok(status) => {
                observer.started(Some(4242));
                let hook = self.0.lock().unwrap().while_running.take();
                if let Some(mut hook) = hook {
                    hook(&id);
                }
                observer.signal("SIGINT");
                Ok(status)
            }
            Err(e) => Err(BackendError::Runtime(e)),
        }
    }
    fn start_detached(
        &self,
        spec: &SandboxSpec,
        _: &RunOptions,
        _on_exit: &[String],
    ) -> Result<Handle, BackendError> {
        let id = spec.session.to_string();
        self.log(format!("start_detached {id}"));
        self.set(&id, Liveness::Running);
        Ok(Handle {
            session: id,
            helper_pid: Some(777),
            ..Handle::default()
        })
    }
    fn stop(&self, h: &Handle, _: Duration) -> Result<(), BackendError> {
        self.log(format!("stop {}", h.session));
        // SIGTERM ends it; the engine keeps the status.
        self.set(&h.session, Liveness::Exited(ExitStatus::Signal(15)));
        Ok(())
    }
    fn exec(&self, h: &Handle, command: &[String], _: bool) -> Result<ExitStatus, BackendError> {
        self.log(format!("exec {} {}", h.session, command.join(" ")));
        Ok(ExitStatus::Code(7))
    }
    fn logs(&self, h: &Handle, _: bool, out: &mut dyn std::io::Write) -> Result<(), BackendError> {
        writeln!(out, "output of {}", h.session).map_err(|e| BackendError::io("write", e))
    }
    fn liveness(&self, h: &Handle) -> Result<Liveness, BackendError> {
        let hook = self.0.lock().unwrap().on_liveness.take();
        if let Some(mut hook) = hook {
            hook(&h.session);
        }
        self.log(format!("liveness {}", h.session));
        Ok(self
            .0
            .lock()
            .unwrap()
            .live
            .get(&h.session)
            .copied()
            .unwrap_or(Liveness::Gone))
    }
    fn forget_exit(&self, h: &Handle) {
        self.log(format!("forget_exit {}", h.session));
    }
    fn remove(&self, h: &Handle) -> Result<(), BackendError> {
        self.log(format!("remove {}", h.session));
        self.0.lock().unwrap().live.remove(&h.session);
        Ok(())
    }
    fn orphans(&self, _: &dyn Fn(&str) -> bool) -> Result<Vec<Orphan>, BackendError> {
        Ok(Vec::new())
    }
}

struct Fx {
    _dir: tempfile::TempDir,
    lc: Lifecycle,
    fake: Fake,
}

fn fx() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let lc = Lifecycle {
        store: StoreLocation(Some(format!(
            "sqlite://{}",
            dir.path().join("sessions.db").display()
        ))),
        backends: Arc::new(fake.clone()),
        runtime: dir.path().join("run"),
        self_exe: "/nonexistent/agentctl".into(),
        launch_grace: Duration::from_secs(30),
        actor: "tester".into(),
        owner: None,
        notify: Arc::new(|line| eprintln!("notice: {line}")),
    };
    Fx {
        _dir: dir,
        lc,
        fake,
    }
}

/// A plan of its own for each session: the fixture with a fresh id.
fn spec() -> SandboxSpec {
    let mut s = sandbox::fixtures::spec(policy::NetworkMode::None);
    s.session = sandbox::spec::SessionId::generate();
    s
}

impl Fx {
    fn session(&self, id: &str) -> store::Session {
        self.lc.store.with(async |s| Ok(s.get(id).await?)).unwrap()
    }
    fn kinds(&self, id: &str) -> Vec<String> {
        self.lc
            .store
            .with(async |s| Ok(s.events(id).await?))
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }
    fn verified(&self, id: &str) -> bool {
        self.lc
            .store
            .with(async |s| Ok(s.verify(id).await?))
            .unwrap()
            .ok
    }
    /// A detached session, running.
    fn detached(&self) -> String {
        let launch = self
            .lc
            .prepare(|| Ok(spec()), store::Backend::Native, true)
            .unwrap();
        launch.detach(&RunOptions::default()).unwrap()
    }
    /// A session on record whose launcher died after `started`: the lock
    /// is gone with it, the end was never written.
    fn orphaned_running(&self) -> String {
        let launch = self
            .lc
            .prepare(|| Ok(spec()), store::Backend::Native, false)
            .unwrap();
        let id = launch.id();
        drop(launch);
        self.lc
            .store
            .with(async |s| {
                s.record(
                    &id,
                    vec![store::NewEvent::new("started")],
                    &store::SessionUpdate {
                        status: Some(Status::Running),
                        started_at: Some(store::now_ms()),
                        ..Default::default()
                    },
                )
                .await?;
                Ok(())
            })
            .unwrap();
        id
    }
}

#[test]
fn a_foreground_session_that_ends_normally() {
    let f = fx();
    f.fake.0.lock().unwrap().run = Some(Ok(ExitStatus::Code(3)));
    let started = Arc::new(Mutex::new(None));
    let seen = started.clone();
    let launch =
        f.lc.prepare(|| Ok(spec()), store::Backend::Native, false)
            .unwrap();
    let id = launch.id();
    assert_eq!(
        f.session(&id).status,
        Status::Created,
        "on record before it runs"
    );
    let ended = launch
        .run(&RunOptions::default(), &move |pid| {
            *seen.lock().unwrap() = pid;
        })
        .unwrap();
    assert_eq!(ended.code, 3);
    assert_eq!(*started.lock().unwrap(), Some(4242));
    let s = f.session(&id);
    assert_eq!(s.status, Status::Exited);
    assert_eq!(s.exit_code, Some(3));
    assert!(s.started_at.is_some() && s.ended_at.is_some());
    assert_eq!(f.kinds(&id), ["created", "started", "signal", "exited"]);
    assert!(f.verified(&id));
    // The launcher's lock went with it: nothing left to reconcile.
    assert!(
        !f.lc
            .runtime
            .join("launchers")
            .join(format!("{id}.lock"))
            .exists()
    );
}

#[test]
fn a_session_whose_backend_fails_to_start_is_failed() {
    let f = fx();
    f.fake.0.lock().unwrap().run = Some(Err("no cgroup for you".into()));
    let launch =
        f.lc.prepare(|| Ok(spec()), store::Backend::Native, false)
            .unwrap();
    let id = launch.id();
    let err = launch.run(&RunOptions::default(), &|_| {}).unwrap_err();
    assert!(matches!(err, Error::Backend(_)), "{err}");
    let s = f.session(&id);
    assert_eq!(s.status, Status::Failed);
    assert_eq!(s.exit_code, Some(lifecycle::record::LAUNCHER_FAILURE));
    assert_eq!(f.kinds(&id), ["created", "failed"]);
    let events = f.lc.store.with(async |s| Ok(s.events(&id).await?)).unwrap();
    assert_eq!(events[1].data["error"], "no cgroup for you");
}

#[test]
fn a_command_that_cannot_start_exits_with_the_shells_code() {
    let f = fx();
    f.fake.0.lock().unwrap().exec_refused = Some(("nope: not found".into(), 127));
    let launch =
        f.lc.prepare(|| Ok(spec()), store::Backend::Native, false)
            .unwrap();
    let id = launch.id();
    let ended = launch.run(&RunOptions::default(), &|_| {}).unwrap();
    assert_eq!(ended.code, 127);
    assert_eq!(ended.message.as_deref(), Some("nope: not found"));
    let s = f.session(&id);
    assert_eq!((s.status, s.exit_code), (Status::Exited, Some(127)));
}

#[test]
fn a_plan_that_fails_leaves_no_record() {
    let f = fx();
    let err =
        f.lc.prepare(
            || Err(Error::Refused("the plan said no".into())),
            store::Backend::Native,
            false,
        )
        .err()
        .expect("refused");
    assert_eq!(err.to_string(), "the plan said no");
    let all =
        f.lc.list(&store::ListQuery {
            all: true,
            limit: 10,
            offset: 0,
        })
        .unwrap();
    assert!(all.is_empty(), "{all:?}");
}

#[test]
fn a_detached_session_needs_a_store() {
    let mut f = fx();
    f.lc.store = StoreLocation(None);
    let err =
        f.lc.prepare(|| Ok(spec()), store::Backend::Native, true)
            .err()
            .expect("refused");
    assert!(err.to_string().contains("--store none"), "{err}");
}

#[test]
fn a_stop_is_recorded_with_its_actor_and_reason_and_ends_as_stopped() {
    let f = fx();
    let id = f.detached();
    assert_eq!(f.session(&id).status, Status::Running);
    assert_eq!(f.session(&id).helper_pid, Some(777));
    let stopped =
        f.lc.stop(
            &id[..8],
            &StopRequest {
                actor: "alice".into(),
                reason: Some("runaway loop".into()),
                grace: Duration::from_secs(2),
            },
        )
        .unwrap();
    assert!(matches!(stopped, Stopped::Stopped(_)));
    let s = f.session(&id);
    assert_eq!(s.status, Status::Stopped);
    assert_eq!(s.exit_code, Some(143));
    let events = f.lc.store.with(async |s| Ok(s.events(&id).await?)).unwrap();
    let req = events.iter().find(|e| e.kind == "stop_requested").unwrap();
    assert_eq!(req.actor.as_deref(), Some("alice"));
    assert_eq!(req.data["reason"], "runaway loop");
    assert_eq!(req.data["timeout_secs"], 2);
    assert_eq!(
        f.kinds(&id),
        ["created", "started", "stop_requested", "stopped"]
    );
    assert!(f.fake.calls().contains(&format!("forget_exit {id}")));
    // Stopping it again finds it ended.
    let again =
        f.lc.stop(
            &id,
            &StopRequest {
                actor: "alice".into(),
                reason: None,
                grace: Duration::ZERO,
            },
        )
        .unwrap();
    assert!(matches!(again, Stopped::NotRunning(s) if s.status == Status::Stopped));
}

#[test]
fn exec_and_follow_go_through_the_backend_and_exec_is_on_record() {
    let f = fx();
    let id = f.detached();
    let code = f.lc.exec(&id, &["ls".into(), "-l".into()], false).unwrap();
    assert_eq!(code, 7);
    assert!(f.fake.calls().contains(&format!("exec {id} ls -l")));
    let events = f.lc.store.with(async |s| Ok(s.events(&id).await?)).unwrap();
    let exec = events.iter().find(|e| e.kind == "exec").unwrap();
    assert_eq!(exec.actor.as_deref(), Some("tester"));
    assert_eq!(exec.data["command"], serde_json::json!(["ls", "-l"]));
    let mut out = Vec::new();
    f.lc.follow(&id, false, &mut out).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), format!("output of {id}\n"));
}

#[test]
fn exec_in_a_session_that_ended_is_refused() {
    let f = fx();
    let id = f.detached();
    f.fake.set(&id, Liveness::Exited(ExitStatus::Code(0)));
    let err = f.lc.exec(&id, &["true".into()], false).unwrap_err();
    assert!(err.to_string().contains("is not running (exited)"), "{err}");
    assert!(!f.fake.calls().iter().any(|c| c.starts_with("exec ")));
}

#[test]
fn a_launcher_killed_mid_session_is_reconciled_from_the_backend() {
    let f = fx();
    // The native helper outlived its launcher and left the exit code.
    let ended = f.orphaned_running();
    f.fake.set(&ended, Liveness::Exited(ExitStatus::Code(5)));
    // Nothing of this one is left anywhere.
    let vanished = f.orphaned_running();
    f.lc.reconcile().unwrap();
    let s = f.session(&ended);
    assert_eq!((s.status, s.exit_code), (Status::Exited, Some(5)));
    let s = f.session(&vanished);
    assert_eq!(s.status, Status::Lost);
    assert_eq!(f.kinds(&vanished).last().unwrap(), "lost");
    let calls = f.fake.calls();
    assert!(calls.contains(&format!("forget_exit {ended}")), "{calls:?}");
    assert!(calls.contains(&format!("remove {vanished}")), "{calls:?}");
    assert!(
        !calls.contains(&format!("remove {ended}")),
        "output is kept"
    );
    assert!(f.verified(&ended) && f.verified(&vanished));
}

#[test]
fn a_session_with_a_live_launcher_is_left_to_it() {
    let f = fx();
    let launch =
        f.lc.prepare(|| Ok(spec()), store::Backend::Native, false)
            .unwrap();
    let id = launch.id();
    // Backdated past the launch grace: only the lock keeps it.
    let mut lc = f.lc.clone();
    lc.launch_grace = Duration::ZERO;
    std::thread::sleep(Duration::from_millis(5));
    lc.reconcile().unwrap();
    assert_eq!(f.session(&id).status, Status::Created);
    assert!(!f.fake.calls().contains(&format!("liveness {id}")));
    drop(launch);
    lc.reconcile().unwrap();
    assert_eq!(f.session(&id).status, Status::Lost, "its launcher is gone");
}

#[test]
fn a_young_session_is_not_judged_lost() {
    let f = fx();
    let launch =
        f.lc.prepare(|| Ok(spec()), store::Backend::Native, false)
            .unwrap();
    let id = launch.id();
    drop(launch);
    f.lc.reconcile().unwrap();
    assert_eq!(f.session(&id).status, Status::Created, "still in its grace");
}

#[test]
fn a_backend_that_reports_the_session_gone_makes_it_lost() {
    let f = fx();
    let id = f.detached();
    f.fake.0.lock().unwrap().live.remove(&id);
    let listed =
        f.lc.list(&store::ListQuery {
            all: true,
            limit: 10,
            offset: 0,
        })
        .unwrap();
    let s = listed.iter().find(|s| s.id == id).unwrap();
    assert_eq!(s.status, Status::Lost);
    assert!(f.fake.calls().contains(&format!("remove {id}")));
}

#[test]
fn a_reconcile_racing_the_supervisors_end_keeps_the_recorded_end() {
    let f = fx();
    let id = f.detached();
    // The supervisor records the end and tidies up while the reconcile
    // asks the backend: the backend then knows nothing of the session.
    let lc = f.lc.clone();
    let fake = f.fake.clone();
    f.fake.0.lock().unwrap().on_liveness = Some(Box::new(move |sid| {
        lc.session_exit(sid, Some(0)).unwrap();
        fake.0.lock().unwrap().live.remove(sid);
    }));
    f.lc.reconcile().unwrap();
    let s = f.session(&id);
    assert_eq!(
        (s.status, s.exit_code),
        (Status::Exited, Some(0)),
        "the supervisor's end stands; not lost"
    );
    assert_eq!(f.kinds(&id), ["created", "started", "exited"]);
    assert!(
        !f.fake.calls().contains(&format!("remove {id}")),
        "an ended session's output is kept until rm"
    );
}

#[test]
fn remove_refuses_a_live_session_unless_forced() {
    let f = fx();
    let id = f.detached();
    let err = f.lc.remove(&id, false, "bob").unwrap_err();
    assert!(err.to_string().contains("stop it first"), "{err}");
    f.lc.remove(&id, true, "bob").unwrap();
    assert!(f.lc.store.with(async |s| Ok(s.get(&id).await?)).is_err());
    let calls = f.fake.calls();
    assert!(calls.contains(&format!("stop {id}")) && calls.contains(&format!("remove {id}")));
}

#[test]
fn a_foreground_session_shows_as_running_while_it_runs() {
    let f = fx();
    let store = f.lc.store.clone();
    let seen = Arc::new(Mutex::new(None));
    let saw = seen.clone();
    f.fake.0.lock().unwrap().while_running = Some(Box::new(move |id| {
        // Longer than a quick command's grace: `started` is on record alone.
        std::thread::sleep(Duration::from_millis(300));
        let s = store.with(async |s| Ok(s.get(id).await?)).unwrap();
        *saw.lock().unwrap() = Some(s.status);
    }));
    let launch =
        f.lc.prepare(|| Ok(spec()), store::Backend::Native, false)
            .unwrap();
    let id = launch.id();
    assert_eq!(launch.run(&RunOptions::default(), &|_| {}).unwrap().code, 0);
    assert_eq!(*seen.lock().unwrap(), Some(Status::Running));
    assert_eq!(f.kinds(&id), ["created", "started", "signal", "exited"]);
    assert!(f.verified(&id));
}
