//! Property tests of the request classifier: no input panics, nothing a
//! role does not list is ever let through, and no spelling of a field
//! reaches the daemon as something the proxy did not check.

use docker_proxy::body::{self, types::ContainerCreate};
use docker_proxy::http1;
use docker_proxy::role::Role;
use docker_proxy::route::{self, Endpoint};
use proptest::prelude::*;

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("containers".to_string()),
        Just("json".to_string()),
        Just("create".to_string()),
        Just("exec".to_string()),
        Just("start".to_string()),
        Just("images".to_string()),
        Just("networks".to_string()),
        Just("volumes".to_string()),
        Just("logs".to_string()),
        Just("archive".to_string()),
        Just("attach".to_string()),
        Just("events".to_string()),
        Just("_ping".to_string()),
        Just("..".to_string()),
        Just(".".to_string()),
        Just("%2e%2e".to_string()),
        Just("%2F".to_string()),
        Just("v1.41".to_string()),
        Just("v1.44.".to_string()),
        Just("v%31.41".to_string()),
        Just("".to_string()),
        "[a-zA-Z0-9%._-]{1,8}",
    ]
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("GET".to_string()),
        Just("HEAD".to_string()),
        Just("POST".to_string()),
        Just("PUT".to_string()),
        Just("DELETE".to_string()),
        "[A-Za-z]{1,7}",
    ]
}

fn target() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(segment(), 0..6),
        prop::option::of("[a-z=&%0-9;+]{0,20}"),
    )
        .prop_map(|(segs, q)| {
            let mut t = format!("/{}", segs.join("/"));
            if let Some(q) = q {
                t.push('?');
                t.push_str(&q);
            }
            t
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn heads_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = http1::head_end(&bytes);
        let _ = http1::parse_head(&bytes);
    }

    #[test]
    fn routes_never_panic_and_round_trip(m in method(), t in target()) {
        if let Ok(parsed) = route::parse(&m, &t) {
            // The canonical target the proxy would send routes to the same
            // operation on the same object: what was checked is what runs.
            let segs = route::path_of(parsed.endpoint, parsed.object.as_deref());
            let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
            let canonical = route::build_target("1.41", &segs, &parsed.query);
            let again = route::parse(&m, &canonical).expect("the canonical target parses");
            prop_assert_eq!(again.endpoint, parsed.endpoint);
            prop_assert_eq!(again.object, parsed.object);
            prop_assert_eq!(again.query, parsed.query);
            prop_assert_eq!(again.client_version, Some((1, 41)));
            // Nothing that climbs or hides a slash is ever routed.
            let lower = t.to_ascii_lowercase();
            prop_assert!(!lower.contains("%2f"));
            let path = lower.split('?').next().unwrap_or_default().replace("%2e", ".");
            prop_assert!(!path.split('/').any(|s| s == ".." || s == "."));
        }
    }

    #[test]
    fn logs_reader_never_lets_a_write_through(m in method(), t in target()) {
        let role = Role::builtin("logs-reader").unwrap();
        if let Ok(parsed) = route::parse(&m, &t)
            && role.allows(parsed.endpoint)
        {
            prop_assert!(m == "GET" || m == "HEAD", "{} {} -> {:?}", m, t, parsed.endpoint);
            prop_assert!(!matches!(
                parsed.endpoint,
                Endpoint::ContainerArchive | Endpoint::ContainerExport | Endpoint::ContainerAttachWs
            ));
        }
    }

    #[test]
    fn no_spelling_of_a_field_slips_past(
        flips in prop::collection::vec(0u8..4, 11),
    ) {
        // "SecurityOpt" respelled the ways Go's decoder would still match:
        // any case, and the long s (U+017F) for s.
        let variant: String = "SecurityOpt"
            .chars()
            .zip(flips.iter())
            .map(|(c, f)| match (c, f) {
                ('S' | 's', 3) => '\u{17f}',
                (c, 1 | 3) => c.to_ascii_lowercase(),
                (c, 2) => c.to_ascii_uppercase(),
                (c, _) => c,
            })
            .collect();
        let alone = format!(r#"{{"HostConfig":{{"{variant}":["seccomp=unconfined"]}}}}"#);
        match body::decode::<ContainerCreate>(alone.as_bytes()) {
            Ok(c) => {
                // Accepted only under its exact name, where the rules see it.
                prop_assert_eq!(&variant, "SecurityOpt");
                let opts = c.host_config.unwrap().security_opt.unwrap();
                prop_assert_eq!(opts, vec!["seccomp=unconfined".to_string()]);
            }
            Err(_) => prop_assert_ne!(&variant, "SecurityOpt"),
        }
        let both = format!(r#"{{"HostConfig":{{"SecurityOpt":[],"{variant}":["seccomp=unconfined"]}}}}"#);
        prop_assert!(body::decode::<ContainerCreate>(both.as_bytes()).is_err());
    }
}
