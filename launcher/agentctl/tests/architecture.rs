//! The dependency rules of docs/ARCHITECTURE.md, checked against the real
//! dependency graph: a forbidden dependency fails the build's tests.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

fn graph() -> (HashMap<String, Vec<String>>, HashMap<String, String>) {
    let out = Command::new(env!("CARGO"))
        // The host's platform only: the rules are about what gets built
        // here, and other platforms' crates need not be downloaded.
        .args([
            "metadata",
            "--format-version",
            "1",
            "--filter-platform",
            env!("AGENTCTL_TARGET"),
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: HashMap<String, String> = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let deps = v["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            // Normal dependencies only: tests may use what they like.
            let normal = n["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].is_null())
                })
                .map(|d| d["pkg"].as_str().unwrap().to_string())
                .collect();
            (n["id"].as_str().unwrap().to_string(), normal)
        })
        .collect();
    (deps, names)
}

/// Every crate `krate` depends on, directly or not.
fn closure(krate: &str) -> BTreeSet<String> {
    let (deps, names) = graph();
    let root = names
        .iter()
        .find(|(_, n)| *n == krate)
        .map(|(id, _)| id.clone())
        .unwrap_or_else(|| panic!("no crate {krate}"));
    let mut seen = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        for d in deps.get(&id).into_iter().flatten() {
            if seen.insert(names[d].clone()) {
                stack.push(d.clone());
            }
        }
    }
    seen
}

fn forbid(krate: &str, forbidden: &[&str]) {
    let all = closure(krate);
    for f in forbidden {
        assert!(
            !all.contains(*f),
            "{krate} must not depend on {f} (see docs/ARCHITECTURE.md), but it does"
        );
    }
}

#[test]
fn policy_is_pure() {
    forbid(
        "policy",
        &[
            "tokio",
            "libcontainer",
            "oci-spec",
            "bollard",
            "nix",
            "libc",
            "sandbox",
        ],
    );
}

#[test]
fn the_vmm_seam_knows_no_sandbox() {
    forbid(
        "vmm",
        &[
            "policy",
            "sandbox",
            "store",
            "lifecycle",
            "backend-native",
            "backend-docker",
            "backend-vm",
            "tokio",
        ],
    );
}

/// Session cgroups are kernel files: the native backend's sandbox and the
/// vm backend's QEMU share the code, which knows no runtime, no VMM and
/// no store.
#[test]
fn cgroups_know_no_runtime_and_no_store() {
    forbid(
        "cgroups",
        &[
            "libcontainer",
            "oci-spec",
            "bollard",
            "tokio",
            "vmm",
            "store",
            "lifecycle",
            "backend-native",
            "backend-docker",
            "backend-vm",
        ],
    );
}

#[test]
fn the_egress_proxy_knows_no_sandbox_and_no_store() {
    // It is handed sockets, rules and a callback for refusals; where the
    // sockets came from and where refusals go is its caller's business.
    forbid(
        "egress",
        &[
            "store",
            "lifecycle",
            "sandbox",
            "backend-native",
            "backend-docker",
            "docker-proxy",
            "web",
            "sqlx",
            "libcontainer",
            "bollard",
        ],
    );
    // The backends plant listeners and start `agentctl __egress`; they never
    // serve one themselves.
    forbid("backend-native", &["egress"]);
    forbid("backend-docker", &["egress"]);
}

#[test]
fn the_stack_drives_tools_and_knows_no_session() {
    // `stack` runs Compose and the docker CLI as processes; what needs the
    // store or a backend (the first admin, the agent image) is the binary's.
    forbid(
        "stack",
        &[
            "store",
            "lifecycle",
            "sandbox",
            "backend-native",
            "backend-docker",
            "docker-proxy",
            "web",
            "bollard",
            "sqlx",
            "tokio",
        ],
    );
}

#[test]
fn the_plan_knows_no_container_runtime() {
    forbid(
        "sandbox",
        &[
            "tokio",
            "libcontainer",
            "oci-spec",
            "bollard",
            "backend-native",
        ],
    );
}

#[test]
fn each_backend_knows_only_its_own_runtime() {
    forbid(
        "backend-native",
        &["bollard", "tokio", "backend-docker", "backend-vm", "vmm"],
    );
    forbid(
        "backend-docker",
        &[
            "libcontainer",
            "oci-spec",
            "backend-native",
            "backend-vm",
            "vmm",
        ],
    );
    forbid(
        "backend-vm",
        &[
            "libcontainer",
            "oci-spec",
            "bollard",
            "tokio",
            "backend-native",
            "backend-docker",
            "store",
            "lifecycle",
        ],
    );
}

/// The guest agent is built static and runs alone in the guest: it knows
/// the protocol and the kernel, nothing of agentctl's host side.
#[test]
fn the_guest_agent_is_small_and_knows_no_host_crate() {
    forbid(
        "vm-guest",
        &[
            "policy",
            "sandbox",
            "vmm",
            "store",
            "nix",
            "tokio",
            "lifecycle",
            "backend-vm",
        ],
    );
}

#[test]
fn the_image_cache_knows_no_runtime() {
    forbid(
        "image-store",
        &[
            "libcontainer",
            "oci-spec",
            "bollard",
            "tokio",
            "sandbox",
            "policy",
        ],
    );
}

#[test]
fn the_web_crate_knows_no_backend() {
    forbid(
        "web",
        &[
            "libcontainer",
            "oci-spec",
            "bollard",
            "backend-native",
            "sandbox",
        ],
    );
}

/// The proxy writes every byte the daemon reads itself (no client library
/// that might add or reorder fields), and reaches the store only through the
/// audit callback the binary gives it.
#[test]
fn the_proxy_speaks_http_itself_and_knows_no_store() {
    forbid(
        "docker-proxy",
        &[
            "bollard",
            "libcontainer",
            "oci-spec",
            "sqlx",
            "store",
            "sandbox",
            "backend-native",
            "backend-docker",
        ],
    );
}

/// Issue 17's cuts stay cut: no second sqlx built for its proc macro, no
/// protobuf for libcontainer's checkpoints (the rust-criu that is linked is
/// launcher/criu-stub), no bundled SQLite. Asked of `cargo tree`, which
/// resolves features as a build does (`cargo metadata` lists optional
/// dependencies a build leaves out).
#[test]
fn the_build_stays_lean() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "agentctl",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .args(["--target", env!("AGENTCTL_TARGET"), "--format", "{p} {f}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    for heavy in ["sqlx-macros ", "sqlx-macros-core ", "protobuf "] {
        assert!(
            !tree.lines().any(|l| l.starts_with(heavy)),
            "agentctl builds {heavy}again (see docs/BENCHMARKS.md, First five minutes)"
        );
    }
    let criu = tree
        .lines()
        .find(|l| l.starts_with("rust-criu "))
        .expect("libcontainer links rust-criu");
    assert!(criu.contains("launcher/criu-stub"), "{criu}");
    let sqlite = tree
        .lines()
        .find(|l| l.starts_with("libsqlite3-sys "))
        .expect("the store links SQLite");
    let features: Vec<&str> = sqlite.split(' ').nth(2).unwrap_or("").split(',').collect();
    assert!(!features.contains(&"bundled"), "{sqlite}");
}

#[test]
fn the_check_can_fail() {
    // backend-native does depend on libcontainer: the walk must see it.
    assert!(closure("backend-native").contains("libcontainer"));
}

#[test]
fn the_store_knows_no_sandbox() {
    forbid(
        "store",
        &[
            "policy",
            "sandbox",
            "backend-native",
            "backend-docker",
            "libcontainer",
            "bollard",
            "lifecycle",
        ],
    );
}

/// The dashboard reads the store and writes requests to it; a session's
/// supervisor carries them out. It starts nothing itself.
#[test]
fn the_web_crate_knows_no_backend_and_no_docker() {
    forbid(
        "web",
        &[
            "backend-docker",
            "bollard",
            "docker-proxy",
            "lifecycle",
            "libcontainer",
        ],
    );
}

/// The team server's web crate records requests; workers run them. The
/// web crate never reaches the worker (nor its process handling), and the
/// worker starts sessions only through the session library.
#[test]
fn the_web_crate_runs_nothing_and_workers_run_through_the_library() {
    forbid("web", &["worker", "sandbox", "backend-native"]);
    forbid("worker", &["web"]);
    let (deps, names) = graph();
    let id = names
        .iter()
        .find(|(_, n)| n.as_str() == "worker")
        .map(|(id, _)| id.clone())
        .expect("the worker crate is in the graph");
    let direct: Vec<&str> = deps[&id].iter().map(|d| names[d].as_str()).collect();
    for f in [
        "backend-native",
        "backend-docker",
        "bollard",
        "libcontainer",
    ] {
        assert!(
            !direct.contains(&f),
            "worker must reach backends only through lifecycle, but names {f}"
        );
    }
    assert!(direct.contains(&"lifecycle"), "{direct:?}");
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push((p, text));
            }
        }
    }
    out.sort();
    out
}

/// Backends take a `SandboxSpec` and use the policy crate's plain types
/// (network modes, seccomp rules as data); none reads or resolves a
/// profile.
#[test]
fn a_backend_never_reads_a_profile() {
    let forbidden = [
        "ProfileLoader",
        "ProfileFile",
        "policy::resolve",
        "policy::profile",
        "policy::Policy",
        "HomeEntry",
        "SecretRules",
    ];
    for krate in ["backend-native", "backend-docker", "backend-vm"] {
        for (path, text) in sources(&workspace_root().join("launcher").join(krate).join("src")) {
            for f in forbidden {
                assert!(
                    !text.contains(f),
                    "{} names {f}: a backend reads the SandboxSpec, never a profile (docs/ARCHITECTURE.md)",
                    path.display()
                );
            }
        }
    }
}

/// Sessions start in one place: the lifecycle library, which records them.
/// Nothing else calls a backend's `run` or `start_detached` or holds a
/// `Backend` (the backends themselves and the trait's crate aside).
#[test]
fn only_the_session_library_starts_sessions() {
    let root = workspace_root();
    let mut checked = 0;
    for dir in [
        "launcher/agentctl/src",
        "launcher/xtask/src",
        "launcher/docker-proxy/src",
        "launcher/store/src",
        "launcher/worker/src",
        "web/src",
    ] {
        for (path, text) in sources(&root.join(dir)) {
            checked += 1;
            for f in [
                "start_detached(",
                "sandbox::Backend",
                "dyn Backend",
                "backend_docker::",
                "NativeBackend",
            ] {
                assert!(
                    !text.contains(f),
                    "{} names {f}: only launcher/lifecycle starts sessions (docs/ARCHITECTURE.md)",
                    path.display()
                );
            }
        }
    }
    assert!(checked > 10, "the walk found the sources");
    // And the binary does not link the Docker backend at all.
    let (deps, names) = graph();
    let agentctl = names.iter().find(|(_, n)| *n == "agentctl").unwrap().0;
    let direct: Vec<&str> = deps[agentctl].iter().map(|d| names[d].as_str()).collect();
    assert!(direct.contains(&"lifecycle"), "{direct:?}");
    assert!(!direct.contains(&"backend-docker"), "{direct:?}");
}

/// The modules of one crate and which of them each one uses, from the
/// source: `crate::a::b`, `super::…`, and a child module named in its
/// parent (`run::run(…)` in `cmd/mod.rs`). A root item re-exported with
/// `pub use a::{X, Y}` counts as module `a`. Test modules at the end of a
/// file (`#[cfg(test)]`) are left out: their `super` is the file itself.
fn module_graph(src: &std::path::Path) -> HashMap<String, BTreeSet<String>> {
    let files = sources(src);
    let module_of = |p: &std::path::Path| -> String {
        let rel = p.strip_prefix(src).unwrap().with_extension("");
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let parts: Vec<&str> = parts
            .iter()
            .map(String::as_str)
            .filter(|p| *p != "mod")
            .collect();
        match parts.as_slice() {
            ["main"] | ["lib"] => "crate".to_string(),
            _ => parts.join("::"),
        }
    };
    let modules: BTreeSet<String> = files.iter().map(|(p, _)| module_of(p)).collect();
    // Root re-exports: item -> module.
    let mut reexports = HashMap::new();
    for (p, text) in &files {
        if module_of(p) != "crate" {
            continue;
        }
        for line in text.lines() {
            let Some(rest) = line.trim().strip_prefix("pub use ") else {
                continue;
            };
            let Some((m, items)) = rest.split_once("::") else {
                continue;
            };
            if !modules.contains(m) {
                continue;
            }
            for item in items
                .trim_end_matches(';')
                .trim_matches(['{', '}'])
                .split(',')
            {
                let name = item.trim().rsplit("::").next().unwrap_or("").trim();
                if !name.is_empty() {
                    reexports.insert(name.to_string(), m.to_string());
                }
            }
        }
    }
    // The longest module that `path` (a::b::Item) starts with.
    let resolve = |path: &[&str]| -> Option<String> {
        for n in (1..=path.len()).rev() {
            let cand = path[..n].join("::");
            if modules.contains(&cand) {
                return Some(cand);
            }
        }
        reexports.get(path[0]).cloned()
    };
    let ident = |s: &str| -> Vec<String> {
        s.split("::")
            .map(|seg| {
                seg.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|seg| !seg.is_empty())
            .collect()
    };
    let mut graph: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (p, text) in &files {
        let me = module_of(p);
        // Code only: comments may name anything.
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or(text)
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let body = code.as_str();
        let parent = me.rsplit_once("::").map(|(a, _)| a.to_string());
        let mut uses = BTreeSet::new();
        // Paths after `crate::`, `super::` and `self::`, with `{a, b::c}`
        // groups opened up.
        for (prefix, base) in [
            ("crate::", None),
            ("super::", Some(parent.clone().unwrap_or_default())),
            ("self::", Some(me.clone())),
        ] {
            let mut rest = body;
            while let Some(i) = rest.find(prefix) {
                let before = rest[..i].chars().last();
                rest = &rest[i + prefix.len()..];
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                let mut paths = Vec::new();
                if let Some(group) = rest.strip_prefix('{') {
                    let end = group.find('}').unwrap_or(group.len());
                    paths.extend(group[..end].split(',').map(|s| ident(s.trim())));
                } else {
                    paths.push(ident(rest));
                }
                for segs in paths {
                    let mut full: Vec<&str> = Vec::new();
                    if let Some(b) = &base {
                        full.extend(b.split("::").filter(|s| !s.is_empty()));
                    }
                    full.extend(segs.iter().map(String::as_str));
                    if full.is_empty() {
                        continue;
                    }
                    if let Some(m) = resolve(&full) {
                        uses.insert(m);
                    } else if base.as_deref() == Some("") || prefix == "crate::" {
                        uses.insert("crate".to_string());
                    }
                }
            }
        }
        // Children named directly: `child::item` where `mod child;` is here.
        for m in &modules {
            let Some(child) = m
                .strip_prefix(&format!("{me}::"))
                .or_else(|| (me == "crate").then_some(m.as_str()))
            else {
                continue;
            };
            if child.contains("::") || m == "crate" {
                continue;
            }
            if body.contains(&format!("mod {child};"))
                && body.match_indices(&format!("{child}::")).any(|(i, _)| {
                    !body[..i]
                        .chars()
                        .last()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                })
            {
                uses.insert(m.clone());
            }
        }
        uses.remove(&me);
        graph.entry(me).or_default().extend(uses);
    }
    graph
}

/// A circle of modules in `graph`, if there is one.
fn find_circle(graph: &HashMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &HashMap<String, BTreeSet<String>>,
        state: &mut HashMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            match state.get(m.as_str()) {
                Some(1) => {
                    let start = path.iter().position(|p| p == m).unwrap();
                    let mut circle = path[start..].to_vec();
                    circle.push(m.clone());
                    return Some(circle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, graph, state, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = HashMap::new();
    let mut names: Vec<&String> = graph.keys().collect();
    names.sort();
    for n in names {
        if !state.contains_key(n.as_str())
            && let Some(c) = visit(n, graph, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

/// No module circle inside the binary, the session library or the proxy:
/// each is layered, and a newcomer can read it bottom to top. Run it alone
/// with `cargo test -p agentctl --test architecture no_module_circle`.
#[test]
fn no_module_circle() {
    for krate in [
        "launcher/agentctl",
        "launcher/lifecycle",
        "launcher/docker-proxy",
        "launcher/worker",
    ] {
        let graph = module_graph(&workspace_root().join(krate).join("src"));
        assert!(graph.len() > 3, "{krate}: the walk found its modules");
        if let Some(circle) = find_circle(&graph) {
            panic!("{krate} has a module circle: {}", circle.join(" -> "));
        }
    }
}

#[test]
fn the_circle_check_can_fail() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("cmd")).unwrap();
    std::fs::write(
        src.join("main.rs"),
        "mod cmd;\nfn main() { cmd::dispatch(); }\n",
    )
    .unwrap();
    std::fs::write(
        src.join("cmd/mod.rs"),
        "mod run;\npub fn dispatch() { run::run() }\npub fn plan() {}\n",
    )
    .unwrap();
    std::fs::write(src.join("cmd/run.rs"), "pub fn run() { super::plan() }\n").unwrap();
    let graph = module_graph(src);
    let circle = find_circle(&graph).expect("cmd -> cmd::run -> cmd");
    assert!(circle.contains(&"cmd::run".to_string()), "{circle:?}");
    // The same with the shared function in a leaf: no circle.
    std::fs::write(
        src.join("cmd/mod.rs"),
        "mod run;\nmod common;\npub fn dispatch() { run::run() }\n",
    )
    .unwrap();
    std::fs::write(src.join("cmd/common.rs"), "pub fn plan() {}\n").unwrap();
    std::fs::write(
        src.join("cmd/run.rs"),
        "pub fn run() { super::common::plan() }\n",
    )
    .unwrap();
    assert_eq!(find_circle(&module_graph(src)), None);
}
