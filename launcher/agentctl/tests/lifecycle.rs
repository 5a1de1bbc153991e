//! Sessions on record: the lifecycle commands, the audit trail, crash
//! recovery and concurrency, against both stores (SQLite and a real
//! PostgreSQL) and both backends.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{binary, docker_available, require, text};

/// A store for one test: a SQLite file, or a fresh PostgreSQL database.
struct Db {
    url: String,
    kind: &'static str,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<store::testing::TestDatabase>,
}

fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    Db {
        url: format!("sqlite://{}", dir.path().join("agentctl.db").display()),
        kind: "sqlite",
        _dir: Some(dir),
        _pg: None,
    }
}

fn postgres() -> Option<Db> {
    let server = match store::testing::server() {
        Ok(s) => s,
        Err(why) => {
            store::testing::skip("postgres lifecycle", &why);
            return None;
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt
        .block_on(store::testing::TestDatabase::create(server))
        .unwrap();
    Some(Db {
        url: db.url.clone(),
        kind: "postgres",
        _dir: None,
        _pg: Some(db),
    })
}

fn both_stores() -> Vec<Db> {
    let mut v = vec![sqlite()];
    v.extend(postgres());
    v
}

struct Ctl<'a> {
    db: &'a Db,
    ws: tempfile::TempDir,
}

impl Ctl<'_> {
    fn new(db: &Db) -> Ctl<'_> {
        let ws = tempfile::tempdir().unwrap();
        std::fs::write(ws.path().join(".env"), "SECRET-lifecycle").unwrap();
        Ctl { db, ws }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(binary());
        c.args(args)
            .env("AGENTCTL_STORE", &self.db.url)
            .env("AGENTCTL_LAUNCH_GRACE_MS", "500")
            .current_dir(self.ws.path());
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args).stdin(Stdio::null()).output().unwrap();
        assert!(
            o.status.success(),
            "[{}] agentctl {args:?} failed ({:?}): {}",
            self.db.kind,
            o.status.code(),
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    /// Runs `agentctl <args>` (a shell line) with its stdio on a
    /// pseudo-terminal (util-linux `script`); what reached that terminal is
    /// the output's stdout.
    fn on_a_tty(&self, args: &str) -> std::process::Output {
        let line = format!(
            "AGENTCTL_STORE='{}' AGENTCTL_LAUNCH_GRACE_MS=500 {} {args}",
            self.db.url,
            binary().display()
        );
        Command::new("script")
            .args(["-q", "-e", "-c", &line, "/dev/null"])
            .current_dir(self.ws.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn code(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let o = self.cmd(args).stdin(Stdio::null()).output().unwrap();
        (o.status.code(), text(&o.stdout), text(&o.stderr))
    }

    fn sessions(&self) -> Vec<Value> {
        serde_json::from_str::<Value>(&self.ok(&["ps", "-a", "--json", "--limit", "10000"]))
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn session(&self, id: &str) -> Value {
        self.sessions()
            .into_iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("session {id} not listed"))
    }

    fn events(&self, id: &str) -> Vec<String> {
        let v: Value = serde_json::from_str(&self.ok(&["audit", "--json", id])).unwrap();
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect()
    }

    fn wait_status(&self, id: &str, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.session(id);
            if s["status"] == want || Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn lifecycle(db: &Db, backend: &str) {
    let c = Ctl::new(db);
    let tag = format!("[{} {backend}]", db.kind);

    // Foreground: recorded with its exit code, chain intact.
    let (code, out, err) = c.code(&[
        "run",
        "-q",
        "--backend",
        backend,
        "--",
        "sh",
        "-c",
        "echo fg; exit 3",
    ]);
    assert_eq!(code, Some(3), "{tag} {err}");
    assert_eq!(out, "fg\n");
    let fg = c
        .sessions()
        .into_iter()
        .find(|s| s["detached"] == false)
        .unwrap();
    assert_eq!(fg["status"], "exited", "{tag}");
    assert_eq!(fg["exit_code"], 3, "{tag}");
    assert_eq!(
        c.events(fg["id"].as_str().unwrap()),
        ["created", "started", "exited"],
        "{tag}"
    );
    c.ok(&["audit", "--verify", fg["id"].as_str().unwrap()]);

    // A foreground session is on record as running while it runs, and
    // `stop` from another terminal ends it as stopped.
    let mut launcher = c
        .cmd(&[
            "run",
            "-q",
            "--backend",
            backend,
            "--",
            "sh",
            "-c",
            "trap 'exit 0' TERM; : > trap-set; while true; do sleep 0.1; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let live = loop {
        let live: Vec<Value> = serde_json::from_str::<Value>(&c.ok(&["ps", "--json"]))
            .unwrap()
            .as_array()
            .unwrap()
            .clone();
        if let Some(s) = live.into_iter().find(|s| s["status"] == "running") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "{tag} the foreground session never showed as running"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(live["detached"], false, "{tag} {live}");
    assert!(live["started_at"].is_i64(), "{tag} {live}");
    let fid = live["id"].as_str().unwrap().to_string();
    // Running is on record once the command starts; its trap is set a
    // moment later (seconds, in a VM under emulation).
    let trap_set = c.ws.path().join("trap-set");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !trap_set.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&trap_set);
    c.ok(&["stop", "-t", "5", &fid]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = launcher.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = launcher.kill();
            panic!("{tag} the launcher did not end after `agentctl stop`");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut launcher.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{tag} {err}");
    let s = c.session(&fid);
    assert_eq!(
        (s["status"].as_str(), s["exit_code"].as_i64()),
        (Some("stopped"), Some(0)),
        "{tag} {s}"
    );
    assert_eq!(
        c.events(&fid),
        ["created", "started", "stop_requested", "stopped"],
        "{tag}"
    );
    c.ok(&["audit", "--verify", &fid]);

    // Detached: running, output kept, exec into it, stopped by someone.
    let id = c
        .ok(&[
            "run",
            "-d",
            "-q",
            "--backend",
            backend,
            "--",
            "sh",
            "-c",
            "echo first; trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done",
        ])
        .trim()
        .to_string();
    assert_eq!(id.len(), 32, "{tag} {id}");
    let prefix = &id[..10];
    let running: Vec<Value> = serde_json::from_str::<Value>(&c.ok(&["ps", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    assert!(
        running
            .iter()
            .any(|s| s["id"] == id.as_str() && s["status"] == "running"),
        "{tag} {running:?}"
    );
    let (code, out, err) = c.code(&[
        "exec",
        prefix,
        "--",
        "sh",
        "-c",
        "echo from-exec; cat .env; exit 4",
    ]);
    assert_eq!(code, Some(4), "{tag} exec: {err}");
    assert_eq!(
        out, "from-exec\n",
        "{tag} exec must run masked like the session"
    );
    let (code, _, err) = c.code(&["rm", prefix]);
    assert_ne!(
        code,
        Some(0),
        "{tag} rm of a running session must be refused"
    );
    assert!(err.contains("-f"), "{tag} {err}");
    c.ok(&["stop", "-t", "5", prefix]);
    let s = c.wait_status(&id, "stopped");
    assert_eq!(s["status"], "stopped", "{tag} {s}");
    let logs = c.ok(&["logs", prefix]);
    assert!(
        logs.contains("first") && logs.contains("bye"),
        "{tag} logs: {logs:?}"
    );
    let kinds = c.events(&id);
    assert!(
        kinds.contains(&"stop_requested".to_string()) && kinds.last().unwrap() == "stopped",
        "{tag} {kinds:?}"
    );
    let audit: Value = serde_json::from_str(&c.ok(&["audit", "--json", prefix])).unwrap();
    let stop = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "stop_requested")
        .unwrap();
    assert!(
        stop["actor"].as_str().unwrap().starts_with("uid "),
        "{tag} who stopped it: {stop}"
    );
    c.ok(&["audit", "--verify", prefix]);
    c.ok(&["rm", prefix]);
    assert!(
        !c.sessions().iter().any(|s| s["id"] == id.as_str()),
        "{tag} rm left the record"
    );

    // logs -f follows until the session ends.
    let id = c
        .ok(&[
            "run",
            "-d",
            "-q",
            "--backend",
            backend,
            "--",
            "sh",
            "-c",
            "for i in 1 2 3; do echo tick$i; sleep 0.3; done",
        ])
        .trim()
        .to_string();
    let started = Instant::now();
    let out = c.ok(&["logs", "-f", &id]);
    assert_eq!(out, "tick1\ntick2\ntick3\n", "{tag}");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{tag} -f returned before the end"
    );
    let s = c.wait_status(&id, "exited");
    assert_eq!(
        (s["status"].as_str(), s["exit_code"].as_i64()),
        (Some("exited"), Some(0)),
        "{tag} {s}"
    );
    c.ok(&["rm", &id]);

    for s in c.sessions() {
        let left = leftovers_of(s["id"].as_str().unwrap());
        assert!(left.is_empty(), "{tag} left behind: {left:?}");
    }
}

#[test]
fn lifecycle_native() {
    for db in both_stores() {
        lifecycle(&db, "native");
    }
}

#[test]
fn lifecycle_docker() {
    if !require(docker_available(), "a Docker daemon") {
        return;
    }
    for db in both_stores() {
        lifecycle(&db, "docker");
    }
}

#[test]
fn lifecycle_vm() {
    if !support::vm_available() {
        return;
    }
    for db in both_stores() {
        lifecycle(&db, "vm");
    }
}

/// The vm backend's sessions after their launcher or supervisor died: a
/// foreground launcher killed while its VM boots or runs takes the VM
/// with it, a detached session whose helper is killed is lost, and
/// reconciliation leaves no QEMU, no session directory and no orphan.
#[test]
fn vm_killed_launchers_and_supervisors_are_reconciled() {
    if !support::vm_available() {
        return;
    }
    let db = sqlite();
    let c = Ctl::new(&db);
    for delay_ms in [0u64, 300, 3000] {
        let mut child = c
            .cmd(&["run", "-q", "--backend", "vm", "--", "sleep", "31"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    let id = c
        .ok(&["run", "-d", "-q", "--backend", "vm", "--", "sleep", "31"])
        .trim()
        .to_string();
    let helper = c.session(&id)["helper_pid"].as_u64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(30);
    let sessions = loop {
        let sessions = c.sessions();
        if sessions
            .iter()
            .all(|s| s["status"] != "running" && s["status"] != "created")
            || Instant::now() > deadline
        {
            break sessions;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let ended = ["exited", "failed", "stopped", "lost"];
    for s in &sessions {
        assert!(
            ended.contains(&s["status"].as_str().unwrap()),
            "not reconciled: {s}"
        );
        let sid = s["id"].as_str().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let left = loop {
            let mut left = leftovers_of(sid);
            left.extend(support::processes_with(sid));
            if left.is_empty() || Instant::now() > deadline {
                break left;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(left.is_empty(), "left behind by {sid}: {left:?}");
    }
    assert_eq!(
        c.session(&id)["status"],
        "lost",
        "a dead supervisor's session is lost"
    );
    let orphans = c.ok(&["ps", "--orphans"]);
    for s in &sessions {
        let short = &s["id"].as_str().unwrap()[..12];
        assert!(!orphans.contains(short), "{short} is an orphan: {orphans}");
    }
}

/// Changes the database behind agentctl's back.
fn tamper(db: &Db, sql: &str) {
    let o = if db.kind == "sqlite" {
        let path = db.url.trim_start_matches("sqlite://");
        Command::new("python3")
            .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()", path, sql])
            .output()
            .unwrap()
    } else {
        Command::new("psql")
            .args([db.url.as_str(), "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
            .output()
            .unwrap()
    };
    assert!(o.status.success(), "tampering failed: {}", text(&o.stderr));
}

#[test]
fn audit_verify_names_the_tampered_row() {
    for db in both_stores() {
        let c = Ctl::new(&db);
        let mut ids = Vec::new();
        for _ in 0..4 {
            let (code, _, err) = c.code(&["run", "-q", "--", "sh", "-c", "kill -TERM $$"]);
            assert_eq!(code, Some(143), "{err}");
        }
        for s in c.sessions() {
            ids.push(s["id"].as_str().unwrap().to_string());
        }
        for id in &ids {
            c.ok(&["audit", "--verify", id]);
        }
        let cases = [
            (
                "edited",
                format!(
                    "UPDATE session_events SET data = '{{\"code\":0}}' WHERE session_id = '{}' AND seq = 3",
                    ids[0]
                ),
                "event 3",
            ),
            (
                "deleted",
                format!(
                    "DELETE FROM session_events WHERE session_id = '{}' AND seq = 2",
                    ids[1]
                ),
                "event 2",
            ),
            (
                "last deleted",
                format!(
                    "DELETE FROM session_events WHERE session_id = '{}' AND seq = 3",
                    ids[2]
                ),
                "event 3",
            ),
            (
                "reordered",
                format!(
                    "UPDATE session_events SET seq = 100 WHERE session_id = '{0}' AND seq = 2; \
                 UPDATE session_events SET seq = 2 WHERE session_id = '{0}' AND seq = 3; \
                 UPDATE session_events SET seq = 3 WHERE session_id = '{0}' AND seq = 100;",
                    ids[3]
                ),
                "event 2",
            ),
        ];
        for ((what, sql, named), id) in cases.iter().zip(&ids) {
            tamper(&db, sql);
            let (code, _, err) = c.code(&["audit", "--verify", id]);
            assert_eq!(
                code,
                Some(1),
                "[{}] {what}: verify must fail: {err}",
                db.kind
            );
            assert!(
                err.contains(named),
                "[{}] {what}: must name {named}: {err}",
                db.kind
            );
        }
    }
}

#[test]
fn concurrent_sessions_lose_no_rows() {
    for db in both_stores() {
        let c = Ctl::new(&db);
        let children: Vec<_> = (0..50)
            .map(|_| {
                c.cmd(&["run", "-q", "--", "true"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let o = child.wait_with_output().unwrap();
            assert!(o.status.success(), "[{}] {}", db.kind, text(&o.stderr));
        }
        let sessions = c.sessions();
        let mut ids: Vec<&str> = sessions.iter().map(|s| s["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 50, "[{}] rows lost", db.kind);
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 50, "[{}] duplicate ids", db.kind);
        for s in &sessions {
            assert_eq!(
                (s["status"].as_str(), s["exit_code"].as_i64()),
                (Some("exited"), Some(0)),
                "[{}] {s}",
                db.kind
            );
        }
    }
}

fn leftovers_of(id: &str) -> Vec<String> {
    support::leftovers(&support::Runner::Current.runtime_base(), &id[..12])
}

#[test]
fn killed_launchers_and_supervisors_are_reconciled() {
    let db = sqlite();
    let c = Ctl::new(&db);
    // The launcher killed at every stage of a launch, from "just started"
    // to "the agent runs".
    for delay_ms in [0u64, 5, 10, 20, 40, 80, 150, 300] {
        let mut child = c
            .cmd(&["run", "-q", "--", "sleep", "30"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    // A detached session whose supervisor dies.
    let id = c
        .ok(&["run", "-d", "-q", "--", "sleep", "30"])
        .trim()
        .to_string();
    let s = c.session(&id);
    let helper = s["helper_pid"].as_u64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    // Give killed launchers' sessions time to end (their helpers are told
    // to stop when the launcher dies) and the launch grace to pass.
    std::thread::sleep(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(20);
    let sessions = loop {
        let sessions = c.sessions();
        if sessions
            .iter()
            .all(|s| s["status"] != "running" && s["status"] != "created")
            || Instant::now() > deadline
        {
            break sessions;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let ended = ["exited", "failed", "stopped", "lost"];
    for s in &sessions {
        assert!(
            ended.contains(&s["status"].as_str().unwrap()),
            "not reconciled: {s}"
        );
        let left = leftovers_of(s["id"].as_str().unwrap());
        assert!(left.is_empty(), "left behind by {}: {left:?}", s["id"]);
    }
    assert_eq!(
        c.session(&id)["status"],
        "lost",
        "a dead supervisor's session is lost"
    );
    assert!(c.events(&id).last().unwrap() == "lost");
    // No sandbox runs untracked: nothing of these sessions is an orphan.
    let orphans = c.ok(&["ps", "--orphans"]);
    for s in &sessions {
        let short = &s["id"].as_str().unwrap()[..12];
        assert!(!orphans.contains(short), "{short} is an orphan: {orphans}");
    }
    let sleeping = Command::new("pgrep")
        .args(["-f", "^sleep 30$"])
        .output()
        .unwrap();
    assert!(
        text(&sleeping.stdout).trim().is_empty(),
        "an agent still runs: {}",
        text(&sleeping.stdout)
    );
}

/// Regression (CI on the issue 9 branch): a launcher killed after it forked
/// the native helper but before the helper armed its parent-death signal
/// left a helper that never learned of it. It ran the agent unwatched,
/// held the launcher's lock (inherited with the fork), and the session
/// stayed `created` for good. The pause holds the helper in that window.
#[test]
fn a_launcher_killed_before_its_helper_arms_the_death_signal() {
    let db = sqlite();
    let c = Ctl::new(&db);
    let mut cmd = c.cmd(&["run", "-q", "--", "sleep", "37"]);
    cmd.env("AGENTCTL_TEST_HELPER_PAUSE_MS", "1500")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut launcher = cmd.spawn().unwrap();
    // Kill it once its helper is forked (a child of the launcher).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let children = Command::new("pgrep")
            .args(["-P", &launcher.id().to_string()])
            .output()
            .unwrap();
        if !text(&children.stdout).trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the launcher forked no helper");
        std::thread::sleep(Duration::from_millis(20));
    }
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    // The helper wakes up, finds its launcher gone, and does not start.
    std::thread::sleep(Duration::from_secs(3));
    let deadline = Instant::now() + Duration::from_secs(20);
    let s = loop {
        let s = c
            .sessions()
            .into_iter()
            .next()
            .expect("the session is listed");
        if (s["status"] != "created" && s["status"] != "running") || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(s["status"], "lost", "{s}");
    let sleeping = Command::new("pgrep")
        .args(["-f", "^sleep 37$"])
        .output()
        .unwrap();
    assert!(
        text(&sleeping.stdout).trim().is_empty(),
        "the agent runs unwatched: {}",
        text(&sleeping.stdout)
    );
    assert!(leftovers_of(s["id"].as_str().unwrap()).is_empty());
}

/// Regression (issue 9, item 17): a reconcile that read a detached
/// session's row as running just before the session's own supervisor
/// recorded its end used to find no session directory and no exit file
/// (both already gone), judge the session vanished, and delete the log it
/// keeps until `rm`. The pause puts the end between the two steps every
/// time, on both stores.
#[test]
fn reconcile_racing_a_recorded_end_keeps_the_log() {
    for db in both_stores() {
        let c = Ctl::new(&db);
        let tag = format!("[{}]", db.kind);
        let id = c
            .ok(&[
                "run",
                "-d",
                "-q",
                "--",
                "sh",
                "-c",
                "echo kept-output; sleep 1",
            ])
            .trim()
            .to_string();
        // `ps` reconciles: it reads the live row at once, then waits while
        // the session ends and `__session-exit` records it.
        let mut ps = c.cmd(&["ps", "-a"]);
        ps.env("AGENTCTL_TEST_RECONCILE_PAUSE_MS", "4000");
        let o = ps.stdin(Stdio::null()).output().unwrap();
        assert!(o.status.success(), "{tag} ps: {}", text(&o.stderr));
        let s = c.wait_status(&id, "exited");
        assert_eq!(s["status"], "exited", "{tag} {s}");
        assert_eq!(
            c.events(&id).iter().filter(|e| *e == "exited").count(),
            1,
            "{tag} the end is recorded once"
        );
        let (code, out, err) = c.code(&["logs", &id]);
        assert_eq!(code, Some(0), "{tag} logs: {err}");
        assert_eq!(out, "kept-output\n", "{tag} the kept log");
        c.ok(&["rm", &id]);
    }
}

/// Regression (issue 9, item 14): a detached session's kept output was
/// created 0644 in a 0755 directory; only a private parent kept other users
/// out. Now the file is 0600 and its directory 0700, as root (the shared
/// /var/lib/agentctl/logs) and as an unprivileged user, and an existing
/// directory that was left open is closed.
#[test]
fn detached_logs_are_private() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut runners = vec![support::Runner::Current];
    runners.extend(support::Runner::unprivileged());
    for runner in runners {
        let home = tempfile::tempdir().unwrap();
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let ws = home.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        let data = home.path().join("data");
        std::fs::create_dir_all(data.join("agentctl/logs")).unwrap();
        std::fs::set_permissions(
            data.join("agentctl/logs"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        for p in [
            home.path(),
            &ws,
            &data,
            &data.join("agentctl"),
            &data.join("agentctl/logs"),
        ] {
            nix::unistd::chown(
                p,
                Some(nix::unistd::Uid::from_raw(runner.uid())),
                Some(nix::unistd::Gid::from_raw(runner.gid())),
            )
            .unwrap();
        }
        let store = format!("sqlite://{}", data.join("agentctl/test.db").display());
        let cmd = |args: &[&str]| {
            let mut c = runner.agentctl(home.path(), &ws);
            c.env("XDG_DATA_HOME", &data)
                .env("AGENTCTL_STORE", &store)
                .args(args)
                .stdin(Stdio::null());
            let o = c.output().unwrap();
            assert!(
                o.status.success(),
                "{runner:?} {args:?}: {}",
                text(&o.stderr)
            );
            text(&o.stdout)
        };
        let id = cmd(&[
            "run",
            "-d",
            "-q",
            "--no-limits",
            "--",
            "sh",
            "-c",
            "echo private",
        ])
        .trim()
        .to_string();
        let sessions: Value = serde_json::from_str(&cmd(&["ps", "-a", "--json"])).unwrap();
        let log = sessions
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id.as_str())
            .and_then(|s| s["log_path"].as_str())
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| panic!("{runner:?}: no log path for {id}: {sessions}"));
        let file = std::fs::metadata(&log).unwrap();
        let dir = std::fs::metadata(log.parent().unwrap()).unwrap();
        assert_eq!(file.mode() & 0o777, 0o600, "{runner:?} {}", log.display());
        assert_eq!(dir.mode() & 0o777, 0o700, "{runner:?} {}", log.display());
        assert_eq!(file.uid(), runner.uid(), "{runner:?}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cmd(&["logs", &id]).contains("private") {
            assert!(Instant::now() < deadline, "{runner:?}: no output");
            std::thread::sleep(Duration::from_millis(100));
        }
        cmd(&["stop", &id]);
        cmd(&["rm", &id]);
    }
}

/// Regression (issue 10, item 1): `agentctl exec` on the native backend
/// ran without the session's seccomp filter (libcontainer's tenant builder
/// drops `linux.seccomp`): an exec'd process showed `Seccomp: 0` and could
/// make user namespaces. Now it carries what the agent carries, on both
/// backends: the same seccomp mode, no_new_privs and capabilities, and the
/// same refusals.
#[test]
fn an_exec_runs_as_confined_as_the_agent() {
    let db = sqlite();
    let c = Ctl::new(&db);
    let status =
        "grep -E '^(Seccomp|NoNewPrivs|CapEff|CapPrm|CapBnd):' /proc/self/status | tr -d '\\t'";
    for backend in ["native", "docker"] {
        if backend == "docker" && !require(docker_available(), "a Docker daemon") {
            continue;
        }
        let id = c
            .ok(&[
                "run",
                "-d",
                "-q",
                "--backend",
                backend,
                "--",
                "sh",
                "-c",
                &format!("{status} > /tmp/agent-status; sleep 60"),
            ])
            .trim()
            .to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        let agent = loop {
            let (code, out, _) = c.code(&["exec", &id, "--", "cat", "/tmp/agent-status"]);
            if code == Some(0) && out.contains("Seccomp") {
                break out;
            }
            assert!(
                Instant::now() < deadline,
                "[{backend}] the agent never wrote its status"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let (code, out, err) = c.code(&[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            &format!("{status}; unshare -U true 2>/dev/null && echo unshared-user; true"),
        ]);
        assert_eq!(code, Some(0), "[{backend}] exec: {err}");
        assert!(agent.contains("Seccomp:2"), "[{backend}] agent: {agent}");
        assert!(
            out.starts_with(&agent),
            "[{backend}] the exec'd process differs from the agent:\nagent:\n{agent}\nexec:\n{out}"
        );
        assert!(
            !out.contains("unshared-user"),
            "[{backend}] exec made a user namespace"
        );
        c.ok(&["stop", "-t", "2", &id]);
        c.ok(&["rm", &id]);
    }
}

/// Regression (issue 10, item 4): `agentctl logs` and a session's live
/// terminal printed the agent's escape sequences byte for byte: OSC 52
/// wrote the user's clipboard, and a device-status query (`ESC [ 6 n`) made
/// the terminal answer into the user's shell after agentctl exited. To a
/// terminal, `logs` now passes text and colours only (`--raw` keeps every
/// byte), and the live relay drops clipboard, file-transfer and query
/// sequences while a full-screen program's own sequences pass.
#[test]
fn agent_output_cannot_drive_the_users_terminal() {
    if !require(
        Command::new("script").arg("--version").output().is_ok(),
        "script from util-linux (a pseudo-terminal for agentctl's stdout)",
    ) {
        return;
    }
    let db = sqlite();
    let c = Ctl::new(&db);
    let emit = r"printf 'a\033]52;c;cHduZWQ=\007b\033[6nc\033[31mred\033[0m\033]0;title\007d\033P+q544e\033\\e\033[?1049hf\n'";
    // Runs agentctl with its stdout on a pseudo-terminal and returns what
    // reached that terminal.
    let on_tty = |args: &str| String::from_utf8_lossy(&c.on_a_tty(args).stdout).into_owned();
    let id = c
        .ok(&["run", "-d", "-q", "--", "sh", "-c", emit])
        .trim()
        .to_string();
    c.wait_status(&id, "exited");
    let shown = on_tty(&format!("logs {id}"));
    for bad in ["\x1b]52", "\x1b[6n", "\x1b]0;", "\x1bP", "\x1b[?1049h"] {
        assert!(!shown.contains(bad), "logs passed {bad:?}: {shown:?}");
    }
    assert!(
        shown.contains("ab") && shown.contains("\x1b[31mred\x1b[0m"),
        "{shown:?}"
    );
    let raw = on_tty(&format!("logs --raw {id}"));
    assert!(
        raw.contains("\x1b]52;c;cHduZWQ="),
        "--raw keeps every byte: {raw:?}"
    );
    // Not a terminal: the bytes as they are (a file, a pipe).
    assert!(c.ok(&["logs", &id]).contains("\x1b[6n"));

    // The live terminal of a foreground session.
    let live = on_tty(&format!(
        "run -q -- sh -c \"{}\"",
        emit.replace('"', "\\\"")
    ));
    for bad in ["\x1b]52", "\x1b[6n", "\x1bP"] {
        assert!(
            !live.contains(bad),
            "the live terminal passed {bad:?}: {live:?}"
        );
    }
    assert!(
        live.contains("\x1b[?1049h") && live.contains("\x1b]0;title"),
        "{live:?}"
    );
}

/// Regression (found by the full suite under load): a detached session that
/// ended before its launcher recorded it as started was set back to
/// `running` by that record; the next reconcile found no sandbox and no
/// exit code (both already tidied up), declared it lost and deleted its
/// kept output. The pause holds the launcher until the session has ended.
#[test]
fn a_detached_session_that_ends_before_it_is_recorded_keeps_its_end() {
    let db = sqlite();
    let c = Ctl::new(&db);
    let mut run = c.cmd(&["run", "-d", "-q", "--", "echo", "quick-output"]);
    run.env("AGENTCTL_TEST_DETACHED_RECORD_PAUSE_MS", "2000");
    let o = run.stdin(Stdio::null()).output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let id = text(&o.stdout).trim().to_string();
    let s = c.session(&id);
    assert_eq!(s["status"], "exited", "{s}");
    assert!(s["log_path"].is_string(), "the log stays on record: {s}");
    let (code, out, err) = c.code(&["logs", &id]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "quick-output\n");
    c.ok(&["rm", &id]);
}

/// Waits until `exec <id> -- true` works: the session's sandbox is up.
fn wait_exec_ready(c: &Ctl<'_>, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.code(&["exec", id, "--", "true"]).0 != Some(0) {
        assert!(Instant::now() < deadline, "session {id} never took an exec");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Regression (issue 10, item 2): a non-terminal `exec` (and `run`) passed
/// the caller's own stdin, stdout and stderr into the sandbox. The agent
/// reopened them through /proc, kept the user's terminal after exec
/// returned, wrote to it and read what the user typed next. Now the
/// sandbox gets only pipes that agentctl relays: what the sandboxed process
/// holds is never a host file, and nothing it writes after its command has
/// ended reaches the caller.
#[test]
fn exec_and_run_never_hand_the_sandbox_a_host_descriptor() {
    let db = sqlite();
    let c = Ctl::new(&db);
    let host = tempfile::tempdir().unwrap();
    let input = host.path().join("caller-stdin");
    std::fs::write(&input, "typed by the user\n").unwrap();
    let probe = "readlink /proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2; \
                 (sleep 1; echo LATE-WRITE; echo LATE-ERR >&2) & echo done";
    for backend in ["native", "docker", "vm"] {
        if backend == "docker" && !require(docker_available(), "a Docker daemon") {
            continue;
        }
        if backend == "vm" && !support::vm_available() {
            continue;
        }
        let run_with_files = |args: &[&str], tag: &str| -> (String, String) {
            let out = host.path().join(format!("{backend}-{tag}-out"));
            let err = host.path().join(format!("{backend}-{tag}-err"));
            let status = c
                .cmd(args)
                .stdin(std::fs::File::open(&input).unwrap())
                .stdout(std::fs::File::create(&out).unwrap())
                .stderr(std::fs::File::create(&err).unwrap())
                .status()
                .unwrap();
            let returned = (
                std::fs::read_to_string(&out).unwrap(),
                std::fs::read_to_string(&err).unwrap(),
            );
            // Time for a process left behind to write: nothing may reach
            // the caller's files once agentctl has returned.
            std::thread::sleep(Duration::from_millis(2000));
            let (out, err) = (
                std::fs::read_to_string(&out).unwrap(),
                std::fs::read_to_string(&err).unwrap(),
            );
            assert!(status.success(), "[{backend}] {tag}: {out} {err}");
            assert_eq!(
                returned,
                (out.clone(), err.clone()),
                "[{backend}] {tag}: a process left in the sandbox wrote to the caller after agentctl returned"
            );
            (out, err)
        };
        let host_path = host.path().to_string_lossy().into_owned();
        let (out, err) = run_with_files(
            &["run", "-q", "--backend", backend, "--", "sh", "-c", probe],
            "run",
        );
        assert!(out.contains("done"), "[{backend}] run: {out} {err}");
        assert!(
            !out.contains(&host_path),
            "[{backend}] the agent holds the caller's own files: {out}"
        );

        let id = c
            .ok(&["run", "-d", "-q", "--backend", backend, "--", "sleep", "60"])
            .trim()
            .to_string();
        wait_exec_ready(&c, &id);
        let (out, err) = run_with_files(&["exec", &id, "--", "sh", "-c", probe], "exec");
        assert!(out.contains("done"), "[{backend}] exec: {out} {err}");
        assert!(
            !out.contains(&host_path),
            "[{backend}] the exec'd process holds the caller's own files: {out}"
        );
        c.ok(&["stop", "-t", "2", &id]);
        c.ok(&["rm", &id]);
    }
}

/// Regression (issue 10, item 2): an interactive `exec` on the native
/// backend failed ("cannot use console socket if youki will not detach or
/// allocate tty"), which sent users to the non-terminal path. It gets a
/// terminal of the sandbox's own now, like `run`.
#[test]
fn an_interactive_exec_gets_a_terminal_of_its_own() {
    if !require(
        Command::new("script").arg("--version").output().is_ok(),
        "script from util-linux (a pseudo-terminal for agentctl)",
    ) {
        return;
    }
    let db = sqlite();
    let c = Ctl::new(&db);
    let id = c
        .ok(&["run", "-d", "-q", "--", "sleep", "60"])
        .trim()
        .to_string();
    wait_exec_ready(&c, &id);
    let o = c.on_a_tty(&format!(
        "exec {id} -- sh -c 'tty; grep -E \"^(Seccomp|NoNewPrivs|CapEff):\" /proc/self/status | tr -d \"\\t\"'"
    ));
    let out = text(&o.stdout);
    assert!(o.status.success(), "interactive exec failed: {out}");
    assert!(out.contains("/dev/pts/"), "no terminal: {out}");
    for line in ["Seccomp:2", "NoNewPrivs:1", "CapEff:0000000000000000"] {
        assert!(out.contains(line), "the terminal exec lacks {line}: {out}");
    }
    c.ok(&["stop", "-t", "2", &id]);
    c.ok(&["rm", &id]);
}

/// Runs `agentctl args` in a new session keyring named `name` (as the
/// user's shell would hold one, with tokens `keyctl add`ed to it) and
/// returns stdout.
fn in_a_session_keyring(c: &Ctl<'_>, name: &str, args: &[&str]) -> String {
    let wrapper = r#"
import ctypes, os, platform, sys
KEYCTL = 219 if platform.machine() == "aarch64" else 250
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
if libc.syscall(KEYCTL, 1, sys.argv[1].encode()) < 0:
    sys.exit("keyctl join: errno %d" % ctypes.get_errno())
os.execv(sys.argv[2], sys.argv[2:])
"#;
    let o = Command::new("python3")
        .args(["-c", wrapper, name])
        .arg(binary())
        .args(args)
        .env("AGENTCTL_STORE", &c.db.url)
        .env("AGENTCTL_LAUNCH_GRACE_MS", "500")
        .current_dir(c.ws.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "agentctl {args:?}: {} {}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// True while some process still holds the keyring called `name` (the
/// kernel drops a keyring from /proc/keys once its last holder lets go).
fn keyring_held(name: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let keys = std::fs::read_to_string("/proc/keys").unwrap_or_default();
        if !keys
            .lines()
            .any(|l| l.ends_with(&format!(" {name}: empty")))
        {
            return false;
        }
        if Instant::now() > deadline {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Regression (issue 10, item 3): the sandbox and every exec kept the
/// caller's session keyring; only the seccomp ban on keyctl stood between
/// the agent and a token kept there. Each gets a fresh anonymous session
/// keyring: once agentctl has returned, nothing in the sandbox holds the
/// caller's.
#[test]
fn the_sandbox_does_not_hold_the_callers_keyring() {
    if !require(
        std::fs::metadata("/proc/keys").is_ok(),
        "a kernel with keyrings (/proc/keys)",
    ) {
        return;
    }
    let db = sqlite();
    let c = Ctl::new(&db);
    for backend in ["native", "docker"] {
        if backend == "docker" && !require(docker_available(), "a Docker daemon") {
            continue;
        }
        let name = format!("agentctl-test-{backend}-run-{}", std::process::id());
        let id = in_a_session_keyring(
            &c,
            &name,
            &["run", "-d", "-q", "--backend", backend, "--", "sleep", "60"],
        )
        .trim()
        .to_string();
        wait_exec_ready(&c, &id);
        assert!(
            !keyring_held(&name),
            "[{backend}] the session holds the keyring of the shell that started it"
        );
        let name = format!("agentctl-test-{backend}-exec-{}", std::process::id());
        in_a_session_keyring(
            &c,
            &name,
            &[
                "exec",
                &id,
                "--",
                "sh",
                "-c",
                "sleep 30 >/dev/null 2>&1 </dev/null & echo started",
            ],
        );
        assert!(
            !keyring_held(&name),
            "[{backend}] a process an exec left holds the keyring of the shell that ran exec"
        );
        c.ok(&["stop", "-t", "2", &id]);
        c.ok(&["rm", &id]);
    }
}

/// Regression (issue 10, item 1): `agentctl exec <id> -- id` looked the
/// command up on the session's PATH, whose first entries the agent could
/// write: a planted `id` ran instead of the system's. A bare name now
/// resolves only to a file the agent cannot have put there or redirected,
/// and one found only in agent-writable places is refused, naming them.
#[test]
fn an_exec_does_not_run_what_the_agent_put_on_path() {
    let db = sqlite();
    let c = Ctl::new(&db);
    // The workspace: writable, and executable on both backends.
    let planted = c.ws.path().join("planted").display().to_string();
    let plant = format!(
        "mkdir -p {planted} && \
         printf '#!/bin/sh\\necho PLANTED\\n' > {planted}/id && \
         cp {planted}/id {planted}/only-planted && \
         chmod +x {planted}/id {planted}/only-planted && \
         echo ready > /tmp/ready && sleep 60"
    );
    let path = format!("PATH={planted}:/usr/local/bin:/usr/bin:/bin");
    for backend in ["native", "docker"] {
        if backend == "docker" && !require(docker_available(), "a Docker daemon") {
            continue;
        }
        let mut run = c.cmd(&[
            "run",
            "-d",
            "-q",
            "--backend",
            backend,
            "-e",
            &path,
            "--",
            "sh",
            "-c",
            &plant,
        ]);
        let o = run.stdin(Stdio::null()).output().unwrap();
        assert!(o.status.success(), "[{backend}] {}", text(&o.stderr));
        let id = text(&o.stdout).trim().to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.code(&["exec", &id, "--", "/bin/cat", "/tmp/ready"]).0 != Some(0) {
            assert!(
                Instant::now() < deadline,
                "[{backend}] the agent never planted"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let (code, out, err) = c.code(&["exec", &id, "--", "id", "-u"]);
        assert_eq!(code, Some(0), "[{backend}] {out} {err}");
        assert!(
            !out.contains("PLANTED"),
            "[{backend}] exec ran the agent's planted `id`"
        );
        let (code, out, err) = c.code(&["exec", &id, "--", "only-planted"]);
        assert_eq!(code, Some(127), "[{backend}] {out} {err}");
        assert!(!out.contains("PLANTED"), "[{backend}] {out}");
        assert!(
            err.contains(&planted),
            "[{backend}] name where it was found: {err}"
        );
        // By its full path, the user's choice: it runs.
        let full = format!("{planted}/only-planted");
        let (code, out, _) = c.code(&["exec", &id, "--", &full]);
        assert_eq!((code, out.trim()), (Some(0), "PLANTED"), "[{backend}]");
        c.ok(&["stop", "-t", "2", &id]);
        c.ok(&["rm", &id]);
    }
}

/// A stop asked for in the dashboard (`agentctl serve`, which only writes
/// the request to the store) reaches a foreground session through its
/// launcher, as SIGTERM to the agent, within a second; the session ends
/// `stopped`, and the request is on record with its actor. On SQLite and
/// PostgreSQL.
#[test]
fn a_stop_in_the_dashboard_reaches_a_foreground_session() {
    if !require(support::is_root(), "the native backend as root")
        || !require(docker_available(), "a Docker daemon")
    {
        return;
    }
    let mut runs: Vec<(Db, &str)> = both_stores().into_iter().map(|d| (d, "native")).collect();
    runs.push((sqlite(), "docker"));
    for (db, backend) in runs {
        let c = Ctl::new(&db);
        let mut run = c.cmd(&[
            "run",
            "-q",
            "--backend",
            backend,
            "--",
            "sh",
            "-c",
            "trap 'echo got-term $(date +%s%N); exit 7' TERM; echo ready; while :; do sleep 0.05; done",
        ]);
        let mut run = run
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (mut serve, addr) = support::serve(
            c.cmd(&["serve", "--listen", "127.0.0.1:0"])
                .stdin(Stdio::null()),
        );
        let post = |path: &str, fetch_site: &str| -> String {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            write!(
                s,
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nSec-Fetch-Site: {fetch_site}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        // Running, and on record as running.
        let deadline = Instant::now() + Duration::from_secs(20);
        let id = loop {
            if let Some(s) = c.sessions().into_iter().find(|s| s["status"] == "running") {
                break s["id"].as_str().unwrap().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "[{}] the session never ran",
                db.kind
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // Another site's page cannot make the browser ask.
        let forged = post(&format!("/sessions/{id}/stop"), "cross-site");
        assert!(forged.starts_with("HTTP/1.1 403"), "{forged}");
        assert!(!c.events(&id).contains(&"stop_requested".to_string()));

        let clicked = Instant::now();
        let clicked_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let answer = post(&format!("/sessions/{id}/stop"), "same-origin");
        assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
        let status = loop {
            if let Some(s) = run.try_wait().unwrap() {
                break s;
            }
            assert!(
                clicked.elapsed() < Duration::from_secs(10),
                "[{}] the session did not stop",
                db.kind
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = clicked.elapsed();
        let _ = serve.kill();
        let _ = serve.wait();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut run.stdout.take().unwrap(), &mut out).unwrap();
        let term_at: u128 = out
            .split("got-term ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("[{} {backend}] the agent got no SIGTERM: {out}", db.kind));
        let to_sigterm = Duration::from_nanos(term_at.saturating_sub(clicked_at) as u64);
        assert!(
            to_sigterm < Duration::from_secs(1),
            "[{} {backend}] from the click to SIGTERM in the sandbox took {to_sigterm:?}",
            db.kind
        );
        assert_eq!(status.code(), Some(7), "[{}]", db.kind);
        assert!(
            took < Duration::from_secs(2),
            "[{} {backend}] from the click to the end took {took:?}",
            db.kind
        );
        let s = c.wait_status(&id, "stopped");
        assert_eq!(s["status"], "stopped", "[{}] {s}", db.kind);
        let audit: Value = serde_json::from_str(&c.ok(&["audit", "--json", &id])).unwrap();
        let asked = audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "stop_requested")
            .expect("the request is on record")
            .clone();
        assert!(
            asked["actor"].as_str().unwrap().starts_with("dashboard ("),
            "{asked}"
        );
        eprintln!(
            "[{} {backend}] dashboard stop: click to SIGTERM {to_sigterm:?}, to the end {took:?}",
            db.kind
        );
    }
}

/// The same for a detached session, whose launcher is gone: its stop
/// watcher (`agentctl __watch-stops`, started with it) carries the
/// request out as `agentctl stop` would.
#[test]
fn a_stop_in_the_dashboard_reaches_a_detached_session() {
    if !require(support::is_root(), "the native backend as root") {
        return;
    }
    for db in both_stores() {
        let c = Ctl::new(&db);
        let id = c
            .ok(&[
                "run",
                "-d",
                "-q",
                "--",
                "sh",
                "-c",
                "trap 'echo got-term; exit 7' TERM; while :; do sleep 0.05; done",
            ])
            .trim()
            .to_string();
        c.wait_status(&id, "running");
        let (mut serve, addr) = support::serve(
            c.cmd(&["serve", "--listen", "127.0.0.1:0"])
                .stdin(Stdio::null()),
        );
        let clicked = Instant::now();
        let answer = {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            write!(
                s,
                "POST /api/v1/sessions/{id}/stop HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let _ = serve.kill();
        let _ = serve.wait();
        assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
        let s = c.wait_status(&id, "stopped");
        let took = clicked.elapsed();
        assert_eq!(s["status"], "stopped", "[{}] {s}", db.kind);
        assert_eq!(
            s["exit_code"], 7,
            "[{}] the agent got no SIGTERM: {s}",
            db.kind
        );
        let logs = c.ok(&["logs", &id]);
        assert!(logs.contains("got-term"), "{logs}");
        eprintln!(
            "[{}] dashboard stop of a detached session: {took:?}",
            db.kind
        );
        c.ok(&["rm", &id]);
    }
}

/// The session's output, every byte in order, and its supervisor's
/// heartbeat with a sample of its cgroup reach the store while it runs,
/// foreground and detached, on both backends and both stores: any
/// dashboard over the store shows them.
fn output_and_samples(db: &Db, backend: &str) {
    let c = Ctl::new(db);
    let tag = format!("[{} {backend}]", db.kind);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(store::SessionStore::connect(&db.url)).unwrap();
    let output = |id: &str| -> Vec<u8> {
        rt.block_on(store.output_after(id, 0, usize::MAX))
            .unwrap()
            .into_iter()
            .flat_map(|c| c.data)
            .collect()
    };

    // Foreground: the output is on record when the end is.
    let script = "echo first; printf '\\033[31mred\\033[0m\\n'; sleep 1; echo second >&2";
    let (code, out, err) = c.code(&["run", "-q", "--backend", backend, "--", "sh", "-c", script]);
    assert_eq!(code, Some(0), "{tag} {err}");
    assert!(out.starts_with("first\n"), "{tag} {out}");
    let fg = c.sessions()[0]["id"].as_str().unwrap().to_string();
    let got = String::from_utf8(output(&fg)).unwrap();
    assert_eq!(got, "first\n\u{1b}[31mred\u{1b}[0m\nsecond\n", "{tag}");
    let s = rt.block_on(store.get(&fg)).unwrap();
    assert!(s.heartbeat_at.is_some(), "{tag} no heartbeat");
    let samples = rt.block_on(store.samples(&fg, 0)).unwrap();
    assert!(
        samples
            .iter()
            .any(|s| s.memory_bytes.is_some_and(|m| m > 0)),
        "{tag} no sample of the session's cgroup: {samples:?}"
    );

    // Detached: its supervisor follows the log into the store while it
    // runs, and puts the end on record.
    let id = c
        .ok(&[
            "run",
            "-d",
            "-q",
            "--backend",
            backend,
            "--",
            "sh",
            "-c",
            "echo one; sleep 1.5; echo two; exit 4",
        ])
        .trim()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen_running = false;
    loop {
        let got = output(&id);
        let status = rt.block_on(store.get(&id)).unwrap().status;
        seen_running |= got.starts_with(b"one\n") && status.is_live();
        if got == b"one\ntwo\n" && !status.is_live() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{tag} detached output {:?}, status {status}",
            String::from_utf8_lossy(&got)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(seen_running, "{tag} the first line came only after the end");
    assert_eq!(c.wait_status(&id, "exited")["exit_code"], 4, "{tag}");
    assert!(
        rt.block_on(store.get(&id)).unwrap().heartbeat_at.is_some(),
        "{tag} no heartbeat from the detached supervisor"
    );
    // A detached session keeps what is left of it (a Docker container)
    // until it is removed.
    c.ok(&["rm", &id]);
}

#[test]
fn output_and_samples_reach_the_store_native() {
    if !require(
        support::is_root(),
        "root (a cgroup of the session's own to sample)",
    ) {
        return;
    }
    for db in both_stores() {
        output_and_samples(&db, "native");
    }
}

#[test]
fn output_and_samples_reach_the_store_docker() {
    if !require(docker_available(), "a Docker daemon") {
        return;
    }
    for db in both_stores() {
        output_and_samples(&db, "docker");
    }
}
