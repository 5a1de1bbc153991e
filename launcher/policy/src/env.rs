//! The sandbox's environment. It starts minimal and grows only by names a
//! profile or the command line gives. Values never appear in `Debug` output
//! or in `explain`: only names do.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::types::EnvPattern;

/// The PATH of a session without a better one.
pub const STANDARD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Variables every sandbox gets.
pub const BASE_VARS: &[&str] = &["PATH", "HOME", "USER", "TERM", "LANG", "TZ"];

/// Name shapes that usually hold credentials. A variable with such a name
/// passes only when a profile or `-e` names it exactly, never through a
/// `PREFIX_*` pattern.
const SECRET_SHAPES: &[&str] = &[
    "*_TOKEN",
    "*_TOKEN_*",
    "*TOKEN",
    "*_KEY",
    "*_KEY_*",
    "*_KEYS",
    "*APIKEY*",
    "*_SECRET",
    "*_SECRET_*",
    "*SECRET*",
    "*PASSWORD*",
    "*PASSWD*",
    "*PASSPHRASE*",
    "*_PWD",
    "*_PASS",
    "*_JWT",
    "*_JWT_*",
    "JWT_*",
    "*_PAT",
    "*CREDENTIAL*",
    "*PRIVATE*",
    "*_AUTH",
    "*_AUTH_*",
    "*DATABASE_URL*",
    "*_DSN",
    "*SESSION*",
    "*COOKIE*",
    "AWS_*",
    "AZURE_*",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "SSH_AUTH_SOCK",
    "GPG_AGENT_INFO",
];

/// True when `name` has the shape of a credential.
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_SHAPES
        .iter()
        .any(|shape| shape_matches(shape, &upper))
}

/// True when `value` holds a URL with a password in its userinfo
/// (`scheme://user:password@host`): a database, broker or package index
/// URL under a name no shape catches (`PIP_EXTRA_INDEX_URL`, `BROKER`).
pub fn value_has_url_password(value: &str) -> bool {
    let mut rest = value;
    while let Some(i) = rest.find("://") {
        let after = &rest[i + 3..];
        // The authority ends at the path, query, fragment or whitespace.
        let end = after
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..end];
        if let Some((userinfo, _host)) = authority.rsplit_once('@')
            && let Some((_user, password)) = userinfo.split_once(':')
            && !password.is_empty()
        {
            return true;
        }
        rest = after;
    }
    false
}

fn shape_matches(shape: &str, name: &str) -> bool {
    let parts: Vec<&str> = shape.split('*').collect();
    if parts.len() == 1 {
        return shape == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name.ends_with(last) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// A value that must not be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a variable is in the sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EnvSource {
    /// One of [`BASE_VARS`].
    Base,
    /// Passed through from the host because the profile names it.
    Profile { pattern: String },
    /// Set to a fixed value by the profile's `env_set`.
    ProfileSet,
    /// Passed or set with `-e` on the command line.
    CommandLine,
    /// Set by the `allowlist` network: where its proxy listens.
    Network,
}

#[derive(Clone, Debug)]
pub struct EnvVar {
    pub name: String,
    pub value: Redacted,
    pub source: EnvSource,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RefusedVar {
    pub name: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default)]
pub struct EnvPlan {
    pub vars: Vec<EnvVar>,
    pub refused: Vec<RefusedVar>,
}

/// A request from the command line: `-e NAME` passes the host value,
/// `-e NAME=VALUE` sets one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CliEnv {
    Pass(String),
    Set(String, Redacted),
}

impl std::str::FromStr for CliEnv {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, value) = match s.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (s, None),
        };
        if !crate::types::valid_env_name(name) {
            return Err(format!(
                "invalid variable name \"{name}\"; use -e NAME or -e NAME=VALUE"
            ));
        }
        Ok(match value {
            Some(v) => CliEnv::Set(name.to_string(), Redacted(v.to_string())),
            None => CliEnv::Pass(name.to_string()),
        })
    }
}

/// What the planner knows about the invoking user.
pub struct BaseEnv<'a> {
    pub home: &'a str,
    pub user: &'a str,
    /// The session runs from an image, whose PATH the host's means nothing
    /// to: use a standard one (backends may replace it with the image's).
    pub image: bool,
}

/// Builds the sandbox environment from the host's.
pub fn plan_env(
    host: &[(String, String)],
    base: &BaseEnv<'_>,
    pass: &[EnvPattern],
    set: &BTreeMap<String, String>,
    cli: &[CliEnv],
) -> EnvPlan {
    let lookup = |name: &str| host.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let mut plan = EnvPlan::default();
    let put = |plan: &mut EnvPlan, name: &str, value: String, source: EnvSource| {
        plan.vars.retain(|v| v.name != name);
        plan.vars.push(EnvVar {
            name: name.to_string(),
            value: Redacted(value),
            source,
        });
    };

    for name in BASE_VARS {
        let value = match *name {
            "HOME" => Some(base.home.to_string()),
            "USER" => Some(base.user.to_string()),
            "PATH" if base.image => Some(STANDARD_PATH.into()),
            "PATH" => Some(lookup("PATH").unwrap_or_else(|| STANDARD_PATH.into())),
            other => lookup(other),
        };
        if let Some(v) = value {
            put(&mut plan, name, v, EnvSource::Base);
        }
    }

    for (name, value) in host {
        if BASE_VARS.contains(&name.as_str()) {
            continue;
        }
        let Some(pattern) = pass.iter().find(|p| p.matches(name)) else {
            continue;
        };
        // A pattern passes only what does not look like a credential: by its
        // name, or by its value (a URL that carries a password is one
        // whatever the variable is called; never printed).
        let secret = if pattern.is_exact() {
            None
        } else if looks_secret(name) {
            Some("looks like a secret")
        } else if value_has_url_password(value) {
            Some("its value is a URL with a password (user:password@)")
        } else {
            None
        };
        if let Some(why) = secret {
            plan.refused.push(RefusedVar {
                name: name.clone(),
                reason: format!(
                    "matches `{pattern}` but {why}; name it exactly in the profile or pass -e {name}"
                ),
            });
            continue;
        }
        put(
            &mut plan,
            name,
            value.clone(),
            EnvSource::Profile {
                pattern: pattern.to_string(),
            },
        );
    }

    for (name, value) in set {
        let value = match value.strip_prefix("~/") {
            Some(rest) => format!("{}/{rest}", base.home.trim_end_matches('/')),
            None if value == "~" => base.home.to_string(),
            None => value.clone(),
        };
        put(&mut plan, name, value, EnvSource::ProfileSet);
    }

    for request in cli {
        match request {
            CliEnv::Pass(name) => match lookup(name) {
                Some(v) => put(&mut plan, name, v, EnvSource::CommandLine),
                None => plan.refused.push(RefusedVar {
                    name: name.clone(),
                    reason: "-e names it but it is not set on the host".into(),
                }),
            },
            CliEnv::Set(name, value) => {
                put(&mut plan, name, value.0.clone(), EnvSource::CommandLine)
            }
        }
    }
    plan.vars.sort_by(|a, b| a.name.cmp(&b.name));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Vec<(String, String)> {
        [
            ("PATH", "/usr/bin"),
            ("HOME", "/root"),
            ("TERM", "xterm"),
            ("ANTHROPIC_API_KEY", "sk-ant-xxx"),
            ("AIDER_MODEL", "sonnet"),
            ("AIDER_OPENAI_API_KEY", "sk-yyy"),
            ("AWS_SECRET_ACCESS_KEY", "aws"),
            ("GITHUB_TOKEN", "ghp"),
            ("EDITOR", "vim"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    }

    fn names(p: &EnvPlan) -> Vec<&str> {
        p.vars.iter().map(|v| v.name.as_str()).collect()
    }

    const BASE: BaseEnv<'static> = BaseEnv {
        home: "/home/a",
        user: "a",
        image: false,
    };

    #[test]
    fn minimal_by_default() {
        let p = plan_env(&host(), &BASE, &[], &BTreeMap::new(), &[]);
        assert_eq!(names(&p), ["HOME", "PATH", "TERM", "USER"]);
        let home = p.vars.iter().find(|v| v.name == "HOME").unwrap();
        assert_eq!(home.value.0, "/home/a");
    }

    #[test]
    fn exact_names_pass_even_when_secret_looking() {
        let pass = vec!["ANTHROPIC_API_KEY".parse().unwrap()];
        let p = plan_env(&host(), &BASE, &pass, &BTreeMap::new(), &[]);
        assert!(names(&p).contains(&"ANTHROPIC_API_KEY"));
        assert!(!names(&p).contains(&"GITHUB_TOKEN"));
    }

    #[test]
    fn prefix_patterns_never_pass_secrets() {
        let pass = vec!["AIDER_*".parse().unwrap(), "AWS_*".parse().unwrap()];
        let p = plan_env(&host(), &BASE, &pass, &BTreeMap::new(), &[]);
        assert!(names(&p).contains(&"AIDER_MODEL"));
        assert!(!names(&p).contains(&"AIDER_OPENAI_API_KEY"));
        assert!(!names(&p).contains(&"AWS_SECRET_ACCESS_KEY"));
        let refused: Vec<_> = p.refused.iter().map(|r| r.name.as_str()).collect();
        assert!(refused.contains(&"AIDER_OPENAI_API_KEY"));
    }

    #[test]
    fn set_and_cli() {
        let set = BTreeMap::from([("CLAUDE_CONFIG_DIR".to_string(), "~/.claude".to_string())]);
        let cli = vec![
            "GITHUB_TOKEN".parse().unwrap(),
            "FOO=bar".parse().unwrap(),
            "MISSING".parse().unwrap(),
        ];
        let p = plan_env(&host(), &BASE, &[], &set, &cli);
        let get = |n: &str| {
            p.vars
                .iter()
                .find(|v| v.name == n)
                .map(|v| v.value.0.clone())
        };
        assert_eq!(get("CLAUDE_CONFIG_DIR").as_deref(), Some("/home/a/.claude"));
        assert_eq!(get("GITHUB_TOKEN").as_deref(), Some("ghp"));
        assert_eq!(get("FOO").as_deref(), Some("bar"));
        assert!(p.refused.iter().any(|r| r.name == "MISSING"));
    }

    #[test]
    fn secret_shapes() {
        for n in [
            "GITHUB_TOKEN",
            "OPENAI_API_KEY",
            "AWS_REGION",
            "DB_PASSWORD",
            "MY_SECRET",
            "GH_PAT",
            "DATABASE_URL",
            "client_secret",
            "MYSQL_PWD",
            "GPG_PASSPHRASE",
            "SSH_KEY_PASSPHRASE_FILE",
            "API_JWT",
            "SUPABASE_JWT_SECRET",
            "JWT_TOKEN_FILE",
        ] {
            assert!(looks_secret(n), "{n}");
        }
        for n in [
            "PATH",
            "EDITOR",
            "AIDER_MODEL",
            "KEYBOARD",
            "LANG",
            "NODE_OPTIONS",
            "PWD",
            "OLDPWD",
        ] {
            assert!(!looks_secret(n), "{n}");
        }
    }

    #[test]
    fn url_passwords_in_values() {
        for v in [
            "postgres://app:hunter2@db:5432/app",
            "amqp://guest:guest@localhost",
            "https://u:tok@pypi.example/simple https://pypi.org/simple",
            "redis://:secret@cache:6379/0",
            "see mysql://root:pw@127.0.0.1",
        ] {
            assert!(value_has_url_password(v), "{v}");
        }
        for v in [
            "postgres://db:5432/app",
            "https://user@example.com/x",
            "https://example.com/a:b@c",
            "https://user:@example.com",
            "plain value",
            "",
        ] {
            assert!(!value_has_url_password(v), "{v}");
        }
    }

    #[test]
    fn a_pattern_never_passes_a_url_with_a_password() {
        let host = vec![
            ("AIDER_BROKER".to_string(), "amqp://u:p@h/".to_string()),
            (
                "AIDER_INDEX".to_string(),
                "https://pypi.org/simple".to_string(),
            ),
        ];
        let pass = vec!["AIDER_*".parse().unwrap()];
        let p = plan_env(&host, &BASE, &pass, &BTreeMap::new(), &[]);
        assert!(!names(&p).contains(&"AIDER_BROKER"));
        assert!(names(&p).contains(&"AIDER_INDEX"));
        let r = p.refused.iter().find(|r| r.name == "AIDER_BROKER").unwrap();
        assert!(r.reason.contains("URL with a password"), "{}", r.reason);
        assert!(!r.reason.contains("u:p"), "{}", r.reason);
        // Named exactly, the user has chosen it.
        let exact = vec!["AIDER_BROKER".parse().unwrap()];
        let p = plan_env(&host, &BASE, &exact, &BTreeMap::new(), &[]);
        assert!(names(&p).contains(&"AIDER_BROKER"));
    }

    #[test]
    fn debug_never_shows_values() {
        let pass = vec!["ANTHROPIC_API_KEY".parse().unwrap()];
        let p = plan_env(&host(), &BASE, &pass, &BTreeMap::new(), &[]);
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("sk-ant-xxx"), "{dbg}");
    }

    #[test]
    fn cli_env_parse() {
        assert_eq!("A".parse::<CliEnv>().unwrap(), CliEnv::Pass("A".into()));
        assert!("1A=b".parse::<CliEnv>().is_err());
        assert!(
            matches!("A=b=c".parse::<CliEnv>().unwrap(), CliEnv::Set(n, v) if n == "A" && v.0 == "b=c")
        );
    }
}
