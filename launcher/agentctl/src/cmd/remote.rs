//! `--server URL`: `run`, `ps`, `logs`, `stop`, `audit` and `rm` against a
//! team server's API, printing what the local commands print and exiting
//! with the same codes; `login` and `logout` keep its token.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use super::wiring::plural;
use crate::cli::{BackendKind, Command, PsArgs, RunArgs};
use store::utc as when;

/// The launcher's own failure, as locally.
const LAUNCHER_FAILURE: u8 = 125;

/// A server and the token to show it.
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// The answer: status and body.
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn error(&self) -> String {
        self.body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("the server answered {}", self.status))
    }

    fn ok(self) -> Result<Value> {
        if (200..300).contains(&self.status) {
            Ok(self.body)
        } else {
            bail!("server: {}", self.error())
        }
    }
}

/// `--server`'s URL: http(s), no path; plain http only to this machine
/// (a token must not cross a network in the clear).
fn base_url(url: &str) -> Result<String> {
    let u = url.trim().trim_end_matches('/');
    let rest = if let Some(r) = u.strip_prefix("https://") {
        r
    } else if let Some(r) = u.strip_prefix("http://") {
        let host = r.split('/').next().unwrap_or("");
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if !matches!(name, "127.0.0.1" | "localhost" | "[::1]") {
            bail!(
                "--server {url}: plain http sends the token in the clear; use https:// (plain \
                 http only to 127.0.0.1, localhost or [::1])"
            );
        }
        r
    } else {
        bail!("--server {url}: give https://HOST[:PORT]");
    };
    if rest.is_empty() || rest.contains('/') {
        bail!("--server {url}: give the server's address only, https://HOST[:PORT]");
    }
    Ok(u.to_string())
}

/// Where `login` keeps tokens: server URL → token, mode 0600.
fn tokens_file() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| anyhow!("neither XDG_CONFIG_HOME nor HOME is set"))?;
    Ok(base.join("agentctl").join("servers.json"))
}

fn read_tokens() -> Result<BTreeMap<String, String>> {
    let file = tokens_file()?;
    match std::fs::read_to_string(&file) {
        Ok(t) => serde_json::from_str(&t).with_context(|| {
            format!(
                "{} cannot be read; remove it and log in again",
                file.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
}

fn write_tokens(tokens: &BTreeMap<String, String>) -> Result<()> {
    let file = tokens_file()?;
    let dir = file.parent().expect("a file in a directory");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // A new file each time, renamed over the old: never a moment with
    // the tokens in a file others may read.
    let tmp = dir.join(format!(".servers.json.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(tokens)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &file).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(())
}

/// The HTTP client: the server's certificate checked against Mozilla's
/// roots, or against the CA in AGENTCTL_CA_CERT (a team's own).
fn agent() -> Result<ureq::Agent> {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)));
    if let Some(path) = std::env::var_os("AGENTCTL_CA_CERT").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        let pem = std::fs::read(&path)
            .with_context(|| format!("AGENTCTL_CA_CERT: cannot read {}", path.display()))?;
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            if let ureq::tls::PemItem::Certificate(c) =
                item.with_context(|| format!("AGENTCTL_CA_CERT: {} is not PEM", path.display()))?
            {
                certs.push(c);
            }
        }
        if certs.is_empty() {
            bail!(
                "AGENTCTL_CA_CERT: {} holds no certificate; give the PEM of the CA that signed the server's",
                path.display()
            );
        }
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)))
                .build(),
        );
    }
    Ok(ureq::Agent::new_with_config(config.build()))
}

impl Client {
    pub fn new(server: &str) -> Result<Client> {
        let base = base_url(server)?;
        let token = match std::env::var("AGENTCTL_TOKEN") {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
            _ => read_tokens()?.get(&base).cloned(),
        };
        Ok(Client {
            base,
            token,
            agent: agent()?,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => r.header("Authorization", format!("Bearer {t}")),
            None => r,
        }
    }

    fn answer(&self, r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Answer> {
        let mut resp = r.with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .with_context(|| format!("the server at {} sent an unreadable answer", self.base))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status == 401 {
            bail!(
                "server: {}; run `agentctl --server {} login`, or set AGENTCTL_TOKEN",
                Answer { status, body }.error(),
                self.base
            );
        }
        Ok(Answer { status, body })
    }

    fn get(&self, path: &str) -> Result<Answer> {
        self.answer(self.auth(self.agent.get(self.url(path))).call())
    }

    fn post(&self, path: &str, body: &Value) -> Result<Answer> {
        self.answer(
            self.auth(self.agent.post(self.url(path)))
                .content_type("application/json")
                .send(body.to_string()),
        )
    }

    fn delete(&self, path: &str) -> Result<Answer> {
        self.answer(self.auth(self.agent.delete(self.url(path))).call())
    }

    /// Streams session `id`'s output from chunk 0 (following it until the
    /// session ends when `follow`) to stdout, filtered for a terminal
    /// unless `raw`.
    fn stream_output(&self, id: &str, follow: bool, raw: bool) -> Result<()> {
        let path = format!(
            "/api/v1/sessions/{id}/output{}",
            if follow { "?follow=true" } else { "" }
        );
        let mut resp = self
            .auth(self.agent.get(self.url(&path)))
            .config()
            .timeout_global(None)
            .build()
            .call()
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            let body = serde_json::from_str(&text).unwrap_or(Value::Null);
            bail!("server: {}", Answer { status, body }.error());
        }
        let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
        let stdout = std::io::stdout();
        let to_terminal = stdout.is_terminal();
        let out = stdout.lock();
        let mut sink: Box<dyn Write> = if to_terminal && !raw {
            Box::new(sandbox::termfilter::FilterWriter::new(
                out,
                sandbox::termfilter::Mode::Text,
            ))
        } else {
            Box::new(out)
        };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader
                .read(&mut buf)
                .with_context(|| format!("the output stream from {} broke", self.base))?;
            if n == 0 {
                break;
            }
            sink.write_all(&buf[..n])?;
            sink.flush()?;
        }
        Ok(())
    }
}

/// Whether `command` acts on the server when `--server` is given.
pub fn handles(command: &Command) -> bool {
    matches!(
        command,
        Command::Run(_)
            | Command::Ps(_)
            | Command::Logs { .. }
            | Command::Stop { .. }
            | Command::Rm { .. }
            | Command::Audit { .. }
            | Command::Login { .. }
            | Command::Logout
            | Command::Exec { .. }
    )
}

pub fn dispatch(server: &str, command: Command) -> Result<u8> {
    if let Command::Login { token_stdin } = command {
        return login(server, token_stdin);
    }
    if let Command::Logout = command {
        let base = base_url(server)?;
        let mut tokens = read_tokens()?;
        if tokens.remove(&base).is_some() {
            write_tokens(&tokens)?;
            eprintln!("agentctl: forgot the token for {base}");
        } else {
            eprintln!("agentctl: no token was kept for {base}");
        }
        return Ok(0);
    }
    let c = Client::new(server)?;
    match command {
        Command::Run(args) => run(&c, args),
        Command::Ps(args) => ps(&c, args),
        Command::Logs {
            session,
            follow,
            raw,
        } => {
            let s = session_of(&c, &session)?;
            c.stream_output(&s, follow, raw)?;
            Ok(0)
        }
        Command::Stop { session, time } => stop(&c, &session, time),
        Command::Rm { session, force } => rm(&c, &session, force),
        Command::Audit {
            session,
            verify,
            json,
        } => audit(&c, &session, verify, json),
        Command::Exec { .. } => bail!(
            "exec is not available against a server: it needs a terminal on the worker's host"
        ),
        _ => bail!("not a remote command"),
    }
}

fn login(server: &str, token_stdin: bool) -> Result<u8> {
    let base = base_url(server)?;
    let token = if token_stdin {
        let mut t = String::new();
        std::io::stdin().read_to_string(&mut t)?;
        t.trim().to_string()
    } else if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("API token for {base}: "))?
            .trim()
            .to_string()
    } else {
        bail!("no terminal to ask for the token on; pipe it with --token-stdin");
    };
    if token.is_empty() {
        bail!(
            "an empty token; make one with `agentctl admin token create --user NAME --scope run`"
        );
    }
    // Checked before it is kept.
    let c = Client {
        token: Some(token.clone()),
        ..Client::new(&base)?
    };
    c.get("/api/v1/sessions?limit=1")?.ok()?;
    let mut tokens = read_tokens()?;
    tokens.insert(base.clone(), token);
    write_tokens(&tokens)?;
    eprintln!(
        "agentctl: logged in to {base}; the token is in {}",
        tokens_file()?.display()
    );
    Ok(0)
}

/// The full id of the session (or request) `prefix` names.
fn session_of(c: &Client, prefix: &str) -> Result<String> {
    let a = c.get(&format!("/api/v1/sessions/{prefix}"))?;
    if a.status == 200 {
        return a.body["session"]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the server sent a session without an id"));
    }
    if a.status == 404
        && prefix.len() == 32
        && c.get(&format!("/api/v1/requests/{prefix}"))?.status == 200
    {
        bail!(
            "session {prefix} has not started yet: its request is waiting for a worker (`agentctl ps`)"
        );
    }
    bail!("server: {}", a.error())
}

fn run(c: &Client, args: RunArgs) -> Result<u8> {
    let p = &args.policy;
    for (given, what) in [
        (p.network.is_some(), "--network"),
        (!p.allow.is_empty(), "--allow"),
        (!p.mounts.is_empty(), "--mount"),
        (!p.env.is_empty(), "--env"),
        (p.allow_home_workspace, "--allow-home-workspace"),
        (args.no_limits, "--no-limits"),
    ] {
        if given {
            bail!(
                "{what} is not available with --server: the profile decides on the worker; ask \
                 the server's admin for a profile that has it"
            );
        }
    }
    let workspace = match (&p.workspace, &args.git) {
        (Some(w), None) => json!({"path": w.display().to_string()}),
        (None, Some(url)) => match &args.rev {
            Some(rev) => json!({"git": url, "rev": rev}),
            None => json!({"git": url}),
        },
        _ => bail!(
            "with --server, give --workspace PATH (under your workspace root on the workers) or \
             --git URL"
        ),
    };
    let mut labels = serde_json::Map::new();
    for l in &args.labels {
        let (k, v) = store::queue::parse_label(l)?;
        labels.insert(k, Value::String(v));
    }
    let command = if args.command.is_empty() {
        vec!["/bin/sh".to_string()]
    } else {
        args.command.clone()
    };
    let mut body = json!({
        "profile": p.profile,
        "workspace": workspace,
        "command": command,
        "labels": labels,
    });
    if let Some(i) = &p.image {
        body["image"] = json!(i);
    }
    if let Some(b) = args.backend {
        body["backend"] = json!(match b {
            BackendKind::Native => "native",
            BackendKind::Docker => "docker",
            BackendKind::Vm => "vm",
        });
    }
    let asked = Instant::now();
    let id = c.post("/api/v1/sessions", &body)?.ok()?["request"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("the server sent no request id"))?;
    if args.detach {
        println!("{id}");
        return Ok(0);
    }
    // A Ctrl-C asks the server to stop the session (or withdraw the
    // request), as a local run forwards it.
    interrupt_stops(c, &id)?;
    let mut said = String::new();
    loop {
        let r = c.get(&format!("/api/v1/requests/{id}"))?.ok()?;
        let state = r["state"].as_str().unwrap_or("");
        match state {
            "queued" | "claimed" => {
                let why = r["waiting_because"].as_str().unwrap_or("").to_string();
                if !args.quiet && !why.is_empty() && why != said {
                    eprintln!("agentctl: request {} waiting: {why}", &id[..12]);
                    said = why;
                }
            }
            "started" | "done" => {
                if c.get(&format!("/api/v1/sessions/{id}"))?.status == 200 {
                    break;
                }
            }
            _ => {
                eprintln!(
                    "agentctl: request {} {state}: {}",
                    &id[..12],
                    r["reason"].as_str().unwrap_or("no reason given")
                );
                return Ok(LAUNCHER_FAILURE);
            }
        }
        std::thread::sleep(if asked.elapsed() < Duration::from_secs(2) {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(250)
        });
    }
    if !args.quiet {
        let s = &c.get(&format!("/api/v1/sessions/{id}"))?.ok()?["session"];
        eprintln!(
            "agentctl: session {} · profile {} · on {} · {}",
            &id[..12],
            s["profile"].as_str().unwrap_or("?"),
            s["host"].as_str().unwrap_or("?"),
            plural(s["policy"]["masked"].as_array().map_or(0, Vec::len), "path") + " masked",
        );
    }
    c.stream_output(&id, true, false)?;
    // The stream ends with the session; its record says how.
    let s = loop {
        let s = c.get(&format!("/api/v1/sessions/{id}"))?.ok()?["session"].clone();
        if !matches!(s["status"].as_str(), Some("created" | "running")) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let code = s["exit_code"].as_i64();
    match (s["status"].as_str(), code) {
        (_, Some(c)) => Ok(c.clamp(0, 255) as u8),
        (Some("lost"), None) => {
            eprintln!(
                "agentctl: session {} was lost: its worker went away",
                &id[..12]
            );
            Ok(LAUNCHER_FAILURE)
        }
        (status, None) => {
            eprintln!(
                "agentctl: session {} ended {} without an exit code",
                &id[..12],
                status.unwrap_or("?")
            );
            Ok(LAUNCHER_FAILURE)
        }
    }
}

/// SIGINT and SIGTERM, from now on, ask the server to stop session `id`
/// (or to withdraw its request); a second one exits at once.
fn interrupt_stops(c: &Client, id: &str) -> Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().context("cannot block SIGINT")?;
    let base = c.base.clone();
    let token = c.token.clone();
    let id = id.to_string();
    let agent = c.agent.clone();
    std::thread::spawn(move || {
        let c = Client {
            base: base.clone(),
            token,
            agent,
        };
        let mut asked = false;
        while let Ok(sig) = set.wait() {
            if asked {
                std::process::exit(128 + sig as i32);
            }
            asked = true;
            eprintln!("agentctl: asking {base} to stop session {}", &id[..12]);
            let stopped = c
                .post(&format!("/api/v1/sessions/{id}/stop"), &json!({}))
                .map(|a| a.status);
            if !matches!(stopped, Ok(202 | 409)) {
                let _ = c.delete(&format!("/api/v1/requests/{id}"));
            }
        }
    });
    Ok(())
}

fn ps(c: &Client, args: PsArgs) -> Result<u8> {
    if args.orphans {
        bail!(
            "--orphans looks at this host's sandboxes; run it on the worker's host without --server"
        );
    }
    let list = c
        .get(&format!(
            "/api/v1/sessions?limit={}",
            args.limit.clamp(1, 500)
        ))?
        .ok()?;
    let sessions: Vec<Value> = list["sessions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|s| args.all || matches!(s["status"].as_str(), Some("created" | "running")))
        .collect();
    let waiting = c.get("/api/v1/requests?state=queued,claimed")?;
    let waiting: Vec<Value> = if waiting.status == 200 {
        waiting.body["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&sessions)?);
        return Ok(0);
    }
    println!(
        "{:<12}  {:<8}  {:<6}  {:<12}  {:<6}  {:<19}  COMMAND",
        "SESSION", "STATUS", "EXIT", "PROFILE", "BACKEND", "CREATED"
    );
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    let cmd = |v: &Value| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    for r in &waiting {
        println!(
            "{:<12}  {:<8}  {:<6}  {:<12}  {:<6}  {:<19}  {}",
            text(&r["id"]).get(..12).unwrap_or(""),
            text(&r["state"]),
            "",
            trunc(&text(&r["profile"]), 12),
            r["backend"].as_str().unwrap_or("any"),
            r["created_at"].as_i64().map(when).unwrap_or_default(),
            trunc(&cmd(&r["command"]), 40),
        );
    }
    for s in &sessions {
        println!(
            "{:<12}  {:<8}  {:<6}  {:<12}  {:<6}  {:<19}  {}",
            text(&s["id"]).get(..12).unwrap_or(""),
            text(&s["status"]),
            s["exit_code"]
                .as_i64()
                .map(|c| c.to_string())
                .unwrap_or_default(),
            trunc(&text(&s["profile"]), 12),
            text(&s["backend"]),
            s["created_at"].as_i64().map(when).unwrap_or_default(),
            trunc(&cmd(&s["command"]), 40),
        );
    }
    Ok(0)
}

fn trunc(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn stop(c: &Client, prefix: &str, grace: u64) -> Result<u8> {
    let a = c.get(&format!("/api/v1/sessions/{prefix}"))?;
    if a.status == 404 && prefix.len() == 32 {
        // Not a session yet: a request still in the queue is withdrawn.
        let r = c.delete(&format!("/api/v1/requests/{prefix}"))?;
        if r.status == 200 {
            println!("{prefix}");
            return Ok(0);
        }
    }
    let s = a.ok()?;
    let id = s["session"]["id"].as_str().unwrap_or(prefix).to_string();
    let r = c.post(
        &format!("/api/v1/sessions/{id}/stop"),
        &json!({ "timeout_secs": grace }),
    )?;
    match r.status {
        202 => println!("{id}"),
        409 => println!(
            "{} is not running ({})",
            &id[..12],
            s["session"]["status"].as_str().unwrap_or("?")
        ),
        _ => bail!("server: {}", r.error()),
    }
    Ok(0)
}

fn rm(c: &Client, prefix: &str, force: bool) -> Result<u8> {
    let id = session_of(c, prefix)?;
    if force {
        let r = c.post(&format!("/api/v1/sessions/{id}/stop"), &json!({}))?;
        if r.status == 202 {
            let until = Instant::now() + Duration::from_secs(30);
            loop {
                let s = c.get(&format!("/api/v1/sessions/{id}"))?.ok()?;
                if !matches!(s["session"]["status"].as_str(), Some("created" | "running")) {
                    break;
                }
                if Instant::now() > until {
                    bail!("session {} did not stop within 30 s", &id[..12]);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    c.delete(&format!("/api/v1/sessions/{id}"))?.ok()?;
    println!("{id}");
    Ok(0)
}

fn audit(c: &Client, prefix: &str, verify: bool, json_out: bool) -> Result<u8> {
    let id = session_of(c, prefix)?;
    let s = c.get(&format!("/api/v1/sessions/{id}"))?.ok()?;
    let events = c.get(&format!("/api/v1/sessions/{id}/events"))?.ok()?;
    let verification = verify.then(|| s["verification"].clone());
    let session = &s["session"];
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "session": id,
                "events": events,
                "verification": verification,
            }))?
        );
    } else {
        println!(
            "session {id} ({}, {})",
            session["profile"].as_str().unwrap_or("?"),
            session["status"].as_str().unwrap_or("?")
        );
        for e in events.as_array().into_iter().flatten() {
            println!(
                "{:>4}  {}  {:<8}  {}  {}",
                e["seq"].as_i64().unwrap_or(0),
                e["at"].as_i64().map(when).unwrap_or_default(),
                e["kind"].as_str().unwrap_or("?"),
                e["actor"].as_str().unwrap_or("-"),
                e["data"]
            );
        }
    }
    match verification {
        Some(v) if v["ok"] != json!(true) => {
            let broken = v["broken"]["seq"]
                .as_i64()
                .map(|seq| {
                    format!(
                        "event {seq}: {}",
                        v["broken"]["reason"].as_str().unwrap_or("?")
                    )
                })
                .unwrap_or_else(|| "the chain does not verify".into());
            eprintln!(
                "agentctl: audit trail of {} is broken at {broken}",
                &id[..12]
            );
            Ok(1)
        }
        Some(v) => {
            if !json_out {
                println!(
                    "verified: {} events, chain intact",
                    v["events"].as_i64().unwrap_or(0)
                );
            }
            Ok(0)
        }
        None => Ok(0),
    }
}
