//! The rules: from a routed request and its body to the canonical request
//! the daemon will execute, or a denial that names the rule and the field.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use crate::body::{self, BodyError, types};
use crate::http1::RequestHead;
use crate::role::{Binds, Scope};
use crate::route::{BodyKind, Endpoint, Target};
use crate::server::Config;
use crate::session::{LABEL_CHILD, LABEL_PREFIX, LABEL_SESSION, NetworkMode, SessionScope};
use crate::upstream::{self, Lazy, UpstreamError};

/// The request the daemon will see.
#[derive(Debug)]
pub struct Forward {
    pub method: String,
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub registry_auth: Option<String>,
    pub upgrade: bool,
    pub filter: ResponseFilter,
}

/// What must be taken out of the daemon's answer before the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFilter {
    None,
    ContainersList,
    NetworksList,
    VolumesList,
    Events,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub status: u16,
    pub reason: String,
}

impl Denial {
    pub fn forbidden(reason: String) -> Denial {
        Denial {
            status: 403,
            reason,
        }
    }
}

pub enum Decision {
    Forward(Forward),
    Deny(Denial),
    Fail(UpstreamError),
}

/// Docker's defaults (moby's oci/defaults.go). A create that names its own
/// lists replaces these, so ours must keep every one of them.
const DEFAULT_MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];
const DEFAULT_READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];
/// Log options that only shape the local log file.
const LOG_OPTIONS: &[&str] = &[
    "max-size",
    "max-file",
    "compress",
    "mode",
    "max-buffer-size",
    "labels",
    "env",
    "tag",
];
const LOG_DRIVERS: &[&str] = &["", "json-file", "local", "none"];

enum Why {
    Deny(Denial),
    Fail(UpstreamError),
}

impl From<UpstreamError> for Why {
    fn from(e: UpstreamError) -> Why {
        Why::Fail(e)
    }
}

fn deny<T>(reason: impl Into<String>) -> Result<T, Why> {
    Err(Why::Deny(Denial::forbidden(reason.into())))
}

fn bad_body<T>(e: BodyError) -> Result<T, Why> {
    Err(Why::Deny(Denial {
        status: 400,
        reason: e.to_string(),
    }))
}

fn not_found<T>(what: &str, name: &str) -> Result<T, Why> {
    Err(Why::Deny(Denial {
        status: 404,
        reason: format!("no such {what}: {name}"),
    }))
}

/// Decides one request.
pub async fn check(
    cfg: &Config,
    up: &mut Lazy,
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

struct Ctx<'a> {
    cfg: &'a Config,
    role: &'a str,
    session: Option<&'a SessionScope>,
}

async fn decide(
    cfg: &Config,
    up: &mut Lazy,
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

/// Resolves the object a path names to its full id, the way the daemon
/// would (names and unique prefixes included), and refuses it unless it is
/// the session's. The canonical request names the full id, so the daemon
/// acts on exactly the object that was checked.
async fn own_object(
    cx: &Ctx<'_>,
    s: &SessionScope,
    up: &mut Lazy,
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

async fn lookup(cx: &Ctx<'_>, up: &mut Lazy, segs: &[&str]) -> Result<Option<Value>, Why> {
    let target = crate::route::build_target(&cx.cfg.api_string(), segs, &[]);
    let (status, body) = upstream::get(up.sender().await?, "GET", &target).await?;
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

async fn own_container(
    cx: &Ctx<'_>,
    s: &SessionScope,
    up: &mut Lazy,
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

async fn own_network(
    cx: &Ctx<'_>,
    s: &SessionScope,
    up: &mut Lazy,
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

async fn own_volume(
    cx: &Ctx<'_>,
    s: &SessionScope,
    up: &mut Lazy,
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

/// Parses a `filters` parameter (either of Docker's two shapes) into the
/// map shape, refusing folded duplicate keys.
fn parse_filters(raw: &str) -> Result<BTreeMap<String, Vec<String>>, Why> {
    if raw.is_empty() {
        return Ok(BTreeMap::new());
    }
    let v: Value = match body::decode(raw.as_bytes()) {
        Ok(v) => v,
        Err(e) => return bad_body(e),
    };
    let Value::Object(map) = v else {
        return bad_body(BodyError::Invalid {
            path: "filters".into(),
            message: "filters must be a JSON object".into(),
        });
    };
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let values: Vec<String> = match v {
            Value::Array(a) => a
                .into_iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .unwrap_or_default(),
            Value::Object(m) => m
                .into_iter()
                .filter(|(_, b)| b.as_bool() == Some(true))
                .map(|(k, _)| k)
                .collect(),
            _ => Vec::new(),
        };
        out.insert(k, values);
    }
    Ok(out)
}

fn encode_filters(f: &BTreeMap<String, Vec<String>>) -> String {
    let map: serde_json::Map<String, Value> = f
        .iter()
        .map(|(k, vs)| {
            let inner: serde_json::Map<String, Value> =
                vs.iter().map(|v| (v.clone(), Value::Bool(true))).collect();
            (k.clone(), Value::Object(inner))
        })
        .collect();
    Value::Object(map).to_string()
}

fn canonical_filters(raw: &str, session: Option<&SessionScope>) -> Result<String, Why> {
    let mut f = parse_filters(raw)?;
    if let Some(s) = session {
        // The client's own label filters stay (labels filter with AND), but
        // none of them may speak about agentctl's labels: the session's own
        // replaces them.
        let labels = f.entry("label".to_string()).or_default();
        labels.retain(|l| !l.starts_with(LABEL_PREFIX));
        labels.extend(s.label_filters());
    }
    Ok(encode_filters(&f))
}

fn own_filters(s: &SessionScope, query: &mut Vec<(String, String)>) -> Result<(), Why> {
    match query.iter_mut().find(|(k, _)| k == "filters") {
        Some((_, f)) => *f = canonical_filters(f, Some(s))?,
        None => query.push(("filters".into(), canonical_filters("", Some(s))?)),
    }
    Ok(())
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Why> {
    body::decode(bytes).or_else(bad_body)
}

async fn json_body(
    cx: &Ctx<'_>,
    up: &mut Lazy,
    ep: Endpoint,
    object: Option<&str>,
    bytes: &[u8],
) -> Result<Vec<u8>, Why> {
    use Endpoint::*;
    Ok(match ep {
        ContainersCreate => {
            let mut c: types::ContainerCreate = decode(bytes)?;
            container_create(cx, up, &mut c).await?;
            body::encode(&c)
        }
        ContainerExec => {
            let e: types::ExecCreate = decode(bytes)?;
            if e.privileged == Some(true) {
                return deny(format!(
                    "Privileged is not allowed for role {} (exec)",
                    cx.role
                ));
            }
            body::encode(&e)
        }
        ExecStart => body::encode(&decode::<types::ExecStart>(bytes)?),
        ContainerUpdate => {
            let mut u: types::ContainerUpdate = decode(bytes)?;
            if let Some(s) = cx.session {
                cap(&mut u.memory, s.limits.memory, "Memory", cx.role)?;
                cap(&mut u.nano_cpus, s.limits.nano_cpus, "NanoCpus", cx.role)?;
                cap(&mut u.pids_limit, s.limits.pids, "PidsLimit", cx.role)?;
                if u.cpu_quota.unwrap_or(0) != 0 || u.cpu_period.unwrap_or(0) != 0 {
                    return deny(format!(
                        "CpuQuota/CpuPeriod are not allowed for role {}; use NanoCpus",
                        cx.role
                    ));
                }
            }
            if u.devices.as_ref().is_some_and(|d| !d.is_empty())
                || u.device_cgroup_rules
                    .as_ref()
                    .is_some_and(|d| !d.is_empty())
                || u.device_requests.as_ref().is_some_and(|d| !d.is_empty())
            {
                return deny(format!("devices are not allowed for role {}", cx.role));
            }
            if u.cgroup_parent.as_deref().is_some_and(|c| !c.is_empty()) {
                return deny(format!("CgroupParent is not allowed for role {}", cx.role));
            }
            body::encode(&u)
        }
        NetworksCreate => {
            let mut n: types::NetworkCreate = decode(bytes)?;
            network_create(cx, &mut n)?;
            body::encode(&n)
        }
        NetworkConnect => {
            let n: types::NetworkConnect = decode(bytes)?;
            if let Some(s) = cx.session {
                let c = n.container.clone().unwrap_or_default();
                let full = own_container(cx, s, up, &c, "container", &c).await?;
                let mut n = n;
                n.container = Some(full);
                body::encode(&n)
            } else {
                body::encode(&n)
            }
        }
        NetworkDisconnect => {
            let mut n: types::NetworkDisconnect = decode(bytes)?;
            if let Some(s) = cx.session {
                let c = n.container.clone().unwrap_or_default();
                n.container = Some(own_container(cx, s, up, &c, "container", &c).await?);
            }
            body::encode(&n)
        }
        VolumesCreate => {
            let mut v: types::VolumeCreate = decode(bytes)?;
            volume_create(cx, &mut v)?;
            body::encode(&v)
        }
        _ => {
            let _ = object;
            body::encode(&decode::<Value>(bytes)?)
        }
    })
}

fn check_labels(
    labels: &Option<BTreeMap<String, String>>,
    what: &str,
    role: &str,
) -> Result<(), Why> {
    if let Some(l) = labels
        && let Some(k) = l.keys().find(|k| k.starts_with(LABEL_PREFIX))
    {
        return deny(format!(
            "{what}.Labels: {k:?} is set by agentctl, not by clients (role {role})"
        ));
    }
    Ok(())
}

fn inject_labels(labels: &mut Option<BTreeMap<String, String>>, s: &SessionScope) {
    let l = labels.get_or_insert_with(BTreeMap::new);
    l.insert(LABEL_SESSION.into(), s.id.clone());
    l.insert(LABEL_CHILD.into(), "true".into());
}

fn network_create(cx: &Ctx<'_>, n: &mut types::NetworkCreate) -> Result<(), Why> {
    let role = cx.role;
    match n.driver.as_deref().unwrap_or("") {
        "" | "bridge" => {}
        d => {
            return deny(format!(
                "Driver {d:?} is not allowed for role {role}; only bridge networks"
            ));
        }
    }
    if n.options.as_ref().is_some_and(|o| !o.is_empty()) {
        return deny(format!(
            "Options are not allowed for role {role} (driver options reach the host's interfaces)"
        ));
    }
    if n.ingress == Some(true) || n.config_only == Some(true) || n.config_from.is_some() {
        return deny(format!(
            "Ingress/ConfigOnly/ConfigFrom are not allowed for role {role}"
        ));
    }
    check_labels(&n.labels, "network", role)?;
    if let Some(s) = cx.session {
        inject_labels(&mut n.labels, s);
        if s.network == NetworkMode::None {
            // Containers of a session without network may talk to each
            // other, never out.
            n.internal = Some(true);
        }
    }
    Ok(())
}

fn volume_create(cx: &Ctx<'_>, v: &mut types::VolumeCreate) -> Result<(), Why> {
    let role = cx.role;
    match v.driver.as_deref().unwrap_or("") {
        "" | "local" => {}
        d => {
            return deny(format!(
                "Driver {d:?} is not allowed for role {role}; only local volumes"
            ));
        }
    }
    if v.driver_opts.as_ref().is_some_and(|o| !o.is_empty()) {
        return deny(format!(
            "DriverOpts are not allowed for role {role} (local driver options can mount any host path)"
        ));
    }
    check_labels(&v.labels, "volume", role)?;
    if let Some(s) = cx.session {
        inject_labels(&mut v.labels, s);
    }
    Ok(())
}

fn cap(field: &mut Option<i64>, limit: Option<i64>, name: &str, role: &str) -> Result<(), Why> {
    let Some(limit) = limit else { return Ok(()) };
    match *field {
        None | Some(0) | Some(-1) => *field = Some(limit),
        Some(v) if v > limit => {
            return deny(format!(
                "HostConfig.{name} {v} is above the session's limit of {limit} (role {role})"
            ));
        }
        Some(_) => {}
    }
    Ok(())
}

async fn container_create(
    cx: &Ctx<'_>,
    up: &mut Lazy,
    c: &mut types::ContainerCreate,
) -> Result<(), Why> {
    let role = cx.role;
    check_labels(&c.labels, "Config", role)?;
    let h = c.host_config.get_or_insert_with(Default::default);

    if h.privileged == Some(true) {
        return deny(format!(
            "HostConfig.Privileged is not allowed for role {role}"
        ));
    }
    if let Some(add) = &h.cap_add
        && !add.is_empty()
    {
        return deny(format!(
            "HostConfig.CapAdd ({}) is not allowed for role {role}",
            add.join(", ")
        ));
    }
    for (field, value) in [
        ("PidMode", &h.pid_mode),
        ("IpcMode", &h.ipc_mode),
        ("UTSMode", &h.uts_mode),
        ("UsernsMode", &h.userns_mode),
        ("CgroupnsMode", &h.cgroupns_mode),
    ] {
        let v = value.as_deref().unwrap_or("");
        if v == "host" {
            return deny(format!(
                "HostConfig.{field} \"host\" is not allowed for role {role}"
            ));
        }
        if v.starts_with("container:") && cx.session.is_none() {
            continue;
        }
        if field == "UsernsMode" && !v.is_empty() {
            return deny(format!(
                "HostConfig.UsernsMode {v:?} is not allowed for role {role}"
            ));
        }
    }
    if let Some(s) = cx.session {
        for (field, value) in [("PidMode", &mut h.pid_mode), ("IpcMode", &mut h.ipc_mode)] {
            if let Some(v) = value.as_deref()
                && let Some(id) = v.strip_prefix("container:")
            {
                let id = id.to_string();
                let full = own_container(cx, s, up, &id, "container", &id)
                    .await
                    .map_err(|e| match e {
                        Why::Deny(mut d) => {
                            d.reason = format!("HostConfig.{field}: {}", d.reason);
                            Why::Deny(d)
                        }
                        other => other,
                    })?;
                *value = Some(format!("container:{full}"));
            }
        }
    }
    let empty = |v: &Option<Vec<String>>| v.as_ref().is_none_or(|v| v.is_empty());
    if h.devices.as_ref().is_some_and(|d| !d.is_empty())
        || !empty(&h.device_cgroup_rules)
        || h.device_requests.as_ref().is_some_and(|d| !d.is_empty())
    {
        return deny(format!(
            "HostConfig.Devices/DeviceRequests/DeviceCgroupRules are not allowed for role {role}"
        ));
    }
    for (field, v) in [
        ("Runtime", &h.runtime),
        ("CgroupParent", &h.cgroup_parent),
        ("Cgroup", &h.cgroup),
        ("VolumeDriver", &h.volume_driver),
    ] {
        if let Some(v) = v
            && !v.is_empty()
        {
            return deny(format!(
                "HostConfig.{field} {v:?} is not allowed for role {role}"
            ));
        }
    }
    if h.isolation
        .as_deref()
        .is_some_and(|i| !i.is_empty() && i != "default")
    {
        return deny(format!(
            "HostConfig.Isolation is not allowed for role {role}"
        ));
    }
    if h.sysctls.as_ref().is_some_and(|s| !s.is_empty()) {
        return deny(format!(
            "HostConfig.Sysctls are not allowed for role {role}"
        ));
    }
    if h.storage_opt.as_ref().is_some_and(|s| !s.is_empty()) {
        return deny(format!(
            "HostConfig.StorageOpt is not allowed for role {role}"
        ));
    }
    if h.oom_kill_disable == Some(true) {
        return deny(format!(
            "HostConfig.OomKillDisable is not allowed for role {role}"
        ));
    }
    if h.oom_score_adj.unwrap_or(0) < 0 {
        return deny(format!(
            "HostConfig.OomScoreAdj below 0 is not allowed for role {role}"
        ));
    }
    for (field, list, defaults) in [
        ("MaskedPaths", &h.masked_paths, DEFAULT_MASKED),
        ("ReadonlyPaths", &h.readonly_paths, DEFAULT_READONLY),
    ] {
        if let Some(list) = list
            && let Some(missing) = defaults.iter().find(|d| !list.iter().any(|p| p == *d))
        {
            return deny(format!(
                "HostConfig.{field} drops Docker's default {missing}, which is not allowed for role {role}"
            ));
        }
    }
    // Security options: only no-new-privileges, which is then always on.
    let mut sec = Vec::new();
    for opt in h.security_opt.take().unwrap_or_default() {
        let norm = opt.replace('=', ":");
        match norm.as_str() {
            "no-new-privileges" | "no-new-privileges:true" => {}
            _ => {
                return deny(format!(
                    "HostConfig.SecurityOpt {opt:?} is not allowed for role {role} (seccomp, AppArmor and SELinux stay at the engine's defaults)"
                ));
            }
        }
    }
    sec.push("no-new-privileges".to_string());
    h.security_opt = Some(sec);

    if let Some(log) = &h.log_config {
        let ty = log.type_.as_deref().unwrap_or("");
        if !LOG_DRIVERS.contains(&ty) {
            return deny(format!(
                "HostConfig.LogConfig.Type {ty:?} is not allowed for role {role}; use json-file or local"
            ));
        }
        if let Some(opts) = &log.config
            && let Some(k) = opts.keys().find(|k| !LOG_OPTIONS.contains(&k.as_str()))
        {
            return deny(format!(
                "HostConfig.LogConfig.Config {k:?} is not allowed for role {role}"
            ));
        }
    }
    if h.links.as_ref().is_some_and(|l| !l.is_empty()) {
        return deny(format!(
            "HostConfig.Links are not allowed for role {role}; use a network"
        ));
    }

    // Network.
    let mode = h.network_mode.clone().unwrap_or_default();
    match cx.session {
        None => {
            if mode == "host" && !cx.cfg.role.host_network {
                return deny(format!(
                    "HostConfig.NetworkMode \"host\" is not allowed for role {role}"
                ));
            }
        }
        Some(s) => {
            let none = s.network == NetworkMode::None;
            match mode.as_str() {
                "" | "default" if none => h.network_mode = Some("none".into()),
                "" | "default" | "bridge" if !none => {}
                "bridge" => {
                    return deny(format!(
                        "HostConfig.NetworkMode \"bridge\" is not allowed for role {role}: the session has no network"
                    ));
                }
                "none" => {}
                "host" => {
                    return deny(format!(
                        "HostConfig.NetworkMode \"host\" is not allowed for role {role}"
                    ));
                }
                m if m.starts_with("container:") => {
                    let id = &m["container:".len()..];
                    let full = own_container(cx, s, up, id, "container", id).await?;
                    h.network_mode = Some(format!("container:{full}"));
                }
                m => {
                    let full = own_network(cx, s, up, m).await?;
                    h.network_mode = Some(full);
                }
            }
        }
    }
    if let Some(s) = cx.session
        && let Some(nc) = c.networking_config.as_mut()
        && let Some(eps) = nc.endpoints_config.take()
    {
        let mut out = BTreeMap::new();
        for (name, ep) in eps {
            let key = match name.as_str() {
                "none" => name,
                // The CLI names the default network here too; a session
                // without network has none to join.
                "bridge" | "default" if s.network == NetworkMode::None => continue,
                "bridge" | "default" => name,
                _ => own_network(cx, s, up, &name).await?,
            };
            out.insert(key, ep);
        }
        nc.endpoints_config = Some(out);
    }

    // Volumes from other containers: the session's own only.
    if let Some(from) = h.volumes_from.take() {
        let mut out = Vec::new();
        for f in from {
            match cx.session {
                None => out.push(f),
                Some(s) => {
                    let (id, mode) = match f.split_once(':') {
                        Some((i, m)) => (i.to_string(), Some(m.to_string())),
                        None => (f.clone(), None),
                    };
                    let full = own_container(cx, s, up, &id, "container", &id).await?;
                    out.push(match mode {
                        Some(m) => format!("{full}:{m}"),
                        None => full,
                    });
                }
            }
        }
        h.volumes_from = Some(out);
    }

    // Binds and mounts.
    let binds = cx.cfg.role.binds;
    let mut mask_mounts = Vec::new();
    if let Some(list) = h.binds.take() {
        let mut out = Vec::new();
        for b in list {
            out.push(check_bind_string(cx, up, &b, binds, &mut mask_mounts).await?);
        }
        h.binds = Some(out);
    }
    if let Some(mounts) = h.mounts.as_mut() {
        for (i, m) in mounts.iter_mut().enumerate() {
            check_mount(cx, up, i, m, binds, &mut mask_mounts).await?;
        }
    }
    if !mask_mounts.is_empty() {
        h.mounts.get_or_insert_with(Vec::new).extend(mask_mounts);
    }

    // Ports: published on the loopback only for sessions.
    if let Some(s) = cx.session {
        let _ = s;
        if h.publish_all_ports == Some(true) {
            h.publish_all_ports = Some(false);
            let mut ports: Vec<String> = c
                .exposed_ports
                .as_ref()
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            if let Some(image) = c.image.as_deref()
                && let Some(img) = lookup(cx, up, &["images", image, "json"]).await?
                && let Some(Value::Object(exposed)) = img.pointer("/Config/ExposedPorts")
            {
                ports.extend(exposed.keys().cloned());
            }
            let pb = h.port_bindings.get_or_insert_with(BTreeMap::new);
            for p in ports {
                pb.entry(p).or_insert_with(|| {
                    Some(vec![types::PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(String::new()),
                    }])
                });
            }
        }
        if let Some(pb) = h.port_bindings.as_mut() {
            for (port, list) in pb.iter_mut() {
                for b in list.iter_mut().flatten() {
                    match b.host_ip.as_deref().unwrap_or("") {
                        "" => b.host_ip = Some("127.0.0.1".into()),
                        "127.0.0.1" | "::1" => {}
                        ip => {
                            return deny(format!(
                                "HostConfig.PortBindings {port}: HostIp {ip:?} is not allowed for role {role}; ports are published on the loopback only"
                            ));
                        }
                    }
                }
            }
        }
    }

    if let Some(s) = cx.session {
        cap(&mut h.memory, s.limits.memory, "Memory", role)?;
        if matches!(h.memory_swap, None | Some(0) | Some(-1)) {
            h.memory_swap = h.memory;
        }
        cap(&mut h.nano_cpus, s.limits.nano_cpus, "NanoCpus", role)?;
        cap(&mut h.pids_limit, s.limits.pids, "PidsLimit", role)?;
        if h.cpu_quota.unwrap_or(0) != 0 || h.cpu_period.unwrap_or(0) != 0 {
            return deny(format!(
                "HostConfig.CpuQuota/CpuPeriod are not allowed for role {role}; use NanoCpus (--cpus)"
            ));
        }
        inject_labels(&mut c.labels, s);
    }
    Ok(())
}

/// The engine sockets no container may get.
fn engine_sockets(cx: &Ctx<'_>) -> Vec<PathBuf> {
    let mut v = vec![
        PathBuf::from("/var/run/docker.sock"),
        PathBuf::from("/run/docker.sock"),
        PathBuf::from("/run/containerd/containerd.sock"),
    ];
    if let crate::upstream::Addr::Unix(p) = &cx.cfg.upstream {
        v.push(p.clone());
        if let Ok(c) = p.canonicalize() {
            v.push(c);
        }
    }
    v
}

/// Checks a host path a container wants bound, and gives back the path the
/// daemon will bind: symlinks resolved, so what was checked is what is
/// bound. Mask mounts for the session's secrets under it go into `masks`.
fn check_host_path(
    cx: &Ctx<'_>,
    field: &str,
    src: &str,
    target: &str,
    read_only: bool,
    binds: Binds,
    masks: &mut Vec<types::Mount>,
) -> Result<String, Why> {
    let role = cx.role;
    if binds == Binds::None {
        return deny(format!(
            "{field}: host path {src:?} is not allowed for role {role}"
        ));
    }
    let p = Path::new(src);
    if !p.is_absolute()
        || p.components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return deny(format!(
            "{field}: host path {src:?} must be absolute and without . or .. (role {role})"
        ));
    }
    let real = match p.canonicalize() {
        Ok(r) => r,
        Err(e) => {
            return deny(format!(
                "{field}: host path {src:?} cannot be checked ({e}); it must exist (role {role})"
            ));
        }
    };
    for sock in engine_sockets(cx) {
        if sock.starts_with(&real) {
            return deny(format!(
                "{field}: {src:?} would give the container the engine's socket (role {role})"
            ));
        }
    }
    if let Ok(meta) = std::fs::metadata(&real) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_socket() {
            return deny(format!("{field}: {src:?} is a socket (role {role})"));
        }
    }
    if binds == Binds::Workspace {
        let s = cx.session.expect("workspace binds need a session");
        if !real.starts_with(&s.workspace) {
            return deny(format!(
                "{field}: host path {src:?} is outside the session's workspace {} (role {role})",
                s.workspace.display()
            ));
        }
        // The daemon resolves a bind's source when the container starts,
        // which the agent chooses; a directory inside the workspace can be
        // swapped for a symlink (to `/`) by then. The workspace root
        // cannot: its parent is outside the agent's reach.
        if real != s.workspace {
            return deny(format!(
                "{field}: only the workspace root {ws} may be bound, not {src:?} (role {role}): \
                 the agent could swap a path inside it for a symlink between create and start, \
                 and the daemon would follow it. Bind the workspace and work inside it \
                 (-v {ws}:{ws} -w {ws}/...); no flag allows more",
                ws = s.workspace.display()
            ));
        }
    }
    if let Some(s) = cx.session {
        match workspace_guards(s, &real, target, read_only) {
            Ok(guards) => masks.extend(guards),
            Err(why) => return deny(format!("{field}: {why} (role {role})")),
        }
    }
    Ok(real.display().to_string())
}

/// What a child that binds `source` at `target` must get on top of it: the
/// session's pinned directories under it, bound onto themselves (they
/// cannot be renamed, in the child either), and a mask over every secret
/// the session's sandbox masks there. Parents come first; the daemon sorts
/// by depth anyway.
///
/// A secret or pinned directory that is no longer where the session found
/// it is an error: the masks would land on nothing (and the runtime would
/// create an empty file in its place) while the secret sits elsewhere.
pub fn workspace_guards(
    s: &SessionScope,
    source: &Path,
    target: &str,
    read_only: bool,
) -> Result<Vec<types::Mount>, String> {
    let mut out = Vec::new();
    for dir in sandbox_pins(s, source) {
        let real_dir = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir())
            && std::fs::canonicalize(&dir).ok().as_deref() == Some(dir.as_path());
        if !real_dir {
            return Err(format!(
                "{} leads to a secret the session masks, and is no longer a directory there; start a new session",
                dir.display()
            ));
        }
        let rel = dir.strip_prefix(source).expect("pins lie under the source");
        out.push(types::Mount {
            type_: Some("bind".into()),
            source: Some(dir.display().to_string()),
            target: Some(Path::new(target).join(rel).display().to_string()),
            read_only: Some(read_only),
            ..Default::default()
        });
    }
    // Files the host runs later stay read-only in children, which could
    // otherwise write `.git/config` for the host's git to run.
    for p in &s.read_only {
        let Ok(rel) = p.strip_prefix(source) else {
            continue;
        };
        if !std::fs::symlink_metadata(p).is_ok_and(|m| !m.file_type().is_symlink()) {
            return Err(format!(
                "{} is read-only in the session because the host runs it, and is no longer there; start a new session",
                p.display()
            ));
        }
        out.push(types::Mount {
            type_: Some("bind".into()),
            source: Some(p.display().to_string()),
            target: Some(Path::new(target).join(rel).display().to_string()),
            read_only: Some(true),
            ..Default::default()
        });
    }
    for m in &s.masked {
        let Ok(rel) = m.strip_prefix(source) else {
            continue;
        };
        let tgt = Path::new(target).join(rel).display().to_string();
        // What it is now: a directory is masked by an empty tmpfs, anything
        // else by /dev/null. Pinned parents keep this from changing.
        let dir = match std::fs::symlink_metadata(m) {
            Ok(md) => md.is_dir(),
            Err(_) => {
                return Err(format!(
                    "the secret {} that the session masks is gone from where it was found; start a new session",
                    m.display()
                ));
            }
        };
        out.push(if dir {
            types::Mount {
                type_: Some("tmpfs".into()),
                target: Some(tgt),
                ..Default::default()
            }
        } else {
            types::Mount {
                type_: Some("bind".into()),
                source: Some("/dev/null".into()),
                target: Some(tgt),
                read_only: Some(true),
                ..Default::default()
            }
        });
    }
    Ok(out)
}

/// The directories between `source` and the session's masks and read-only
/// files: the ones the session's sandbox pins.
fn sandbox_pins(s: &SessionScope, source: &Path) -> Vec<PathBuf> {
    let paths: Vec<PathBuf> = s.masked.iter().chain(&s.read_only).cloned().collect();
    policy::pins::ancestors_to_pin(source, &paths)
}

/// A bind of a container as the daemon keeps it: (source, target,
/// read-only). Named volumes and tmpfs mounts are not binds.
fn binds_of(c: &Value) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for b in c
        .pointer("/HostConfig/Binds")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let parts: Vec<&str> = b.split(':').collect();
        if let [src, dst, rest @ ..] = parts.as_slice()
            && src.starts_with('/')
        {
            let ro = rest
                .first()
                .is_some_and(|o| o.split(',').any(|x| x == "ro"));
            out.push((src.to_string(), dst.to_string(), ro));
        }
    }
    for m in c
        .pointer("/HostConfig/Mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if m.get("Type").and_then(Value::as_str) != Some("bind") {
            continue;
        }
        let get = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        out.push((
            get("Source"),
            get("Target"),
            m.get("ReadOnly").and_then(Value::as_bool) == Some(true),
        ));
    }
    out
}

/// Checked again when a container of the session starts or restarts,
/// because that is when the daemon resolves the paths it binds, and the
/// agent chooses when that is: every bind source must still be the
/// workspace root, one of its pinned directories (a directory, reached
/// through no symlink) or `/dev/null`, and every bind of the workspace must
/// still carry the pins and masks the session's secrets call for now.
async fn check_binds_at_start(
    cx: &Ctx<'_>,
    s: &SessionScope,
    up: &mut Lazy,
    id: &str,
) -> Result<(), Why> {
    let role = cx.role;
    let Some(c) = lookup(cx, up, &["containers", id, "json"]).await? else {
        return not_found("container", id);
    };
    let binds = binds_of(&c);
    let ws = s.workspace.display().to_string();
    let refuse = |why: String| {
        deny(format!(
            "container {id} cannot start (role {role}): {why}; remove it and create it again"
        ))
    };
    if std::fs::canonicalize(&s.workspace).ok().as_deref() != Some(s.workspace.as_path()) {
        return refuse(format!("the workspace {ws} is no longer where it was"));
    }
    let pins = sandbox_pins(s, &s.workspace);
    if binds
        .iter()
        .any(|(src, _, _)| *src == ws || pins.iter().any(|d| d == Path::new(src)))
        && let Err(why) = workspace_guards(s, &s.workspace, "/", false)
    {
        return refuse(why);
    }
    for (src, _, _) in &binds {
        if src == "/dev/null" || *src == ws {
            continue;
        }
        // Whether each pin is still a real directory is checked with the
        // guards below.
        if !pins.iter().chain(&s.read_only).any(|d| d == Path::new(src)) {
            return refuse(format!(
                "its bind source {src:?} is not the workspace root or one of its pinned or read-only paths"
            ));
        }
    }
    for (_, target, ro) in binds.iter().filter(|(src, _, _)| *src == ws) {
        let guards = match workspace_guards(s, &s.workspace, target, *ro) {
            Ok(g) => g,
            Err(why) => return refuse(why),
        };
        for want in guards {
            let have = match want.type_.as_deref() {
                Some("tmpfs") => c
                    .pointer("/HostConfig/Mounts")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|m| {
                        m.get("Type").and_then(Value::as_str) == Some("tmpfs")
                            && m.get("Target").and_then(Value::as_str) == want.target.as_deref()
                    }),
                _ => binds.iter().any(|(src, dst, ro)| {
                    Some(src.as_str()) == want.source.as_deref()
                        && Some(dst.as_str()) == want.target.as_deref()
                        && Some(*ro) == want.read_only
                }),
            };
            if !have {
                return refuse(format!(
                    "the workspace bound at {target} lacks {} over {} that the session's secrets call for",
                    if want.source.as_deref() == Some("/dev/null")
                        || want.type_.as_deref() == Some("tmpfs")
                    {
                        "the mask"
                    } else {
                        "the pin"
                    },
                    want.target.as_deref().unwrap_or_default()
                ));
            }
        }
    }
    Ok(())
}

async fn named_volume(cx: &Ctx<'_>, up: &mut Lazy, field: &str, name: &str) -> Result<(), Why> {
    let Some(s) = cx.session else { return Ok(()) };
    match lookup(cx, up, &["volumes", name]).await? {
        Some(v) if s.owns(v.get("Labels")) => Ok(()),
        Some(_) => deny(format!(
            "{field}: volume {name} is not one of session {}'s (role {})",
            s.id, cx.role
        )),
        None => {
            // The daemon would make it unlabelled; make it the session's first.
            let mut v = types::VolumeCreate {
                name: Some(name.to_string()),
                ..Default::default()
            };
            inject_labels(&mut v.labels, s);
            let target =
                crate::route::build_target(&cx.cfg.api_string(), &["volumes", "create"], &[]);
            let (status, _) =
                upstream::request(up.sender().await?, "POST", &target, Some(body::encode(&v)))
                    .await?;
            if status != 201 && status != 200 {
                return Err(Why::Fail(UpstreamError::Status {
                    what: target,
                    status,
                }));
            }
            Ok(())
        }
    }
}

async fn check_bind_string(
    cx: &Ctx<'_>,
    up: &mut Lazy,
    bind: &str,
    binds: Binds,
    masks: &mut Vec<types::Mount>,
) -> Result<String, Why> {
    let field = format!("HostConfig.Binds {bind:?}");
    let parts: Vec<&str> = bind.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [s, d] => (*s, *d, None),
        [s, d, o] => (*s, *d, Some(*o)),
        _ => {
            return deny(format!(
                "{field}: expected SOURCE:TARGET[:OPTIONS] (role {})",
                cx.role
            ));
        }
    };
    if let Some(o) = opts {
        for opt in o.split(',') {
            match opt {
                "ro" | "rw" | "z" | "Z" | "nocopy" | "private" | "rprivate" | "slave"
                | "rslave" | "consistent" | "cached" | "delegated" => {}
                other => {
                    return deny(format!(
                        "{field}: option {other:?} is not allowed for role {}",
                        cx.role
                    ));
                }
            }
        }
    }
    if src.starts_with('/') {
        // A session that may not write its workspace gives its children
        // none to write either.
        let forced_ro = cx.session.is_some_and(|s| !s.workspace_writable);
        let opts: Option<String> = if forced_ro {
            let mut o: Vec<&str> = opts
                .unwrap_or("")
                .split(',')
                .filter(|x| !x.is_empty() && *x != "rw" && *x != "ro")
                .collect();
            o.push("ro");
            Some(o.join(","))
        } else {
            opts.map(str::to_string)
        };
        let read_only = opts
            .as_deref()
            .is_some_and(|o| o.split(',').any(|x| x == "ro"));
        let real = check_host_path(cx, &field, src, dst, read_only, binds, masks)?;
        Ok(match opts {
            Some(o) => format!("{real}:{dst}:{o}"),
            None => format!("{real}:{dst}"),
        })
    } else {
        named_volume(cx, up, &field, src).await?;
        Ok(bind.to_string())
    }
}

async fn check_mount(
    cx: &Ctx<'_>,
    up: &mut Lazy,
    i: usize,
    m: &mut types::Mount,
    binds: Binds,
    masks: &mut Vec<types::Mount>,
) -> Result<(), Why> {
    let role = cx.role;
    let field = format!("HostConfig.Mounts[{i}]");
    match m.type_.as_deref().unwrap_or("") {
        "bind" => {
            if let Some(b) = &m.bind_options
                && let Some(p) = b.propagation.as_deref()
                && p.contains("shared")
            {
                return deny(format!(
                    "{field}.BindOptions.Propagation {p:?} is not allowed for role {role}"
                ));
            }
            let src = m.source.clone().unwrap_or_default();
            let dst = m.target.clone().unwrap_or_default();
            if cx.session.is_some_and(|s| !s.workspace_writable) {
                m.read_only = Some(true);
            }
            let read_only = m.read_only == Some(true);
            let real = check_host_path(cx, &field, &src, &dst, read_only, binds, masks)?;
            m.source = Some(real);
        }
        "volume" => {
            if let Some(vo) = &m.volume_options
                && let Some(dc) = &vo.driver_config
                && (dc
                    .name
                    .as_deref()
                    .is_some_and(|n| !n.is_empty() && n != "local")
                    || dc.options.as_ref().is_some_and(|o| !o.is_empty()))
            {
                return deny(format!(
                    "{field}.VolumeOptions.DriverConfig is not allowed for role {role} (volume driver options can mount any host path)"
                ));
            }
            if let Some(name) = m.source.clone().filter(|n| !n.is_empty()) {
                named_volume(cx, up, &field, &name).await?;
            }
        }
        "tmpfs" => {}
        other => {
            return deny(format!(
                "{field}.Type {other:?} is not allowed for role {role}"
            ));
        }
    }
    Ok(())
}

/// Takes out of a list answer everything that is not the session's.
pub fn filter_response(cfg: &Config, filter: &ResponseFilter, body: &[u8]) -> Vec<u8> {
    let Some(s) = cfg.session.as_ref() else {
        return body.to_vec();
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        // An answer the proxy cannot read is not passed on unfiltered.
        return b"[]".to_vec();
    };
    let keep = |item: &Value| s.owns(item.get("Labels"));
    match filter {
        ResponseFilter::ContainersList | ResponseFilter::NetworksList => {
            if let Value::Array(a) = &mut v {
                a.retain(keep);
            } else {
                v = Value::Array(Vec::new());
            }
        }
        ResponseFilter::VolumesList => match v.get_mut("Volumes") {
            Some(Value::Array(a)) => a.retain(keep),
            _ => v = serde_json::json!({"Volumes": [], "Warnings": []}),
        },
        ResponseFilter::Events | ResponseFilter::None => {}
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Filters a stream of newline-separated JSON events to the session's own.
#[derive(Default)]
pub struct EventFilter {
    partial: Vec<u8>,
}

impl EventFilter {
    pub fn push(&mut self, cfg: &Config, data: &[u8]) -> Vec<u8> {
        let Some(s) = cfg.session.as_ref() else {
            return data.to_vec();
        };
        self.partial.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(pos) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            if let Ok(ev) = serde_json::from_slice::<Value>(&line)
                && s.owns(ev.pointer("/Actor/Attributes"))
            {
                out.extend_from_slice(&line);
            }
        }
        if self.partial.len() > 1024 * 1024 {
            self.partial.clear();
        }
        out
    }
}

/// Removes everything a session made: containers (with their anonymous
/// volumes), then networks and volumes. Returns how many objects went.
/// A kind of object `cleanup_session` removes: its name in paths, its list
/// path, the field of the list answer holding the items, the item's id key,
/// and the removal's parameters.
type Kind = (
    &'static str,
    &'static [&'static str],
    Option<&'static str>,
    &'static str,
    &'static [(&'static str, &'static str)],
);

pub async fn cleanup_session(cfg: &Config, s: &SessionScope) -> Result<usize, UpstreamError> {
    let mut up = upstream::connect(&cfg.upstream).await?;
    let api = cfg.api_string();
    let filters = (
        "filters".to_string(),
        encode_filters(&BTreeMap::from([(
            "label".to_string(),
            s.label_filters().to_vec(),
        )])),
    );
    // Containers first: networks and volumes in use cannot go. Each kind:
    // its list, where the list answer keeps the items, the item's id, and
    // how to remove it (containers with their anonymous volumes).
    let kinds: [Kind; 3] = [
        (
            "containers",
            &["containers", "json"],
            None,
            "Id",
            &[("force", "1"), ("v", "1")],
        ),
        ("networks", &["networks"], None, "Id", &[]),
        (
            "volumes",
            &["volumes"],
            Some("Volumes"),
            "Name",
            &[("force", "1")],
        ),
    ];
    let mut removed = 0;
    for (kind, list, field, id_key, remove) in kinds {
        let mut q = vec![filters.clone()];
        if kind == "containers" {
            q.push(("all".into(), "1".into()));
        }
        let target = crate::route::build_target(&api, list, &q);
        let (status, body) = upstream::get(&mut up, "GET", &target).await?;
        if status != 200 {
            return Err(UpstreamError::Status {
                what: target,
                status,
            });
        }
        let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let items = match field {
            Some(f) => answer.get(f),
            None => Some(&answer),
        };
        for item in items.and_then(Value::as_array).into_iter().flatten() {
            let Some(id) = item.get(id_key).and_then(Value::as_str) else {
                continue;
            };
            if !s.owns(item.get("Labels")) {
                continue;
            }
            let q: Vec<(String, String)> = remove
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let t = crate::route::build_target(&api, &[kind, id], &q);
            let (status, _) = upstream::get(&mut up, "DELETE", &t).await?;
            // Something of the session's left behind is an error, not a count.
            if status >= 300 && status != 404 {
                return Err(UpstreamError::Status {
                    what: format!("DELETE {t}"),
                    status,
                });
            }
            removed += 1;
        }
    }
    Ok(removed)
}
