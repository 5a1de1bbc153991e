//! Cleanup: removing everything a session made when its proxy stops.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::Config;
use crate::session::SessionScope;
use crate::upstream::{self, UpstreamError};

use super::filters::*;

/// Removes everything a session made: containers (with their anonymous
/// volumes), then networks and volumes. Returns how many objects went.
/// A kind of object `cleanup_session` removes: its name in paths, its list
/// path, the field of the list answer holding the items, the item's id key,
/// and the removal's parameters.
pub(super) type Kind = (
    &'static str,
    &'static [&'static str],
    Option<&'static str>,
    &'static str,
    &'static [(&'static str, &'static str)],
);

pub async fn cleanup_session(cfg: &Config, s: &SessionScope) -> Result<usize, UpstreamError> {
    let mut up = upstream::connect(&cfg.upstream).await?;
    let api = cfg.api_string();
    let filters = (
        "filters".to_string(),
        encode_filters(&BTreeMap::from([(
            "label".to_string(),
            s.label_filters().to_vec(),
        )])),
    );
    // Containers first: networks and volumes in use cannot go. Each kind:
    // its list, where the list answer keeps the items, the item's id, and
    // how to remove it (containers with their anonymous volumes).
    let kinds: [Kind; 3] = [
        (
            "containers",
            &["containers", "json"],
            None,
            "Id",
            &[("force", "1"), ("v", "1")],
        ),
        ("networks", &["networks"], None, "Id", &[]),
        (
            "volumes",
            &["volumes"],
            Some("Volumes"),
            "Name",
            &[("force", "1")],
        ),
    ];
    let mut removed = 0;
    for (kind, list, field, id_key, remove) in kinds {
        let mut q = vec![filters.clone()];
        if kind == "containers" {
            q.push(("all".into(), "1".into()));
        }
        let target = crate::route::build_target(&api, list, &q);
        let (status, body) = upstream::get(&mut up, "GET", &target).await?;
        if status != 200 {
            return Err(UpstreamError::Status {
                what: target,
                status,
            });
        }
        let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let items = match field {
            Some(f) => answer.get(f),
            None => Some(&answer),
        };
        for item in items.and_then(Value::as_array).into_iter().flatten() {
            let Some(id) = item.get(id_key).and_then(Value::as_str) else {
                continue;
            };
            if !s.owns(item.get("Labels")) {
                continue;
            }
            let q: Vec<(String, String)> = remove
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let t = crate::route::build_target(&api, &[kind, id], &q);
            let (status, _) = upstream::get(&mut up, "DELETE", &t).await?;
            // Something of the session's left behind is an error, not a count.
            if status >= 300 && status != 404 {
                return Err(UpstreamError::Status {
                    what: format!("DELETE {t}"),
                    status,
                });
            }
            removed += 1;
        }
    }
    Ok(removed)
}
