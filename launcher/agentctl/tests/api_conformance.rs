//! The JSON API against its OpenAPI document, by schemathesis (from PyPI):
//! thousands of generated requests, valid and not, to a live
//! `agentctl serve`, with every check on: no answer is a server error, and
//! every status, content type and body is one the document allows. Run
//! with a fixed seed, so that a failure here is one anyone can reproduce
//! (`st run ... --seed`); run it with other seeds to explore.
//!
//! schemathesis comes from AGENTCTL_SCHEMATHESIS or `st` on PATH (.ci/test
//! installs it); without it the test skips loudly, and fails under CI.

mod support;

use std::path::PathBuf;
use std::process::Command;

use store::{Backend, NewEvent, NewSession, Role, SessionStore, SessionUpdate, Status};
use support::{binary, require, text};

fn schemathesis() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AGENTCTL_SCHEMATHESIS") {
        return Some(p.into());
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("st"))
            .find(|p| p.is_file())
    })
}

/// Ended sessions of each end, with output and refusals. None is live: a
/// live session's output followed (`follow=true`) streams until it ends,
/// which a request-and-answer fuzzer can only read as a timeout (the
/// stream has its own tests, web/tests/output.rs); a stop of an ended
/// session answers 409, a documented answer.
async fn seed(url: &str) {
    let store = SessionStore::connect(url).await.unwrap();
    let policy = r#"{"network":"none","mounts":[],"masked":[],"env":[]}"#.to_string();
    for (i, status) in [
        Status::Exited,
        Status::Failed,
        Status::Stopped,
        Status::Lost,
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("{:x}{}", 0xa + i, "0".repeat(31));
        store
            .create_session(
                &NewSession {
                    id: id.clone(),
                    profile: "generic".into(),
                    backend: Backend::Native,
                    image: None,
                    workspace: "/w".into(),
                    command: vec!["sh".into(), "-c".into(), "<b>x</b>".into()],
                    user: "alice".into(),
                    uid: 1000,
                    host: "h".into(),
                    created_at: None,
                    detached: i % 2 == 0,
                    policy_sha256: store::chain::sha256_hex(policy.as_bytes()),
                    policy: policy.clone(),
                },
                NewEvent::new("created").actor("alice"),
            )
            .await
            .unwrap();
        store
            .append_event(
                &id,
                NewEvent::new("proxy_denied")
                    .data(serde_json::json!({"path": "/containers/create"})),
            )
            .await
            .unwrap();
        store
            .append_output(&id, 1, b"\x1b[31mred\x1b[0m\nplain\n", 1 << 20)
            .await
            .unwrap();
        store
            .update(
                &id,
                &SessionUpdate {
                    status: Some(status),
                    ended_at: Some(store::now_ms()),
                    exit_code: Some(1),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    store.close().await;
}

fn run(st: &PathBuf, addr: &str, extra: &[&str], examples: &str) {
    // schemathesis keeps a cache where it runs: not in the source tree.
    let cwd = tempfile::tempdir().unwrap();
    let o = Command::new(st)
        .current_dir(cwd.path())
        .arg("run")
        .arg(format!("http://{addr}/api/v1/openapi.json"))
        .args([
            "--checks",
            "all",
            "--seed",
            "20261204",
            "--max-examples",
            examples,
        ])
        .args([
            "--generation-database",
            "none",
            // No time budget: with one, fuzzing repeats until it is
            // spent; the number of examples bounds the run instead.
            "--no-color",
        ])
        .args(extra)
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert!(
        o.status.success(),
        "schemathesis found answers the document does not allow:\n{out}\n{}",
        text(&o.stderr)
    );
    assert!(out.contains("passed"), "{out}");
}

#[test]
fn the_api_conforms_to_its_document() {
    let Some(st) = schemathesis() else {
        require(
            false,
            "schemathesis (pip install schemathesis; .ci/test installs it)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    // The queue's operations are fuzzed on Postgres, below.
    conform(&st, &url, dir.path(), false);
}

/// The same on Postgres, with the queue: fuzzed requests are queued (no
/// worker runs them), withdrawn and listed.
#[test]
fn the_api_conforms_to_its_document_on_postgres() {
    let Some(st) = schemathesis() else {
        require(
            false,
            "schemathesis (pip install schemathesis; .ci/test installs it)",
        );
        return;
    };
    let server = match store::testing::server() {
        Ok(s) => s.clone(),
        Err(why) => {
            store::testing::skip("the_api_conforms_to_its_document_on_postgres", &why);
            return;
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt
        .block_on(store::testing::TestDatabase::create(&server))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    conform(&st, &db.url, dir.path(), true);
    rt.block_on(db.finish());
}

/// Fuzzes a server over `url` (seeded first); `queue` says whether its
/// store has the team queue (Postgres), whose operations are fuzzed too.
fn conform(st: &PathBuf, url: &str, dir: &std::path::Path, queue: bool) {
    let filters: &[&str] = if queue {
        &[]
    } else {
        // On SQLite the queue's operations answer 501 (documented, but a
        // server error to schemathesis).
        &["--exclude-path-regex", "^/api/v1/(requests|workers)"]
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(seed(url));
    let run = |st: &PathBuf, addr: &str, extra: &[&str], examples: &str| {
        let mut all: Vec<&str> = extra.to_vec();
        all.extend_from_slice(filters);
        all.extend_from_slice(&["--exclude-operation-id", "requestSession"]);
        run(st, addr, &all, examples);
        if queue {
            // A session request's workspace is checked beyond what JSON
            // Schema says (no `..` component, no password in a git URL,
            // https or ssh only: 403 or 400), so "schema-valid data is
            // accepted" cannot hold for it; every other check runs.
            let mut all: Vec<&str> = extra.to_vec();
            all.extend_from_slice(&[
                "--include-operation-id",
                "requestSession",
                "--exclude-checks",
                "positive_data_acceptance",
            ]);
            run(st, addr, &all, examples);
        }
    };

    // On loopback without users: everything open.
    let (mut server, addr) = support::serve(
        Command::new(binary())
            .args(["--store", url, "serve", "--listen", "127.0.0.1:0"])
            .current_dir(dir),
    );
    run(st, &addr, &[], "200");

    // With users: a viewer's token, and no token at all.
    let token = rt.block_on(async {
        let store = SessionStore::connect(url).await.unwrap();
        let hash = web::auth::hash_password("correct horse battery").unwrap();
        store
            .add_user("alice", Role::Viewer, &hash, 0)
            .await
            .unwrap();
        let t = web::auth::new_token().unwrap();
        store
            .add_token(
                &t.id,
                "alice",
                "st",
                store::Scope::Admin,
                &web::auth::sha256_hex(&t.token),
                0,
            )
            .await
            .unwrap();
        store.close().await;
        t.token
    });
    let _ = server.kill();
    let _ = server.wait();
    let (mut server, addr) = support::serve(
        Command::new(binary())
            .args(["--store", url, "serve", "--listen", "127.0.0.1:0"])
            .current_dir(dir),
    );
    run(
        st,
        &addr,
        &["-H", &format!("Authorization: Bearer {token}")],
        "50",
    );
    // No token: every answer a documented 401 (the document is public).
    run(
        st,
        &addr,
        &["--exclude-checks", "positive_data_acceptance"],
        "10",
    );
    let _ = server.kill();
    let _ = server.wait();
}
