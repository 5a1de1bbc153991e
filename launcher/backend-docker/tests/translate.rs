//! The plan -> Docker container mapping. The same fixed plan as the native
//! backend's snapshot test, so the two can be read side by side.

use backend_docker::translate::{INIT_PATH, Options, to_container};
use policy::NetworkMode;
use sandbox::fixtures::spec;

fn options() -> Options {
    Options {
        image: "agentctl/hostroot:test".into(),
        tty: false,
        stdin: true,
        recursive_read_only: false,
        image_path: None,
        no_limits: false,
        init: Some("/usr/local/bin/agentctl".into()),
        tty_size: None,
        scope_abstract_unix: false,
        allowlist: None,
    }
}

fn json(network: NetworkMode, opts: &Options) -> serde_json::Value {
    serde_json::to_value(to_container(&spec(network), opts)).unwrap()
}

#[test]
fn host_root_session_snapshot() {
    let mut v = json(NetworkMode::None, &options());
    // The seccomp JSON is long and tested below.
    let opts = v["HostConfig"]["SecurityOpt"].as_array_mut().unwrap();
    for o in opts.iter_mut() {
        if o.as_str().unwrap().starts_with("seccomp=") {
            *o = "seccomp=<see seccomp_profile>".into();
        }
    }
    // serde_json's maps are ordered, so the snapshot is stable.
    insta::assert_json_snapshot!(v);
}

#[test]
fn hardening_maps_onto_host_config() {
    let v = json(NetworkMode::None, &options());
    let hc = &v["HostConfig"];
    assert_eq!(hc["ReadonlyRootfs"], true);
    assert_eq!(hc["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(hc["NetworkMode"], "none");
    assert_eq!(hc["PidsLimit"], 512);
    assert_eq!(hc["Memory"], 1 << 30);
    assert_eq!(hc["MemorySwap"], 1 << 30);
    assert_eq!(hc["NanoCpus"], 1_500_000_000i64);
    assert_eq!(hc["Privileged"], false);
    let sec: Vec<&str> = hc["SecurityOpt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(sec.contains(&"no-new-privileges:true"));
    assert!(sec.iter().any(|s| s.starts_with("seccomp={")));
    let masked: Vec<&str> = hc["MaskedPaths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for p in ["/proc/kcore", "/etc/shadow", "/home/dev/project/.env"] {
        assert!(masked.contains(&p), "{p}");
    }
    assert_eq!(v["User"], "1000:1000");
    assert_eq!(v["Labels"]["io.agentctl.managed"], "true");
    assert_eq!(
        v["Labels"]["io.agentctl.session"],
        "0123456789abcdef0123456789abcdef"
    );
}

#[test]
fn read_only_binds_are_never_partly_writable() {
    let old = json(NetworkMode::None, &options());
    let usr = |v: &serde_json::Value| {
        v["HostConfig"]["Mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["Target"] == "/usr")
            .unwrap()
            .clone()
    };
    // An engine without recursive read-only binds gets no submounts at all.
    assert_eq!(usr(&old)["BindOptions"]["NonRecursive"], true);
    let mut o = options();
    o.recursive_read_only = true;
    let new = json(NetworkMode::None, &o);
    assert_eq!(usr(&new)["BindOptions"]["ReadOnlyForceRecursive"], true);
    assert_eq!(usr(&new)["BindOptions"]["NonRecursive"], false);
}

#[test]
fn host_root_sessions_run_agentctls_init_and_images_docker_init() {
    let v = json(NetworkMode::None, &options());
    assert_eq!(v["HostConfig"]["Init"], false);
    assert_eq!(v["Entrypoint"][0], INIT_PATH);
    let mut o = options();
    o.init = None;
    let v = json(NetworkMode::None, &o);
    assert_eq!(v["HostConfig"]["Init"], true);
    assert_eq!(v["Entrypoint"], serde_json::json!([]));
}

#[test]
fn image_path_replaces_only_the_default_path() {
    let mut o = options();
    o.image_path = Some("/opt/bin:/usr/bin".into());
    let v = json(NetworkMode::None, &o);
    let env: Vec<&str> = v["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(env.contains(&"PATH=/opt/bin:/usr/bin"), "{env:?}");
}

#[test]
fn no_limits_leaves_limits_out() {
    let mut o = options();
    o.no_limits = true;
    let v = json(NetworkMode::Bridge, &o);
    assert!(v["HostConfig"].get("PidsLimit").is_none());
    assert_eq!(v["HostConfig"]["NetworkMode"], "bridge");
}

#[test]
fn seccomp_profile() {
    let j: serde_json::Value = serde_json::from_str(&backend_docker::seccomp::docker_json(
        &policy::seccomp::default_profile(),
    ))
    .unwrap();
    assert_eq!(j["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(j["defaultErrnoRet"], 1);
    let allowed = |name: &str| {
        j["syscalls"].as_array().unwrap().iter().any(|r| {
            r["action"] == "SCMP_ACT_ALLOW" && r["names"].as_array().unwrap().contains(&name.into())
        })
    };
    assert!(allowed("read") && allowed("clone"));
    assert!(!allowed("unshare") && !allowed("mount") && !allowed("bpf"));
    // runc's order: the mask in `value`, the datum in `valueTwo`.
    let ioctl: Vec<&serde_json::Value> = j["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["names"] == serde_json::json!(["ioctl"]))
        .collect();
    assert_eq!(ioctl.len(), 32);
    for r in ioctl {
        let a = &r["args"][0];
        assert_eq!(a["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(a["index"], 1);
        let mask = a["value"].as_u64().unwrap();
        assert_eq!(a["valueTwo"].as_u64().unwrap(), !0x5412u64 & mask);
    }
}

#[test]
fn an_allowlist_session_joins_its_holders_namespace_with_the_stubs_resolv_conf() {
    let mut o = options();
    o.allowlist = Some(("holder123".into(), "/run/x/resolv.conf".into()));
    let v = json(NetworkMode::Allowlist, &o);
    assert_eq!(v["HostConfig"]["NetworkMode"], "container:holder123");
    assert!(v.get("Hostname").is_none_or(|h| h.is_null()), "{v}");
    assert_eq!(v["NetworkDisabled"], false);
    let resolv = v["HostConfig"]["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Target"] == "/etc/resolv.conf")
        .expect("resolv.conf mounted");
    assert_eq!(resolv["Source"], "/run/x/resolv.conf");
    assert_eq!(resolv["ReadOnly"], true);
    // Without a holder, an allowlist session has no network at all.
    let v = json(NetworkMode::Allowlist, &options());
    assert_eq!(v["HostConfig"]["NetworkMode"], "none");
}
