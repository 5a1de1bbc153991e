//! `agentctl worker`: registers this host's launcher with a team server's
//! Postgres store and runs the sessions it claims; `--drain` tells a
//! running worker to finish and waits for it. `__worker-job` is the child
//! that runs one claim.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lifecycle::{Lifecycle, StoreLocation};
use store::queue::WorkerState;

use super::wiring::backend_kind;
use crate::cli::WorkerArgs;

/// agentctl's data directory (`/var/lib/agentctl` for root, otherwise
/// `$XDG_DATA_HOME/agentctl`), as the logs' default names it.
fn agentctl_data() -> PathBuf {
    let logs = backend_native::default_logs_dir();
    logs.parent().map(PathBuf::from).unwrap_or(logs)
}

/// The clones' root: given, or `agentctl-clones` beside agentctl's data
/// directory. Refused inside agentctl's own state: the planner refuses a
/// workspace there, so every git request would fail.
fn clone_root(flag: Option<PathBuf>) -> Result<PathBuf> {
    let dir = match flag {
        Some(d) => d,
        None => {
            let data = agentctl_data();
            data.with_file_name(format!(
                "{}-clones",
                data.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("agentctl")
            ))
        }
    };
    if !dir.is_absolute() {
        bail!("--clone-root {}: give an absolute directory", dir.display());
    }
    if let Some(own) = lifecycle::own_state()
        .dirs
        .iter()
        .find(|d| dir.starts_with(d))
    {
        bail!(
            "--clone-root {}: it is inside {}, agentctl's own state, which no session may see; \
             give a directory outside it",
            dir.display(),
            own.display()
        );
    }
    Ok(dir)
}

pub fn worker(args: WorkerArgs, lc: &Lifecycle) -> Result<u8> {
    let url = lc
        .store
        .required()
        .context("a worker needs the team's Postgres store: --store postgres://…")?
        .to_string();
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| agentctl_data().join("worker"));
    if args.drain {
        return drain(&url, &dir);
    }
    let mut labels = store::queue::Labels::new();
    for l in &args.labels {
        let (k, v) = store::queue::parse_label(l).with_context(|| format!("--labels {l}"))?;
        if k == "backend" {
            bail!("--labels {l}: `backend` is the worker's --backend; give --backend instead");
        }
        labels.insert(k, v);
    }
    let roots = worker::roots::Roots::parse(&args.workspace_roots)?;
    let mut git = worker::git::GitConfig {
        ssh_key: args.git_ssh_key.clone(),
        credential_helper: args.git_credential_helper.clone(),
        ..worker::git::GitConfig::default()
    };
    if !args.git_protocols.is_empty() {
        git.protocols = args.git_protocols.clone();
    }
    let capacity = args
        .capacity
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as u32));
    if capacity == 0 {
        bail!("--capacity 0: a worker runs at least one session at a time");
    }
    if args.heartbeat_timeout < 2 {
        bail!(
            "--heartbeat-timeout {}: give at least 2 seconds",
            args.heartbeat_timeout
        );
    }
    let cfg = worker::pool::WorkerConfig {
        store: url,
        data_dir: dir,
        clones: clone_root(args.clone_root.clone())?,
        name: args.name.clone().unwrap_or_else(store::hostname),
        backend: backend_kind(args.backend),
        capacity,
        labels,
        roots,
        git,
        // A third of the timeout: two beats may be lost before the others
        // give up on this worker.
        heartbeat: Duration::from_millis((args.heartbeat_timeout * 1000 / 3).max(500)),
        timeout: Duration::from_secs(args.heartbeat_timeout),
        self_exe: lifecycle::backends::self_path(),
        default_image: args.image.clone(),
        metrics_listen: args.metrics_listen,
    };
    if cfg.roots.is_empty() {
        eprintln!(
            "agentctl: warning: no --workspace-root: requests for a path workspace will be refused; only git workspaces run here"
        );
    }
    // What an earlier life of this worker left on this host, judged before
    // anything new starts (a thread-free moment: the runtime comes after).
    lc.reconcile()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the worker's runtime")?;
    let name = cfg.name.clone();
    let (backend, capacity) = (cfg.backend, cfg.capacity);
    rt.block_on(worker::pool::run(cfg, |id| {
        eprintln!(
            "agentctl: worker {name} ({}) ready: backend {backend}, capacity {capacity}",
            &id[..12]
        );
    }))?;
    Ok(0)
}

fn drain(url: &str, dir: &std::path::Path) -> Result<u8> {
    let file = dir.join("worker-id");
    let id = std::fs::read_to_string(&file)
        .with_context(|| {
            format!(
                "no worker has run from {} ({})",
                dir.display(),
                file.display()
            )
        })?
        .trim()
        .to_string();
    blocking::block_on(async {
        let store = store::SessionStore::connect(url).await?;
        if !store
            .set_worker_state(&id, WorkerState::Draining, None)
            .await?
        {
            eprintln!("agentctl: the worker of {} is not running", dir.display());
            return Ok(0);
        }
        eprintln!(
            "agentctl: worker {} drains: no new work; waiting for its sessions",
            &id[..12]
        );
        loop {
            let w = store.workers().await?;
            match w.iter().find(|w| w.id == id) {
                Some(w) if w.state != WorkerState::Gone => {}
                _ => break,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("agentctl: worker {} has exited", &id[..12]);
        Ok::<u8, anyhow::Error>(0)
    })
}

/// `__worker-job`: the job on stdin, run to its end; the exit code is the
/// agent's.
pub fn job() -> Result<u8> {
    let job = worker::job::read_job()?;
    let mut lc = super::wiring::lifecycle(StoreLocation(Some(job.store.clone())));
    let code = worker::job::run(job, &mut lc);
    Ok(code.clamp(0, 255) as u8)
}
