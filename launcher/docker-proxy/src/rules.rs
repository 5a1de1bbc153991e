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

/// The resource fields of a create's `HostConfig` or of an update, which
/// the daemon reads alike (moby's `container.Resources`).
struct Resources<'a> {
    memory: &'a mut Option<i64>,
    memory_swap: &'a mut Option<i64>,
    memory_reservation: &'a mut Option<i64>,
    kernel_memory: &'a mut Option<i64>,
    kernel_memory_tcp: &'a mut Option<i64>,
    nano_cpus: &'a mut Option<i64>,
    cpu_shares: &'a mut Option<i64>,
    cpu_period: &'a mut Option<i64>,
    cpu_quota: &'a mut Option<i64>,
    cpu_realtime_period: &'a mut Option<i64>,
    cpu_realtime_runtime: &'a mut Option<i64>,
    pids_limit: &'a mut Option<i64>,
    ulimits: &'a Option<Vec<types::Ulimit>>,
}

macro_rules! resources {
    ($x:expr) => {
        Resources {
            memory: &mut $x.memory,
            memory_swap: &mut $x.memory_swap,
            memory_reservation: &mut $x.memory_reservation,
            kernel_memory: &mut $x.kernel_memory,
            kernel_memory_tcp: &mut $x.kernel_memory_tcp,
            nano_cpus: &mut $x.nano_cpus,
            cpu_shares: &mut $x.cpu_shares,
            cpu_period: &mut $x.cpu_period,
            cpu_quota: &mut $x.cpu_quota,
            cpu_realtime_period: &mut $x.cpu_realtime_period,
            cpu_realtime_runtime: &mut $x.cpu_realtime_runtime,
            pids_limit: &mut $x.pids_limit,
            ulimits: &$x.ulimits,
        }
    };
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

/// True when an image reference names a repository under Docker Hub's
/// `agentctl/` namespace, however it is spelled (`docker.io/`,
/// `index.docker.io/`, `registry-1.docker.io/`, any case: the daemon
/// refuses upper case, which is no reason to forward it).
fn names_agentctl_image(reference: &str) -> bool {
    let r = reference.trim().to_ascii_lowercase();
    let mut rest = r.as_str();
    for hub in ["docker.io/", "index.docker.io/", "registry-1.docker.io/"] {
        if let Some(x) = rest.strip_prefix(hub) {
            rest = x;
            break;
        }
    }
    rest.starts_with("agentctl/")
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
            // An exec instance has no labels: a `Labels` key is an unknown
            // field of ExecCreate, refused when decoding.
            let e: types::ExecCreate = decode(bytes)?;
            if e.privileged == Some(true) {
                return deny(format!(
                    "Privileged is not allowed for role {} (exec)",
                    cx.role
                ));
            }
            if let Some(wd) = e.working_dir.as_deref() {
                working_dir("WorkingDir", wd, cx.role)?;
            }
            body::encode(&e)
        }
        ExecStart => body::encode(&decode::<types::ExecStart>(bytes)?),
        ContainerUpdate => {
            let mut u: types::ContainerUpdate = decode(bytes)?;
            if let Some(s) = cx.session {
                session_resources(resources!(u), s, "", cx.role, true)?;
                restart_policy(&u.restart_policy, "RestartPolicy", cx.role)?;
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
            let mut n: types::NetworkConnect = decode(bytes)?;
            if let Some(s) = cx.session {
                let c = n.container.clone().unwrap_or_default();
                let full = own_container(cx, s, up, &c, "container", &c).await?;
                n.container = Some(full);
                // The path named the network, already checked and resolved
                // to its full id; the endpoint may not name another.
                let net = object.unwrap_or_default();
                let ep = n.endpoint_config.get_or_insert_with(Default::default);
                session_endpoint(cx, up, "EndpointConfig", net, true, ep).await?;
            } else if let Some(ep) = &n.endpoint_config {
                any_endpoint("EndpointConfig", ep, cx.role)?;
            }
            body::encode(&n)
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
        _ => body::encode(&decode::<Value>(bytes)?),
    })
}

/// Whether a label key is agentctl's, or one Go's decoder would take for
/// agentctl's (`io.agentctL.child`): the proxy adds its own labels beside
/// the client's, and the body it forwards must never hold two keys that
/// fold to one.
fn reserved_label(key: &str) -> bool {
    body::fold::go_fold(key).starts_with(LABEL_PREFIX)
}

fn check_labels(
    labels: &Option<BTreeMap<String, String>>,
    what: &str,
    role: &str,
) -> Result<(), Why> {
    if let Some(l) = labels
        && let Some(k) = l.keys().find(|k| reserved_label(k))
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

/// Resource limits a child may not raise or lift with `--ulimit`: both
/// let its processes take the CPU ahead of the host's (real-time and nice
/// priorities), which the CPU cap does not hold back.
const ULIMITS_REFUSED: &[&str] = &["rtprio", "nice"];

/// Holds a child's resources to the session's limits, on create and on
/// update (`update`), by what the daemon makes of each value (moby's
/// daemon/daemon_unix.go and container/container_unix.go):
///
/// - `Memory`: 0 is unlimited on create and "unchanged" on update (so it
///   stays at what the create was held to); negative is not a limit.
/// - `MemorySwap` (memory plus swap): -1 is unlimited swap, 0 is twice
///   `Memory` on create and "unchanged" on update. A session has no swap
///   beyond memory, so it ends up equal to `Memory`.
/// - `PidsLimit`: the daemon reads every value <= 0 as unlimited; 0 and -1
///   are the documented spellings and become the cap, other negatives are
///   refused; `null` on update leaves it unchanged.
/// - `NanoCpus`: 0 is unlimited on create and "unchanged" on update.
/// - `CpuQuota`/`CpuPeriod`: -1 is an unlimited quota, and a period with
///   the cap's quota would change the cap: refused, `NanoCpus` says it all.
/// - `CpuRealtimePeriod`/`CpuRealtimeRuntime`: a real-time budget (-1 is
///   unlimited), which the CPU cap does not bound: refused.
/// - `MemoryReservation`, `KernelMemory`, `KernelMemoryTCP`, `CpuShares`:
///   only narrow or weigh (0 is the default); negatives are refused.
/// - `Ulimits`: -1 is unlimited (the cgroup limits above still hold);
///   other negatives and [`ULIMITS_REFUSED`] are refused.
/// - Not limits, left to the daemon's own checks: `CpusetCpus`/`CpusetMems`
///   (narrow), `BlkioWeight*`/`BlkioDevice*` (weigh and throttle),
///   `MemorySwappiness` (0-100 or -1), and the Windows-only `CpuCount`,
///   `CpuPercent`, `IOMaximum*`.
fn session_resources(
    r: Resources<'_>,
    s: &SessionScope,
    prefix: &str,
    role: &str,
    update: bool,
) -> Result<(), Why> {
    let refuse = |name: &str, v: i64, why: &str| -> Result<(), Why> {
        deny(format!(
            "{prefix}{name} {v} is not allowed for role {role}: {why}"
        ))
    };
    let above = |name: &str, v: i64, limit: i64| -> Result<(), Why> {
        deny(format!(
            "{prefix}{name} {v} is above the session's limit of {limit} (role {role})"
        ))
    };
    let lim = &s.limits;

    // Memory and NanoCpus: 0 (or nothing) is unlimited on create.
    for (name, field, limit) in [
        ("Memory", &mut *r.memory, lim.memory),
        ("NanoCpus", &mut *r.nano_cpus, lim.nano_cpus),
    ] {
        match *field {
            Some(v) if v < 0 => {
                return refuse(
                    name,
                    v,
                    "a negative value is not a limit; leave it unset for the session's limit",
                );
            }
            None | Some(0) if update => {}
            None | Some(0) => *field = limit,
            Some(v) => {
                if let Some(l) = limit
                    && v > l
                {
                    return above(name, v, l);
                }
            }
        }
    }
    match (*r.memory_swap, *r.memory) {
        (Some(v), _) if v < -1 => {
            return refuse(
                "MemorySwap",
                v,
                "only -1 (unlimited) is a negative the daemon documents",
            );
        }
        // An update that changes neither.
        (None | Some(0), None | Some(0)) if update => {}
        (Some(v), None | Some(0)) if update => {
            return refuse(
                "MemorySwap",
                v,
                "give it only with Memory, and equal to it (children get no swap beyond their memory)",
            );
        }
        (None | Some(0) | Some(-1), Some(m)) if lim.memory.is_some() => *r.memory_swap = Some(m),
        (Some(v), Some(m)) if lim.memory.is_some() && v != m => {
            return refuse(
                "MemorySwap",
                v,
                &format!("children get no swap beyond their memory ({m}); leave it unset"),
            );
        }
        _ => {}
    }
    let memory = r.memory.filter(|m| *m > 0).or(lim.memory);
    for (name, field) in [
        ("MemoryReservation", &*r.memory_reservation),
        ("KernelMemory", &*r.kernel_memory),
        ("KernelMemoryTCP", &*r.kernel_memory_tcp),
        ("CpuShares", &*r.cpu_shares),
    ] {
        if let Some(v) = *field
            && v < 0
        {
            return refuse(name, v, "a negative value is not a limit");
        }
    }
    if let (Some(v), Some(m)) = (*r.memory_reservation, memory)
        && v > m
    {
        return above("MemoryReservation", v, m);
    }
    if r.cpu_quota.unwrap_or(0) != 0 || r.cpu_period.unwrap_or(0) != 0 {
        return deny(format!(
            "{prefix}CpuQuota/CpuPeriod are not allowed for role {role}; use NanoCpus (--cpus)"
        ));
    }
    if r.cpu_realtime_period.unwrap_or(0) != 0 || r.cpu_realtime_runtime.unwrap_or(0) != 0 {
        return deny(format!(
            "{prefix}CpuRealtimePeriod/CpuRealtimeRuntime are not allowed for role {role}: real-time tasks are not held by the CPU limit"
        ));
    }
    match *r.pids_limit {
        None if update => {}
        None | Some(0) | Some(-1) => *r.pids_limit = lim.pids,
        Some(v) if v < -1 => {
            return refuse(
                "PidsLimit",
                v,
                "the daemon reads it as unlimited; give a positive number, or leave it unset for the session's limit",
            );
        }
        Some(v) => {
            if let Some(l) = lim.pids
                && v > l
            {
                return above("PidsLimit", v, l);
            }
        }
    }
    for u in r.ulimits.iter().flatten() {
        let name = u.name.as_deref().unwrap_or("");
        if ULIMITS_REFUSED.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            return deny(format!(
                "{prefix}Ulimits {name:?} is not allowed for role {role}: it lets processes take the CPU ahead of the host's"
            ));
        }
        for v in [u.soft, u.hard].into_iter().flatten() {
            if v < -1 {
                return deny(format!(
                    "{prefix}Ulimits {name:?}: {v} is not allowed for role {role}; -1 is unlimited, other negatives mean nothing"
                ));
            }
        }
    }
    Ok(())
}

/// A restart policy lets the daemon start the container again by itself:
/// without this proxy's checks, and after the session (and its cleanup) is
/// over, when the daemon restarts. Session children get none.
fn restart_policy(rp: &Option<types::RestartPolicy>, field: &str, role: &str) -> Result<(), Why> {
    let name = rp.as_ref().and_then(|r| r.name.as_deref()).unwrap_or("");
    if name.is_empty() || name == "no" {
        return Ok(());
    }
    deny(format!(
        "{field} {name:?} is not allowed for role {role}: the daemon would restart the container by itself, without this proxy's checks and after the session has ended; use \"no\" (the default)"
    ))
}

/// Whether a path inside a container is under /proc once `.`, `..`, `//`
/// and trailing slashes are read the way the kernel reads them (a relative
/// path as if from `/`).
pub fn under_proc(path: &str) -> bool {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.first() == Some(&"proc")
}

/// A working directory under /proc is how runc's "Leaky Vessels"
/// (CVE-2024-21626) reached the host: `/proc/self/fd/N` named a host
/// directory the runtime still held open. This proxy exists for hosts whose
/// runtime may be older than the fix.
fn working_dir(field: &str, dir: &str, role: &str) -> Result<(), Why> {
    if under_proc(dir) {
        return deny(format!(
            "{field} {dir:?} is under /proc, which is not allowed for role {role} (the runtime's open files there lead to the host: CVE-2024-21626)"
        ));
    }
    Ok(())
}

/// Labels an image may carry under agentctl's prefix: information only,
/// never read as ownership.
const IMAGE_LABELS_ALLOWED: &[&str] = &["io.agentctl.extra-ca-certs"];

/// The image a create names, looked up at the daemon; its labels and
/// working directory become the container's. An image the daemon does not
/// have is a 404, as from the daemon, so that the docker CLI pulls it and
/// tries again (and this check runs on what it pulled).
async fn create_image(cx: &Ctx<'_>, up: &mut Lazy, image: &str) -> Result<Value, Why> {
    let role = cx.role;
    let Some(img) = lookup(cx, up, &["images", image, "json"]).await? else {
        return not_found("image", image);
    };
    if let Some(Value::Object(labels)) = img.pointer("/Config/Labels")
        && let Some(k) = labels
            .keys()
            .find(|k| reserved_label(k) && !IMAGE_LABELS_ALLOWED.contains(&k.as_str()))
    {
        return deny(format!(
            "image {image}: its label {k:?} would pass to the container, and {LABEL_PREFIX}* labels are set by agentctl, not by images (role {role})"
        ));
    }
    Ok(img)
}

/// Endpoint settings under a global role: it may join any network, but not
/// set what the proxy refuses in `HostConfig` either.
fn any_endpoint(field: &str, ep: &types::EndpointSettings, role: &str) -> Result<(), Why> {
    if ep.driver_opts.as_ref().is_some_and(|o| !o.is_empty()) {
        return deny(format!(
            "{field}.DriverOpts are not allowed for role {role} (the daemon reads interface sysctls from them)"
        ));
    }
    Ok(())
}

/// Checks a session child's endpoint on the network `net` (a full id,
/// already checked): `own` for one of the session's networks, otherwise
/// `none` or the default bridge. Every field of Go's `EndpointSettings` is
/// decided here; the daemon picks the network by `NetworkID` before the
/// endpoint's key, so it ends up as the full id of the network checked.
async fn session_endpoint(
    cx: &Ctx<'_>,
    up: &mut Lazy,
    field: &str,
    net: &str,
    own: bool,
    ep: &mut types::EndpointSettings,
) -> Result<(), Why> {
    let role = cx.role;
    let types::EndpointSettings {
        // Which network: must be the one checked.
        network_id,
        // Addresses on the network: the session's own networks only; on
        // the default bridge they would claim another container's address
        // (and 169.254.0.0/16 link-local ones any address at all).
        ipam_config,
        mac_address,
        // Legacy links reach containers by name, the session's or not.
        links,
        // Docker 25+ reads interface sysctls from them.
        driver_opts,
        // Set by the daemon; a client's value is at best ignored.
        endpoint_id,
        gateway,
        ip_address,
        ip_prefix_len,
        ipv6_gateway,
        global_ipv6_address,
        global_ipv6_prefix_len,
        dns_names,
        // Names on this network, and which of the container's networks
        // gives the default route: both choose among checked networks.
        aliases: _,
        gw_priority: _,
    } = ep;
    if let Some(given) = network_id.as_deref().filter(|g| !g.is_empty())
        && given != net
    {
        let same = match lookup(cx, up, &["networks", given]).await? {
            Some(n) => n.get("Id").and_then(Value::as_str) == Some(net),
            None => false,
        };
        if !same {
            return deny(format!(
                "{field}.NetworkID {given:?} names another network than the one checked (role {role}); leave it empty"
            ));
        }
    }
    *network_id = Some(net.to_string());
    let set = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.is_empty());
    for (name, present) in [
        ("EndpointID", set(endpoint_id)),
        ("Gateway", set(gateway)),
        ("IPAddress", set(ip_address)),
        ("IPPrefixLen", ip_prefix_len.unwrap_or(0) != 0),
        ("IPv6Gateway", set(ipv6_gateway)),
        ("GlobalIPv6Address", set(global_ipv6_address)),
        (
            "GlobalIPv6PrefixLen",
            global_ipv6_prefix_len.unwrap_or(0) != 0,
        ),
        (
            "DNSNames",
            dns_names.as_ref().is_some_and(|d| !d.is_empty()),
        ),
    ] {
        if present {
            return deny(format!(
                "{field}.{name} is set by the daemon, not by clients (role {role})"
            ));
        }
    }
    if links.as_ref().is_some_and(|l| !l.is_empty()) {
        return deny(format!(
            "{field}.Links are not allowed for role {role}; use a network alias"
        ));
    }
    if driver_opts.as_ref().is_some_and(|o| !o.is_empty()) {
        return deny(format!(
            "{field}.DriverOpts are not allowed for role {role} (the daemon reads interface sysctls from them)"
        ));
    }
    if !own {
        let ipam = ipam_config.as_ref().is_some_and(|i| {
            set(&i.ipv4_address)
                || set(&i.ipv6_address)
                || i.link_local_ips.as_ref().is_some_and(|l| !l.is_empty())
        });
        if ipam || set(mac_address) {
            return deny(format!(
                "{field}: IPAMConfig and MacAddress are allowed only on the session's own networks (role {role})"
            ));
        }
    }
    Ok(())
}

/// How many containers the session holds now, at the daemon (all states).
async fn count_children(cx: &Ctx<'_>, s: &SessionScope, up: &mut Lazy) -> Result<usize, Why> {
    let filters = encode_filters(&BTreeMap::from([(
        "label".to_string(),
        s.label_filters().to_vec(),
    )]));
    let target = crate::route::build_target(
        &cx.cfg.api_string(),
        &["containers", "json"],
        &[("all".into(), "1".into()), ("filters".into(), filters)],
    );
    let (status, body) = upstream::get(up.sender().await?, "GET", &target).await?;
    if status != 200 {
        return Err(Why::Fail(UpstreamError::Status {
            what: target,
            status,
        }));
    }
    let list: Value = serde_json::from_slice(&body).map_err(|e| {
        Why::Fail(UpstreamError::Unexpected {
            what: target.clone(),
            why: e.to_string(),
        })
    })?;
    let Some(list) = list.as_array() else {
        return Err(Why::Fail(UpstreamError::Unexpected {
            what: target,
            why: "not a list".into(),
        }));
    };
    Ok(list.iter().filter(|c| s.owns(c.get("Labels"))).count())
}

async fn container_create(
    cx: &Ctx<'_>,
    up: &mut Lazy,
    c: &mut types::ContainerCreate,
) -> Result<(), Why> {
    let role = cx.role;
    check_labels(&c.labels, "Config", role)?;
    if let Some(s) = cx.session
        && let Some(max) = s.limits.containers
    {
        // Counted at the daemon; the server lets one create of a session
        // through at a time, so two cannot both take the last place.
        let n = count_children(cx, s, up).await?;
        if n >= max as usize {
            return deny(format!(
                "the session already holds {n} containers, the most its profile allows (limits.containers: {max}); remove one (docker rm), or raise limits.containers in the profile"
            ));
        }
    }
    let image = match c.image.clone().filter(|i| !i.is_empty()) {
        Some(name) => {
            let img = create_image(cx, up, &name).await?;
            Some((name, img))
        }
        None => None,
    };
    match c.working_dir.as_deref().filter(|w| !w.is_empty()) {
        Some(wd) => working_dir("Config.WorkingDir", wd, role)?,
        None => {
            if let Some((name, img)) = &image
                && let Some(wd) = img.pointer("/Config/WorkingDir").and_then(Value::as_str)
            {
                working_dir(
                    &format!("image {name}: its WorkingDir (Config.WorkingDir)"),
                    wd,
                    role,
                )?;
            }
        }
    }
    let h = c.host_config.get_or_insert_with(Default::default);
    if let Some(s) = cx.session {
        restart_policy(&h.restart_policy, "HostConfig.RestartPolicy", role)?;
        session_resources(resources!(h), s, "HostConfig.", role, false)?;
        if let Some(v) = h.shm_size
            && v < 0
        {
            return deny(format!(
                "HostConfig.ShmSize {v} is not allowed for role {role}: a negative size means nothing"
            ));
        }
    }

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
    // Whether the container's own network is one of the session's.
    let mut own_mode = false;
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
                    own_mode = true;
                }
            }
        }
    }
    // The old top-level MAC address applies to the container's own network.
    if cx.session.is_some() && !own_mode && c.mac_address.as_deref().is_some_and(|m| !m.is_empty())
    {
        return deny(format!(
            "Config.MacAddress is allowed only on the session's own networks (role {role})"
        ));
    }
    if let Some(nc) = c.networking_config.as_mut()
        && let Some(eps) = nc.endpoints_config.take()
    {
        let mut out = BTreeMap::new();
        for (name, mut ep) in eps {
            let field = format!("NetworkingConfig.EndpointsConfig.{name}");
            let Some(s) = cx.session else {
                any_endpoint(&field, &ep, role)?;
                out.insert(name, ep);
                continue;
            };
            let (key, net, own) = match name.as_str() {
                // The CLI names the default network here too; a session
                // without network has none to join.
                "bridge" | "default" if s.network == NetworkMode::None => continue,
                "none" | "bridge" | "default" => {
                    // "default" is the daemon's default network: the bridge.
                    let lookup_name = if name == "none" { "none" } else { "bridge" };
                    let Some(n) = lookup(cx, up, &["networks", lookup_name]).await? else {
                        return not_found("network", lookup_name);
                    };
                    let id = n.get("Id").and_then(Value::as_str).unwrap_or_default();
                    (name.clone(), id.to_string(), false)
                }
                _ => {
                    let full = own_network(cx, s, up, &name).await?;
                    (full.clone(), full, true)
                }
            };
            session_endpoint(cx, up, &field, &net, own, &mut ep).await?;
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
            if let Some((_, img)) = &image
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
        // The image checked is the image run: by its id, so that a pull
        // that retags the name in between changes nothing.
        if let Some((_, img)) = &image
            && let Some(id) = img.get("Id").and_then(Value::as_str)
        {
            c.image = Some(id.to_string());
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
    kernel_filesystems(cx, field, src, p)?;
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

/// The host's kernel interfaces, which no container may bind from, by any
/// role: /proc (`/proc/PID/root` is another process's root, read by the
/// daemon in its own namespace, so nothing checked here holds for it), /sys
/// and /dev. Called with each step of a bind source's resolution.
const HOST_FILESYSTEM_DIRS: &[&str] = &["proc", "sys", "dev"];

fn host_filesystem(field: &str, src: &str, p: &Path, role: &str) -> Result<(), Why> {
    // `components` reads `//proc` and `/proc/` as `/proc`; the steps of a
    // resolution have no `.` or `..`.
    let mut c = p.components();
    if c.next() == Some(Component::RootDir)
        && let Some(Component::Normal(first)) = c.next()
        && let Some(dir) = HOST_FILESYSTEM_DIRS.iter().find(|d| first == **d)
    {
        let via = if Path::new(src) == p {
            String::new()
        } else {
            format!(" (through {})", p.display())
        };
        return deny(format!(
            "{field}: {src:?} is under /{dir}{via}, the host's kernel interface, which is not allowed for role {role}"
        ));
    }
    Ok(())
}

/// Filesystems that are the kernel's interfaces (by their mountinfo type),
/// wherever they are mounted.
const KERNEL_FILESYSTEMS: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "mqueue",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "bpf",
    "configfs",
    "efivarfs",
    "pstore",
    "fusectl",
    "binfmt_misc",
];

/// One line of /proc/self/mountinfo: where, and what.
struct MountPoint {
    point: PathBuf,
    fstype: String,
}

fn mount_points() -> std::io::Result<Vec<MountPoint>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = fields.get(4)?;
            let sep = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(sep + 1)?;
            Some(MountPoint {
                point: PathBuf::from(unescape_mountinfo(point)),
                fstype: fstype.to_string(),
            })
        })
        .collect())
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every path the kernel passes through when it resolves `p`, one
/// component at a time, symlinks followed: each is a path without symlinks
/// above its last component. Stops (leaving the error to the caller's own
/// resolution) at a component that cannot be read.
fn resolution_steps(p: &Path) -> Vec<PathBuf> {
    let mut steps = Vec::new();
    let mut current = PathBuf::from("/");
    let mut todo: Vec<std::ffi::OsString> = p
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            current.pop();
            continue;
        }
        let next = current.join(&name);
        steps.push(next.clone());
        match std::fs::symlink_metadata(&next) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                let Ok(target) = std::fs::read_link(&next) else {
                    break;
                };
                // The kernel's own limit on links in one resolution.
                if links > 40 {
                    break;
                }
                if target.is_absolute() {
                    current = PathBuf::from("/");
                }
                todo.extend(target.components().rev().filter_map(|c| match c {
                    Component::Normal(n) => Some(n.to_os_string()),
                    Component::ParentDir => Some("..".into()),
                    _ => None,
                }));
            }
            Ok(_) => current = next,
            Err(_) => break,
        }
    }
    steps
}

/// The mount a path without symlinks is on: the longest mount point above
/// it, the later of equal ones (mounted over the earlier).
fn mount_of<'a>(mounts: &'a [MountPoint], p: &Path) -> Option<&'a MountPoint> {
    mounts
        .iter()
        .filter(|m| p.starts_with(&m.point))
        .max_by_key(|m| m.point.components().count())
}

/// A bind source may not pass through /proc, /sys or /dev, or a kernel
/// filesystem mounted elsewhere, at any step of its resolution (a symlink
/// to /proc, then `/proc/PID/root`, would be followed by the daemon in its
/// own namespace); it may not contain a mount of one; and it may not be or
/// contain an engine socket under another path (a bind mount of /run):
/// sockets and the directories above them are compared by device and
/// inode, not only by path.
fn kernel_filesystems(cx: &Ctx<'_>, field: &str, src: &str, p: &Path) -> Result<(), Why> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let role = cx.role;
    // The one node of /dev a bind may take, to hide a file: it is the null
    // device (1:3), which every container may open anyway.
    if p == Path::new("/dev/null")
        && std::fs::symlink_metadata(p)
            .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0x103)
    {
        return Ok(());
    }
    let mounts = match mount_points() {
        Ok(m) => m,
        Err(e) => {
            return deny(format!(
                "{field}: {src:?} cannot be checked: /proc/self/mountinfo: {e} (role {role})"
            ));
        }
    };
    let steps = resolution_steps(p);
    for step in &steps {
        host_filesystem(field, src, step, role)?;
        if let Some(m) = mount_of(&mounts, step)
            && KERNEL_FILESYSTEMS.contains(&m.fstype.as_str())
        {
            return deny(format!(
                "{field}: {src:?} reaches the host's {} filesystem (mounted at {}), which is not allowed for role {role}",
                m.fstype,
                m.point.display()
            ));
        }
    }
    // Resolved completely: what is under it matters too. (If it was not,
    // the caller's own resolution refuses it.)
    let Ok(real) = p.canonicalize() else {
        return Ok(());
    };
    let real = real.as_path();
    if let Some(m) = mounts
        .iter()
        .find(|m| m.point.starts_with(real) && KERNEL_FILESYSTEMS.contains(&m.fstype.as_str()))
    {
        return deny(format!(
            "{field}: {src:?} contains the host's {} filesystem at {}, which is not allowed for role {role}",
            m.fstype,
            m.point.display()
        ));
    }
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let mut socket_ids = Vec::new();
    for sock in engine_sockets(cx) {
        let sock = sock.canonicalize().unwrap_or(sock);
        socket_ids.extend(sock.ancestors().filter_map(id));
    }
    let under: Vec<&Path> = std::iter::once(real)
        .chain(
            mounts
                .iter()
                .filter(|m| m.point.starts_with(real))
                .map(|m| m.point.as_path()),
        )
        .collect();
    for p in under {
        if let Some(i) = id(p)
            && socket_ids.contains(&i)
        {
            return deny(format!(
                "{field}: {src:?} would give the container the engine's socket (at {}; role {role})",
                p.display()
            ));
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
    // A volume the mount creates (anonymous, or named and new) gets these.
    if let Some(vo) = &m.volume_options {
        check_labels(&vo.labels, &format!("{field}.VolumeOptions"), role)?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> SessionScope {
        SessionScope {
            id: "s".into(),
            workspace: PathBuf::from("/nonexistent"),
            masked: Vec::new(),
            limits: crate::session::ChildLimits {
                memory: Some(1 << 30),
                nano_cpus: Some(2_000_000_000),
                pids: Some(100),
                containers: Some(20),
            },
            network: NetworkMode::None,
            read_only: Vec::new(),
            workspace_writable: true,
        }
    }

    fn create(h: &mut types::HostConfig) -> Result<(), String> {
        session_resources(resources!(h), &scope(), "HostConfig.", "session", false).map_err(|e| {
            match e {
                Why::Deny(d) => d.reason,
                Why::Fail(e) => e.to_string(),
            }
        })
    }

    fn update(u: &mut types::ContainerUpdate) -> Result<(), String> {
        session_resources(resources!(u), &scope(), "", "session", true).map_err(|e| match e {
            Why::Deny(d) => d.reason,
            Why::Fail(e) => e.to_string(),
        })
    }

    #[test]
    fn every_unlimited_spelling_becomes_the_cap() {
        for pids in [None, Some(0), Some(-1)] {
            let mut h = types::HostConfig {
                pids_limit: pids,
                memory: pids,
                nano_cpus: pids.filter(|p| *p >= 0),
                memory_swap: pids,
                ..Default::default()
            };
            if h.memory == Some(-1) {
                h.memory = None;
            }
            create(&mut h).unwrap();
            assert_eq!(h.pids_limit, Some(100), "{pids:?}");
            assert_eq!(h.memory, Some(1 << 30), "{pids:?}");
            assert_eq!(h.memory_swap, Some(1 << 30), "{pids:?}");
            assert_eq!(h.nano_cpus, Some(2_000_000_000), "{pids:?}");
        }
        let mut h = types::HostConfig {
            memory: Some(64 << 20),
            memory_swap: Some(-1),
            ..Default::default()
        };
        create(&mut h).unwrap();
        assert_eq!(h.memory_swap, Some(64 << 20));
    }

    #[test]
    fn negatives_without_a_meaning_and_more_than_the_cap_are_refused() {
        for (h, needle) in [
            (
                types::HostConfig {
                    pids_limit: Some(-5),
                    ..Default::default()
                },
                "PidsLimit -5",
            ),
            (
                types::HostConfig {
                    pids_limit: Some(101),
                    ..Default::default()
                },
                "above the session's limit of 100",
            ),
            (
                types::HostConfig {
                    memory: Some(-1),
                    ..Default::default()
                },
                "Memory -1",
            ),
            (
                types::HostConfig {
                    memory: Some(64 << 20),
                    memory_swap: Some(128 << 20),
                    ..Default::default()
                },
                "no swap beyond their memory",
            ),
            (
                types::HostConfig {
                    memory_swap: Some(-2),
                    ..Default::default()
                },
                "MemorySwap -2",
            ),
            (
                types::HostConfig {
                    memory_reservation: Some(2 << 30),
                    ..Default::default()
                },
                "MemoryReservation",
            ),
            (
                types::HostConfig {
                    cpu_realtime_runtime: Some(-1),
                    ..Default::default()
                },
                "real-time",
            ),
            (
                types::HostConfig {
                    cpu_quota: Some(-1),
                    ..Default::default()
                },
                "CpuQuota",
            ),
            (
                types::HostConfig {
                    ulimits: Some(vec![types::Ulimit {
                        name: Some("RTPRIO".into()),
                        soft: Some(1),
                        hard: Some(1),
                    }]),
                    ..Default::default()
                },
                "Ulimits",
            ),
            (
                types::HostConfig {
                    ulimits: Some(vec![types::Ulimit {
                        name: Some("nofile".into()),
                        soft: Some(-5),
                        hard: Some(-1),
                    }]),
                    ..Default::default()
                },
                "-5",
            ),
        ] {
            let mut h = h;
            let err = create(&mut h).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn updates_leave_what_they_do_not_name() {
        let mut u = types::ContainerUpdate {
            nano_cpus: Some(1_000_000_000),
            memory: Some(0),
            memory_swap: Some(0),
            ..Default::default()
        };
        update(&mut u).unwrap();
        assert_eq!(
            (u.memory, u.memory_swap, u.pids_limit),
            (Some(0), Some(0), None)
        );
        let mut u = types::ContainerUpdate {
            pids_limit: Some(0),
            memory: Some(64 << 20),
            memory_swap: Some(-1),
            ..Default::default()
        };
        update(&mut u).unwrap();
        assert_eq!(u.pids_limit, Some(100));
        assert_eq!(u.memory_swap, Some(64 << 20));
        let mut u = types::ContainerUpdate {
            memory_swap: Some(-1),
            ..Default::default()
        };
        assert!(update(&mut u).unwrap_err().contains("only with Memory"));
    }

    #[test]
    fn reserved_labels_in_any_spelling_go_would_fold() {
        for k in [
            "io.agentctl.session",
            "io.agentctL.child",
            "IO.AGENTCTL.managed",
            "Io.AgentCtl.x",
        ] {
            assert!(reserved_label(k), "{k}");
        }
        assert!(!reserved_label("io.agentctl"));
        assert!(!reserved_label("org.io.agentctl.x"));
    }

    #[test]
    fn working_dirs_are_read_as_the_kernel_reads_them() {
        for p in [
            "/proc",
            "/proc/",
            "//proc/self/fd/7",
            "/./proc",
            "/x/../proc/1/cwd",
            "/../../proc",
            "proc/self",
            "/proc//self",
        ] {
            assert!(under_proc(p), "{p}");
        }
        for p in ["/", "", "/w", "/procx", "/x/proc", "/proc/../etc", "/sys"] {
            assert!(!under_proc(p), "{p}");
        }
    }

    #[test]
    fn mountinfo_escapes_are_read_back() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo(r"/x\134y"), r"/x\y");
        assert_eq!(unescape_mountinfo(r"/tail\04"), r"/tail\04");
        let mounts = mount_points().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m.point == Path::new("/proc") && m.fstype == "proc")
        );
    }

    #[test]
    fn resolution_steps_follow_each_link() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        std::os::unix::fs::symlink("/proc", base.join("p")).unwrap();
        std::os::unix::fs::symlink("p/self", base.join("rel")).unwrap();
        let steps = resolution_steps(&base.join("rel/root"));
        assert!(steps.contains(&PathBuf::from("/proc")), "{steps:?}");
        assert!(steps.contains(&PathBuf::from("/proc/self")), "{steps:?}");
        // A loop ends.
        std::os::unix::fs::symlink("loop", base.join("loop")).unwrap();
        assert!(resolution_steps(&base.join("loop")).len() < 50);
    }
}

#[cfg(test)]
mod agentctl_image_tests {
    use super::names_agentctl_image;

    #[test]
    fn agentctl_image_names_by_any_spelling() {
        for r in [
            "agentctl/hostroot:abc",
            "docker.io/agentctl/agent-base",
            "index.docker.io/agentctl/x@sha256:00",
            "registry-1.docker.io/agentctl/x",
            "AgentCtl/x",
        ] {
            assert!(names_agentctl_image(r), "{r}");
        }
        for r in [
            "agentctlx/y",
            "localhost:5000/agentctl/x",
            "library/agentctl",
            "debian",
        ] {
            assert!(!names_agentctl_image(r), "{r}");
        }
    }
}
