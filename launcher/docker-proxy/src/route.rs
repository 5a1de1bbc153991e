//! Request targets: the path decoded and routed the way the daemon's router
//! would route it, the API version taken off the front, and the query string
//! parsed into single-valued parameters, so that the proxy can rebuild one
//! canonical target from what it checked.

use std::fmt::Write as _;

/// One Docker Engine API operation. Roles allow these by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Ping,
    Version,
    Info,
    Events,
    SystemDf,
    Auth,
    ContainersList,
    ContainersCreate,
    ContainersPrune,
    ContainerInspect,
    ContainerTop,
    ContainerLogs,
    ContainerChanges,
    ContainerExport,
    ContainerStats,
    ContainerArchive,
    ContainerResize,
    ContainerStart,
    ContainerStop,
    ContainerRestart,
    ContainerKill,
    ContainerUpdate,
    ContainerRename,
    ContainerPause,
    ContainerUnpause,
    ContainerAttach,
    ContainerAttachWs,
    ContainerWait,
    ContainerRemove,
    ContainerExec,
    ExecStart,
    ExecResize,
    ExecInspect,
    ImagesList,
    ImagesPull,
    ImagesSearch,
    ImagesPrune,
    ImagesLoad,
    ImagesExport,
    ImageInspect,
    ImageHistory,
    ImagePush,
    ImageTag,
    ImageRemove,
    Build,
    BuildPrune,
    Commit,
    DistributionInspect,
    NetworksList,
    NetworksCreate,
    NetworksPrune,
    NetworkInspect,
    NetworkRemove,
    NetworkConnect,
    NetworkDisconnect,
    VolumesList,
    VolumesCreate,
    VolumesPrune,
    VolumeInspect,
    VolumeRemove,
    Session,
    Grpc,
}

use Endpoint::*;

/// What a route takes as its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// Nothing; a body is refused.
    Empty,
    /// JSON, decoded into a typed struct and re-encoded.
    Json,
    /// JSON that the daemon reads only if present (exec start, auth).
    OptionalJson,
    /// Bytes the daemon reads as a stream (tar archives): passed through
    /// unread, so only roles that trust the client may allow these routes.
    Opaque,
}

struct Spec {
    endpoint: Endpoint,
    name: &'static str,
    params: &'static [&'static str],
    body: BodyKind,
}

const fn spec(
    endpoint: Endpoint,
    name: &'static str,
    params: &'static [&'static str],
    body: BodyKind,
) -> Spec {
    Spec {
        endpoint,
        name,
        params,
        body,
    }
}

use BodyKind::{Empty, Json, Opaque, OptionalJson};

const SPECS: &[Spec] = &[
    spec(Ping, "ping", &[], Empty),
    spec(Version, "version", &[], Empty),
    spec(Info, "info", &[], Empty),
    spec(Events, "events", &["since", "until", "filters"], Empty),
    spec(SystemDf, "system.df", &["type"], Empty),
    spec(Auth, "auth", &[], OptionalJson),
    spec(
        ContainersList,
        "containers.list",
        &["all", "limit", "size", "filters", "before", "since"],
        Empty,
    ),
    spec(
        ContainersCreate,
        "containers.create",
        &["name", "platform"],
        Json,
    ),
    spec(ContainersPrune, "containers.prune", &["filters"], Empty),
    spec(ContainerInspect, "containers.inspect", &["size"], Empty),
    spec(ContainerTop, "containers.top", &["ps_args"], Empty),
    spec(
        ContainerLogs,
        "containers.logs",
        &[
            "follow",
            "stdout",
            "stderr",
            "since",
            "until",
            "timestamps",
            "tail",
            "details",
        ],
        Empty,
    ),
    spec(ContainerChanges, "containers.changes", &[], Empty),
    spec(ContainerExport, "containers.export", &[], Empty),
    spec(
        ContainerStats,
        "containers.stats",
        &["stream", "one-shot"],
        Empty,
    ),
    spec(
        ContainerArchive,
        "containers.archive",
        &["path", "noOverwriteDirNonDir", "copyUIDGID"],
        Opaque,
    ),
    spec(ContainerResize, "containers.resize", &["h", "w"], Empty),
    spec(ContainerStart, "containers.start", &["detachKeys"], Empty),
    spec(ContainerStop, "containers.stop", &["t", "signal"], Empty),
    spec(
        ContainerRestart,
        "containers.restart",
        &["t", "signal"],
        Empty,
    ),
    spec(ContainerKill, "containers.kill", &["signal"], Empty),
    spec(ContainerUpdate, "containers.update", &[], Json),
    spec(ContainerRename, "containers.rename", &["name"], Empty),
    spec(ContainerPause, "containers.pause", &[], Empty),
    spec(ContainerUnpause, "containers.unpause", &[], Empty),
    spec(
        ContainerAttach,
        "containers.attach",
        &["detachKeys", "logs", "stream", "stdin", "stdout", "stderr"],
        Empty,
    ),
    spec(
        ContainerAttachWs,
        "containers.attach-ws",
        &["detachKeys", "logs", "stream", "stdin", "stdout", "stderr"],
        Empty,
    ),
    spec(ContainerWait, "containers.wait", &["condition"], Empty),
    spec(
        ContainerRemove,
        "containers.remove",
        &["v", "force", "link"],
        Empty,
    ),
    spec(ContainerExec, "containers.exec", &[], Json),
    spec(ExecStart, "exec.start", &[], OptionalJson),
    spec(ExecResize, "exec.resize", &["h", "w"], Empty),
    spec(ExecInspect, "exec.inspect", &[], Empty),
    spec(
        ImagesList,
        "images.list",
        &["all", "filters", "shared-size", "digests", "manifests"],
        Empty,
    ),
    spec(
        ImagesPull,
        "images.pull",
        &["fromImage", "tag", "platform"],
        Empty,
    ),
    spec(
        ImagesSearch,
        "images.search",
        &["term", "limit", "filters"],
        Empty,
    ),
    spec(ImagesPrune, "images.prune", &["filters"], Empty),
    spec(ImagesLoad, "images.load", &["quiet", "platform"], Opaque),
    spec(ImagesExport, "images.export", &["names", "platform"], Empty),
    spec(ImageInspect, "images.inspect", &["manifests"], Empty),
    spec(ImageHistory, "images.history", &["platform"], Empty),
    spec(ImagePush, "images.push", &["tag", "platform"], Empty),
    spec(ImageTag, "images.tag", &["repo", "tag"], Empty),
    spec(ImageRemove, "images.remove", &["force", "noprune"], Empty),
    spec(
        Build,
        "build",
        &[
            "dockerfile",
            "t",
            "extrahosts",
            "remote",
            "q",
            "nocache",
            "cachefrom",
            "pull",
            "rm",
            "forcerm",
            "memory",
            "memswap",
            "cpushares",
            "cpusetcpus",
            "cpuperiod",
            "cpuquota",
            "buildargs",
            "shmsize",
            "squash",
            "labels",
            "networkmode",
            "platform",
            "target",
            "outputs",
            "version",
        ],
        Opaque,
    ),
    spec(
        BuildPrune,
        "build.prune",
        &["keep-storage", "all", "filters"],
        Empty,
    ),
    spec(
        Commit,
        "commit",
        &[
            "container",
            "repo",
            "tag",
            "comment",
            "author",
            "pause",
            "changes",
        ],
        Opaque,
    ),
    spec(DistributionInspect, "distribution.inspect", &[], Empty),
    spec(NetworksList, "networks.list", &["filters"], Empty),
    spec(NetworksCreate, "networks.create", &[], Json),
    spec(NetworksPrune, "networks.prune", &["filters"], Empty),
    spec(
        NetworkInspect,
        "networks.inspect",
        &["verbose", "scope"],
        Empty,
    ),
    spec(NetworkRemove, "networks.remove", &[], Empty),
    spec(NetworkConnect, "networks.connect", &[], Json),
    spec(NetworkDisconnect, "networks.disconnect", &[], Json),
    spec(VolumesList, "volumes.list", &["filters"], Empty),
    spec(VolumesCreate, "volumes.create", &[], Json),
    spec(VolumesPrune, "volumes.prune", &["filters"], Empty),
    spec(VolumeInspect, "volumes.inspect", &[], Empty),
    spec(VolumeRemove, "volumes.remove", &["force"], Empty),
    spec(Session, "session", &[], Empty),
    spec(Grpc, "grpc", &[], Empty),
];

impl Endpoint {
    fn spec(self) -> &'static Spec {
        SPECS
            .iter()
            .find(|s| s.endpoint == self)
            .expect("every endpoint has a spec")
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    pub fn params(self) -> &'static [&'static str] {
        self.spec().params
    }

    pub fn body(self) -> BodyKind {
        self.spec().body
    }

    pub fn from_name(name: &str) -> Option<Endpoint> {
        SPECS.iter().find(|s| s.name == name).map(|s| s.endpoint)
    }

    pub fn names() -> impl Iterator<Item = &'static str> {
        SPECS.iter().map(|s| s.name)
    }

    /// Routes whose success hands the connection over to a raw stream.
    pub fn hijacks(self) -> bool {
        matches!(self, ContainerAttach | ExecStart | Session | Grpc)
    }
}

/// A request target, decoded and routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub endpoint: Endpoint,
    /// The object the path names (container, exec, image, network, volume).
    pub object: Option<String>,
    /// The API version the client asked for, as the daemon would read it.
    pub client_version: Option<(u64, u64)>,
    /// Query parameters, decoded, each given once.
    pub query: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("{0}")]
    Malformed(String),
    #[error("no route for {method} {path}")]
    Unknown { method: String, path: String },
}

fn malformed(msg: impl Into<String>) -> RouteError {
    RouteError::Malformed(msg.into())
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decodes one component. `plus_is_space` for query strings, as Go's
/// url.ParseQuery reads them.
fn percent_decode(s: &str, plus_is_space: bool, what: &str) -> Result<String, RouteError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (h, l) = match (
                    bytes.get(i + 1).and_then(|&b| hex(b)),
                    bytes.get(i + 2).and_then(|&b| hex(b)),
                ) {
                    (Some(h), Some(l)) => (h, l),
                    _ => return Err(malformed(format!("invalid percent-encoding in the {what}"))),
                };
                out.push(h << 4 | l);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    if out.contains(&0) {
        return Err(malformed(format!("NUL byte in the {what}")));
    }
    String::from_utf8(out).map_err(|_| malformed(format!("the {what} is not UTF-8 once decoded")))
}

/// Reads a version the way the daemon's router and version middleware do:
/// `[0-9.]+` after decoding, each dot-separated part a number, missing or
/// empty parts counting as 0 (so `1.44.` is 1.44).
fn parse_version(v: &str) -> Option<(u64, u64)> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let mut parts = v.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    // A third part would compare as a patch level; the daemon's own versions
    // have none, so anything past the minor is dropped by the rewrite.
    Some((major, minor))
}

/// Decodes, checks and routes a request target.
pub fn parse(method: &str, target: &str) -> Result<Target, RouteError> {
    if target.contains('#') {
        return Err(malformed("fragment in the request target"));
    }
    let (raw_path, raw_query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let lower = raw_path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err(malformed("encoded slash in the path"));
    }
    let path = percent_decode(raw_path, false, "path")?;
    let mut segments: Vec<&str> = path.split('/').collect();
    if segments.first() != Some(&"") {
        return Err(malformed("path does not start with /"));
    }
    segments.remove(0);
    for s in &segments {
        match *s {
            "" => return Err(malformed("empty path segment (// or a trailing /)")),
            "." | ".." => return Err(malformed("dot-segment in the path")),
            _ => {}
        }
        if s.contains('\\') {
            return Err(malformed("backslash in the path"));
        }
    }
    let mut client_version = None;
    if let Some(first) = segments.first()
        && let Some(v) = first.strip_prefix('v')
        && !v.is_empty()
        && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    {
        client_version = Some(parse_version(v).ok_or_else(|| malformed("malformed API version"))?);
        segments.remove(0);
    }
    let (endpoint, object) = route(method, &segments).ok_or_else(|| RouteError::Unknown {
        method: method.to_string(),
        path: format!("/{}", segments.join("/")),
    })?;
    let query = parse_query(raw_query.unwrap_or(""))?;
    Ok(Target {
        endpoint,
        object,
        client_version,
        query,
    })
}

/// Splits a query string into single-valued parameters.
pub fn parse_query(raw: &str) -> Result<Vec<(String, String)>, RouteError> {
    if raw.contains(';') {
        // Older Go releases split query strings at ';' as well as '&'.
        return Err(malformed("';' in the query string"));
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k, true, "query string")?;
        let v = percent_decode(v, true, "query string")?;
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(malformed(format!(
                "query parameter {k:?} is given more than once"
            )));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn route(method: &str, seg: &[&str]) -> Option<(Endpoint, Option<String>)> {
    let one = |e: Endpoint| Some((e, None));
    let with = |e: Endpoint, o: &str| Some((e, Some(o.to_string())));
    let get = method == "GET";
    let post = method == "POST";
    let head = method == "HEAD";
    let delete = method == "DELETE";
    match seg {
        ["_ping"] if get || head => one(Ping),
        ["version"] if get => one(Version),
        ["info"] if get => one(Info),
        ["events"] if get => one(Events),
        ["system", "df"] if get => one(SystemDf),
        ["auth"] if post => one(Auth),
        ["containers", "json"] if get => one(ContainersList),
        ["containers", "create"] if post => one(ContainersCreate),
        ["containers", "prune"] if post => one(ContainersPrune),
        ["containers", id] if delete => with(ContainerRemove, id),
        ["containers", id, "attach", "ws"] if get => with(ContainerAttachWs, id),
        ["containers", id, action] => {
            let e = match (method, *action) {
                ("GET", "json") => ContainerInspect,
                ("GET", "top") => ContainerTop,
                ("GET", "logs") => ContainerLogs,
                ("GET", "changes") => ContainerChanges,
                ("GET", "export") => ContainerExport,
                ("GET", "stats") => ContainerStats,
                ("GET" | "HEAD" | "PUT", "archive") => ContainerArchive,
                ("POST", "resize") => ContainerResize,
                ("POST", "start") => ContainerStart,
                ("POST", "stop") => ContainerStop,
                ("POST", "restart") => ContainerRestart,
                ("POST", "kill") => ContainerKill,
                ("POST", "update") => ContainerUpdate,
                ("POST", "rename") => ContainerRename,
                ("POST", "pause") => ContainerPause,
                ("POST", "unpause") => ContainerUnpause,
                ("POST", "attach") => ContainerAttach,
                ("POST", "wait") => ContainerWait,
                ("POST", "exec") => ContainerExec,
                _ => return None,
            };
            with(e, id)
        }
        ["exec", id, "start"] if post => with(ExecStart, id),
        ["exec", id, "resize"] if post => with(ExecResize, id),
        ["exec", id, "json"] if get => with(ExecInspect, id),
        ["images", "json"] if get => one(ImagesList),
        ["images", "create"] if post => one(ImagesPull),
        ["images", "search"] if get => one(ImagesSearch),
        ["images", "prune"] if post => one(ImagesPrune),
        ["images", "load"] if post => one(ImagesLoad),
        ["images", "get"] if get => one(ImagesExport),
        ["images", name @ .., "json"] if get && !name.is_empty() => {
            with(ImageInspect, &name.join("/"))
        }
        ["images", name @ .., "history"] if get && !name.is_empty() => {
            with(ImageHistory, &name.join("/"))
        }
        ["images", name @ .., "push"] if post && !name.is_empty() => {
            with(ImagePush, &name.join("/"))
        }
        ["images", name @ .., "tag"] if post && !name.is_empty() => with(ImageTag, &name.join("/")),
        ["images", name @ .., "get"] if get && !name.is_empty() => {
            with(ImagesExport, &name.join("/"))
        }
        ["images", name @ ..] if delete && !name.is_empty() => with(ImageRemove, &name.join("/")),
        ["build"] if post => one(Build),
        ["build", "prune"] if post => one(BuildPrune),
        ["commit"] if post => one(Commit),
        ["distribution", name @ .., "json"] if get && !name.is_empty() => {
            with(DistributionInspect, &name.join("/"))
        }
        ["networks"] if get => one(NetworksList),
        ["networks", "create"] if post => one(NetworksCreate),
        ["networks", "prune"] if post => one(NetworksPrune),
        ["networks", id] if get => with(NetworkInspect, id),
        ["networks", id] if delete => with(NetworkRemove, id),
        ["networks", id, "connect"] if post => with(NetworkConnect, id),
        ["networks", id, "disconnect"] if post => with(NetworkDisconnect, id),
        ["volumes"] if get => one(VolumesList),
        ["volumes", "create"] if post => one(VolumesCreate),
        ["volumes", "prune"] if post => one(VolumesPrune),
        ["volumes", name] if get => with(VolumeInspect, name),
        ["volumes", name] if delete => with(VolumeRemove, name),
        ["session"] if post => one(Session),
        ["grpc"] if post => one(Grpc),
        _ => None,
    }
}

/// The path segments (after the version) of an operation on an object:
/// the inverse of routing.
pub fn path_of(ep: Endpoint, object: Option<&str>) -> Vec<String> {
    let o = object.unwrap_or_default().to_string();
    let v = |parts: &[&str]| parts.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    let on = |kind: &str, action: Option<&str>| {
        let mut p = vec![kind.to_string(), o.clone()];
        if let Some(a) = action {
            p.push(a.to_string());
        }
        p
    };
    match ep {
        Ping => v(&["_ping"]),
        Version => v(&["version"]),
        Info => v(&["info"]),
        Events => v(&["events"]),
        SystemDf => v(&["system", "df"]),
        Auth => v(&["auth"]),
        ContainersList => v(&["containers", "json"]),
        ContainersCreate => v(&["containers", "create"]),
        ContainersPrune => v(&["containers", "prune"]),
        ContainerInspect => on("containers", Some("json")),
        ContainerTop => on("containers", Some("top")),
        ContainerLogs => on("containers", Some("logs")),
        ContainerChanges => on("containers", Some("changes")),
        ContainerExport => on("containers", Some("export")),
        ContainerStats => on("containers", Some("stats")),
        ContainerArchive => on("containers", Some("archive")),
        ContainerResize => on("containers", Some("resize")),
        ContainerStart => on("containers", Some("start")),
        ContainerStop => on("containers", Some("stop")),
        ContainerRestart => on("containers", Some("restart")),
        ContainerKill => on("containers", Some("kill")),
        ContainerUpdate => on("containers", Some("update")),
        ContainerRename => on("containers", Some("rename")),
        ContainerPause => on("containers", Some("pause")),
        ContainerUnpause => on("containers", Some("unpause")),
        ContainerAttach => on("containers", Some("attach")),
        ContainerAttachWs => {
            let mut p = on("containers", Some("attach"));
            p.push("ws".into());
            p
        }
        ContainerWait => on("containers", Some("wait")),
        ContainerRemove => on("containers", None),
        ContainerExec => on("containers", Some("exec")),
        ExecStart => on("exec", Some("start")),
        ExecResize => on("exec", Some("resize")),
        ExecInspect => on("exec", Some("json")),
        ImagesList => v(&["images", "json"]),
        ImagesPull => v(&["images", "create"]),
        ImagesSearch => v(&["images", "search"]),
        ImagesPrune => v(&["images", "prune"]),
        ImagesLoad => v(&["images", "load"]),
        ImagesExport if object.is_none() => v(&["images", "get"]),
        ImagesExport => on("images", Some("get")),
        ImageInspect => on("images", Some("json")),
        ImageHistory => on("images", Some("history")),
        ImagePush => on("images", Some("push")),
        ImageTag => on("images", Some("tag")),
        ImageRemove => on("images", None),
        Build => v(&["build"]),
        BuildPrune => v(&["build", "prune"]),
        Commit => v(&["commit"]),
        DistributionInspect => on("distribution", Some("json")),
        NetworksList => v(&["networks"]),
        NetworksCreate => v(&["networks", "create"]),
        NetworksPrune => v(&["networks", "prune"]),
        NetworkInspect | NetworkRemove => on("networks", None),
        NetworkConnect => on("networks", Some("connect")),
        NetworkDisconnect => on("networks", Some("disconnect")),
        VolumesList => v(&["volumes"]),
        VolumesCreate => v(&["volumes", "create"]),
        VolumesPrune => v(&["volumes", "prune"]),
        VolumeInspect | VolumeRemove => on("volumes", None),
        Session => v(&["session"]),
        Grpc => v(&["grpc"]),
    }
}

/// Characters left as they are when a component is re-encoded: RFC 3986's
/// unreserved set, plus what image references hold (`:` and `@`) in paths.
fn encode_into(out: &mut String, s: &str, in_path: bool) {
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (in_path && matches!(b, b':' | b'@'));
        if keep {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Builds the canonical origin-form target: `/v{version}/{segments}?{query}`.
pub fn build_target(version: &str, segments: &[&str], query: &[(String, String)]) -> String {
    let mut out = format!("/v{version}");
    for s in segments {
        out.push('/');
        // Image names keep their slashes: they are several path segments.
        for (i, part) in s.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            encode_into(&mut out, part, true);
        }
    }
    if !query.is_empty() {
        out.push('?');
        for (i, (k, v)) in query.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            encode_into(&mut out, k, false);
            out.push('=');
            encode_into(&mut out, v, false);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_has_one_unique_name() {
        let mut names: Vec<_> = Endpoint::names().collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
        for s in SPECS {
            assert_eq!(Endpoint::from_name(s.name), Some(s.endpoint));
        }
    }

    #[test]
    fn versions_are_read_like_the_daemon() {
        for (t, v) in [
            ("/v1.41/_ping", Some((1, 41))),
            ("/v1.44./_ping", Some((1, 44))),
            ("/v%31.44/_ping", Some((1, 44))),
            ("/v1/_ping", Some((1, 0))),
            ("/_ping", None),
        ] {
            assert_eq!(parse("GET", t).unwrap().client_version, v, "{t}");
        }
    }

    #[test]
    fn refuses_path_tricks() {
        for t in [
            "/v1.41/containers/../images/json",
            "/v1.41/containers/%2e%2e/json",
            "/v1.41/containers/a%2Fb/json",
            "/v1.41//containers/json",
            "/v1.41/containers/json/",
            "/v1.41/containers/./json",
            "/v1.41/containers/a%00/json",
            "/v1.41/containers/a%zz/json",
            "/v1.41/containers/json?all=1&all=0",
            "/v1.41/containers/json?all=1;all=0",
            "/v1.41/containers/json#x",
        ] {
            assert!(
                matches!(parse("GET", t), Err(RouteError::Malformed(_))),
                "{t}"
            );
        }
    }

    #[test]
    fn routes_objects() {
        let t = parse("GET", "/v1.41/images/registry.local:5000/a/b:tag/json").unwrap();
        assert_eq!(t.endpoint, ImageInspect);
        assert_eq!(t.object.as_deref(), Some("registry.local:5000/a/b:tag"));
        let t = parse("POST", "/v1.41/containers/abc/exec").unwrap();
        assert_eq!(
            (t.endpoint, t.object.as_deref()),
            (ContainerExec, Some("abc"))
        );
        assert_eq!(parse("HEAD", "/_ping").unwrap().endpoint, Ping);
        assert!(matches!(
            parse("POST", "/v1.41/swarm/init"),
            Err(RouteError::Unknown { .. })
        ));
        assert!(matches!(
            parse("GET", "/v1.41/containers/create"),
            Err(RouteError::Unknown { .. })
        ));
    }

    #[test]
    fn query_is_decoded_and_rebuilt() {
        let t = parse(
            "GET",
            "/v1.41/containers/json?all=1&filters=%7B%22label%22%3A%5B%22a%3Db%22%5D%7D&x=a+b",
        )
        .unwrap();
        assert_eq!(t.query[1].1, r#"{"label":["a=b"]}"#);
        assert_eq!(t.query[2].1, "a b");
        let built = build_target("1.41", &["containers", "json"], &t.query);
        assert_eq!(
            built,
            "/v1.41/containers/json?all=1&filters=%7B%22label%22%3A%5B%22a%3Db%22%5D%7D&x=a%20b"
        );
        assert_eq!(
            build_target("1.41", &["images", "reg:5000/a/b:t", "json"], &[]),
            "/v1.41/images/reg:5000/a/b:t/json"
        );
    }
}
