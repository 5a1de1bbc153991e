//! The dashboard's handlers without a server (`app().oneshot(...)`), over
//! a real SQLite store and, when there is one, a real Postgres: status
//! codes, the Host allow-list, the security headers, escaping, and errors
//! that never show a database's text.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
mod common;

use common::session;
use store::{NewEvent, SessionStore};
use tower::ServiceExt;
use web::{AppState, HostAllowList, app};

/// What an attacker controls in a session: its command, its workspace's
/// name, its output. Every one of these must render as text.
const SCRIPT: &str = "<script>alert(1)</script>";
const ATTR: &str = "\"onmouseover=alert(1) x=\"";

async fn seeded(url: &str) -> (AppState, String) {
    let store = SessionStore::connect(url).await.unwrap();
    let id = "0123456789abcdef0123456789abcdef".to_string();
    store
        .create_session(
            &session(&id, SCRIPT, &format!("/home/alice/{ATTR}")),
            NewEvent::new("created").actor("uid 1000 (alice)"),
        )
        .await
        .unwrap();
    store
        .append_event(
            &id,
            NewEvent::new("proxy_denied").data(serde_json::json!({"reason": SCRIPT})),
        )
        .await
        .unwrap();
    let state = AppState::new(
        store,
        HostAllowList::loopback(),
        "dashboard (tester)".into(),
    );
    (state, id)
}

async fn get(
    state: &AppState,
    path: &str,
    host: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let req = Request::get(path)
        .header("host", host)
        .body(Body::empty())
        .unwrap();
    let resp = app(state.clone()).oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

async fn post(
    state: &AppState,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Option<String>) {
    let mut req = Request::post(path).header("host", "localhost:7878");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app(state.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let location = resp
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string());
    (resp.status(), location)
}

/// The one script a page may load is the dashboard's own file.
fn only_our_script(body: &str) -> bool {
    body.matches("<script").count() == 1
        && body.contains(r#"<script src="/static/live.js" defer></script>"#)
}

async fn checks(url: &str) {
    let (st, id) = seeded(url).await;

    // Home: the session is listed, everything it controls as text.
    let (status, headers, body) = get(&st, "/", "localhost:7878").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(&id[..12]), "{body}");
    assert!(!body.contains(SCRIPT) && only_our_script(&body), "{body}");
    assert!(!body.contains(ATTR), "an attribute breaks out: {body}");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");

    // The detail page: plan, masks, the chain's verdict, escaped data.
    let (status, _, body) = get(&st, &format!("/sessions/{}", &id[..8]), "127.0.0.1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("verified #1–#2"), "{body}");
    assert!(body.contains("dotenv file"), "{body}");
    assert!(body.contains("Refused actions</dt><dd>1<"), "{body}");
    assert!(only_our_script(&body), "{body}");

    // DNS rebinding: any other name is refused, pages and API alike.
    for path in [
        "/",
        "/api/v1/sessions",
        "/healthz",
        &format!("/sessions/{id}"),
    ] {
        let (status, _, _) = get(&st, path, "evil.example:7878").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }

    // The API: the same data as JSON.
    let (status, headers, body) = get(&st, "/api/v1/sessions", "[::1]:7878").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["sessions"][0]["id"], id.as_str());
    assert!(list["sessions"][0].get("policy").is_none(), "{list}");
    assert_eq!(list["next"], serde_json::Value::Null);
    let (status, _, body) = get(&st, "/api/v1/sessions?status=bogus", "localhost").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (_, _, body) = get(&st, "/api/v1/sessions?q=zzzz-no-such", "localhost").await;
    let none: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(none["sessions"], serde_json::json!([]));
    let (_, _, body) = get(&st, &format!("/api/v1/sessions/{id}"), "localhost").await;
    let one: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(one["verification"]["ok"], true, "{one}");
    let (_, _, body) = get(&st, &format!("/api/v1/sessions/{id}/events"), "localhost").await;
    let events: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(events.as_array().unwrap().len(), 2);
    let (status, _, body) = get(&st, "/healthz", "localhost").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A status the page does not know matches nothing, and says so.
    let (_, _, body) = get(&st, "/?status=bogus", "localhost").await;
    assert!(
        body.contains("There is no status") && !body.contains(&id[..12]),
        "{body}"
    );

    // The audit trail across sessions, filtered; data escaped.
    let (status, _, body) = get(&st, "/audit?kind=proxy_denied", "localhost").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("proxy_denied") && !body.contains(">created<"),
        "{body}"
    );
    assert!(!body.contains(SCRIPT) && only_our_script(&body), "{body}");
    let (_, _, body) = get(
        &st,
        &format!("/audit?session={}&actor=uid+1000+%28alice%29", &id[..6]),
        "localhost",
    )
    .await;
    assert!(
        body.contains(">created<") && !body.contains("proxy_denied<"),
        "{body}"
    );
    let (_, _, body) = get(&st, "/audit?since=yesterday", "localhost").await;
    assert!(body.contains("is not a date"), "{body}");
    let (_, _, body) = get(&st, "/audit?since=2999-01-01", "localhost").await;
    assert!(body.contains("No events match"), "{body}");
    let (status, _, body) = get(&st, "/audit/verify", "localhost").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("1 sessions checked: 1 intact, 0 broken"),
        "{body}"
    );

    // Profiles as sessions ran under them.
    let (status, _, body) = get(&st, "/profiles", "localhost").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("href=\"/profiles/generic\"") && body.contains(">1<"),
        "{body}"
    );
    let (status, _, body) = get(&st, "/profiles/generic", "localhost").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("dotenv file") && body.contains(&id[..12]),
        "{body}"
    );
    assert!(!body.contains(SCRIPT) && only_our_script(&body), "{body}");
    let (status, _, _) = get(&st, "/profiles/nobody-used-this", "localhost").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Metrics: the store's counts and this server's requests.
    let (status, headers, body) = get(&st, "/metrics", "localhost").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    for line in [
        "agentctl_sessions{status=\"created\"} 1",
        "agentctl_sessions{status=\"running\"} 0",
        "agentctl_launches_total 1",
        "agentctl_refusals_total 1",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "{line} missing from\n{body}"
        );
    }
    let answered = body
        .lines()
        .find_map(|l| l.strip_prefix("agentctl_http_request_duration_seconds_count "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap();
    assert!(answered >= 6, "{body}");
    assert!(
        body.contains("agentctl_http_requests_total{code=\"2xx\"}"),
        "{body}"
    );

    // Not found: a page and a JSON error, no database text.
    let (status, _, body) = get(&st, "/sessions/ffffffff", "localhost").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body.contains("no session") || body.contains("No session"),
        "{body}"
    );
    let (status, _, body) = get(&st, "/api/v1/sessions/ffffffff", "localhost").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].is_string());
    let (status, _, _) = get(&st, "/nope", "localhost").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Filters: a search that matches nothing lists nothing.
    let (_, _, body) = get(&st, "/?q=zzzz-no-such", "localhost").await;
    assert!(
        body.contains("No sessions match") && !body.contains(&id[..12]),
        "{body}"
    );
    let (_, _, body) = get(&st, "/?user=alice&status=created", "localhost").await;
    assert!(body.contains(&id[..12]), "{body}");

    // Stop: a cross-site form post is refused and changes nothing; a
    // same-origin one records the request with its actor.
    let stop = format!("/sessions/{id}/stop");
    for (header, value) in [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
        ("origin", "http://evil.example"),
    ] {
        let (status, _) = post(&st, &stop, &[(header, value)]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{header}: {value}");
    }
    let kinds = |evs: Vec<store::Event>| evs.into_iter().map(|e| e.kind).collect::<Vec<_>>();
    assert!(!kinds(st.store.events(&id).await.unwrap()).contains(&"stop_requested".to_string()));
    let (status, location) = post(&st, &stop, &[("sec-fetch-site", "same-origin")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        location.as_deref(),
        Some(format!("/sessions/{id}").as_str())
    );
    let (status, _) = post(
        &st,
        &format!("/api/v1/sessions/{id}/stop"),
        &[("origin", "http://localhost:7878")],
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let events = st.store.events(&id).await.unwrap();
    let asked: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "stop_requested")
        .collect();
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[0].actor.as_deref(), Some("dashboard (tester)"));
    // An ended session cannot be stopped again.
    st.store
        .record(
            &id,
            vec![NewEvent::new("stopped")],
            &store::SessionUpdate {
                status: Some(store::Status::Stopped),
                ended_at: Some(store::now_ms()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (status, _) = post(&st, &stop, &[("sec-fetch-site", "same-origin")]).await;
    assert_eq!(status, StatusCode::CONFLICT);

    // A store that fails shows a status and a message, not its error text.
    st.store.close().await;
    let (status, _, body) = get(&st, "/", "localhost").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(
        body.contains("the session store failed; see the server"),
        "{body}"
    );
    assert!(!body.to_lowercase().contains("pool"), "{body}");
}

/// Pages of 50 along the keyset: the link to older sessions leads to the
/// next 50, with nothing repeated or skipped.
#[tokio::test]
async fn the_sessions_page_pages_by_keyset() {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::connect(&format!("sqlite://{}", dir.path().join("s.db").display()))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..120u32 {
        let id = format!("{:032x}", 0xb000 + i);
        let mut s = session(&id, "true", "/w");
        // Pairs share a creation time.
        s.created_at = Some(store::now_ms() - 1_000_000 + i64::from(i / 2));
        store
            .create_session(&s, NewEvent::new("created"))
            .await
            .unwrap();
        ids.push(id);
    }
    let st = AppState::new(store, HostAllowList::loopback(), "t".into());
    let mut seen = Vec::new();
    let mut path = "/?all=1".to_string();
    for _ in 0..5 {
        let (status, _, body) = get(&st, &path, "localhost").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        seen.extend(
            body.match_indices("data-session=\"")
                .map(|(i, m)| body[i + m.len()..i + m.len() + 32].to_string()),
        );
        let Some(at) = body.find("\">Older sessions") else {
            break;
        };
        let href = &body[body[..at].rfind("href=\"").unwrap() + 6..at];
        path = href.replace("&#38;", "&").replace("&amp;", "&");
    }
    let mut want = ids.clone();
    want.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, want);
}

#[tokio::test]
async fn an_allowlist_sessions_rules_and_refused_connections_are_shown() {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::connect(&format!("sqlite://{}", dir.path().join("s.db").display()))
        .await
        .unwrap();
    let id = "a11a11a11a11a11a11a11a11a11a11a1".to_string();
    let mut s = session(&id, "true", "/w");
    let mut policy: serde_json::Value = serde_json::from_str(&s.policy).unwrap();
    policy["network"] = "allowlist".into();
    policy["network_allow"] = serde_json::json!(["api.anthropic.com", "github.com:22"]);
    s.policy = policy.to_string();
    s.policy_sha256 = store::chain::sha256_hex(s.policy.as_bytes());
    store
        .create_session(&s, NewEvent::new("created"))
        .await
        .unwrap();
    store
        .append_event(
            &id,
            NewEvent::new("egress_denied").data(serde_json::json!({
                "host": "evil.example", "port": 443, "via": "http",
                "reason": "evil.example:443 is not in the allowlist; add \"evil.example\""
            })),
        )
        .await
        .unwrap();
    let st = AppState::new(store, HostAllowList::loopback(), "t".into());
    let (status, _, body) = get(&st, &format!("/sessions/{id}"), "localhost").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("<code class=\"allow\">api.anthropic.com</code>"),
        "{body}"
    );
    assert!(
        body.contains("<code class=\"allow\">github.com:22</code>"),
        "{body}"
    );
    let refused = &body[body.find("Refused actions (1)").expect("one refusal")..];
    assert!(refused.contains("egress_denied") && refused.contains("evil.example"));
    let (_, _, metrics) = get(&st, "/metrics", "localhost").await;
    assert!(
        metrics.contains("agentctl_egress_refusals_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn pages_and_api_over_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    checks(&format!("sqlite://{}", dir.path().join("s.db").display())).await;
}

#[tokio::test]
async fn pages_and_api_over_postgres() {
    let server = match store::testing::server() {
        Ok(s) => s,
        Err(why) => return store::testing::skip("pages_and_api_over_postgres", &why),
    };
    let db = match store::testing::TestDatabase::create(server).await {
        Ok(db) => db,
        Err(why) => return store::testing::skip("pages_and_api_over_postgres", &why),
    };
    checks(&db.url).await;
}

/// The API's list pages by keyset too: following `next` lists every
/// session once, newest first.
#[tokio::test]
async fn the_api_list_pages_by_keyset() {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::connect(&format!("sqlite://{}", dir.path().join("s.db").display()))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..25u32 {
        let id = format!("{:032x}", 0xc000 + i);
        let mut s = session(&id, "true", "/w");
        s.created_at = Some(1_000_000 + i64::from(i / 3));
        store
            .create_session(&s, NewEvent::new("created"))
            .await
            .unwrap();
        ids.push(id);
    }
    let st = AppState::new(store, HostAllowList::loopback(), "t".into());
    let mut seen = Vec::new();
    let mut path = Some("/api/v1/sessions?limit=7".to_string());
    while let Some(p) = path.take() {
        let (status, _, body) = get(&st, &p, "localhost").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        for s in page["sessions"].as_array().unwrap() {
            seen.push(s["id"].as_str().unwrap().to_string());
        }
        path = page["next"].as_str().map(str::to_string);
        assert!(seen.len() <= 25 + 7, "no end");
    }
    ids.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, ids);
}

/// "Verify all chains" writes its progress as it goes, then names the one
/// chain an edit behind the store's back broke.
#[tokio::test]
async fn verifying_every_chain_shows_progress_and_the_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = SessionStore::connect(&url).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..120u32 {
        let id = format!("{:032x}", 0xd000 + i);
        store
            .create_session(&session(&id, "true", "/w"), NewEvent::new("created"))
            .await
            .unwrap();
        ids.push(id);
    }
    let victim = &ids[77];
    {
        use sqlx::Connection;
        let mut c = sqlx_sqlite::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("UPDATE session_events SET actor = 'someone else' WHERE session_id = $1")
            .bind(victim)
            .execute(&mut c)
            .await
            .unwrap();
    }
    let st = AppState::new(store, HostAllowList::loopback(), "t".into());
    // The sessions table's chain chip: broken for the victim only.
    let (_, _, page) = get(&st, "/?all=1", "localhost").await;
    let row = |id: &str| {
        let at = page.find(&format!("data-session=\"{id}\"")).unwrap();
        page[at..at + page[at..].find("</tr>").unwrap()].to_string()
    };
    assert!(
        row(victim).contains("<td class=\"chain bad\">✗</td>"),
        "{}",
        row(victim)
    );
    assert!(
        row(&ids[119]).contains("<td class=\"chain \">✓</td>"),
        "{}",
        row(&ids[119])
    );
    let (status, headers, body) = get(&st, "/audit/verify", "localhost").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    for line in [
        "checked 50 of 120: 49 intact, 1 broken",
        "checked 100 of 120",
        "checked 120 of 120: 119 intact, 1 broken",
    ] {
        assert!(body.contains(line), "{line:?} missing from {body}");
    }
    assert!(
        body.contains("120 sessions checked: 119 intact, 1 broken."),
        "{body}"
    );
    assert!(body.contains(&format!("<code>{victim}</code>")), "{body}");
    assert!(body.contains("#1:"), "{body}");
}

/// `/queue` over Postgres: the form queues a request for the user who
/// asked (the loopback user here), the page lists it with why it waits
/// and every worker, everything a request controls as text; over SQLite
/// it says the queue needs Postgres.
#[tokio::test]
async fn the_queue_page_and_its_form() {
    let dir = tempfile::tempdir().unwrap();
    let (st, _) = seeded(&format!("sqlite://{}", dir.path().join("s.db").display())).await;
    let (status, _, body) = get(&st, "/queue", "localhost").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("need a Postgres store"), "{body}");

    let server = match store::testing::server() {
        Ok(s) => s,
        Err(why) => return store::testing::skip("the_queue_page_and_its_form", &why),
    };
    let db = store::testing::TestDatabase::create(server).await.unwrap();
    let (st, _) = seeded(&db.url).await;
    let store = SessionStore::connect(&db.url).await.unwrap();
    store
        .register_worker(
            &store::queue::NewWorker {
                id: "a".repeat(32),
                name: format!("w{SCRIPT}"),
                host: "h".into(),
                backend: store::Backend::Native,
                labels: Default::default(),
                capacity: 3,
            },
            store::now_ms(),
        )
        .await
        .unwrap();
    let form = format!(
        "profile=generic&path=proj&command={}&labels=gpu%3D1",
        urlencode(&format!("sh\n-c\necho {SCRIPT}"))
    );
    let req = Request::post("/queue")
        .header("host", "localhost:7878")
        .header("sec-fetch-site", "same-origin")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .unwrap();
    let resp = app(st.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let queued = store
        .requests(None, &[store::queue::RequestState::Queued], 10)
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(
        queued[0].command,
        vec!["sh", "-c", &format!("echo {SCRIPT}")]
    );
    assert_eq!(queued[0].user, "local");
    let (status, _, body) = get(&st, "/queue", "localhost").await;
    assert_eq!(status, StatusCode::OK);
    assert!(only_our_script(&body), "{body}");
    assert!(body.contains("lacks gpu=1"), "{body}");
    assert!(body.contains("&#60;script&#62;alert(1)"), "{body}");
    assert!(!body.contains(SCRIPT), "{body}");
    assert!(body.contains("1 queued"), "{body}");
    // A form from another site is refused before it is read.
    let req = Request::post("/queue")
        .header("host", "localhost:7878")
        .header("sec-fetch-site", "cross-site")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("profile=generic&path=p&command=true"))
        .unwrap();
    let resp = app(st.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // The metrics carry the queue and the worker.
    let (_, _, metrics) = get(&st, "/metrics", "localhost").await;
    assert!(
        metrics.contains("agentctl_queue_requests{state=\"queued\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "agentctl_worker_capacity{worker=\"w<script>alert(1)</script>\",state=\"running\"} 3"
        ),
        "{metrics}"
    );
    store.close().await;
    db.finish().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
