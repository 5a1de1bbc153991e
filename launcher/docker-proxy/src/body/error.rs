//! Why a body was refused, and the field paths its messages name. A leaf:
//! `fold` and the decoder both use it.

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
