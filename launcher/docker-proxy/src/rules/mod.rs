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
use crate::session::NetworkMode;

use create::{json_body, names_agentctl_image};
use decision::{Ctx, Why, deny};
use filters::{canonical_filters, own_filters};
use owner::own_object;
use paths::check_binds_at_start;

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
        if ep == Endpoint::ImagesPull && s.network == NetworkMode::None {
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
