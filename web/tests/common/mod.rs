//! What the web tests share: a session whose recorded plan has every part
//! a page shows, and a store of each kind.
#![allow(dead_code)]

use store::{Backend, NewSession};

/// A session of `alice` running `sh -c COMMAND` in `workspace`.
pub fn session(id: &str, command: &str, workspace: &str) -> NewSession {
    let policy = serde_json::json!({
        "network": "none",
        "mounts": [
            {"destination": workspace, "source": {"type": "bind", "path": workspace}, "writable": true, "purpose": "workspace"},
            {"destination": "/usr", "source": {"type": "bind", "path": "/usr"}, "writable": false, "purpose": "rootfs"}
        ],
        "masked": [{"path": format!("{workspace}/.env"), "kind": "file", "reason": {"kind": "name_rule", "rule": "dotenv file"}}],
        "env": [{"name": "HOME", "source": {"kind": "base"}}],
        "limits": {"pids": 4096}
    })
    .to_string();
    NewSession {
        id: id.into(),
        profile: "generic".into(),
        backend: Backend::Native,
        image: None,
        workspace: workspace.into(),
        command: vec!["sh".into(), "-c".into(), command.into()],
        user: "alice".into(),
        uid: 1000,
        host: "h".into(),
        created_at: None,
        detached: false,
        policy_sha256: store::chain::sha256_hex(policy.as_bytes()),
        policy,
    }
}

/// A fresh store: SQLite in `dir`, or a database of its own on the test
/// Postgres server (`None` after a loud skip, a failure under CI).
pub async fn postgres_url(test: &str) -> Option<store::testing::TestDatabase> {
    let server = match store::testing::server() {
        Ok(s) => s,
        Err(why) => {
            store::testing::skip(test, &why);
            return None;
        }
    };
    match store::testing::TestDatabase::create(server).await {
        Ok(db) => Some(db),
        Err(why) => {
            store::testing::skip(test, &why);
            None
        }
    }
}
