//! The child side of a worker: one claimed request, run as a foreground
//! session of its own process (`agentctl __worker-job`), so that the
//! native backend forks its helper from a process with no other threads,
//! and so that the session dies with the worker (a parent-death signal):
//! a worker that is gone has no sessions left running unrecorded.

use std::io::Read;
use std::path::PathBuf;

use lifecycle::{Lifecycle, SessionRequest};
use sandbox::RunOptions;
use serde::{Deserialize, Serialize};
use store::queue::{RequestState, WorkspaceSource};

use crate::error::WorkerError;
use crate::git::GitConfig;
use crate::roots::Roots;

/// What the worker hands its child on stdin (never in its arguments or
/// environment: the store URL may carry a password).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub store: String,
    pub worker: String,
    pub worker_name: String,
    /// The worker's pid: the child refuses to run if it is not its parent
    /// any more.
    pub parent: i32,
    pub request: String,
    pub user: String,
    pub actor: String,
    pub profile: String,
    pub workspace: WorkspaceSource,
    pub command: Vec<String>,
    pub image: Option<String>,
    pub backend: store::Backend,
    pub roots: Roots,
    pub git: GitConfig,
    /// Where fresh clones go (`--clone-root`).
    pub clones: PathBuf,
    /// The image of a session whose request and profile name none
    /// (`--image`).
    #[serde(default)]
    pub default_image: Option<String>,
}

/// What the child's exit code says when the agent never ran.
pub const EXIT_NOT_OURS: i32 = 120;
pub const EXIT_REFUSED: i32 = 121;

/// Reads the job from stdin.
pub fn read_job() -> Result<Job, WorkerError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| WorkerError::io("cannot read the job from the worker", e))?;
    serde_json::from_str(&text)
        .map_err(|e| WorkerError::Config(format!("the worker's job cannot be read: {e}")))
}

/// Dies with the worker: SIGKILL when the parent goes, checked against
/// the parent it was started by (it may have died before this line).
fn die_with_parent(parent: i32) -> Result<(), WorkerError> {
    // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number reads no
    // memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if r != 0 {
        return Err(WorkerError::io(
            "cannot arm the parent-death signal",
            std::io::Error::last_os_error(),
        ));
    }
    if nix::unistd::getppid().as_raw() != parent {
        return Err(WorkerError::Config(
            "the worker that started this job is gone".into(),
        ));
    }
    Ok(())
}

/// Runs `job` to its end: the workspace checked (or cloned), the request
/// marked started only if it is still this worker's, the session planned,
/// recorded and run under the request's id for the user who asked.
/// Returns the exit code for the worker: the agent's, or
/// [`EXIT_NOT_OURS`] / [`EXIT_REFUSED`] when it never ran.
pub fn run(job: Job, lc: &mut Lifecycle) -> i32 {
    if let Err(e) = die_with_parent(job.parent) {
        eprintln!("agentctl worker job: {e}");
        return EXIT_NOT_OURS;
    }
    let finish = |lc: &Lifecycle, state: RequestState, reason: Option<String>| {
        let r = lc.store.with(async |s| {
            Ok(s.finish_request(
                &job.request,
                &job.worker,
                state,
                reason.as_deref(),
                store::now_ms(),
            )
            .await?)
        });
        if let Err(e) = r {
            eprintln!("agentctl worker job: cannot record the request's end: {e}");
        }
    };
    // The workspace, on this host's file system, as it is now.
    let workspace = match &job.workspace {
        WorkspaceSource::Path { path } => job.roots.resolve(&job.user, path),
        WorkspaceSource::Git { url, rev } => {
            let dest = job.clones.join(&job.request);
            std::fs::create_dir_all(&job.clones)
                .map_err(|e| WorkerError::io(format!("cannot create {}", job.clones.display()), e))
                .and_then(|()| crate::git::clone(&job.git, url, rev.as_deref(), &dest))
                .map(|()| dest)
        }
    };
    let workspace = match workspace {
        Ok(w) => w,
        Err(e) => {
            eprintln!("agentctl worker job: {e}");
            finish(lc, RequestState::Failed, Some(e.to_string()));
            return EXIT_REFUSED;
        }
    };
    // A test's pause between the claim and the start (a worker killed in
    // between must leave its claim to another); nothing else reads it.
    if let Some(ms) = std::env::var("AGENTCTL_TEST_JOB_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    // Ours still? The reaper may have given it back to the queue.
    let ours = lc.store.with(async |s| {
        Ok(s.start_request(&job.request, &job.worker, store::now_ms())
            .await?)
    });
    match ours {
        Ok(true) => {}
        Ok(false) => {
            eprintln!(
                "agentctl worker job: request {} is no longer this worker's; not running it",
                job.request
            );
            return EXIT_NOT_OURS;
        }
        Err(e) => {
            eprintln!("agentctl worker job: {e}");
            return EXIT_NOT_OURS;
        }
    }
    lc.owner = Some(job.user.clone());
    lc.actor = format!("{} via worker {}", job.actor, job.worker_name);
    let req = SessionRequest {
        profile: job.profile.clone(),
        workspace: Some(workspace),
        command: job.command.clone(),
        image: job.image.clone(),
        session_id: Some(job.request.clone()),
        ..SessionRequest::default()
    };
    let mut asked = req.asked();
    if let Some(m) = asked.as_object_mut() {
        m.insert("request".into(), serde_json::json!(job.request));
        m.insert("worker".into(), serde_json::json!(job.worker_name));
        m.insert("worker_id".into(), serde_json::json!(job.worker));
    }
    let path_workspace = matches!(job.workspace, WorkspaceSource::Path { .. });
    let lc_ref: &Lifecycle = lc;
    let launch = lc_ref.prepare_asked(
        || {
            let mut spec = lc_ref.plan(&req)?;
            if spec.image.is_none()
                && let Some(image) = &job.default_image
            {
                let with_image = SessionRequest {
                    image: Some(image.clone()),
                    ..req.clone()
                };
                spec = lc_ref.plan(&with_image)?;
            }
            // The Docker backend gives a session without an image the
            // engine host's root, with this binary as its init: an engine
            // reached over the network (the stack's worker talks to its
            // socket proxy over TCP) sees another root than this one.
            if spec.image.is_none()
                && job.backend == store::Backend::Docker
                && let Some(host) = remote_engine()
            {
                return Err(lifecycle::Error::Refused(format!(
                    "this worker reaches its Docker engine over the network (DOCKER_HOST={host}), which cannot give a session this host's root: the request and its profile name no image, and the worker has no --image"
                )));
            }
            // Again, on the path the plan will mount: a directory swapped
            // for a symlink since the first check is refused here.
            if path_workspace && let Err(e) = job.roots.recheck(&job.user, &spec.workspace) {
                return Err(lifecycle::Error::Refused(e.to_string()));
            }
            Ok(spec)
        },
        Some(job.backend),
        false,
        &asked,
    );
    let launch = match launch {
        Ok(l) => l,
        Err(e) => {
            eprintln!("agentctl worker job: {e}");
            finish(lc_ref, RequestState::Failed, Some(e.to_string()));
            return EXIT_REFUSED;
        }
    };
    let opts = RunOptions {
        tty: false,
        no_limits: false,
        output_copy: None,
    };
    match launch.run(&opts, &|_| {}) {
        Ok(ended) => {
            if let Some(m) = &ended.message {
                eprintln!("agentctl worker job: {m}");
            }
            // The worker marks the request done when this process exits
            // (one connection fewer per session).
            ended.code
        }
        Err(e) => {
            eprintln!("agentctl worker job: {e}");
            finish(lc_ref, RequestState::Failed, Some(e.to_string()));
            EXIT_REFUSED
        }
    }
}

/// DOCKER_HOST when it names an engine over the network.
fn remote_engine() -> Option<String> {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty() && !h.starts_with("unix://") && !h.starts_with('/'))
}
