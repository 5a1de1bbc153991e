//! The OpenAPI document against what the server does: every documented
//! path answers with a documented status, and each JSON answer matches its
//! schema (a small validator for the parts of JSON Schema the document
//! uses: $ref, type, enum, required, properties, items).

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::Value;
use store::{Backend, NewEvent, NewSession, SessionStore};
use tower::ServiceExt;
use web::{AppState, HostAllowList, app};

fn resolve<'a>(doc: &'a Value, mut s: &'a Value) -> &'a Value {
    while let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let mut at = doc;
        for part in r.trim_start_matches("#/").split('/') {
            at = &at[part];
        }
        assert!(!at.is_null(), "dangling $ref {r}");
        s = at;
    }
    s
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let s = resolve(doc, schema);
    if let Some(t) = s.get("type") {
        let allowed: Vec<&str> = match t {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => return Err(format!("{at}: bad type in the schema")),
        };
        let actual = type_of(v);
        let integer_as_number = actual == "integer" && allowed.contains(&"number");
        if !(allowed.contains(&actual) || integer_as_number) {
            return Err(format!("{at}: {actual}, the document says {allowed:?}"));
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        return Err(format!("{at}: {v} is not one of {e:?}"));
    }
    if let Value::Object(o) = v {
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap();
            if !o.contains_key(r) {
                return Err(format!("{at}: no `{r}`"));
            }
        }
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (k, sub) in props {
                if let Some(x) = o.get(k) {
                    check(doc, sub, x, &format!("{at}.{k}"))?;
                }
            }
        }
    }
    if let (Value::Array(a), Some(items)) = (v, s.get("items")) {
        for (i, x) in a.iter().enumerate() {
            check(doc, items, x, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_document_matches_what_the_server_answers() {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::connect(&format!("sqlite://{}", dir.path().join("s.db").display()))
        .await
        .unwrap();
    let id = "0123456789abcdef0123456789abcdef";
    let policy = r#"{"network":"none"}"#.to_string();
    store
        .create_session(
            &NewSession {
                id: id.into(),
                profile: "generic".into(),
                backend: Backend::Native,
                image: None,
                workspace: "/w".into(),
                command: vec!["true".into()],
                user: "u".into(),
                uid: 1,
                host: "h".into(),
                created_at: None,
                detached: false,
                policy_sha256: store::chain::sha256_hex(policy.as_bytes()),
                policy,
            },
            NewEvent::new("created").actor("u"),
        )
        .await
        .unwrap();
    let st = AppState::new(store, HostAllowList::loopback(), "t".into());
    let call = |method: Method, path: String| {
        let st = st.clone();
        async move {
            let req = Request::builder()
                .method(method)
                .uri(&path)
                .header("host", "localhost")
                .body(Body::empty())
                .unwrap();
            let resp = app(st).oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            let ctype = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, ctype, body)
        }
    };

    let (status, _, body) = call(Method::GET, "/api/v1/openapi.json".into()).await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");

    // Every route of the API is documented, and nothing else.
    let mut documented: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    documented.sort();
    let mut served = vec![
        "/healthz",
        "/api/v1/sessions",
        "/api/v1/sessions/{id}",
        "/api/v1/sessions/{id}/events",
        "/api/v1/sessions/{id}/output",
        "/api/v1/sessions/{id}/stop",
        "/api/v1/requests",
        "/api/v1/requests/{id}",
        "/api/v1/workers",
    ];
    served.sort();
    assert_eq!(documented, served);

    let mut checked = 0;
    // Each path with a real id, then an unknown one: the answer's status is
    // documented, and a JSON answer fits its schema. The stop goes last
    // (it changes the session).
    for unknown in [false, true] {
        let mut paths: Vec<(&String, &Value)> = doc["paths"].as_object().unwrap().iter().collect();
        paths.sort_by_key(|(p, _)| p.ends_with("/stop"));
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                let m = match method.as_str() {
                    "get" => Method::GET,
                    "post" => Method::POST,
                    // A delete of the real session would leave nothing for
                    // the paths after it: only the unknown one.
                    "delete" if unknown => Method::DELETE,
                    "delete" => continue,
                    "parameters" => continue,
                    other => panic!("{other} is not served"),
                };
                let concrete = path.replace("{id}", if unknown { "ffffffff" } else { id });
                let (status, ctype, body) = call(m.clone(), concrete.clone()).await;
                let spec = &op["responses"][status.to_string()];
                assert!(
                    !spec.is_null(),
                    "{m} {concrete} answered {status}, which the document does not list"
                );
                let spec = resolve(&doc, spec);
                if spec.pointer("/content/application~1octet-stream").is_some() {
                    assert!(
                        ctype.starts_with("application/octet-stream"),
                        "{m} {concrete}: {ctype}"
                    );
                    checked += 1;
                }
                if let Some(schema) = spec.pointer("/content/application~1json/schema") {
                    assert!(
                        ctype.starts_with("application/json"),
                        "{m} {concrete}: {ctype}"
                    );
                    let v: Value = serde_json::from_slice(&body).unwrap();
                    if let Err(e) = check(&doc, schema, &v, &format!("{m} {concrete} {status}")) {
                        panic!("{e}\n{v}");
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 8, "only {checked} answers checked");
}

#[test]
fn the_validator_can_fail() {
    let doc: Value = serde_json::from_str(
        r#"{"components":{"schemas":{"S":{"type":"object","required":["a"],"properties":{"a":{"type":"integer"},"b":{"type":"string","enum":["x"]}}}}}}"#,
    )
    .unwrap();
    let s = serde_json::json!({"$ref": "#/components/schemas/S"});
    assert!(check(&doc, &s, &serde_json::json!({"a": 1, "b": "x"}), "v").is_ok());
    assert!(check(&doc, &s, &serde_json::json!({"b": "x"}), "v").is_err());
    assert!(check(&doc, &s, &serde_json::json!({"a": "1"}), "v").is_err());
    assert!(check(&doc, &s, &serde_json::json!({"a": 1, "b": "y"}), "v").is_err());
    assert!(
        check(
            &doc,
            &serde_json::json!({"type": "array", "items": s}),
            &serde_json::json!([{"a": 1}, {}]),
            "v"
        )
        .is_err()
    );
}
