//! The team server end to end, through the real binary: `agentctl serve`
//! over a real Postgres store, `agentctl worker` processes (each in a
//! network and UTS namespace of its own, standing in for a host, reaching
//! Postgres through its unix socket), and the remote CLI (`--server`).
//!
//! Needs root (namespaces, the native backend as root) and Postgres
//! (AGENTCTL_TEST_POSTGRES, or a throwaway cluster); under CI=true a
//! missing part fails.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use store::SessionStore;
use store::queue::{RequestState, WorkspaceSource};
use store::testing::TestDatabase;
use support::{binary, is_root, require, text};

struct Team {
    rt: tokio::runtime::Runtime,
    db: Option<TestDatabase>,
    /// Over TCP, for the server, the CLI and the test.
    url: String,
    /// Over the unix socket, for workers in their own network namespace.
    socket_url: String,
    dir: tempfile::TempDir,
    roots: PathBuf,
    server: Child,
    addr: String,
    workers: Vec<Child>,
    tokens: BTreeMap<&'static str, String>,
}

impl Drop for Team {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
        if let Some(db) = self.db.take() {
            self.rt.block_on(db.finish());
        }
    }
}

fn setup(test: &str) -> Option<Team> {
    if !require(is_root(), "root (workers in namespaces of their own)") {
        return None;
    }
    let server = match store::testing::server() {
        Ok(s) => s.clone(),
        Err(why) => {
            store::testing::skip(test, &why);
            return None;
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(TestDatabase::create(&server)).unwrap();
    let url = db.url.clone();
    let socket_dir = rt
        .block_on(store::testing::show(&url, "unix_socket_directories"))
        .unwrap();
    let port = rt.block_on(store::testing::show(&url, "port")).unwrap();
    let socket_dir = socket_dir.split(',').next().unwrap().trim().to_string();
    let socket_url = format!(
        "postgres://postgres@localhost/{}?host={socket_dir}&port={port}",
        db.name
    );
    let dir = tempfile::tempdir().unwrap();
    let roots = dir.path().join("roots");
    for user in ["alice", "bob"] {
        std::fs::create_dir_all(roots.join(user).join("proj")).unwrap();
    }
    std::fs::write(roots.join("alice/proj/hello.txt"), "hello from alice\n").unwrap();
    std::fs::write(roots.join("bob/proj/secret.txt"), "bob's\n").unwrap();
    // Migrate once, and make the accounts.
    let mut tokens = BTreeMap::new();
    for (user, role) in [
        ("alice", "operator"),
        ("bob", "operator"),
        ("root", "admin"),
    ] {
        let o = agentctl(
            &url,
            &[
                "admin",
                "user",
                "add",
                user,
                "--role",
                role,
                "--password-stdin",
            ],
        )
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(b"correct horse battery\ncorrect horse battery\n")?;
            c.wait_with_output()
        })
        .unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    for (name, user, scope) in [
        ("alice", "alice", "run"),
        ("bob", "bob", "run"),
        ("alice-read", "alice", "read"),
        ("admin", "root", "admin"),
    ] {
        let o = agentctl(
            &url,
            &["admin", "token", "create", "--user", user, "--scope", scope],
        )
        .output()
        .unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        tokens.insert(name, text(&o.stdout).trim().to_string());
    }
    let (server, addr) = support::serve(
        agentctl(&url, &["serve", "--listen", "127.0.0.1:0"]).current_dir(dir.path()),
    );
    Some(Team {
        rt,
        db: Some(db),
        url,
        socket_url,
        dir,
        roots,
        server,
        addr,
        workers: Vec::new(),
        tokens,
    })
}

fn agentctl(store: &str, args: &[&str]) -> Command {
    let mut c = Command::new(binary());
    c.env("AGENTCTL_STORE", store)
        .env_remove("AGENTCTL_SERVER")
        .env_remove("AGENTCTL_TOKEN")
        .args(args);
    c
}

impl Team {
    fn store(&self) -> SessionStore {
        self.rt.block_on(SessionStore::connect(&self.url)).unwrap()
    }

    /// A worker named `name` in a network and UTS namespace of its own
    /// (its host name is `name`), with `env` and `args` added.
    fn worker(&mut self, name: &str, env: &[(&str, &str)], args: &[&str]) -> usize {
        let data = self.dir.path().join(format!("worker-{name}"));
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let mut c = Command::new("unshare");
        c.args([
            "--net",
            "--uts",
            "--",
            "sh",
            "-c",
            "hostname \"$0\" && exec \"$@\"",
            name,
        ])
        .arg(binary())
        .args(["worker", "--name", name, "--heartbeat-timeout", "3"])
        .arg("--data-dir")
        .arg(&data)
        .arg("--workspace-root")
        .arg(&self.roots)
        .args(args)
        .env("AGENTCTL_STORE", &self.socket_url)
        .stdout(Stdio::null())
        .stderr(log);
        for (k, v) in env {
            c.env(k, v);
        }
        self.workers.push(c.spawn().unwrap());
        let want = name.to_string();
        let store = self.store();
        wait_for(
            Duration::from_secs(20),
            &format!("worker {name} registers"),
            || {
                self.rt.block_on(async {
                    store
                        .workers()
                        .await
                        .unwrap()
                        .iter()
                        .any(|w| w.name == want && w.state == store::queue::WorkerState::Running)
                })
            },
        );
        self.workers.len() - 1
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// The remote CLI as `who` (a token's name).
    fn remote(&self, who: &str, args: &[&str]) -> Command {
        let mut c = Command::new(binary());
        c.env_remove("AGENTCTL_STORE")
            .env("AGENTCTL_SERVER", format!("http://{}", self.addr))
            .env("AGENTCTL_TOKEN", &self.tokens[who])
            // No token file of the machine's user is read or written.
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .args(args);
        c
    }

    fn submit(&self, who: &str, args: &[&str]) -> String {
        let mut all = vec!["run", "-d"];
        all.extend_from_slice(args);
        let o = self.remote(who, &all).output().unwrap();
        assert!(o.status.success(), "run -d {args:?}: {}", text(&o.stderr));
        let id = text(&o.stdout).trim().to_string();
        assert_eq!(id.len(), 32, "{id}");
        id
    }

    fn request(&self, store: &SessionStore, id: &str) -> store::queue::Request {
        self.rt.block_on(store.request(id)).unwrap()
    }

    fn api(&self, who: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .arg(format!("http://{}{path}", self.addr))
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", self.tokens[who]));
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        let o = c.output().unwrap();
        let out = text(&o.stdout);
        let (body, code) = out.rsplit_once('\n').unwrap();
        (code.trim().parse().unwrap(), body.to_string())
    }
}

fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill(child: &mut Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = child.wait();
}

/// Each request's claims, in order: (attempt, worker id).
fn claims(t: &Team, store: &SessionStore) -> BTreeMap<String, Vec<(i32, String)>> {
    let mut by: BTreeMap<String, Vec<(i32, String)>> = BTreeMap::new();
    for (r, attempt, worker, _) in t.rt.block_on(store.claims()).unwrap() {
        by.entry(r).or_default().push((attempt, worker));
    }
    by
}

/// The `created` events of session `id` (its audit chain).
fn created_events(t: &Team, store: &SessionStore, id: &str) -> Vec<store::Event> {
    t.rt.block_on(store.events(id))
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "created")
        .collect()
}

/// The session's own trail: from the stop request's event to the end its
/// worker recorded, at most a second.
fn assert_stop_reached_within_a_second(t: &Team, store: &SessionStore, id: &str) {
    let events = t.rt.block_on(store.events(id)).unwrap();
    let asked = events.iter().find(|e| e.kind == "stop_requested").unwrap();
    let ended = events.iter().find(|e| e.kind == "stopped").unwrap();
    assert!(
        ended.at - asked.at <= 1000,
        "{id}: stop requested at {}, ended at {}",
        asked.at,
        ended.at
    );
}

fn pgrep(pattern: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn two_workers_share_the_queue_and_a_killed_workers_sessions_are_lost() {
    let Some(mut t) = setup("two_workers_share_the_queue_and_a_killed_workers_sessions_are_lost")
    else {
        return;
    };
    // A pauses 2.5 s between a claim and its start, so that it can be
    // killed holding a claim.
    let a = t.worker(
        "wa",
        &[("AGENTCTL_TEST_JOB_PAUSE_MS", "1500")],
        &["--capacity", "6", "--labels", "host=a"],
    );
    t.worker("wb", &[], &["--capacity", "2", "--labels", "host=b"]);
    let store = t.store();

    // 20 requests, spread over both; each runs exactly once.
    let ids: Vec<String> = (0..20)
        .map(|i| {
            t.submit(
                "alice",
                &[
                    "-w",
                    "proj",
                    "--",
                    "sh",
                    "-c",
                    &format!("cat hello.txt; echo n{i}; hostname; sleep 0.3"),
                ],
            )
        })
        .collect();
    wait_for(Duration::from_secs(120), "20 requests are done", || {
        ids.iter()
            .all(|id| t.request(&store, id).state == RequestState::Done)
    });
    let mut hosts = BTreeSet::new();
    let by_claim = claims(&t, &store);
    for (i, id) in ids.iter().enumerate() {
        let s = t.rt.block_on(store.get(id)).unwrap();
        assert_eq!(s.status, store::Status::Exited, "{id}");
        assert_eq!(s.exit_code, Some(0), "{id}");
        assert_eq!(s.user, "alice", "the session is the asker's");
        assert_eq!(
            by_claim[id].len(),
            1,
            "{id} claimed once: {:?}",
            by_claim[id]
        );
        assert_eq!(created_events(&t, &store, id).len(), 1, "{id} created once");
        let out = t.rt.block_on(store.output_after(id, 0, 1 << 20)).unwrap();
        let out: Vec<u8> = out.into_iter().flat_map(|c| c.data).collect();
        let out = String::from_utf8_lossy(&out).to_string();
        assert!(out.contains("hello from alice"), "{out}");
        assert!(out.contains(&format!("n{i}\n")), "{out}");
        hosts.insert(s.host.clone());
    }
    assert_eq!(
        hosts,
        BTreeSet::from(["wa".to_string(), "wb".to_string()]),
        "both workers ran some (the sessions' hosts)"
    );

    // B full with two long sessions; a long one on A; then one that only
    // A has room for, claimed by A and not started when A is killed.
    let b1 = t.submit(
        "alice",
        &["-w", "proj", "--label", "host=b", "--", "sleep", "61"],
    );
    let b2 = t.submit(
        "alice",
        &["-w", "proj", "--label", "host=b", "--", "sleep", "61"],
    );
    let on_a = t.submit(
        "alice",
        &["-w", "proj", "--label", "host=a", "--", "sleep", "62"],
    );
    wait_for(Duration::from_secs(30), "three long sessions run", || {
        [&b1, &b2, &on_a].iter().all(|id| {
            t.rt.block_on(store.get(id))
                .is_ok_and(|s| s.status == store::Status::Running)
        })
    });
    let moved = t.submit(
        "alice",
        &["-w", "proj", "--", "sh", "-c", "echo moved; hostname"],
    );
    wait_for(Duration::from_secs(10), "A claims the fourth", || {
        t.request(&store, &moved).state == RequestState::Claimed
    });
    let worker_a = t.request(&store, &moved).worker.unwrap();
    kill(&mut t.workers[a]);
    // A's job children die with it, and their sandboxes with them.
    wait_for(Duration::from_secs(10), "A's sandbox is gone", || {
        !pgrep("sleep 62")
    });
    // Declared gone once its heartbeat is 3 s old: its session lost, with
    // the reason; its claim back in the queue.
    wait_for(Duration::from_secs(20), "A's session is lost", || {
        t.rt.block_on(store.get(&on_a))
            .is_ok_and(|s| s.status == store::Status::Lost)
    });
    let lost = t.rt.block_on(store.events(&on_a)).unwrap();
    let why = lost.iter().find(|e| e.kind == "lost").unwrap();
    assert!(
        why.data["reason"]
            .as_str()
            .unwrap()
            .contains("worker wa stopped heartbeating"),
        "{:?}",
        why.data
    );
    wait_for(
        Duration::from_secs(10),
        "the claim is back in the queue",
        || t.request(&store, &moved).state == RequestState::Queued,
    );

    // Stop from the remote CLI reaches B's session within a second.
    let asked = Instant::now();
    let o = t
        .remote("alice", &["stop", "-t", "3", &b1])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    wait_for(Duration::from_secs(5), "b1 stops", || {
        t.rt.block_on(store.get(&b1))
            .is_ok_and(|s| s.status == store::Status::Stopped)
    });
    let took = asked.elapsed();
    assert!(took < Duration::from_millis(1500), "stop took {took:?}");
    assert_stop_reached_within_a_second(&t, &store, &b1);
    let asked = t.rt.block_on(store.events(&b1)).unwrap();
    let asked = asked.iter().find(|e| e.kind == "stop_requested").unwrap();
    assert_eq!(
        asked.data["timeout_secs"], 3,
        "stop -t reaches the supervisor"
    );
    // And from the dashboard's API.
    let asked = Instant::now();
    let (code, body) = t.api(
        "alice",
        "POST",
        &format!("/api/v1/sessions/{b2}/stop"),
        Some("{}"),
    );
    assert_eq!(code, 202, "{body}");
    wait_for(Duration::from_secs(5), "b2 stops", || {
        t.rt.block_on(store.get(&b2))
            .is_ok_and(|s| s.status == store::Status::Stopped)
    });
    let took = asked.elapsed();
    assert!(took < Duration::from_millis(1500), "stop took {took:?}");
    assert_stop_reached_within_a_second(&t, &store, &b2);

    // B now has room: the moved request runs there, once.
    wait_for(Duration::from_secs(30), "the moved request is done", || {
        t.request(&store, &moved).state == RequestState::Done
    });
    let s = t.rt.block_on(store.get(&moved)).unwrap();
    assert_eq!((s.host.as_str(), s.exit_code), ("wb", Some(0)));
    let c = &claims(&t, &store)[&moved];
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!(c[0].1, worker_a, "first claimed by A");
    assert_ne!(c[1].1, worker_a, "then by B");
    assert_eq!(created_events(&t, &store, &moved).len(), 1, "it ran once");
    // Nothing else was ever claimed twice.
    for (id, c) in claims(&t, &store) {
        if id != moved {
            assert_eq!(c.len(), 1, "{id}: {c:?}");
        }
    }
    // A comes back (same data directory, same identity) and reconciles.
    t.worker("wa", &[], &["--capacity", "2", "--labels", "host=a"]);
    let a_again = t.rt.block_on(store.workers()).unwrap();
    assert!(
        a_again
            .iter()
            .any(|w| w.id == worker_a && w.state == store::queue::WorkerState::Running),
        "{a_again:?}"
    );
    assert!(t.log("wb").contains("ready"), "{}", t.log("wb"));
}

#[test]
fn a_thousand_requests_are_drained_without_a_double_claim() {
    let Some(mut t) = setup("a_thousand_requests_are_drained_without_a_double_claim") else {
        return;
    };
    let store = t.store();
    // Queued at once, straight into the store.
    let ids: Vec<String> = (0..1000).map(|_| store::testing::random_hex(16)).collect();
    t.rt.block_on(async {
        for id in &ids {
            store
                .enqueue(&store::queue::NewRequest {
                    id: id.clone(),
                    user: "alice".into(),
                    actor: "test".into(),
                    profile: "generic".into(),
                    workspace: WorkspaceSource::Path {
                        path: "proj".into(),
                    },
                    command: vec!["true".into()],
                    image: None,
                    backend: None,
                    labels: Default::default(),
                    created_at: store::now_ms(),
                })
                .await
                .unwrap();
        }
    });
    t.worker("w1", &[], &["--capacity", "4"]);
    t.worker("w2", &[], &["--capacity", "4"]);
    wait_for(Duration::from_secs(600), "1000 requests are done", || {
        let s = t.rt.block_on(store.queue_stats(store::now_ms())).unwrap();
        s.queued == 0 && s.claimed == 0 && s.started == 0
    });
    let by_claim = claims(&t, &store);
    assert_eq!(by_claim.len(), 1000);
    let mut per_worker: BTreeMap<String, usize> = BTreeMap::new();
    for id in &ids {
        let r = t.request(&store, id);
        assert_eq!(r.state, RequestState::Done, "{id}: {:?}", r.reason);
        let c = &by_claim[id];
        assert_eq!(c.len(), 1, "{id} claimed more than once: {c:?}");
        // The audit trail says the same: one `created`, by that worker.
        let created = created_events(&t, &store, id);
        assert_eq!(created.len(), 1, "{id}");
        assert_eq!(
            created[0].data["asked"]["worker_id"].as_str(),
            Some(c[0].1.as_str()),
            "{id}"
        );
        let s = t.rt.block_on(store.get(id)).unwrap();
        assert_eq!(s.exit_code, Some(0), "{id}");
        *per_worker.entry(s.host).or_default() += 1;
    }
    assert_eq!(
        per_worker.len(),
        2,
        "both workers drained some: {per_worker:?}"
    );
}

#[test]
fn scopes_and_workspace_roots_hold_on_the_server_and_the_worker() {
    let Some(mut t) = setup("scopes_and_workspace_roots_hold_on_the_server_and_the_worker") else {
        return;
    };
    t.worker("w1", &[], &["--capacity", "2"]);
    let store = t.store();
    let body = r#"{"profile":"generic","workspace":{"path":"proj"},"command":["true"]}"#;
    // A read token cannot start or stop; it can read.
    let (code, msg) = t.api("alice-read", "POST", "/api/v1/sessions", Some(body));
    assert_eq!(code, 403, "{msg}");
    assert!(msg.contains("run scope"), "{msg}");
    let (code, _) = t.api("alice-read", "GET", "/api/v1/sessions", None);
    assert_eq!(code, 200);
    // A run token starts; it cannot manage users or delete sessions.
    let (code, msg) = t.api("alice", "POST", "/api/v1/sessions", Some(body));
    assert_eq!(code, 202, "{msg}");
    let id = serde_json::from_str::<serde_json::Value>(&msg).unwrap()["request"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, _) = t.api("alice", "GET", "/users", None);
    assert_eq!(code, 403);
    wait_for(Duration::from_secs(30), "the request is done", || {
        t.request(&store, &id).state == RequestState::Done
    });
    let (code, msg) = t.api(
        "alice-read",
        "POST",
        &format!("/api/v1/sessions/{id}/stop"),
        Some("{}"),
    );
    assert_eq!(code, 403, "{msg}");
    let (code, msg) = t.api("alice", "DELETE", &format!("/api/v1/sessions/{id}"), None);
    assert_eq!(code, 403, "{msg}");
    // Bob cannot see alice's session or her request.
    let (code, _) = t.api("bob", "GET", &format!("/api/v1/sessions/{id}"), None);
    assert_eq!(code, 404);
    let (code, _) = t.api("bob", "GET", &format!("/api/v1/requests/{id}"), None);
    assert_eq!(code, 404);
    // The admin token deletes it.
    let (code, msg) = t.api("admin", "DELETE", &format!("/api/v1/sessions/{id}"), None);
    assert_eq!(code, 200, "{msg}");

    // `..` is refused by the server; every other way out of the root by
    // the worker, on the real path.
    let (code, msg) = t.api(
        "alice",
        "POST",
        "/api/v1/sessions",
        Some(r#"{"profile":"generic","workspace":{"path":"../bob/proj"},"command":["true"]}"#),
    );
    assert_eq!(code, 403, "{msg}");
    std::os::unix::fs::symlink(t.roots.join("bob/proj"), t.roots.join("alice/link")).unwrap();
    let bob_abs = t.roots.join("bob/proj").display().to_string();
    for asked in ["link", bob_abs.as_str(), "missing"] {
        let id = t.submit("alice", &["-w", asked, "--", "cat", "secret.txt"]);
        wait_for(Duration::from_secs(30), "the worker refuses it", || {
            t.request(&store, &id).state == RequestState::Failed
        });
        let r = t.request(&store, &id);
        let why = r.reason.unwrap_or_default();
        assert!(
            why.contains("outside the workspace root") || why.contains("cannot be opened"),
            "{asked}: {why}"
        );
        assert!(
            t.rt.block_on(store.get(&id)).is_err(),
            "{asked}: no session ran"
        );
    }
    // A request with a password in its git URL never reaches the queue.
    let (code, msg) = t.api(
        "alice",
        "POST",
        "/api/v1/sessions",
        Some(r#"{"profile":"generic","workspace":{"git":"https://u:pw@example.test/r"},"command":["true"]}"#),
    );
    assert_eq!(code, 403, "{msg}");
    // A label no worker has: queued, and the API says why.
    let id = t.submit("alice", &["-w", "proj", "--label", "gpu=1", "--", "true"]);
    std::thread::sleep(Duration::from_millis(300));
    let (code, msg) = t.api("alice", "GET", &format!("/api/v1/requests/{id}"), None);
    assert_eq!(code, 200);
    assert!(msg.contains("lacks gpu=1"), "{msg}");
    assert_eq!(t.request(&store, &id).state, RequestState::Queued);
    // Withdrawn with `stop`.
    let o = t.remote("alice", &["stop", &id]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(t.request(&store, &id).state, RequestState::Cancelled);

    // Drain: no new work, and the worker exits once its session ends.
    let long = t.submit("alice", &["-w", "proj", "--", "sleep", "2"]);
    wait_for(Duration::from_secs(20), "the session runs", || {
        t.rt.block_on(store.get(&long))
            .is_ok_and(|s| s.status == store::Status::Running)
    });
    let mut drain = agentctl(&t.socket_url, &["worker", "--drain", "--data-dir"])
        .arg(t.dir.path().join("worker-w1"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(5), "the worker drains", || {
        t.rt.block_on(store.workers())
            .unwrap()
            .iter()
            .any(|w| w.name == "w1" && w.state == store::queue::WorkerState::Draining)
    });
    let late = t.submit("alice", &["-w", "proj", "--", "true"]);
    assert!(
        drain.try_wait().unwrap().is_none(),
        "drain waits for the session"
    );
    let status = drain.wait().unwrap();
    assert!(status.success());
    let s = t.rt.block_on(store.get(&long)).unwrap();
    assert_eq!(s.exit_code, Some(0), "the session ran to its end");
    let worker = t.workers[0].wait().unwrap();
    assert!(worker.success(), "the worker exited by itself: {worker:?}");
    assert_eq!(t.request(&store, &late).state, RequestState::Queued);
}

#[test]
fn the_remote_cli_behaves_like_the_local_one() {
    let Some(mut t) = setup("the_remote_cli_behaves_like_the_local_one") else {
        return;
    };
    t.worker("w1", &[], &["--capacity", "2"]);
    // Exit codes and the streamed log of a foreground run.
    let o = t
        .remote(
            "alice",
            &[
                "run",
                "-w",
                "proj",
                "--",
                "sh",
                "-c",
                "cat hello.txt; exit 7",
            ],
        )
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(7), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "hello from alice\n");
    let o = t
        .remote(
            "alice",
            &["run", "-q", "-w", "proj", "--", "no-such-command"],
        )
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(127), "{}", text(&o.stderr));
    // A request for the Docker backend waits for a Docker worker, and
    // runs there.
    if require(support::docker_available(), "a Docker engine") {
        t.worker("wd", &[], &["--capacity", "1", "--backend", "docker"]);
        let o = t
            .remote(
                "alice",
                &[
                    "run",
                    "-q",
                    "--backend",
                    "docker",
                    "-w",
                    "proj",
                    "--",
                    "sh",
                    "-c",
                    "cat hello.txt; exit 4",
                ],
            )
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(4), "{}", text(&o.stderr));
        assert_eq!(text(&o.stdout), "hello from alice\n");
        let store = t.store();
        let list = t.rt.block_on(store.list(&store::ListQuery {
            all: true,
            limit: 1,
            offset: 0,
        }));
        let s = &list.unwrap()[0];
        assert_eq!((s.backend, s.host.as_str()), (store::Backend::Docker, "wd"));
    }
    // A refused workspace: the launcher's failure code, and why.
    let o = t
        .remote("alice", &["run", "-w", "nope", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("cannot be opened"),
        "{}",
        text(&o.stderr)
    );
    // Detached, then logs -f, ps --json, audit --verify.
    let id = t.submit(
        "alice",
        &[
            // The native worker's (a Docker worker runs here too).
            "--backend",
            "native",
            "-w",
            "proj",
            "--",
            "sh",
            "-c",
            "for i in 1 2 3; do echo line$i; sleep 0.2; done",
        ],
    );
    let store = t.store();
    wait_for(Duration::from_secs(20), "the session exists", || {
        t.rt.block_on(store.get(&id)).is_ok()
    });
    let o = t
        .remote("alice", &["logs", "-f", &id[..12]])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "line1\nline2\nline3\n");
    let o = t.remote("alice", &["ps", "-a", "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == id.as_str()),
        "{list}"
    );
    let o = t
        .remote("alice", &["audit", "--verify", &id])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("chain intact"),
        "{}",
        text(&o.stdout)
    );
    assert!(
        text(&o.stdout).contains("via worker w1"),
        "{}",
        text(&o.stdout)
    );
    // Another user sees none of it; rm needs the admin scope.
    let o = t.remote("bob", &["logs", &id]).output().unwrap();
    assert_eq!(o.status.code(), Some(125));
    let o = t.remote("alice", &["rm", &id]).output().unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert!(text(&o.stderr).contains("admin"), "{}", text(&o.stderr));
    let o = t.remote("admin", &["rm", &id]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    // A token kept by `login` (mode 0600) serves without AGENTCTL_TOKEN.
    let mut login = t.remote("alice", &["login", "--token-stdin"]);
    login.env_remove("AGENTCTL_TOKEN").stdin(Stdio::piped());
    let mut child = login.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(t.tokens["alice"].as_bytes()).unwrap();
    }
    assert!(child.wait().unwrap().success());
    let file = t.dir.path().join("config/agentctl/servers.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let o = t
        .remote("alice", &["ps"])
        .env_remove("AGENTCTL_TOKEN")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    // A token over plain http to another host is refused before it is sent.
    let o = t
        .remote("alice", &["ps"])
        .env("AGENTCTL_SERVER", "http://192.0.2.1:7878")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("in the clear"),
        "{}",
        text(&o.stderr)
    );

    // Over TLS with the team's own CA: refused until AGENTCTL_CA_CERT
    // names it.
    let d = t.dir.path();
    let (ca, cert, key) = (d.join("ca.pem"), d.join("cert.pem"), d.join("key.pem"));
    std::fs::write(
        d.join("leaf.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    for args in [
        vec![
            "req",
            "-x509",
            "-days",
            "1",
            "-subj",
            "/CN=team CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
        vec![
            "req",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
        ],
        vec![
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
            "-out",
            "cert.pem",
        ],
    ] {
        let mut c = Command::new("openssl");
        c.args(&args[..1]);
        if args[0] == "req" {
            c.args(ec);
        }
        let o = c.args(&args[1..]).current_dir(d).output().unwrap();
        assert!(o.status.success(), "openssl {args:?}: {}", text(&o.stderr));
    }
    let (mut tls, addr) = support::serve(
        agentctl(&t.url, &["serve", "--listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .current_dir(t.dir.path()),
    );
    let port = addr.rsplit(':').next().unwrap().to_string();
    let server = format!("https://localhost:{port}");
    let o = t
        .remote("alice", &["ps"])
        .env("AGENTCTL_SERVER", &server)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125), "an unknown CA must be refused");
    let o = t
        .remote("alice", &["ps"])
        .env("AGENTCTL_SERVER", &server)
        .env("AGENTCTL_CA_CERT", &ca)
        .output()
        .unwrap();
    let _ = tls.kill();
    let _ = tls.wait();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).starts_with("SESSION"),
        "{}",
        text(&o.stdout)
    );
}

/// A git workspace: cloned over https by the worker with its credential
/// helper (the server needs the password; the request never carries it),
/// and nothing of the credential reaches the sandbox.
#[test]
fn a_git_workspace_is_cloned_with_the_workers_credentials_only() {
    let Some(mut t) = setup("a_git_workspace_is_cloned_with_the_workers_credentials_only") else {
        return;
    };
    let dir = t.dir.path().to_path_buf();
    // A repository, served over https (dumb HTTP) with basic auth.
    let repo = dir.join("src");
    let git = |args: &[&str], cwd: &Path| {
        let o = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(cwd)
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {}", text(&o.stderr));
    };
    std::fs::create_dir_all(&repo).unwrap();
    git(&["init", "-q", "-b", "main"], &repo);
    std::fs::write(repo.join("README"), "cloned content\n").unwrap();
    git(&["add", "README"], &repo);
    git(&["commit", "-q", "-m", "one"], &repo);
    let served = dir.join("www");
    std::fs::create_dir_all(&served).unwrap();
    git(
        &[
            "clone",
            "-q",
            "--bare",
            repo.to_str().unwrap(),
            served.join("r.git").to_str().unwrap(),
        ],
        &dir,
    );
    git(&["update-server-info"], &served.join("r.git"));
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let server_py = r#"
import base64, http.server, ssl, sys, os
os.chdir(sys.argv[1])
class H(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        want = "Basic " + base64.b64encode(b"deploy:S3CRET-PASSWORD").decode()
        if self.headers.get("Authorization") != want:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="r"')
            self.end_headers()
            return
        super().do_GET()
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
c.load_cert_chain(sys.argv[2], sys.argv[3])
s.socket = c.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
    let mut https = Command::new("python3")
        .arg("-c")
        .arg(server_py)
        .arg(&served)
        .arg(&cert)
        .arg(&key)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(https.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    let url = format!("https://127.0.0.1:{}/r.git", port.trim());
    // The worker shares the test's network (the server is on loopback);
    // its credential helper answers the password, git trusts the test's CA.
    let helper = "!f() { echo username=deploy; echo password=S3CRET-PASSWORD; }; f";
    let data = dir.join("worker-gw");
    let log = std::fs::File::create(dir.join("gw.log")).unwrap();
    t.workers.push(
        Command::new(binary())
            .args(["worker", "--name", "gw", "--heartbeat-timeout", "3"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--clone-root")
            .arg(dir.join("clones"))
            .args(["--git-credential-helper", helper])
            .env("AGENTCTL_STORE", &t.url)
            .env("GIT_SSL_CAINFO", &cert)
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let store = t.store();
    wait_for(Duration::from_secs(20), "the worker registers", || {
        t.rt.block_on(store.workers())
            .unwrap()
            .iter()
            .any(|w| w.name == "gw")
    });
    let o = t
        .remote(
            "alice",
            &[
                "run",
                "-q",
                "--git",
                &url,
                "--rev",
                "main",
                "--",
                "sh",
                "-c",
                "cat README; cat .git/config; env; git config --list 2>&1; true",
            ],
        )
        .output()
        .unwrap();
    let _ = https.kill();
    let _ = https.wait();
    let out = text(&o.stdout);
    assert!(
        o.status.success(),
        "{}\n{}\n{}",
        out,
        text(&o.stderr),
        std::fs::read_to_string(dir.join("gw.log")).unwrap_or_default()
    );
    assert!(out.contains("cloned content"), "{out}");
    assert!(
        !out.contains("S3CRET-PASSWORD"),
        "the credential reached the sandbox:\n{out}"
    );
    assert!(
        !out.contains("credential"),
        "a credential helper is visible inside:\n{out}"
    );
    // The clone is under the clone root, not under any user's root.
    let clones: Vec<_> = std::fs::read_dir(dir.join("clones")).unwrap().collect();
    assert_eq!(clones.len(), 1);
    // A clone root inside agentctl's own state (which the planner keeps
    // from every session) is refused before the worker starts.
    let o = Command::new(binary())
        .args([
            "worker",
            "--name",
            "bad",
            "--clone-root",
            "/var/lib/agentctl/clones",
        ])
        .arg("--data-dir")
        .arg(dir.join("worker-bad"))
        .env("AGENTCTL_STORE", &t.url)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("own state"), "{}", text(&o.stderr));
}
