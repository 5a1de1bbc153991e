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

pub mod fold;
pub mod types;

use serde::de::DeserializeOwned;

/// Why a request body was refused. Every message names the offending field
/// by its dotted path so a docker CLI or SDK user can find it.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BodyError {
    /// Not JSON, trailing data, invalid UTF-8, wrong type for a field, etc.
    /// `path` is the dotted field path ("HostConfig.Memory", "Env[2]") or ""
    /// for the top level.
    #[error("invalid request body{}: {message}", at_path(path))]
    Invalid { path: String, message: String },
    /// Two keys of one object that Go's encoding/json would treat as the
    /// same field. `path` is the later key's path ("HostConfig.privileged");
    /// `previous` is the earlier key as written.
    #[error(
        "duplicate key {key:?} in {}: {}",
        enclosing(path, key),
        duplicate_reason(key, previous)
    )]
    DuplicateKey {
        path: String,
        key: String,
        previous: String,
    },
    /// A key that is not a field of the typed struct (after the duplicate
    /// check; exact, case-sensitive names only). `path` includes the key.
    /// `suggestion` is the field (or dotted path) the client probably meant:
    /// the field the key folds to under Go's rules, or for a `HostConfig`
    /// field sent at the top level of a container create, its place inside
    /// `HostConfig`.
    #[error(
        "unknown field {field:?} in {}{}",
        enclosing(path, field),
        unknown_hint(suggestion.as_deref())
    )]
    UnknownField {
        path: String,
        field: String,
        suggestion: Option<String>,
    },
}

impl BodyError {
    /// Dotted path of the offending field; for `DuplicateKey` and
    /// `UnknownField` it ends with the key itself, e.g.
    /// "HostConfig.privileged".
    pub fn path(&self) -> &str {
        match self {
            BodyError::Invalid { path, .. }
            | BodyError::DuplicateKey { path, .. }
            | BodyError::UnknownField { path, .. } => path,
        }
    }
}

fn at_path(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" at {path}")
    }
}

/// The object that holds `key`, for messages: `path` minus the key itself.
fn enclosing(path: &str, key: &str) -> String {
    let parent = path
        .strip_suffix(key)
        .map(|p| p.strip_suffix('.').unwrap_or(p))
        .unwrap_or(path);
    if parent.is_empty() {
        "the request body".to_owned()
    } else {
        parent.to_owned()
    }
}

fn duplicate_reason(key: &str, previous: &str) -> String {
    if key == previous {
        "it is already present".to_owned()
    } else {
        format!("Docker would read it as {previous:?}, which is already present")
    }
}

fn unknown_hint(suggestion: Option<&str>) -> String {
    match suggestion {
        Some(s) if s.contains('.') => format!(" (did you mean {s:?}?)"),
        Some(s) => format!(" (field names are case-sensitive here; did you mean {s:?}?)"),
        None => String::new(),
    }
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// `HostConfig.Mounts[0].Type`; "" for the top level.
pub(crate) fn join_path(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Index(index) => {
                out.push('[');
                out.push_str(&index.to_string());
                out.push(']');
            }
        }
    }
    out
}

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
