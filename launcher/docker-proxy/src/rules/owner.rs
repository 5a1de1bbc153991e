//! Ownership lookups: whose container, network or volume an id names,
//! asked of the daemon through [`Daemon`](super::daemon::Daemon).

use serde_json::Value;

use crate::route::Endpoint;
use crate::session::SessionScope;
use crate::upstream::UpstreamError;

use super::daemon::Daemon;
use super::decision::*;

/// Resolves the object a path names to its full id, the way the daemon
/// would (names and unique prefixes included), and refuses it unless it is
/// the session's. The canonical request names the full id, so the daemon
/// acts on exactly the object that was checked.
pub(super) async fn own_object(
    cx: &Ctx<'_>,
    s: &SessionScope,
    up: &mut impl Daemon,
    ep: Endpoint,
    name: &str,
) -> Result<String, Why> {
    use Endpoint::*;
    match ep {
        ImageInspect | ImageHistory | ImagePush | ImageTag | ImageRemove | ImagesExport
        | DistributionInspect => Ok(name.to_string()),
        ExecStart | ExecResize | ExecInspect => {
            let exec = lookup(cx, up, &["exec", name, "json"]).await?;
            let Some(exec) = exec else {
                return not_found("exec instance", name);
            };
            let container = exec
                .get("ContainerID")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            own_container(cx, s, up, &container, "exec instance", name).await?;
            Ok(exec
                .get("ID")
                .and_then(Value::as_str)
                .unwrap_or(name)
                .to_string())
        }
        NetworkInspect | NetworkRemove | NetworkConnect | NetworkDisconnect => {
            own_network(cx, s, up, name).await
        }
        VolumeInspect | VolumeRemove => own_volume(cx, s, up, name).await,
        _ => own_container(cx, s, up, name, "container", name).await,
    }
}

pub(super) async fn lookup(
    cx: &Ctx<'_>,
    up: &mut impl Daemon,
    segs: &[&str],
) -> Result<Option<Value>, Why> {
    // Names from request bodies: an empty one, or one that would be read
    // as other path segments, names nothing (image names keep their `/`).
    if segs
        .iter()
        .flat_map(|s| s.split('/'))
        .any(|p| matches!(p, "" | "." | ".."))
    {
        return Ok(None);
    }
    let target = crate::route::build_target(&cx.cfg.api_string(), segs, &[]);
    let (status, body) = up.call("GET", &target, None).await?;
    match status {
        200 => serde_json::from_slice(&body).map(Some).map_err(|e| {
            Why::Fail(UpstreamError::Unexpected {
                what: target,
                why: e.to_string(),
            })
        }),
        404 => Ok(None),
        status => Err(Why::Fail(UpstreamError::Status {
            what: target,
            status,
        })),
    }
}

pub(super) async fn own_container(
    cx: &Ctx<'_>,
    s: &SessionScope,
    up: &mut impl Daemon,
    name: &str,
    what: &str,
    shown: &str,
) -> Result<String, Why> {
    let Some(c) = lookup(cx, up, &["containers", name, "json"]).await? else {
        return not_found(what, shown);
    };
    if !s.owns(c.pointer("/Config/Labels")) {
        return deny(format!(
            "{what} {shown} is not one of session {}'s (role {})",
            s.id, cx.role
        ));
    }
    Ok(c.get("Id")
        .and_then(Value::as_str)
        .unwrap_or(name)
        .to_string())
}

pub(super) async fn own_network(
    cx: &Ctx<'_>,
    s: &SessionScope,
    up: &mut impl Daemon,
    name: &str,
) -> Result<String, Why> {
    let Some(n) = lookup(cx, up, &["networks", name]).await? else {
        return not_found("network", name);
    };
    if !s.owns(n.get("Labels")) {
        return deny(format!(
            "network {name} is not one of session {}'s (role {})",
            s.id, cx.role
        ));
    }
    Ok(n.get("Id")
        .and_then(Value::as_str)
        .unwrap_or(name)
        .to_string())
}

pub(super) async fn own_volume(
    cx: &Ctx<'_>,
    s: &SessionScope,
    up: &mut impl Daemon,
    name: &str,
) -> Result<String, Why> {
    let Some(v) = lookup(cx, up, &["volumes", name]).await? else {
        return not_found("volume", name);
    };
    if !s.owns(v.get("Labels")) {
        return deny(format!(
            "volume {name} is not one of session {}'s (role {})",
            s.id, cx.role
        ));
    }
    Ok(v.get("Name")
        .and_then(Value::as_str)
        .unwrap_or(name)
        .to_string())
}
