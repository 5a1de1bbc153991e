//! `agentctl proxy` against a real dockerd: the real docker CLI through the
//! proxy, and raw requests for each class of trick. Every refusal is
//! checked from the daemon's side too: nothing forbidden was created.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{binary, require, test_image, text};

struct Proxy {
    child: Option<Child>,
    sock: PathBuf,
    session: Option<String>,
    _dir: tempfile::TempDir,
    workspace: PathBuf,
}

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Proxy {
    fn start(role: &str, session: bool) -> Proxy {
        Proxy::start_with(role, session, &[])
    }

    fn start_with(role: &str, session: bool, extra: &[&str]) -> Proxy {
        Proxy::start_in(role, session, extra, &|_| {})
    }

    /// As `start_with`, with `prepare` adding to the workspace before the
    /// proxy reads it.
    fn start_in(role: &str, session: bool, extra: &[&str], prepare: &dyn Fn(&Path)) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        let workspace = dir.path().join("ws");
        std::fs::create_dir(&workspace).unwrap();
        std::fs::write(workspace.join("hello.txt"), "hello from the workspace\n").unwrap();
        std::fs::write(workspace.join(".env"), "API_TOKEN=very-secret\n").unwrap();
        std::fs::write(workspace.join(".env.example"), "API_TOKEN=\n").unwrap();
        prepare(&workspace);
        let mut cmd = Command::new(binary());
        cmd.args(["--store", "none", "proxy", "--role", role, "--listen"])
            .arg(format!("unix://{}", sock.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let id = session.then(|| unique("proxytest"));
        if let Some(id) = &id {
            cmd.args(["--session", id, "--workspace"]).arg(&workspace);
        }
        cmd.args(extra);
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&sock).is_err() {
            if let Ok(Some(st)) = child.try_wait() {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("agentctl proxy exited ({st}): {err}");
            }
            assert!(Instant::now() < deadline, "the proxy never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Proxy {
            child: Some(child),
            sock,
            session: id,
            _dir: dir,
            workspace,
        }
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Sends raw bytes; returns the status and the body of the answer.
    fn raw(&self, request: &[u8]) -> (u16, String) {
        let mut s = UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        // A refusal may come (and the proxy close) before all was sent.
        let _ = s.write_all(request);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    fn post(&self, path: &str, body: &str) -> (u16, String) {
        self.raw(
            format!(
                "POST {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.raw(
            format!("GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    }

    /// Stops the proxy the way agentctl does (SIGTERM) and waits.
    fn stop(&mut self) -> i32 {
        let Some(mut child) = self.child.take() else {
            return 0;
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        child.wait().unwrap().code().unwrap_or(-1)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes what a test made directly at the daemon, even when it fails.
struct Made(Vec<(&'static str, String)>);

impl Drop for Made {
    fn drop(&mut self) {
        for (kind, name) in &self.0 {
            let args: Vec<&str> = match *kind {
                "container" => vec!["rm", "-f", name],
                kind => vec![kind, "rm", name],
            };
            let _ = direct(&args);
        }
    }
}

/// The daemon's own view, straight from its socket.
fn direct(args: &[&str]) -> Output {
    Command::new("docker")
        .env_remove("DOCKER_HOST")
        .args(args)
        .output()
        .unwrap()
}

fn direct_ids(args: &[&str]) -> Vec<String> {
    text(&direct(args).stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

fn exists(kind: &str, name: &str) -> bool {
    direct(&[kind, "inspect", name]).status.success()
}

fn ready() -> Option<String> {
    let image = test_image()?;
    require(
        Command::new("docker")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "the docker CLI",
    )
    .then_some(image)
}

fn assert_denied(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "should have been refused: {err}");
    assert!(
        err.contains("denied by agentctl") && err.contains(needle),
        "the refusal should be readable and name {needle:?}: {err}"
    );
}

#[test]
fn logs_reader_reads_and_writes_nothing() {
    let Some(image) = ready() else { return };
    let proxy = Proxy::start("logs-reader", false);
    let name = unique("lr");
    let _made = Made(vec![("container", name.clone())]);
    let made = direct(&[
        "run",
        "-d",
        "--name",
        &name,
        &image,
        "sh",
        "-c",
        "for i in 1 2 3; do echo line$i; sleep 0.2; done",
    ]);
    assert!(made.status.success(), "{}", text(&made.stderr));

    let ps = proxy.docker(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(ps.status.success(), "{}", text(&ps.stderr));
    assert!(text(&ps.stdout).lines().any(|l| l == name));
    let logs = proxy.docker(&["logs", "-f", &name]);
    assert!(logs.status.success(), "{}", text(&logs.stderr));
    assert_eq!(text(&logs.stdout), "line1\nline2\nline3\n");
    // `--until 0s` is now, truncated to the second: an event of this very
    // second is not yet "until now" (the daemon answers direct clients the
    // same way). Wait for the next second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let events = Command::new("docker")
        .env("DOCKER_HOST", format!("unix://{}", proxy.sock.display()))
        .args([
            "events",
            "--since",
            "5m",
            "--until",
            "0s",
            "--filter",
            &format!("container={name}"),
        ])
        .output()
        .unwrap();
    assert!(events.status.success(), "{}", text(&events.stderr));
    assert!(
        text(&events.stdout).contains("container create"),
        "{}",
        text(&events.stdout)
    );

    let run_name = unique("lr-run");
    assert_denied(
        &proxy.docker(&["run", "--name", &run_name, &image, "true"]),
        "containers.create",
    );
    assert!(!exists("container", &run_name));
    assert_denied(&proxy.docker(&["exec", &name, "true"]), "containers.exec");
    assert_denied(
        &proxy.docker(&["cp", &format!("{name}:/etc/hostname"), "-"]),
        "containers.archive",
    );
    assert_denied(&proxy.docker(&["rm", "-f", &name]), "containers.remove");
    assert!(exists("container", &name));
    direct(&["rm", "-f", &name]);
}

#[test]
fn session_runs_its_own_containers_under_its_policy() {
    let Some(image) = ready() else { return };
    let mut proxy = Proxy::start("session", true);
    let session = proxy.session.clone().unwrap();
    let label = format!("label=io.agentctl.session={session}");

    let out = proxy.docker(&["run", "--rm", &image, "echo", "ok"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok\n");

    // The workspace binds, its secrets masked as in the sandbox.
    let ws = proxy.workspace.display().to_string();
    let out = proxy.docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{ws}:/w"),
        &image,
        "sh",
        "-c",
        "cat /w/hello.txt /w/.env.example; echo [$(cat /w/.env)]",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "hello from the workspace\nAPI_TOKEN=\n[]\n"
    );

    let name = unique("sess");
    let out = proxy.docker(&[
        "run",
        "-d",
        "--name",
        &name,
        &image,
        "sh",
        "-c",
        "echo one; sleep 0.3; echo two; sleep 60",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut logs = Command::new("docker")
        .env("DOCKER_HOST", format!("unix://{}", proxy.sock.display()))
        .args(["logs", "-f", &name])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    let mut stdout = logs.stdout.take().unwrap();
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains("two") && Instant::now() < deadline {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert_eq!(seen, "one\ntwo\n", "logs -f streams through the proxy");
    assert!(
        logs.try_wait().unwrap().is_none(),
        "logs -f keeps following"
    );
    let _ = logs.kill();
    let _ = logs.wait();

    let out = proxy.docker(&["exec", &name, "sh", "-c", "echo exec-ok"]);
    assert_eq!(text(&out.stdout), "exec-ok\n", "{}", text(&out.stderr));
    // exec -it needs a terminal: script gives it one.
    let out = Command::new("script")
        .env("DOCKER_HOST", format!("unix://{}", proxy.sock.display()))
        .args([
            "-qec",
            &format!("docker exec -it {name} sh -c 'test -t 0 && echo tty-ok'"),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains("tty-ok"),
        "{} {}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let net = unique("net");
    let vol = unique("vol");
    assert!(proxy.docker(&["network", "create", &net]).status.success());
    assert!(proxy.docker(&["volume", "create", &vol]).status.success());
    // A session without network gets internal networks only.
    let internal = direct(&["network", "inspect", &net, "--format", "{{.Internal}}"]);
    assert_eq!(text(&internal.stdout).trim(), "true");
    let out = proxy.docker(&[
        "run",
        "--rm",
        "-u",
        "0",
        "--network",
        &net,
        "-v",
        &format!("{vol}:/data"),
        &image,
        "sh",
        "-c",
        "echo hi > /data/x && cat /data/x",
    ]);
    assert_eq!(text(&out.stdout), "hi\n", "{}", text(&out.stderr));
    assert!(text(&proxy.docker(&["network", "ls"]).stdout).contains(&net));
    assert!(text(&proxy.docker(&["volume", "ls"]).stdout).contains(&vol));

    // Refused with a readable reason; nothing made on the daemon.
    for (flags, needle) in [
        (vec!["--privileged"], "HostConfig.Privileged"),
        (vec!["-v", "/:/host"], "HostConfig.Binds"),
        (vec!["-v", "/etc:/host"], "outside the session's workspace"),
        (
            vec!["-v", "/var/run/docker.sock:/var/run/docker.sock"],
            "HostConfig.Binds",
        ),
        (vec!["--pid", "host"], "HostConfig.PidMode"),
        (vec!["--cap-add", "SYS_ADMIN"], "HostConfig.CapAdd"),
        (vec!["--device", "/dev/null"], "HostConfig.Devices"),
        (
            vec!["--security-opt", "seccomp=unconfined"],
            "HostConfig.SecurityOpt",
        ),
        (
            vec!["--security-opt", "apparmor=unconfined"],
            "HostConfig.SecurityOpt",
        ),
        (vec!["--network", "host"], "HostConfig.NetworkMode"),
        (vec!["--ipc", "host"], "HostConfig.IpcMode"),
        (vec!["--uts", "host"], "HostConfig.UTSMode"),
        (vec!["--userns", "host"], "HostConfig.UsernsMode"),
        (vec!["--runtime", "runc"], "HostConfig.Runtime"),
        (vec!["--cgroup-parent", "/x"], "HostConfig.CgroupParent"),
        (vec!["--log-driver", "syslog"], "HostConfig.LogConfig.Type"),
        (vec!["--memory", "100g"], "HostConfig.Memory"),
        (
            vec!["--label", "io.agentctl.session=other"],
            "Config.Labels",
        ),
        (vec!["-p", "0.0.0.0:8080:80"], "HostConfig.PortBindings"),
    ] {
        let cname = unique("bad");
        let mut args = vec!["run", "--rm", "--name", cname.as_str()];
        args.extend(flags.iter().copied());
        args.extend([image.as_str(), "true"]);
        assert_denied(&proxy.docker(&args), needle);
        assert!(!exists("container", &cname), "{flags:?} made a container");
    }

    // What the session made carries its label and its limits.
    let inspect = direct(&["inspect", &name]);
    let v: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let hc = &v[0]["HostConfig"];
    assert!(hc["Memory"].as_i64().unwrap() > 0, "memory capped: {hc}");
    assert!(hc["PidsLimit"].as_i64().unwrap() > 0, "pids capped");
    assert!(hc["NanoCpus"].as_i64().unwrap() > 0, "cpus capped");
    assert_eq!(hc["NetworkMode"], "none");
    assert!(
        hc["SecurityOpt"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "no-new-privileges"),
        "{hc}"
    );
    assert_eq!(
        v[0]["Config"]["Labels"]["io.agentctl.session"],
        session.as_str()
    );

    // When the session ends, everything it made goes.
    assert!(!direct_ids(&["ps", "-aq", "--filter", &label]).is_empty());
    assert_eq!(proxy.stop(), 0);
    assert!(direct_ids(&["ps", "-aq", "--filter", &label]).is_empty());
    assert!(direct_ids(&["network", "ls", "-q", "--filter", &label]).is_empty());
    assert!(direct_ids(&["volume", "ls", "-q", "--filter", &label]).is_empty());
}

#[test]
fn session_cannot_reach_foreign_objects() {
    let Some(image) = ready() else { return };
    let proxy = Proxy::start("session", true);
    let foreign = unique("foreign");
    let fnet = unique("fnet");
    let fvol = unique("fvol");
    let _made = Made(vec![
        ("container", foreign.clone()),
        ("network", fnet.clone()),
        ("volume", fvol.clone()),
    ]);
    let out = direct(&["run", "-d", "--name", &foreign, &image, "sleep", "60"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    direct(&["network", "create", &fnet]);
    direct(&["volume", "create", &fvol]);

    assert!(!text(&proxy.docker(&["ps", "-a", "-q", "--no-trunc"]).stdout).contains(&id));
    for args in [
        vec!["logs", foreign.as_str()],
        vec!["logs", &id[..12]],
        vec!["inspect", &id[..6]],
        vec!["exec", foreign.as_str(), "true"],
        vec!["stop", foreign.as_str()],
        vec!["rm", "-f", foreign.as_str()],
        vec!["network", "rm", fnet.as_str()],
        vec!["volume", "rm", fvol.as_str()],
    ] {
        let out = proxy.docker(&args);
        assert!(!out.status.success(), "{args:?} went through");
        assert!(
            text(&out.stderr).contains("is not one of session"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    for flags in [
        vec!["--network", "container:FOREIGN"],
        vec!["--pid", "container:FOREIGN"],
        vec!["--volumes-from", "FOREIGN"],
        vec!["--network", "FNET"],
        vec!["-v", "FVOL:/data"],
    ] {
        let cname = unique("bad");
        let mut args = vec![
            "run".to_string(),
            "--rm".into(),
            "--name".into(),
            cname.clone(),
        ];
        args.extend(flags.iter().map(|f| {
            f.replace("FOREIGN", &foreign)
                .replace("FNET", &fnet)
                .replace("FVOL", &fvol)
        }));
        args.extend([image.clone(), "true".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = proxy.docker(&args);
        assert!(!out.status.success(), "{flags:?} went through");
        assert!(
            text(&out.stderr).contains("is not one of session"),
            "{flags:?}: {}",
            text(&out.stderr)
        );
        assert!(!exists("container", &cname));
    }
    // Events: only the session's own objects (here: none of them).
    let mine = proxy.docker(&["run", "-d", &image, "true"]);
    assert!(mine.status.success(), "{}", text(&mine.stderr));
    // The daemon publishes events a moment after the calls return.
    let want = text(&mine.stdout).trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(15);
    let events = loop {
        std::thread::sleep(Duration::from_millis(300));
        let out = proxy.docker(&["events", "--since", "2m", "--until", "0s"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let events = text(&out.stdout);
        if events.contains(&want) || Instant::now() > deadline {
            break events;
        }
    };
    assert!(
        !events.contains(&foreign) && !events.contains(&id),
        "{events}"
    );
    assert!(events.contains(&want), "{events}");
    // The client cannot widen its view with its own filters.
    let filters = r#"{"label":["io.agentctl.session=someone-else"]}"#;
    let (status, body) = proxy.get(&format!(
        "/v1.41/containers/json?all=1&filters={}",
        filters
            .replace('"', "%22")
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace('[', "%5B")
            .replace(']', "%5D")
    ));
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_str(body.trim()).unwrap();
    let session = proxy.session.clone().unwrap();
    assert!(!body.contains(&id), "{body}");
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["Labels"]["io.agentctl.session"] == session.as_str()),
        "{body}"
    );
    assert!(
        exists("container", &foreign),
        "the foreign container is untouched"
    );
    direct(&["rm", "-f", &foreign]);
    direct(&["network", "rm", &fnet]);
    direct(&["volume", "rm", &fvol]);
}

/// Each raw request, and what the proxy must answer.
#[test]
fn raw_requests_are_canonical_or_refused() {
    let Some(image) = ready() else { return };
    let proxy = Proxy::start("session", true);
    let ok = |req: &str| proxy.raw(req.as_bytes());

    // Framing.
    for req in [
        "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
        "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
        "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}",
        "GET /v1.41/_ping HTTP/1.1\r\nHost: d\r\nHost: e\r\n\r\n",
        "GET /v1.41/_ping HTTP/1.1\r\nHost: d\r\nX-A: b\r\n c\r\n\r\n",
        "GET /v1.41/_ping HTTP/1.1\nHost: d\n\n",
        "GET http://docker/v1.41/_ping HTTP/1.1\r\nHost: d\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "GET /v1.41/_ping HTTP/1.1\r\nHost: d\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        "GET /v1.41/containers/../images/json HTTP/1.1\r\nHost: d\r\n\r\n",
        "GET /v1.41/containers/%2e%2e/json HTTP/1.1\r\nHost: d\r\n\r\n",
        "GET /v1.41/containers/a%2fb/json HTTP/1.1\r\nHost: d\r\n\r\n",
        "GET /v1.41/containers/json?all=1&all=0 HTTP/1.1\r\nHost: d\r\n\r\n",
        "POST /v1.41/containers/x/stop HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n\r\nt=0",
    ] {
        let (status, body) = ok(req);
        assert_eq!(status, 400, "{req:?}: {body}");
        assert!(body.contains("\"message\""), "{req:?}: {body}");
    }
    // BuildKit's streams are not for this role.
    for path in ["/session", "/grpc"] {
        let (status, body) = proxy.post(path, "");
        assert_eq!(status, 403, "{path}: {body}");
    }
    // Versions: read the way the daemon reads them, rewritten to one.
    for path in ["/v1.44./_ping", "/v%31.41/_ping", "/_ping", "/v1.24/_ping"] {
        let (status, body) = proxy.get(path);
        assert_eq!((status, body.as_str()), (200, "OK"), "{path}");
    }
    let ping = proxy.raw(b"GET /v9.99/_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n");
    assert_eq!(ping.0, 200);

    // Bodies.
    let create = |name: &str, body: &str| {
        let r = proxy.post(&format!("/v1.41/containers/create?name={name}"), body);
        assert!(!exists("container", name), "{body} made a container");
        r
    };
    for (body, status, needle) in [
        (
            r#"{"Image":"IMG","HostConfig":{"Privileged":false,"privileged":true}}"#,
            400,
            "duplicate",
        ),
        (
            r#"{"Image":"IMG","HostConfig":{"privileged":true}}"#,
            400,
            "Privileged",
        ),
        (
            r#"{"Image":"IMG","HostConfig":{"Privileged":false,"PRIVILEGED":true}}"#,
            400,
            "duplicate",
        ),
        (
            "{\"Image\":\"IMG\",\"HostConfig\":{\"SecurityOpt\":[],\"\u{17f}ecurityOpt\":[\"seccomp=unconfined\"]}}",
            400,
            "duplicate",
        ),
        (
            "{\"Image\":\"IMG\",\"HostConfig\":{\"\u{212a}ernelMemory\":0,\"KernelMemory\":0}}",
            400,
            "duplicate",
        ),
        (r#"{"Image":"IMG","Privileged":true}"#, 400, "Privileged"),
        (r#"{"Image":"IMG","Binds":["/:/host"]}"#, 400, "Binds"),
        (
            r#"{"Image":"IMG","HostConfig":{"Mounts":[{"Type":"bind","Source":"/","Target":"/host"}]}}"#,
            403,
            "Mounts[0]",
        ),
        (
            r#"{"Image":"IMG","HostConfig":{"Mounts":[{"Type":"volume","Source":"v","Target":"/d","VolumeOptions":{"DriverConfig":{"Name":"local","Options":{"type":"none","o":"bind","device":"/"}}}}]}}"#,
            403,
            "DriverConfig",
        ),
        (
            r#"{"Image":"IMG","HostConfig":{"CapAdd":["sys_admin"]}}"#,
            403,
            "CapAdd",
        ),
        (
            r#"{"Image":"IMG","HostConfig":{"CapAdd":["ALL"]}}"#,
            403,
            "CapAdd",
        ),
        (
            r#"{"Image":"IMG","HostConfig":{"CapAdd":"CAP_SYS_ADMIN"}}"#,
            403,
            "CapAdd",
        ),
        (
            r#"{"Image":"IMG","HostConfig":{"NetworkMode":"host"}}"#,
            403,
            "NetworkMode",
        ),
        (
            r#"{"Image":"IMG","HostConfig":{"UsernsMode":"host"}}"#,
            403,
            "UsernsMode",
        ),
        (
            r#"{"Image":"IMG","HostConfig":{"MaskedPaths":[]}}"#,
            403,
            "MaskedPaths",
        ),
        (
            r#"{"Image":"IMG","HostConfig":{"DeviceCgroupRules":["a *:* rwm"]}}"#,
            403,
            "Device",
        ),
        (
            r#"{"Image":"IMG","HostConfig":{"LogConfig":{"Type":"json-file","Config":{"fluentd-address":"x:1"}}}}"#,
            403,
            "LogConfig",
        ),
        (
            r#"{"Image":"IMG","Labels":{"io.agentctl.session":"x"}}"#,
            403,
            "Labels",
        ),
        (
            r#"{"Image":"IMG","HostConfig":{"Privileged":true}}  {}"#,
            400,
            "",
        ),
    ] {
        let name = unique("raw");
        let body = body.replace("IMG", &image);
        let (got, answer) = create(&name, &body);
        assert_eq!(got, status, "{body}: {answer}");
        assert!(answer.contains(needle), "{body}: {answer}");
    }
    // A canonical body goes through, re-serialized.
    let name = unique("raw-ok");
    let (status, answer) = proxy.post(
        &format!("/v1.41/containers/create?name={name}"),
        &format!(r#"{{"Image":"{image}","Cmd":["true"],"HostConfig":{{"CapAdd":null}}}}"#),
    );
    assert_eq!(status, 201, "{answer}");
    let id: Value = serde_json::from_str(&answer).unwrap();
    let id = id["Id"].as_str().unwrap().to_string();
    // Exec with Privileged, by a unique prefix of the session's own container.
    let (status, answer) = proxy.post(
        &format!("/v1.41/containers/{}/exec", &id[..10]),
        r#"{"Cmd":["true"],"Privileged":true}"#,
    );
    assert_eq!(status, 403, "{answer}");
    // Size: a 413, not a truncation.
    let big = format!(
        r#"{{"Image":"{image}","Env":["X={}"]}}"#,
        "a".repeat(2 * 1024 * 1024)
    );
    let (status, _) = proxy.post("/v1.41/containers/create", &big);
    assert_eq!(status, 413);
    // Volumes with driver options, networks with other drivers.
    let (status, answer) = proxy.post(
        "/v1.41/volumes/create",
        r#"{"Name":"x","DriverOpts":{"type":"none","o":"bind","device":"/"}}"#,
    );
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = proxy.post(
        "/v1.41/networks/create",
        r#"{"Name":"x","Driver":"macvlan"}"#,
    );
    assert_eq!(status, 403, "{answer}");
    direct(&["rm", "-f", &id]);
}

/// A `docker: true` profile through `agentctl run`: the agent's docker CLI
/// reaches the daemon only through the session's proxy, denials go to the
/// session's audit trail, and the session's containers go with it.
fn run_with_docker(backend: &str) {
    let Some(image) = ready() else { return };
    if !require(
        support::is_root(),
        "root (the native backend without a delegated cgroup)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::write(ws.join(".env"), "TOKEN=abc\n").unwrap();
    std::fs::write(ws.join("a.txt"), "from the workspace\n").unwrap();
    let profile = dir.path().join("docker.yaml");
    std::fs::write(&profile, "extends: generic\ndocker: true\n").unwrap();
    let store = format!("sqlite://{}", dir.path().join("s.db").display());
    let script = format!(
        "docker run --rm {image} echo inner-ok && \
         docker run --rm -v {ws}:/w {image} sh -c 'cat /w/a.txt; echo [$(cat /w/.env)]' && \
         docker run -d --name keep-{backend}-{pid} {image} sleep 300 >/dev/null && \
         ! docker run --rm --privileged {image} true && \
         docker ps --format '{{{{.Names}}}}'",
        ws = ws.display(),
        pid = std::process::id(),
    );
    let keep = format!("keep-{backend}-{}", std::process::id());
    let out = Command::new(binary())
        .args([
            "--store",
            &store,
            "run",
            "-q",
            "--backend",
            backend,
            "--profile",
        ])
        .arg(&profile)
        .arg("--workspace")
        .arg(&ws)
        .args(["--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert_eq!(
        stdout,
        format!("inner-ok\nfrom the workspace\n[]\n{keep}\n"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("HostConfig.Privileged is not allowed"));

    let ps = Command::new(binary())
        .args(["--store", &store, "ps", "-a", "--json"])
        .output()
        .unwrap();
    let sessions: Value = serde_json::from_slice(&ps.stdout).unwrap();
    let id = sessions[0]["id"].as_str().unwrap().to_string();
    let audit = Command::new(binary())
        .args(["--store", &store, "audit", &id, "--json"])
        .output()
        .unwrap();
    let events: Value = serde_json::from_slice(&audit.stdout).unwrap();
    let denied: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "proxy_denied")
        .collect();
    assert_eq!(denied.len(), 1, "{events}");
    assert!(
        denied[0]["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("Privileged")
    );
    let verify = Command::new(binary())
        .args(["--store", &store, "audit", &id, "--verify"])
        .output()
        .unwrap();
    assert!(verify.status.success());

    // The container it left running went with the session.
    let label = format!("label=io.agentctl.session={id}");
    assert!(direct_ids(&["ps", "-aq", "--filter", &label]).is_empty());
    assert!(!exists("container", &keep));
}

#[test]
fn run_with_docker_native() {
    run_with_docker("native");
}

#[test]
fn run_with_docker_on_docker() {
    run_with_docker("docker");
}

/// A detached `docker: true` session keeps its proxy while it runs; `stop`
/// takes the proxy and the agent's containers away with it.
#[test]
fn detached_session_keeps_its_proxy_until_stopped() {
    let Some(image) = ready() else { return };
    if !require(
        support::is_root(),
        "root (the native backend without a delegated cgroup)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let profile = dir.path().join("docker.yaml");
    std::fs::write(&profile, "extends: generic\ndocker: true\n").unwrap();
    let store = format!("sqlite://{}", dir.path().join("s.db").display());
    let agentctl = |args: &[&str]| {
        Command::new(binary())
            .args(["--store", &store])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = Command::new(binary())
        .args(["--store", &store, "run", "-d", "-q", "--profile"])
        .arg(&profile)
        .arg("--workspace")
        .arg(&ws)
        .args(["--", "sleep", "300"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let out = agentctl(&[
        "exec", "--no-tty", &id, "--", "docker", "run", "-d", &image, "sleep", "300",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let label = format!("label=io.agentctl.session={id}");
    assert_eq!(direct_ids(&["ps", "-q", "--filter", &label]).len(), 1);
    let out = agentctl(&["stop", "-t", "1", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(direct_ids(&["ps", "-aq", "--filter", &label]).is_empty());
    let proxies = Path::new("/run/agentctl/proxies").join(&id);
    assert!(!proxies.exists(), "{} is left behind", proxies.display());
    agentctl(&["rm", &id]);
}

/// Testcontainers' way: publish every exposed port, then ask which host
/// port it got. A session with a network may do that, on the loopback only.
#[test]
fn testcontainers_style_ports_on_the_loopback() {
    let Some(image) = ready() else { return };
    let proxy = Proxy::start_with("session", true, &["--network", "bridge"]);
    // Testcontainers' way: publish every exposed port, then ask which
    // host port it got. Published on the loopback only.
    let tc = unique("tc");
    let out = proxy.docker(&[
        "run",
        "-d",
        "-P",
        "--expose",
        "8080",
        "--name",
        &tc,
        "--label",
        "org.testcontainers=true",
        &image,
        "sleep",
        "60",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let port = proxy.docker(&["port", &tc, "8080"]);
    assert!(
        text(&port.stdout).starts_with("127.0.0.1:"),
        "{}",
        text(&port.stdout)
    );
    let listed = proxy.docker(&[
        "ps",
        "--filter",
        "label=org.testcontainers=true",
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(text(&listed.stdout).trim(), tc);

    let inspect = direct(&["inspect", &tc]);
    let v: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v[0]["HostConfig"]["PublishAllPorts"], false);
    assert_eq!(
        v[0]["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostIp"],
        "127.0.0.1"
    );
    direct(&["rm", "-f", &tc]);
}

/// Regression (issue 9, item 1): bind sources were checked when a child
/// was created and mounted when it started, which the agent chooses. An
/// agent created a child with `-v $WS/sub:/x`, replaced `sub` with a
/// symlink to `/`, and started it: the child had the host's root
/// read-write. And it moved `config/` (holding `.env`) away between create
/// and start, so that its child's mask landed on nothing. Now only the
/// workspace root may be bound, the directories leading to the session's
/// secrets are pinned (mount points cannot be renamed, in the sandbox or in
/// its children), and a start checks the binds again.
fn bind_swap_between_create_and_start(backend: &str) {
    let Some(image) = ready() else { return };
    if !require(support::is_root(), "root (a Docker socket for the session)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(ws.join("sub")).unwrap();
    std::fs::create_dir_all(ws.join("config")).unwrap();
    std::fs::write(ws.join("config/.env"), "TOKEN=swapped-secret\n").unwrap();
    // Something of the host's outside the workspace, for the child to find.
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("marker"), "HOST-FILE-SEEN\n").unwrap();
    let profile = dir.path().join("docker.yaml");
    std::fs::write(&profile, "extends: generic\ndocker: true\n").unwrap();
    let store = format!("sqlite://{}", dir.path().join("s.db").display());
    let script = format!(
        "cd {ws}; \
         if cid=$(docker create -v {ws}/sub:/x {image} cat /x{marker}); then \
           mv sub sub.old && ln -s / sub; docker start -a $cid; \
         else echo sub-bind-refused; fi; \
         cid=$(docker create -v {ws}:/w {image} sh -c 'cat /w/config/.env /w/config2/.env 2>/dev/null; echo child-done') || exit 9; \
         mv config config2 2>/dev/null || echo mv-refused; \
         docker start -a $cid",
        ws = ws.display(),
        marker = outside.join("marker").display(),
    );
    let out = Command::new(binary())
        .args([
            "--store",
            &store,
            "run",
            "-q",
            "--backend",
            backend,
            "--profile",
        ])
        .arg(&profile)
        .arg("--workspace")
        .arg(&ws)
        .args(["--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    let tag = format!("[{backend}]");
    assert!(out.status.success(), "{tag} {stdout}\n{stderr}");
    assert!(
        !stdout.contains("HOST-FILE-SEEN"),
        "{tag} a child saw the host outside the workspace: {stdout}"
    );
    assert!(
        !stdout.contains("swapped-secret"),
        "{tag} a child read a masked secret: {stdout}"
    );
    assert!(
        stdout.contains("sub-bind-refused"),
        "{tag} {stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("only the workspace root"),
        "{tag} the refusal says why: {stderr}"
    );
    assert!(stdout.contains("mv-refused"), "{tag} {stdout}");
    assert!(stdout.contains("child-done"), "{tag} {stdout}\n{stderr}");
    // Nothing of the host's workspace was created or moved by the child.
    assert!(ws.join("config/.env").is_file() && !ws.join("config2").exists());
}

#[test]
fn bind_swap_between_create_and_start_native() {
    bind_swap_between_create_and_start("native");
}

#[test]
fn bind_swap_between_create_and_start_on_docker() {
    bind_swap_between_create_and_start("docker");
}

/// The second half of item 1: a start checks the binds again, because the
/// daemon resolves them then. The agent cannot move a pinned directory, but
/// anyone else on the host can (here, the test); a child whose masks no
/// longer describe where the session's secrets are must not start, and
/// starts again once they do. Restart is checked the same way.
#[test]
fn session_start_checks_the_binds_again() {
    let Some(image) = ready() else { return };
    let mut p = Proxy::start_in("session", true, &[], &|ws| {
        std::fs::create_dir_all(ws.join("config")).unwrap();
        std::fs::write(ws.join("config/.env"), "TOKEN=moved-secret\n").unwrap();
    });
    let ws = p.workspace.display().to_string();
    let create = p.docker(&[
        "create",
        "-v",
        &format!("{ws}:/w"),
        &image,
        "sh",
        "-c",
        "cat /w/config/.env /w/config2/.env 2>/dev/null; echo child-done",
    ]);
    assert!(create.status.success(), "{}", text(&create.stderr));
    let id = text(&create.stdout).trim().to_string();
    let _made = Made(vec![("container", id.clone())]);
    // The container carries the pin and the mask.
    let mounts = text(&direct(&["inspect", "-f", "{{json .HostConfig.Mounts}}", &id]).stdout);
    assert!(mounts.contains(&format!("{ws}/config")), "{mounts}");
    assert!(mounts.contains("/w/config/.env"), "{mounts}");

    std::fs::rename(p.workspace.join("config"), p.workspace.join("config2")).unwrap();
    let start = p.docker(&["start", "-a", &id]);
    assert_denied(&start, "cannot start");
    assert!(!text(&start.stdout).contains("moved-secret"));
    let restart = p.docker(&["restart", &id]);
    assert_denied(&restart, "cannot start");

    std::fs::rename(p.workspace.join("config2"), p.workspace.join("config")).unwrap();
    let start = p.docker(&["start", "-a", &id]);
    assert!(start.status.success(), "{}", text(&start.stderr));
    assert_eq!(text(&start.stdout), "child-done\n");
    p.stop();
}

/// Items 12 (and a hole found beside it): the agent's own containers bind
/// the workspace too, so what is read-only in its sandbox must be read-only
/// in them: `.git/config` and hooks, and the whole workspace for a profile
/// with `workspace: ro`.
#[test]
fn children_get_the_sessions_read_only_paths() {
    let Some(image) = ready() else { return };
    if !require(support::is_root(), "root (a Docker socket for the session)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let init = Command::new("git")
        .args(["init", "-q"])
        .current_dir(&ws)
        .status()
        .unwrap();
    assert!(init.success());
    let config_before = std::fs::read_to_string(ws.join(".git/config")).unwrap();
    let run = |profile_text: &str, script: String| {
        let profile = dir.path().join("p.yaml");
        std::fs::write(&profile, profile_text).unwrap();
        let out = Command::new(binary())
            .args(["--store", "none", "run", "-q", "--profile"])
            .arg(&profile)
            .arg("--workspace")
            .arg(&ws)
            .args(["--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let w = ws.display();
    let out = run(
        "extends: generic\ndocker: true\n",
        format!(
            "docker run --rm -u 0 -v {w}:/w {image} sh -c 'echo \"[core] fsmonitor=x\" >> /w/.git/config && echo child-wrote-config; mkdir -p /w/.git/hooks; echo x > /w/.git/hooks/pre-commit && echo child-wrote-hook; echo ok > /w/file && echo child-wrote-file'; true"
        ),
    );
    assert!(!out.contains("child-wrote-config"), "{out}");
    assert!(!out.contains("child-wrote-hook"), "{out}");
    assert!(out.contains("child-wrote-file"), "{out}");
    assert_eq!(
        std::fs::read_to_string(ws.join(".git/config")).unwrap(),
        config_before
    );

    let out = run(
        "extends: generic\ndocker: true\nworkspace: ro\n",
        format!(
            "docker run --rm -u 0 -v {w}:/w:rw {image} sh -c 'echo x > /w/other && echo child-wrote-ro-workspace'; true"
        ),
    );
    assert!(!out.contains("child-wrote-ro-workspace"), "{out}");
    assert!(!ws.join("other").exists());
}

/// The daemon's `inspect` of one object, as JSON.
fn inspect(kind: &str, name: &str) -> Value {
    let out = direct(&[kind, "inspect", name]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0].clone()
}

fn network_id(name: &str) -> String {
    inspect("network", name)["Id"].as_str().unwrap().to_string()
}

/// Issue 9, item 2: an endpoint's `NetworkID` (which the daemon prefers to
/// the endpoint's key) cannot take a child to a network other than the one
/// checked, on create or on connect; no spelling of `NetworkMode` reaches a
/// non-internal network from a session without network.
#[test]
fn endpoint_settings_cannot_pick_another_network() {
    let Some(image) = ready() else { return };
    let proxy = Proxy::start("session", true);
    let own = unique("own");
    let own2 = unique("own2");
    let compose = unique("compose");
    let mut made = Made(vec![("network", compose.clone())]);
    assert!(proxy.docker(&["network", "create", &own]).status.success());
    assert!(proxy.docker(&["network", "create", &own2]).status.success());
    let out = direct(&["network", "create", &compose]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bridge = network_id("bridge");
    let own_id = network_id(&own);
    let own2_id = network_id(&own2);
    let compose_id = network_id(&compose);

    let create = |name: &str, host: &str, endpoint: &str| {
        proxy.post(
            &format!("/v1.41/containers/create?name={name}"),
            &format!(
                r#"{{"Image":"{image}","Cmd":["true"],"HostConfig":{{{host}}},"NetworkingConfig":{{"EndpointsConfig":{endpoint}}}}}"#
            ),
        )
    };
    let mode = format!(r#""NetworkMode":"{own}""#);
    for (host, endpoint, needle) in [
        (
            mode.clone(),
            format!(r#"{{"{own}":{{"NetworkID":"{bridge}"}}}}"#),
            "NetworkID",
        ),
        (
            mode.clone(),
            format!(r#"{{"{own}":{{"NetworkID":"{}"}}}}"#, &bridge[..12]),
            "NetworkID",
        ),
        (
            mode.clone(),
            format!(r#"{{"{own}":{{"NetworkID":"{compose_id}"}}}}"#),
            "NetworkID",
        ),
        (
            mode.clone(),
            format!(r#"{{"{own}":{{"NetworkID":"{compose}"}}}}"#),
            "NetworkID",
        ),
        (
            String::new(),
            format!(r#"{{"none":{{"NetworkID":"{bridge}"}}}}"#),
            "NetworkID",
        ),
        (
            mode.clone(),
            format!(r#"{{"{own}":{{"EndpointID":"abc"}}}}"#),
            "EndpointID",
        ),
        (
            mode.clone(),
            format!(
                r#"{{"{own}":{{"DriverOpts":{{"com.docker.network.endpoint.sysctls":"net.ipv4.conf.IFNAME.forwarding=1"}}}}}}"#
            ),
            "DriverOpts",
        ),
        (
            mode.clone(),
            format!(r#"{{"{own}":{{"Links":["x:y"]}}}}"#),
            "Links",
        ),
        (
            mode.clone(),
            format!(r#"{{"{own}":{{"IPAddress":"10.1.2.3"}}}}"#),
            "IPAddress",
        ),
        (
            mode.clone(),
            format!(r#"{{"{compose}":{{}}}}"#),
            "is not one of session",
        ),
    ] {
        let name = unique("ep");
        let (status, answer) = create(&name, &host, &endpoint);
        assert_eq!(status, 403, "{host} {endpoint}: {answer}");
        assert!(answer.contains(needle), "{endpoint}: {answer}");
        assert!(!exists("container", &name), "{endpoint} made a container");
    }

    // The endpoint the daemon keeps is the one checked, named by its id.
    let name = unique("ep-ok");
    made.0.push(("container", name.clone()));
    let (status, answer) = create(
        &name,
        &mode,
        &format!(
            r#"{{"{own}":{{"NetworkID":"{}","Aliases":["a"]}}}}"#,
            &own_id[..12]
        ),
    );
    assert_eq!(status, 201, "{answer}");
    let networks = inspect("container", &name)["NetworkSettings"]["Networks"].clone();
    let networks = networks.as_object().unwrap();
    assert_eq!(networks.len(), 1, "{networks:?}");
    for ep in networks.values() {
        assert_eq!(ep["NetworkID"], own_id.as_str(), "{networks:?}");
    }

    // Connect: the network of the path is the one joined.
    for (body, needle) in [
        (
            format!(r#"{{"Container":"{name}","EndpointConfig":{{"NetworkID":"{bridge}"}}}}"#),
            "NetworkID",
        ),
        (
            format!(r#"{{"Container":"{name}","EndpointConfig":{{"NetworkID":"{compose}"}}}}"#),
            "NetworkID",
        ),
        (
            format!(
                r#"{{"Container":"{name}","EndpointConfig":{{"DriverOpts":{{"com.docker.network.endpoint.sysctls":"x=1"}}}}}}"#
            ),
            "DriverOpts",
        ),
        (
            format!(r#"{{"Container":"{name}","EndpointConfig":{{"EndpointID":"e"}}}}"#),
            "EndpointID",
        ),
    ] {
        let (status, answer) = proxy.post(&format!("/v1.41/networks/{own2}/connect"), &body);
        assert_eq!(status, 403, "{body}: {answer}");
        assert!(answer.contains(needle), "{body}: {answer}");
    }
    let networks = inspect("container", &name)["NetworkSettings"]["Networks"].clone();
    assert!(
        networks
            .as_object()
            .unwrap()
            .values()
            .all(|ep| ep["NetworkID"] == own_id.as_str()),
        "{networks}"
    );
    let (status, answer) = proxy.post(
        &format!("/v1.41/networks/{own2}/connect"),
        &format!(r#"{{"Container":"{name}","EndpointConfig":{{"NetworkID":"{own2}"}}}}"#),
    );
    assert_eq!(status, 200, "{answer}");
    let networks = inspect("container", &name)["NetworkSettings"]["Networks"].clone();
    let ids: Vec<&str> = networks
        .as_object()
        .unwrap()
        .values()
        .map(|ep| ep["NetworkID"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&own2_id.as_str()) && !ids.contains(&bridge.as_str()),
        "{networks}"
    );

    // No spelling of NetworkMode reaches a network that is not internal.
    let spellings = [
        bridge.clone(),
        bridge[..12].to_string(),
        bridge[..4].to_string(),
        "default".into(),
        String::new(),
        "Bridge".into(),
        compose_id[..12].to_string(),
        network_id("host")[..12].to_string(),
        "container:".into(),
    ];
    for spelling in spellings {
        let name = unique("mode");
        let (status, answer) = create(&name, &format!(r#""NetworkMode":"{spelling}""#), "null");
        if status != 201 {
            assert!(!exists("container", &name), "{spelling:?}: {answer}");
            continue;
        }
        made.0.push(("container", name.clone()));
        let c = inspect("container", &name);
        let mode = c["HostConfig"]["NetworkMode"].as_str().unwrap().to_string();
        assert_eq!(mode, "none", "{spelling:?} became {mode:?}");
        for (net, ep) in c["NetworkSettings"]["Networks"].as_object().unwrap() {
            let id = ep["NetworkID"].as_str().unwrap_or(net);
            let id = if id.is_empty() { net.as_str() } else { id };
            let n = inspect("network", id);
            assert!(
                n["Name"] == "none" || n["Internal"] == true,
                "{spelling:?} reaches network {net}: {n}"
            );
        }
    }
}

/// A session-scoped role like the built-in one that also allows
/// `containers.update` (the built-in role does not), written into `dir`.
fn session_role_with_update(dir: &Path) -> String {
    let path = dir.join("session-update.yaml");
    let role = include_str!("../../../profiles/docker-roles/session.yaml");
    std::fs::write(&path, format!("{role}  - containers.update\n")).unwrap();
    path.display().to_string()
}

/// Issue 9, item 3: every spelling of "unlimited" ends at the session's
/// cap, and negatives that mean nothing documented are refused, on create
/// and on update; read back from the daemon.
#[test]
fn limits_with_special_values_end_at_the_cap() {
    let Some(image) = ready() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rules = session_role_with_update(dir.path());
    let proxy = Proxy::start_with("session-update", true, &["--rules", &rules]);
    // The generic profile: pids 4096, memory 8g, cpus 2.
    let (pids, memory, cpus) = (4096i64, 8i64 << 30, 2_000_000_000i64);
    let m64 = 64i64 << 20;
    let create = |host: &str| {
        let name = unique("lim");
        let (status, answer) = proxy.post(
            &format!("/v1.41/containers/create?name={name}"),
            &format!(r#"{{"Image":"{image}","Cmd":["true"],"HostConfig":{{{host}}}}}"#),
        );
        (name, status, answer)
    };
    let mut made = Made(Vec::new());
    for (host, needle) in [
        (r#""PidsLimit":-5"#.to_string(), "PidsLimit"),
        (r#""NanoCpus":-1"#.into(), "NanoCpus"),
        (r#""Memory":-5"#.into(), "Memory"),
        (r#""Memory":-1"#.into(), "Memory"),
        (
            format!(r#""Memory":{m64},"MemorySwap":{}"#, 1i64 << 40),
            "MemorySwap",
        ),
        (r#""MemorySwap":-2"#.into(), "MemorySwap"),
        (r#""MemoryReservation":-1"#.into(), "MemoryReservation"),
        (
            r#""MemoryReservation":17179869184"#.into(),
            "MemoryReservation",
        ),
        (r#""KernelMemory":-1"#.into(), "KernelMemory"),
        (r#""CpuShares":-5"#.into(), "CpuShares"),
        (r#""CpuRealtimeRuntime":-1"#.into(), "CpuRealtime"),
        (r#""CpuQuota":-1"#.into(), "CpuQuota"),
        (r#""ShmSize":-1"#.into(), "ShmSize"),
        (
            r#""Ulimits":[{"Name":"rtprio","Soft":99,"Hard":99}]"#.into(),
            "Ulimits",
        ),
        (
            r#""Ulimits":[{"Name":"nofile","Soft":-5,"Hard":-5}]"#.into(),
            "Ulimits",
        ),
    ] {
        let (name, status, answer) = create(&host);
        assert_eq!(status, 403, "{host}: {answer}");
        assert!(answer.contains(needle), "{host}: {answer}");
        assert!(!exists("container", &name), "{host} made a container");
    }
    for (host, want) in [
        (
            r#""PidsLimit":0"#.to_string(),
            [("PidsLimit", pids)].to_vec(),
        ),
        (r#""PidsLimit":-1"#.into(), vec![("PidsLimit", pids)]),
        (String::new(), vec![("PidsLimit", pids), ("NanoCpus", cpus)]),
        (
            r#""Memory":0,"MemorySwap":-1"#.into(),
            vec![("Memory", memory), ("MemorySwap", memory)],
        ),
        (
            format!(r#""Memory":{m64},"MemorySwap":0"#),
            vec![("Memory", m64), ("MemorySwap", m64)],
        ),
        (
            format!(r#""Memory":{m64},"MemorySwap":-1"#),
            vec![("Memory", m64), ("MemorySwap", m64)],
        ),
        (r#""NanoCpus":0"#.into(), vec![("NanoCpus", cpus)]),
    ] {
        let (name, status, answer) = create(&host);
        made.0.push(("container", name.clone()));
        assert_eq!(status, 201, "{host}: {answer}");
        let hc = inspect("container", &name)["HostConfig"].clone();
        for (field, value) in want {
            assert_eq!(hc[field].as_i64(), Some(value), "{host}: {field} in {hc}");
        }
    }

    // Update: the same rules, read back from the daemon.
    let name = unique("upd");
    made.0.push(("container", name.clone()));
    let out = proxy.docker(&["create", "--name", &name, "-m", "64m", &image, "true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let update = |body: &str| proxy.post(&format!("/v1.41/containers/{name}/update"), body);
    for (body, needle) in [
        (r#"{"PidsLimit":-5}"#.to_string(), "PidsLimit"),
        (
            format!(r#"{{"Memory":{m64},"MemorySwap":{}}}"#, 1i64 << 40),
            "MemorySwap",
        ),
        (format!(r#"{{"MemorySwap":{}}}"#, 1i64 << 40), "MemorySwap"),
        (r#"{"NanoCpus":-1}"#.into(), "NanoCpus"),
        (r#"{"CpuRealtimeRuntime":-1}"#.into(), "CpuRealtime"),
        (r#"{"KernelMemory":-1}"#.into(), "KernelMemory"),
    ] {
        let (status, answer) = update(&body);
        assert_eq!(status, 403, "{body}: {answer}");
        assert!(answer.contains(needle), "{body}: {answer}");
    }
    let out = proxy.docker(&["update", "--pids-limit", "-1", &name]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (status, answer) = update(&format!(r#"{{"Memory":{m64},"MemorySwap":-1}}"#));
    assert_eq!(status, 200, "{answer}");
    let hc = inspect("container", &name)["HostConfig"].clone();
    assert_eq!(hc["PidsLimit"].as_i64(), Some(pids), "{hc}");
    assert_eq!(hc["Memory"].as_i64(), Some(m64), "{hc}");
    assert_eq!(hc["MemorySwap"].as_i64(), Some(m64), "{hc}");
    let (status, answer) = update(r#"{"PidsLimit":0}"#);
    assert_eq!(status, 200, "{answer}");
    let hc = inspect("container", &name)["HostConfig"].clone();
    assert_eq!(hc["PidsLimit"].as_i64(), Some(pids), "{hc}");
}

/// Issue 9, item 4: no child comes back by itself after the session (no
/// restart policy), and a session holds a bounded number of children, also
/// when creates race.
#[test]
fn children_do_not_restart_or_pile_up() {
    let Some(image) = ready() else { return };
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("few.yaml");
    std::fs::write(&profile, "extends: generic\nlimits:\n  containers: 3\n").unwrap();
    let rules = session_role_with_update(dir.path());
    let proxy = Proxy::start_with(
        "session-update",
        true,
        &["--profile", profile.to_str().unwrap(), "--rules", &rules],
    );
    let session = proxy.session.clone().unwrap();
    let label = format!("label=io.agentctl.session={session}");

    for policy in ["always", "unless-stopped", "on-failure"] {
        let name = unique("rp");
        assert_denied(
            &proxy.docker(&[
                "run",
                "-d",
                "--name",
                &name,
                "--restart",
                policy,
                &image,
                "true",
            ]),
            "RestartPolicy",
        );
        assert!(
            !exists("container", &name),
            "--restart {policy} made a container"
        );
    }
    let first = unique("kid");
    let out = proxy.docker(&[
        "create",
        "--name",
        &first,
        "--restart",
        "no",
        &image,
        "true",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = proxy.docker(&["update", "--restart", "always", &first]);
    assert_denied(&out, "RestartPolicy");
    let (status, answer) = proxy.post(
        &format!("/v1.41/containers/{first}/update"),
        r#"{"RestartPolicy":{"Name":"unless-stopped"}}"#,
    );
    assert_eq!(status, 403, "{answer}");
    assert_eq!(
        inspect("container", &first)["HostConfig"]["RestartPolicy"]["Name"],
        "no"
    );

    for _ in 0..2 {
        let out = proxy.docker(&["create", &image, "true"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = proxy.docker(&["create", &image, "true"]);
    assert_denied(&out, "limits.containers");
    assert_eq!(direct_ids(&["ps", "-aq", "--filter", &label]).len(), 3);

    // One place free, five creates at once: one of them gets it.
    let out = proxy.docker(&["rm", &first]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let body = format!(r#"{{"Image":"{image}","Cmd":["true"]}}"#);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..5)
            .map(|_| s.spawn(|| proxy.post("/v1.41/containers/create", &body).0))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 403).count(),
        4,
        "{statuses:?}"
    );
    assert_eq!(direct_ids(&["ps", "-aq", "--filter", &label]).len(), 3);
}

/// An image made at the daemon from the test image, with `changes`.
fn committed_image(image: &str, changes: &[&str]) -> String {
    let base = unique("base");
    let out = direct(&["create", "--name", &base, image, "true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tag = format!("agentctl-test/{}:latest", unique("img"));
    let mut args = vec!["commit"];
    for c in changes {
        args.extend(["--change", c]);
    }
    args.extend([base.as_str(), tag.as_str()]);
    let out = direct(&args);
    direct(&["rm", "-f", &base]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    tag
}

/// Issue 9, item 5: no kind of object a role creates can carry agentctl's
/// own labels, whichever field would give them.
#[test]
fn reserved_labels_are_refused_on_every_kind_of_object() {
    let Some(image) = ready() else { return };
    let forged_image = committed_image(&image, &["LABEL io.agentctl.managed=true"]);
    // Dropped after `made`: the image goes once its containers have.
    let _image = Made(vec![("image", forged_image.clone())]);
    let mut made = Made(Vec::new());
    let forged = "label=io.agentctl.managed";
    let before = direct_ids(&["volume", "ls", "-q", "--filter", forged]);

    // A global role like launcher, but not agentctl's own launcher.
    let rules_dir = tempfile::tempdir().unwrap();
    let global = rules_dir.path().join("global.yaml");
    let launcher = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../profiles/docker-roles/launcher.yaml"),
    )
    .unwrap();
    assert!(launcher.contains("agentctl_sandboxes: true"));
    std::fs::write(&global, launcher.replace("agentctl_sandboxes: true", "")).unwrap();
    for role in ["session", "global"] {
        let proxy = if role == "session" {
            Proxy::start(role, true)
        } else {
            Proxy::start_with(role, false, &["--rules", global.to_str().unwrap()])
        };
        let target = unique("target");
        made.0.push(("container", target.clone()));
        let out = proxy.docker(&["run", "-d", "--name", &target, &image, "sleep", "60"]);
        assert!(out.status.success(), "{role}: {}", text(&out.stderr));
        let vol = unique("newvol");
        made.0.push(("volume", vol.clone()));
        for (flags, needle) in [
            (
                vec!["--label".to_string(), "io.agentctl.managed=true".into()],
                "Config.Labels",
            ),
            // Go's decoder folds case: the proxy's own label must not end
            // up beside one the daemon's readers could take for it.
            (
                vec!["--label".to_string(), "io.agentctL.child=x".into()],
                "Config.Labels",
            ),
            (
                vec![
                    "--mount".into(),
                    "type=volume,dst=/d,volume-label=io.agentctl.managed=true".into(),
                ],
                "VolumeOptions.Labels",
            ),
            (
                vec![
                    "--mount".into(),
                    format!("type=volume,src={vol},dst=/d,volume-label=io.agentctl.session=x"),
                ],
                "VolumeOptions.Labels",
            ),
        ] {
            let name = unique("lbl");
            made.0.push(("container", name.clone()));
            let mut args = vec!["run", "-d", "--name", name.as_str()];
            args.extend(flags.iter().map(String::as_str));
            args.extend([image.as_str(), "true"]);
            assert_denied(&proxy.docker(&args), needle);
            assert!(
                !exists("container", &name),
                "{role}: {flags:?} made a container"
            );
        }
        let name = unique("lbl-img");
        made.0.push(("container", name.clone()));
        assert_denied(
            &proxy.docker(&["run", "-d", "--name", &name, &forged_image, "true"]),
            "io.agentctl.managed",
        );
        assert!(
            !exists("container", &name),
            "{role}: the image's label went through"
        );
        // Exec instances have no labels: the key is unknown.
        let (status, answer) = proxy.post(
            &format!("/v1.41/containers/{target}/exec"),
            r#"{"Cmd":["true"],"Labels":{"io.agentctl.session":"x"}}"#,
        );
        assert_eq!(status, 400, "{role}: {answer}");
        assert!(answer.contains("Labels"), "{role}: {answer}");
        if role == "session" {
            assert_denied(
                &proxy.docker(&[
                    "network",
                    "create",
                    "--label",
                    "io.agentctl.child=true",
                    &unique("n"),
                ]),
                "network.Labels",
            );
            assert_denied(
                &proxy.docker(&[
                    "volume",
                    "create",
                    "--label",
                    "io.agentctl.session=x",
                    &unique("v"),
                ]),
                "volume.Labels",
            );
        }
    }
    assert_eq!(
        direct_ids(&["volume", "ls", "-q", "--filter", forged]),
        before,
        "a volume got a forged label"
    );
}

/// agentctl's own launcher (the stack's worker) marks its sandboxes with
/// agentctl's labels and gives them agentctl's seccomp profile; no other
/// seccomp profile, and nothing unconfined, passes.
#[test]
fn the_launcher_role_takes_agentctls_labels_and_its_seccomp_profile_only() {
    let Some(image) = ready() else { return };
    let mut made = Made(Vec::new());
    let proxy = Proxy::start("launcher", false);
    let name = unique("marked");
    made.0.push(("container", name.clone()));
    let ours = policy::seccomp::docker_json(&policy::seccomp::default_profile());
    // The docker CLI reads a profile from a file.
    let files = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = files.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let ours_file = file("ours.json", &ours);
    let out = proxy.docker(&[
        "create",
        "--name",
        &name,
        "--label",
        "io.agentctl.managed=true",
        "--security-opt",
        &format!("seccomp={ours_file}"),
        &image,
        "true",
    ]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{}", &err[..err.len().min(400)]);
    let o = Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{json .HostConfig.SecurityOpt}}",
            &name,
        ])
        .output()
        .unwrap();
    assert!(
        text(&o.stdout).contains("SCMP_ACT_ERRNO"),
        "the profile reached the engine"
    );
    // One rule more than agentctl's: a profile of the client's own.
    let mut v: serde_json::Value = serde_json::from_str(&ours).unwrap();
    v["syscalls"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"names": ["mount"], "action": "SCMP_ACT_ALLOW"}));
    for opt in [
        "seccomp=unconfined".to_string(),
        format!("seccomp={}", file("more.json", &v.to_string())),
        format!(
            "seccomp={}",
            file("allow.json", r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#)
        ),
        "apparmor=unconfined".to_string(),
    ] {
        let name = unique("unmarked");
        made.0.push(("container", name.clone()));
        assert_denied(
            &proxy.docker(&[
                "create",
                "--name",
                &name,
                "--security-opt",
                &opt,
                &image,
                "true",
            ]),
            "SecurityOpt",
        );
        assert!(!exists("container", &name), "{opt} made a container");
    }
}

/// A global role borrows only the binds it could have asked for: a
/// container that holds the engine's socket (a socket proxy's) lends it to
/// nobody through `VolumesFrom`.
#[test]
fn volumes_from_lends_no_bind_the_role_could_not_ask_for() {
    let Some(image) = ready() else { return };
    let mut made = Made(Vec::new());
    let lender = unique("lender");
    made.0.push(("container", lender.clone()));
    let o = Command::new("docker")
        .args(["create", "--name", &lender, "-v", "/var/run/docker.sock:/s"])
        .args([&image, "true"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let plain = unique("plainlender");
    made.0.push(("container", plain.clone()));
    let o = Command::new("docker")
        .args(["create", "--name", &plain, "-v", "/w"])
        .args([&image, "true"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let proxy = Proxy::start("launcher", false);
    let name = unique("borrower");
    made.0.push(("container", name.clone()));
    assert_denied(
        &proxy.docker(&[
            "create",
            "--name",
            &name,
            "--volumes-from",
            &lender,
            &image,
            "true",
        ]),
        "lends",
    );
    assert!(!exists("container", &name), "the socket was lent");
    // A container with volumes only lends them.
    let ok = unique("borrower-ok");
    made.0.push(("container", ok.clone()));
    let out = proxy.docker(&[
        "create",
        "--name",
        &ok,
        "--volumes-from",
        &plain,
        &image,
        "true",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Issue 9, item 6: `binds: any` (the launcher role) still keeps /proc,
/// /sys and /dev out, and the engine's socket by any path.
#[test]
fn binds_refuse_proc_sys_dev_and_the_engine_socket_by_any_path() {
    let Some(image) = ready() else { return };
    let proxy = Proxy::start("launcher", false);
    let mut made = Made(Vec::new());
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("p");
    std::os::unix::fs::symlink("/proc", &link).unwrap();
    let sys_link = dir.path().join("s");
    std::os::unix::fs::symlink("/sys/fs/cgroup", &sys_link).unwrap();
    let link = link.display().to_string();
    let sys_link = sys_link.display().to_string();
    let dockerd = text(
        &Command::new("pgrep")
            .args(["-o", "dockerd"])
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .to_string();
    let mut sources = vec![
        "/proc/1/root/var/run/docker.sock".to_string(),
        "/proc/self/root/var/run/docker.sock".into(),
        "/proc".into(),
        "/proc/self/root".into(),
        "//proc".into(),
        "/sys".into(),
        "/sys/fs/cgroup".into(),
        "/dev".into(),
        "/dev/shm".into(),
        "/dev/zero".into(),
        link.clone(),
        format!("{link}/self/root/etc"),
        sys_link,
    ];
    if !dockerd.is_empty() {
        sources.push(format!("/proc/{dockerd}/root/run"));
    }
    for src in &sources {
        for flags in [
            vec!["-v".to_string(), format!("{src}:/x")],
            vec!["--mount".into(), format!("type=bind,src={src},dst=/x")],
        ] {
            let name = unique("pbind");
            made.0.push(("container", name.clone()));
            let mut args = vec!["run", "--name", name.as_str()];
            args.extend(flags.iter().map(String::as_str));
            args.extend([image.as_str(), "true"]);
            let out = proxy.docker(&args);
            let err = text(&out.stderr);
            assert!(!out.status.success(), "{flags:?} went through");
            assert!(
                err.contains("denied by agentctl")
                    && (err.contains("/proc") || err.contains("/sys") || err.contains("/dev")),
                "{flags:?}: the refusal should name the host filesystem: {err}"
            );
            assert!(!exists("container", &name), "{flags:?} made a container");
        }
    }
    // Another path to the socket's directory (a bind mount of /run) is
    // still the socket's directory.
    let alias = dir.path().join("run");
    std::fs::create_dir(&alias).unwrap();
    let real_sock = std::fs::canonicalize("/var/run/docker.sock").unwrap();
    let run = real_sock.parent().unwrap();
    let mounted = support::is_root()
        && Command::new("mount")
            .arg("--bind")
            .arg(run)
            .arg(&alias)
            .status()
            .is_ok_and(|s| s.success());
    if mounted {
        let name = unique("alias");
        made.0.push(("container", name.clone()));
        let out = proxy.docker(&[
            "run",
            "--name",
            &name,
            "-v",
            &format!("{}:/r", alias.display()),
            &image,
            "true",
        ]);
        let _ = Command::new("umount").arg(&alias).status();
        assert_denied(&out, "engine's socket");
        assert!(!exists("container", &name));
    } else {
        require(
            false,
            "root and mount --bind, for the bind-mounted alias of /run",
        );
    }
    // /dev/null, to hide a file, and an ordinary host directory still bind.
    let out = proxy.docker(&["run", "--rm", "-v", "/dev/null:/etc/hidden", &image, "true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plain = dir.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let out = proxy.docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/x", plain.display()),
        &image,
        "true",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Issue 9, item 7: a working directory under /proc (runc's "Leaky Vessels"
/// class, CVE-2024-21626) is refused in any spelling, from the request or
/// from the image, on create and on exec.
#[test]
fn working_dir_under_proc_is_refused() {
    let Some(image) = ready() else { return };
    let proc_image = committed_image(&image, &["WORKDIR /proc/self/fd"]);
    let _image = Made(vec![("image", proc_image.clone())]);
    let mut made = Made(Vec::new());
    for role in ["session", "launcher"] {
        let proxy = Proxy::start(role, role == "session");
        for dir in [
            "/proc/self/fd/7",
            "//proc/self/fd",
            "/./proc/1/cwd",
            "/x/../proc/self",
            "/proc/",
            "/proc",
        ] {
            let name = unique("wd");
            made.0.push(("container", name.clone()));
            assert_denied(
                &proxy.docker(&["run", "--name", &name, "-w", dir, &image, "true"]),
                "WorkingDir",
            );
            assert!(
                !exists("container", &name),
                "{role}: -w {dir} made a container"
            );
        }
        let name = unique("wd-img");
        made.0.push(("container", name.clone()));
        assert_denied(
            &proxy.docker(&["run", "--name", &name, &proc_image, "true"]),
            "WorkingDir",
        );
        assert!(
            !exists("container", &name),
            "{role}: the image's WorkingDir went through"
        );

        let target = unique("wd-exec");
        made.0.push(("container", target.clone()));
        let out = proxy.docker(&[
            "run", "-d", "--name", &target, "-w", "/tmp", &image, "sleep", "60",
        ]);
        assert!(out.status.success(), "{role}: {}", text(&out.stderr));
        for dir in ["/proc/self/fd/7", "/proc/../proc/self"] {
            assert_denied(
                &proxy.docker(&["exec", "-w", dir, &target, "pwd"]),
                "WorkingDir",
            );
        }
        let out = proxy.docker(&["exec", "-w", "/", &target, "pwd"]);
        assert_eq!(text(&out.stdout), "/\n", "{role}: {}", text(&out.stderr));
    }
}

/// Regression (issue 10, item 7): a client of the proxy could pull an image
/// named `agentctl/...` (by any spelling of Docker Hub) over the one
/// agentctl built; agentctl's images are only ever built on the host. The
/// proxy refuses such a pull for every role, naming the rule.
#[test]
fn pulls_of_agentctl_s_own_image_names_are_refused() {
    if ready().is_none() {
        return;
    }
    for (role, session) in [("session", true), ("launcher", false)] {
        let proxy = Proxy::start_with(role, session, &["--network", "bridge"]);
        for name in [
            "agentctl/hostroot:0123456789ab",
            "docker.io/agentctl/agent-base",
            "index.docker.io/agentctl/agent-base:latest",
        ] {
            let out = proxy.docker(&["pull", name]);
            assert_denied(&out, "agentctl/");
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A GET over plain TCP; the whole answer, head included.
fn http_get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A child process killed when dropped, even when the test fails.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The proxy as it runs in a container of a compose stack: the launcher
/// role over TCP, binds held to `--bind-root`, decisions counted on
/// `--metrics-listen`. A proxy in a container sees host paths only where
/// they are mounted at the same place, so the roots are what it can judge.
#[test]
fn bind_roots_hold_every_bind_and_metrics_count_the_decisions() {
    let Some(image) = ready() else { return };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let ws = root.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let mut child = Command::new(binary())
        .args(["--store", "none", "proxy", "--role", "launcher", "--listen"])
        .arg(format!("tcp://127.0.0.1:{port}"))
        .arg("--bind-root")
        .arg(&root)
        .arg("--metrics-listen")
        .arg(format!("tcp://127.0.0.1:{metrics_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", metrics_port)).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    {
        if let Ok(Some(st)) = child.try_wait() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("agentctl proxy exited ({st}): {err}");
        }
        assert!(Instant::now() < deadline, "the proxy never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _proxy = Killed(child);
    let docker = |args: &[&str]| {
        Command::new("docker")
            .env("DOCKER_HOST", format!("tcp://127.0.0.1:{port}"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let mut made = Made(Vec::new());

    // Under the root, and /dev/null (to hide a file): created.
    let ok = unique("broot-ok");
    made.0.push(("container", ok.clone()));
    let out = docker(&[
        "create",
        "--name",
        &ok,
        "-v",
        &format!("{}:/ws", ws.display()),
        "-v",
        "/dev/null:/ws/hidden",
        &image,
        "true",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(exists("container", &ok));

    // Outside the roots, directly or through a symlink under the root.
    let link = root.join("link").display().to_string();
    for (what, flags) in [
        ("/etc", vec!["-v".to_string(), "/etc:/x".to_string()]),
        (
            "a symlink to /etc",
            vec!["--mount".into(), format!("type=bind,src={link},dst=/x")],
        ),
    ] {
        let name = unique("broot-out");
        made.0.push(("container", name.clone()));
        let mut args = vec!["create", "--name", name.as_str()];
        args.extend(flags.iter().map(String::as_str));
        args.extend([image.as_str(), "true"]);
        let out = docker(&args);
        assert_denied(&out, "outside the proxy's bind roots");
        let err = text(&out.stderr);
        assert!(
            err.contains("\"/etc\"") && err.contains(&root.display().to_string()),
            "{what}: the refusal should name the source and the roots: {err}"
        );
        assert!(!exists("container", &name), "{what} made a container");
    }

    // The daemon resolves the source again at start: a root's directory
    // swapped for a symlink out of it since the create is refused then.
    std::fs::rename(&ws, root.join("ws.old")).unwrap();
    std::os::unix::fs::symlink("/etc", &ws).unwrap();
    assert_denied(&docker(&["start", &ok]), "outside the proxy's bind roots");
    let started = text(&direct(&["inspect", "-f", "{{.State.StartedAt}}", &ok]).stdout);
    assert!(started.starts_with("0001-01-01"), "it started: {started}");

    let metrics = http_get(metrics_port, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200 "), "{metrics}");
    assert!(
        metrics.contains("Content-Type: text/plain; version=0.0.4"),
        "{metrics}"
    );
    for line in [
        "agentctl_proxy_requests_total{role=\"launcher\",operation=\"containers.create\",decision=\"allowed\"} 1",
        "agentctl_proxy_requests_total{role=\"launcher\",operation=\"containers.create\",decision=\"denied\"} 2",
        "agentctl_proxy_requests_total{role=\"launcher\",operation=\"containers.start\",decision=\"denied\"} 1",
        "agentctl_proxy_up 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("agentctl_proxy_info{role=\"launcher\",api=\"1.")),
        "{metrics}"
    );
    assert!(http_get(metrics_port, "/").starts_with("HTTP/1.1 404 "));
    // The Docker API is not served on the metrics listener, nor the
    // metrics on the API's.
    assert!(http_get(metrics_port, "/v1.47/containers/json").starts_with("HTTP/1.1 404 "));
    let api = http_get(port, "/metrics");
    assert!(api.starts_with("HTTP/1.1 403 "), "{api}");
}

/// Bind roots that would restrict nothing, or a role that binds nothing,
/// are refused at start, naming the flag.
#[test]
fn bind_roots_that_restrict_nothing_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let file = file.display().to_string();
    let missing = dir.path().join("missing").display().to_string();
    for (role, root, says) in [
        ("launcher", "/", "restrict nothing"),
        ("launcher", "/..", "restrict nothing"),
        ("launcher", file.as_str(), "not a directory"),
        ("launcher", missing.as_str(), "cannot be resolved"),
        ("logs-reader", "/tmp", "pointless with role logs-reader"),
    ] {
        let out = Command::new(binary())
            .args([
                "--store",
                "none",
                "proxy",
                "--listen",
                "unix:///nonexistent/agentctl-proxy.sock",
                "--upstream",
                "unix:///nonexistent/docker.sock",
                "--role",
                role,
                "--bind-root",
                root,
            ])
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{role} --bind-root {root} started");
        assert!(
            err.contains("--bind-root") && err.contains(says),
            "{role} --bind-root {root}: {err}"
        );
    }
}
