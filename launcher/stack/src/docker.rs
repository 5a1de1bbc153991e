//! The engine, through the `docker` CLI (whatever DOCKER_HOST or context it
//! is set to): its presence, images, and the stack's containers.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::StackError;

pub fn docker() -> Command {
    Command::new("docker")
}

/// Runs `cmd`, giving back its stdout; a failure is an error with `what`
/// and the end of its stderr.
pub(crate) fn output(mut cmd: Command, what: &str) -> Result<String, StackError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| StackError::io(format!("cannot run {what}"), e))?;
    if !out.status.success() {
        return Err(StackError::Tool(format!(
            "{what} failed ({}): {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), 20)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.trim_end().lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// The engine's version; a clear error when the CLI or the engine is
/// missing.
pub fn engine() -> Result<String, StackError> {
    let out = docker()
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .output();
    match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StackError::Engine(
            "the docker CLI is not installed; on Debian: apt-get install docker.io (the engine and its CLI)".into(),
        )),
        Err(e) => Err(StackError::io("cannot run docker", e)),
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        Ok(o) => Err(StackError::Engine(format!(
            "cannot reach the Docker engine: {}; start it (systemctl start docker, or dockerd), or point DOCKER_HOST at one",
            tail(&String::from_utf8_lossy(&o.stderr), 3)
        ))),
    }
}

/// A label of a local image: `Ok(None)` when there is no such image,
/// `Some("")` when it lacks the label.
pub fn image_label(image: &str, label: &str) -> Result<Option<String>, StackError> {
    let out = docker()
        .args(["image", "inspect", "--format"])
        .arg(format!("{{{{index .Config.Labels {label:?}}}}}"))
        .arg(image)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| StackError::io("cannot run docker image inspect", e))?;
    if out.status.success() {
        let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
        return Ok(Some(if v == "<no value>" { String::new() } else { v }));
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No such image") || err.contains("No such object") {
        Ok(None)
    } else {
        Err(StackError::Tool(format!(
            "docker image inspect {image}: {}",
            tail(&err, 3)
        )))
    }
}

pub fn image_exists(image: &str) -> Result<bool, StackError> {
    Ok(image_label(image, "org.opencontainers.image.title")?.is_some())
}

/// `docker build` of `context` with `dockerfile`, tagged `tag`; its output
/// is shown only when it fails.
pub fn build(
    dockerfile: &Path,
    context: &Path,
    tag: &str,
    args: &[(&str, &str)],
    labels: &[(&str, &str)],
) -> Result<(), StackError> {
    let mut cmd = docker();
    cmd.arg("build").arg("-f").arg(dockerfile).args(["-t", tag]);
    for (k, v) in args {
        cmd.arg("--build-arg").arg(format!("{k}={v}"));
    }
    for (k, v) in labels {
        cmd.arg("--label").arg(format!("{k}={v}"));
    }
    cmd.arg(context);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| StackError::io("cannot run docker build", e))?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        return Err(StackError::Tool(format!(
            "building {tag} from {} failed:\n{}",
            dockerfile.display(),
            tail(&text, 30)
        )));
    }
    Ok(())
}

/// One container of the stack, as the engine sees it now.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub service: String,
    /// created, running, restarting, exited, …
    pub state: String,
    /// healthy, unhealthy, starting; empty without a healthcheck.
    pub health: String,
    pub exit_code: i64,
    /// The last healthcheck's output.
    pub last_check: String,
    /// Published ports as `ADDRESS:PORT->PORT/tcp`.
    pub ports: Vec<String>,
}

impl Container {
    pub fn healthy(&self) -> bool {
        self.state == "running" && self.health == "healthy"
    }
}

/// Every container of the compose project `project` (either Compose
/// labels its containers the same way).
pub fn containers(project: &str) -> Result<Vec<Container>, StackError> {
    let mut ps = docker();
    ps.args(["ps", "-a", "-q", "--no-trunc", "--filter"])
        .arg(format!("label=com.docker.compose.project={project}"));
    let ids: Vec<String> = output(ps, "docker ps")?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut inspect = docker();
    inspect.arg("inspect").args(&ids);
    let out = inspect
        .stdin(Stdio::null())
        .output()
        .map_err(|e| StackError::io("cannot run docker inspect", e))?;
    // A container removed between the two calls makes inspect fail for
    // it alone; the others are still printed.
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(Vec::new()));
    let mut list: Vec<Container> = v
        .as_array()
        .map(|a| a.iter().map(container).collect())
        .unwrap_or_default();
    list.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(list)
}

/// The stack's containers in one cheap call (`docker ps`): id, service,
/// state and health only, for a wait that looks several times a second.
pub fn glance(project: &str) -> Result<Vec<Container>, StackError> {
    let mut ps = docker();
    ps.args(["ps", "-a", "--no-trunc", "--filter"])
        .arg(format!("label=com.docker.compose.project={project}"))
        .args([
            "--format",
            "{{.ID}}\t{{.Label \"com.docker.compose.service\"}}\t{{.State}}\t{{.Status}}",
        ]);
    Ok(output(ps, "docker ps")?
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (id, service, state, status) = (f.next()?, f.next()?, f.next()?, f.next()?);
            Some(Container {
                id: id.to_string(),
                name: String::new(),
                service: service.to_string(),
                state: state.to_string(),
                health: health_of(status).to_string(),
                exit_code: 0,
                last_check: String::new(),
                ports: Vec::new(),
            })
        })
        .collect())
}

/// The health in `docker ps`' status text ("Up 3 seconds (healthy)").
fn health_of(status: &str) -> &'static str {
    if status.contains("(healthy)") {
        "healthy"
    } else if status.contains("(unhealthy)") {
        "unhealthy"
    } else if status.contains("(health: starting)") {
        "starting"
    } else {
        ""
    }
}

fn container(c: &Value) -> Container {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let state = &c["State"];
    let last_check = state["Health"]["Log"]
        .as_array()
        .and_then(|l| l.last())
        .map(|l| s(&l["Output"]).trim().to_string())
        .unwrap_or_default();
    let mut ports = Vec::new();
    if let Some(m) = c["NetworkSettings"]["Ports"].as_object() {
        for (inner, binds) in m {
            for b in binds.as_array().into_iter().flatten() {
                ports.push(format!(
                    "{}:{}->{inner}",
                    s(&b["HostIp"]),
                    s(&b["HostPort"])
                ));
            }
        }
    }
    Container {
        id: s(&c["Id"]),
        name: s(&c["Name"]).trim_start_matches('/').to_string(),
        service: s(&c["Config"]["Labels"]["com.docker.compose.service"]),
        state: s(&state["Status"]),
        health: s(&state["Health"]["Status"]),
        exit_code: state["ExitCode"].as_i64().unwrap_or_default(),
        last_check,
        ports,
    }
}

/// The last `lines` lines of a container's output.
pub fn log_tail(id: &str, lines: usize) -> String {
    let out = docker()
        .args(["logs", "--tail", &lines.to_string(), id])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) => {
            let mut t = String::from_utf8_lossy(&o.stdout).into_owned();
            t.push_str(&String::from_utf8_lossy(&o.stderr));
            tail(&t, lines)
        }
        Err(e) => format!("(cannot read its logs: {e})"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn health_is_read_from_the_status_text() {
        assert_eq!(super::health_of("Up 3 seconds (healthy)"), "healthy");
        assert_eq!(
            super::health_of("Up 1 second (health: starting)"),
            "starting"
        );
        assert_eq!(super::health_of("Up 2 minutes (unhealthy)"), "unhealthy");
        assert_eq!(super::health_of("Exited (1) 2 seconds ago"), "");
    }
}
