//! From an effective policy and a request to a [`SandboxSpec`]. This is
//! where policy meets the host: paths are resolved, grants are checked
//! against the deny lists, and the workspace is scanned.

use std::fs;
use std::path::{Path, PathBuf};

use policy::env::{BaseEnv, CliEnv, plan_env};
use policy::secrets::{HOME_DENY, PROC_MASKED, PROC_READONLY, SYSTEM_DENY, SecretRules};
use policy::{AccessMode, MountEntry, NetworkMode, Policy, UserSpec};
use sha2::{Digest, Sha256};

use crate::error::PlanError;
use crate::prepare::{HostPrep, real_path_of_missing};
use crate::scan::{RootKind, ScanInput, ScanRoot, normalize, scan};
use crate::spec::{
    EnvEntry, Identity, LimitsPlan, MaskKind, MaskReason, Masked, MountPlan, MountPurpose,
    MountSource, SandboxSpec, SessionId,
};

/// The host directories that make up the default read-only root.
pub const ROOTFS_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];

/// Facts about the invoking user and host that planning depends on.
#[derive(Clone, Debug)]
pub struct HostFacts {
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub home: PathBuf,
    pub env: Vec<(String, String)>,
    pub cpus: usize,
}

impl HostFacts {
    /// Reads the facts of the current process.
    pub fn current() -> Result<HostFacts, PlanError> {
        let uid = nix::unistd::getuid();
        let gid = nix::unistd::getgid();
        let pw = nix::unistd::User::from_uid(uid).ok().flatten();
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|h| h.is_absolute() && h != Path::new("/"))
            .or_else(|| pw.as_ref().map(|p| p.dir.clone()))
            .ok_or_else(|| PlanError::Host {
                message: "cannot tell the home directory: HOME is unset or \"/\"".into(),
                fix: "set HOME to your home directory".into(),
            })?;
        let home = fs::canonicalize(&home).unwrap_or(home);
        let user = pw
            .map(|p| p.name)
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| uid.to_string());
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Ok(HostFacts {
            uid: uid.as_raw(),
            gid: gid.as_raw(),
            user,
            home,
            env,
            cpus,
        })
    }
}

/// What the user asked for on top of the profile.
#[derive(Clone, Debug)]
pub struct PlanRequest {
    pub policy: Policy,
    pub workspace: PathBuf,
    pub command: Vec<String>,
    pub network: Option<NetworkMode>,
    /// `--allow RULE`: rules added to the profile's allowlist; alone, they
    /// ask for the `allowlist` network.
    pub allow: Vec<String>,
    pub mounts: Vec<MountEntry>,
    pub env: Vec<CliEnv>,
    /// `--image`, overriding the profile's `image:`.
    pub image: Option<String>,
    /// `--allow-home-workspace`: the home directory (or one of the trees
    /// in it whose files the host runs) may be the workspace.
    pub allow_home_workspace: bool,
    /// agentctl's own files (profiles, the session store, the image cache,
    /// kept logs, the runtime directory with `helper.json`): masked wherever
    /// a mount would show them, whatever the profile grants, and never a
    /// mount source themselves.
    pub own_state: OwnState,
}

/// agentctl's own state, as the caller knows it.
#[derive(Clone, Debug, Default)]
pub struct OwnState {
    /// Directories: masked whether or not they exist, and made (0700) by
    /// the launch when missing (see [`crate::prepare`]).
    pub dirs: Vec<PathBuf>,
    /// Files (a SQLite store and its journals): masked when present.
    pub files: Vec<PathBuf>,
}

/// Builds the plan. Fails, naming the path and the fix, when a grant would
/// expose a secret or a path cannot be mounted.
pub fn plan(req: PlanRequest, host: &HostFacts) -> Result<SandboxSpec, PlanError> {
    let policy = &req.policy;
    let home = host.home.clone();
    let rules = SecretRules::new(&policy.secrets.deny, &policy.secrets.allow).map_err(|e| {
        PlanError::Policy {
            message: e,
            fix: "fix the glob in the profile's secrets section".into(),
        }
    })?;

    let identity = identity(policy.user, host)?;
    // Home-relative grants, to exempt from the home deny list.
    let granted: Vec<String> = policy
        .home
        .iter()
        .filter_map(|h| h.path.home_relative().map(str::to_string))
        .collect();
    // Resolved once: every mount below is checked against them.
    let guards = Guards::new(&home, granted, &req.own_state);
    let workspace = workspace(&req.workspace, &home, &guards, req.allow_home_workspace)?;

    let mut mounts = Vec::new();
    let mut skipped = Vec::new();
    let mut prepare = Vec::new();
    let mut roots = Vec::new();
    let image = req.image.clone().or_else(|| policy.image.clone());
    // From an image, the root filesystem is the image's: the host's system
    // directories and their secrets are not there at all.
    let (rootfs_binds, rootfs_symlinks) = if image.is_some() {
        (Vec::new(), Vec::new())
    } else {
        rootfs()
    };
    for dir in &rootfs_binds {
        mounts.push(MountPlan {
            destination: dir.clone(),
            source: MountSource::Bind {
                path: dir.clone(),
                file: false,
            },
            writable: false,
            purpose: MountPurpose::Rootfs,
        });
    }
    mounts.push(MountPlan {
        destination: "/tmp".into(),
        source: MountSource::Tmpfs {
            size: None,
            mode: 0o1777,
        },
        writable: true,
        purpose: MountPurpose::Tmp,
    });
    mounts.push(MountPlan {
        destination: home.clone(),
        source: MountSource::Tmpfs {
            size: None,
            mode: 0o700,
        },
        writable: true,
        purpose: MountPurpose::FreshHome,
    });

    for entry in &policy.home {
        let rel = entry.path.home_relative().unwrap_or_default();
        let host_path = home.join(rel);
        let (source, made) = if fs::symlink_metadata(&host_path).is_err() {
            // Made by the launch, not here: planning changes nothing.
            if entry.create_file.is_none() && !entry.create {
                skipped.push(format!("~/{rel} (not present on the host)"));
                continue;
            }
            let path = real_path_of_missing(&host_path).ok_or_else(|| PlanError::Mount {
                path: host_path.clone(),
                message: "cannot resolve where it would be created".into(),
                fix: "create it yourself, or remove the home entry from the profile".into(),
            })?;
            let prep = match &entry.create_file {
                Some(content) => HostPrep::File {
                    path: path.clone(),
                    content: content.clone(),
                },
                None => HostPrep::Dir { path: path.clone() },
            };
            (path, Some(prep))
        } else {
            let path = fs::canonicalize(&host_path).map_err(|e| PlanError::Mount {
                path: host_path.clone(),
                message: format!("cannot resolve it: {e}"),
                fix: "fix or remove the broken link".into(),
            })?;
            (path, None)
        };
        guards.check(&source, &format!("home entry ~/{rel}"))?;
        // What the launch makes is new and empty (or agentctl's own
        // content): nothing to scan.
        let file = match &made {
            Some(prep) => matches!(prep, HostPrep::File { .. }),
            None => {
                roots.push(ScanRoot {
                    host: source.clone(),
                    container: host_path.clone(),
                    kind: RootKind::Content {
                        name_rules: entry.scan,
                    },
                });
                source.is_file()
            }
        };
        prepare.extend(made);
        mounts.push(MountPlan {
            destination: host_path,
            source: MountSource::Bind { file, path: source },
            writable: entry.mode.is_rw(),
            purpose: MountPurpose::HomeGrant,
        });
    }

    // A granted ~/.gitconfig may carry a token; the agent reads it.
    let mut token_warnings = Vec::new();
    for m in &mounts {
        if m.purpose == MountPurpose::HomeGrant
            && m.destination == home.join(".gitconfig")
            && let MountSource::Bind { path, .. } = &m.source
            && let Ok(text) = fs::read_to_string(path)
        {
            for what in policy::gitconfig::tokens(&text) {
                token_warnings.push(format!(
                    "warning: the granted ~/.gitconfig carries a credential ({what}); the agent can read it. Move it to a credential helper, or drop ~/.gitconfig from the profile's home list"
                ));
            }
        }
    }

    let extra = policy
        .mounts
        .iter()
        .map(|m| (m, MountPurpose::ProfileMount))
        .chain(
            req.mounts
                .iter()
                .map(|m| (m, MountPurpose::CommandLineMount)),
        );
    for (entry, purpose) in extra {
        let host_path = PathBuf::from(entry.path.expand(&home.to_string_lossy()));
        let destination = PathBuf::from(
            entry
                .target
                .as_ref()
                .unwrap_or(&entry.path)
                .expand(&home.to_string_lossy()),
        );
        let source = match fs::canonicalize(&host_path) {
            Ok(s) => s,
            Err(_) if entry.optional => {
                skipped.push(format!("{} (not present on the host)", entry.path));
                continue;
            }
            Err(e) => {
                return Err(PlanError::Mount {
                    path: host_path,
                    message: format!("cannot mount it: {e}"),
                    fix: "create it, fix the path, or mark the mount `optional: true`".into(),
                });
            }
        };
        check_destination(&destination)?;
        guards.check(&source, &format!("mount {}", entry.path))?;
        if home.starts_with(&source) {
            return Err(PlanError::Mount {
                path: source,
                message: "it contains your home directory".into(),
                fix: "mount the specific directories the agent needs".into(),
            });
        }
        roots.push(ScanRoot {
            host: source.clone(),
            container: destination.clone(),
            kind: RootKind::Content {
                name_rules: entry.scan,
            },
        });
        mounts.push(MountPlan {
            destination,
            source: MountSource::Bind {
                file: source.is_file(),
                path: source,
            },
            writable: entry.mode.is_rw(),
            purpose,
        });
    }

    roots.insert(
        0,
        ScanRoot {
            host: workspace.clone(),
            container: workspace.clone(),
            kind: RootKind::Content { name_rules: true },
        },
    );
    mounts.push(MountPlan {
        destination: workspace.clone(),
        source: MountSource::Bind {
            path: workspace.clone(),
            file: false,
        },
        writable: policy.workspace == AccessMode::Rw,
        purpose: MountPurpose::Workspace,
    });

    // Secrets whose hard links must be masked wherever they appear: walked
    // at their real paths (`~/.aws` may be a link into `~/dotfiles`).
    for d in &guards.deny {
        if fs::symlink_metadata(&d.literal).is_ok() {
            let p = d.real.clone().unwrap_or_else(|| d.literal.clone());
            roots.push(ScanRoot {
                host: p.clone(),
                container: p,
                kind: RootKind::DeniedInodes,
            });
        }
    }
    let system = if image.is_some() {
        Vec::new()
    } else {
        system_denied()
    };
    for (path, _, _) in &system {
        roots.push(ScanRoot {
            host: path.clone(),
            container: path.clone(),
            kind: RootKind::DeniedInodes,
        });
    }
    if identity.host_uid == 0 && rootfs_binds.iter().any(|p| p == Path::new("/etc")) {
        roots.push(ScanRoot {
            host: "/etc".into(),
            container: "/etc".into(),
            kind: RootKind::PrivateFiles,
        });
    }

    let scanned = scan(&ScanInput {
        roots: roots.clone(),
        rules: &rules,
        home: &home,
        granted: &guards.granted,
        threads: host.cpus.clamp(1, 8),
    });

    if let Some((path, message)) = scanned.errors.first() {
        return Err(PlanError::Scan {
            path: path.clone(),
            message: format!("the secret scan failed ({message})"),
            fix: "make it readable to you (chmod u+rx) or remove it: a session does not start with part of what it sees unscanned".into(),
        });
    }
    let mut notes = token_warnings;
    for venv in &scanned.venvs {
        notes.push(format!(
            "{} (named like a dotenv directory, but a Python virtual environment: walked, not masked)",
            venv.display()
        ));
    }
    let mut masked = scanned.masked;
    // The deny list by path, for trees that were not walked (scan: false)
    // and as a check on the walk. A deny entry is inside a mount when its
    // home path lies under the mount's source (the host's view) or under
    // its destination (the sandbox's view, which differs when a granted
    // path is a symlink).
    for m in &mounts {
        let MountSource::Bind { path: source, .. } = &m.source else {
            continue;
        };
        if m.purpose == MountPurpose::Rootfs {
            continue;
        }
        for DenyPath {
            entry,
            what,
            literal: denied,
            real,
        } in &guards.deny
        {
            let rest = denied
                .strip_prefix(source)
                .ok()
                .or_else(|| denied.strip_prefix(&m.destination).ok())
                .filter(|r| !r.as_os_str().is_empty());
            // The entry's real path: a workspace of `~/dotfiles` holds
            // `~/.aws`'s files when `~/.aws -> ~/dotfiles/aws`.
            let by_real = real
                .as_ref()
                .and_then(|r| r.strip_prefix(source).ok())
                .filter(|r| !r.as_os_str().is_empty());
            for (rest, reason) in [
                (
                    rest,
                    MaskReason::HomeDenied {
                        entry: entry.to_string(),
                        what: what.to_string(),
                    },
                ),
                (
                    by_real,
                    MaskReason::CredentialFile {
                        entry: format!("~/{entry}, by its real path"),
                        what: what.to_string(),
                    },
                ),
            ] {
                let Some(rest) = rest else { continue };
                masked.extend(mask_if_present(
                    &source.join(rest),
                    m.destination.join(rest),
                    reason,
                ));
            }
        }
    }
    // agentctl's own state inside any mount: by its real path, so that a
    // grant of `~/.config` or `~/.local/share` shows none of it.
    for (real, kind) in &guards.own {
        if *kind == OwnKind::MissingDir {
            prepare.push(HostPrep::Dir { path: real.clone() });
        }
        for m in &mounts {
            let MountSource::Bind { path: source, .. } = &m.source else {
                continue;
            };
            if m.purpose == MountPurpose::Rootfs && identity.host_uid != 0 {
                // The host's /etc, /usr: agentctl keeps nothing there
                // that the user could not read anyway.
                continue;
            }
            let Ok(rest) = real.strip_prefix(source) else {
                continue;
            };
            if rest.as_os_str().is_empty() {
                continue;
            }
            let dest = m.destination.join(rest);
            masked.extend(match kind {
                OwnKind::MissingDir => Some(Masked {
                    path: dest,
                    kind: MaskKind::Dir,
                    reason: MaskReason::OwnState,
                }),
                _ => mask_if_present(real, dest, MaskReason::OwnState),
            });
        }
    }
    for (path, kind, what) in system {
        masked.push(Masked {
            path,
            kind,
            reason: MaskReason::System { what },
        });
    }
    masked.sort_by(|a, b| a.path.cmp(&b.path));
    masked.dedup_by(|a, b| a.path == b.path);
    let masked_dirs: Vec<PathBuf> = masked
        .iter()
        .filter(|m| m.kind == MaskKind::Dir)
        .map(|m| m.path.clone())
        .collect();
    masked.retain(|m| {
        !masked_dirs
            .iter()
            .any(|d| m.path != *d && m.path.starts_with(d))
    });

    // Files the host runs later, in every writable tree: read-only, with
    // their directories pinned so that they cannot be moved aside.
    let mut host_run = Vec::new();
    let mut pin_paths: Vec<(usize, Vec<PathBuf>)> = Vec::new();
    for (i, root) in roots.iter().enumerate() {
        if !matches!(root.kind, RootKind::Content { .. }) {
            continue;
        }
        let writable = mounts.iter().any(|m| {
            m.writable
                && m.destination == root.container
                && matches!(&m.source, MountSource::Bind { path, .. } if *path == root.host)
        });
        if !writable {
            continue;
        }
        let found: Vec<PathBuf> = scanned
            .host_run
            .iter()
            .filter(|(r, _)| *r == i)
            .map(|(_, p)| p.clone())
            .collect();
        let files = crate::hostrun::find(
            &root.host,
            &root.container,
            &found,
            &policy.writable_host_files,
        )?;
        let mut paths: Vec<PathBuf> = files.iter().map(|f| f.host.clone()).collect();
        // The agent's children on Docker get the workspace's masks by path;
        // pinning their directories keeps those paths from being moved.
        if policy.docker && i == 0 {
            paths.extend(
                masked
                    .iter()
                    .filter(|m| m.path.starts_with(&workspace))
                    .map(|m| m.path.clone()),
            );
        }
        for f in &files {
            mounts.push(MountPlan {
                destination: f.path.clone(),
                source: MountSource::Bind {
                    path: f.host.clone(),
                    file: !f.dir,
                },
                writable: false,
                purpose: MountPurpose::HostRun,
            });
        }
        pin_paths.push((i, paths));
        host_run.extend(files);
    }
    for (i, paths) in pin_paths {
        let root = &roots[i];
        for pin in crate::pins::pin_mounts(&root.host, &root.container, true, &paths) {
            if !mounts.iter().any(|m| m.destination == pin.destination) {
                mounts.push(pin);
            }
        }
    }

    // Parents before children; equal depth keeps planning order, so the
    // workspace wins over a fresh home at the same path.
    mounts.sort_by_key(|m| m.destination.components().count());

    let env = plan_env(
        &host.env,
        &BaseEnv {
            home: &home.to_string_lossy(),
            user: &identity.user_name,
            image: image.is_some(),
        },
        &policy.env,
        &policy.env_set,
        &req.env,
    );

    let (network, network_allow) = plan_network(policy, req.network, &req.allow)?;
    let network_reason = match (req.network, network) {
        (_, NetworkMode::None) => None,
        (Some(n), _) if n != policy.network => Some(format!("requested with --network {n}")),
        (None, NetworkMode::Allowlist) if policy.network != NetworkMode::Allowlist => {
            Some("requested with --allow".to_string())
        }
        _ => policy.network_reason.clone(),
    };
    let mut env = env;
    if network == NetworkMode::Allowlist {
        // The proxy's addresses win over any the host passed: the host's
        // proxy is out of the sandbox's reach anyway.
        let vars = crate::egress::proxy_env();
        env.vars.retain(|v| !vars.iter().any(|(n, _)| *n == v.name));
        env.vars
            .extend(vars.into_iter().map(|(name, value)| policy::env::EnvVar {
                name: name.to_string(),
                value: policy::env::Redacted(value),
                source: policy::env::EnvSource::Network,
            }));
    }

    let session = SessionId::generate();
    let command = if req.command.is_empty() {
        vec!["/bin/sh".to_string()]
    } else {
        req.command
    };
    Ok(SandboxSpec {
        hostname: format!("agentctl-{}", session.short()),
        session,
        profile: policy.name.clone(),
        profile_chain: policy.chain.clone(),
        policy_sha256: policy_hash(policy),
        command,
        cwd: workspace.clone(),
        workspace,
        env: env
            .vars
            .into_iter()
            .map(|v| EnvEntry {
                name: v.name,
                value: v.value,
                source: v.source,
            })
            .collect(),
        env_refused: env.refused,
        image,
        backend: policy.backend,
        rootfs_binds,
        rootfs_symlinks,
        mounts,
        masked,
        symlink_aliases: scanned.aliases,
        host_run,
        skipped,
        prepare,
        notes,
        docker: policy.docker,
        network,
        network_allow,
        network_reason,
        limits: LimitsPlan {
            pids: policy.limits.pids,
            memory_bytes: policy.limits.memory.0,
            cpu_millis: policy.limits.cpus.0,
            containers: policy.limits.containers,
        },
        identity,
        seccomp: policy::seccomp::default_profile(),
        masked_proc_paths: PROC_MASKED.iter().map(PathBuf::from).collect(),
        readonly_proc_paths: PROC_READONLY.iter().map(PathBuf::from).collect(),
        scan: scanned.stats,
    })
}

/// sha256 of the effective policy's JSON. Field order is fixed by the
/// struct and maps are ordered, so equal policies hash equally.
pub fn policy_hash(policy: &Policy) -> String {
    let json = serde_json::to_vec(policy).expect("policy serializes");
    Sha256::digest(&json)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn identity(user: UserSpec, host: &HostFacts) -> Result<Identity, PlanError> {
    let (uid, gid) = match user {
        UserSpec::Host => (host.uid, host.gid),
        UserSpec::Ids { uid, gid } if host.uid == 0 => (uid, gid),
        UserSpec::Ids { uid, gid } if uid == host.uid && gid == host.gid => (uid, gid),
        UserSpec::Ids { uid, gid } => {
            return Err(PlanError::Policy {
                message: format!(
                    "the profile asks to run as {uid}:{gid}, but only root can map another user"
                ),
                fix: "use `user: host`, or run agentctl as root".into(),
            });
        }
    };
    Ok(Identity {
        host_uid: uid,
        host_gid: gid,
        invoker_uid: host.uid,
        user_name: host.user.clone(),
        home: host.home.clone(),
    })
}

/// Directories of the home whose contents the host runs on its own: shell
/// start-up files live in the home itself, `~/.config` holds autostart
/// entries and systemd user units, `~/.local/bin` comes first in PATH.
/// A session whose workspace is one of them could plant code that runs
/// outside the sandbox the next time the user opens a shell or logs in.
const HOST_RUN_TREES: &[&str] = &["", ".config", ".local", ".local/bin", ".local/share"];

fn workspace(
    requested: &Path,
    home: &Path,
    guards: &Guards,
    allow_home: bool,
) -> Result<PathBuf, PlanError> {
    let ws = fs::canonicalize(requested).map_err(|e| PlanError::Workspace {
        path: requested.to_path_buf(),
        message: format!("cannot open it: {e}"),
        fix: "pass an existing directory with --workspace".into(),
    })?;
    if !ws.is_dir() {
        return Err(PlanError::Workspace {
            path: ws,
            message: "it is not a directory".into(),
            fix: "pass a project directory with --workspace".into(),
        });
    }
    if ws == Path::new("/") || (home.starts_with(&ws) && ws != home) {
        return Err(PlanError::Workspace {
            path: ws,
            message: "it contains your home directory and other users' files".into(),
            fix: "run agentctl from a project directory, or pass one with --workspace".into(),
        });
    }
    if !allow_home
        && let Some(tree) = HOST_RUN_TREES.iter().find(|t| {
            ws == if t.is_empty() {
                home.to_path_buf()
            } else {
                home.join(t)
            }
        })
    {
        let what = if tree.is_empty() {
            "your home directory".to_string()
        } else {
            format!("~/{tree}")
        };
        return Err(PlanError::Workspace {
            path: ws,
            message: format!(
                "it is {what}: the agent could write ~/.bashrc, ~/.local/bin or ~/.config, which run on the host the next time you open a shell or log in"
            ),
            fix: "run agentctl from a project directory, or pass --allow-home-workspace if that is what you want".into(),
        });
    }
    if let Some(p) = ROOTFS_DIRS.iter().find(|d| ws.starts_with(d)) {
        return Err(PlanError::Workspace {
            path: ws.clone(),
            message: format!("it is inside the host system directory {p}"),
            fix: "use a project directory as the workspace".into(),
        });
    }
    guards.check(&ws, "the workspace")?;
    Ok(ws)
}

/// A home deny list entry that the profile does not grant: its path in the
/// home and, when that differs, its real path (through symlinks).
struct DenyPath {
    entry: &'static str,
    what: &'static str,
    literal: PathBuf,
    real: Option<PathBuf>,
}

/// Whether a piece of agentctl's own state exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OwnKind {
    Present,
    /// A directory the launch makes: masked as one already.
    MissingDir,
    /// A file that is not there: nothing to mask.
    Missing,
}

/// What no mount may be or lie inside, resolved once per plan (some
/// seventy paths to canonicalize, not seventy per mount): the home deny
/// list and agentctl's own state, by real path.
struct Guards {
    home: PathBuf,
    granted: Vec<String>,
    deny: Vec<DenyPath>,
    /// agentctl's own state by real path (a missing one by the real path
    /// it will have), and whether it is a directory that is missing (the
    /// launch makes it).
    own: Vec<(PathBuf, OwnKind)>,
}

impl Guards {
    fn new(home: &Path, granted: Vec<String>, own_state: &OwnState) -> Guards {
        let deny = HOME_DENY
            .iter()
            .filter(|(entry, _)| !granted.iter().any(|g| g == entry))
            .map(|(entry, what)| {
                let literal = home.join(entry);
                let real = fs::canonicalize(&literal).ok().filter(|r| *r != literal);
                DenyPath {
                    entry,
                    what,
                    literal,
                    real,
                }
            })
            .collect();
        let resolve = |p: &PathBuf, missing: OwnKind| match fs::canonicalize(p) {
            Ok(real) => (real, OwnKind::Present),
            Err(_) => (
                real_path_of_missing(p).unwrap_or_else(|| p.clone()),
                missing,
            ),
        };
        let own = (own_state.dirs.iter())
            .map(|p| resolve(p, OwnKind::MissingDir))
            .chain(own_state.files.iter().map(|p| resolve(p, OwnKind::Missing)))
            .collect();
        Guards {
            home: home.to_path_buf(),
            granted,
            deny,
            own,
        }
    }

    /// Refuses a mount source (or the workspace) that is agentctl's own
    /// state or inside it, or inside a home deny list entry that the
    /// profile does not grant.
    fn check(&self, source: &Path, what: &str) -> Result<(), PlanError> {
        if let Some((real, _)) = self.own.iter().find(|(o, _)| source.starts_with(o)) {
            return Err(PlanError::Denied {
                path: source.to_path_buf(),
                message: format!(
                    "{what} is inside {}, agentctl's own state (profiles, sessions, images, logs), which no session may see",
                    real.display()
                ),
                fix: "mount something else; agentctl's files are never granted".into(),
            });
        }
        // By real path first: a mount of `~/dotfiles/aws` is `~/.aws` when
        // `~/.aws -> ~/dotfiles/aws`.
        for d in &self.deny {
            if let Some(real) = &d.real
                && source.starts_with(real)
            {
                return Err(PlanError::Denied {
                    path: source.to_path_buf(),
                    message: format!(
                        "{what} is inside {} (the real path of ~/{}: {}), which is never mounted",
                        real.display(),
                        d.entry,
                        d.what
                    ),
                    fix: format!(
                        "if the agent really needs it, grant it by name in a profile: `home: [{{path: ~/{}}}]`",
                        d.entry
                    ),
                });
            }
        }
        let (home, granted) = (&self.home, &self.granted);
        let Ok(rel) = source.strip_prefix(home) else {
            return Ok(());
        };
        let rel = rel.to_string_lossy();
        let inside = |path: &str, dir: &str| path == dir || path.starts_with(&format!("{dir}/"));
        let hit = HOME_DENY.iter().find(|(entry, _)| {
            // Granted by name: the grant is the entry or lies inside it, and the
            // source lies inside the grant.
            inside(&rel, entry) && !granted.iter().any(|g| inside(g, entry) && inside(&rel, g))
        });
        match hit {
            Some((entry, why)) => Err(PlanError::Denied {
                path: source.to_path_buf(),
                message: format!("{what} is inside ~/{entry} ({why}), which is never mounted"),
                fix: format!(
                    "if the agent really needs it, grant it by name in a profile: `home: [{{path: ~/{entry}}}]`"
                ),
            }),
            None => Ok(()),
        }
    }
}

/// A mask of `dest` in the sandbox for the host's `host` when it exists, as
/// a directory or a file after what it is (not following a final link).
fn mask_if_present(host: &Path, dest: PathBuf, reason: MaskReason) -> Option<Masked> {
    let meta = fs::symlink_metadata(host).ok()?;
    Some(Masked {
        path: dest,
        kind: if meta.is_dir() {
            MaskKind::Dir
        } else {
            MaskKind::File
        },
        reason,
    })
}

fn check_destination(dest: &Path) -> Result<(), PlanError> {
    let dest = normalize(dest);
    for reserved in ["/proc", "/sys", "/dev"] {
        if dest.starts_with(reserved) {
            return Err(PlanError::Mount {
                path: dest,
                message: format!("{reserved} belongs to the sandbox runtime"),
                fix: "mount it somewhere else".into(),
            });
        }
    }
    if dest == Path::new("/") {
        return Err(PlanError::Mount {
            path: dest,
            message: "it would replace the sandbox's root".into(),
            fix: "mount it below /".into(),
        });
    }
    Ok(())
}

/// The host's system directories a host-root sandbox binds, and its
/// top-level symlinks (`/bin -> usr/bin`).
pub fn rootfs() -> (Vec<PathBuf>, Vec<(PathBuf, PathBuf)>) {
    let mut binds = Vec::new();
    let mut links = Vec::new();
    for dir in ROOTFS_DIRS {
        match fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = fs::read_link(dir) {
                    links.push((PathBuf::from(dir), target));
                }
            }
            Ok(m) if m.is_dir() => binds.push(PathBuf::from(dir)),
            _ => {}
        }
    }
    (binds, links)
}

/// The host system files to mask, as (path, kind, why).
fn system_denied() -> Vec<(PathBuf, MaskKind, String)> {
    let mut out = Vec::new();
    for (path, what) in SYSTEM_DENY {
        if let Ok(meta) = fs::symlink_metadata(path) {
            out.push((PathBuf::from(path), kind_of(&meta), what.to_string()));
        }
    }
    if let Ok(entries) = fs::read_dir("/etc/ssh") {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("ssh_host_") && name.ends_with("_key") {
                out.push((e.path(), MaskKind::File, "SSH host private key".into()));
            }
        }
    }
    out.sort();
    out
}

fn kind_of(meta: &fs::Metadata) -> MaskKind {
    if meta.is_dir() {
        MaskKind::Dir
    } else {
        MaskKind::File
    }
}

/// The session's network and, for `allowlist`, its rules: the profile's
/// when it has an allowlist, then those of `--allow`. `--allow` alone asks
/// for `allowlist`; with another `--network` it is a contradiction, not a
/// rule to drop in silence.
fn plan_network(
    policy: &Policy,
    asked: Option<NetworkMode>,
    allow: &[String],
) -> Result<(NetworkMode, Vec<String>), PlanError> {
    let network = match asked {
        Some(n) => n,
        None if !allow.is_empty() => NetworkMode::Allowlist,
        None => policy.network,
    };
    if network != NetworkMode::Allowlist {
        if !allow.is_empty() {
            return Err(PlanError::Policy {
                message: format!("--allow makes no sense with --network {network}"),
                fix: "drop --network (or use --network allowlist) to reach only the allowed \
                      destinations"
                    .into(),
            });
        }
        return Ok((network, Vec::new()));
    }
    let mut rules = if policy.network == NetworkMode::Allowlist {
        policy.network_allow.clone()
    } else {
        Vec::new()
    };
    for r in allow {
        if !rules.contains(r) {
            rules.push(r.clone());
        }
    }
    if rules.is_empty() {
        return Err(PlanError::Policy {
            message: format!(
                "--network allowlist with no rules: profile {} allows no destination",
                policy.name
            ),
            fix: "add --allow HOST[:PORT] for each destination, or a profile with network: \
                  {allow: [...]}"
                .into(),
        });
    }
    policy::egress::Allowlist::parse(&rules).map_err(|e| PlanError::Policy {
        message: e.to_string(),
        fix: "see docs/NETWORK.md for the rule forms".into(),
    })?;
    Ok((NetworkMode::Allowlist, rules))
}
