//! Credentials in a git configuration file, for the warning `explain` gives
//! when a profile grants `~/.gitconfig`. Only what the file's shape says;
//! values are never returned, only where they are.

use crate::env::value_has_url_password;

/// Where `text` (a git config file) carries a credential: an
/// `http.extraHeader` (an `Authorization:` header, as CI systems write it),
/// a URL with a password (in `url.<base>.insteadOf`'s base or in any
/// value), or a credential helper that prints a password itself. Each
/// finding names the key, never the value.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut section = String::new();
    let mut subsection_has_password = false;
    let mut push = |what: String| {
        if !out.contains(&what) {
            out.push(what);
        }
    };
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut rest = line;
        if let Some(header) = line.strip_prefix('[') {
            let Some(end) = header.find(']') else {
                continue;
            };
            let inner = &header[..end];
            let (name, sub) = match inner.find(|c: char| c.is_whitespace()) {
                Some(i) => (&inner[..i], inner[i..].trim().trim_matches('"')),
                None => match inner.split_once('.') {
                    Some((n, s)) => (n, s),
                    None => (inner, ""),
                },
            };
            section = name.to_ascii_lowercase();
            subsection_has_password = value_has_url_password(sub);
            // `[http] extraheader = ...` may follow on the same line.
            rest = header[end + 1..].trim();
            if rest.is_empty() {
                continue;
            }
        }
        let (key, value) = match rest.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), v.trim()),
            None => (rest.trim().to_ascii_lowercase(), ""),
        };
        match (section.as_str(), key.as_str()) {
            ("http", "extraheader") => push("http.*.extraHeader".into()),
            ("url", "insteadof" | "pushinsteadof") if subsection_has_password => {
                push(format!("url.<a URL with a password>.{key}"))
            }
            ("credential", "helper") if value.contains("password=") => {
                push("credential.helper that prints a password".into())
            }
            _ if value_has_url_password(value) => {
                push(format!("{section}.*.{key} holds a URL with a password"))
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tokens_by_shape_and_never_returns_values() {
        let text = r#"
[user]
    name = Dev
[http "https://github.com/"]
    extraheader = AUTHORIZATION: basic c2VjcmV0LXRva2Vu
[url "https://bot:ghp_secret123@github.com/"]
    insteadOf = https://github.com/
[credential]
    helper = "!f() { echo username=x; echo password=ghp_inline; }; f"
[remote "origin"]
    url = https://u:hunter2@git.example/r.git
"#;
        let found = tokens(text);
        assert_eq!(found.len(), 4, "{found:?}");
        let all = found.join(" ");
        for secret in ["c2VjcmV0", "ghp_secret123", "ghp_inline", "hunter2"] {
            assert!(!all.contains(secret), "{all}");
        }
        assert!(
            all.contains("extraHeader") && all.contains("insteadof"),
            "{all}"
        );
    }

    #[test]
    fn plain_configs_are_quiet() {
        let text = "[user]\n\tname = Dev\n\temail = d@x\n[url \"git@github.com:\"]\n\tinsteadOf = https://github.com/\n[credential]\n\thelper = store\n[http]\n\tsslVerify = true\n";
        assert!(tokens(text).is_empty(), "{:?}", tokens(text));
    }
}
