//! The profile file format (`profiles/*.yaml`) and its parser.
//!
//! Every field is optional so that a profile can `extends:` another and
//! change only what it names. Unknown fields are errors: a typo in a
//! security setting must never be silently ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ProfileError;
use crate::types::{
    AccessMode, ByteSize, Cpus, EnvPattern, HostFileKind, NetworkMode, ProfilePath, UserSpec,
};

/// One profile file as written, before inheritance is applied.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    /// One line shown by `agentctl profiles`.
    pub description: Option<String>,
    /// Name of a built-in or user profile, or a path to a profile file.
    pub extends: Option<String>,
    /// How the workspace is mounted: `rw` (default) or `ro`.
    pub workspace: Option<AccessMode>,
    /// Extra host paths, read-only unless `mode: rw`.
    #[serde(default)]
    pub mounts: Vec<MountEntry>,
    /// Host dotfiles that come into the sandbox's fresh home.
    #[serde(default)]
    pub home: Vec<HomeEntry>,
    /// Extra secret globs to mask, and exceptions.
    #[serde(default)]
    pub secrets: SecretsEntry,
    /// Names of host variables to pass through (exact names, or `PREFIX_*`).
    #[serde(default)]
    pub env: Vec<EnvPattern>,
    /// Variables set to fixed values. `~/` at the start of a value is
    /// replaced with the home directory.
    #[serde(default)]
    pub env_set: BTreeMap<String, String>,
    /// `none` (default), `bridge`, `host`, or `{allow: [RULE, ...]}` for
    /// only those destinations (see `policy::egress` for the rules).
    pub network: Option<NetworkEntry>,
    /// Why the profile needs a network; shown by `explain`.
    pub network_reason: Option<String>,
    #[serde(default)]
    pub limits: LimitsEntry,
    /// `host` (default) or `UID:GID`.
    pub user: Option<UserSpec>,
    /// Run from this OCI image instead of the host's root filesystem: a
    /// registry reference, `oci:DIR[:TAG]` or `docker-archive:FILE[:TAG]`.
    pub image: Option<String>,
    /// The backend this profile's sessions run on (`native`, `docker` or
    /// `vm`); `--backend` may not say otherwise.
    pub backend: Option<crate::types::BackendName>,
    /// Give the agent a Docker socket (agentctl's proxy, role `session`):
    /// it may run containers of its own, under this profile's policy.
    pub docker: Option<bool>,
    /// Kinds of files the host runs later (`git-config`, `git-hooks`,
    /// `ide`) that the agent may change; read-only otherwise.
    #[serde(default)]
    pub writable_host_files: Vec<HostFileKind>,
}

/// A profile's `network:`: a mode by name, or an allowlist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum NetworkEntry {
    /// `none`, `bridge` or `host`.
    Mode(NetworkMode),
    /// `{allow: [...]}`: the `allowlist` mode with these rules. They add to
    /// the rules of the profile this one extends (when it is an allowlist
    /// too) unless `inherit: false`.
    Allow(AllowEntry),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AllowEntry {
    pub allow: Vec<String>,
    #[serde(default = "yes")]
    pub inherit: bool,
}

impl<'de> Deserialize<'de> for NetworkEntry {
    // By hand rather than `untagged`: serde's untagged errors say only
    // "did not match any variant", and a typo here must name the field.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = NetworkEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("none, bridge, host, or {allow: [RULE, ...]}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NetworkEntry, E> {
                if v == "allowlist" {
                    return Err(E::custom(
                        "network: allowlist needs its rules; write network: {allow: \
                         [\"api.example.com\", ...]}",
                    ));
                }
                v.parse()
                    .map(NetworkEntry::Mode)
                    .map_err(|_| E::unknown_variant(v, &["none", "bridge", "host", "allowlist"]))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<NetworkEntry, A::Error> {
                AllowEntry::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(NetworkEntry::Allow)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MountEntry {
    /// The host path.
    pub path: ProfilePath,
    /// Where it appears in the sandbox; the same path when omitted.
    pub target: Option<ProfilePath>,
    #[serde(default)]
    pub mode: AccessMode,
    /// Skip the mount when the host path does not exist, instead of refusing
    /// to start.
    #[serde(default)]
    pub optional: bool,
    /// Scan the tree for secrets (the default). `false` trusts its contents
    /// and saves the walk; meant for large read-only toolchains. The home
    /// deny list still applies.
    #[serde(default = "yes")]
    pub scan: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HomeEntry {
    /// A path under the home directory, written `~/...`.
    pub path: ProfilePath,
    #[serde(default)]
    pub mode: AccessMode,
    /// Create the directory on the host when it is missing, so that state the
    /// agent writes (a login, say) survives the session.
    #[serde(default)]
    pub create: bool,
    /// Create the entry as a file with this content when it is missing.
    /// For a tool's settings mounted read-only inside its read-write state
    /// directory: were the file missing, the agent could write one there
    /// that the tool would run on the host later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_file: Option<String>,
    /// See [`MountEntry::scan`].
    #[serde(default = "yes")]
    pub scan: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsEntry {
    /// Globs of extra files or directories to mask.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Globs that are never masked by the name rules, e.g. a `*.key` file
    /// that holds no key. Hard-link aliases of secrets stay masked.
    #[serde(default)]
    pub allow: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsEntry {
    pub pids: Option<u32>,
    pub memory: Option<ByteSize>,
    pub cpus: Option<Cpus>,
    /// With `docker: true`: how many containers the agent may hold at once
    /// through its Docker proxy (each gets the limits above).
    pub containers: Option<u32>,
}

/// The largest profile accepted, in bytes. Real profiles are a few hundred
/// bytes; the YAML parser takes time quadratic in nesting depth, so a
/// hostile file is refused before it is parsed.
pub const MAX_PROFILE_BYTES: usize = 64 * 1024;

/// The deepest nesting of flow collections (`[` and `{`) accepted.
pub const MAX_PROFILE_NESTING: usize = 32;

/// The deepest `[`/`{` nesting in `text`, outside quoted strings and
/// comments: an upper bound of what the parser will recurse into.
fn flow_nesting(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for line in text.lines() {
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        for c in line.chars() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '"' | '\'' => quote = Some(c),
                    '#' if prev.is_whitespace() => break,
                    '[' | '{' => {
                        depth += 1;
                        max = max.max(depth);
                    }
                    ']' | '}' => depth = depth.saturating_sub(1),
                    _ => {}
                },
            }
            prev = c;
        }
    }
    max
}

impl ProfileFile {
    /// Parses a profile. `source` names the file in error messages.
    pub fn parse(source: &str, text: &str) -> Result<ProfileFile, ProfileError> {
        if text.len() > MAX_PROFILE_BYTES {
            return Err(ProfileError::TooLarge {
                source_name: source.to_string(),
                what: format!("{} bytes, more than {MAX_PROFILE_BYTES}", text.len()),
            });
        }
        let nesting = flow_nesting(text);
        if nesting > MAX_PROFILE_NESTING {
            return Err(ProfileError::TooLarge {
                source_name: source.to_string(),
                what: format!("[ or {{ nested {nesting} deep, more than {MAX_PROFILE_NESTING}"),
            });
        }
        let file: ProfileFile = if text.trim().is_empty() {
            ProfileFile::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| ProfileError::from_yaml(source, text, &e))?
        };
        file.validate(source, text)?;
        Ok(file)
    }

    /// Checks that serde cannot express: names and values that must be
    /// well formed. Errors point at the line of the offending field.
    fn validate(&self, source: &str, text: &str) -> Result<(), ProfileError> {
        let invalid = |field: &str, message: String, hint: &str| {
            ProfileError::invalid(source, text, field, message, hint)
        };
        if let Some(pids) = self.limits.pids
            && pids < 16
        {
            return Err(invalid(
                "pids",
                format!("limits.pids is {pids}, too low for any agent to start"),
                "use at least 16; agents with build tools need a few thousand",
            ));
        }
        if let Some(mem) = self.limits.memory
            && mem.0 < 16 << 20
        {
            return Err(invalid(
                "memory",
                format!("limits.memory is {mem}, below the 16m minimum"),
                "write a size like 512m or 8g",
            ));
        }
        if self.limits.containers == Some(0) {
            return Err(invalid(
                "containers",
                "limits.containers is 0: the agent could create no container".to_string(),
                "use at least 1, or docker: false for no Docker at all",
            ));
        }
        if let Some(NetworkEntry::Allow(a)) = &self.network {
            if a.allow.is_empty() && a.inherit {
                return Err(invalid(
                    "allow",
                    "network.allow is empty: an allowlist of nothing".to_string(),
                    "name the destinations (\"api.example.com\", \"example.org:22\"), or \
                     write network: none",
                ));
            }
            if let Err(e) = crate::egress::Allowlist::parse(&a.allow) {
                return Err(invalid(
                    "allow",
                    e.to_string(),
                    "see `agentctl explain` and docs/NETWORK.md for the rule forms",
                ));
            }
        }
        for name in self.env_set.keys() {
            if !crate::types::valid_env_name(name) {
                return Err(invalid(
                    name,
                    format!("env_set: invalid variable name \"{name}\""),
                    "names are letters, digits and _, not starting with a digit",
                ));
            }
        }
        for entry in &self.home {
            if entry.path.home_relative().is_none() {
                return Err(invalid(
                    "home",
                    format!("home: \"{}\" is not under the home directory", entry.path),
                    "write home entries as ~/path; use mounts: for other host paths",
                ));
            }
            if entry.path.home_relative() == Some("") {
                return Err(invalid(
                    "home",
                    "home: \"~\" would bring in the whole home directory, secrets included"
                        .to_string(),
                    "name the dotfiles the agent needs, like ~/.gitconfig",
                ));
            }
        }
        for entry in &self.mounts {
            if matches!(&entry.path, ProfilePath::Absolute(p) if p == "/") {
                return Err(invalid(
                    "mounts",
                    "mounts: \"/\" would expose the whole host".to_string(),
                    "mount the directories the agent needs, like /opt/toolchain",
                ));
            }
        }
        for glob in self.secrets.deny.iter().chain(&self.secrets.allow) {
            if let Err(e) = crate::secrets::Pattern::parse(glob) {
                return Err(invalid(
                    glob,
                    format!("secrets: invalid glob \"{glob}\": {e}"),
                    "use gitignore-style globs like *.secret or config/prod/*.json",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_sizes_are_refused_before_parsing() {
        let start = std::time::Instant::now();
        let deep = "[".repeat(60_000);
        let e = ProfileFile::parse("deep.yaml", &deep)
            .unwrap_err()
            .to_string();
        assert!(e.contains("deep.yaml") && e.contains("nested"), "{e}");
        let big = format!("description: x\n#{}\n", "a".repeat(MAX_PROFILE_BYTES));
        let e = ProfileFile::parse("big.yaml", &big)
            .unwrap_err()
            .to_string();
        assert!(e.contains("big.yaml") && e.contains("bytes"), "{e}");
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        // Brackets in strings and comments do not count.
        assert_eq!(flow_nesting("a: \"[[[[\" # {{{{\nb: [1, [2]]\n"), 2);
    }

    #[test]
    fn parses_a_full_profile() {
        let p = ProfileFile::parse(
            "t.yaml",
            r#"
description: test
extends: generic
workspace: ro
mounts:
  - path: /opt/tool
    mode: rw
home:
  - path: ~/.claude
    mode: rw
    create: true
secrets:
  deny: ["*.secret"]
  allow: ["public.key"]
env: [ANTHROPIC_API_KEY, "AIDER_*"]
env_set: { IS_SANDBOX: "1" }
network: bridge
limits: { pids: 100, memory: 1g, cpus: 1.5 }
user: "1000:1000"
"#,
        )
        .unwrap();
        assert_eq!(p.workspace, Some(AccessMode::Ro));
        assert_eq!(p.mounts[0].mode, AccessMode::Rw);
        assert_eq!(p.limits.memory, Some(ByteSize(1 << 30)));
        assert_eq!(p.limits.cpus, Some(Cpus(1500)));
        assert_eq!(p.env.len(), 2);
    }

    #[test]
    fn empty_file_is_an_empty_profile() {
        assert_eq!(
            ProfileFile::parse("e.yaml", "\n").unwrap(),
            ProfileFile::default()
        );
    }

    #[test]
    fn unknown_field_names_file_line_and_suggests() {
        let err = ProfileFile::parse("my.yaml", "description: x\nnetwrok: bridge\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("my.yaml:2:"), "{msg}");
        assert!(msg.contains("netwrok"), "{msg}");
        assert!(msg.contains("did you mean `network`"), "{msg}");
    }

    #[test]
    fn bad_enum_value_names_the_line() {
        let err = ProfileFile::parse("p.yaml", "network: brige\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("p.yaml:1:"), "{msg}");
        assert!(msg.contains("did you mean `bridge`"), "{msg}");
    }

    #[test]
    fn bad_nested_value_names_field_and_line() {
        let err =
            ProfileFile::parse("p.yaml", "limits:\n  pids: 10\n  memory: lots\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("p.yaml:3:"), "{msg}");
        assert!(msg.contains("limits.memory"), "{msg}");
        assert!(msg.contains("512m"), "{msg}");
    }

    #[test]
    fn containers_limit_parses_and_zero_is_refused() {
        let p = ProfileFile::parse("p.yaml", "limits:\n  containers: 5\n").unwrap();
        assert_eq!(p.limits.containers, Some(5));
        let err = ProfileFile::parse("p.yaml", "limits:\n  containers: 0\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("limits.containers is 0"), "{msg}");
    }

    #[test]
    fn too_low_pids_points_at_its_line() {
        let err = ProfileFile::parse("p.yaml", "limits:\n  pids: 3\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("p.yaml:2:"), "{msg}");
        assert!(msg.contains("limits.pids"), "{msg}");
    }

    #[test]
    fn relative_mount_is_refused_with_a_fix() {
        let err = ProfileFile::parse("p.yaml", "mounts:\n  - path: opt/tool\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("p.yaml:2:"), "{msg}");
        assert!(msg.contains("must be absolute"), "{msg}");
    }

    #[test]
    fn whole_home_is_refused() {
        let err = ProfileFile::parse("p.yaml", "home:\n  - path: \"~\"\n").unwrap_err();
        assert!(err.to_string().contains("whole home"), "{err}");
    }
}
