//! Responses: what is taken out of the daemon's answer before the client
//! sees it.

use serde_json::Value;

use crate::config::Config;

use super::decision::*;

/// Takes out of a list answer everything that is not the session's.
pub fn filter_response(cfg: &Config, filter: &ResponseFilter, body: &[u8]) -> Vec<u8> {
    let Some(s) = cfg.session.as_ref() else {
        return body.to_vec();
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        // An answer the proxy cannot read is not passed on unfiltered.
        return b"[]".to_vec();
    };
    let keep = |item: &Value| s.owns(item.get("Labels"));
    match filter {
        ResponseFilter::ContainersList | ResponseFilter::NetworksList => {
            if let Value::Array(a) = &mut v {
                a.retain(keep);
            } else {
                v = Value::Array(Vec::new());
            }
        }
        ResponseFilter::VolumesList => match v.get_mut("Volumes") {
            Some(Value::Array(a)) => a.retain(keep),
            _ => v = serde_json::json!({"Volumes": [], "Warnings": []}),
        },
        ResponseFilter::Events | ResponseFilter::None => {}
    }
    serde_json::to_vec(&v).unwrap_or_default()
}
