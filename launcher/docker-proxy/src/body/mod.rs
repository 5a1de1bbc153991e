//! JSON request bodies: decoded strictly, re-encoded canonically.
//!
//! The daemon must act on exactly the body the proxy checked. Go's
//! `encoding/json` is lenient in ways a Rust decoder is not by default: it
//! matches keys to fields case-insensitively (with Unicode folding), lets the
//! last of duplicate keys win, and ignores keys it does not know. So a body is
//! accepted only if (1) no object has two keys Go would treat as one
//! ([`fold::check_duplicates`]) and (2) it decodes into a typed struct that
//! names every field exactly and refuses any other key. The proxy then
//! forwards [`encode`] of the typed value, never the client's bytes, so
//! whatever the proxy did not understand cannot reach the daemon.

mod error;
pub mod fold;
pub mod types;

use serde::de::DeserializeOwned;

pub use error::BodyError;
pub(crate) use error::{Segment, join_path};

/// Strict decode: (1) whole-document duplicate-key check under Go folding
/// at every object level ([`fold::check_duplicates`]), (2) serde decode into
/// `T`, whose structs deny unknown fields and use exact PascalCase names,
/// with errors carrying the field path.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    fold::check_duplicates(bytes)?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(classify)?;
    de.end().map_err(|err| BodyError::Invalid {
        path: String::new(),
        message: err.to_string(),
    })?;
    Ok(value)
}

/// Canonical re-encoding (`None` fields are omitted, maps are sorted).
///
/// # Panics
///
/// If `T`'s `Serialize` fails, which the types in [`types`] cannot do (all
/// map keys are strings).
pub fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("request body types always serialize to JSON")
}

fn classify(err: serde_path_to_error::Error<serde_json::Error>) -> BodyError {
    let segments: Vec<Segment> = err
        .path()
        .iter()
        .map(|segment| match segment {
            serde_path_to_error::Segment::Seq { index } => Segment::Index(*index),
            serde_path_to_error::Segment::Map { key } => Segment::Key(key.clone()),
            serde_path_to_error::Segment::Enum { variant } => Segment::Key(variant.clone()),
            serde_path_to_error::Segment::Unknown => Segment::Key("?".to_owned()),
        })
        .collect();
    let path = join_path(&segments);
    let inner = err.into_inner();
    let message = inner.to_string();

    if let Some(Segment::Key(field)) = segments.last() {
        // serde's derive reports `unknown field `<key>`, expected ...`; the
        // key is taken from the path, so only the fixed prefix is parsed.
        if let Some(rest) = message.strip_prefix(&format!("unknown field `{field}`, ")) {
            let expected = expected_fields(rest);
            let suggestion = suggest(field, &expected, segments.len() == 1);
            return BodyError::UnknownField {
                path,
                field: field.clone(),
                suggestion,
            };
        }
    }
    BodyError::Invalid { path, message }
}

/// Field names from the tail of serde's message: "expected `A`", "expected
/// one of `A`, `B`" or "there are no fields", followed by a position.
fn expected_fields(rest: &str) -> Vec<&str> {
    if !rest.starts_with("expected ") {
        return Vec::new();
    }
    // Field names contain no backticks, so they are the odd pieces.
    rest.split('`').skip(1).step_by(2).collect()
}

fn suggest(field: &str, expected: &[&str], top_level: bool) -> Option<String> {
    let folded = fold::go_fold(field);
    if let Some(name) = expected.iter().find(|name| fold::go_fold(name) == folded) {
        return Some((*name).to_owned());
    }
    // Engines before 27.0.1 still read HostConfig fields from the top level
    // of a container create, and old SDKs put them there.
    if top_level && expected.contains(&"HostConfig") {
        let host = types::field_names::<types::HostConfig>();
        if let Some(name) = host.iter().find(|name| fold::go_fold(name) == folded) {
            return Some(format!("HostConfig.{name}"));
        }
    }
    None
}

#[cfg(test)]
mod tests;
