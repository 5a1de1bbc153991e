//! Users, roles and tokens through the handlers (`app().oneshot(...)`),
//! over real SQLite and real Postgres: a store with users requires a
//! login; each role sees and does only what it may, and the pages hide
//! the rest; a cross-site post is refused with a valid cookie; a token
//! revoked or a login ended opens nothing; `/login` is rate-limited.

mod common;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use store::{NewEvent, Role, SessionStore, SessionUpdate, Status};
use tower::ServiceExt;
use web::auth::AuthConfig;
use web::{AppState, HostAllowList, app};

const PASSWORD: &str = "correct horse battery";

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get("location")
            .map(|l| l.to_str().unwrap())
            .unwrap_or_default()
    }
}

async fn send(
    st: &AppState,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost:7878");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app(st.clone())
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Logs `user` in; returns the `Cookie` header to send.
async fn login(st: &AppState, user: &str) -> String {
    let a = send(
        st,
        "POST",
        "/login",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("sec-fetch-site", "same-origin"),
        ],
        &format!("user={user}&password=correct+horse+battery&next=%2Faudit"),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(a.location(), "/audit");
    let set = a.headers["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    set.split(';').next().unwrap().to_string()
}

async fn session_of(store: &SessionStore, n: u32, user: &str) -> String {
    let id = format!("{:04x}{}", 0xa000 + n, "c".repeat(28));
    let mut s = common::session(&id, "sleep 1000", "/w");
    s.user = user.into();
    store
        .create_session(&s, NewEvent::new("created"))
        .await
        .unwrap();
    store
        .update(
            &id,
            &SessionUpdate {
                status: Some(Status::Running),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    id
}

async fn checks(url: &str) {
    let store = SessionStore::connect(url).await.unwrap();
    let hash = web::auth::hash_password(PASSWORD).unwrap();
    let now = store::now_ms();
    for (name, role) in [
        ("alice", Role::Admin),
        ("bob", Role::Operator),
        ("carol", Role::Viewer),
    ] {
        store.add_user(name, role, &hash, now).await.unwrap();
    }
    let of_bob = session_of(&store, 1, "bob").await;
    let of_carol = session_of(&store, 2, "carol").await;
    let of_dave = session_of(&store, 3, "dave").await;
    let st = AppState::with_auth(
        store.clone(),
        HostAllowList::loopback(),
        AuthConfig::new("nobody".into()),
    );

    // Nobody logged in: pages send to /login, the API answers 401; the
    // login page, the assets and the health check stay open.
    let a = send(&st, "GET", "/sessions/x", &[], "").await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.location(), "/login?next=%2Fsessions%2Fx");
    for path in [
        "/api/v1/sessions",
        "/metrics",
        &format!("/api/v1/sessions/{of_bob}"),
    ] {
        let a = send(&st, "GET", path, &[], "").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(a.headers["www-authenticate"], "Bearer");
        assert!(!a.body.contains(&of_bob), "{path}: {}", a.body);
    }
    let a = send(
        &st,
        "POST",
        &format!("/api/v1/sessions/{of_bob}/stop"),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    for path in ["/login", "/healthz", "/static/app.css"] {
        assert_eq!(
            send(&st, "GET", path, &[], "").await.status,
            StatusCode::OK,
            "{path}"
        );
    }

    // A wrong password and an unknown user get the same answer.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let wrong = send(
        &st,
        "POST",
        "/login",
        &form,
        "user=bob&password=nope-nope-nope",
    )
    .await;
    let nobody = send(
        &st,
        "POST",
        "/login",
        &form,
        "user=zed&password=nope-nope-nope",
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        (wrong.status, wrong.body.clone()),
        (nobody.status, nobody.body)
    );
    assert!(wrong.headers.get("set-cookie").is_none());
    // `next` never leads off this server.
    let a = send(
        &st,
        "POST",
        "/login",
        &form,
        "user=bob&password=correct+horse+battery&next=%2F%2Fevil.example",
    )
    .await;
    assert_eq!(a.location(), "/");

    let alice = login(&st, "alice").await;
    let bob = login(&st, "bob").await;
    let carol = login(&st, "carol").await;
    let get = |cookie: String, path: String| {
        let st = st.clone();
        async move {
            let hs = [("cookie", cookie.as_str())];
            send(&st, "GET", &path, &hs, "").await
        }
    };

    // Viewers and operators see their own sessions, admins all.
    let a = get(carol.clone(), "/?all=1".into()).await;
    assert!(a.body.contains(&of_carol[..12]), "{}", a.body);
    assert!(
        !a.body.contains(&of_bob[..12]) && !a.body.contains(&of_dave[..12]),
        "{}",
        a.body
    );
    // A user filter for someone else changes nothing for a viewer.
    let a = get(carol.clone(), "/?all=1&user=bob".into()).await;
    assert!(!a.body.contains(&of_bob[..12]), "{}", a.body);
    let a = get(alice.clone(), "/?all=1".into()).await;
    for id in [&of_bob, &of_carol, &of_dave] {
        assert!(a.body.contains(&id[..12]), "{}", a.body);
    }
    let a = get(carol.clone(), format!("/sessions/{of_bob}")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = get(carol.clone(), format!("/api/v1/sessions/{of_bob}/events")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = get(carol.clone(), "/api/v1/sessions".into()).await;
    let list: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["sessions"][0]["id"], of_carol.as_str());
    let a = get(carol.clone(), "/audit".into()).await;
    assert!(
        a.body.contains(&of_carol[..12]) && !a.body.contains(&of_bob[..12]),
        "{}",
        a.body
    );
    let a = get(carol.clone(), "/profiles".into()).await;
    assert!(
        a.body.contains(">1<"),
        "only carol's session counts: {}",
        a.body
    );

    // The pages hide what a role cannot do.
    let a = get(carol.clone(), format!("/sessions/{of_carol}")).await;
    assert!(
        !a.body.contains("/stop\""),
        "a viewer sees no stop button: {}",
        a.body
    );
    assert!(a.body.contains("carol · viewer") && !a.body.contains("href=\"/users\""));
    let a = get(bob.clone(), format!("/sessions/{of_bob}")).await;
    assert!(
        a.body
            .contains(&format!("action=\"/sessions/{of_bob}/stop\"")),
        "{}",
        a.body
    );
    let a = get(alice.clone(), "/".into()).await;
    assert!(a.body.contains("href=\"/users\""), "{}", a.body);

    // ... and the server refuses it anyway.
    let same = "same-origin";
    let post = |cookie: String, path: String, site: &'static str| {
        let st = st.clone();
        async move {
            let hs = [("cookie", cookie.as_str()), ("sec-fetch-site", site)];
            send(&st, "POST", &path, &hs, "").await
        }
    };
    let a = post(carol.clone(), format!("/sessions/{of_carol}/stop"), same).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert!(a.body.contains("needs the operator role"), "{}", a.body);
    let a = post(bob.clone(), format!("/sessions/{of_dave}/stop"), same).await;
    assert_eq!(
        a.status,
        StatusCode::NOT_FOUND,
        "another's session does not exist for bob"
    );
    let a = get(bob.clone(), "/users".into()).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = post(bob.clone(), format!("/sessions/{of_bob}/delete"), same).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);

    // A cross-site post is refused even with a valid login.
    for site in ["cross-site", "same-site"] {
        let a = post(bob.clone(), format!("/sessions/{of_bob}/stop"), site).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{site}");
    }
    assert!(
        store
            .events(&of_bob)
            .await
            .unwrap()
            .iter()
            .all(|e| e.kind != "stop_requested")
    );
    let a = post(bob.clone(), format!("/sessions/{of_bob}/stop"), same).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let a = post(alice.clone(), format!("/sessions/{of_dave}/stop"), same).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let actor = |id: String| {
        let store = store.clone();
        async move {
            store
                .events(&id)
                .await
                .unwrap()
                .into_iter()
                .find(|e| e.kind == "stop_requested")
                .and_then(|e| e.actor)
        }
    };
    assert_eq!(
        actor(of_bob.clone()).await.as_deref(),
        Some("bob (dashboard)")
    );
    assert_eq!(
        actor(of_dave.clone()).await.as_deref(),
        Some("alice (dashboard)")
    );

    // Tokens: the API with `Authorization: Bearer`, as the token's user.
    let t = web::auth::new_token().unwrap();
    store
        .add_token(
            &t.id,
            "bob",
            "ci",
            store::Scope::Admin,
            &web::auth::sha256_hex(&t.token),
            now,
        )
        .await
        .unwrap();
    let bearer = format!("Bearer {}", t.token);
    let a = send(
        &st,
        "GET",
        "/api/v1/sessions",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let list: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1, "{list}");
    let a = send(
        &st,
        "GET",
        "/api/v1/sessions",
        &[("authorization", "Bearer agt_0_nope")],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // A wrong token is refused even beside a good cookie.
    let a = send(
        &st,
        "GET",
        "/api/v1/sessions",
        &[("authorization", "Bearer agt_0_nope"), ("cookie", &alice)],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    store.revoke_token(&t.id, now).await.unwrap();
    let a = send(
        &st,
        "GET",
        "/api/v1/sessions",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    // Admins delete ended sessions, never live ones.
    let a = post(alice.clone(), format!("/sessions/{of_carol}/delete"), same).await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    store
        .record(
            &of_carol,
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
    let a = get(alice.clone(), format!("/sessions/{of_carol}")).await;
    assert!(a.body.contains("/delete\""), "{}", a.body);
    let a = post(alice.clone(), format!("/sessions/{of_carol}/delete"), same).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert!(store.get(&of_carol).await.is_err());

    // Every account action is on the trail, with its actor.
    let a = get(alice.clone(), "/users".into()).await;
    assert_eq!(a.status, StatusCode::OK);
    for kind in ["login_failed", "login", "session_deleted"] {
        assert!(a.body.contains(&format!(">{kind}<")), "{kind}: {}", a.body);
    }
    assert!(!a.body.contains(PASSWORD) && !a.body.contains("nope-nope"));

    // A password change ends the user's logins; so does logging out.
    store
        .set_password("carol", &hash, store::now_ms())
        .await
        .unwrap();
    assert_eq!(
        get(carol.clone(), "/".into()).await.status,
        StatusCode::SEE_OTHER
    );
    let a = post(bob.clone(), "/logout".into(), same).await;
    assert_eq!(a.location(), "/login");
    assert!(
        a.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(
        get(bob.clone(), "/".into()).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(get(alice.clone(), "/".into()).await.status, StatusCode::OK);

    // Removing every user later does not reopen the server.
    for u in ["alice", "bob", "carol"] {
        store.remove_user(u).await.unwrap();
    }
    let a = send(&st, "GET", "/api/v1/sessions", &[], "").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn roles_logins_and_tokens_over_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    checks(&format!("sqlite://{}", dir.path().join("s.db").display())).await;
}

#[tokio::test]
async fn roles_logins_and_tokens_over_postgres() {
    if let Some(db) = common::postgres_url("roles_logins_and_tokens_over_postgres").await {
        checks(&db.url).await;
    }
}

/// At most ten attempts a minute from one address; the eleventh gets 429
/// with Retry-After, even with the right password.
#[tokio::test]
async fn logins_are_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::connect(&format!("sqlite://{}", dir.path().join("s.db").display()))
        .await
        .unwrap();
    let hash = web::auth::hash_password(PASSWORD).unwrap();
    store.add_user("bob", Role::Viewer, &hash, 0).await.unwrap();
    let st = AppState::with_auth(
        store,
        HostAllowList::loopback(),
        AuthConfig::new("x".into()),
    );
    let form = [("content-type", "application/x-www-form-urlencoded")];
    for _ in 0..10 {
        let a = send(
            &st,
            "POST",
            "/login",
            &form,
            "user=bob&password=wrong-wrong-wrong",
        )
        .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    }
    let a = send(
        &st,
        "POST",
        "/login",
        &form,
        "user=bob&password=correct+horse+battery",
    )
    .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    assert!(a.headers.get("set-cookie").is_none());
    let wait: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
}

/// Behind TLS the cookie is Secure and `__Host-`-prefixed.
#[tokio::test]
async fn cookies_are_secure_behind_tls() {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::connect(&format!("sqlite://{}", dir.path().join("s.db").display()))
        .await
        .unwrap();
    let hash = web::auth::hash_password(PASSWORD).unwrap();
    store.add_user("bob", Role::Viewer, &hash, 0).await.unwrap();
    let mut auth = AuthConfig::new("x".into());
    auth.secure_cookies = true;
    let st = AppState::with_auth(store, HostAllowList::loopback(), auth);
    let a = send(
        &st,
        "POST",
        "/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        "user=bob&password=correct+horse+battery",
    )
    .await;
    let set = a.headers["set-cookie"].to_str().unwrap();
    assert!(
        set.starts_with("__Host-agentctl_login=") && set.contains("; Secure"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap();
    let a = send(&st, "GET", "/", &[("cookie", cookie)], "").await;
    assert_eq!(a.status, StatusCode::OK);
    // The plain name is not read when cookies are secure.
    let plain = cookie.replacen("__Host-", "", 1);
    let a = send(&st, "GET", "/", &[("cookie", &plain)], "").await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
}
