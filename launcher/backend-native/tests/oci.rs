//! The plan -> OCI spec translation: snapshots of the generated config, and
//! validation against the OCI runtime-spec JSON schema.

mod common;

use backend_native::oci::{BundleOptions, to_oci};
use policy::NetworkMode;

fn options(runtime_limits: bool, user_namespace: bool) -> BundleOptions {
    BundleOptions {
        tty: false,
        cgroups_path: "/agentctl/0123456789abcdef0123456789abcdef".into(),
        runtime_limits,
        resolv_conf: None,
        no_limits: false,
        nofile: (1024, 4096),
        user_namespace,
        image_path: None,
    }
}

fn config(network: NetworkMode, opts: &BundleOptions) -> serde_json::Value {
    let spec = to_oci(&common::spec(network), opts).unwrap();
    serde_json::to_value(&spec).unwrap()
}

#[test]
fn root_session_snapshot() {
    let mut value = config(NetworkMode::None, &options(true, true));
    // The seccomp section is long and has its own test; keep it out of the
    // snapshot so the snapshot shows the sandbox's shape.
    value["linux"]["seccomp"] = serde_json::json!("<see seccomp_section>");
    insta::assert_json_snapshot!(value);
}

#[test]
fn rootless_session_has_no_user_namespace_or_runtime_limits() {
    let value = config(NetworkMode::None, &options(false, false));
    let linux = &value["linux"];
    assert!(
        linux.get("resources").is_none(),
        "limits are agentctl's job here"
    );
    assert!(linux.get("uidMappings").is_none());
    let ns: Vec<&str> = linux["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert!(!ns.contains(&"user"), "{ns:?}");
    assert!(ns.contains(&"network"), "{ns:?}");
}

#[test]
fn host_network_gets_an_empty_read_only_sys_with_the_cpu_topology() {
    let value = config(NetworkMode::Host, &options(true, true));
    let ns = value["linux"]["namespaces"].as_array().unwrap();
    assert!(!ns.iter().any(|n| n["type"] == "network"));
    let mounts = value["mounts"].as_array().unwrap();
    let sys = mounts.iter().find(|m| m["destination"] == "/sys").unwrap();
    // Not the host's sysfs: it would show the host's devices and cgroups.
    assert_eq!(sys["type"], "tmpfs");
    let cpu = mounts
        .iter()
        .find(|m| m["destination"] == "/sys/devices/system/cpu")
        .unwrap();
    assert_eq!(cpu["type"], "bind");
    assert!(cpu["options"].as_array().unwrap().contains(&"ro".into()));
    // Made read-only once its submount is in place.
    assert!(
        value["linux"]["readonlyPaths"]
            .as_array()
            .unwrap()
            .contains(&"/sys".into())
    );
}

#[test]
fn read_only_trees_are_read_only_recursively_but_single_files_are_not_rro() {
    let value = config(NetworkMode::None, &options(true, true));
    let mounts = value["mounts"].as_array().unwrap();
    let opts = |dest: &str| -> Vec<String> {
        mounts.iter().find(|m| m["destination"] == dest).unwrap()["options"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_str().unwrap().to_string())
            .collect()
    };
    assert!(opts("/usr").contains(&"rro".to_string()));
    assert!(opts("/etc").contains(&"rro".to_string()));
    assert!(!opts("/home/dev/.gitconfig").contains(&"rro".to_string()));
    assert!(opts("/home/dev/.gitconfig").contains(&"ro".to_string()));
    assert!(opts("/home/dev/project").contains(&"rw".to_string()));
}

#[test]
fn seccomp_section() {
    let value = config(NetworkMode::None, &options(true, true));
    let sc = &value["linux"]["seccomp"];
    assert_eq!(sc["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(sc["defaultErrnoRet"], 1);
    let rules = sc["syscalls"].as_array().unwrap();
    let allowed = |name: &str| {
        rules.iter().any(|r| {
            r["action"] == "SCMP_ACT_ALLOW" && r["names"].as_array().unwrap().contains(&name.into())
        })
    };
    for name in ["read", "openat", "execve", "clone", "ioctl"] {
        assert!(allowed(name), "{name} must be allowed");
    }
    for name in [
        "mount",
        "unshare",
        "setns",
        "bpf",
        "keyctl",
        "io_uring_setup",
        "pivot_root",
    ] {
        assert!(!allowed(name), "{name} must not be allowed");
    }
    // Masked comparisons in runc's and crun's order: mask in `value`, datum
    // in `valueTwo`. The AF_VSOCK rules test one bit of socket's domain each.
    let socket_args: Vec<&serde_json::Value> = rules
        .iter()
        .filter(|r| r["names"] == serde_json::json!(["socket"]))
        .map(|r| &r["args"][0])
        .collect();
    assert_eq!(socket_args.len(), 32);
    for a in &socket_args {
        assert_eq!(a["op"], "SCMP_CMP_MASKED_EQ");
        let (mask, datum) = (
            a["value"].as_u64().unwrap(),
            a["valueTwo"].as_u64().unwrap(),
        );
        assert_eq!(mask.count_ones(), 1);
        assert_eq!(datum, !40u64 & mask, "bit {mask:#x}");
    }
}

#[test]
fn libcontainer_reads_masked_comparisons_the_other_way_round() {
    let mut spec = to_oci(&common::spec(NetworkMode::None), &options(true, true)).unwrap();
    let standard = serde_json::to_value(&spec).unwrap();
    backend_native::oci::for_libcontainer(&mut spec).unwrap();
    let swapped = serde_json::to_value(&spec).unwrap();
    let rules = |v: &serde_json::Value| {
        v["linux"]["seccomp"]["syscalls"]
            .as_array()
            .unwrap()
            .clone()
    };
    let (a, b) = (rules(&standard), rules(&swapped));
    assert_eq!(a.len(), b.len());
    let mut masked = 0;
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x["names"], y["names"]);
        match x["args"].as_array() {
            Some(args) if args[0]["op"] == "SCMP_CMP_MASKED_EQ" => {
                masked += 1;
                assert_eq!(x["args"][0]["value"], y["args"][0]["valueTwo"]);
                assert_eq!(x["args"][0]["valueTwo"], y["args"][0]["value"]);
            }
            _ => assert_eq!(x, y, "only masked comparisons change"),
        }
    }
    assert_eq!(masked, 64, "socket and ioctl, 32 bits each");
}

#[test]
fn masked_paths_include_secrets_and_proc_defaults() {
    let value = config(NetworkMode::None, &options(true, true));
    let masked: Vec<&str> = value["linux"]["maskedPaths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for p in [
        "/proc/kcore",
        "/sys/firmware",
        "/etc/shadow",
        "/home/dev/project/.env",
    ] {
        assert!(masked.contains(&p), "{p} missing from {masked:?}");
    }
    assert_eq!(value["root"]["readonly"], true);
    assert_eq!(value["process"]["noNewPrivileges"], true);
    assert_eq!(
        value["process"]["capabilities"]["bounding"],
        serde_json::json!([])
    );
}

/// Resolves the schema's relative `$ref`s (defs.json, config-linux.json)
/// to the files next to it.
struct SchemaDir(std::path::PathBuf);

impl jsonschema::Retrieve for SchemaDir {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<&str>,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        let name = uri.path().as_str().rsplit('/').next().unwrap_or_default();
        let text = std::fs::read(self.0.join(name))?;
        Ok(serde_json::from_slice(&text)?)
    }
}

#[test]
fn generated_configs_validate_against_the_oci_schema() {
    let Some(dir) = common::schema_dir() else {
        assert!(
            common::require(
                false,
                "the OCI runtime-spec schema (../shared/oci-runtime-spec-schema or AGENTCTL_OCI_SCHEMA)"
            ),
            "unreachable"
        );
        return;
    };
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config-schema.json")).unwrap()).unwrap();
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .with_retriever(SchemaDir(dir.clone()))
        .build(&schema)
        .expect("schema compiles");
    for network in [NetworkMode::None, NetworkMode::Bridge, NetworkMode::Host] {
        for (limits, userns) in [(true, true), (false, false)] {
            let mut opts = options(limits, userns);
            opts.tty = network == NetworkMode::Bridge;
            if network == NetworkMode::Bridge {
                opts.resolv_conf = Some("/run/agentctl/sessions/x/resolv.conf".into());
            }
            let value = config(network, &opts);
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| format!("{} at {}", e, e.instance_path))
                .collect();
            assert!(
                errors.is_empty(),
                "config for {network:?} limits={limits} invalid:\n{}",
                errors.join("\n")
            );
        }
    }
    // The validator must be able to fail: a config with a bad field is
    // rejected.
    let mut bad = config(NetworkMode::None, &options(true, true));
    bad["linux"]["namespaces"][0]["type"] = "not-a-namespace".into();
    assert!(
        !validator.is_valid(&bad),
        "the schema check accepts anything"
    );
}
