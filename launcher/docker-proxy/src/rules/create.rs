//! Request bodies: container create and update, exec, networks and
//! volumes, decoded strictly and rebuilt within the role's and the
//! session's limits.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::body::{self, types};
use crate::route::Endpoint;
use crate::session::{LABEL_PREFIX, SessionScope};
use crate::upstream::UpstreamError;

use super::daemon::Daemon;
use super::decision::*;
use super::filters::*;
use super::labels::*;
use super::owner::*;
use super::paths::*;

/// Docker's defaults (moby's oci/defaults.go). A create that names its own
/// lists replaces these, so ours must keep every one of them.
pub(super) const DEFAULT_MASKED: &[&str] = &[
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

pub(super) const DEFAULT_READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Log options that only shape the local log file.
pub(super) const LOG_OPTIONS: &[&str] = &[
    "max-size",
    "max-file",
    "compress",
    "mode",
    "max-buffer-size",
    "labels",
    "env",
    "tag",
];

pub(super) const LOG_DRIVERS: &[&str] = &["", "json-file", "local", "none"];

/// The resource fields of a create's `HostConfig` or of an update, which
/// the daemon reads alike (moby's `container.Resources`).
pub(super) struct Resources<'a> {
    pub(super) memory: &'a mut Option<i64>,
    pub(super) memory_swap: &'a mut Option<i64>,
    pub(super) memory_reservation: &'a mut Option<i64>,
    pub(super) kernel_memory: &'a mut Option<i64>,
    pub(super) kernel_memory_tcp: &'a mut Option<i64>,
    pub(super) nano_cpus: &'a mut Option<i64>,
    pub(super) cpu_shares: &'a mut Option<i64>,
    pub(super) cpu_period: &'a mut Option<i64>,
    pub(super) cpu_quota: &'a mut Option<i64>,
    pub(super) cpu_realtime_period: &'a mut Option<i64>,
    pub(super) cpu_realtime_runtime: &'a mut Option<i64>,
    pub(super) pids_limit: &'a mut Option<i64>,
    pub(super) ulimits: &'a Option<Vec<types::Ulimit>>,
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

/// True when an image reference names a repository under Docker Hub's
/// `agentctl/` namespace, however it is spelled (`docker.io/`,
/// `index.docker.io/`, `registry-1.docker.io/`, any case: the daemon
/// refuses upper case, which is no reason to forward it).
pub(super) fn names_agentctl_image(reference: &str) -> bool {
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

pub(super) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Why> {
    body::decode(bytes).or_else(bad_body)
}

pub(super) async fn json_body(
    cx: &Ctx<'_>,
    up: &mut impl Daemon,
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

pub(super) fn network_create(cx: &Ctx<'_>, n: &mut types::NetworkCreate) -> Result<(), Why> {
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
    check_labels(cx, &n.labels, "network")?;
    if let Some(s) = cx.session {
        inject_labels(&mut n.labels, s);
        if s.children_offline() {
            // Containers of a session without network may talk to each
            // other, never out.
            n.internal = Some(true);
        }
    }
    Ok(())
}

pub(super) fn volume_create(cx: &Ctx<'_>, v: &mut types::VolumeCreate) -> Result<(), Why> {
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
    check_labels(cx, &v.labels, "volume")?;
    if let Some(s) = cx.session {
        inject_labels(&mut v.labels, s);
    }
    Ok(())
}

/// Resource limits a child may not raise or lift with `--ulimit`: both
/// let its processes take the CPU ahead of the host's (real-time and nice
/// priorities), which the CPU cap does not hold back.
pub(super) const ULIMITS_REFUSED: &[&str] = &["rtprio", "nice"];

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
pub(super) fn session_resources(
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
pub(super) fn restart_policy(
    rp: &Option<types::RestartPolicy>,
    field: &str,
    role: &str,
) -> Result<(), Why> {
    let name = rp.as_ref().and_then(|r| r.name.as_deref()).unwrap_or("");
    if name.is_empty() || name == "no" {
        return Ok(());
    }
    deny(format!(
        "{field} {name:?} is not allowed for role {role}: the daemon would restart the container by itself, without this proxy's checks and after the session has ended; use \"no\" (the default)"
    ))
}

/// A working directory under /proc is how runc's "Leaky Vessels"
/// (CVE-2024-21626) reached the host: `/proc/self/fd/N` named a host
/// directory the runtime still held open. This proxy exists for hosts whose
/// runtime may be older than the fix.
pub(super) fn working_dir(field: &str, dir: &str, role: &str) -> Result<(), Why> {
    if under_proc(dir) {
        return deny(format!(
            "{field} {dir:?} is under /proc, which is not allowed for role {role} (the runtime's open files there lead to the host: CVE-2024-21626)"
        ));
    }
    Ok(())
}

/// Labels an image may carry under agentctl's prefix: information only,
/// never read as ownership.
pub(super) const IMAGE_LABELS_ALLOWED: &[&str] = &["io.agentctl.extra-ca-certs"];

/// The image a create names, looked up at the daemon; its labels and
/// working directory become the container's. An image the daemon does not
/// have is a 404, as from the daemon, so that the docker CLI pulls it and
/// tries again (and this check runs on what it pulled).
pub(super) async fn create_image(
    cx: &Ctx<'_>,
    up: &mut impl Daemon,
    image: &str,
) -> Result<Value, Why> {
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
pub(super) fn any_endpoint(
    field: &str,
    ep: &types::EndpointSettings,
    role: &str,
) -> Result<(), Why> {
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
pub(super) async fn session_endpoint(
    cx: &Ctx<'_>,
    up: &mut impl Daemon,
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
pub(super) async fn count_children(
    cx: &Ctx<'_>,
    s: &SessionScope,
    up: &mut impl Daemon,
) -> Result<usize, Why> {
    let filters = encode_filters(&BTreeMap::from([(
        "label".to_string(),
        s.label_filters().to_vec(),
    )]));
    let target = crate::route::build_target(
        &cx.cfg.api_string(),
        &["containers", "json"],
        &[("all".into(), "1".into()), ("filters".into(), filters)],
    );
    let (status, body) = up.call("GET", &target, None).await?;
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

pub(super) async fn container_create(
    cx: &Ctx<'_>,
    up: &mut impl Daemon,
    c: &mut types::ContainerCreate,
) -> Result<(), Why> {
    let role = cx.role;
    check_labels(cx, &c.labels, "Config")?;
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
    // Security options: only no-new-privileges, which is then always on,
    // and for agentctl's launcher its sandbox's own seccomp profile.
    let mut sec = Vec::new();
    for opt in h.security_opt.take().unwrap_or_default() {
        let norm = opt.replace('=', ":");
        match norm.as_str() {
            "no-new-privileges" | "no-new-privileges:true" => {}
            _ if cx.cfg.role.agentctl_sandboxes
                && cx.session.is_none()
                && is_agentctl_seccomp(&opt) =>
            {
                sec.push(opt);
            }
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
            let none = s.children_offline();
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
                "bridge" | "default" if s.children_offline() => continue,
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

    // Volumes from other containers: the session's own only; for a global
    // role, only those whose binds this create could have asked for.
    if let Some(from) = h.volumes_from.take() {
        let mut out = Vec::new();
        for f in from {
            match cx.session {
                None => {
                    // What the lender binds, the borrower gets: judged
                    // as binds of this create (the engine's socket, the
                    // kernel's filesystems, the role's binds and roots).
                    check_volumes_from(cx, up, &f).await?;
                    out.push(f)
                }
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::labels::reserved_label;
    use super::super::paths::under_proc;
    use super::*;
    use crate::session::NetworkMode;

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

/// Whether a security option is `seccomp=` with agentctl's sandbox profile:
/// the same JSON document as this agentctl writes (compared as JSON, so
/// spacing and key order do not matter; nothing added, dropped or
/// reordered in its rules).
fn is_agentctl_seccomp(opt: &str) -> bool {
    let Some(json) = opt
        .strip_prefix("seccomp=")
        .or_else(|| opt.strip_prefix("seccomp:"))
    else {
        return false;
    };
    let ours: serde_json::Value = serde_json::from_str(&policy::seccomp::docker_json(
        &policy::seccomp::default_profile(),
    ))
    .expect("agentctl's own profile is JSON");
    serde_json::from_str::<serde_json::Value>(json).is_ok_and(|theirs| theirs == ours)
}
