//! Command-line arguments. Raw strings are parsed into typed values here;
//! nothing past this module sees them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use policy::NetworkMode;
use policy::env::CliEnv;

#[derive(Parser, Debug)]
#[command(
    name = "agentctl",
    version,
    about = "Run AI coding agents in a sandbox that cannot see your secrets",
    long_about = None,
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a command (an agent) in a sandbox.
    Run(RunArgs),
    /// Print the sandbox plan without running anything.
    Explain(ExplainArgs),
    /// List the available profiles.
    Profiles(ProfilesArgs),
    /// Delegate a cgroup subtree to a user, so that unprivileged sessions
    /// get resource limits (run once, as root).
    Setup(SetupArgs),
    /// Manage images: the native backend's cache, and the agent images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Write the OCI bundle a session would run, without running it.
    Bundle(BundleArgs),
    /// Internal: PID 1 of a Docker host-root sandbox.
    #[command(name = "__init", hide = true)]
    Init {
        #[arg(long)]
        tty: bool,
        /// The terminal's size as ROWSxCOLS, set before the agent starts.
        #[arg(long)]
        size: Option<String>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Internal: runs a command inside a running native session.
    #[command(name = "__native-exec", hide = true)]
    NativeExec {
        session_dir: PathBuf,
        #[arg(long)]
        tty: bool,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Internal: the single-threaded session helper.
    #[command(name = "__native-helper", hide = true)]
    NativeHelper { session_dir: PathBuf },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// Daemonless, through libcontainer (the default).
    Native,
    /// The Docker Engine at DOCKER_HOST or the default socket.
    Docker,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Network {
    None,
    Bridge,
    Host,
}

impl From<Network> for NetworkMode {
    fn from(n: Network) -> NetworkMode {
        match n {
            Network::None => NetworkMode::None,
            Network::Bridge => NetworkMode::Bridge,
            Network::Host => NetworkMode::Host,
        }
    }
}

/// What selects and adjusts the policy; shared by run, explain and bundle.
#[derive(Args, Debug, Clone)]
pub struct PolicyArgs {
    /// Profile name (see `agentctl profiles`) or path to a profile file.
    #[arg(long, short = 'p', env = "AGENTCTL_PROFILE", default_value = "generic")]
    pub profile: String,
    /// The project directory the agent may edit [default: current directory].
    #[arg(long, short = 'w')]
    pub workspace: Option<PathBuf>,
    /// Override the profile's network.
    #[arg(long, value_enum)]
    pub network: Option<Network>,
    /// Pass a host variable (NAME) or set one (NAME=VALUE).
    #[arg(long = "env", short = 'e', value_name = "NAME[=VALUE]", value_parser = parse_env)]
    pub env: Vec<CliEnv>,
    /// Run from an OCI image instead of the host's root filesystem: a
    /// registry reference, oci:DIR[:TAG] or docker-archive:FILE[:TAG].
    #[arg(long)]
    pub image: Option<String>,
    /// Mount a host path: SRC[:DST][:ro|rw], read-only unless :rw.
    #[arg(long = "mount", short = 'm', value_name = "SRC:DST[:ro|rw]", value_parser = parse_mount)]
    pub mounts: Vec<policy::MountEntry>,
}

fn parse_env(s: &str) -> Result<CliEnv, String> {
    s.parse()
}

fn parse_mount(s: &str) -> Result<policy::MountEntry, String> {
    policy::resolve::parse_cli_mount(s)
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Which sandbox implementation runs the session.
    #[arg(long, value_enum, env = "AGENTCTL_BACKEND", default_value = "native")]
    pub backend: BackendKind,
    /// Run without pids, memory and cpu limits (when the host cannot apply
    /// them, e.g. no delegated cgroup).
    #[arg(long)]
    pub no_limits: bool,
    /// Do not allocate a terminal even when stdin and stdout are terminals.
    #[arg(long)]
    pub no_tty: bool,
    /// No summary line on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// The command to run, after `--` [default: /bin/sh].
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The command that would run.
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ProfilesArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SetupArgs {
    /// The user to delegate to [default: $SUDO_USER].
    #[arg(long)]
    pub user: Option<String>,
}

#[derive(Args, Debug)]
pub struct BundleArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Directory to write config.json and rootfs/ into.
    #[arg(long)]
    pub out: PathBuf,
    /// Ask for a terminal in the bundle.
    #[arg(long)]
    pub tty: bool,
    /// The cgroup path to put in the bundle.
    #[arg(long, default_value = "/agentctl/bundle")]
    pub cgroups_path: String,
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build an agent image from images/ on the Docker Engine
    /// (agent-base, claude-code, codex, aider).
    Build {
        name: String,
        /// The BASE build argument of the first image built (e.g. a local
        /// base made by images/make-base.sh: agentctl/debian:bookworm).
        #[arg(long)]
        base: Option<String>,
        /// Rebuild the images it builds on even when they exist.
        #[arg(long)]
        rebuild_deps: bool,
    },
    /// Fetch and unpack an image into the native backend's cache: a
    /// registry reference, oci:DIR[:TAG] or docker-archive:FILE[:TAG].
    Pull { source: String },
    /// List the images in the native backend's cache.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove an image's name from the cache (`prune` frees the space).
    Rm { reference: String },
    /// Delete cached layers and root filesystems no image uses.
    Prune,
}
