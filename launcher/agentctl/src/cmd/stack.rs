//! `agentctl up|down|status|logs SERVICE`: the self-hosted stack. The
//! `stack` crate knows the files, the `.env` and the tools; this module
//! adds what needs the rest of agentctl: this binary as the stack's image,
//! the first admin in the store, and the agent image.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use stack::compose::{self, Compose};
use stack::docker::{self, Container};
use stack::envfile::{self, StackEnv};
use stack::services::{self, Collector, Role};

use crate::cli::UpArgs;

/// The label that ties the agentctl image to the binary it was built from.
const BINARY_LABEL: &str = "io.agentctl.binary-sha256";
const DEFAULT_BASE: &str = "debian:bookworm-slim";

/// The stack's directory, its `.env` and its Compose.
struct Stack {
    dir: PathBuf,
    env: StackEnv,
    compose: Compose,
}

impl Stack {
    /// An existing stack (for down, status, logs).
    fn existing() -> Result<Stack> {
        let dir = stack::default_dir();
        let path = dir.join(".env");
        if !path.exists() {
            bail!(
                "no stack at {} (no .env); start one with agentctl up usr|dev|ops, or point AGENTCTL_STACK_DIR at it",
                dir.display()
            );
        }
        let env = envfile::read(&path)?;
        let compose = Compose::new(compose::detect()?, &dir, env.project());
        Ok(Stack { dir, env, compose })
    }

    fn collector(&self) -> Result<Collector> {
        let v = self.env.or("AGENTCTL_LOG_COLLECTOR", "alloy");
        Collector::parse(v).with_context(|| {
            format!(
                "{}: AGENTCTL_LOG_COLLECTOR={v}: give alloy, standin or none",
                self.env.path.display()
            )
        })
    }

    fn url(&self) -> Result<String> {
        Ok(format!(
            "http://{}/",
            host_port(
                self.env.or("AGENTCTL_BIND_ADDRESS", "127.0.0.1"),
                self.env.port("AGENTCTL_DASHBOARD_PORT", 7878)?
            )
        ))
    }

    fn store_url(&self, redacted: bool) -> Result<String> {
        let password = if redacted {
            "***"
        } else {
            self.env.require("POSTGRES_PASSWORD")?
        };
        Ok(format!(
            "postgres://agentctl:{password}@{}/agentctl",
            host_port(
                self.env.or("AGENTCTL_BIND_ADDRESS", "127.0.0.1"),
                self.env.port("AGENTCTL_POSTGRES_PORT", 7879)?
            )
        ))
    }
}

fn host_port(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

pub fn up(args: UpArgs) -> Result<u8> {
    let started = Instant::now();
    let role = Role::parse(&args.role).context("the role")?;
    let dir = stack::default_dir();
    create_private_dir(&dir)?;
    stack::files::write_all(&dir)?;

    let (uid, gid) = workspace_owner();
    let seed: BTreeMap<String, String> = envfile::SEEDED
        .iter()
        .chain(["AGENTCTL_STACK_NAME"].iter())
        .filter_map(|k| {
            let v = std::env::var(k).ok().filter(|v| !v.is_empty())?;
            let key = if *k == "AGENTCTL_STACK_NAME" {
                "COMPOSE_PROJECT_NAME"
            } else {
                k
            };
            Some((key.to_string(), v))
        })
        .collect();
    let (env, made) = envfile::load_or_create(&dir, uid, gid, new_secrets, &seed)?;
    if made {
        eprintln!(
            "agentctl up: wrote {} (mode 0600): the Postgres password, and the first admin's password and API token",
            env.path.display()
        );
    }
    // Before anything changes: what is missing or taken is said now.
    let engine = docker::engine()?;
    let tool = compose::detect()?;
    let stack = Stack {
        compose: Compose::new(tool, &dir, env.project()),
        dir,
        env,
    };
    let collector = stack.collector()?;
    let bind = stack.env.or("AGENTCTL_BIND_ADDRESS", "127.0.0.1");
    let bind_ip: std::net::IpAddr = bind.parse().with_context(|| {
        format!(
            "{}: AGENTCTL_BIND_ADDRESS={bind} is not an IP address",
            stack.env.path.display()
        )
    })?;
    if !bind_ip.is_loopback() {
        bail!(
            "{}: AGENTCTL_BIND_ADDRESS={bind}: the stack serves plain HTTP, so it publishes its ports on loopback only; reach it from elsewhere through an SSH tunnel (ssh -L 7878:127.0.0.1:7878 THIS-HOST) or a TLS-terminating reverse proxy on this host",
            stack.env.path.display()
        );
    }
    let wanted = services::of(role, collector);
    let before = docker::containers(stack.env.project())?;
    check_ports(&stack, &wanted, &before, bind_ip)?;
    let was_up = before.iter().any(|c| c.state == "running");
    eprintln!(
        "agentctl up {}: engine {engine}, {}, stack {} in {}",
        role.name(),
        tool.name(),
        stack.env.project(),
        stack.dir.display()
    );

    prepare_dirs(&stack.env)?;
    images(&stack, role, collector, args.build)?;

    // From here on the stack changes; a failure stops what this call
    // started when nothing was running before, keeping its containers
    // (and their logs) and every volume.
    let profiles = services::profiles(role, collector);
    let result = (|| -> Result<bool> {
        if std::env::var_os("AGENTCTL_TEST_UP_POSTGRES_ONLY").is_some() {
            // A test's stop: the upgrade test writes the store as an
            // earlier agentctl would before this version touches it.
            stack.compose.run(&profiles, &["up", "-d", "postgres"])?;
            wait_healthy(
                &stack,
                &[&services::SERVICES[0]],
                Duration::from_secs(args.timeout),
            )?;
            return Ok(false);
        }
        // One Compose call starts everything in the file's order: the
        // dashboard and the worker once Postgres is healthy. The dashboard
        // then waits for its first user, which is added here as soon as
        // Postgres answers, with the store brought up to date.
        if let Err(e) = stack
            .compose
            .run(&profiles, &["up", "-d", "--remove-orphans"])
        {
            // Compose gives up on a service that failed its healthcheck;
            // say which, with what it said, when one did.
            if let Some(why) = failed_service(&stack, &wanted)? {
                return Err(why);
            }
            return Err(e.into());
        }
        let first = bootstrap(&stack, Duration::from_secs(args.timeout))?;
        let store = stack.store_url(false)?;
        write_private(&stack.dir.join(stack::STORE_MARKER), &format!("{store}\n"))?;
        if !args.no_wait {
            wait_healthy(&stack, &wanted, Duration::from_secs(args.timeout))?;
        }
        Ok(first)
    })();
    let first = match result {
        Ok(_) if std::env::var_os("AGENTCTL_TEST_UP_POSTGRES_ONLY").is_some() => {
            eprintln!("agentctl up: postgres only (AGENTCTL_TEST_UP_POSTGRES_ONLY)");
            return Ok(0);
        }
        Ok(first) => first,
        Err(e) => {
            if !was_up {
                let _ = stack
                    .compose
                    .run(services::ALL_PROFILES, &["stop", "-t", "10"]);
                let _ = std::fs::remove_file(stack.dir.join(stack::STORE_MARKER));
                eprintln!(
                    "agentctl up: stopped what this call started; its containers stay for `agentctl logs SERVICE`, and every volume is kept"
                );
            }
            return Err(e);
        }
    };

    eprintln!(
        "agentctl up {}: {} in {:.1} s",
        role.name(),
        if args.no_wait { "started" } else { "ready" },
        started.elapsed().as_secs_f64()
    );
    println!("{}", stack.url()?);
    eprintln!("  dashboard   {}", stack.url()?);
    eprintln!(
        "  store       {} (agentctl on this host records here while the stack is up)",
        stack.store_url(true)?
    );
    if role == Role::Ops {
        eprintln!(
            "  prometheus  http://{}/",
            host_port(bind, stack.env.port("AGENTCTL_PROMETHEUS_PORT", 9090)?)
        );
    }
    if first {
        eprintln!(
            "\nLog in to the dashboard as {} with AGENTCTL_ADMIN_PASSWORD from {}.\n\
             For the CLI: AGENTCTL_SERVER={} and AGENTCTL_TOKEN from that file (or agentctl --server {} login).",
            stack.env.or("AGENTCTL_ADMIN_USER", "admin"),
            stack.env.path.display(),
            stack.url()?.trim_end_matches('/'),
            stack.url()?.trim_end_matches('/'),
        );
    }
    Ok(0)
}

pub fn down(volumes: bool, yes: bool) -> Result<u8> {
    let stack = Stack::existing()?;
    let project = stack.env.project().to_string();
    if volumes {
        let mut ls = docker::docker();
        ls.args(["volume", "ls", "-q", "--filter"])
            .arg(format!("label=com.docker.compose.project={project}"));
        let out = ls.output().context("cannot run docker volume ls")?;
        let vols: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect();
        if !vols.is_empty() {
            eprintln!("agentctl down -v deletes these volumes of stack {project}:");
            for v in &vols {
                let what = if v.ends_with("_pgdata") {
                    "the database: every session, its output and audit trail, every user and token"
                } else if v.ends_with("_promdata") {
                    "Prometheus' data"
                } else {
                    "data of the stack"
                };
                eprintln!("  {v}  ({what})");
            }
            eprintln!(
                "The workspaces under {} and the .env stay.",
                stack
                    .env
                    .or("AGENTCTL_WORKSPACES", "the workspaces directory")
            );
            if !yes {
                if !std::io::stdin().is_terminal() {
                    bail!("not deleting them without --yes (stdin is not a terminal to ask on)");
                }
                eprint!("Type yes to delete them: ");
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                if line.trim() != "yes" {
                    eprintln!("agentctl down: nothing was changed");
                    return Ok(1);
                }
            }
        }
    }
    let mut args = vec!["down", "--remove-orphans"];
    if volumes {
        args.push("-v");
    }
    stack.compose.run(services::ALL_PROFILES, &args)?;
    let _ = std::fs::remove_file(stack.dir.join(stack::STORE_MARKER));
    let left = docker::containers(&project)?;
    if !left.is_empty() {
        bail!(
            "containers of stack {project} are still there: {}",
            left.iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    eprintln!(
        "agentctl down: stack {project} stopped{}",
        if volumes {
            ", its volumes deleted"
        } else {
            "; its data is kept (down -v deletes it)"
        }
    );
    Ok(0)
}

pub fn status(json: bool) -> Result<u8> {
    let stack = Stack::existing()?;
    let list = docker::containers(stack.env.project())?;
    let up = list.iter().any(|c| c.state == "running");
    let healthy = up && list.iter().all(|c| c.state != "running" || c.healthy());
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "project": stack.env.project(),
                "dir": stack.dir,
                "url": if up { Some(stack.url()?) } else { None },
                "healthy": healthy,
                "services": list,
            }))?
        );
    } else if list.is_empty() {
        println!(
            "stack {} is down ({})",
            stack.env.project(),
            stack.dir.display()
        );
    } else {
        println!("{:<14} {:<11} {:<10} PORTS", "SERVICE", "STATE", "HEALTH");
        for c in &list {
            println!(
                "{:<14} {:<11} {:<10} {}",
                c.service,
                c.state,
                if c.health.is_empty() { "-" } else { &c.health },
                c.ports.join(", ")
            );
        }
        if up {
            println!("dashboard: {}", stack.url()?);
        }
    }
    Ok(if healthy { 0 } else { 1 })
}

pub fn logs(service: &str, follow: bool) -> Result<u8> {
    let stack = Stack::existing()?;
    let list = docker::containers(stack.env.project())?;
    let Some(c) = list.iter().find(|c| c.service == service) else {
        bail!(
            "the stack {} has no {service} container; agentctl status lists what runs",
            stack.env.project()
        );
    };
    let mut cmd = docker::docker();
    cmd.arg("logs");
    if follow {
        cmd.arg("-f");
    }
    let status = cmd.arg(&c.id).status().context("cannot run docker logs")?;
    Ok(if status.success() { 0 } else { 1 })
}

/// A container healthcheck: GET `url`, success on 2xx. In the images,
/// which have no curl.
pub fn probe(url: &str) -> Result<u8> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(4)))
        .http_status_as_error(false)
        .build()
        .new_agent();
    let resp = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let code = resp.status().as_u16();
    if (200..300).contains(&code) {
        Ok(0)
    } else {
        eprintln!("GET {url}: {code}");
        Ok(1)
    }
}

fn new_secrets() -> Result<envfile::Secrets, stack::StackError> {
    let hex = |n| {
        web::auth::random_hex(n).map_err(|e| stack::StackError::Tool(format!("no randomness: {e}")))
    };
    let token = web::auth::new_token()
        .map_err(|e| stack::StackError::Tool(format!("cannot make a token: {e}")))?;
    Ok(envfile::Secrets {
        postgres_password: hex(24)?,
        admin_password: hex(16)?,
        admin_token: token.token,
    })
}

/// Who owns the workspaces (and so the files agents write): the user who
/// runs `up`, or for root an unprivileged id of the image's.
fn workspace_owner() -> (u32, u32) {
    let uid = nix::unistd::getuid().as_raw();
    if uid == 0 {
        (10001, 10001)
    } else {
        (uid, nix::unistd::getgid().as_raw())
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// A new file with `text`, mode 0600, renamed over any old one.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The workspaces (clones, and `shared` for path requests) and the
/// worker's state, owned by the workspaces' owner; the metrics token.
fn prepare_dirs(env: &StackEnv) -> Result<()> {
    let uid: u32 = env
        .require("AGENTCTL_UID")?
        .parse()
        .with_context(|| format!("{}: AGENTCTL_UID is not a number", env.path.display()))?;
    let gid: u32 = env
        .require("AGENTCTL_GID")?
        .parse()
        .with_context(|| format!("{}: AGENTCTL_GID is not a number", env.path.display()))?;
    let stack_dir = PathBuf::from(env.require("AGENTCTL_STACK_DIR")?);
    let workspaces = PathBuf::from(env.require("AGENTCTL_WORKSPACES")?);
    for (d, mode) in [
        (workspaces.clone(), 0o755),
        (workspaces.join("clones"), 0o700),
        (workspaces.join("shared"), 0o755),
        // The worker's --workspace-root gives each user shared/USER.
        (
            workspaces
                .join("shared")
                .join(env.or("AGENTCTL_ADMIN_USER", "admin")),
            0o755,
        ),
        (stack_dir.join("worker"), 0o700),
    ] {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(&d)
            .with_context(|| format!("cannot create {}", d.display()))?;
        if nix::unistd::getuid().is_root() {
            nix::unistd::chown(
                &d,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .with_context(|| format!("cannot chown {}", d.display()))?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode))?;
        }
    }
    // The worker's own state follows AGENTCTL_UID if it changed (its id
    // file is 0600); workspaces are the user's data and stay as they are.
    if nix::unistd::getuid().is_root() {
        chown_tree(&stack_dir.join("worker"), uid, gid)?;
    }
    // Prometheus reads the dashboard's metrics with this read-only token;
    // the file is bound alone into its container (the directory stays
    // private).
    let secrets = stack_dir.join("secrets");
    create_private_dir(&secrets)?;
    let token_file = secrets.join("prometheus-token");
    if !token_file.exists() {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let t = web::auth::new_token().context("cannot make a token")?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&token_file)
            .with_context(|| format!("cannot create {}", token_file.display()))?;
        f.write_all(t.token.as_bytes())?;
    }
    Ok(())
}

/// `chown -hR`: symlinks themselves, never what they point at.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    let (u, g) = (
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    );
    nix::unistd::fchownat(None, dir, u, g, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .with_context(|| format!("cannot chown {}", dir.display()))?;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            chown_tree(&path, uid, gid)?;
        } else {
            nix::unistd::fchownat(None, &path, u, g, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                .with_context(|| format!("cannot chown {}", path.display()))?;
        }
    }
    Ok(())
}

/// Every published port of a service that is not running yet must be free
/// now: checked before anything starts, so a taken port changes nothing.
fn check_ports(
    stack: &Stack,
    wanted: &[&services::Service],
    running: &[Container],
    bind: std::net::IpAddr,
) -> Result<()> {
    for s in wanted {
        let Some((key, default)) = s.port else {
            continue;
        };
        if running
            .iter()
            .any(|c| c.service == s.name && c.state == "running")
        {
            continue;
        }
        let port = stack.env.port(key, default)?;
        if let Err(e) = std::net::TcpListener::bind((bind, port)) {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                return Err(stack::StackError::PortInUse {
                    service: s.name.to_string(),
                    address: bind.to_string(),
                    port,
                    key: key.to_string(),
                    env: stack.env.path.clone(),
                }
                .into());
            }
            return Err(e).with_context(|| format!("cannot check port {port} on {bind}"));
        }
    }
    Ok(())
}

/// The images the role needs: agentctl's from this very binary (again
/// when the binary changed), and Postgres, Prometheus and the log
/// stand-in from Debian's packages unless the `.env` names other images;
/// the agent image the worker runs sessions in.
fn images(stack: &Stack, role: Role, collector: Collector, rebuild: bool) -> Result<()> {
    let env = &stack.env;
    let base = env.or("AGENTCTL_BASE_IMAGE", DEFAULT_BASE);
    let images_dir = stack.dir.join("images");

    let exe = std::env::current_exe().context("cannot find this binary")?;
    let sha = binary_sha256(&exe, &stack.dir.join("build/agentctl.sha256"))?;
    let tag = env.or("AGENTCTL_IMAGE", "agentctl/agentctl:latest");
    let have = docker::image_label(tag, BINARY_LABEL)?;
    if rebuild || have.as_deref() != Some(sha.as_str()) {
        let t = Instant::now();
        eprintln!(
            "agentctl up: building {tag} from {} ({})",
            exe.display(),
            match have {
                None => "no such image yet",
                Some(_) if rebuild => "--build",
                Some(_) => "it was built from another binary",
            }
        );
        let context = stack.dir.join("build/agentctl");
        std::fs::create_dir_all(context.join("dist"))?;
        let dist = context.join("dist/agentctl");
        let _ = std::fs::remove_file(&dist);
        std::fs::copy(&exe, &dist)
            .with_context(|| format!("cannot copy {} to {}", exe.display(), dist.display()))?;
        // A debug build carries hundreds of megabytes of symbols no
        // container needs; without binutils the image is just larger.
        let _ = std::process::Command::new("strip")
            .arg("--strip-debug")
            .arg(&dist)
            .stderr(std::process::Stdio::null())
            .status();
        let built = docker::build(
            &images_dir.join("agentctl/Dockerfile"),
            &context,
            tag,
            &[("BUILDER", base), ("BASE", base)],
            &[(BINARY_LABEL, &sha)],
        );
        let _ = std::fs::remove_file(&dist);
        built?;
        eprintln!(
            "agentctl up: built {tag} in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }

    let mut ours = vec![("POSTGRES_IMAGE", "agentctl/postgres:15", "postgres")];
    if role == Role::Ops {
        ours.push((
            "PROMETHEUS_IMAGE",
            "agentctl/prometheus:latest",
            "prometheus",
        ));
        if collector == Collector::Standin {
            ours.push((
                "LOG_STANDIN_IMAGE",
                "agentctl/log-standin:latest",
                "log-standin",
            ));
        }
    }
    for (key, default, dir) in ours {
        // Another image named in .env is the user's to provide (Compose
        // pulls it).
        if env.get(key).is_some_and(|v| v != default) {
            continue;
        }
        if rebuild || !docker::image_exists(default)? {
            let t = Instant::now();
            eprintln!("agentctl up: building {default} on {base}");
            docker::build(
                &images_dir.join(dir).join("Dockerfile"),
                &images_dir.join(dir),
                default,
                &[("BASE", base)],
                &[],
            )?;
            eprintln!(
                "agentctl up: built {default} in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
    }

    if role != Role::Usr {
        let agent = env.or("AGENTCTL_AGENT_IMAGE", "agentctl/agent-base:latest");
        if agent == "agentctl/agent-base:latest" && !docker::image_exists(agent)? {
            let t = Instant::now();
            eprintln!("agentctl up: building {agent}, the image the worker's sessions run in");
            super::wiring::host_backends()
                .docker()
                .build_image("agent-base", Some(base), false)
                .context("cannot build the agent image")?;
            eprintln!(
                "agentctl up: built {agent} in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

/// The binary's sha256, remembered in `cache` with its device, inode,
/// size and change time: hashing a debug build takes a second `up` need
/// not spend when the binary is the one it hashed before.
fn binary_sha256(path: &Path, cache: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let key = format!(
        "{} {} {} {}.{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.ctime(),
        m.ctime_nsec()
    );
    if let Ok(text) = std::fs::read_to_string(cache)
        && let Some((k, sha)) = text.trim().rsplit_once(' ')
        && k == key
        && sha.len() == 64
    {
        return Ok(sha.to_string());
    }
    let sha = file_sha256(path)?;
    if let Some(dir) = cache.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = write_private(cache, &format!("{key} {sha}\n"));
    Ok(sha)
}

fn file_sha256(path: &Path) -> Result<String> {
    use sha2::Digest;
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Waits until every service of `wanted` is running and healthy, saying
/// each change as it comes. A service that exits, restarts or turns
/// unhealthy is an error naming it, with its last check and log lines.
fn wait_healthy(stack: &Stack, wanted: &[&services::Service], timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let list = docker::glance(stack.env.project())?;
        let mut ready = 0;
        for s in wanted {
            let Some(c) = list.iter().find(|c| c.service == s.name) else {
                continue;
            };
            let now = if c.health.is_empty() {
                c.state.clone()
            } else {
                format!("{} ({})", c.state, c.health)
            };
            if seen.get(s.name) != Some(&now) {
                eprintln!(
                    "  {:<13} {now:<22} {:>5.1} s",
                    s.name,
                    start.elapsed().as_secs_f64()
                );
                seen.insert(s.name.to_string(), now);
            }
            if failure_reason(c).is_some() {
                // Again in full: its exit code and last check.
                if let Some(why) = failed_service(stack, &[s])? {
                    return Err(why);
                }
            }
            if c.healthy() {
                ready += 1;
            }
        }
        if ready == wanted.len() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            let waiting: Vec<&str> = wanted
                .iter()
                .filter(|s| !list.iter().any(|c| c.service == s.name && c.healthy()))
                .map(|s| s.name)
                .collect();
            bail!(
                "{} not healthy after {} s; see agentctl status and agentctl logs SERVICE (or give --timeout)",
                waiting.join(", "),
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What went wrong with a service's container, if anything did: exited,
/// restarting, or unhealthy, with its last check and log lines.
fn failure(stack: &Stack, service: &str, c: &Container) -> Option<anyhow::Error> {
    let why = failure_reason(c)?;
    Some(anyhow::anyhow!(
        "service {service} {why}. Its last log lines:\n{}\nSee agentctl logs {service}; fix what it says (a setting in {}), then run agentctl up again",
        indent(&docker::log_tail(&c.id, 15)),
        stack.env.path.display()
    ))
}

fn failure_reason(c: &Container) -> Option<String> {
    Some(match c.state.as_str() {
        "exited" | "dead" => format!("exited with code {}", c.exit_code),
        "restarting" => format!("keeps restarting (last exit code {})", c.exit_code),
        _ if c.health == "unhealthy" => {
            format!("is unhealthy: its healthcheck said {:?}", c.last_check)
        }
        _ => return None,
    })
}

/// The first service of `wanted` whose container failed.
fn failed_service(stack: &Stack, wanted: &[&services::Service]) -> Result<Option<anyhow::Error>> {
    let list = docker::containers(stack.env.project())?;
    Ok(wanted.iter().find_map(|s| {
        list.iter()
            .find(|c| c.service == s.name)
            .and_then(|c| failure(stack, s.name, c))
    }))
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Brings the stack's store up to date and, when it has no users yet,
/// adds the first admin (password and token from `.env`) and the read-only
/// token Prometheus scrapes with. True when it added them.
fn bootstrap(stack: &Stack, timeout: Duration) -> Result<bool> {
    let url = stack.store_url(false)?;
    let env = &stack.env;
    let admin = env.or("AGENTCTL_ADMIN_USER", "admin").to_string();
    let password = env.require("AGENTCTL_ADMIN_PASSWORD")?.to_string();
    let token = env.require("AGENTCTL_TOKEN")?.to_string();
    let token_id = token
        .strip_prefix("agt_")
        .and_then(|t| t.split_once('_'))
        .map(|(id, _)| id.to_string())
        .with_context(|| {
            format!(
                "{}: AGENTCTL_TOKEN is not an agentctl token (agt_ID_SECRET)",
                env.path.display()
            )
        })?;
    let metrics_token_file = stack.dir.join("secrets/prometheus-token");
    let metrics_token = std::fs::read_to_string(&metrics_token_file)
        .with_context(|| format!("cannot read {}", metrics_token_file.display()))?;
    let metrics_token = metrics_token.trim().to_string();
    let metrics_id = metrics_token
        .strip_prefix("agt_")
        .and_then(|t| t.split_once('_'))
        .map(|(id, _)| id.to_string())
        .with_context(|| format!("{} is not an agentctl token", metrics_token_file.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Postgres may still be starting (a first start initialises its
        // cluster); the published port answers a moment after it is up.
        let start = std::time::Instant::now();
        let store = loop {
            match store::SessionStore::connect(&url).await {
                Ok(s) => break s,
                Err(e) if start.elapsed() < timeout => {
                    tracing::debug!("the stack's store is not there yet: {e}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "cannot open the stack's store {}",
                        stack.store_url(true)?
                    )));
                }
            }
        };
        if store.has_users().await? {
            store.close().await;
            return Ok(false);
        }
        let now = store::now_ms();
        let actor = "agentctl up";
        let hash = web::auth::hash_password(&password).context("the admin's password")?;
        store
            .add_user(&admin, store::Role::Admin, &hash, now)
            .await?;
        super::admin::trail(
            &store,
            actor,
            "user_added",
            &admin,
            serde_json::json!({"role": "admin"}),
            now,
        )
        .await;
        add_token(
            &store,
            &token,
            &token_id,
            &admin,
            "agentctl up",
            store::Scope::Admin,
            now,
        )
        .await?;
        // Prometheus: a viewer that can only look.
        let hash = web::auth::hash_password(&web::auth::random_hex(16)?)?;
        store
            .add_user("prometheus", store::Role::Viewer, &hash, now)
            .await?;
        add_token(
            &store,
            &metrics_token,
            &metrics_id,
            "prometheus",
            "metrics",
            store::Scope::Read,
            now,
        )
        .await?;
        store.close().await;
        anyhow::Ok(true)
    })
}

/// A token whose secret `.env` or `secrets/` already holds, on the
/// accounts' trail as `agentctl admin token create` puts it.
async fn add_token(
    store: &store::SessionStore,
    token: &str,
    id: &str,
    user: &str,
    label: &str,
    scope: store::Scope,
    now: i64,
) -> Result<()> {
    store
        .add_token(id, user, label, scope, &web::auth::sha256_hex(token), now)
        .await?;
    super::admin::trail(
        store,
        "agentctl up",
        "token_created",
        id,
        serde_json::json!({"user": user, "scope": scope}),
        now,
    )
    .await;
    Ok(())
}
