//! The dashboard in a real browser: Debian's chromium, driven over
//! WebDriver (chromedriver + fantoccini), offline. A session started by the
//! real binary is stopped with the page's button, and its status changes
//! on the page without a reload (server-sent events). A screenshot of each
//! page is kept in target/test-artifacts/.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use support::{binary, require, text};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn stop_a_session_in_a_real_browser_and_watch_its_status_change() {
    if !require(support::is_root(), "the native backend as root")
        || !require(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let store = format!("sqlite://{}", dir.path().join("s.db").display());
    let agentctl = |args: &[&str]| {
        let mut c = Command::new(binary());
        c.args(["--store", &store]).args(args).current_dir(&ws);
        c
    };
    let o = agentctl(&[
        "run",
        "-d",
        "-q",
        "--",
        "sh",
        "-c",
        "trap 'exit 7' TERM; i=0; while :; do i=$((i+1)); printf 'line %d \\033[32mok\\033[0m\\n' $i; sleep 0.05; done",
    ])
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let id = text(&o.stdout).trim().to_string();

    // A dashboard user of the same name as the Unix user who ran the
    // session (an operator sees and stops their own sessions).
    let me = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let mut add = agentctl(&[
        "admin",
        "user",
        "add",
        &me,
        "--role",
        "operator",
        "--password-stdin",
    ]);
    let mut child = add
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"a long enough password\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));

    let (serve, addr) = support::serve(&mut agentctl(&["serve", "--listen", "127.0.0.1:0"]));
    let _serve = Kill(serve);
    let port = addr.rsplit(':').next().unwrap().to_string();
    // The name a browser would use: the Host allow-list answers it.
    let base = format!("http://localhost:{port}");

    let driver_port = free_port();
    let _driver = Kill(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let profile = dir.path().join("chromium-profile");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-quic", "--disable-extensions", "--disable-default-apps",
                    "--window-size=1280,900", format!("--user-data-dir={}", profile.display()),
                ]
            }),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{driver_port}"))
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("chromedriver did not answer: {e}"),
            }
        };

        // Not logged in: the page sends the browser to the login form,
        // which brings it back.
        client.goto(&format!("{base}/sessions/{id}")).await.unwrap();
        assert!(client.current_url().await.unwrap().path() == "/login");
        client
            .find(Locator::Css("input[name=user]"))
            .await
            .unwrap()
            .send_keys(&me)
            .await
            .unwrap();
        client
            .find(Locator::Css("input[name=password]"))
            .await
            .unwrap()
            .send_keys("a long enough password")
            .await
            .unwrap();
        let png = client.screenshot().await.unwrap();
        std::fs::write(artifacts().join("dashboard-login.png"), png).unwrap();
        client
            .find(Locator::Css("form.login button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let Ok(who) = client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Id("who"))
            .await
        else {
            panic!(
                "not logged in at {}: {}",
                client.current_url().await.unwrap(),
                client.source().await.unwrap()
            );
        };
        assert_eq!(who.text().await.unwrap(), format!("{me} · operator"));
        assert_eq!(
            client.current_url().await.unwrap().path(),
            format!("/sessions/{id}")
        );

        // Filters: a search for the session's id finds it; one for
        // something else does not.
        client.goto(&format!("{base}/")).await.unwrap();
        let q = client.find(Locator::Css("input[name=q]")).await.unwrap();
        q.send_keys("no-such-thing").await.unwrap();
        client
            .find(Locator::Css("form.filter button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("td.empty"))
            .await
            .unwrap();
        let q = client.find(Locator::Css("input[name=q]")).await.unwrap();
        q.clear().await.unwrap();
        q.send_keys(&id[..10]).await.unwrap();
        client
            .find(Locator::Css("form.filter button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(&format!("tr[data-session='{id}'] a")))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let status = client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("h1 [data-field=status]"))
            .await
            .unwrap();
        assert_eq!(status.text().await.unwrap(), "running");
        client
            .execute("document.body.dataset.mark = 'same-page'; return 1;", vec![])
            .await
            .unwrap();
        // The live log grows while we look.
        let lines = |client: fantoccini::Client| async move {
            client
                .execute(
                    "return document.getElementById('log').textContent.split('\\n').length;",
                    vec![],
                )
                .await
                .unwrap()
                .as_u64()
                .unwrap()
        };
        let before = lines(client.clone()).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let after = lines(client.clone()).await;
        assert!(after > before + 5, "the log did not grow: {before} -> {after}");
        let green = client
            .find(Locator::Css("#log span.fg2"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(green, "ok");

        // Scrolled up, the log stops following and counts what comes.
        client
            .execute(
                "var l = document.getElementById('log'); l.scrollTop = 0; \
                 l.dispatchEvent(new Event('scroll')); return 1;",
                vec![],
            )
            .await
            .unwrap();
        let paused = client.find(Locator::Id("log-paused")).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let shown = loop {
            let t = paused.text().await.unwrap();
            let n: u64 = t
                .split_whitespace()
                .find_map(|w| w.parse().ok())
                .unwrap_or(0);
            if (paused.is_displayed().await.unwrap() && n > 3) || Instant::now() > deadline {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(shown.starts_with("paused · "), "{shown:?}");
        let top = client
            .execute("return document.getElementById('log').scrollTop;", vec![])
            .await
            .unwrap();
        assert_eq!(top, serde_json::json!(0), "the log scrolled while paused");

        // Search marks matches in place.
        client
            .find(Locator::Id("log-search"))
            .await
            .unwrap()
            .send_keys("line 1")
            .await
            .unwrap();
        let marks = client.find_all(Locator::Css("#log mark")).await.unwrap();
        assert!(!marks.is_empty(), "no match marked");
        assert_eq!(marks[0].text().await.unwrap(), "line 1");
        let png = client.screenshot().await.unwrap();
        std::fs::write(artifacts().join("dashboard-session-running.png"), png).unwrap();
        // Back to following.
        paused.click().await.unwrap();
        assert!(!paused.is_displayed().await.unwrap());

        client
            .find(Locator::Css("form.stop-form button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let shown = loop {
            let t = status.text().await.unwrap();
            if t == "stopped" || Instant::now() > deadline {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(shown, "stopped", "the page did not follow the stop");
        let mark = client
            .execute("return document.body.dataset.mark || 'reloaded';", vec![])
            .await
            .unwrap();
        assert_eq!(mark, serde_json::json!("same-page"), "the page reloaded");
        let exit = client
            .find(Locator::Css("[data-session] [data-field=exit]"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(exit, "7");
        let png = client.screenshot().await.unwrap();
        std::fs::write(artifacts().join("dashboard-session-stopped.png"), png).unwrap();

        client.goto(&format!("{base}/?all=1")).await.unwrap();
        let row_status = client
            .find(Locator::Css(&format!("tr[data-session='{id}'] [data-field=status]")))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(row_status, "stopped");
        let png = client.screenshot().await.unwrap();
        std::fs::write(artifacts().join("dashboard-sessions.png"), png).unwrap();
        client.close().await.unwrap();
    });
    let audit = agentctl(&["audit", "--json", &id]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    let asked = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "stop_requested")
        .expect("the click is on record")
        .clone();
    assert_eq!(
        asked["actor"].as_str().unwrap(),
        format!("{me} (dashboard)"),
        "{asked}"
    );
    let _ = agentctl(&["rm", &id]).output();
}

/// The session page says what a session asked beyond its profile (a
/// mount, a network, environment names), never an environment value.
#[test]
fn the_session_page_shows_what_was_asked_beyond_the_profile() {
    if !require(support::is_root(), "the native backend as root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let extra = dir.path().join("extra");
    std::fs::create_dir(&ws).unwrap();
    std::fs::create_dir(&extra).unwrap();
    let store = format!("sqlite://{}", dir.path().join("s.db").display());
    let agentctl = |args: &[&str]| {
        let mut c = Command::new(binary());
        c.args(["--store", &store]).args(args).current_dir(&ws);
        c
    };
    let mount = format!("{}:/extra:rw", extra.display());
    let o = agentctl(&[
        "run",
        "-q",
        "-e",
        "SOME_SETTING=value-not-to-show",
        "-m",
        &mount,
        "--",
        "true",
    ])
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = agentctl(&["run", "-q", "--", "true"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let ps = agentctl(&["ps", "-a", "--json"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
    let (plain, asked) = (
        list[0]["id"].as_str().unwrap().to_string(),
        list[1]["id"].as_str().unwrap().to_string(),
    );
    let (serve, addr) = support::serve(&mut agentctl(&["serve", "--listen", "127.0.0.1:0"]));
    let _serve = Kill(serve);
    let page = |id: &str| {
        let o = Command::new("curl")
            .args(["-s", &format!("http://{addr}/sessions/{id}")])
            .output()
            .unwrap();
        text(&o.stdout)
    };
    let body = page(&asked);
    let list = &body[body
        .find("id=\"asked\"")
        .expect("the list of what was asked")..];
    assert!(list.contains(&format!("rw {}", extra.display())), "{list}");
    assert!(list.contains("environment SOME_SETTING"), "{list}");
    assert!(
        !body.contains("value-not-to-show"),
        "an environment value is shown"
    );
    assert!(page(&plain).contains("Nothing: exactly the profile"));
}
