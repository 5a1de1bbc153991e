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
    /// The session store: sqlite://PATH, postgres://..., or `none` to keep
    /// no record [default: the stack's Postgres while `agentctl up` has it
    /// up, else sqlite:///var/lib/agentctl/agentctl.db for root, otherwise
    /// $XDG_DATA_HOME/agentctl/agentctl.db, where XDG_DATA_HOME defaults
    /// to ~/.local/share].
    #[arg(long, env = "AGENTCTL_STORE", global = true)]
    pub store: Option<String>,
    /// A team server (https://HOST:PORT): `run`, `ps`, `logs`, `stop`,
    /// `audit` and `rm` act there, with the token of `agentctl login` or
    /// AGENTCTL_TOKEN.
    #[arg(long, env = "AGENTCTL_SERVER", global = true, value_name = "URL")]
    pub server: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a command (an agent) in a sandbox.
    Run(RunArgs),
    /// List sessions.
    Ps(PsArgs),
    /// Show a detached session's output, or the logs of a service of the
    /// stack (`agentctl up`): postgres, dashboard, docker-proxy, worker,
    /// prometheus, logs-proxy, alloy, log-standin.
    Logs {
        /// A session, or a service of the stack.
        session: String,
        /// Keep following until the session ends.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Print the output byte for byte even to a terminal. Without it, a
        /// terminal gets text, colours and cursor moves only: the agent's
        /// escape sequences could write your clipboard or type into your
        /// shell.
        #[arg(long)]
        raw: bool,
    },
    /// Stop a session: SIGTERM, then SIGKILL after the timeout.
    Stop {
        session: String,
        /// Seconds to wait before killing it.
        #[arg(long, short = 't', default_value_t = 10)]
        time: u64,
    },
    /// Remove an ended session, its record and what is left of it.
    Rm {
        session: String,
        /// Stop it first if it is running.
        #[arg(long, short = 'f')]
        force: bool,
    },
    /// Run a command inside a running session.
    Exec {
        session: String,
        /// Do not allocate a terminal even when stdin and stdout are terminals.
        #[arg(long)]
        no_tty: bool,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print a session's audit trail.
    Audit {
        session: String,
        /// Recompute the hash chain; exit non-zero at the first broken link.
        #[arg(long)]
        verify: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove sandboxes that carry agentctl's marks but no session record.
    Gc,
    /// Serve the Docker Engine API to a client under a role: strict HTTP,
    /// canonical versions and bodies, session ownership.
    Proxy(ProxyArgs),
    /// Serve the dashboard and the JSON API of the session store.
    Serve(ServeArgs),
    /// Manage the dashboard's users and API tokens.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Internal: carries out stops asked for in the store for a detached
    /// session.
    #[command(name = "__watch-stops", hide = true)]
    WatchStops { session: String },
    /// Internal: records the end of a detached session.
    #[command(name = "__session-exit", hide = true)]
    SessionExit { session: String },
    /// Run sessions asked for on a team server: claim them from its
    /// Postgres store and run them here.
    Worker(WorkerArgs),
    /// Keep a team server's API token for `--server` (in
    /// ~/.config/agentctl/servers.json, mode 0600).
    Login {
        /// Read the token from stdin instead of asking for it.
        #[arg(long)]
        token_stdin: bool,
    },
    /// Forget the token kept for `--server`.
    Logout,
    /// Internal: runs one claimed request for a worker.
    #[command(name = "__worker-job", hide = true)]
    WorkerJob,
    /// Bring up agentctl's self-hosted stack (compose/) for a role: usr
    /// (Postgres and the dashboard), dev (also a worker that runs sessions
    /// through the Docker socket proxy), ops (also Prometheus and a log
    /// collector). Waits until every service is healthy, then prints the
    /// dashboard's URL.
    Up(UpArgs),
    /// Stop the stack and remove its containers and networks; its data
    /// stays unless -v is given.
    Down {
        /// Also delete the stack's volumes: its database (every session,
        /// audit trail, user and token) and Prometheus' data.
        #[arg(short = 'v', long)]
        volumes: bool,
        /// Do not ask before deleting volumes.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// The stack's services, their state and health, and its URLs.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Internal: a container healthcheck (GET URL, success on 2xx).
    #[command(name = "__probe", hide = true)]
    Probe { url: String },
    /// Internal: prints a backtrace of itself, to check that this binary's
    /// backtraces find its debug file (file and line of every frame).
    #[command(name = "__backtrace", hide = true)]
    Backtrace,
    /// Print the sandbox plan without running anything.
    Explain(ExplainArgs),
    /// List the available profiles.
    Profiles(ProfilesArgs),
    /// Check this host for every feature: user namespaces, seccomp, cgroup
    /// limits for this user, the session store, slirp4netns, the Docker
    /// engine, Compose, QEMU and a guest kernel, the browser tests' parts.
    /// Each line says OK or what to do; exits 1 when sessions cannot run.
    Doctor(DoctorArgs),
    /// Print the completion script for a shell: `source <(agentctl
    /// completions bash)`, or save it where the shell looks
    /// (/usr/share/bash-completion/completions/agentctl,
    /// a directory of $fpath as _agentctl, ~/.config/fish/completions/).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write agentctl's man pages (agentctl.1 and one per command, e.g.
    /// agentctl-run.1) to a directory.
    Man {
        /// Where to write them.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
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
        /// Keep the sandbox away from abstract unix sockets made outside it
        /// (Landlock); for the host network.
        #[arg(long)]
        scope_abstract_unix: bool,
        /// A path the plan masks: the agent does not start unless a mount
        /// covers it (the runtime skips masks whose path is missing).
        #[arg(long = "verify-mask")]
        verify_masks: Vec<std::path::PathBuf>,
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
    /// Internal: owns one microVM session (QEMU and its guest).
    #[command(name = "__vm-helper", hide = true)]
    VmHelper { session_dir: PathBuf },
    /// Internal: runs a command in a running microVM session, through its
    /// helper.
    #[command(name = "__vm-exec", hide = true)]
    VmExec {
        session_dir: PathBuf,
        #[arg(long)]
        tty: bool,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Internal: serves the listeners the native helper planted in an
    /// allowlist session's network namespace (descriptors 3 and up).
    #[command(name = "__egress", hide = true)]
    Egress {
        /// Where `egress.json` is.
        session_dir: PathBuf,
        #[arg(long)]
        ready_fd: i32,
        /// A descriptor to keep open while serving (the Docker backend's
        /// netns holder ends when it closes).
        #[arg(long)]
        hold_fd: Option<i32>,
    },
    /// Internal: in the Docker backend's netns holder container, makes the
    /// allowlist listeners in its network namespace, sends them to the
    /// launcher over a unix socket, and stays until that closes.
    #[command(name = "__egress-plant", hide = true)]
    EgressPlant {
        #[arg(long)]
        send_to: PathBuf,
        /// The transparent ports, comma-separated.
        #[arg(long, value_delimiter = ',')]
        ports: Vec<u16>,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address and port to listen on. Any address but loopback needs users
    /// (`agentctl admin user add`) and TLS (`--tls-cert`/`--tls-key`, or
    /// `--behind-proxy`).
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: String,
    /// A host name (or address) browsers use for this server, answered on
    /// top of loopback names, the listening address and this host's name.
    /// Requests naming any other host are refused (DNS rebinding).
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,
    /// The server's certificate (PEM, chain after it): serve HTTPS.
    #[arg(long, requires = "tls_key", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// A reverse proxy at this address terminates TLS: its
    /// X-Forwarded-For names clients, and cookies are marked Secure.
    #[arg(long, value_name = "ADDRESS", conflicts_with = "tls_cert")]
    pub behind_proxy: Option<std::net::IpAddr>,
    /// Serve plain HTTP on any address of this container: for the stack of
    /// `agentctl up`, whose private networks reach it and whose port is
    /// published on loopback only. Refused outside a container; users are
    /// still required.
    #[arg(long, conflicts_with_all = ["tls_cert", "behind_proxy"])]
    pub plain_http_in_container: bool,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// usr, dev or ops.
    #[arg(value_parser = ["usr", "dev", "ops"])]
    pub role: String,
    /// Build the stack's images again even when they exist.
    #[arg(long)]
    pub build: bool,
    /// Wait until every service is healthy (the default).
    #[arg(long, overrides_with = "no_wait")]
    pub wait: bool,
    /// Return once the containers are started.
    #[arg(long)]
    pub no_wait: bool,
    /// Seconds to wait for health before giving up.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Dashboard users.
    #[command(subcommand)]
    User(UserCommand),
    /// API tokens (`Authorization: Bearer …`).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user; the password is asked for (or read from stdin).
    Add {
        name: String,
        /// viewer (sees their own sessions), operator (also stops them),
        /// admin (sees and stops all, deletes ended ones, users).
        #[arg(long, default_value = "viewer")]
        role: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's password (their browser logins end).
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's role (their browser logins end).
    Role { name: String, role: String },
    /// Remove a user, their tokens and logins.
    Rm { name: String },
    /// List users.
    Ls {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token for a user; it is printed once.
    Create {
        #[arg(long)]
        user: String,
        /// What the token is for.
        #[arg(long, default_value = "")]
        label: String,
        /// What it may do within its user's role: read (look only), run
        /// (also start and stop sessions) or admin (everything the role
        /// allows). Required: a token carries only what it needs.
        #[arg(long, value_parser = parse_scope)]
        scope: store::Scope,
    },
    /// Revoke a token by its id.
    Revoke { id: String },
    /// List tokens (never their secrets).
    Ls {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn parse_scope(s: &str) -> Result<store::Scope, String> {
    s.parse().map_err(|e: store::StoreError| e.to_string())
}

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// Where clients connect: unix:///PATH or tcp://HOST:PORT.
    #[arg(long, required_unless_present = "list_operations")]
    pub listen: Option<String>,
    /// The Docker daemon [default: DOCKER_HOST, or unix:///var/run/docker.sock].
    #[arg(long)]
    pub upstream: Option<String>,
    /// A built-in role (launcher, logs-reader, session), or the name given
    /// to the role read from --rules.
    #[arg(long, required_unless_present_any = ["rules", "list_operations"])]
    pub role: Option<String>,
    /// A role file (YAML) to use instead of a built-in role.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// The session whose objects the `session` role serves.
    #[arg(long, requires = "workspace")]
    pub session: Option<String>,
    /// The session's workspace: the only place binds may come from.
    #[arg(long, requires = "session")]
    pub workspace: Option<PathBuf>,
    /// The profile whose limits, network and secret rules the session's
    /// containers are held to.
    #[arg(long, default_value = "generic")]
    pub profile: String,
    /// Override the profile's network for the session's containers.
    #[arg(long, value_enum)]
    pub network: Option<Network>,
    /// Largest request body accepted, in bytes (a larger one gets 413).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_body: u64,
    /// Every bind source must be this directory or under it (once symlinks
    /// are resolved, in the proxy's view), on top of the role's rules;
    /// `/dev/null` excepted. Repeatable. For a proxy in a container, which
    /// can judge a host path only where it is mounted at the same place.
    #[arg(long = "bind-root", value_name = "DIR")]
    pub bind_roots: Vec<PathBuf>,
    /// Also serve Prometheus metrics (GET /metrics) here: tcp://HOST:PORT
    /// (or unix:///PATH).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Print the operation names roles can allow, and exit.
    #[arg(long)]
    pub list_operations: bool,
    /// Internal: the session scope as JSON, written by `agentctl run`.
    #[arg(long, hide = true)]
    pub scope_file: Option<PathBuf>,
    /// Internal: write this file once listening (for `agentctl run`).
    #[arg(long, hide = true)]
    pub ready_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// Daemonless, through libcontainer (the default).
    Native,
    /// The Docker Engine at DOCKER_HOST or the default socket.
    Docker,
    /// A QEMU microVM with its own kernel (KVM when usable, TCG otherwise).
    Vm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Network {
    None,
    Bridge,
    Host,
    /// Only the profile's allow rules and those of --allow.
    Allowlist,
}

impl From<Network> for NetworkMode {
    fn from(n: Network) -> NetworkMode {
        match n {
            Network::None => NetworkMode::None,
            Network::Bridge => NetworkMode::Bridge,
            Network::Host => NetworkMode::Host,
            Network::Allowlist => NetworkMode::Allowlist,
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
    /// Allow one more destination (HOST, HOST:PORT, *.DOMAIN, http://HOST,
    /// CIDR:PORT), on top of the profile's allowlist; implies
    /// --network allowlist.
    #[arg(long, value_name = "RULE")]
    pub allow: Vec<String>,
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
    /// Allow your home directory (or ~/.config, ~/.local) as the workspace.
    /// The agent can then write ~/.bashrc, ~/.local/bin and ~/.config, which
    /// run on the host the next time you open a shell or log in.
    #[arg(long)]
    pub allow_home_workspace: bool,
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
    /// Which sandbox implementation runs the session [default: native; with
    /// --server, any the workers run].
    #[arg(long, value_enum, env = "AGENTCTL_BACKEND")]
    pub backend: Option<BackendKind>,
    /// With --server: clone this repository (https or ssh) into a fresh
    /// workspace on the worker, with the worker's credentials.
    #[arg(long, value_name = "URL", conflicts_with = "workspace")]
    pub git: Option<String>,
    /// With --git: the branch or tag.
    #[arg(long, requires = "git")]
    pub rev: Option<String>,
    /// With --server: run only on a worker with this label (KEY=VALUE;
    /// repeat for more).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Run without pids, memory and cpu limits (when the host cannot apply
    /// them, e.g. no delegated cgroup).
    #[arg(long)]
    pub no_limits: bool,
    /// The vm backend's acceleration: KVM when this host has hardware
    /// virtualisation (auto), or QEMU's software emulation (tcg).
    #[arg(long, value_enum, env = "AGENTCTL_VM_ACCEL")]
    pub accel: Option<AccelArg>,
    /// Do not allocate a terminal even when stdin and stdout are terminals.
    #[arg(long)]
    pub no_tty: bool,
    /// No summary line on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Start the session in the background and print its id.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// The command to run, after `--` [default: /bin/sh].
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Which backend runs the sessions this worker takes.
    #[arg(long, value_enum, default_value = "native")]
    pub backend: BackendKind,
    /// Sessions at once [default: the number of CPUs].
    #[arg(long)]
    pub capacity: Option<u32>,
    /// Labels requests can ask for (KEY=VALUE, comma-separated or
    /// repeated); `backend` is always one.
    #[arg(long = "labels", value_name = "KEY=VALUE", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// The worker's name in the dashboard [default: the host name].
    #[arg(long)]
    pub name: Option<String>,
    /// Its identity, clones and job logs [default:
    /// /var/lib/agentctl/worker for root, otherwise
    /// $XDG_DATA_HOME/agentctl/worker].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where git workspaces are cloned, one directory per request; outside
    /// agentctl's own state [default: /var/lib/agentctl-clones for root,
    /// otherwise $XDG_DATA_HOME/agentctl-clones].
    #[arg(long, value_name = "DIR")]
    pub clone_root: Option<PathBuf>,
    /// Where users' workspaces may be: DIR gives each user DIR/<user>;
    /// USER=DIR gives one user DIR. Repeat for more.
    #[arg(long = "workspace-root", value_name = "DIR|USER=DIR")]
    pub workspace_roots: Vec<String>,
    /// An SSH key (a deploy key) for cloning ssh URLs.
    #[arg(long, value_name = "PATH")]
    pub git_ssh_key: Option<PathBuf>,
    /// A git credential helper for cloning https URLs.
    #[arg(long, value_name = "HELPER")]
    pub git_credential_helper: Option<String>,
    /// A transport git may clone over (https and ssh unless given; repeat).
    #[arg(long = "git-protocol", value_name = "NAME")]
    pub git_protocols: Vec<String>,
    /// Seconds without a heartbeat after which other workers declare this
    /// one gone (its sessions lost, its claims back in the queue).
    #[arg(long, default_value_t = 15)]
    pub heartbeat_timeout: u64,
    /// The image of sessions whose request and profile name none. A Docker
    /// worker whose engine is reached over the network (DOCKER_HOST=tcp://…,
    /// as in the stack of `agentctl up`) needs one: that engine cannot give
    /// a session this host's root.
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// Serve the worker's metrics (Prometheus text) at
    /// http://ADDRESS/metrics; it answers once the worker is registered.
    #[arg(long, value_name = "ADDRESS:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Tell the worker of this data directory to take no more work and to
    /// exit when its sessions end; wait for it.
    #[arg(long)]
    pub drain: bool,
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
pub struct DoctorArgs {
    /// One JSON object: the user, the kernel, and each finding (check,
    /// needed_for, ok, detail, fix).
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

#[derive(Args, Debug)]
pub struct PsArgs {
    /// All sessions, not only live ones.
    #[arg(long, short = 'a')]
    pub all: bool,
    #[arg(long)]
    pub json: bool,
    /// List sandboxes that carry agentctl's marks but no session record.
    #[arg(long)]
    pub orphans: bool,
    /// At most this many sessions.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}
