//! The Docker socket of a `docker: true` session: agentctl's proxy as a
//! child process, its scope worked out from the plan, and its denials on
//! the session's record.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use docker_proxy::{AuditEvent, ChildLimits, SessionScope};
use serde_json::json;

use crate::context::Lifecycle;
use crate::error::{Error, Result};
use crate::location::StoreLocation;

const SOCKET_IN_SANDBOX: &str = "/var/run/docker.sock";

/// Works out a session's scope from its plan: what `agentctl run` does
/// for `docker: true` profiles, and `proxy --session` by hand.
pub fn scope_from_plan(spec: &sandbox::SandboxSpec) -> Result<SessionScope> {
    let masked: Vec<PathBuf> = spec
        .masked
        .iter()
        .filter(|m| m.path.starts_with(&spec.workspace))
        .map(|m| m.path.clone())
        .collect();
    let limits = ChildLimits {
        memory: i64::try_from(spec.limits.memory_bytes)
            .ok()
            .filter(|m| *m > 0),
        nano_cpus: Some(i64::from(spec.limits.cpu_millis) * 1_000_000).filter(|c| *c > 0),
        pids: Some(i64::from(spec.limits.pids)).filter(|p| *p > 0),
        containers: Some(spec.limits.containers),
    };
    let read_only = spec
        .host_run
        .iter()
        .filter(|f| f.host.starts_with(&spec.workspace))
        .map(|f| f.host.clone())
        .collect();
    let workspace_writable = spec
        .mounts
        .iter()
        .any(|m| m.purpose == sandbox::spec::MountPurpose::Workspace && m.writable);
    Ok(SessionScope::new(
        spec.session.to_string(),
        &spec.workspace,
        masked,
        limits,
        spec.network,
    )
    .map_err(|e| Error::Proxy(e.to_string()))?
    .with_read_only(read_only, workspace_writable))
}

/// Denials go to the session's audit trail, in order, from one task, so a
/// burst of denials never blocks a connection on the store. Call from
/// inside a tokio runtime.
pub fn denials_to_record(store: StoreLocation, session: String) -> docker_proxy::AuditSink {
    let record = events_to_record(store, session);
    Arc::new(move |ev: AuditEvent| {
        record(store::NewEvent::new("proxy_denied").data(json!({
            "operation": ev.operation,
            "role": ev.role,
            "reason": ev.reason,
        })))
    })
}

/// Events go to the session's audit trail, in order, from one task that
/// opens the store on first use: the caller never waits on the store.
/// Call from inside a tokio runtime.
pub fn events_to_record(
    store: StoreLocation,
    session: String,
) -> Arc<dyn Fn(store::NewEvent) + Send + Sync> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<store::NewEvent>();
    tokio::spawn(async move {
        let mut db = None;
        while let Some(event) = rx.recv().await {
            if db.is_none() {
                match store.open().await {
                    Ok(s) => db = Some(s),
                    Err(e) => {
                        tracing::warn!("cannot record an event in the session store: {e}");
                        continue;
                    }
                }
            }
            let Some(s) = db.as_ref() else { continue };
            if let Err(e) = s.append_event(&session, event).await {
                tracing::warn!("cannot record an event in the session store: {e}");
            }
        }
    });
    Arc::new(move |ev| {
        let _ = tx.send(ev);
    })
}

/// The proxy of a `docker: true` session: a child process of its own
/// (its own process group, so a Ctrl-C meant for the agent does not take
/// the agent's Docker away mid-session), serving one socket that is bound
/// into the sandbox at /var/run/docker.sock.
pub struct SessionProxy {
    pid: i32,
    dir: PathBuf,
}

/// Where a session's proxy keeps its socket, scope, log and pid.
fn proxy_dir(runtime: &Path, id: &str) -> PathBuf {
    runtime.join("proxies").join(id)
}

impl SessionProxy {
    /// Starts the proxy and waits until it listens. Any failure refuses the
    /// session: an agent promised a Docker socket under a policy never gets
    /// one without it.
    pub fn start(lc: &Lifecycle, spec: &sandbox::SandboxSpec) -> Result<SessionProxy> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        use std::os::unix::process::CommandExt;
        let id = spec.session.to_string();
        let dir = proxy_dir(&lc.runtime, &id);
        let io = |what: &str, p: &Path| {
            let p = p.display().to_string();
            let what = what.to_string();
            move |e| Error::io(format!("cannot {what} {p}"), e)
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io("create", &dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("restrict", &dir))?;
        let scope = scope_from_plan(spec)?;
        let scope_file = dir.join("scope.json");
        let scope_json = serde_json::to_vec(&scope)
            .map_err(|e| Error::Internal(format!("cannot serialize the proxy's scope: {e}")))?;
        std::fs::write(&scope_file, scope_json).map_err(io("write", &scope_file))?;
        let sock = dir.join("docker.sock");
        let log_path = dir.join("proxy.log");
        let log = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&log_path)
            .map_err(io("create", &log_path))?;
        let mut child = std::process::Command::new(&lc.self_exe)
            .arg("--store")
            .arg(lc.store.0.as_deref().unwrap_or("none"))
            .args(["proxy", "--role", "session", "--listen"])
            .arg(format!("unix://{}", sock.display()))
            .arg("--scope-file")
            .arg(&scope_file)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io("cannot start the Docker proxy", e))?;
        let pid = child.id() as i32;
        let pid_file = dir.join("proxy.pid");
        let proxy = SessionProxy { pid, dir };
        if let Err(e) = std::fs::write(&pid_file, pid.to_string()) {
            proxy.stop(lc);
            return Err(Error::io(format!("cannot write {}", pid_file.display()), e));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let _ = std::fs::remove_dir_all(&proxy.dir);
                return Err(Error::Proxy(format!(
                    "the profile gives the agent Docker (`docker: true`), but the Docker proxy did not start ({status}): {}",
                    log.trim()
                )));
            }
            if std::time::Instant::now() > deadline {
                proxy.stop(lc);
                return Err(Error::Proxy(
                    "the Docker proxy did not listen within 15 s".into(),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(proxy)
    }

    /// Adds the socket's mount and DOCKER_HOST to the sandbox.
    pub fn attach(&self, spec: &mut sandbox::SandboxSpec) {
        spec.mounts.push(sandbox::spec::MountPlan {
            destination: PathBuf::from(SOCKET_IN_SANDBOX),
            source: sandbox::spec::MountSource::Bind {
                path: self.dir.join("docker.sock"),
                file: true,
            },
            writable: true,
            purpose: sandbox::spec::MountPurpose::Generated,
        });
        spec.env.retain(|e| e.name != "DOCKER_HOST");
        spec.env.push(sandbox::spec::EnvEntry {
            name: "DOCKER_HOST".into(),
            value: policy::env::Redacted(format!("unix://{SOCKET_IN_SANDBOX}")),
            source: policy::env::EnvSource::ProfileSet,
        });
    }

    /// Stops the proxy, which removes the session's containers, networks
    /// and volumes before it exits.
    pub fn stop(&self, lc: &Lifecycle) {
        stop_pid(lc, self.pid, &self.dir);
    }
}

fn stop_pid(lc: &Lifecycle, pid: i32, dir: &Path) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let pid = Pid::from_raw(pid);
    if kill(pid, Signal::SIGTERM).is_ok() {
        // Reaped here when it is our child; polled when it is not.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) => {}
                Ok(_) => break,
                Err(_) if kill(pid, None).is_err() => break,
                Err(_) => {}
            }
            if std::time::Instant::now() > deadline {
                let _ = kill(pid, Signal::SIGKILL);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    // The log goes with the directory; what it says about cleaning up
    // (containers of the session left behind) must reach the user first.
    if let Ok(log) = std::fs::read_to_string(dir.join("proxy.log")) {
        for line in log.lines().filter(|l| l.contains("cleaning up")) {
            (lc.notify)(line);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Stops the proxy of session `id` if it has one (a detached session's,
/// or one whose launcher is gone).
pub fn stop_session_proxy(lc: &Lifecycle, id: &str) {
    let dir = proxy_dir(&lc.runtime, id);
    if let Some(pid) = std::fs::read_to_string(dir.join("proxy.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        // The pid may have been reused since: only a proxy serving this
        // directory is stopped.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let ours = String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy());
        if ours {
            stop_pid(lc, pid, &dir);
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
