//! Property: whatever a session's command, workspace or audit data holds,
//! the pages show it as text: askama's escaped form is there, no markup of
//! it is, and the one script a page loads is the dashboard's own.

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use proptest::prelude::*;
use store::{Backend, NewEvent, NewSession, SessionStore};
use tower::ServiceExt;
use web::{AppState, HostAllowList, app};

/// What askama writes for text in an HTML template.
fn escaped(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        match c {
            '&' => o.push_str("&#38;"),
            '<' => o.push_str("&#60;"),
            '>' => o.push_str("&#62;"),
            '"' => o.push_str("&#34;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

async fn pages_of(command: &str, workspace: &str, data: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::connect(&format!("sqlite://{}", dir.path().join("s.db").display()))
        .await
        .unwrap();
    let id = "0123456789abcdef0123456789abcdef";
    let policy = serde_json::json!({"network": "none", "mounts": [
        {"destination": workspace, "source": {"type": "bind", "path": workspace}, "writable": true, "purpose": "workspace"}
    ]})
    .to_string();
    store
        .create_session(
            &NewSession {
                id: id.into(),
                profile: "generic".into(),
                backend: Backend::Native,
                image: None,
                workspace: workspace.into(),
                command: vec![command.into()],
                user: "u".into(),
                uid: 1,
                host: "h".into(),
                created_at: None,
                detached: false,
                policy_sha256: store::chain::sha256_hex(policy.as_bytes()),
                policy,
            },
            NewEvent::new("created").data(serde_json::json!({ "note": data })),
        )
        .await
        .unwrap();
    let st = AppState::new(store, HostAllowList::loopback(), "t".into());
    let mut out = Vec::new();
    for path in [
        "/",
        &format!("/sessions/{id}"),
        "/audit",
        "/profiles/generic",
    ] {
        let req = Request::get(path)
            .header("host", "localhost")
            .body(Body::empty())
            .unwrap();
        let resp = app(st.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        out.push(String::from_utf8(body.to_vec()).unwrap());
    }
    out
}

fn hostile() -> impl Strategy<Value = String> {
    // Markup, quotes, entities, control and non-ASCII characters.
    proptest::string::string_regex(
        r#"([<>"'&/=a-z ]|<script>|</td>|&#60;|\x1b\[31m|é|\u{202e}){0,24}"#,
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn what_a_session_holds_is_shown_as_text(
        command in hostile(),
        workspace in hostile(),
        data in hostile(),
    ) {
        let workspace = format!("/w/{workspace}");
        let pages = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(pages_of(&command, &workspace, &data));
        for body in &pages {
            prop_assert_eq!(body.matches("<script").count(), 1);
            prop_assert!(body.contains(r#"<script src="/static/live.js" defer></script>"#));
        }
        // Each page that shows it shows the escaped form.
        prop_assert!(pages[0].contains(&escaped(&command)), "{}", pages[0]);
        prop_assert!(pages[0].contains(&escaped(&workspace)));
        prop_assert!(pages[1].contains(&escaped(&command)));
        prop_assert!(pages[1].contains(&escaped(&workspace)));
        // Audit data is JSON text, escaped as a whole.
        let json = serde_json::json!({ "note": data }).to_string();
        prop_assert!(pages[2].contains(&escaped(&json)), "{}", pages[2]);
    }
}
