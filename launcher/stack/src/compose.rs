//! Docker Compose, v2 (`docker compose`) or v1 (`docker-compose`),
//! whichever is installed, with the stack's file, `.env` and project name
//! on every call.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::StackError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// The `docker compose` plugin.
    V2,
    /// Debian's `docker-compose` (1.29).
    V1,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::V2 => "docker compose",
            Tool::V1 => "docker-compose",
        }
    }

    fn command(self) -> Command {
        match self {
            Tool::V2 => {
                let mut c = Command::new("docker");
                c.arg("compose");
                c
            }
            Tool::V1 => Command::new("docker-compose"),
        }
    }

    fn works(self) -> bool {
        self.command()
            .arg("version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// The installed Compose: `AGENTCTL_COMPOSE` (`docker compose` or
/// `docker-compose`) when set, else v2 when it answers, else v1.
pub fn detect() -> Result<Tool, StackError> {
    if let Ok(v) = std::env::var("AGENTCTL_COMPOSE")
        && !v.is_empty()
    {
        let tool = match v.as_str() {
            "docker compose" | "v2" => Tool::V2,
            "docker-compose" | "v1" => Tool::V1,
            other => {
                return Err(StackError::Tool(format!(
                    "AGENTCTL_COMPOSE={other:?}: give \"docker compose\" (v2) or \"docker-compose\" (v1)"
                )));
            }
        };
        if !tool.works() {
            return Err(StackError::Tool(format!(
                "AGENTCTL_COMPOSE asks for `{}`, which does not run here",
                tool.name()
            )));
        }
        return Ok(tool);
    }
    if Tool::V2.works() {
        return Ok(Tool::V2);
    }
    // v1 is a Python program whose `version` takes half a second to say
    // anything: being on PATH is enough here, and its first real call
    // says what is wrong with it.
    if on_path("docker-compose") {
        return Ok(Tool::V1);
    }
    Err(StackError::Tool(
        "neither `docker compose` (Compose v2) nor `docker-compose` (v1) is installed; on Debian: apt-get install docker-compose, or install Docker's docker-compose-plugin for v2".into(),
    ))
}

/// Compose calls of one stack.
#[derive(Clone, Debug)]
pub struct Compose {
    pub tool: Tool,
    pub file: PathBuf,
    pub env_file: PathBuf,
    pub project: String,
}

/// What of the caller's environment reaches Compose: how to reach the
/// engine and where the user's Docker settings are. Nothing else, so that
/// a variable the shell happens to hold (a POSTGRES_PASSWORD of another
/// project) cannot override the stack's `.env`, as Compose would let it.
const PASSED: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
];

impl Compose {
    pub fn new(tool: Tool, dir: &Path, project: &str) -> Compose {
        Compose {
            tool,
            file: dir.join("compose/compose.yaml"),
            env_file: dir.join(".env"),
            project: project.to_string(),
        }
    }

    /// `compose -f … --env-file … -p … --profile P… ARGS`.
    pub fn command(&self, profiles: &[&str], args: &[&str]) -> Command {
        let mut c = self.tool.command();
        c.env_clear();
        for k in PASSED {
            if let Some(v) = std::env::var_os(k) {
                c.env(k, v);
            }
        }
        c.arg("-f")
            .arg(&self.file)
            .arg("--env-file")
            .arg(&self.env_file)
            .arg("-p")
            .arg(&self.project);
        for p in profiles {
            c.arg("--profile").arg(p);
        }
        c.args(args);
        c
    }

    /// Runs a call, its output shown only when it fails.
    pub fn run(&self, profiles: &[&str], args: &[&str]) -> Result<String, StackError> {
        crate::docker::output(
            self.command(profiles, args),
            &format!("{} {}", self.tool.name(), args.join(" ")),
        )
    }
}

fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            std::fs::metadata(d.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}
