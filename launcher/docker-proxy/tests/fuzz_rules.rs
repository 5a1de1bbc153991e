//! A long-running mutation fuzzer over the rules' decisions on container
//! create, network connect, exec create and update bodies: no input panics
//! the rules, and every body they forward holds the invariants the proxy
//! promises (docs/DOCKER-PROXY.md), for the session role (with and without
//! network) and the launcher role.
//!
//! It starts from the bodies the real docker CLI sends (src/body/testdata)
//! and a few written here, and mutates keys, values, types, case (Go's
//! folding included), nesting and duplicates. The rules' lookups at the
//! daemon are answered by a small in-process fake daemon on a unix socket:
//! this tests the rules' logic, not the daemon (tests/proxy.rs in agentctl
//! does that against the real one).
//!
//! `AGENTCTL_FUZZ_SECONDS` sets how long it runs (default 5, for CI);
//! `AGENTCTL_FUZZ_SEED` replays a run. Run it for ten minutes with:
//!
//! ```sh
//! AGENTCTL_FUZZ_SECONDS=600 cargo test --release -p docker-proxy --test fuzz_rules -- --nocapture
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use docker_proxy::body::{self, types};
use docker_proxy::role::{Binds, Role};
use docker_proxy::rules::{self, Decision, Forward};
use docker_proxy::session::{ChildLimits, LABEL_CHILD, LABEL_PREFIX, LABEL_SESSION, NetworkMode};
use docker_proxy::upstream::{Addr, Lazy};
use docker_proxy::{Config, SessionScope, http1, route};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SESSION: &str = "fz";
const MEMORY: i64 = 1 << 30;
const NANO_CPUS: i64 = 2_000_000_000;
const PIDS: i64 = 512;

fn hex_id(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

/// What the fake daemon knows.
struct World {
    networks: Vec<Value>,
    containers: Vec<Value>,
    volumes: Vec<Value>,
    images: Vec<Value>,
}

fn owned() -> Value {
    json!({ LABEL_SESSION: SESSION, LABEL_CHILD: "true" })
}

fn world() -> World {
    let foreign = json!({ LABEL_SESSION: "other", LABEL_CHILD: "true" });
    World {
        networks: vec![
            json!({"Name": "sessnet", "Id": hex_id('a'), "Labels": owned()}),
            json!({"Name": "sessnet2", "Id": format!("ab{}", &hex_id('1')[2..]), "Labels": owned()}),
            json!({"Name": "bridge", "Id": hex_id('b'), "Labels": {}}),
            json!({"Name": "none", "Id": hex_id('c'), "Labels": {}}),
            json!({"Name": "host", "Id": hex_id('d'), "Labels": {}}),
            json!({"Name": "foreignnet", "Id": hex_id('e'), "Labels": foreign}),
        ],
        containers: vec![
            json!({"Name": "/mine", "Id": hex_id('1'), "Config": {"Labels": owned()}}),
            json!({"Name": "/mine2", "Id": format!("12{}", &hex_id('0')[2..]), "Config": {"Labels": owned()}}),
            json!({"Name": "/foreign", "Id": hex_id('2'), "Config": {"Labels": foreign}}),
            json!({"Name": "/sandbox", "Id": hex_id('3'), "Config": {"Labels": {LABEL_SESSION: SESSION}}}),
        ],
        volumes: vec![
            json!({"Name": "myvol", "Labels": owned()}),
            json!({"Name": "othervol", "Labels": foreign}),
        ],
        images: vec![
            json!({"Id": format!("sha256:{}", hex_id('4')), "RepoTags": ["img:latest", "img"],
                   "Config": {"WorkingDir": "/w", "ExposedPorts": {"80/tcp": {}}, "Labels": {"x": "y"}}}),
            json!({"Id": format!("sha256:{}", hex_id('5')), "RepoTags": ["procimg"],
                   "Config": {"WorkingDir": "/proc/self/fd/7", "Labels": null}}),
            json!({"Id": format!("sha256:{}", hex_id('6')), "RepoTags": ["labelimg"],
                   "Config": {"WorkingDir": "", "Labels": {"io.agentctl.managed": "true"}}}),
            json!({"Id": format!("sha256:{}", hex_id('7')), "RepoTags": ["caimg"],
                   "Config": {"Labels": {"io.agentctl.extra-ca-certs": "x"}}}),
            json!({"Id": format!("sha256:{}", hex_id('8')), "RepoTags": ["dotimg"],
                   "Config": {"WorkingDir": "/x/../proc/1/cwd"}}),
        ],
    }
}

/// Finds an object the way the daemon does: exact name, exact id, then a
/// unique id prefix.
fn find<'a>(items: &'a [Value], name: &str, name_key: &str, id_key: &str) -> Option<&'a Value> {
    let name_of = |v: &Value| {
        v[name_key]
            .as_str()
            .unwrap_or("")
            .trim_start_matches('/')
            .to_string()
    };
    if let Some(v) = items
        .iter()
        .find(|v| name_of(v) == name || v[id_key] == name)
    {
        return Some(v);
    }
    let bare = name.trim_start_matches("sha256:");
    if bare.is_empty() || !bare.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut hits = items.iter().filter(|v| {
        v[id_key]
            .as_str()
            .unwrap_or("")
            .trim_start_matches("sha256:")
            .starts_with(bare)
    });
    let first = hits.next()?;
    hits.next().is_none().then_some(first)
}

fn find_image<'a>(w: &'a World, name: &str) -> Option<&'a Value> {
    w.images
        .iter()
        .find(|i| {
            i["RepoTags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == name))
        })
        .or_else(|| find(&w.images, name, "Id", "Id"))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn answer(w: &World, method: &str, target: &str) -> (u16, Value) {
    let path = target.split('?').next().unwrap_or("");
    let segs: Vec<String> = path.split('/').skip(2).map(percent_decode).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let found = |v: Option<&Value>| match v {
        Some(v) => (200, v.clone()),
        None => (404, json!({"message": "not found"})),
    };
    match (method, segs.as_slice()) {
        ("GET", ["containers", "json"]) => {
            let kids: Vec<Value> = w
                .containers
                .iter()
                .map(|c| json!({"Id": c["Id"], "Labels": c["Config"]["Labels"]}))
                .collect();
            (200, Value::Array(kids))
        }
        ("GET", ["containers", id, "json"]) => found(find(&w.containers, id, "Name", "Id")),
        ("GET", ["networks", id]) => found(find(&w.networks, id, "Name", "Id")),
        ("GET", ["volumes", name]) => found(w.volumes.iter().find(|v| v["Name"] == *name)),
        ("GET", ["exec", "ex1", "json"]) => (200, json!({"ID": "ex1", "ContainerID": hex_id('1')})),
        ("GET", ["images", rest @ .., "json"]) => found(find_image(w, &rest.join("/"))),
        ("POST", ["volumes", "create"]) => (201, json!({})),
        _ => (404, json!({"message": "no route"})),
    }
}

/// Serves the fake daemon on `sock` until the runtime ends.
async fn fake_daemon(sock: PathBuf, w: Arc<World>) {
    let l = tokio::net::UnixListener::bind(&sock).unwrap();
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            continue;
        };
        let w = w.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                let end = loop {
                    if let Some(p) = buf.windows(4).position(|x| x == b"\r\n\r\n") {
                        break p + 4;
                    }
                    let mut chunk = [0u8; 4096];
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < end + len {
                    let mut chunk = [0u8; 4096];
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                buf.drain(..end + len);
                let mut line = head.lines().next().unwrap_or("").split(' ');
                let method = line.next().unwrap_or("");
                let target = line.next().unwrap_or("");
                let (status, body) = answer(&w, method, target);
                let body = body.to_string();
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if s.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// xorshift64*: small, seedable, and enough for choosing mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Every field name of the request body types, for keys to add.
fn field_names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = Vec::new();
    v.extend(types::field_names::<types::ContainerCreate>());
    v.extend(types::field_names::<types::HostConfig>());
    v.extend(types::field_names::<types::EndpointSettings>());
    v.extend(types::field_names::<types::EndpointIpamConfig>());
    v.extend(types::field_names::<types::NetworkingConfig>());
    v.extend(types::field_names::<types::Mount>());
    v.extend(types::field_names::<types::VolumeOptions>());
    v.extend(types::field_names::<types::BindOptions>());
    v.extend(types::field_names::<types::RestartPolicy>());
    v.extend(types::field_names::<types::Ulimit>());
    v.extend(types::field_names::<types::LogConfig>());
    v.extend(types::field_names::<types::NetworkConnect>());
    v.extend(types::field_names::<types::ExecCreate>());
    v.extend(types::field_names::<types::ContainerUpdate>());
    v.extend([
        "sessnet",
        "bridge",
        "none",
        "default",
        "host",
        "foreignnet",
        "io.agentctl.session",
        "io.agentctl.child",
        "io.agentctl.managed",
        "80/tcp",
        "/tmp",
    ]);
    v.sort();
    v.dedup();
    v
}

fn strings(ws: &Path) -> Vec<String> {
    let ws = ws.display().to_string();
    let mut v: Vec<String> = [
        "host",
        "none",
        "bridge",
        "default",
        "Bridge",
        "container:mine",
        "container:1111",
        "container:foreign",
        "container:sandbox",
        "container:",
        "sessnet",
        "sessnet2",
        "foreignnet",
        "aaaa",
        "ab",
        "bbbbbbbbbbbb",
        "cccc",
        "dddd",
        "/proc/self/fd/7",
        "//proc/self/fd",
        "/./proc/1/cwd",
        "/x/../proc/self",
        "/proc/",
        "proc/self",
        "../proc",
        "/sys",
        "/sys/fs/cgroup",
        "/dev",
        "/dev/shm",
        "/",
        "/etc",
        "/tmp",
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/proc/self/root/run/docker.sock",
        "always",
        "unless-stopped",
        "on-failure",
        "no",
        "rtprio",
        "RTPRIO",
        "nice",
        "nofile",
        "io.agentctl.session",
        "io.agentctl.managed",
        "SYS_ADMIN",
        "ALL",
        "seccomp=unconfined",
        "no-new-privileges",
        "",
        "img",
        "img:latest",
        "procimg",
        "labelimg",
        "caimg",
        "dotimg",
        "44444444",
        "myvol",
        "othervol",
        "newvol",
        "volume",
        "bind",
        "tmpfs",
        "npipe",
        "json-file",
        "syslog",
        "shared",
        "rshared",
        "ex1",
        "mine",
        "foreign",
        "0.0.0.0",
        "127.0.0.1",
        "10.1.2.3",
        "169.254.169.254",
        "02:42:ac:11:00:02",
        "\u{212a}",
        "\u{17f}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for sub in [
        "",
        "/sub",
        "/.env",
        "/toproc",
        "/toproc/self/root/etc",
        "/up",
        "/up/etc",
    ] {
        v.push(format!("{ws}{sub}"));
        v.push(format!("{ws}{sub}:/w"));
        v.push(format!("{ws}{sub}:/w:ro"));
    }
    v.push(hex_id('a'));
    v.push(hex_id('b'));
    v.push(hex_id('e'));
    v.push(hex_id('1'));
    v.push(format!("sha256:{}", hex_id('5')));
    v
}

fn value(rng: &mut Rng, strs: &[String], keys: &[&str]) -> Value {
    match rng.below(14) {
        0..=4 => Value::String(rng.pick(strs).clone()),
        5..=7 => json!(*rng.pick(&[
            0i64,
            -1,
            -2,
            -5,
            1,
            16,
            4096,
            PIDS,
            PIDS + 1,
            MEMORY,
            MEMORY + 1,
            NANO_CPUS,
            NANO_CPUS + 1,
            6_291_456,
            1 << 40,
            i64::MAX,
            i64::MIN,
        ])),
        8 => json!(*rng.pick(&[0.5f64, 1e300, -0.0])),
        9 => Value::Bool(rng.chance(2)),
        10 => Value::Null,
        11 => {
            let n = rng.below(3);
            Value::Array(
                (0..n)
                    .map(|_| Value::String(rng.pick(strs).clone()))
                    .collect(),
            )
        }
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.below(3) {
                let k = rng.pick(keys).to_string();
                let v = if rng.chance(2) {
                    Value::String(rng.pick(strs).clone())
                } else {
                    json!(*rng.pick(&[0i64, -1, 1, PIDS + 1]))
                };
                m.insert(k, v);
            }
            Value::Object(m)
        }
    }
}

/// A value like `old` (string for string, number for number, ...), or now
/// and then any value.
fn same_type(rng: &mut Rng, old: &Value, strs: &[String], keys: &[&str]) -> Value {
    if rng.chance(4) {
        return value(rng, strs, keys);
    }
    match old {
        Value::String(_) => Value::String(rng.pick(strs).clone()),
        Value::Number(_) => json!(*rng.pick(&[
            0i64,
            -1,
            -2,
            -5,
            1,
            4096,
            PIDS,
            PIDS + 1,
            MEMORY,
            MEMORY + 1,
            NANO_CPUS,
            NANO_CPUS + 1,
            1 << 40,
            i64::MIN,
        ])),
        Value::Bool(b) => Value::Bool(!b),
        Value::Array(_) => Value::Array(vec![Value::String(rng.pick(strs).clone())]),
        _ => value(rng, strs, keys),
    }
}

/// Paths to every object and array node in `v`.
fn nodes(v: &Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    match v {
        Value::Object(m) => {
            out.push(path.clone());
            for (k, c) in m {
                path.push(Step::Key(k.clone()));
                nodes(c, path, out);
                path.pop();
            }
        }
        Value::Array(a) => {
            out.push(path.clone());
            for (i, c) in a.iter().enumerate() {
                path.push(Step::Index(i));
                nodes(c, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

fn at<'a>(v: &'a mut Value, path: &[Step]) -> &'a mut Value {
    let mut cur = v;
    for s in path {
        cur = match s {
            Step::Key(k) => &mut cur[k.as_str()],
            Step::Index(i) => &mut cur[*i],
        };
    }
    cur
}

/// Go's encoding/json matches keys without regard to case, and folds the
/// Kelvin sign to `k` and the long s to `s`: variants of a key.
fn fold_variant(rng: &mut Rng, k: &str) -> String {
    let mut chars: Vec<char> = k.chars().collect();
    if chars.is_empty() {
        return k.to_string();
    }
    let i = rng.below(chars.len());
    chars[i] = match chars[i] {
        'k' | 'K' if rng.chance(2) => '\u{212a}',
        's' | 'S' if rng.chance(2) => '\u{17f}',
        c if c.is_ascii_uppercase() => c.to_ascii_lowercase(),
        c => c.to_ascii_uppercase(),
    };
    chars.into_iter().collect()
}

/// One mutated body, as bytes (some mutations only exist as text).
fn mutate(rng: &mut Rng, seed: &Value, strs: &[String], keys: &[&str]) -> Vec<u8> {
    let mut v = seed.clone();
    for _ in 0..1 + rng.below(5) {
        let mut all = Vec::new();
        nodes(&v, &mut Vec::new(), &mut all);
        let path = rng.pick(&all).clone();
        let node = at(&mut v, &path);
        match node {
            Value::Object(m) => match rng.below(8) {
                0 => {
                    let k = rng.pick(keys).to_string();
                    let val = value(rng, strs, keys);
                    m.insert(k, val);
                }
                1..=3 if !m.is_empty() => {
                    // Mostly a value of the same JSON type, so that the
                    // body still decodes and reaches the rules.
                    let k = m.keys().nth(rng.below(m.len())).unwrap().clone();
                    let val = same_type(rng, &m[&k], strs, keys);
                    m.insert(k, val);
                }
                3 if !m.is_empty() => {
                    let k = m.keys().nth(rng.below(m.len())).unwrap().clone();
                    m.remove(&k);
                }
                4 if !m.is_empty() => {
                    let k = m.keys().nth(rng.below(m.len())).unwrap().clone();
                    let val = m.remove(&k).unwrap();
                    m.insert(fold_variant(rng, &k), val);
                }
                _ => {
                    let k = rng.pick(keys).to_string();
                    let mut inner = serde_json::Map::new();
                    let ik = rng.pick(keys).to_string();
                    inner.insert(ik, value(rng, strs, keys));
                    m.insert(k, Value::Object(inner));
                }
            },
            Value::Array(a) => match rng.below(3) {
                0 if !a.is_empty() => {
                    let i = rng.below(a.len());
                    let v = a[i].clone();
                    a.push(v);
                }
                0 => a.push(value(rng, strs, keys)),
                1 if !a.is_empty() => {
                    let i = rng.below(a.len());
                    a[i] = same_type(rng, &a[i], strs, keys);
                }
                _ => {
                    if !a.is_empty() {
                        let i = rng.below(a.len());
                        a.remove(i);
                    }
                }
            },
            _ => {}
        }
    }
    let mut text = v.to_string();
    // Text-only mutations: a duplicate key in some object, or trailing data.
    if rng.chance(8) {
        let opens: Vec<usize> = text.match_indices('{').map(|(i, _)| i).collect();
        if !opens.is_empty() {
            let at = *rng.pick(&opens) + 1;
            let k = rng.pick(keys).to_string();
            let k = if rng.chance(2) {
                fold_variant(rng, &k)
            } else {
                k
            };
            let val = value(rng, strs, keys);
            let close = text[at..].starts_with('}');
            let ins = format!(
                "{}:{}{}",
                Value::String(k),
                val,
                if close { "" } else { "," }
            );
            text.insert_str(at, &ins);
        }
    }
    if rng.chance(40) {
        text.push_str(" {}");
    }
    text.into_bytes()
}

fn is_proc_sys_dev(p: &str) -> bool {
    let p = Path::new(p);
    let real = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    ["/proc", "/sys", "/dev"]
        .iter()
        .any(|d| p.starts_with(d) || real.starts_with(d))
}

struct Setup {
    name: &'static str,
    cfg: Config,
    lookups: Lazy,
}

fn session_scope(ws: &Path, network: NetworkMode) -> SessionScope {
    SessionScope::new(
        SESSION.into(),
        ws,
        vec![ws.join(".env")],
        ChildLimits {
            memory: Some(MEMORY),
            nano_cpus: Some(NANO_CPUS),
            pids: Some(PIDS),
            containers: Some(20),
        },
        network,
    )
    .unwrap()
}

/// The invariants of a forwarded body; a message for each one broken.
fn check_forward(s: &Setup, ep: route::Endpoint, f: &Forward, w: &World) -> Result<(), String> {
    let Some(body) = &f.body else {
        return Err("a JSON route forwarded no body".into());
    };
    let session = s.cfg.session.as_ref();
    let ws = session.map(|s| s.workspace.clone());
    let net_id = |name: &str| {
        find(&w.networks, name, "Name", "Id").map(|n| n["Id"].as_str().unwrap().to_string())
    };
    let own_net = |id: &str| {
        w.networks
            .iter()
            .any(|n| n["Id"] == id && n["Labels"] == owned())
    };
    let own_ctr = |id: &str| {
        w.containers
            .iter()
            .any(|c| c["Id"] == id && c["Config"]["Labels"] == owned())
    };
    match ep {
        route::Endpoint::ContainersCreate => {
            let c: types::ContainerCreate =
                body::decode(body).map_err(|e| format!("forwarded body does not decode: {e}"))?;
            let h = c.host_config.clone().unwrap_or_default();
            if h.privileged == Some(true) {
                return Err("Privileged".into());
            }
            if h.cap_add.as_ref().is_some_and(|c| !c.is_empty()) {
                return Err("CapAdd".into());
            }
            for (f, v) in [
                ("PidMode", &h.pid_mode),
                ("IpcMode", &h.ipc_mode),
                ("UTSMode", &h.uts_mode),
                ("UsernsMode", &h.userns_mode),
                ("CgroupnsMode", &h.cgroupns_mode),
            ] {
                if v.as_deref() == Some("host") {
                    return Err(format!("{f} host"));
                }
            }
            if h.devices.as_ref().is_some_and(|d| !d.is_empty())
                || h.sysctls.as_ref().is_some_and(|d| !d.is_empty())
            {
                return Err("devices or sysctls".into());
            }
            if h.security_opt.as_deref() != Some(&["no-new-privileges".to_string()][..]) {
                return Err(format!("SecurityOpt {:?}", h.security_opt));
            }
            // Labels: agentctl's own only, and only the session's.
            for (k, v) in c.labels.iter().flatten() {
                if k.starts_with(LABEL_PREFIX) {
                    let ok = session.is_some()
                        && ((k == LABEL_SESSION && v == SESSION)
                            || (k == LABEL_CHILD && v == "true"));
                    if !ok {
                        return Err(format!("label {k}={v}"));
                    }
                }
            }
            for m in h.mounts.iter().flatten() {
                if let Some(vo) = &m.volume_options
                    && vo
                        .labels
                        .iter()
                        .flatten()
                        .any(|(k, _)| k.starts_with(LABEL_PREFIX))
                {
                    return Err("mount volume label".into());
                }
                if m.type_.as_deref() == Some("bind") {
                    let src = m.source.as_deref().unwrap_or("");
                    if is_proc_sys_dev(src) && src != "/dev/null" {
                        return Err(format!("bind of {src}"));
                    }
                    if let Some(ws) = &ws
                        && src != "/dev/null"
                        && !Path::new(src).starts_with(ws)
                    {
                        return Err(format!("bind of {src} outside the workspace"));
                    }
                }
            }
            for b in h.binds.iter().flatten() {
                let src = b.split(':').next().unwrap_or("");
                if src.starts_with('/') {
                    if is_proc_sys_dev(src) {
                        return Err(format!("bind of {src}"));
                    }
                    if let Some(ws) = &ws
                        && !Path::new(src).starts_with(ws)
                    {
                        return Err(format!("bind of {src} outside the workspace"));
                    }
                }
            }
            // The working directory, asked for or the image's.
            let image = c.image.as_deref().and_then(|i| find_image(w, i));
            let wd = match c.working_dir.as_deref().filter(|w| !w.is_empty()) {
                Some(wd) => wd.to_string(),
                None => image
                    .and_then(|i| i["Config"]["WorkingDir"].as_str())
                    .unwrap_or("")
                    .to_string(),
            };
            if rules::under_proc(&wd) && !wd.is_empty() {
                return Err(format!("WorkingDir {wd}"));
            }
            if let Some(i) = image
                && i["Config"]["Labels"]
                    .as_object()
                    .is_some_and(|l| l.keys().any(|k| k == "io.agentctl.managed"))
            {
                return Err("an image with agentctl's label".into());
            }
            let Some(s) = session else { return Ok(()) };
            // Session only: the image is pinned by id.
            if let Some(i) = &c.image
                && !i.is_empty()
                && !i.starts_with("sha256:")
            {
                return Err(format!("image {i} not pinned"));
            }
            let (mem, swap) = (h.memory.unwrap_or(0), h.memory_swap.unwrap_or(0));
            if !(1..=MEMORY).contains(&mem) || swap != mem {
                return Err(format!("Memory {mem} MemorySwap {swap}"));
            }
            if !(1..=PIDS).contains(&h.pids_limit.unwrap_or(0)) {
                return Err(format!("PidsLimit {:?}", h.pids_limit));
            }
            if !(1..=NANO_CPUS).contains(&h.nano_cpus.unwrap_or(0)) {
                return Err(format!("NanoCpus {:?}", h.nano_cpus));
            }
            for (f, v) in [
                ("CpuQuota", h.cpu_quota),
                ("CpuPeriod", h.cpu_period),
                ("CpuRealtimePeriod", h.cpu_realtime_period),
                ("CpuRealtimeRuntime", h.cpu_realtime_runtime),
            ] {
                if v.unwrap_or(0) != 0 {
                    return Err(format!("{f} {v:?}"));
                }
            }
            for (f, v) in [
                ("MemoryReservation", h.memory_reservation),
                ("KernelMemory", h.kernel_memory),
                ("KernelMemoryTCP", h.kernel_memory_tcp),
                ("CpuShares", h.cpu_shares),
                ("ShmSize", h.shm_size),
            ] {
                if v.unwrap_or(0) < 0 {
                    return Err(format!("{f} {v:?}"));
                }
            }
            if h.memory_reservation.unwrap_or(0) > mem {
                return Err("MemoryReservation above Memory".into());
            }
            for u in h.ulimits.iter().flatten() {
                let n = u.name.as_deref().unwrap_or("").to_ascii_lowercase();
                if n == "rtprio"
                    || n == "nice"
                    || u.soft.unwrap_or(0) < -1
                    || u.hard.unwrap_or(0) < -1
                {
                    return Err(format!("Ulimit {u:?}"));
                }
            }
            let rp = h
                .restart_policy
                .as_ref()
                .and_then(|r| r.name.as_deref())
                .unwrap_or("");
            if !rp.is_empty() && rp != "no" {
                return Err(format!("RestartPolicy {rp}"));
            }
            let mode = h.network_mode.as_deref().unwrap_or("");
            let mode_ok = match mode {
                "none" => true,
                "" | "default" | "bridge" => s.network != NetworkMode::None,
                m if m.starts_with("container:") => own_ctr(&m["container:".len()..]),
                m => own_net(m),
            };
            if !mode_ok {
                return Err(format!("NetworkMode {mode:?}"));
            }
            if !own_net(mode) && c.mac_address.as_deref().is_some_and(|m| !m.is_empty()) {
                return Err("MacAddress off the session's networks".into());
            }
            let eps = c
                .networking_config
                .and_then(|n| n.endpoints_config)
                .unwrap_or_default();
            for (key, e) in &eps {
                let want = match key.as_str() {
                    "none" => net_id("none"),
                    "bridge" | "default" if s.network != NetworkMode::None => net_id("bridge"),
                    k if own_net(k) => Some(k.to_string()),
                    k => return Err(format!("endpoint {k}")),
                };
                if e.network_id != want {
                    return Err(format!("endpoint {key}: NetworkID {:?}", e.network_id));
                }
                endpoint_fields(e, own_net(key))?;
            }
            Ok(())
        }
        route::Endpoint::NetworkConnect => {
            let n: types::NetworkConnect =
                body::decode(body).map_err(|e| format!("forwarded body does not decode: {e}"))?;
            if let Some(e) = &n.endpoint_config
                && e.driver_opts.as_ref().is_some_and(|d| !d.is_empty())
            {
                return Err("DriverOpts".into());
            }
            if session.is_none() {
                return Ok(());
            }
            let net = f.segments.get(1).cloned().unwrap_or_default();
            if !own_net(&net) {
                return Err(format!("connect to {net}"));
            }
            if !own_ctr(n.container.as_deref().unwrap_or("")) {
                return Err(format!("connect of {:?}", n.container));
            }
            let e = n.endpoint_config.unwrap_or_default();
            if e.network_id.as_deref() != Some(net.as_str()) {
                return Err(format!("NetworkID {:?}", e.network_id));
            }
            endpoint_fields(&e, true)
        }
        route::Endpoint::ContainerExec => {
            let e: types::ExecCreate =
                body::decode(body).map_err(|e| format!("forwarded body does not decode: {e}"))?;
            if e.privileged == Some(true) {
                return Err("Privileged exec".into());
            }
            if rules::under_proc(e.working_dir.as_deref().unwrap_or("")) {
                return Err(format!("exec WorkingDir {:?}", e.working_dir));
            }
            Ok(())
        }
        route::Endpoint::ContainerUpdate => {
            let u: types::ContainerUpdate =
                body::decode(body).map_err(|e| format!("forwarded body does not decode: {e}"))?;
            if session.is_none() {
                return Ok(());
            }
            let mem = u.memory.unwrap_or(0);
            if !(0..=MEMORY).contains(&mem) {
                return Err(format!("update Memory {mem}"));
            }
            let swap = u.memory_swap.unwrap_or(0);
            if swap != 0 && swap != mem {
                return Err(format!("update MemorySwap {swap} with Memory {mem}"));
            }
            if let Some(p) = u.pids_limit
                && !(1..=PIDS).contains(&p)
            {
                return Err(format!("update PidsLimit {p}"));
            }
            if !(0..=NANO_CPUS).contains(&u.nano_cpus.unwrap_or(0)) {
                return Err(format!("update NanoCpus {:?}", u.nano_cpus));
            }
            let rp = u
                .restart_policy
                .as_ref()
                .and_then(|r| r.name.as_deref())
                .unwrap_or("");
            if !rp.is_empty() && rp != "no" {
                return Err(format!("update RestartPolicy {rp}"));
            }
            if u.cpu_realtime_runtime.unwrap_or(0) != 0 || u.cpu_quota.unwrap_or(0) != 0 {
                return Err("update CPU".into());
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn endpoint_fields(e: &types::EndpointSettings, own: bool) -> Result<(), String> {
    let set = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.is_empty());
    if set(&e.endpoint_id)
        || set(&e.ip_address)
        || set(&e.gateway)
        || e.driver_opts.as_ref().is_some_and(|d| !d.is_empty())
        || e.links.as_ref().is_some_and(|d| !d.is_empty())
        || e.dns_names.as_ref().is_some_and(|d| !d.is_empty())
    {
        return Err(format!("endpoint fields {e:?}"));
    }
    if !own
        && (set(&e.mac_address)
            || e.ipam_config.as_ref().is_some_and(|i| {
                set(&i.ipv4_address)
                    || set(&i.ipv6_address)
                    || i.link_local_ips.as_ref().is_some_and(|l| !l.is_empty())
            }))
    {
        return Err(format!("addresses off the session's networks: {e:?}"));
    }
    Ok(())
}

fn seeds() -> Vec<(route::Endpoint, &'static str, Value)> {
    let data = |name: &str| -> Value {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/body/testdata")
            .join(name);
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    use route::Endpoint::*;
    let create = "/v1.41/containers/create?name=fz";
    let connect = "/v1.41/networks/sessnet/connect";
    let exec = "/v1.41/containers/mine/exec";
    let update = "/v1.41/containers/mine/update";
    let mut plain = data("docker-create-20.10.json");
    plain["Image"] = json!("img");
    let mut many = data("docker-create-many-flags-20.10.json");
    many["Image"] = json!("img");
    // The same flags without those no role allows, so that mutations of it
    // reach the later rules.
    let mut allowed = many.clone();
    allowed["Image"] = json!("img");
    let h = allowed["HostConfig"].as_object_mut().unwrap();
    for k in ["CapAdd", "Devices", "Sysctls", "OomKillDisable"] {
        h.remove(k);
    }
    h.insert("RestartPolicy".into(), json!({"Name": "no"}));
    h.insert("NetworkMode".into(), json!("sessnet"));
    h.insert("Binds".into(), json!(["WS/sub:/s:ro"]));
    h["Mounts"][2]["Source"] = json!("WS");
    let eps = allowed["NetworkingConfig"]["EndpointsConfig"]
        .as_object_mut()
        .unwrap();
    let ep = eps.remove("body-cap-net").unwrap();
    eps.insert("sessnet".into(), ep);
    vec![
        (ContainersCreate, create, plain),
        (ContainersCreate, create, many),
        (ContainersCreate, create, allowed),
        (
            ContainersCreate,
            create,
            json!({"Image": "img", "HostConfig": {"NetworkMode": "sessnet", "PidsLimit": -1, "Memory": 0, "MemorySwap": -1,
                   "RestartPolicy": {"Name": "no"}, "Binds": ["WS:/w"], "Mounts": [{"Type": "volume", "Target": "/d", "VolumeOptions": {"Labels": {"a": "b"}}}]},
                   "NetworkingConfig": {"EndpointsConfig": {"sessnet": {"NetworkID": "sessnet", "Aliases": ["a"], "IPAMConfig": {"IPv4Address": "10.0.0.2"}}}}}),
        ),
        (
            ContainersCreate,
            create,
            json!({"Image": "procimg", "WorkingDir": "", "HostConfig": {"NetworkMode": "default"},
                   "NetworkingConfig": {"EndpointsConfig": {"bridge": {"NetworkID": "bridge"}, "none": {}}}}),
        ),
        (NetworkConnect, connect, {
            let mut c = data("docker-network-connect-20.10.json");
            c["Container"] = json!("mine");
            c
        }),
        (
            NetworkConnect,
            connect,
            json!({"Container": "mine", "EndpointConfig": {"NetworkID": "sessnet", "Aliases": ["x"]}}),
        ),
        (ContainerExec, exec, data("docker-exec-create-20.10.json")),
        (ContainerUpdate, update, data("docker-update-20.10.json")),
        (
            ContainerUpdate,
            update,
            json!({"Memory": 134217728, "MemorySwap": 134217728, "NanoCpus": 1_000_000_000, "PidsLimit": 100,
                   "RestartPolicy": {"Name": "no"}}),
        ),
    ]
}

#[test]
fn rules_hold_their_invariants_on_mutated_bodies() {
    let seconds: u64 = std::env::var("AGENTCTL_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("AGENTCTL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("fuzz_rules: seed {seed} (AGENTCTL_FUZZ_SEED), {seconds} s (AGENTCTL_FUZZ_SECONDS)");

    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(ws.join("sub")).unwrap();
    std::fs::write(ws.join(".env"), "X=1").unwrap();
    std::os::unix::fs::symlink("/proc", ws.join("toproc")).unwrap();
    std::os::unix::fs::symlink("/", ws.join("up")).unwrap();
    let ws = ws.canonicalize().unwrap();
    let sock = dir.path().join("daemon.sock");
    let w = Arc::new(world());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.spawn(fake_daemon(sock.clone(), w.clone()));
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let upstream = Addr::Unix(sock.clone());
    let config = |role: Role, session: Option<SessionScope>| Config {
        role,
        upstream: upstream.clone(),
        api: (1, 41),
        session,
        max_body: 1 << 20,
        audit: None,
        creates: Default::default(),
        bind_roots: Vec::new(),
        metrics: Default::default(),
    };
    let session_role = Role::builtin("session").unwrap();
    let launcher = Role::builtin("launcher").unwrap();
    assert_eq!(launcher.binds, Binds::Any);
    let mut setups = vec![
        Setup {
            name: "session, no network",
            cfg: config(
                session_role.clone(),
                Some(session_scope(&ws, NetworkMode::None)),
            ),
            lookups: Lazy::new(upstream.clone()),
        },
        Setup {
            name: "session, bridge",
            cfg: config(session_role, Some(session_scope(&ws, NetworkMode::Bridge))),
            lookups: Lazy::new(upstream.clone()),
        },
        Setup {
            name: "launcher",
            cfg: config(launcher, None),
            lookups: Lazy::new(upstream.clone()),
        },
    ];

    let ws_text = ws.display().to_string();
    let seeds: Vec<(route::Endpoint, &str, Value)> = seeds()
        .into_iter()
        .map(|(e, t, v)| {
            let v: Value = serde_json::from_str(&v.to_string().replace("WS", &ws_text)).unwrap();
            (e, t, v)
        })
        .collect();
    let keys = field_names();
    let strs = strings(&ws);
    let mut rng = Rng(seed);
    let mut stats: BTreeMap<(&str, &str), [u64; 3]> = BTreeMap::new();
    let mut cases = 0u64;
    // AGENTCTL_FUZZ_REASONS=1 shows why bodies were denied, to tune seeds.
    let show_reasons = std::env::var_os("AGENTCTL_FUZZ_REASONS").is_some();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        for _ in 0..64 {
            let (ep, target, seed_body) = rng.pick(&seeds).clone();
            let bytes = if rng.chance(10) {
                seed_body.to_string().into_bytes()
            } else {
                mutate(&mut rng, &seed_body, &strs, &keys)
            };
            cases += 1;
            for s in setups.iter_mut() {
                let head = format!(
                    "POST {target} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    bytes.len()
                );
                let (head, _) = http1::parse_head(head.as_bytes()).unwrap();
                let parsed = route::parse("POST", target).unwrap();
                assert_eq!(parsed.endpoint, ep);
                let body = bytes.clone();
                let cfg = &s.cfg;
                let lookups = &mut s.lookups;
                let decision = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    rt.block_on(rules::check(cfg, lookups, &head, parsed, body))
                }));
                let decision = match decision {
                    Ok(d) => d,
                    Err(p) => {
                        eprintln!(
                            "fuzz_rules: PANIC ({}) on {target}: {}\nreplay with AGENTCTL_FUZZ_SEED={seed}",
                            s.name,
                            String::from_utf8_lossy(&bytes)
                        );
                        std::panic::resume_unwind(p);
                    }
                };
                let slot = stats.entry((s.name, ep.name())).or_default();
                match decision {
                    Decision::Forward(f) => {
                        slot[0] += 1;
                        if let Err(broken) = check_forward(s, ep, &f, &w) {
                            panic!(
                                "fuzz_rules: {} forwarded a body that breaks an invariant ({broken}) on {target}\ninput: {}\nforwarded: {}\nreplay with AGENTCTL_FUZZ_SEED={seed}",
                                s.name,
                                String::from_utf8_lossy(&bytes),
                                String::from_utf8_lossy(f.body.as_deref().unwrap_or_default())
                            );
                        }
                    }
                    Decision::Deny(d) => {
                        slot[1] += 1;
                        if show_reasons {
                            let r: String = d.reason.chars().take(60).collect();
                            *reasons.entry(r).or_default() += 1;
                        }
                    }
                    Decision::Fail(e) => {
                        slot[2] += 1;
                        // Lookups failing against a fake that always
                        // answers would be a bug of the rules' own requests.
                        panic!(
                            "fuzz_rules: a lookup failed ({e}) on {target}: {}",
                            String::from_utf8_lossy(&bytes)
                        );
                    }
                }
            }
        }
    }
    eprintln!(
        "fuzz_rules: {cases} cases, each under {} setups, no panic, every forwarded body held its invariants",
        setups.len()
    );
    for ((setup, op), [fwd, denied, failed]) in &stats {
        eprintln!("  {setup:20} {op:20} forwarded {fwd:8} denied {denied:8} failed {failed}");
    }
    let mut reasons: Vec<_> = reasons.into_iter().collect();
    reasons.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for (r, n) in reasons.iter().take(40) {
        eprintln!("  denied {n:8}: {r}");
    }
    // A run that never forwards proves nothing about what it forwards.
    for s in &setups {
        let forwarded: u64 = stats
            .iter()
            .filter(|((n, _), _)| *n == s.name)
            .map(|(_, v)| v[0])
            .sum();
        assert!(forwarded > 0, "{}: nothing was forwarded", s.name);
    }
}
