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
    forbid("backend-native", &["bollard", "tokio", "backend-docker"]);
    forbid(
        "backend-docker",
        &["libcontainer", "oci-spec", "backend-native"],
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

#[test]
fn the_check_can_fail() {
    // backend-native does depend on libcontainer: the walk must see it.
    assert!(closure("backend-native").contains("libcontainer"));
}
