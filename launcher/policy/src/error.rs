//! Errors of the policy layer. Every message names where the problem is and
//! what to do about it, because the reader is a user editing a YAML file.

use std::fmt;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The file is not a valid profile. `line` and `column` are 1-based.
    #[error("{source_name}:{line}:{column}: {message}{}", Hint(hint))]
    Syntax {
        source_name: String,
        line: usize,
        column: usize,
        message: String,
        hint: Option<String>,
    },
    #[error("unknown profile \"{name}\"; available: {}", available.join(", "))]
    Unknown {
        name: String,
        available: Vec<String>,
    },
    #[error("profile inheritance loops: {}", chain.join(" -> "))]
    Cycle { chain: Vec<String> },
    #[error("profile inheritance is deeper than {max} levels: {}", chain.join(" -> "))]
    TooDeep { chain: Vec<String>, max: usize },
    #[error("cannot read profile {path}: {reason}")]
    Read { path: String, reason: String },
    #[error(
        "{source_name}: the profile is too large or too deeply nested to be a profile ({what}); profiles are small YAML files: remove what is not a profile setting"
    )]
    TooLarge { source_name: String, what: String },
}

struct Hint<'a>(&'a Option<String>);

impl fmt::Display for Hint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(h) => write!(f, "; {h}"),
            None => Ok(()),
        }
    }
}

impl ProfileError {
    pub(crate) fn from_yaml(source: &str, _text: &str, err: &serde_yaml::Error) -> ProfileError {
        let (line, column) = err
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        let mut message = err.to_string();
        // serde_yaml appends the location, which we already put up front.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        let hint = suggestion(&message);
        ProfileError::Syntax {
            source_name: source.to_string(),
            line,
            column,
            message,
            hint,
        }
    }

    /// An error about a value that parsed but is not acceptable. The line is
    /// found by looking for `needle` in the text.
    pub(crate) fn invalid(
        source: &str,
        text: &str,
        needle: &str,
        message: String,
        hint: &str,
    ) -> ProfileError {
        let (line, column) = locate(text, needle);
        ProfileError::Syntax {
            source_name: source.to_string(),
            line,
            column,
            message,
            hint: Some(hint.to_string()),
        }
    }
}

/// Finds the first line that mentions `needle`, preferring a line where it
/// is a key.
fn locate(text: &str, needle: &str) -> (usize, usize) {
    let key = format!("{needle}:");
    let mut fallback = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start().trim_start_matches("- ");
        if trimmed.starts_with(&key) {
            return (i + 1, line.len() - trimmed.len() + 1);
        }
        if fallback.is_none()
            && let Some(col) = line.find(needle)
        {
            fallback = Some((i + 1, col + 1));
        }
    }
    fallback.unwrap_or((1, 1))
}

/// For "unknown field `x`, expected one of `a`, `b`" and the like, suggests
/// the closest expected name.
fn suggestion(message: &str) -> Option<String> {
    let got = between(message, "unknown field `", "`")
        .or_else(|| between(message, "unknown variant `", "`"))?;
    let expected_part = message.split("expected ").nth(1)?;
    let candidates: Vec<&str> = expected_part
        .split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s)
        .collect();
    let best = candidates
        .iter()
        .map(|c| (edit_distance(got, c), *c))
        .min()?;
    if best.0 <= 3 && best.0 < got.len().max(1) {
        Some(format!("did you mean `{}`?", best.1))
    } else {
        Some(format!(
            "remove it or use one of: {}",
            candidates.join(", ")
        ))
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(&s[from..from + len])
}

/// The candidate closest to `got` by edit distance, if it is close enough
/// to be what the user meant.
pub fn nearest<'a>(got: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let (d, best) = candidates
        .into_iter()
        .map(|c| (edit_distance(got, c), c))
        .min()?;
    (d <= 3 && d < got.len().max(1)).then_some(best)
}

pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance() {
        assert_eq!(edit_distance("netwrok", "network"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("claud", "claude-code"), 6);
    }

    #[test]
    fn locate_prefers_keys() {
        let text = "a: 1\nlimits:\n  pids: 3\n";
        assert_eq!(locate(text, "pids"), (3, 3));
        assert_eq!(locate(text, "nothing"), (1, 1));
    }
}
