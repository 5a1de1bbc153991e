//! The rules: from a routed request and its body to the canonical request
//! the daemon will execute, or a denial that names the rule and the field.
//!
//! Layers, bottom to top: `decision` (what a rule can answer), `daemon`
//! (the lookups the rules ask the daemon), `owner` (whose object an id
//! names), `filters` (list and event filters), `labels`, `paths` (host paths and
//! mounts), `create` (request bodies), `respond` and `cleanup`; this module
//! dispatches a request to them.

mod cleanup;
mod create;
mod daemon;
mod decision;
mod filters;
mod labels;
mod owner;
mod paths;
mod respond;

pub use cleanup::cleanup_session;
pub use daemon::Daemon;
pub use decision::{Decision, Denial, Forward, ResponseFilter};
pub use filters::EventFilter;
pub use paths::{under_proc, workspace_guards};
pub use respond::filter_response;

use crate::config::Config;
use crate::http1::RequestHead;
use crate::role::Scope;
use crate::route::{BodyKind, Endpoint, Target};

use create::{json_body, names_agentctl_image};
use decision::{Ctx, Why, deny};
use filters::{canonical_filters, own_filters};
use owner::own_object;
use paths::{check_bind_roots_at_start, check_binds_at_start};

/// Decides one request.
pub async fn check(
    cfg: &Config,
    up: &mut impl Daemon,
    head: &RequestHead,
    target: Target,
    body: Vec<u8>,
) -> Decision {
    match decide(cfg, up, head, target, body).await {
        Ok(f) => Decision::Forward(f),
        Err(Why::Deny(d)) => Decision::Deny(d),
        Err(Why::Fail(e)) => Decision::Fail(e),
    }
}

async fn decide(
    cfg: &Config,
    up: &mut impl Daemon,
    head: &RequestHead,
    target: Target,
    body: Vec<u8>,
) -> Result<Forward, Why> {
    let ep = target.endpoint;
    let cx = Ctx {
        cfg,
        role: &cfg.role.name,
        session: match cfg.role.scope {
            Scope::Session => cfg.session.as_ref(),
            Scope::Global => None,
        },
    };
    // Only the parameters the route takes go through, each once, re-encoded.
    let mut query: Vec<(String, String)> = target
        .query
        .into_iter()
        .filter(|(k, _)| ep.params().contains(&k.as_str()))
        .collect();

    let mut object = target.object.clone();
    if let Some(s) = cx.session
        && let Some(name) = &target.object
    {
        object = Some(own_object(&cx, s, up, ep, name).await?);
    }

    if let Some(s) = cx.session
        && matches!(ep, Endpoint::ContainerStart | Endpoint::ContainerRestart)
        && let Some(id) = object.as_deref()
    {
        check_binds_at_start(&cx, s, up, id).await?;
    }
    if cx.session.is_none()
        && !cfg.bind_roots.is_empty()
        && matches!(ep, Endpoint::ContainerStart | Endpoint::ContainerRestart)
        && let Some(id) = object.as_deref()
    {
        check_bind_roots_at_start(&cx, up, id).await?;
    }

    if ep == Endpoint::ImagesPull
        && let Some((_, from)) = query.iter().find(|(k, _)| k == "fromImage")
        && names_agentctl_image(from)
    {
        return deny(format!(
            "images.pull of {from} is not allowed for role {}: agentctl/ images are built on the host by agentctl, never pulled (one pulled over them would be trusted by name)",
            cx.role
        ));
    }

    let mut filter = ResponseFilter::None;
    if let Some(s) = cx.session {
        match ep {
            Endpoint::ContainersList => filter = ResponseFilter::ContainersList,
            Endpoint::NetworksList => filter = ResponseFilter::NetworksList,
            Endpoint::VolumesList => filter = ResponseFilter::VolumesList,
            Endpoint::Events => filter = ResponseFilter::Events,
            _ => {}
        }
        if filter != ResponseFilter::None
            || matches!(
                ep,
                Endpoint::ContainersPrune | Endpoint::NetworksPrune | Endpoint::VolumesPrune
            )
        {
            own_filters(s, &mut query)?;
        }
        if ep == Endpoint::ImagesPull && s.children_offline() {
            return deny(format!(
                "images.pull is not allowed for role {}: the session has no network, and a pull reaches out from the host",
                cx.role
            ));
        }
    } else if let Some((_, f)) = query.iter_mut().find(|(k, _)| k == "filters") {
        *f = canonical_filters(f, None)?;
    }

    let body = match ep.body() {
        BodyKind::Empty => None,
        BodyKind::Opaque => Some(body),
        BodyKind::OptionalJson if body.is_empty() => None,
        BodyKind::Json | BodyKind::OptionalJson => {
            Some(json_body(&cx, up, ep, object.as_deref(), &body).await?)
        }
    };

    let registry_auth = if matches!(ep, Endpoint::ImagesPull | Endpoint::ImagePush) {
        head.header("x-registry-auth").map(str::to_string)
    } else {
        None
    };
    Ok(Forward {
        method: head.method.clone(),
        segments: crate::route::path_of(ep, object.as_deref()),
        query,
        body,
        registry_auth,
        upgrade: ep.hijacks() && head.wants_upgrade(),
        filter,
    })
}

/// The rules against a daemon that is an answer table: what a session may
/// touch is decided by what the daemon says about each object, and here
/// the test says it.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::config::Config;
    use crate::role::Role;
    use crate::session::NetworkMode;
    use crate::session::{ChildLimits, SessionScope};
    use crate::upstream::{Addr, UpstreamError};

    /// Answers by path (the API version and query left out); 404 for
    /// anything it does not know. Remembers what it was asked.
    #[derive(Default)]
    struct Answers {
        table: HashMap<String, (u16, serde_json::Value)>,
        asked: Vec<String>,
    }

    impl Answers {
        fn with(mut self, path: &str, status: u16, v: serde_json::Value) -> Answers {
            self.table.insert(path.to_string(), (status, v));
            self
        }
    }

    impl Daemon for Answers {
        async fn call(
            &mut self,
            method: &str,
            target: &str,
            _body: Option<Vec<u8>>,
        ) -> Result<(u16, Bytes), UpstreamError> {
            let path = target.split('?').next().unwrap_or(target);
            let path = path.splitn(3, '/').nth(2).map(|p| format!("/{p}"));
            let path = path.unwrap_or_default();
            self.asked.push(format!("{method} {path}"));
            Ok(match self.table.get(&path) {
                Some((status, v)) => (*status, Bytes::from(v.to_string())),
                None => (404, Bytes::from_static(b"{\"message\":\"no such object\"}")),
            })
        }
    }

    const SESSION: &str = "0123456789abcdef0123456789abcdef";

    fn ours() -> serde_json::Value {
        json!({"io.agentctl.session": SESSION, "io.agentctl.child": "true"})
    }

    fn theirs() -> serde_json::Value {
        json!({"io.agentctl.session": "ffffffffffffffffffffffffffffffff", "io.agentctl.child": "true"})
    }

    fn config(ws: &std::path::Path, containers: u32) -> Config {
        let scope = SessionScope::new(
            SESSION.into(),
            ws,
            Vec::new(),
            ChildLimits {
                memory: Some(1 << 30),
                nano_cpus: Some(1_000_000_000),
                pids: Some(100),
                containers: Some(containers),
            },
            NetworkMode::None,
        )
        .unwrap();
        Config {
            role: Role::builtin("session").unwrap(),
            upstream: Addr::Unix("/nonexistent/docker.sock".into()),
            api: (1, 41),
            session: Some(scope),
            max_body: 1 << 20,
            audit: None,
            creates: Default::default(),
            bind_roots: Vec::new(),
            metrics: Default::default(),
        }
    }

    fn launcher_with_roots(roots: Vec<std::path::PathBuf>) -> Config {
        Config {
            role: Role::builtin("launcher").unwrap(),
            upstream: Addr::Unix("/nonexistent/docker.sock".into()),
            api: (1, 41),
            session: None,
            max_body: 1 << 20,
            audit: None,
            creates: Default::default(),
            bind_roots: roots,
            metrics: Default::default(),
        }
    }

    fn ask(cfg: &Config, daemon: &mut Answers, method: &str, target: &str, body: &str) -> Decision {
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let (head, _) = crate::http1::parse_head(head.as_bytes()).unwrap();
        let parsed = crate::route::parse(method, target).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(check(cfg, daemon, &head, parsed, body.as_bytes().to_vec()))
    }

    fn denied(d: Decision) -> Denial {
        match d {
            Decision::Deny(d) => d,
            Decision::Forward(f) => panic!("forwarded {} {:?}", f.method, f.segments),
            Decision::Fail(e) => panic!("failed: {e}"),
        }
    }

    fn forwarded(d: Decision) -> Forward {
        match d {
            Decision::Forward(f) => f,
            Decision::Deny(d) => panic!("denied {}: {}", d.status, d.reason),
            Decision::Fail(e) => panic!("failed: {e}"),
        }
    }

    #[test]
    fn a_session_reaches_its_own_container_by_full_id_only() {
        let ws = tempfile::tempdir().unwrap();
        let cfg = config(ws.path(), 20);
        let full = "c".repeat(64);
        let mut d = Answers::default().with(
            "/containers/cc/json",
            200,
            json!({"Id": full, "Config": {"Labels": ours()}}),
        );
        let f = forwarded(ask(&cfg, &mut d, "POST", "/v1.41/containers/cc/stop", ""));
        assert!(
            f.segments.contains(&full),
            "the daemon is told the id that was checked: {:?}",
            f.segments
        );
        assert_eq!(d.asked, ["GET /containers/cc/json"]);
    }

    #[test]
    fn another_sessions_container_network_and_volume_are_refused() {
        let ws = tempfile::tempdir().unwrap();
        let cfg = config(ws.path(), 20);
        let mut d = Answers::default()
            .with(
                "/containers/x/json",
                200,
                json!({"Id": "x", "Config": {"Labels": theirs()}}),
            )
            .with("/networks/n", 200, json!({"Id": "n", "Labels": theirs()}))
            .with("/volumes/v", 200, json!({"Name": "v", "Labels": theirs()}));
        for (method, target) in [
            ("GET", "/v1.41/containers/x/json"),
            ("DELETE", "/v1.41/containers/x"),
            ("DELETE", "/v1.41/networks/n"),
            ("DELETE", "/v1.41/volumes/v"),
        ] {
            let why = denied(ask(&cfg, &mut d, method, target, ""));
            assert_eq!(why.status, 403, "{method} {target}: {}", why.reason);
            assert!(
                why.reason.contains("is not one of session"),
                "{}",
                why.reason
            );
        }
        // An object without agentctl's labels (the host's own) likewise.
        let mut d = Answers::default().with("/volumes/v", 200, json!({"Name": "v", "Labels": {}}));
        assert_eq!(
            denied(ask(&cfg, &mut d, "DELETE", "/v1.41/volumes/v", "")).status,
            403
        );
    }

    #[test]
    fn an_object_the_daemon_does_not_know_is_not_found() {
        let ws = tempfile::tempdir().unwrap();
        let cfg = config(ws.path(), 20);
        let why = denied(ask(
            &cfg,
            &mut Answers::default(),
            "POST",
            "/v1.41/containers/nope/start",
            "",
        ));
        assert_eq!(why.status, 404, "{}", why.reason);
    }

    #[test]
    fn a_create_past_the_sessions_container_limit_is_refused() {
        let ws = tempfile::tempdir().unwrap();
        let cfg = config(ws.path(), 2);
        let two = json!([{"Id": "a", "Labels": ours()}, {"Id": "b", "Labels": ours()}]);
        let mut d = Answers::default().with("/containers/json", 200, two).with(
            "/images/busybox/json",
            200,
            json!({"Id": "sha256:1", "Config": {"Labels": {}}}),
        );
        let why = denied(ask(
            &cfg,
            &mut d,
            "POST",
            "/v1.41/containers/create",
            r#"{"Image":"busybox"}"#,
        ));
        assert!(
            why.reason.contains("already holds 2 containers")
                && why.reason.contains("limits.containers: 2"),
            "{}",
            why.reason
        );
        // One under the limit goes through, labelled as the session's.
        let one = json!([{"Id": "a", "Labels": ours()}]);
        let mut d = Answers::default().with("/containers/json", 200, one).with(
            "/images/busybox/json",
            200,
            json!({"Id": "sha256:1", "Config": {"Labels": {}}}),
        );
        let f = forwarded(ask(
            &cfg,
            &mut d,
            "POST",
            "/v1.41/containers/create",
            r#"{"Image":"busybox"}"#,
        ));
        let body: serde_json::Value = serde_json::from_slice(f.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["Labels"]["io.agentctl.session"], SESSION);
    }

    #[test]
    fn bind_roots_hold_binds_at_create_and_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let root = base.join("root");
        std::fs::create_dir_all(root.join("ws")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        std::os::unix::fs::symlink("ws", root.join("alias")).unwrap();
        let cfg = launcher_with_roots(vec![root.clone()]);
        let image = || {
            Answers::default().with(
                "/images/busybox/json",
                200,
                json!({"Id": "sha256:1", "Config": {"Labels": {}}}),
            )
        };
        let create = |host_config: serde_json::Value| {
            json!({"Image": "busybox", "HostConfig": host_config}).to_string()
        };
        let r = root.display();
        for (host_config, field) in [
            (
                json!({"Binds": ["/etc:/x"]}),
                "HostConfig.Binds \"/etc:/x\"",
            ),
            (
                json!({"Binds": [format!("{r}/link:/x")]}),
                "HostConfig.Binds",
            ),
            (
                json!({"Mounts": [{"Type": "bind", "Source": base.display().to_string(), "Target": "/x"}]}),
                "HostConfig.Mounts[0]",
            ),
        ] {
            let why = denied(ask(
                &cfg,
                &mut image(),
                "POST",
                "/v1.41/containers/create",
                &create(host_config.clone()),
            ));
            assert!(
                why.reason.starts_with(field)
                    && why.reason.contains(&format!(
                        "is outside the proxy's bind roots ({r}) (role launcher)"
                    )),
                "{host_config}: {}",
                why.reason
            );
        }
        // Under the root (by its real path) and /dev/null go through.
        let f = forwarded(ask(
            &cfg,
            &mut image(),
            "POST",
            "/v1.41/containers/create",
            &create(json!({"Binds": [format!("{r}/alias:/w"), "/dev/null:/w/.env"]})),
        ));
        let body: serde_json::Value = serde_json::from_slice(f.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body["HostConfig"]["Binds"],
            json!([format!("{r}/ws:/w"), "/dev/null:/w/.env"])
        );

        // At start, what the daemon keeps is resolved again.
        let kept = |src: String| {
            Answers::default().with(
                "/containers/c/json",
                200,
                json!({"Id": "c", "HostConfig": {"Binds": [format!("{src}:/w")]}, "Mounts": []}),
            )
        };
        forwarded(ask(
            &cfg,
            &mut kept(format!("{r}/ws")),
            "POST",
            "/v1.41/containers/c/start",
            "",
        ));
        let why = denied(ask(
            &cfg,
            &mut kept(format!("{r}/link")),
            "POST",
            "/v1.41/containers/c/start",
            "",
        ));
        assert!(
            why.reason
                .starts_with("container c cannot start (role launcher)")
                && why
                    .reason
                    .contains("(resolved to \"/etc\") is outside the proxy's bind roots"),
            "{}",
            why.reason
        );
        // Without roots the launcher's start looks nothing up.
        let mut d = kept("/etc".into());
        forwarded(ask(
            &launcher_with_roots(Vec::new()),
            &mut d,
            "POST",
            "/v1.41/containers/c/start",
            "",
        ));
        assert!(d.asked.is_empty(), "{:?}", d.asked);

        // A container lending its volumes lends its binds.
        let mut d = image().with(
            "/containers/lender/json",
            200,
            json!({"Id": "lender", "Mounts": [{"Type": "bind", "Source": "/etc", "Destination": "/e"}]}),
        );
        let why = denied(ask(
            &cfg,
            &mut d,
            "POST",
            "/v1.41/containers/create",
            &create(json!({"VolumesFrom": ["lender:ro"]})),
        ));
        assert!(
            why.reason
                .starts_with("HostConfig.VolumesFrom \"lender:ro\"")
                && why
                    .reason
                    .contains("\"/etc\" is outside the proxy's bind roots"),
            "{}",
            why.reason
        );
    }
}
