//! Which files are secrets. This module only answers questions about names
//! and paths; walking the disk is the sandbox crate's job.
//!
//! Patterns follow gitignore conventions: a pattern without `/` matches a
//! name at any depth; a pattern with `/` is anchored at the root of the
//! mount it is checked against; a trailing `/` matches directories only.

use std::fmt;

use globset::{GlobBuilder, GlobMatcher};
use serde::Serialize;

/// Built-in rules for files anywhere in the workspace and in extra mounts.
/// They match files, not directories: a Python virtualenv named `.env/` is
/// not a secret, although the files inside it are checked like any other.
const BUILTIN_FILE_RULES: &[(&str, &[&str], &str)] = &[
    (
        ".env*",
        &[".env.example", ".env.sample", ".env.template", ".env.dist"],
        "dotenv file",
    ),
    ("*.pem", &[], "PEM key or certificate"),
    ("*.key", &[], "private key"),
    ("*.p12", &[], "PKCS#12 key store"),
    ("*.pfx", &[], "PKCS#12 key store"),
    ("id_rsa*", &["*.pub"], "SSH private key"),
    ("id_ed25519*", &["*.pub"], "SSH private key"),
    ("id_ecdsa*", &["*.pub"], "SSH private key"),
    ("id_dsa*", &["*.pub"], "SSH private key"),
    (".netrc", &[], "netrc credentials"),
    (".npmrc", &[], "npm credentials"),
    (".pypirc", &[], "PyPI credentials"),
    (".pgpass", &[], "PostgreSQL password file"),
    (".git-credentials", &[], "git credential store"),
    ("credentials.json", &[], "cloud credentials"),
    ("*.tfvars", &[], "Terraform variables"),
    ("*.tfstate", &[], "Terraform state (holds resource secrets)"),
    (
        "*.tfstate.backup",
        &[],
        "Terraform state (holds resource secrets)",
    ),
];

/// Paths under the home directory that are never mounted unless a profile
/// grants them by name. When a granted directory or the workspace contains
/// one of them, it is masked there.
pub const HOME_DENY: &[(&str, &str)] = &[
    (".ssh", "SSH keys"),
    (".aws", "AWS credentials"),
    (".gnupg", "GnuPG keys"),
    (".kube", "Kubernetes credentials"),
    (".docker", "Docker registry credentials"),
    (".config/gcloud", "Google Cloud credentials"),
    (".azure", "Azure credentials"),
    (".password-store", "pass password store"),
    (".netrc", "netrc credentials"),
    (".pgpass", "PostgreSQL passwords"),
    (".git-credentials", "git credential store"),
    (".npmrc", "npm credentials"),
    (".pypirc", "PyPI credentials"),
    (".config/gh", "GitHub CLI token"),
    (".config/hub", "hub token"),
    (".vault-token", "Vault token"),
    (
        ".terraform.d/credentials.tfrc.json",
        "Terraform Cloud token",
    ),
    (".cargo/credentials", "crates.io token"),
    (".cargo/credentials.toml", "crates.io token"),
    (".config/git/credentials", "git credential store (XDG)"),
    (".config/op", "1Password CLI session"),
    (".local/share/keyrings", "GNOME keyring"),
    (".m2/settings.xml", "Maven repository passwords"),
    (".m2/settings-security.xml", "Maven master password"),
    (".gradle/gradle.properties", "Gradle repository credentials"),
    (".gem/credentials", "RubyGems API key"),
    (".config/composer/auth.json", "Composer credentials"),
    (".composer/auth.json", "Composer credentials"),
    (
        ".config/containers/auth.json",
        "container registry credentials",
    ),
    (".config/rclone/rclone.conf", "rclone remotes' credentials"),
    (".s3cfg", "s3cmd credentials"),
    (".boto", "boto/gsutil credentials"),
    (".oci", "Oracle Cloud credentials"),
    (".databrickscfg", "Databricks token"),
    (".config/doctl", "DigitalOcean token"),
    (".config/hcloud", "Hetzner Cloud token"),
    (".config/glab-cli", "GitLab CLI token"),
    (".config/configstore", "npm tools' tokens (firebase, ...)"),
    (".pulumi/credentials.json", "Pulumi token"),
    (".fly", "Fly.io token"),
    (".config/netlify", "Netlify token"),
    (".kaggle/kaggle.json", "Kaggle API key"),
    (".cache/huggingface/token", "Hugging Face token"),
    (".huggingface/token", "Hugging Face token"),
    (".bash_history", "shell history"),
    (".zsh_history", "shell history"),
    (".zhistory", "shell history"),
    (".histfile", "shell history"),
    (".sh_history", "shell history"),
    (".local/share/fish/fish_history", "shell history"),
    (".python_history", "REPL history"),
    (".node_repl_history", "REPL history"),
    (".psql_history", "database client history"),
    (".mysql_history", "database client history"),
    (".sqlite_history", "database client history"),
];

/// Credential files that tools write under the home directory and that
/// projects keep per-project copies of (`deploy/.kube/config`,
/// `ci/.docker/config.json`): matched as the last components of a path at
/// any depth in the workspace and every mounted tree, by the same names as
/// [`HOME_DENY`] (every entry of it with a `/`, plus the files inside its
/// one-name directories that hold the secrets, so that a project's
/// `.docker/` of Dockerfiles stays readable).
pub const ANY_DEPTH_EXTRA: &[(&str, &str)] = &[
    (".aws/credentials", "AWS credentials"),
    (".aws/sso/cache", "AWS SSO tokens"),
    (".aws/cli/cache", "AWS CLI session tokens"),
    (".kube/config", "Kubernetes credentials"),
    (".docker/config.json", "Docker registry credentials"),
    (".azure/accessTokens.json", "Azure credentials"),
    (".azure/msal_token_cache.json", "Azure credentials"),
    (".azure/msal_token_cache.bin", "Azure credentials"),
    (".gnupg/private-keys-v1.d", "GnuPG keys"),
    (".gnupg/secring.gpg", "GnuPG keys"),
    (".vault-token", "Vault token"),
];

/// The deny list's names that are matched at any depth: the extra list
/// above and every multi-component [`HOME_DENY`] entry (`.config/gcloud`,
/// `.terraform.d/credentials.tfrc.json`, ...).
pub fn any_depth_entries() -> impl Iterator<Item = (&'static str, &'static str)> {
    ANY_DEPTH_EXTRA
        .iter()
        .copied()
        .chain(HOME_DENY.iter().copied().filter(|(e, _)| e.contains('/')))
}

/// Host system files that are masked inside the host-rootfs sandbox.
/// `ssh_host_*_key` is expanded by the planner.
pub const SYSTEM_DENY: &[(&str, &str)] = &[
    ("/etc/shadow", "password hashes"),
    ("/etc/shadow-", "password hashes"),
    ("/etc/gshadow", "group password hashes"),
    ("/etc/gshadow-", "group password hashes"),
    ("/etc/security/opasswd", "old password hashes"),
    ("/etc/ssl/private", "TLS private keys"),
    ("/etc/sudoers", "sudo policy"),
    ("/etc/sudoers.d", "sudo policy"),
];

/// The default masked and read-only paths under /proc and /sys, as in the
/// OCI runtime's own defaults.
pub const PROC_MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

pub const PROC_READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// A gitignore-style glob.
#[derive(Clone, Debug)]
pub struct Pattern {
    text: String,
    /// Matches the last path component only.
    basename: bool,
    dir_only: bool,
    matcher: Matcher,
}

/// Most secret rules are a name with one `*`; those are matched with
/// plain string comparisons, which keeps the hot loop of the scanner and
/// the start-up of every session free of regex compilation. Anything
/// richer goes to globset.
#[derive(Clone, Debug)]
enum Matcher {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Affix(String, String),
    Glob(GlobMatcher),
}

impl Matcher {
    fn new(body: &str, basename: bool) -> Result<Matcher, String> {
        let special = body.contains(['?', '[', ']', '{', '}', '\\']);
        let stars = body.matches('*').count();
        if basename && !special && stars <= 1 {
            return Ok(match body.split_once('*') {
                None => Matcher::Exact(body.to_string()),
                Some(("", suffix)) => Matcher::Suffix(suffix.to_string()),
                Some((prefix, "")) => Matcher::Prefix(prefix.to_string()),
                Some((prefix, suffix)) => Matcher::Affix(prefix.to_string(), suffix.to_string()),
            });
        }
        let glob = GlobBuilder::new(body)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| e.kind().to_string())?;
        Ok(Matcher::Glob(glob.compile_matcher()))
    }

    fn is_match(&self, s: &str) -> bool {
        match self {
            Matcher::Exact(e) => s == e,
            Matcher::Prefix(p) => s.starts_with(p.as_str()),
            Matcher::Suffix(x) => s.ends_with(x.as_str()),
            Matcher::Affix(p, x) => {
                s.len() >= p.len() + x.len() && s.starts_with(p.as_str()) && s.ends_with(x.as_str())
            }
            Matcher::Glob(g) => g.is_match(s),
        }
    }
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err("empty pattern".into());
        }
        let dir_only = trimmed.ends_with('/');
        let body = trimmed.trim_end_matches('/');
        let body = body.strip_prefix("./").unwrap_or(body);
        let basename = !body.contains('/');
        let body = body.trim_start_matches('/');
        if body.is_empty() {
            return Err("pattern matches nothing".into());
        }
        Ok(Pattern {
            text: trimmed.to_string(),
            basename,
            dir_only,
            matcher: Matcher::new(body, basename)?,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `rel` is relative to the mount root with `/` separators; `name` is
    /// its last component.
    pub fn matches(&self, rel: &str, name: &str, is_dir: bool) -> bool {
        if self.dir_only && !is_dir {
            return false;
        }
        if self.basename {
            self.matcher.is_match(name)
        } else {
            self.matcher.is_match(rel)
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Where a rule came from, so `explain` can say why a path was masked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleOrigin {
    Builtin,
    Profile,
}

#[derive(Clone, Debug)]
pub struct DenyRule {
    pub pattern: Pattern,
    pub except: Vec<Pattern>,
    pub what: &'static str,
    pub origin: RuleOrigin,
    files_only: bool,
}

/// The dotenv rule's pattern, the one built-in rule that covers
/// directories too.
const DOTENV: &str = ".env*";

impl DenyRule {
    /// True for the built-in `.env*` rule.
    pub fn is_dotenv(&self) -> bool {
        self.origin == RuleOrigin::Builtin && self.pattern.text == DOTENV
    }

    /// How a directory this rule masks is described.
    pub fn describe_dir(&self) -> String {
        if self.is_dotenv() {
            format!(
                "dotenv directory, masked as a whole (built-in rule `{DOTENV}`; a Python virtual environment, with pyvenv.cfg, is walked instead)"
            )
        } else {
            self.describe()
        }
    }

    pub fn describe(&self) -> String {
        match self.origin {
            RuleOrigin::Builtin => format!("{} (built-in rule `{}`)", self.what, self.pattern),
            RuleOrigin::Profile => format!("profile secrets.deny `{}`", self.pattern),
        }
    }
}

/// The compiled name rules for one session.
#[derive(Clone, Debug)]
pub struct SecretRules {
    rules: Vec<DenyRule>,
    allow: Vec<Pattern>,
    has_path_rules: bool,
}

impl SecretRules {
    /// The built-in rules plus the profile's extra `deny` and `allow` globs.
    pub fn new(extra_deny: &[String], allow: &[String]) -> Result<SecretRules, String> {
        let mut rules = Vec::new();
        for (pat, except, what) in BUILTIN_FILE_RULES {
            rules.push(DenyRule {
                pattern: Pattern::parse(pat).expect("built-in pattern"),
                except: except
                    .iter()
                    .map(|e| Pattern::parse(e).expect("built-in pattern"))
                    .collect(),
                what,
                origin: RuleOrigin::Builtin,
                // A `.env/` or `.envs/` directory holds env files
                // (cookiecutter-django's `.envs/.production/.django`): it
                // is a secret as a whole; the scanner walks it instead
                // when it is a Python virtual environment.
                files_only: *pat != DOTENV,
            });
        }
        for pat in extra_deny {
            rules.push(DenyRule {
                pattern: Pattern::parse(pat).map_err(|e| format!("secrets.deny `{pat}`: {e}"))?,
                except: Vec::new(),
                what: "profile rule",
                origin: RuleOrigin::Profile,
                files_only: false,
            });
        }
        let allow = allow
            .iter()
            .map(|p| Pattern::parse(p).map_err(|e| format!("secrets.allow `{p}`: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let has_path_rules = rules.iter().any(|r| !r.pattern.basename);
        Ok(SecretRules {
            rules,
            allow,
            has_path_rules,
        })
    }

    /// True when some rule needs the path relative to the mount root, not
    /// just the file name. The scanner skips building that path otherwise.
    pub fn has_path_rules(&self) -> bool {
        self.has_path_rules
    }

    pub fn rules(&self) -> &[DenyRule] {
        &self.rules
    }

    /// Returns the rule that makes `rel` a secret, if any.
    pub fn classify(&self, rel: &str, name: &str, is_dir: bool) -> Option<&DenyRule> {
        (0..self.rules.len()).find_map(|i| self.check(i, rel, name, is_dir))
    }

    fn check(&self, i: usize, rel: &str, name: &str, is_dir: bool) -> Option<&DenyRule> {
        let rule = &self.rules[i];
        if rule.files_only && is_dir {
            return None;
        }
        if !rule.pattern.matches(rel, name, is_dir) {
            return None;
        }
        if rule.except.iter().any(|e| e.matches(rel, name, is_dir)) {
            return None;
        }
        if self.allow.iter().any(|a| a.matches(rel, name, is_dir)) {
            return None;
        }
        Some(rule)
    }
}

/// Whether `rel` (relative to home) is on the home deny list, and why.
pub fn home_denied(rel: &str) -> Option<&'static str> {
    HOME_DENY
        .iter()
        .find(|(p, _)| rel == *p || rel.starts_with(&format!("{p}/")))
        .map(|(_, why)| *why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> SecretRules {
        SecretRules::new(&[], &[]).unwrap()
    }

    fn secret(r: &SecretRules, rel: &str) -> bool {
        let name = rel.rsplit('/').next().unwrap();
        r.classify(rel, name, false).is_some()
    }

    #[test]
    fn dotenv_files_at_any_depth() {
        let r = rules();
        for p in [
            ".env",
            ".env.local",
            "a/b/.env.production",
            ".envrc",
            "x/.env.dev",
        ] {
            assert!(secret(&r, p), "{p} should be a secret");
        }
        for p in [
            ".env.example",
            "a/.env.sample",
            ".env.template",
            "deep/er/.env.dist",
            "env",
            "README.env.md",
        ] {
            assert!(!secret(&r, p), "{p} should stay readable");
        }
    }

    #[test]
    fn dotenv_directories_match_the_dotenv_rule_alone() {
        // The scanner masks them whole unless they hold pyvenv.cfg.
        let r = rules();
        let rule = r.classify(".envs", ".envs", true).unwrap();
        assert!(rule.is_dotenv());
        assert!(rule.describe_dir().contains("masked as a whole"));
        assert!(r.classify(".env.example", ".env.example", true).is_none());
        // Other built-in rules match files only.
        assert!(r.classify("certs.pem", "certs.pem", true).is_none());
    }

    #[test]
    fn private_keys_but_not_public_keys() {
        let r = rules();
        for p in [
            "id_rsa",
            "keys/id_ed25519",
            "id_ecdsa_work",
            "id_dsa",
            "tls.key",
            "c.pem",
        ] {
            assert!(secret(&r, p), "{p}");
        }
        for p in [
            "id_rsa.pub",
            "keys/id_ed25519.pub",
            "keyboard.rs",
            "main.go",
        ] {
            assert!(!secret(&r, p), "{p}");
        }
    }

    #[test]
    fn credential_files() {
        let r = rules();
        for p in [
            ".netrc",
            "sub/.npmrc",
            ".pypirc",
            ".git-credentials",
            "gcp/credentials.json",
            "prod.tfvars",
            "terraform.tfstate",
        ] {
            assert!(secret(&r, p), "{p}");
        }
    }

    #[test]
    fn profile_rules_and_exceptions() {
        let r = SecretRules::new(
            &["*.secret".into(), "config/prod/".into(), "/top.txt".into()],
            &["i18n.key".into()],
        )
        .unwrap();
        assert!(secret(&r, "a/b.secret"));
        assert!(!secret(&r, "lang/i18n.key"));
        assert!(secret(&r, "other.key"));
        assert!(r.classify("config/prod", "prod", true).is_some());
        assert!(r.classify("config/prod", "prod", false).is_none());
        assert!(secret(&r, "top.txt"));
        assert!(!secret(&r, "sub/top.txt"));
    }

    #[test]
    fn describes_why() {
        let r = rules();
        let rule = r.classify(".env", ".env", false).unwrap();
        assert_eq!(rule.describe(), "dotenv file (built-in rule `.env*`)");
    }

    #[test]
    fn home_deny_list() {
        assert_eq!(home_denied(".ssh"), Some("SSH keys"));
        assert_eq!(home_denied(".ssh/id_rsa"), Some("SSH keys"));
        assert_eq!(
            home_denied(".config/gcloud/creds"),
            Some("Google Cloud credentials")
        );
        assert_eq!(home_denied(".sshrc"), None);
        assert_eq!(home_denied(".config"), None);
    }

    #[test]
    fn bad_globs_are_errors() {
        assert!(SecretRules::new(&["a[".into()], &[]).is_err());
        assert!(Pattern::parse("/").is_err());
    }
}
