//! The sandbox plan: everything a backend needs to build one session, and
//! nothing about profiles. Backends read a [`SandboxSpec`]; they never see
//! a profile, so no backend can reinterpret policy.

use std::fmt;
use std::path::PathBuf;

use policy::NetworkMode;
use policy::env::{EnvSource, RefusedVar};
use policy::seccomp::SeccompProfile;
use serde::Serialize;

/// A session's identifier: 32 lowercase hex digits. The first 12 are its
/// short form, as with docker.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    /// A fresh random id.
    pub fn generate() -> SessionId {
        let mut bytes = [0u8; 16];
        fill_random(&mut bytes);
        SessionId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn parse(s: &str) -> Option<SessionId> {
        (s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| SessionId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn fill_random(buf: &mut [u8]) {
    // getrandom(2) never fails for 16 bytes once the pool is initialised,
    // which it is long before any user runs agentctl.
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe `rest`, which is valid
        // for writes for its whole length.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            panic!("getrandom failed: {}", std::io::Error::last_os_error());
        }
    }
}

/// Where a mount's content comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MountSource {
    /// A host path, bound recursively. `file` is true for a single file,
    /// which has no submounts to make read-only.
    Bind { path: PathBuf, file: bool },
    /// A fresh, empty tmpfs.
    Tmpfs { size: Option<u64>, mode: u32 },
}

/// Why a mount is there, for `explain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MountPurpose {
    /// Part of the host root filesystem (`/usr`, `/etc`, ...).
    Rootfs,
    Workspace,
    /// A fresh home directory holding only the granted dotfiles.
    FreshHome,
    /// A dotfile the profile grants.
    HomeGrant,
    /// A host path the profile names in `mounts:`.
    ProfileMount,
    /// A host path given with `--mount`.
    CommandLineMount,
    Tmp,
    /// A generated file, such as resolv.conf for the user-mode network.
    Generated,
    /// A directory of the workspace bound onto itself, so that it cannot
    /// be renamed or replaced: it leads to a masked secret or to a file the
    /// host runs (see `sandbox::pins`).
    Pin,
    /// A file the host runs later, read-only (see `sandbox::hostrun`).
    HostRun,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MountPlan {
    pub destination: PathBuf,
    pub source: MountSource,
    pub writable: bool,
    pub purpose: MountPurpose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskKind {
    /// Reads as empty (`/dev/null`), cannot be written.
    File,
    /// An empty read-only directory.
    Dir,
}

/// Why a path is masked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MaskReason {
    /// Its name matches a secret rule.
    NameRule { rule: String },
    /// It is on the home deny list and the profile does not grant it.
    HomeDenied { entry: String, what: String },
    /// It is a hard link to a secret: same device and inode.
    HardLink { of: PathBuf },
    /// A sensitive host system file.
    System { what: String },
    /// In the host's /etc and not world-readable; masked when the sandbox
    /// runs with the host's root identity, which could otherwise read it.
    PrivateSystemFile,
    /// A unix socket: connecting to it would reach a host service.
    Socket,
    /// A credential file by the deny list's name, found at any depth (a
    /// project's own `.kube/config`), or a deny-list entry's real path.
    CredentialFile { entry: String, what: String },
    /// A directory the scan could not list: what is inside is unknown, so
    /// all of it is hidden.
    Unlistable { error: String },
    /// agentctl's own state (profiles, store, image cache, logs, runtime
    /// directory): an agent that could change it would change its next
    /// sandbox, or what `rm` and `gc` act on.
    OwnState,
}

impl fmt::Display for MaskReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaskReason::NameRule { rule } => f.write_str(rule),
            MaskReason::HomeDenied { entry, what } => {
                write!(f, "{what} (home deny list `~/{entry}`)")
            }
            MaskReason::HardLink { of } => write!(f, "hard link to secret {}", of.display()),
            MaskReason::System { what } => write!(f, "{what} (host system file)"),
            MaskReason::PrivateSystemFile => {
                f.write_str("not world-readable on the host (the sandbox runs as host root)")
            }
            MaskReason::Socket => f.write_str("unix socket (would reach a host service)"),
            MaskReason::CredentialFile { entry, what } => {
                write!(f, "{what} (deny list name `{entry}`)")
            }
            MaskReason::OwnState => f.write_str(
                "agentctl's own state (never visible to a session, whatever is granted)",
            ),
            MaskReason::Unlistable { error } => write!(
                f,
                "the scan cannot look inside ({error}); `chmod u+rx` it to have it scanned instead of hidden"
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Masked {
    /// The path inside the sandbox.
    pub path: PathBuf,
    pub kind: MaskKind,
    pub reason: MaskReason,
}

/// A symlink whose target is a secret. It needs no mount of its own: its
/// target is masked or absent inside the sandbox. Listed for `explain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SymlinkAlias {
    pub link: PathBuf,
    pub target: PathBuf,
    /// `masked` or `not mounted`.
    pub target_state: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct EnvEntry {
    pub name: String,
    #[serde(skip)]
    pub value: policy::env::Redacted,
    pub source: EnvSource,
}

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct LimitsPlan {
    pub pids: u32,
    pub memory_bytes: u64,
    /// Thousandths of a CPU.
    pub cpu_millis: u32,
    /// Containers the agent may hold at once through its Docker proxy.
    #[serde(default = "default_containers")]
    pub containers: u32,
}

fn default_containers() -> u32 {
    policy::resolve::DEFAULT_CHILD_CONTAINERS
}

/// Who the agent is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The host uid and gid that own everything the agent does.
    pub host_uid: u32,
    pub host_gid: u32,
    /// The invoking user's uid, which decides what agentctl itself may do
    /// (map ids, write cgroups).
    pub invoker_uid: u32,
    pub user_name: String,
    pub home: PathBuf,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ScanStats {
    pub roots: usize,
    pub dirs: u64,
    pub files: u64,
    pub micros: u64,
}

/// The whole plan for one session.
#[derive(Clone, Debug, Serialize)]
pub struct SandboxSpec {
    pub session: SessionId,
    pub profile: String,
    pub profile_chain: Vec<String>,
    /// sha256 of the canonical JSON of the effective policy.
    pub policy_sha256: String,
    pub command: Vec<String>,
    pub cwd: PathBuf,
    pub workspace: PathBuf,
    pub hostname: String,
    pub env: Vec<EnvEntry>,
    pub env_refused: Vec<RefusedVar>,
    /// The OCI image whose filesystem is the read-only root; `None` for the
    /// host's own directories below.
    pub image: Option<String>,
    /// The backend the profile asks for (`backend:`); a caller that asks
    /// for another is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<policy::BackendName>,
    /// Host directories and symlinks that form the read-only root, e.g.
    /// `/usr` bound and `/bin -> usr/bin` recreated.
    pub rootfs_binds: Vec<PathBuf>,
    pub rootfs_symlinks: Vec<(PathBuf, PathBuf)>,
    /// Ordered so that a parent is mounted before anything below it.
    pub mounts: Vec<MountPlan>,
    pub masked: Vec<Masked>,
    pub symlink_aliases: Vec<SymlinkAlias>,
    /// Files in writable mounts that the host runs later (git config and
    /// hooks, editor run configurations): bound read-only onto themselves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_run: Vec<crate::hostrun::HostRunFile>,
    /// Granted entries the host does not have, for `explain`.
    pub skipped: Vec<String>,
    /// What the launch makes on the host before the sandbox starts
    /// (agentctl's own directories, home entries the profile creates);
    /// planning makes nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prepare: Vec<crate::prepare::HostPrep>,
    /// What the user should know about the plan: directories named like
    /// secrets that were walked instead (virtual environments), and
    /// warnings (`warning: ...`, e.g. a token in a granted ~/.gitconfig).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The agent gets a Docker socket (agentctl's proxy, role `session`);
    /// the launcher starts the proxy and adds the socket's mount.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub docker: bool,
    pub network: NetworkMode,
    /// The `allowlist` network's rules (the profile's, then `--allow`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_allow: Vec<String>,
    pub network_reason: Option<String>,
    pub limits: LimitsPlan,
    pub identity: Identity,
    #[serde(skip)]
    pub seccomp: SeccompProfile,
    pub masked_proc_paths: Vec<PathBuf>,
    pub readonly_proc_paths: Vec<PathBuf>,
    pub scan: ScanStats,
}

impl SandboxSpec {
    /// Every path a runtime must mask: the standard ones under /proc and
    /// /sys, then the secrets.
    pub fn all_masked_paths(&self) -> Vec<String> {
        self.masked_proc_paths
            .iter()
            .chain(self.masked.iter().map(|m| &m.path))
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    }

    /// Looks up a variable's value, for backends that build an environment.
    pub fn env_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.env
            .iter()
            .map(|e| (e.name.as_str(), e.value.0.as_str()))
    }
}
