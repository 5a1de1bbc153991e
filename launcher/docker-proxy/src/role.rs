//! Roles: which API operations a client may call, and how far its
//! containers may reach into the host. Built-in roles are embedded from
//! `profiles/docker-roles/`; `--rules FILE` replaces one with a user's own.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::route::Endpoint;

/// Who owns what the client sees and makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Every object on the engine.
    Global,
    /// Only the session's own objects; what it creates is labelled with the
    /// session and forced under its policy. Needs a session to serve.
    Session,
}

/// Where bind mounts of created containers may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Binds {
    /// No host path at all.
    None,
    /// Only inside the session's workspace.
    Workspace,
    /// Anywhere except the engine's own socket and the kernel's filesystems
    /// (/proc, /sys, /dev, wherever mounted).
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub description: String,
    pub scope: Scope,
    pub binds: Binds,
    /// Whether created containers may use the host's network namespace
    /// (agentctl's own `network: host` sessions need it).
    pub host_network: bool,
    /// Whether the client is agentctl's own launcher: it may mark
    /// containers with agentctl's labels (`io.agentctl.*`) and give them
    /// agentctl's sandbox seccomp profile (exactly that one, which is
    /// stricter than the engine's default). Only for a global role, whose
    /// client reaches every object anyway; a session role's ownership
    /// rests on those labels.
    pub agentctl_sandboxes: bool,
    pub allow: BTreeSet<Endpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleFile {
    #[serde(default)]
    description: String,
    scope: Scope,
    #[serde(default = "default_binds")]
    binds: Binds,
    #[serde(default)]
    host_network: bool,
    #[serde(default)]
    agentctl_sandboxes: bool,
    allow: Vec<String>,
}

fn default_binds() -> Binds {
    Binds::None
}

pub const BUILTIN: &[(&str, &str)] = &[
    (
        "launcher",
        include_str!("../../../profiles/docker-roles/launcher.yaml"),
    ),
    (
        "logs-reader",
        include_str!("../../../profiles/docker-roles/logs-reader.yaml"),
    ),
    (
        "session",
        include_str!("../../../profiles/docker-roles/session.yaml"),
    ),
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RoleError {
    #[error("unknown role {name:?}; available: {}", available.join(", "))]
    Unknown {
        name: String,
        available: Vec<String>,
    },
    #[error("{source_name}:{line}:{column}: {message}")]
    Syntax {
        source_name: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{source_name}: allow: unknown operation {op:?}{}", hint(.suggestion))]
    UnknownOperation {
        source_name: String,
        op: String,
        suggestion: Option<String>,
    },
}

fn hint(s: &Option<String>) -> String {
    match s {
        Some(s) => format!("; did you mean {s:?}?"),
        None => "; see `agentctl proxy --list-operations`".to_string(),
    }
}

impl Role {
    pub fn builtin(name: &str) -> Result<Role, RoleError> {
        match BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => Role::parse(n, &format!("built-in role {n}"), text),
            None => Err(RoleError::Unknown {
                name: name.to_string(),
                available: BUILTIN.iter().map(|(n, _)| n.to_string()).collect(),
            }),
        }
    }

    /// Parses a role file. `source_name` is what errors call it (its path).
    pub fn parse(name: &str, source_name: &str, text: &str) -> Result<Role, RoleError> {
        let file: RoleFile = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            let mut message = e.to_string();
            if let Some(i) = message.find(" at line ") {
                message.truncate(i);
            }
            RoleError::Syntax {
                source_name: source_name.to_string(),
                line,
                column,
                message,
            }
        })?;
        if file.binds == Binds::Workspace && file.scope != Scope::Session {
            return Err(RoleError::Syntax {
                source_name: source_name.to_string(),
                line: text
                    .lines()
                    .position(|l| l.trim_start().starts_with("binds:"))
                    .map_or(1, |i| i + 1),
                column: 1,
                message: "binds: workspace needs scope: session (a global role has no workspace); use none or any".into(),
            });
        }
        if file.agentctl_sandboxes && file.scope != Scope::Global {
            return Err(RoleError::Syntax {
                source_name: source_name.to_string(),
                line: text
                    .lines()
                    .position(|l| l.trim_start().starts_with("agentctl_sandboxes:"))
                    .map_or(1, |i| i + 1),
                column: 1,
                message: "agentctl_sandboxes: true needs scope: global (a session's ownership rests on agentctl's labels)".into(),
            });
        }
        let mut allow = BTreeSet::new();
        for op in &file.allow {
            match Endpoint::from_name(op) {
                Some(e) => {
                    allow.insert(e);
                }
                None => {
                    return Err(RoleError::UnknownOperation {
                        source_name: source_name.to_string(),
                        op: op.clone(),
                        suggestion: policy::nearest(op, Endpoint::names()).map(str::to_string),
                    });
                }
            }
        }
        Ok(Role {
            name: name.to_string(),
            description: file.description,
            scope: file.scope,
            binds: file.binds,
            host_network: file.host_network,
            agentctl_sandboxes: file.agentctl_sandboxes,
            allow,
        })
    }

    pub fn allows(&self, e: Endpoint) -> bool {
        self.allow.contains(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse() {
        for (name, _) in BUILTIN {
            let role = Role::builtin(name).unwrap();
            assert!(!role.allow.is_empty(), "{name}");
        }
    }

    #[test]
    fn logs_reader_cannot_write() {
        let role = Role::builtin("logs-reader").unwrap();
        for e in [
            Endpoint::ContainersCreate,
            Endpoint::ContainerExec,
            Endpoint::ContainerArchive,
            Endpoint::ContainerExport,
            Endpoint::ContainerAttach,
            Endpoint::ExecStart,
            Endpoint::ContainerRemove,
            Endpoint::ImagesPull,
        ] {
            assert!(!role.allows(e), "{e:?}");
        }
        assert!(role.allows(Endpoint::ContainerLogs));
    }

    #[test]
    fn no_builtin_role_passes_opaque_bodies_or_buildkit() {
        for (name, _) in BUILTIN {
            let role = Role::builtin(name).unwrap();
            for e in &role.allow {
                assert_ne!(e.body(), crate::route::BodyKind::Opaque, "{name}: {e:?}");
                assert!(!matches!(e, Endpoint::Session | Endpoint::Grpc), "{name}");
            }
        }
    }

    #[test]
    fn errors_name_the_file_and_suggest() {
        let err =
            Role::parse("x", "my.yaml", "scope: global\nallow: [containers.lsit]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "my.yaml: allow: unknown operation \"containers.lsit\"; did you mean \"containers.list\"?"
        );
        let err = Role::parse("x", "my.yaml", "scope: global\nallow: []\nbind: any\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("my.yaml:3:1: unknown field `bind`"),
            "{err}"
        );
        let err = Role::parse(
            "x",
            "w.yaml",
            "scope: global\nbinds: workspace\nallow: []\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("w.yaml:2:1: binds: workspace needs scope: session"),
            "{err}"
        );
        let err = Role::builtin("log-reader").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown role \"log-reader\"; available: launcher, logs-reader, session"
        );
    }
}
