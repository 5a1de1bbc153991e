//! The self-hosted stack (`agentctl up|down|status|logs`) end to end:
//! images built from the local Debian base, Compose driving a real
//! engine, a session asked of the API running on the stack's worker
//! behind the socket proxy, Prometheus and the log collector of `ops`,
//! and an upgrade of a store an earlier agentctl wrote.
//!
//! Each test brings up a stack of its own (its own directory, project
//! name and ports) and takes it down with `down -v`, checking that nothing
//! of it is left. They need Docker, Compose and the local base image
//! (images/test.sh makes it); without them they skip loudly, and fail
//! under CI=true.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::{binary, docker_available, require, text};

/// The local Debian base (images/images.json's `local_base`).
const LOCAL_BASE: &str = "agentctl/debian:bookworm";

fn compose_available() -> bool {
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let v1 = Command::new("docker-compose")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    v1 || v2
}

fn image_exists(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ready(test: &str) -> bool {
    require(docker_available(), &format!("{test}: a Docker engine"))
        && require(
            compose_available(),
            &format!("{test}: docker compose or docker-compose"),
        )
        && require(
            image_exists(LOCAL_BASE),
            &format!("{test}: the local base image {LOCAL_BASE} (bash images/test.sh)"),
        )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Stack {
    dir: tempfile::TempDir,
    project: String,
    dashboard: u16,
    postgres: u16,
    prometheus: u16,
    /// `down -v` has been run and checked.
    down: bool,
}

impl Stack {
    fn new(test: &str) -> Stack {
        let dir = tempfile::Builder::new()
            .prefix("agentctl-stack-")
            .tempdir()
            .unwrap();
        let mut p = test.replace('_', "");
        p.truncate(12);
        Stack {
            dir,
            project: format!("actest{p}{}", std::process::id()),
            dashboard: free_port(),
            postgres: free_port(),
            prometheus: free_port(),
            down: false,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn agentctl(&self, args: &[&str]) -> Command {
        let mut c = Command::new(binary());
        c.env("AGENTCTL_STACK_DIR", self.path())
            .env("AGENTCTL_STACK_NAME", &self.project)
            .env("AGENTCTL_BASE_IMAGE", LOCAL_BASE)
            .env("AGENTCTL_DASHBOARD_PORT", self.dashboard.to_string())
            .env("AGENTCTL_POSTGRES_PORT", self.postgres.to_string())
            .env("AGENTCTL_PROMETHEUS_PORT", self.prometheus.to_string())
            .env("AGENTCTL_LOG_COLLECTOR", "standin")
            .env_remove("AGENTCTL_STORE")
            .env_remove("AGENTCTL_SERVER")
            .env_remove("AGENTCTL_TOKEN")
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let o = self.agentctl(args).output().unwrap();
        eprintln!(
            "$ agentctl {}\n{}{}",
            args.join(" "),
            text(&o.stdout),
            text(&o.stderr)
        );
        o
    }

    fn up(&self, role: &str) {
        let o = self.run(&["up", role]);
        assert!(o.status.success(), "agentctl up {role} failed");
        assert_eq!(
            text(&o.stdout).trim(),
            format!("http://127.0.0.1:{}/", self.dashboard),
            "up prints the dashboard's URL"
        );
    }

    fn env(&self) -> BTreeMap<String, String> {
        std::fs::read_to_string(self.path().join(".env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn token(&self) -> String {
        self.env()["AGENTCTL_TOKEN"].clone()
    }

    fn store_url(&self) -> String {
        format!(
            "postgres://agentctl:{}@127.0.0.1:{}/agentctl",
            self.env()["POSTGRES_PASSWORD"],
            self.postgres
        )
    }

    fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .arg(format!("http://127.0.0.1:{}{path}", self.dashboard))
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", self.token()));
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        let o = c.output().unwrap();
        let out = text(&o.stdout);
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    fn json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.api("GET", path, None);
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The stack's container for `service`.
    fn container(&self, service: &str) -> String {
        let o = Command::new("docker")
            .args(["ps", "-q", "--filter"])
            .arg(format!("label=com.docker.compose.project={}", self.project))
            .arg("--filter")
            .arg(format!("label=com.docker.compose.service={service}"))
            .output()
            .unwrap();
        let id = text(&o.stdout).trim().to_string();
        assert!(!id.is_empty(), "no running {service} container");
        id
    }

    fn exec(&self, service: &str, cmd: &[&str]) -> Output {
        Command::new("docker")
            .arg("exec")
            .arg(self.container(service))
            .args(cmd)
            .output()
            .unwrap()
    }

    /// `down -v --yes`, then nothing of the project may be left.
    fn down(&mut self) {
        let o = self.run(&["down", "-v", "--yes"]);
        assert!(o.status.success(), "agentctl down -v failed");
        self.down = true;
        for what in ["container", "network", "volume"] {
            let mut c = Command::new("docker");
            c.arg(what).arg("ls").arg("-q");
            if what == "container" {
                c.arg("-a");
            }
            let o = c
                .arg("--filter")
                .arg(format!("label=com.docker.compose.project={}", self.project))
                .output()
                .unwrap();
            assert!(
                text(&o.stdout).trim().is_empty(),
                "a {what} of the stack is left after down -v: {}",
                text(&o.stdout)
            );
        }
        assert!(
            !self.path().join("store.url").exists(),
            "down leaves the store marker"
        );
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if !self.down {
            let _ = self.agentctl(&["down", "-v", "--yes"]).output();
        }
    }
}

fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `docker-compose config` (and `docker compose config` where it is
/// installed) of the stack's file with every profile, as YAML.
fn compose_configs(dir: &Path) -> Vec<(String, serde_yaml::Value)> {
    let env = dir.join("test.env");
    std::fs::write(
        &env,
        format!(
            "POSTGRES_PASSWORD=x\nAGENTCTL_STACK_DIR={d}\nAGENTCTL_WORKSPACES={d}/workspaces\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../compose/compose.yaml");
    let mut out = Vec::new();
    for tool in [vec!["docker-compose"], vec!["docker", "compose"]] {
        let mut c = Command::new(tool[0]);
        c.args(&tool[1..]);
        let works = Command::new(tool[0])
            .args(&tool[1..])
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !works {
            eprintln!(
                "({} is not installed here; not checked with it)",
                tool.join(" ")
            );
            continue;
        }
        c.arg("-f").arg(&file).arg("--env-file").arg(&env);
        for p in ["usr", "dev", "ops", "alloy", "log-standin"] {
            c.args(["--profile", p]);
        }
        let o = c.arg("config").output().unwrap();
        assert!(
            o.status.success(),
            "{} config: {}",
            tool.join(" "),
            text(&o.stderr)
        );
        out.push((
            tool.join(" "),
            serde_yaml::from_slice(&o.stdout).expect("config prints YAML"),
        ));
    }
    out
}

#[test]
fn the_compose_file_keeps_the_stacks_rules() {
    if !require(
        compose_available(),
        "the_compose_file_keeps_the_stacks_rules: docker compose or docker-compose",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let configs = compose_configs(dir.path());
    assert!(!configs.is_empty());
    let proxies = ["docker-proxy", "logs-proxy"];
    for (tool, cfg) in configs {
        let services = cfg["services"].as_mapping().expect("services");
        let names: Vec<&str> = services.keys().filter_map(|k| k.as_str()).collect();
        // The table agentctl up works from is the file's.
        for s in stack::services::SERVICES {
            assert!(names.contains(&s.name), "{tool}: no service {}", s.name);
            let profiles: Vec<&str> = services[s.name]["profiles"]
                .as_sequence()
                .map(|p| p.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            assert_eq!(profiles, s.profiles, "{tool}: profiles of {}", s.name);
        }
        assert_eq!(
            names.len(),
            stack::services::SERVICES.len(),
            "{tool}: {names:?}"
        );
        for (name, svc) in services {
            let name = name.as_str().unwrap();
            // Only the socket proxies mount the engine's socket, by any
            // spelling of the path.
            for v in svc["volumes"].as_sequence().into_iter().flatten() {
                let source = match v {
                    serde_yaml::Value::String(s) => s.split(':').next().unwrap().to_string(),
                    m => m["source"].as_str().unwrap_or_default().to_string(),
                };
                let real = Path::new(&source)
                    .canonicalize()
                    .unwrap_or_else(|_| PathBuf::from(&source));
                let socket = source.ends_with("docker.sock")
                    || real == Path::new("/run/docker.sock")
                    || real == Path::new("/var/run/docker.sock");
                assert!(
                    !socket || proxies.contains(&name),
                    "{tool}: {name} mounts the Docker socket ({source})"
                );
            }
            // Every published port is on loopback.
            for p in svc["ports"].as_sequence().into_iter().flatten() {
                let host_ip = match p {
                    serde_yaml::Value::String(s) => s.split(':').next().unwrap().to_string(),
                    m => m["host_ip"].as_str().unwrap_or_default().to_string(),
                };
                assert_eq!(host_ip, "127.0.0.1", "{tool}: {name} publishes {p:?}");
            }
            let test = &svc["healthcheck"]["test"];
            assert!(
                test.as_sequence().is_some_and(|t| t.len() > 1) || test.as_str().is_some(),
                "{tool}: {name} has no healthcheck"
            );
            assert_eq!(
                svc["restart"].as_str(),
                Some("unless-stopped"),
                "{tool}: {name}"
            );
            assert_eq!(svc["read_only"].as_bool(), Some(true), "{tool}: {name}");
            let caps: Vec<&str> = svc["cap_drop"]
                .as_sequence()
                .map(|c| c.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            assert_eq!(caps, ["ALL"], "{tool}: {name} keeps capabilities");
            assert!(svc["cap_add"].is_null(), "{tool}: {name} adds capabilities");
            let sec: Vec<&str> = svc["security_opt"]
                .as_sequence()
                .map(|c| c.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            assert!(
                sec.iter().any(|s| s.starts_with("no-new-privileges")),
                "{tool}: {name}: {sec:?}"
            );
            assert!(
                !svc["mem_limit"].is_null() || !svc["deploy"]["resources"]["limits"].is_null(),
                "{tool}: {name} has no memory limit"
            );
            assert!(
                !svc["pids_limit"].is_null(),
                "{tool}: {name} has no pids limit"
            );
            assert!(svc["privileged"].as_bool() != Some(true), "{tool}: {name}");
            assert!(
                svc["network_mode"].is_null(),
                "{tool}: {name} leaves the stack's networks"
            );
            // Root only where the engine's socket is opened.
            let user = svc["user"].as_str().unwrap_or("");
            assert!(!user.is_empty(), "{tool}: {name} names no user");
            let root = user == "root" || user.split(':').next() == Some("0");
            assert_eq!(
                root,
                proxies.contains(&name),
                "{tool}: {name} runs as {user}"
            );
        }
        // The private networks reach nothing outside; `web` has the ports.
        for n in ["store", "engine", "logs", "metrics"] {
            assert_eq!(
                cfg["networks"][n]["internal"].as_bool(),
                Some(true),
                "{tool}: network {n}"
            );
        }
    }
}

#[test]
fn the_alloy_configuration_reads_logs_through_the_proxy_only() {
    // Alloy cannot be pulled here: its file is checked as far as it can
    // be without it: balanced blocks, the components the stack relies
    // on, and the logs-reader proxy as the only engine it talks to.
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../compose/alloy/config.alloy");
    let text = std::fs::read_to_string(file).unwrap();
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut depth = 0i32;
    for c in code.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        assert!(depth >= 0, "a block closes before it opens");
    }
    assert_eq!(depth, 0, "unbalanced blocks");
    for part in [
        "discovery.docker \"containers\"",
        "loki.source.docker \"containers\"",
        "loki.write \"default\"",
        "targets       = discovery.relabel.containers.output",
        "forward_to    = [loki.write.default.receiver]",
    ] {
        assert!(code.contains(part), "config.alloy lacks {part}");
    }
    let hosts: Vec<&str> = code
        .lines()
        .filter(|l| l.trim_start().starts_with("host "))
        .collect();
    assert_eq!(hosts.len(), 2, "{hosts:?}");
    for h in hosts {
        assert!(h.contains("\"tcp://logs-proxy:2375\""), "{h}");
    }
    assert!(!code.contains("docker.sock"));
}

#[test]
fn up_dev_runs_a_session_from_the_api_on_the_stacks_worker() {
    let test = "up_dev_runs_a_session_from_the_api_on_the_stacks_worker";
    if !ready(test) {
        return;
    }
    let mut stack = Stack::new("dev");
    // A port in use: refused before anything starts, naming the service
    // and the setting.
    let taken = std::net::TcpListener::bind(("127.0.0.1", stack.dashboard)).unwrap();
    let o = stack.run(&["up", "dev"]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("port {}", stack.dashboard))
            && err.contains("dashboard")
            && err.contains("AGENTCTL_DASHBOARD_PORT="),
        "{err}"
    );
    let env_before = std::fs::read(stack.path().join(".env")).unwrap();
    assert!(
        support::text(
            &Command::new("docker")
                .args(["ps", "-aq", "--filter"])
                .arg(format!(
                    "label=com.docker.compose.project={}",
                    stack.project
                ))
                .output()
                .unwrap()
                .stdout
        )
        .trim()
        .is_empty(),
        "a refused up started something"
    );
    drop(taken);

    stack.up("dev");
    // The .env was made once, private, and is kept as it was.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(stack.path().join(".env"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::read(stack.path().join(".env")).unwrap(),
        env_before
    );

    let health = stack.json("/healthz");
    assert_eq!(health["ok"], true, "{health}");
    let o = stack.run(&["status"]);
    assert!(o.status.success(), "status: every service healthy");
    for s in ["postgres", "dashboard", "docker-proxy", "worker"] {
        assert!(text(&o.stdout).contains(s), "status lists {s}");
    }
    // The worker registered itself with the store.
    wait_for(
        Duration::from_secs(30),
        "the stack's worker registers",
        || {
            stack.json("/api/v1/workers")["workers"]
                .as_array()
                .is_some_and(|w| {
                    w.iter()
                        .any(|w| w["state"] == "running" && w["backend"] == "docker")
                })
        },
    );

    // A workspace under the worker's root, with a secret and an example.
    // Each user's under the worker's root: shared/USER (up made admin's).
    assert!(stack.path().join("workspaces/shared/admin").is_dir());
    let ws = stack.path().join("workspaces/shared/admin/project");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join(".env"), "API_KEY=stack-secret-do-not-read\n").unwrap();
    std::fs::write(ws.join(".env.example"), "API_KEY=example-value\n").unwrap();
    support::chown_tree(&stack.path().join("workspaces/shared"), 10001, 10001);
    let body = serde_json::json!({
        "profile": "generic",
        "workspace": {"path": ws},
        "command": ["sh", "-c", "echo hi-from-the-stack; cat .env .env.example; id -u; sleep 120"],
    });
    let (code, resp) = stack.api("POST", "/api/v1/sessions", Some(&body.to_string()));
    assert_eq!(code, 202, "{resp}");
    let id = serde_json::from_str::<serde_json::Value>(&resp).unwrap()["request"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(Duration::from_secs(90), "the session runs", || {
        let r = stack.json(&format!("/api/v1/requests/{id}"));
        if r["state"] == "failed" {
            let why = r["reason"].as_str().unwrap_or_default();
            panic!("the request failed: {}", &why[..why.len().min(600)]);
        }
        let (c, b) = stack.api("GET", &format!("/api/v1/sessions/{id}"), None);
        c == 200 && b.contains("\"running\"")
    });
    let mut output = String::new();
    wait_for(Duration::from_secs(30), "its output is on record", || {
        output = stack
            .api("GET", &format!("/api/v1/sessions/{id}/output"), None)
            .1;
        output.contains("example-value")
    });
    assert!(output.contains("hi-from-the-stack"), "{output}");
    assert!(
        !output.contains("stack-secret-do-not-read"),
        "the secret leaked: {output}"
    );
    let session = stack.json(&format!("/api/v1/sessions/{id}"))["session"].clone();
    assert_eq!(session["backend"], "docker", "{session}");
    assert!(
        session["image"]
            .as_str()
            .is_some_and(|i| i.contains("agent-base")),
        "the worker's --image: {session}"
    );

    // In the dashboard, logged in as the first admin.
    let cookies = stack.path().join("cookies");
    let base = format!("http://127.0.0.1:{}", stack.dashboard);
    let env = stack.env();
    let login = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-c"])
        .arg(&cookies)
        .args(["-H", &format!("Origin: {base}")])
        .args([
            "--data-urlencode",
            &format!("user={}", env["AGENTCTL_ADMIN_USER"]),
        ])
        .args([
            "--data-urlencode",
            &format!("password={}", env["AGENTCTL_ADMIN_PASSWORD"]),
        ])
        .args(["--data-urlencode", "next=/"])
        .arg(format!("{base}/login"))
        .output()
        .unwrap();
    assert_eq!(text(&login.stdout), "303", "login");
    let page = |path: &str| {
        let o = Command::new("curl")
            .args(["-s", "-b"])
            .arg(&cookies)
            .arg(format!("{base}{path}"))
            .output()
            .unwrap();
        text(&o.stdout)
    };
    assert!(page("/").contains(&id[..12]), "the sessions page lists it");
    let txt = page(&format!("/sessions/{id}/output.txt"));
    assert!(txt.contains("hi-from-the-stack"), "{txt}");

    // Stopped from the API: the session ends, its container goes.
    let (code, b) = stack.api(
        "POST",
        &format!("/api/v1/sessions/{id}/stop"),
        Some(r#"{"timeout_secs": 2}"#),
    );
    assert!((200..300).contains(&code), "stop: {code} {b}");
    wait_for(Duration::from_secs(60), "the session ends", || {
        let s = stack.json(&format!("/api/v1/sessions/{id}"))["session"].clone();
        s["status"] != "running" && s["status"] != "created"
    });
    wait_for(Duration::from_secs(30), "its container is removed", || {
        let o = Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=io.agentctl.session={id}"))
            .output()
            .unwrap();
        text(&o.stdout).trim().is_empty()
    });

    // The stack's logs, by service.
    let o = stack.run(&["logs", "dashboard"]);
    assert!(o.status.success());
    assert!(
        text(&o.stdout).contains("agentctl serve") || text(&o.stderr).contains("agentctl serve"),
        "agentctl logs dashboard"
    );

    stack.down();
}

#[test]
fn up_ops_scrapes_metrics_and_collects_logs_through_the_logs_reader_proxy() {
    let test = "up_ops_scrapes_metrics_and_collects_logs_through_the_logs_reader_proxy";
    if !ready(test) {
        return;
    }
    let mut stack = Stack::new("ops");
    stack.up("ops");
    // Prometheus' view of its targets: the dashboard's, the worker's and
    // the proxies' up.
    let targets = || {
        let o = Command::new("curl")
            .arg("-s")
            .arg(format!(
                "http://127.0.0.1:{}/api/v1/targets",
                stack.prometheus
            ))
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap_or_default()
    };
    let mut last = serde_json::Value::Null;
    wait_for(
        Duration::from_secs(90),
        "Prometheus scrapes every target",
        || {
            last = targets();
            let active = last["data"]["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let up = |job: &str| {
                active
                    .iter()
                    .filter(|t| t["labels"]["job"] == job)
                    .all(|t| t["health"] == "up")
                    && active.iter().any(|t| t["labels"]["job"] == job)
            };
            up("dashboard") && up("worker") && up("proxies")
        },
    );
    eprintln!("targets: {last}");
    // Its configuration passes its own check.
    let o = stack.exec(
        "prometheus",
        &[
            "promtool",
            "check",
            "config",
            "/etc/prometheus/prometheus.yml",
        ],
    );
    assert!(
        o.status.success(),
        "promtool: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );

    // The stand-in collector reads the dashboard's logs through the
    // logs-reader proxy...
    let dashboard = format!("{}-dashboard-1", stack.project);
    let dashboard_v1 = format!("{}_dashboard_1", stack.project);
    wait_for(
        Duration::from_secs(60),
        "the collector has the dashboard's logs",
        || {
            let o = stack.exec(
                "log-standin",
                &["sh", "-c", "cat /collected/*dashboard*.log 2>/dev/null"],
            );
            text(&o.stdout).contains("agentctl serve")
        },
    );
    let o = stack.exec("log-standin", &["ls", "/collected"]);
    let files = text(&o.stdout);
    assert!(
        files.contains(&dashboard) || files.contains(&dashboard_v1),
        "{files}"
    );
    // ...which refuses what `docker run` asks first, and an exec.
    for (path, body) in [
        (
            "/containers/create",
            r#"{"Image":"agentctl/debian:bookworm","Cmd":["true"]}"#,
        ),
        ("/containers/x/exec", r#"{"Cmd":["true"]}"#),
    ] {
        let o = stack.exec(
            "log-standin",
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-d",
                body,
                &format!("http://logs-proxy:2375/v1.41{path}"),
            ],
        );
        assert_eq!(text(&o.stdout), "403", "POST {path} through logs-reader");
    }
    // No container of the stack but the proxies has the socket.
    for service in [
        "dashboard",
        "worker",
        "prometheus",
        "log-standin",
        "postgres",
    ] {
        let o = Command::new("docker")
            .args([
                "inspect",
                "--format",
                "{{range .Mounts}}{{.Source}} {{end}}",
            ])
            .arg(stack.container(service))
            .output()
            .unwrap();
        assert!(
            !text(&o.stdout).contains("docker.sock"),
            "{service} mounts the socket: {}",
            text(&o.stdout)
        );
    }
    stack.down();
}

#[test]
fn up_upgrades_a_store_written_by_the_previous_version_and_keeps_its_data() {
    let test = "up_upgrades_a_store_written_by_the_previous_version_and_keeps_its_data";
    if !ready(test) {
        return;
    }
    let mut stack = Stack::new("upgrade");
    // The stack's Postgres alone, as the previous version left it: the
    // schema through migration 6 (before the team queue), with a session
    // recorded on it.
    let mut c = stack.agentctl(&["up", "usr"]);
    c.env("AGENTCTL_TEST_UP_POSTGRES_ONLY", "1");
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = stack.store_url();
    let id = "0123456789abcdef0123456789abcdef".to_string();
    rt.block_on(async {
        store::testing::migrate_postgres_through(&url, 6)
            .await
            .unwrap();
        let s = store::SessionStore::connect_with(
            &url,
            &store::ConnectOptions {
                max_connections: 1,
                migrate: false,
            },
        )
        .await
        .unwrap();
        let policy = r#"{"profile":"generic"}"#;
        s.create_session(
            &store::NewSession {
                id: id.clone(),
                profile: "generic".into(),
                backend: store::Backend::Native,
                image: None,
                workspace: "/home/alice/project".into(),
                command: vec!["echo".into(), "written-before-the-upgrade".into()],
                user: "alice".into(),
                uid: 1000,
                host: "old-host".into(),
                created_at: None,
                detached: false,
                policy: policy.into(),
                policy_sha256: store::chain::sha256_hex(policy.as_bytes()),
            },
            store::NewEvent::new("created").actor("uid 1000 (alice)"),
        )
        .await
        .unwrap();
        s.close().await;
    });

    // The new version's up: migrations applied, the data kept.
    stack.up("usr");
    let s = stack.json(&format!("/api/v1/sessions/{id}"));
    assert_eq!(s["session"]["user"], "alice", "{s}");
    assert_eq!(s["session"]["host"], "old-host", "{s}");
    assert_eq!(s["verification"]["ok"], true, "{s}");
    let audit = stack.json(&format!("/api/v1/sessions/{id}/events"));
    assert!(audit.to_string().contains("created"), "{audit}");
    let version = stack.json("/healthz");
    assert!(version["store"].is_string(), "{version}");
    rt.block_on(async {
        let s = store::SessionStore::connect(&url).await.unwrap();
        assert!(s.verify(&id).await.unwrap().ok, "the chain holds");
        s.close().await;
    });
    // A second up of a running stack changes nothing and is quick.
    stack.up("usr");
    stack.down();
}

#[test]
fn up_says_what_is_missing_and_changes_nothing() {
    let test = "up_says_what_is_missing_and_changes_nothing";
    if !ready(test) {
        return;
    }
    let stack = Stack::new("missing");
    // No engine where DOCKER_HOST points.
    let mut c = stack.agentctl(&["up", "usr"]);
    c.env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    let o = c.output().unwrap();
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("cannot reach the Docker engine") && err.contains("DOCKER_HOST"),
        "{err}"
    );
    // An engine but no Compose: PATH holds the docker CLI alone.
    let bin = stack.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let docker = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v docker"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::os::unix::fs::symlink(docker.trim(), bin.join("docker")).unwrap();
    let has_v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_v2 {
        let mut c = stack.agentctl(&["up", "usr"]);
        c.env("PATH", &bin);
        let o = c.output().unwrap();
        assert!(!o.status.success());
        let err = text(&o.stderr);
        assert!(
            err.contains("neither `docker compose`")
                && err.contains("apt-get install docker-compose"),
            "{err}"
        );
    }
    // A bad setting in .env: named with its file and key.
    let env = stack.path().join(".env");
    let text_env = std::fs::read_to_string(&env).unwrap();
    std::fs::write(&env, format!("{text_env}AGENTCTL_DASHBOARD_PORT=http\n")).unwrap();
    let o = stack.agentctl(&["up", "usr"]).output().unwrap();
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains(".env") && err.contains("AGENTCTL_DASHBOARD_PORT=http is not a port"),
        "{err}"
    );
    // Nothing of the project was started by any of them.
    let o = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!(
            "label=com.docker.compose.project={}",
            stack.project
        ))
        .output()
        .unwrap();
    assert!(text(&o.stdout).trim().is_empty(), "{}", text(&o.stdout));
}

#[test]
fn an_unhealthy_service_is_named_and_what_up_started_is_stopped() {
    let test = "an_unhealthy_service_is_named_and_what_up_started_is_stopped";
    if !ready(test) {
        return;
    }
    let mut stack = Stack::new("unhealthy");
    // A worker that cannot start: the first up seeds the setting into .env.
    let mut c = stack.agentctl(&["up", "dev", "--timeout", "120"]);
    c.env("AGENTCTL_WORKER_CAPACITY", "0");
    let o = c.output().unwrap();
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("service worker")
            && err.contains("--capacity 0")
            && err.contains("agentctl logs worker"),
        "{err}"
    );
    assert!(err.contains("stopped what this call started"), "{err}");
    // Nothing of the project runs; its containers stay for their logs.
    let o = Command::new("docker")
        .args(["ps", "-q", "--filter"])
        .arg(format!(
            "label=com.docker.compose.project={}",
            stack.project
        ))
        .output()
        .unwrap();
    assert!(
        text(&o.stdout).trim().is_empty(),
        "still running: {}",
        text(&o.stdout)
    );
    let o = stack.run(&["logs", "worker"]);
    assert!(
        text(&o.stdout).contains("--capacity 0") || text(&o.stderr).contains("--capacity 0"),
        "agentctl logs worker"
    );
    assert!(!stack.path().join("store.url").exists());
    stack.down();
}
