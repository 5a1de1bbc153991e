//! A session's output through the handlers, over real SQLite and real
//! Postgres: the live log resumes after `Last-Event-ID` with nothing
//! missed or repeated, follows new output as the store gets it, ends with
//! the session; the API gives the bytes as written; downloads give raw
//! bytes or plain text; output is text on every page; another user's
//! session's output does not exist for a viewer.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use store::{NewEvent, Role, SessionStore, SessionUpdate, Status};
use tower::ServiceExt;
use web::{AppState, HostAllowList, app};

const NASTY: &[u8] =
    b"\x1b[31m<script>alert(1)</script>\x1b[0m \"onmouseover=x\" \x1b]52;c;aGk=\x07done\n";

async fn get(st: &AppState, path: &str, headers: &[(&str, &str)]) -> axum::response::Response {
    let mut req = Request::get(path).header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    app(st.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

async fn text(resp: axum::response::Response) -> String {
    String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned()
}

/// SSE events (`event`, `id`, `data`) in a body text.
fn events(body: &str) -> Vec<(String, String, String)> {
    body.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix(&format!("{name}: "))
                            .or(l.strip_prefix(&format!("{name}:")))
                    })
                    .unwrap_or_default()
                    .to_string()
            };
            (field("event"), field("id"), field("data"))
        })
        .filter(|(e, _, _)| !e.is_empty())
        .collect()
}

/// Reads `body` into `seen` until `want` shows up (10 s at most).
async fn read_until(body: &mut Body, seen: &mut String, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(want) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("no {want:?} in {seen}"));
        let Some(Ok(frame)) = frame else { break };
        if let Some(data) = frame.data_ref() {
            seen.push_str(&String::from_utf8_lossy(data));
        }
    }
}

async fn checks(url: &str) {
    let store = SessionStore::connect(url).await.unwrap();
    let id = "0123456789abcdef0123456789abcdef";
    store
        .create_session(&common::session(id, "x", "/w"), NewEvent::new("created"))
        .await
        .unwrap();
    store
        .update(
            id,
            &SessionUpdate {
                status: Some(Status::Running),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for i in 1..=3 {
        store
            .append_output(id, i, format!("line {i}\n").as_bytes(), 1 << 20)
            .await
            .unwrap();
    }
    store.append_output(id, 4, NASTY, 1 << 20).await.unwrap();
    let st = AppState::new(store.clone(), HostAllowList::loopback(), "t".into());

    // The page: the output's end, as text, with the live log's position.
    let body = text(get(&st, &format!("/sessions/{id}"), &[]).await).await;
    assert!(
        body.contains("line 1\n") && body.contains("done\n"),
        "{body}"
    );
    assert!(
        !body.contains("<script>alert") && !body.contains("\"onmouseover"),
        "{body}"
    );
    assert!(
        body.contains("<span class=\"fg1\">&#60;script&#62;"),
        "{body}"
    );
    assert!(
        !body.contains("aGk="),
        "an OSC 52 clipboard write is shown: {body}"
    );
    assert!(
        body.contains(&format!(
            "data-output=\"/events/sessions/{id}/output?after=4\""
        )),
        "{body}"
    );

    // The API: every byte, from any chunk.
    let resp = get(&st, &format!("/api/v1/sessions/{id}/output?after=2"), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&bytes[..], [b"line 3\n".as_slice(), NASTY].concat());

    // Downloads.
    let resp = get(&st, &format!("/sessions/{id}/output.raw"), &[]).await;
    assert!(
        resp.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes().len(),
        21 + NASTY.len()
    );
    let plain = text(get(&st, &format!("/sessions/{id}/output.txt"), &[]).await).await;
    assert!(
        plain.ends_with("<script>alert(1)</script> \"onmouseover=x\" done\n"),
        "{plain:?}"
    );
    assert!(!plain.contains('\u{1b}'));

    // The live log, resumed after chunk 2: 3 and 4 at once, then what the
    // store gets, then the end.
    let resp = get(
        &st,
        &format!("/events/sessions/{id}/output?after=0"),
        &[("last-event-id", "2")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut seen = String::new();
    read_until(&mut body, &mut seen, "id: 4").await;
    store
        .append_output(id, 5, b"\x1b[1mlater\n", 1 << 20)
        .await
        .unwrap();
    read_until(&mut body, &mut seen, "id: 5").await;
    store
        .record(
            id,
            vec![NewEvent::new("exited")],
            &SessionUpdate {
                status: Some(Status::Exited),
                exit_code: Some(0),
                ended_at: Some(store::now_ms()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    read_until(&mut body, &mut seen, "event: end").await;
    let ev = events(&seen);
    let ids: Vec<&str> = ev
        .iter()
        .filter(|e| e.0 == "chunk")
        .map(|e| e.1.as_str())
        .collect();
    assert_eq!(ids, ["3", "4", "5"], "{seen}");
    let five: serde_json::Value = serde_json::from_str(&ev[2].2).unwrap();
    assert_eq!(five["g"], serde_json::json!([["b", "later\n"]]));
    assert_eq!(ev.last().unwrap().0, "end");
    assert!(ev.last().unwrap().2.contains("exited"));

    // An ended session's live log: the rest, then the end, at once.
    let all = text(get(&st, &format!("/events/sessions/{id}/output"), &[]).await).await;
    let ids: Vec<String> = events(&all)
        .into_iter()
        .filter(|e| e.0 == "chunk")
        .map(|e| e.1)
        .collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5"]);
    // Followed through the API: the bytes, then the response ends.
    let resp = get(
        &st,
        &format!("/api/v1/sessions/{id}/output?after=4&follow=true"),
        &[],
    )
    .await;
    assert_eq!(
        &resp.into_body().collect().await.unwrap().to_bytes()[..],
        b"\x1b[1mlater\n"
    );

    // Another user's session: its output does not exist for a viewer.
    let hash = web::auth::hash_password("correct horse battery").unwrap();
    store
        .add_user("mallory", Role::Viewer, &hash, 0)
        .await
        .unwrap();
    let t = web::auth::new_token().unwrap();
    store
        .add_token(
            &t.id,
            "mallory",
            "",
            store::Scope::Admin,
            &web::auth::sha256_hex(&t.token),
            0,
        )
        .await
        .unwrap();
    let bearer = format!("Bearer {}", t.token);
    // A server that starts with users requires a login at once (one that
    // started without looks again every two seconds).
    let st = AppState::new(store.clone(), HostAllowList::loopback(), "t".into());
    for path in [
        format!("/api/v1/sessions/{id}/output"),
        format!("/events/sessions/{id}/output"),
        format!("/sessions/{id}/output.raw"),
    ] {
        let resp = get(&st, &path, &[("authorization", &bearer)]).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn output_over_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    checks(&format!("sqlite://{}", dir.path().join("s.db").display())).await;
}

#[tokio::test]
async fn output_over_postgres() {
    if let Some(db) = common::postgres_url("output_over_postgres").await {
        checks(&db.url).await;
    }
}
