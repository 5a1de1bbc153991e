//! Small value types that profiles are made of. Each one parses itself, so
//! a bad value is reported by serde with the line and column it came from.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Whether a path is mounted read-only or read-write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccessMode {
    #[default]
    Ro,
    Rw,
}

impl AccessMode {
    pub fn is_rw(self) -> bool {
        self == AccessMode::Rw
    }
}

impl fmt::Display for AccessMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccessMode::Ro => "ro",
            AccessMode::Rw => "rw",
        })
    }
}

impl FromStr for AccessMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ro" => Ok(AccessMode::Ro),
            "rw" => Ok(AccessMode::Rw),
            other => Err(format!(
                "unknown access mode \"{other}\"; use \"ro\" or \"rw\""
            )),
        }
    }
}

/// Kinds of workspace files that the host runs later, read-only in the
/// sandbox unless a profile names them in `writable_host_files`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostFileKind {
    /// A git directory's `config` and `config.worktree`: `core.fsmonitor`,
    /// `core.hooksPath`, `core.sshCommand` and filters run programs.
    GitConfig,
    /// A git directory's `hooks/`.
    GitHooks,
    /// Editor settings and run configurations: `.vscode/`, `.idea/`,
    /// `.devcontainer/` (whose `initializeCommand` runs on the host).
    Ide,
}

impl HostFileKind {
    pub const ALL: [HostFileKind; 3] = [
        HostFileKind::GitConfig,
        HostFileKind::GitHooks,
        HostFileKind::Ide,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HostFileKind::GitConfig => "git-config",
            HostFileKind::GitHooks => "git-hooks",
            HostFileKind::Ide => "ide",
        }
    }
}

impl fmt::Display for HostFileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which backend a profile asks for (`backend:`): the sessions of a profile
/// that needs a VM's own kernel say so, and a different `--backend` is
/// refused rather than run in a weaker sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendName {
    Native,
    Docker,
    Vm,
}

impl std::fmt::Display for BackendName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendName::Native => "native",
            BackendName::Docker => "docker",
            BackendName::Vm => "vm",
        })
    }
}

/// The sandbox's network. `None` is the default: a network namespace with
/// only a loopback interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    #[default]
    None,
    Bridge,
    Host,
    /// Only the destinations of the policy's allow rules, through
    /// agentctl's egress proxy outside the sandbox (`policy::egress`).
    Allowlist,
}

impl NetworkMode {
    pub const ALL: [NetworkMode; 4] = [
        NetworkMode::None,
        NetworkMode::Bridge,
        NetworkMode::Host,
        NetworkMode::Allowlist,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Bridge => "bridge",
            NetworkMode::Host => "host",
            NetworkMode::Allowlist => "allowlist",
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NetworkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NetworkMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!("unknown network mode \"{s}\"; use one of: none, bridge, host, allowlist")
            })
    }
}

/// A size in bytes, written in profiles as `512m`, `8g`, `1.5g` or a plain
/// number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        let t = t.strip_suffix('b').unwrap_or(&t).trim_end_matches('i');
        let (num, mult): (&str, u64) = match t.char_indices().last() {
            Some((i, 'k')) => (&t[..i], 1 << 10),
            Some((i, 'm')) => (&t[..i], 1 << 20),
            Some((i, 'g')) => (&t[..i], 1 << 30),
            Some((i, 't')) => (&t[..i], 1 << 40),
            _ => (t, 1),
        };
        let bad = || format!("invalid size \"{s}\"; write it like 512m, 8g or 1.5g");
        let value: f64 = num.trim().parse().map_err(|_| bad())?;
        if !value.is_finite() || value <= 0.0 {
            return Err(bad());
        }
        let bytes = value * mult as f64;
        if bytes > u64::MAX as f64 / 2.0 {
            return Err(bad());
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, size) in [
            ("t", 1u64 << 40),
            ("g", 1 << 30),
            ("m", 1 << 20),
            ("k", 1 << 10),
        ] {
            if b >= size && b.is_multiple_of(size) {
                return write!(f, "{}{unit}", b / size);
            }
        }
        write!(f, "{b}")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than an untagged enum: untagged enums buffer the
        // value and lose the line number that errors should point at.
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like 512m or 8g")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                if n == 0 {
                    return Err(E::custom("a size must be greater than 0"));
                }
                Ok(ByteSize(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map_err(|_| E::custom("a size must be greater than 0"))
                    .and_then(|n| self.visit_u64(n))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<ByteSize, E> {
                self.visit_str(&n.to_string())
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A CPU quota in thousandths of a CPU, written in profiles as `2` or `0.5`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cpus(pub u32);

impl Cpus {
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 1000.0
    }
}

impl FromStr for Cpus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid cpus \"{s}\"; write a number of CPUs like 2 or 0.5");
        let v: f64 = s.trim().parse().map_err(|_| bad())?;
        if !v.is_finite() || !(0.01..=4096.0).contains(&v) {
            return Err(bad());
        }
        Ok(Cpus((v * 1000.0).round() as u32))
    }
}

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_f64())
    }
}

impl Serialize for Cpus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_f64())
    }
}

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Cpus;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of CPUs like 2 or 0.5")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Cpus, E> {
                self.visit_str(&n.to_string())
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Cpus, E> {
                self.visit_str(&n.to_string())
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Cpus, E> {
                self.visit_str(&n.to_string())
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Cpus, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Whose identity the agent runs with on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UserSpec {
    /// The invoking user's uid and gid, so that files the agent writes belong
    /// to the user.
    #[default]
    Host,
    /// An explicit host uid and gid. Only root may ask for another identity.
    Ids { uid: u32, gid: u32 },
}

impl fmt::Display for UserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserSpec::Host => f.write_str("host"),
            UserSpec::Ids { uid, gid } => write!(f, "{uid}:{gid}"),
        }
    }
}

impl FromStr for UserSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "host" {
            return Ok(UserSpec::Host);
        }
        let bad = || format!("invalid user \"{s}\"; use \"host\" or numeric \"UID:GID\"");
        let (u, g) = s.split_once(':').ok_or_else(bad)?;
        Ok(UserSpec::Ids {
            uid: u.parse().map_err(|_| bad())?,
            gid: g.parse().map_err(|_| bad())?,
        })
    }
}

impl Serialize for UserSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UserSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A path written in a profile: absolute, or relative to the home directory
/// with a leading `~/`. Relative paths are refused because their meaning
/// would depend on where agentctl happens to be started.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProfilePath {
    Absolute(String),
    Home(String),
}

impl ProfilePath {
    /// The path with `~` replaced by `home`.
    pub fn expand(&self, home: &str) -> String {
        match self {
            ProfilePath::Absolute(p) => p.clone(),
            ProfilePath::Home(rest) if rest.is_empty() => home.to_string(),
            ProfilePath::Home(rest) => format!("{}/{rest}", home.trim_end_matches('/')),
        }
    }

    /// For a `~/` path, the part after `~/`.
    pub fn home_relative(&self) -> Option<&str> {
        match self {
            ProfilePath::Home(rest) => Some(rest),
            ProfilePath::Absolute(_) => None,
        }
    }
}

impl fmt::Display for ProfilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProfilePath::Absolute(p) => f.write_str(p),
            ProfilePath::Home(rest) if rest.is_empty() => f.write_str("~"),
            ProfilePath::Home(rest) => write!(f, "~/{rest}"),
        }
    }
}

impl FromStr for ProfilePath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let normal = |p: &str| -> Result<String, String> {
            let mut parts = Vec::new();
            for part in p.split('/') {
                match part {
                    "" | "." => {}
                    ".." => {
                        return Err(format!(
                            "path \"{s}\" contains \"..\"; write the path it means instead"
                        ));
                    }
                    other => parts.push(other),
                }
            }
            Ok(parts.join("/"))
        };
        if s.contains('\0') {
            return Err("path contains a NUL byte".into());
        }
        if s == "~" {
            return Ok(ProfilePath::Home(String::new()));
        }
        if let Some(rest) = s.strip_prefix("~/") {
            return Ok(ProfilePath::Home(normal(rest)?));
        }
        if s.starts_with('/') {
            return Ok(ProfilePath::Absolute(format!("/{}", normal(s)?)));
        }
        Err(format!(
            "path \"{s}\" must be absolute (/opt/tool) or start with ~/ (~/.gitconfig)"
        ))
    }
}

impl Serialize for ProfilePath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ProfilePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An environment variable name, or a name pattern with a trailing `*`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvPattern(String);

impl EnvPattern {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the pattern names one variable exactly.
    pub fn is_exact(&self) -> bool {
        !self.0.ends_with('*')
    }

    pub fn matches(&self, name: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => self.0 == name,
        }
    }
}

impl fmt::Display for EnvPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn valid_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

impl FromStr for EnvPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.strip_suffix('*').unwrap_or(s);
        if (name.is_empty() && s.ends_with('*')) || (!name.is_empty() && !valid_env_name(name)) {
            return Err(format!(
                "invalid variable name \"{s}\"; use a name like ANTHROPIC_API_KEY or a prefix like AIDER_*"
            ));
        }
        if name.is_empty() {
            return Err("empty variable name".into());
        }
        Ok(EnvPattern(s.to_string()))
    }
}

impl Serialize for EnvPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EnvPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse() {
        assert_eq!("512m".parse::<ByteSize>().unwrap().0, 512 << 20);
        assert_eq!("8g".parse::<ByteSize>().unwrap().0, 8 << 30);
        assert_eq!("8GiB".parse::<ByteSize>().unwrap().0, 8 << 30);
        assert_eq!("1.5g".parse::<ByteSize>().unwrap().0, 3 << 29);
        assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
        assert!("lots".parse::<ByteSize>().is_err());
        assert!("-1g".parse::<ByteSize>().is_err());
        assert!("0".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(8 << 30).to_string(), "8g");
    }

    #[test]
    fn cpus_parse() {
        assert_eq!("2".parse::<Cpus>().unwrap().0, 2000);
        assert_eq!("0.5".parse::<Cpus>().unwrap().0, 500);
        assert!("0".parse::<Cpus>().is_err());
        assert!("many".parse::<Cpus>().is_err());
    }

    #[test]
    fn profile_paths_are_absolute_or_home() {
        assert_eq!(
            "~/.claude".parse::<ProfilePath>().unwrap(),
            ProfilePath::Home(".claude".into())
        );
        assert_eq!(
            "/opt//tool/".parse::<ProfilePath>().unwrap(),
            ProfilePath::Absolute("/opt/tool".into())
        );
        assert!("relative/path".parse::<ProfilePath>().is_err());
        assert!("~/../etc".parse::<ProfilePath>().is_err());
        assert_eq!(
            ProfilePath::Home(".x".into()).expand("/home/a/"),
            "/home/a/.x"
        );
    }

    #[test]
    fn env_patterns() {
        let p: EnvPattern = "AIDER_*".parse().unwrap();
        assert!(p.matches("AIDER_MODEL"));
        assert!(!p.is_exact());
        assert!("1BAD".parse::<EnvPattern>().is_err());
        assert!("*".parse::<EnvPattern>().is_err());
        assert!("A-B".parse::<EnvPattern>().is_err());
    }

    #[test]
    fn users() {
        assert_eq!("host".parse::<UserSpec>().unwrap(), UserSpec::Host);
        assert_eq!(
            "1000:100".parse::<UserSpec>().unwrap(),
            UserSpec::Ids {
                uid: 1000,
                gid: 100
            }
        );
        assert!("bob".parse::<UserSpec>().is_err());
    }
}
