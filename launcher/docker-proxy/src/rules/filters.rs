//! List and event filters: the `filters` parameter made canonical, and
//! a session's lists and events narrowed to its own objects.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::body::{self, BodyError};
use crate::config::Config;
use crate::session::{LABEL_PREFIX, SessionScope};

use super::decision::*;

/// Parses a `filters` parameter (either of Docker's two shapes) into the
/// map shape, refusing folded duplicate keys.
pub(super) fn parse_filters(raw: &str) -> Result<BTreeMap<String, Vec<String>>, Why> {
    if raw.is_empty() {
        return Ok(BTreeMap::new());
    }
    let v: Value = match body::decode(raw.as_bytes()) {
        Ok(v) => v,
        Err(e) => return bad_body(e),
    };
    let Value::Object(map) = v else {
        return bad_body(BodyError::Invalid {
            path: "filters".into(),
            message: "filters must be a JSON object".into(),
        });
    };
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let values: Vec<String> = match v {
            Value::Array(a) => a
                .into_iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .unwrap_or_default(),
            Value::Object(m) => m
                .into_iter()
                .filter(|(_, b)| b.as_bool() == Some(true))
                .map(|(k, _)| k)
                .collect(),
            _ => Vec::new(),
        };
        out.insert(k, values);
    }
    Ok(out)
}

pub(super) fn encode_filters(f: &BTreeMap<String, Vec<String>>) -> String {
    let map: serde_json::Map<String, Value> = f
        .iter()
        .map(|(k, vs)| {
            let inner: serde_json::Map<String, Value> =
                vs.iter().map(|v| (v.clone(), Value::Bool(true))).collect();
            (k.clone(), Value::Object(inner))
        })
        .collect();
    Value::Object(map).to_string()
}

pub(super) fn canonical_filters(raw: &str, session: Option<&SessionScope>) -> Result<String, Why> {
    let mut f = parse_filters(raw)?;
    if let Some(s) = session {
        // The client's own label filters stay (labels filter with AND), but
        // none of them may speak about agentctl's labels: the session's own
        // replaces them.
        let labels = f.entry("label".to_string()).or_default();
        labels.retain(|l| !l.starts_with(LABEL_PREFIX));
        labels.extend(s.label_filters());
    }
    Ok(encode_filters(&f))
}

pub(super) fn own_filters(s: &SessionScope, query: &mut Vec<(String, String)>) -> Result<(), Why> {
    match query.iter_mut().find(|(k, _)| k == "filters") {
        Some((_, f)) => *f = canonical_filters(f, Some(s))?,
        None => query.push(("filters".into(), canonical_filters("", Some(s))?)),
    }
    Ok(())
}

/// Filters a stream of newline-separated JSON events to the session's own.
#[derive(Default)]
pub struct EventFilter {
    partial: Vec<u8>,
}

impl EventFilter {
    pub fn push(&mut self, cfg: &Config, data: &[u8]) -> Vec<u8> {
        let Some(s) = cfg.session.as_ref() else {
            return data.to_vec();
        };
        self.partial.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(pos) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            if let Ok(ev) = serde_json::from_slice::<Value>(&line)
                && s.owns(ev.pointer("/Actor/Attributes"))
            {
                out.extend_from_slice(&line);
            }
        }
        if self.partial.len() > 1024 * 1024 {
            self.partial.clear();
        }
        out
    }
}
