//! Finding profiles by name and applying `extends:` to get the effective
//! policy. Reading user files is delegated to a [`ProfileLoader`] so that
//! this module stays free of I/O.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::ProfileError;
use crate::profile::{HomeEntry, MountEntry, NetworkEntry, ProfileFile, SecretsEntry};
use crate::types::{
    AccessMode, ByteSize, Cpus, EnvPattern, HostFileKind, NetworkMode, ProfilePath, UserSpec,
};

/// The profiles shipped inside the binary, from `profiles/`.
pub const BUILTIN_PROFILES: &[(&str, &str)] = &[
    ("aider", include_str!("../../../profiles/aider.yaml")),
    (
        "claude-code",
        include_str!("../../../profiles/claude-code.yaml"),
    ),
    ("codex", include_str!("../../../profiles/codex.yaml")),
    ("generic", include_str!("../../../profiles/generic.yaml")),
];

pub const DEFAULT_PROFILE: &str = "generic";
const MAX_DEPTH: usize = 16;

/// Where user profiles come from. The agentctl binary implements it over
/// the file system; tests implement it over a map.
pub trait ProfileLoader {
    /// A user profile called `name` (from the user's profile directory), as
    /// `(source name for messages, text)`.
    fn named(&self, name: &str) -> Result<Option<(String, String)>, ProfileError>;
    /// Names of the user's own profiles.
    fn names(&self) -> Vec<String>;
    /// A profile file given by path. `relative_to` is the source of the
    /// profile that mentions it, for `extends: ./base.yaml`.
    fn file(&self, path: &str, relative_to: Option<&str>)
    -> Result<(String, String), ProfileError>;
}

/// A loader that knows only the built-in profiles.
pub struct BuiltinOnly;

impl ProfileLoader for BuiltinOnly {
    fn named(&self, _name: &str) -> Result<Option<(String, String)>, ProfileError> {
        Ok(None)
    }
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
    fn file(&self, path: &str, _: Option<&str>) -> Result<(String, String), ProfileError> {
        Err(ProfileError::Read {
            path: path.to_string(),
            reason: "profile files are not available here".into(),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Limits {
    pub pids: u32,
    pub memory: ByteSize,
    pub cpus: Cpus,
    /// Containers the agent may hold at once through its Docker proxy
    /// (`docker: true`); each is held to the limits above.
    pub containers: u32,
}

/// `limits.containers` when no profile sets it.
pub const DEFAULT_CHILD_CONTAINERS: u32 = 20;

/// The effective policy after inheritance: every field has a value.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Policy {
    /// The profile name or file it was resolved from.
    pub name: String,
    /// The inheritance chain, base first.
    pub chain: Vec<String>,
    pub description: String,
    pub workspace: AccessMode,
    pub mounts: Vec<MountEntry>,
    pub home: Vec<HomeEntry>,
    pub secrets: SecretsEntry,
    pub env: Vec<EnvPattern>,
    pub env_set: BTreeMap<String, String>,
    pub network: NetworkMode,
    /// The rules of the `allowlist` mode, in order (empty otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub network_allow: Vec<String>,
    pub network_reason: Option<String>,
    pub limits: Limits,
    pub user: UserSpec,
    /// An image to run from; `None` runs from the host's root filesystem.
    pub image: Option<String>,
    /// The backend the profile asks for; `None` leaves it to the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<crate::types::BackendName>,
    /// The agent gets a Docker socket through agentctl's proxy.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub docker: bool,
    /// Kinds of host-run files the agent may change (read-only otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub writable_host_files: Vec<HostFileKind>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            name: String::new(),
            chain: Vec::new(),
            description: String::new(),
            workspace: AccessMode::Rw,
            mounts: Vec::new(),
            home: Vec::new(),
            secrets: SecretsEntry::default(),
            env: Vec::new(),
            env_set: BTreeMap::new(),
            network: NetworkMode::None,
            network_allow: Vec::new(),
            network_reason: None,
            limits: Limits {
                pids: 4096,
                memory: ByteSize(8 << 30),
                cpus: Cpus(2000),
                containers: DEFAULT_CHILD_CONTAINERS,
            },
            user: UserSpec::Host,
            image: None,
            backend: None,
            docker: false,
            writable_host_files: Vec::new(),
        }
    }
}

/// True when `reference` names a file rather than a profile.
pub fn is_path(reference: &str) -> bool {
    reference.contains('/') || reference.ends_with(".yaml") || reference.ends_with(".yml")
}

/// Every profile name the user can pass to `--profile`, sorted.
pub fn available(loader: &dyn ProfileLoader) -> Vec<String> {
    let mut names: Vec<String> = BUILTIN_PROFILES
        .iter()
        .map(|(n, _)| n.to_string())
        .chain(loader.names())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Resolves a profile name or path into the effective policy.
pub fn resolve(reference: &str, loader: &dyn ProfileLoader) -> Result<Policy, ProfileError> {
    let mut layers: Vec<(String, ProfileFile)> = Vec::new();
    let mut next = Some((reference.to_string(), None::<String>));
    while let Some((reference, mentioned_by)) = next.take() {
        let (source, text) = load(&reference, mentioned_by.as_deref(), loader)?;
        if layers.iter().any(|(s, _)| *s == source) {
            let mut chain: Vec<String> = layers.iter().map(|(s, _)| s.clone()).collect();
            chain.push(source);
            return Err(ProfileError::Cycle { chain });
        }
        if layers.len() >= MAX_DEPTH {
            let chain = layers.iter().map(|(s, _)| s.clone()).collect();
            return Err(ProfileError::TooDeep {
                chain,
                max: MAX_DEPTH,
            });
        }
        let file = ProfileFile::parse(&source, &text)?;
        next = file.extends.clone().map(|e| (e, Some(source.clone())));
        layers.push((source, file));
    }

    let mut policy = Policy {
        name: reference.to_string(),
        ..Policy::default()
    };
    for (source, layer) in layers.into_iter().rev() {
        policy.chain.push(source);
        apply(&mut policy, layer);
    }
    Ok(policy)
}

fn load(
    reference: &str,
    mentioned_by: Option<&str>,
    loader: &dyn ProfileLoader,
) -> Result<(String, String), ProfileError> {
    if is_path(reference) {
        return loader.file(reference, mentioned_by);
    }
    if let Some((_, text)) = BUILTIN_PROFILES.iter().find(|(n, _)| *n == reference) {
        return Ok((format!("builtin:{reference}"), text.to_string()));
    }
    if let Some(found) = loader.named(reference)? {
        return Ok(found);
    }
    Err(ProfileError::Unknown {
        name: reference.to_string(),
        available: available(loader),
    })
}

fn apply(policy: &mut Policy, layer: ProfileFile) {
    if let Some(d) = layer.description {
        policy.description = d;
    }
    if let Some(w) = layer.workspace {
        policy.workspace = w;
    }
    for m in layer.mounts {
        let target = m.target.clone().unwrap_or_else(|| m.path.clone());
        policy
            .mounts
            .retain(|old| old.target.as_ref().unwrap_or(&old.path) != &target);
        policy.mounts.push(m);
    }
    for h in layer.home {
        policy.home.retain(|old| old.path != h.path);
        policy.home.push(h);
    }
    extend_unique(&mut policy.secrets.deny, layer.secrets.deny);
    extend_unique(&mut policy.secrets.allow, layer.secrets.allow);
    extend_unique(&mut policy.env, layer.env);
    extend_unique(&mut policy.writable_host_files, layer.writable_host_files);
    policy.env_set.extend(layer.env_set);
    if let Some(d) = layer.docker {
        policy.docker = d;
    }
    if let Some(n) = layer.network {
        match n {
            NetworkEntry::Mode(m) => {
                policy.network = m;
                policy.network_allow.clear();
            }
            NetworkEntry::Allow(a) => {
                if !(a.inherit && policy.network == NetworkMode::Allowlist) {
                    policy.network_allow.clear();
                }
                policy.network = NetworkMode::Allowlist;
                extend_unique(&mut policy.network_allow, a.allow);
            }
        }
        // A reason belongs to the layer that chose the network.
        policy.network_reason = layer.network_reason;
    } else if layer.network_reason.is_some() {
        policy.network_reason = layer.network_reason;
    }
    if let Some(p) = layer.limits.pids {
        policy.limits.pids = p;
    }
    if let Some(m) = layer.limits.memory {
        policy.limits.memory = m;
    }
    if let Some(c) = layer.limits.cpus {
        policy.limits.cpus = c;
    }
    if let Some(c) = layer.limits.containers {
        policy.limits.containers = c;
    }
    if let Some(u) = layer.user {
        policy.user = u;
    }
    if let Some(i) = layer.image {
        policy.image = Some(i);
    }
    if let Some(b) = layer.backend {
        policy.backend = Some(b);
    }
}

fn extend_unique<T: PartialEq>(into: &mut Vec<T>, more: Vec<T>) {
    for item in more {
        if !into.contains(&item) {
            into.push(item);
        }
    }
}

/// A `--mount SRC:DST[:ro|rw]` from the command line.
pub fn parse_cli_mount(spec: &str) -> Result<MountEntry, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [s] => (*s, *s, AccessMode::Ro),
        [s, d] if *d == "ro" || *d == "rw" => (*s, *s, d.parse()?),
        [s, d] => (*s, *d, AccessMode::Ro),
        [s, d, m] => (*s, *d, m.parse()?),
        _ => return Err(format!("invalid --mount \"{spec}\"; use SRC:DST[:ro|rw]")),
    };
    let fix = |e: String| format!("--mount \"{spec}\": {e}");
    let path: ProfilePath = src.parse().map_err(fix)?;
    let target: ProfilePath = dst.parse().map_err(fix)?;
    if matches!(&path, ProfilePath::Absolute(p) if p == "/") {
        return Err(format!(
            "--mount \"{spec}\": mounting / would expose the whole host"
        ));
    }
    Ok(MountEntry {
        target: (target != path).then_some(target),
        path,
        mode,
        optional: false,
        scan: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct MapLoader(HashMap<String, String>);

    impl ProfileLoader for MapLoader {
        fn named(&self, name: &str) -> Result<Option<(String, String)>, ProfileError> {
            Ok(self
                .0
                .get(name)
                .map(|t| (format!("user:{name}"), t.clone())))
        }
        fn names(&self) -> Vec<String> {
            self.0.keys().filter(|k| !is_path(k)).cloned().collect()
        }
        fn file(&self, path: &str, _: Option<&str>) -> Result<(String, String), ProfileError> {
            self.0
                .get(path)
                .map(|t| (path.to_string(), t.clone()))
                .ok_or_else(|| ProfileError::Read {
                    path: path.into(),
                    reason: "not found".into(),
                })
        }
    }

    fn loader(files: &[(&str, &str)]) -> MapLoader {
        MapLoader(
            files
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    #[test]
    fn every_builtin_profile_resolves() {
        for (name, _) in BUILTIN_PROFILES {
            let p = resolve(name, &BuiltinOnly).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!p.description.is_empty(), "{name} has no description");
            assert!(
                p.home.iter().any(|h| h.path.to_string() == "~/.gitconfig"),
                "{name} should bring ~/.gitconfig"
            );
            if p.network != NetworkMode::None {
                assert!(
                    p.network_reason.is_some(),
                    "{name} must say why it needs a network"
                );
            }
        }
    }

    #[test]
    fn unknown_profile_lists_available() {
        let err = resolve("claud", &BuiltinOnly).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown profile \"claud\"; available: aider, claude-code, codex, generic"
        );
    }

    #[test]
    fn user_file_extends_builtin_and_overrides() {
        let l = loader(&[(
            "./my.yaml",
            "extends: claude-code\nnetwork: none\nlimits: { pids: 64 }\nhome:\n  - path: ~/.claude\n    mode: ro\n",
        )]);
        let p = resolve("./my.yaml", &l).unwrap();
        assert_eq!(
            p.chain,
            ["builtin:generic", "builtin:claude-code", "./my.yaml"]
        );
        assert_eq!(p.network, NetworkMode::None);
        assert_eq!(p.network_reason, None);
        assert_eq!(p.limits.pids, 64);
        assert_eq!(p.limits.containers, DEFAULT_CHILD_CONTAINERS);
        let l = loader(&[(
            "./few.yaml",
            "extends: generic\nlimits: { containers: 3 }\n",
        )]);
        assert_eq!(resolve("./few.yaml", &l).unwrap().limits.containers, 3);
        let claude: Vec<_> = p
            .home
            .iter()
            .filter(|h| h.path.to_string() == "~/.claude")
            .collect();
        assert_eq!(claude.len(), 1);
        assert_eq!(claude[0].mode, AccessMode::Ro);
        // Inherited from claude-code and generic.
        assert!(p.env.iter().any(|e| e.as_str() == "ANTHROPIC_API_KEY"));
        assert!(p.home.iter().any(|h| h.path.to_string() == "~/.gitconfig"));
    }

    #[test]
    fn allowlists_add_up_along_extends_unless_told_not_to() {
        let l = loader(&[
            (
                "base.yaml",
                "network: {allow: [\"api.example.com\", \"example.org:22\"]}\nnetwork_reason: the API\n",
            ),
            (
                "more.yaml",
                "extends: base.yaml\nnetwork:\n  allow: [\"pypi.org\", \"api.example.com\"]\n",
            ),
            (
                "fresh.yaml",
                "extends: base.yaml\nnetwork: {allow: [\"pypi.org\"], inherit: false}\n",
            ),
            ("off.yaml", "extends: base.yaml\nnetwork: none\n"),
            (
                "again.yaml",
                "extends: off.yaml\nnetwork: {allow: [\"pypi.org\"]}\n",
            ),
        ]);
        let p = resolve("more.yaml", &l).unwrap();
        assert_eq!(p.network, NetworkMode::Allowlist);
        assert_eq!(
            p.network_allow,
            ["api.example.com", "example.org:22", "pypi.org"]
        );
        let p = resolve("fresh.yaml", &l).unwrap();
        assert_eq!(p.network_allow, ["pypi.org"]);
        let p = resolve("off.yaml", &l).unwrap();
        assert_eq!((p.network, p.network_allow.len()), (NetworkMode::None, 0));
        // An allowlist over a profile that had none starts from nothing.
        let p = resolve("again.yaml", &l).unwrap();
        assert_eq!(p.network_allow, ["pypi.org"]);
    }

    #[test]
    fn bad_allow_rules_name_the_file_the_line_and_the_rule() {
        for (text, needle) in [
            ("network:\n  allow: [\"*.com\"]\n", "public suffix"),
            ("network:\n  allow: [\"*\"]\n", "bare *"),
            ("network:\n  allow: []\n", "allowlist of nothing"),
            ("network: allowlist\n", "needs its rules"),
            (
                "network:\n  alow: [\"x.example\"]\n",
                "did you mean `allow`",
            ),
            ("network: brige\n", "did you mean `bridge`"),
        ] {
            let l = loader(&[("bad.yaml", text)]);
            let err = resolve("bad.yaml", &l).unwrap_err().to_string();
            assert!(err.starts_with("bad.yaml:"), "{text}: {err}");
            assert!(err.contains(needle), "{text}: {err}");
        }
        let l = loader(&[("bad.yaml", "network:\n  allow: [\"*.com\"]\n")]);
        let err = resolve("bad.yaml", &l).unwrap_err().to_string();
        assert!(err.starts_with("bad.yaml:2:"), "{err}");
    }

    #[test]
    fn cycles_are_reported() {
        let l = loader(&[
            ("a.yaml", "extends: b.yaml\n"),
            ("b.yaml", "extends: a.yaml\n"),
        ]);
        let err = resolve("a.yaml", &l).unwrap_err();
        assert_eq!(
            err.to_string(),
            "profile inheritance loops: a.yaml -> b.yaml -> a.yaml"
        );
    }

    #[test]
    fn parse_errors_name_the_user_file() {
        let l = loader(&[("bad.yaml", "extends: generic\nlimits:\n  memroy: 1g\n")]);
        let err = resolve("bad.yaml", &l).unwrap_err().to_string();
        assert!(err.starts_with("bad.yaml:3:"), "{err}");
        assert!(err.contains("did you mean `memory`"), "{err}");
    }

    #[test]
    fn user_named_profiles_are_listed() {
        let l = loader(&[("mine", "description: mine\n")]);
        assert_eq!(
            available(&l),
            ["aider", "claude-code", "codex", "generic", "mine"]
        );
        assert_eq!(resolve("mine", &l).unwrap().description, "mine");
    }

    #[test]
    fn cli_mounts() {
        let m = parse_cli_mount("/opt/x").unwrap();
        assert_eq!(
            (m.path.to_string(), m.target, m.mode),
            ("/opt/x".into(), None, AccessMode::Ro)
        );
        let m = parse_cli_mount("/opt/x:/x:rw").unwrap();
        assert_eq!(m.target.unwrap().to_string(), "/x");
        assert_eq!(m.mode, AccessMode::Rw);
        let m = parse_cli_mount("/data:rw").unwrap();
        assert_eq!(m.mode, AccessMode::Rw);
        assert!(parse_cli_mount("rel:/x").is_err());
        assert!(parse_cli_mount("/:/host").is_err());
        assert!(parse_cli_mount("/a:/b:rx").is_err());
    }
}
