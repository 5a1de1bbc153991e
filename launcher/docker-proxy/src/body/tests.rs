use std::fmt::Debug;

use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::types::*;
use super::*;

const CREATE: &[u8] = include_bytes!("testdata/docker-create-20.10.json");
const CREATE_MANY_FLAGS: &[u8] = include_bytes!("testdata/docker-create-many-flags-20.10.json");

/// `Value` without `null` object members: what a re-encoding of a faithful
/// decode must equal, since `null` and absent mean the same to Go.
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// Every object key of `encoded` is present at the same place in `input`.
fn keys_within(encoded: &Value, input: &Value) -> bool {
    match (encoded, input) {
        (Value::Object(enc), Value::Object(inp)) => enc
            .iter()
            .all(|(k, v)| inp.get(k).is_some_and(|w| keys_within(v, w))),
        (Value::Array(enc), Value::Array(inp)) => {
            enc.len() == inp.len() && enc.iter().zip(inp).all(|(v, w)| keys_within(v, w))
        }
        (Value::Object(enc), _) => enc.is_empty(),
        _ => true,
    }
}

/// Decodes a body the real CLI sent, and checks the canonical re-encoding
/// says the same thing: identical to the input minus `null`s, and decoding
/// to the same value.
fn assert_faithful<T>(bytes: &[u8]) -> T
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let decoded: T = decode(bytes).unwrap_or_else(|e| panic!("{e}"));
    let encoded = encode(&decoded);
    let again: T = decode(&encoded).unwrap();
    assert_eq!(again, decoded);
    let input: Value = serde_json::from_slice(bytes).unwrap();
    let output: Value = serde_json::from_slice(&encoded).unwrap();
    assert_eq!(output, without_nulls(input));
    decoded
}

fn create_with_host_config(host_config: &str) -> String {
    format!(r#"{{"Image":"busybox","HostConfig":{host_config}}}"#)
}

#[test]
fn captured_cli_create_body_round_trips() {
    let create: ContainerCreate = assert_faithful(CREATE);
    assert_eq!(create.image.as_deref(), Some("agentctl-test/busybox"));
    assert_eq!(create.cmd, Some(vec!["echo".to_owned(), "hi".to_owned()]));
    assert_eq!(create.env, None);
    let host = create.host_config.as_ref().unwrap();
    assert_eq!(host.privileged, Some(false));
    assert_eq!(host.binds, None);
    assert_eq!(host.console_size, Some([0, 0]));
    assert_eq!(host.memory_swappiness, Some(-1));
    assert_eq!(host.devices, Some(vec![]));
    let endpoints = create.networking_config.unwrap().endpoints_config.unwrap();
    assert_eq!(endpoints["default"].ipam_config, None);
    assert_eq!(endpoints["default"].gw_priority, Some(0));
}

#[test]
fn captured_cli_create_with_many_flags_round_trips() {
    let create: ContainerCreate = assert_faithful(CREATE_MANY_FLAGS);
    let host = create.host_config.unwrap();
    assert_eq!(host.cap_add, Some(vec!["CAP_NET_ADMIN".to_owned()]));
    assert_eq!(host.oom_kill_disable, Some(true));
    assert_eq!(host.pids_limit, Some(50));
    let mounts = host.mounts.unwrap();
    assert_eq!(mounts.len(), 3);
    assert_eq!(
        mounts[0].tmpfs_options.as_ref().unwrap().size_bytes,
        Some(1000)
    );
    assert_eq!(
        mounts[1].volume_options.as_ref().unwrap().driver_config,
        Some(Driver::default())
    );
    assert_eq!(host.blkio_device_read_bps.unwrap()[0].rate, Some(1_048_576));
    assert_eq!(
        create
            .exposed_ports
            .unwrap()
            .into_keys()
            .collect::<Vec<_>>(),
        ["80/tcp"]
    );
    assert_eq!(create.healthcheck.unwrap().interval, Some(5_000_000_000));
}

#[test]
fn captured_cli_bodies_of_other_endpoints_round_trip() {
    let exec: ExecCreate =
        assert_faithful(include_bytes!("testdata/docker-exec-create-20.10.json"));
    assert_eq!(exec.cmd, Some(vec!["echo".to_owned(), "hi".to_owned()]));
    assert_eq!(exec.detach, Some(false));
    assert_faithful::<ExecCreate>(include_bytes!(
        "testdata/docker-exec-create-detach-tty-20.10.json"
    ));
    assert_faithful::<ExecStart>(include_bytes!("testdata/docker-exec-start-20.10.json"));
    assert_faithful::<ExecStart>(include_bytes!(
        "testdata/docker-exec-start-detach-tty-20.10.json"
    ));
    let net: NetworkCreate =
        assert_faithful(include_bytes!("testdata/docker-network-create-20.10.json"));
    assert_eq!(
        net.ipam.unwrap().config.unwrap()[0].ip_range.as_deref(),
        Some("10.99.0.128/25")
    );
    assert_faithful::<NetworkConnect>(include_bytes!("testdata/docker-network-connect-20.10.json"));
    assert_faithful::<NetworkDisconnect>(include_bytes!(
        "testdata/docker-network-disconnect-20.10.json"
    ));
    assert_faithful::<VolumeCreate>(include_bytes!("testdata/docker-volume-create-20.10.json"));
    let update: ContainerUpdate =
        assert_faithful(include_bytes!("testdata/docker-update-20.10.json"));
    assert_eq!(update.memory, Some(134_217_728));
    assert_eq!(update.pids_limit, None);
}

#[test]
fn older_cli_fields_decode() {
    // Docker 20.10's CLI still sends the deprecated kernel-memory fields.
    let body = create_with_host_config(
        r#"{"KernelMemory":0,"KernelMemoryTCP":0,"Devices":[],"Mounts":null,"Capabilities":null}"#,
    );
    // ...but not Capabilities, which only API 1.40 had.
    let err = decode::<ContainerCreate>(body.as_bytes()).unwrap_err();
    assert_eq!(err.path(), "HostConfig.Capabilities");

    let body = create_with_host_config(
        r#"{"KernelMemory":0,"KernelMemoryTCP":0,"Devices":[],"Mounts":null}"#,
    );
    let create: ContainerCreate = decode(body.as_bytes()).unwrap();
    let host = create.host_config.unwrap();
    assert_eq!(host.kernel_memory, Some(0));
    assert_eq!(host.devices, Some(vec![]));
    assert_eq!(host.mounts, None);
}

#[test]
fn top_level_host_config_field_is_unknown() {
    for field in ["Privileged", "Binds", "CapAdd", "Devices", "SecurityOpt"] {
        let body = format!(r#"{{"Image":"busybox","{field}":null}}"#);
        let err = decode::<ContainerCreate>(body.as_bytes()).unwrap_err();
        assert_eq!(
            err,
            BodyError::UnknownField {
                path: field.to_owned(),
                field: field.to_owned(),
                suggestion: Some(format!("HostConfig.{field}")),
            }
        );
        assert_eq!(err.path(), field);
    }
    let err = decode::<ContainerCreate>(br#"{"Image":"busybox","Privileged":true}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"unknown field "Privileged" in the request body (did you mean "HostConfig.Privileged"?)"#
    );
    // The engine-era `Cpuset` and arbitrary keys have no suggestion.
    let err = decode::<ContainerCreate>(br#"{"Cpuset":"0"}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"unknown field "Cpuset" in the request body"#
    );
}

#[test]
fn case_variant_field_is_unknown_with_suggestion() {
    let err =
        decode::<ContainerCreate>(create_with_host_config(r#"{"privileged":true}"#).as_bytes())
            .unwrap_err();
    assert_eq!(
        err,
        BodyError::UnknownField {
            path: "HostConfig.privileged".into(),
            field: "privileged".into(),
            suggestion: Some("Privileged".into()),
        }
    );
    assert_eq!(
        err.to_string(),
        r#"unknown field "privileged" in HostConfig (field names are case-sensitive here; did you mean "Privileged"?)"#
    );

    let err = decode::<ContainerCreate>("{\"HostConfig\":{\"\u{212A}ernelMemory\":1}}".as_bytes())
        .unwrap_err();
    assert!(matches!(
        &err,
        BodyError::UnknownField { suggestion: Some(s), .. } if s == "KernelMemory"
    ));

    let err = decode::<ContainerCreate>(br#"{"image":"busybox"}"#).unwrap_err();
    assert!(matches!(
        &err,
        BodyError::UnknownField { suggestion: Some(s), .. } if s == "Image"
    ));
}

#[test]
fn unknown_field_paths_through_arrays_and_maps() {
    let err = decode::<ContainerCreate>(
        create_with_host_config(r#"{"Mounts":[{"Type":"bind","bindoptions":{}}]}"#).as_bytes(),
    )
    .unwrap_err();
    assert_eq!(err.path(), "HostConfig.Mounts[0].bindoptions");
    assert!(
        err.to_string().contains(r#"in HostConfig.Mounts[0] ("#),
        "{err}"
    );
    assert!(
        err.to_string().contains(r#"did you mean "BindOptions"?"#),
        "{err}"
    );

    let err = decode::<ContainerCreate>(
        br#"{"NetworkingConfig":{"EndpointsConfig":{"bridge":{"Aliases":[],"Privileged":true}}}}"#,
    )
    .unwrap_err();
    assert_eq!(
        err.path(),
        "NetworkingConfig.EndpointsConfig.bridge.Privileged"
    );
    assert!(matches!(
        err,
        BodyError::UnknownField {
            suggestion: None,
            ..
        }
    ));

    // ClusterOptions and ExposedPorts values are Go `struct{}`s.
    let err = decode::<ContainerCreate>(br#"{"ExposedPorts":{"80/tcp":{"x":1}}}"#).unwrap_err();
    assert_eq!(err.path(), "ExposedPorts.80/tcp.x");
}

#[test]
fn odd_unknown_keys_are_reported_verbatim() {
    // A key that mimics serde's message must not forge the suggestion.
    let key = "x`, expected one of `Privileged";
    let body = serde_json::json!({ "HostConfig": { key: true } }).to_string();
    let err = decode::<ContainerCreate>(body.as_bytes()).unwrap_err();
    assert_eq!(
        err,
        BodyError::UnknownField {
            path: format!("HostConfig.{key}"),
            field: key.to_owned(),
            suggestion: None,
        }
    );

    // A newline in a key stays escaped in the message.
    let err = decode::<ContainerCreate>(br#"{"Labels":{},"a.b\n":1}"#).unwrap_err();
    assert_eq!(err.path(), "a.b\n");
    assert_eq!(
        err.to_string(),
        r#"unknown field "a.b\n" in the request body"#
    );
}

#[test]
fn duplicate_keys_are_reported_before_unknown_fields() {
    let err = decode::<ContainerCreate>(
        create_with_host_config(r#"{"Privileged":false,"privileged":true}"#).as_bytes(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        BodyError::DuplicateKey {
            path: "HostConfig.privileged".into(),
            key: "privileged".into(),
            previous: "Privileged".into(),
        }
    );
}

#[test]
fn null_fields_decode_to_none_and_are_omitted() {
    let body = br#"{"Image":null,"Env":null,"Cmd":null,"HostConfig":{"Binds":null,"Privileged":null,"Memory":null,"PortBindings":{"80/tcp":null}}}"#;
    let create: ContainerCreate = decode(body).unwrap();
    assert_eq!(create.image, None);
    assert_eq!(create.cmd, None);
    let host = create.host_config.as_ref().unwrap();
    assert_eq!(host.privileged, None);
    assert_eq!(host.port_bindings.as_ref().unwrap()["80/tcp"], None);
    assert_eq!(
        String::from_utf8(encode(&create)).unwrap(),
        r#"{"HostConfig":{"PortBindings":{"80/tcp":null}}}"#
    );
    assert_eq!(
        decode::<ContainerCreate>(b"{}").unwrap(),
        ContainerCreate::default()
    );
    assert_eq!(encode(&ContainerCreate::default()), b"{}");
}

#[test]
fn str_slices_accept_a_string_and_encode_an_array() {
    let create: ContainerCreate = decode(
        br#"{"Cmd":"echo hi","Entrypoint":"","Shell":["/bin/sh","-c"],"HostConfig":{"CapAdd":"NET_ADMIN","CapDrop":[]}}"#,
    )
    .unwrap();
    assert_eq!(create.cmd, Some(vec!["echo hi".to_owned()]));
    assert_eq!(create.entrypoint, Some(vec![String::new()]));
    let host = create.host_config.as_ref().unwrap();
    assert_eq!(host.cap_add, Some(vec!["NET_ADMIN".to_owned()]));
    assert_eq!(host.cap_drop, Some(vec![]));
    let encoded: Value = serde_json::from_slice(&encode(&create)).unwrap();
    assert_eq!(encoded["Cmd"], serde_json::json!(["echo hi"]));
    assert_eq!(encoded["Entrypoint"], serde_json::json!([""]));

    let err = decode::<ContainerCreate>(br#"{"Cmd":["echo",1]}"#).unwrap_err();
    assert_eq!(err.path(), "Cmd[1]");
    let err = decode::<ContainerCreate>(br#"{"Cmd":1}"#).unwrap_err();
    assert_eq!(err.path(), "Cmd");
    assert!(
        err.to_string().contains("a string or an array of strings"),
        "{err}"
    );
    // Env is a plain []string in Go: no string form.
    let err = decode::<ContainerCreate>(br#"{"Env":"A=1"}"#).unwrap_err();
    assert_eq!(err.path(), "Env");
}

#[test]
fn wrong_type_is_invalid_with_path() {
    let err = decode::<ContainerCreate>(create_with_host_config(r#"{"Memory":"1g"}"#).as_bytes())
        .unwrap_err();
    assert!(matches!(err, BodyError::Invalid { .. }), "{err:?}");
    assert_eq!(err.path(), "HostConfig.Memory");
    assert!(
        err.to_string()
            .starts_with("invalid request body at HostConfig.Memory: "),
        "{err}"
    );

    for (host_config, path) in [
        (r#"{"Memory":1.5}"#, "HostConfig.Memory"),
        (r#"{"Memory":1e3}"#, "HostConfig.Memory"),
        (r#"{"Memory":9223372036854775808}"#, "HostConfig.Memory"),
        (r#"{"BlkioWeight":-1}"#, "HostConfig.BlkioWeight"),
        (r#"{"BlkioWeight":65536}"#, "HostConfig.BlkioWeight"),
        (r#"{"Privileged":"true"}"#, "HostConfig.Privileged"),
        (r#"{"Privileged":1}"#, "HostConfig.Privileged"),
        (r#"{"Binds":["/a:/a",null]}"#, "HostConfig.Binds[1]"),
        (r#"{"Labels":{}}"#, "HostConfig.Labels"),
        (r#"{"Sysctls":{"a":null}}"#, "HostConfig.Sysctls.a"),
        (
            r#"{"Ulimits":[{"Name":"nofile","Soft":"1"}]}"#,
            "HostConfig.Ulimits[0].Soft",
        ),
        (r#"{"ConsoleSize":[1]}"#, "HostConfig.ConsoleSize"),
        (r#"{"ConsoleSize":[1,2,3]}"#, "HostConfig.ConsoleSize"),
        (r#"{"RestartPolicy":"always"}"#, "HostConfig.RestartPolicy"),
    ] {
        let err =
            decode::<ContainerCreate>(create_with_host_config(host_config).as_bytes()).unwrap_err();
        assert_eq!(err.path(), path, "{host_config}: {err}");
    }
}

#[test]
fn arrays_never_stand_in_for_objects() {
    // serde's derive alone would fill struct fields by position; Go refuses.
    for body in [
        &br#"[]"#[..],
        br#"["host"]"#,
        br#"{"HostConfig":[null,""]}"#,
        br#"{"HostConfig":{"RestartPolicy":["always",0]}}"#,
        br#"{"ExposedPorts":{"80/tcp":[]}}"#,
        br#"{"Labels":[["a","b"]]}"#,
    ] {
        let err = decode::<ContainerCreate>(body).unwrap_err();
        assert!(matches!(err, BodyError::Invalid { .. }), "{err:?}");
    }
    let err =
        decode::<ContainerCreate>(br#"{"HostConfig":{"RestartPolicy":["always",0]}}"#).unwrap_err();
    assert_eq!(err.path(), "HostConfig.RestartPolicy");
    assert!(err.to_string().contains("expected a JSON object"), "{err}");
}

#[test]
fn malformed_bodies_are_invalid() {
    for body in [
        &b""[..],
        b"null",
        b"[]",
        b"\"x\"",
        b"{\"Image\":\"x\"} {}",
        b"{\"Image\":\"\xff\"}",
        b"\xef\xbb\xbf{}",
    ] {
        let err = decode::<ContainerCreate>(body).unwrap_err();
        assert!(
            matches!(err, BodyError::Invalid { .. }),
            "{body:?}: {err:?}"
        );
    }
}

#[test]
fn encoded_output_only_has_typed_keys() {
    // Whatever a body holds, the output is built from the typed value, so a
    // key the proxy did not model can only cause a rejection, never pass.
    for body in [CREATE, CREATE_MANY_FLAGS] {
        let create: ContainerCreate = decode(body).unwrap();
        let out: Value = serde_json::from_slice(&encode(&create)).unwrap();
        assert!(keys_within(&out, &serde_json::from_slice(body).unwrap()));
    }
    let mut smuggled: Value = serde_json::from_slice(CREATE).unwrap();
    smuggled["HostConfig"]["Smuggled"] = Value::Bool(true);
    let err = decode::<ContainerCreate>(&serde_json::to_vec(&smuggled).unwrap()).unwrap_err();
    assert_eq!(err.path(), "HostConfig.Smuggled");
}

#[test]
fn container_update_has_exactly_the_resources_fields() {
    let host = field_names::<HostConfig>();
    let update = field_names::<ContainerUpdate>();
    let cpu_shares = host.iter().position(|f| *f == "CpuShares").unwrap();
    let io_bandwidth = host
        .iter()
        .position(|f| *f == "IOMaximumBandwidth")
        .unwrap();
    let mut expected = host[cpu_shares..=io_bandwidth].to_vec();
    expected.push("RestartPolicy");
    assert_eq!(update, expected.as_slice());
}

#[test]
fn field_names_match_go_names() {
    let create = field_names::<ContainerCreate>();
    assert_eq!(create.len(), 27);
    assert!(create.contains(&"HostConfig") && !create.contains(&"Privileged"));
    assert_eq!(field_names::<HostConfig>().len(), 71);
    assert!(field_names::<EmptyObject>().is_empty());
}

#[test]
fn every_body_type_accepts_an_empty_object() {
    fn empty<T: DeserializeOwned + Default + PartialEq + Debug>() {
        assert_eq!(decode::<T>(b"{}").unwrap(), T::default());
    }
    empty::<ContainerCreate>();
    empty::<ContainerUpdate>();
    empty::<ExecCreate>();
    empty::<ExecStart>();
    empty::<NetworkCreate>();
    empty::<NetworkConnect>();
    empty::<NetworkDisconnect>();
    empty::<VolumeCreate>();
}

#[test]
fn volume_cluster_spec_is_typed() {
    let body = br#"{"Name":"v","ClusterVolumeSpec":{"Group":"g","AccessMode":{"Scope":"single","Sharing":"none","MountVolume":{"FsType":"ext4"}},"CapacityRange":{"RequiredBytes":1,"LimitBytes":2},"Secrets":[{"Key":"k","Secret":"s"}],"AccessibilityRequirements":{"Requisite":[{"Segments":{"zone":"a"}}]},"Availability":"active"}}"#;
    assert_faithful::<VolumeCreate>(body);
    let err = decode::<VolumeCreate>(br#"{"ClusterVolumeSpec":{"group":"g"}}"#).unwrap_err();
    assert!(matches!(
        &err,
        BodyError::UnknownField { suggestion: Some(s), .. } if s == "Group"
    ));
}

#[test]
fn device_requests_and_blkio_are_typed() {
    let body = create_with_host_config(
        r#"{"DeviceRequests":[{"Driver":"nvidia","Count":-1,"DeviceIDs":null,"Capabilities":[["gpu"]],"Options":{}}],"BlkioWeightDevice":[{"Path":"/dev/sda","Weight":10}]}"#,
    );
    assert_faithful::<ContainerCreate>(body.as_bytes());
    let err = decode::<ContainerCreate>(
        create_with_host_config(r#"{"DeviceRequests":[{"driver":"nvidia"}]}"#).as_bytes(),
    )
    .unwrap_err();
    assert_eq!(err.path(), "HostConfig.DeviceRequests[0].driver");
}

/// A JSON document that may repeat keys, which `serde_json::Value` cannot.
#[derive(Debug, Clone)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn render(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(&b.to_string()),
            Json::Int(n) => out.push_str(&n.to_string()),
            Json::Str(s) => out.push_str(&serde_json::to_string(s).unwrap()),
            Json::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.render(out);
                }
                out.push(']');
            }
            Json::Obj(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(key).unwrap());
                    out.push(':');
                    value.render(out);
                }
                out.push('}');
            }
        }
    }
}

impl From<&Value> for Json {
    fn from(value: &Value) -> Json {
        match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => Json::Int(n.as_i64().expect("captured bodies hold integers")),
            Value::String(s) => Json::Str(s.clone()),
            Value::Array(items) => Json::Arr(items.iter().map(Json::from).collect()),
            Value::Object(map) => {
                Json::Obj(map.iter().map(|(k, v)| (k.clone(), v.into())).collect())
            }
        }
    }
}

/// One edit to the `target`-th object member (in document order, wrapping).
#[derive(Debug, Clone)]
enum Edit {
    Remove,
    Null,
    Lowercase,
    DuplicateUppercase,
    Replace(Json),
}

fn apply(doc: &mut Json, target: usize, edit: &Edit) {
    fn count(doc: &Json) -> usize {
        match doc {
            Json::Arr(items) => items.iter().map(count).sum(),
            Json::Obj(members) => members.iter().map(|(_, v)| 1 + count(v)).sum(),
            _ => 0,
        }
    }
    fn walk(doc: &mut Json, target: &mut usize, edit: &Edit) -> bool {
        match doc {
            Json::Arr(items) => items.iter_mut().any(|item| walk(item, target, edit)),
            Json::Obj(members) => {
                for i in 0..members.len() {
                    if *target == 0 {
                        match edit {
                            Edit::Remove => {
                                members.remove(i);
                            }
                            Edit::Null => members[i].1 = Json::Null,
                            Edit::Lowercase => members[i].0 = members[i].0.to_lowercase(),
                            Edit::DuplicateUppercase => {
                                let (k, v) = members[i].clone();
                                members.push((k.to_uppercase(), v));
                            }
                            Edit::Replace(json) => members[i].1 = json.clone(),
                        }
                        return true;
                    }
                    *target -= 1;
                    if walk(&mut members[i].1, target, edit) {
                        return true;
                    }
                }
                false
            }
            _ => false,
        }
    }
    let total = count(doc);
    if total > 0 {
        walk(doc, &mut (target % total), edit);
    }
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    prop_oneof![
        Just(Edit::Remove),
        Just(Edit::Null),
        Just(Edit::Lowercase),
        Just(Edit::DuplicateUppercase),
        json_strategy().prop_map(Edit::Replace),
    ]
}

fn key_strategy() -> impl Strategy<Value = String> {
    let mut names: Vec<String> = Vec::new();
    for fields in [
        field_names::<ContainerCreate>(),
        field_names::<HostConfig>(),
        field_names::<Mount>(),
        field_names::<RestartPolicy>(),
    ] {
        names.extend(fields.iter().map(|f| (*f).to_owned()));
    }
    names.extend(
        [
            "privileged",
            "PRIVILEGED",
            "\u{212A}ernelMemory",
            "\u{17F}hmSize",
            "x",
            "80/tcp",
        ]
        .map(String::from),
    );
    prop::sample::select(names)
}

fn json_strategy() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        prop_oneof![Just(0i64), Just(-1), any::<i64>()].prop_map(Json::Int),
        prop_oneof![
            Just(String::new()),
            "[a-z/:0-9 ]{0,8}".prop_map(String::from)
        ]
        .prop_map(Json::Str),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Arr),
            prop::collection::vec((key_strategy(), inner), 0..6).prop_map(Json::Obj),
        ]
    })
}

fn check_no_panic_and_round_trip(bytes: &[u8]) {
    if let Ok(create) = decode::<ContainerCreate>(bytes) {
        let encoded = encode(&create);
        assert_eq!(decode::<ContainerCreate>(&encoded).unwrap(), create);
        let input: Value = serde_json::from_slice(bytes).unwrap();
        let output: Value = serde_json::from_slice(&encoded).unwrap();
        assert!(keys_within(&output, &input), "{output} not within {input}");
    }
}

proptest! {
    // Failures are reported, not written into the source tree.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn decode_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_no_panic_and_round_trip(&bytes);
    }

    #[test]
    fn decode_never_panics_on_json_ish_text(text in r#"[{}\[\]":,0-9a-zA-Z\\ .eE+\-]{0,200}"#) {
        check_no_panic_and_round_trip(text.as_bytes());
    }

    #[test]
    fn decode_never_panics_on_json_with_docker_keys(doc in json_strategy()) {
        let mut text = String::new();
        doc.render(&mut text);
        check_no_panic_and_round_trip(text.as_bytes());
    }

    #[test]
    fn edited_cli_body_decodes_or_fails_cleanly(
        edits in prop::collection::vec((any::<usize>(), edit_strategy()), 0..4),
    ) {
        let mut doc = Json::from(&serde_json::from_slice::<Value>(CREATE_MANY_FLAGS).unwrap());
        for (target, edit) in &edits {
            apply(&mut doc, *target, edit);
        }
        let mut text = String::new();
        doc.render(&mut text);
        check_no_panic_and_round_trip(text.as_bytes());
    }

    #[test]
    fn decode_never_panics_on_mutated_cli_body(
        at in 0..CREATE.len(),
        byte in any::<u8>(),
        delete in any::<bool>(),
    ) {
        let mut body = CREATE.to_vec();
        if delete {
            body.remove(at);
        } else {
            body[at] = byte;
        }
        check_no_panic_and_round_trip(&body);
    }
}
