//! PostgreSQL for tests and benchmarks (feature `testing`): a server from
//! `AGENTCTL_TEST_POSTGRES`, or a throwaway cluster started on the spot,
//! and a fresh database per test.
//!
//! The throwaway cluster lives in a temporary directory: `initdb` (as the
//! `postgres` user when running as root, which initdb refuses), then
//! `pg_ctl start` on a free port of 127.0.0.1 with its unix socket in the
//! same directory. A small watchdog process stops the server and removes
//! the directory once the process that started it has exited, however it
//! exits.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use sqlx::Connection;

/// The variable naming a server the tests may create databases on: the URL
/// of a superuser, or of a role with CREATEDB.
pub const ENV: &str = "AGENTCTL_TEST_POSTGRES";

/// A server to create databases on.
#[derive(Clone, Debug)]
pub struct PgServer {
    /// Its administrative URL (a database that exists, such as `postgres`).
    pub url: String,
    /// Where it came from, for messages: the variable or the cluster's
    /// directory.
    pub origin: String,
}

/// How to start a throwaway cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync off: for tests, whose data dies with the cluster.
    Fast,
    /// The server's defaults: for benchmarks.
    Default,
}

/// Whether this run must not skip anything (CI sets CI=true).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips a test loudly (straight to fd 2, past the harness's capture), or
/// fails it under CI.
pub fn skip(test: &str, why: &str) {
    if in_ci() {
        panic!("{test}: {why} (CI=true: this test may not be skipped)");
    }
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n*** SKIPPED {test}: {why} ***\n"
    );
}

/// The server for this process's tests: `AGENTCTL_TEST_POSTGRES`, or one
/// throwaway cluster started on first use and shared by every test of the
/// process. `Err` says why there is none.
pub fn server() -> Result<&'static PgServer, String> {
    static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| match std::env::var(ENV) {
            Ok(url) if !url.is_empty() => Ok(PgServer {
                url,
                origin: ENV.into(),
            }),
            _ => start_cluster(Durability::Fast),
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The directory of PostgreSQL's server programs: the newest
/// /usr/lib/postgresql/N/bin (Debian), `pg_config --bindir`, or PATH.
pub fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(bin) = from_pg_config.filter(|b| b.join("initdb").is_file()) {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

/// Starts a throwaway cluster; it stops when this process exits.
pub fn start_cluster(durability: Durability) -> Result<PgServer, String> {
    let bin = bin_dir().ok_or_else(|| {
        format!(
            "no PostgreSQL server programs (initdb, pg_ctl); install postgresql or set {ENV} to \
             the URL of a server"
        )
    })?;
    // initdb refuses to run as root: run the server as `postgres` then.
    let owner = if nix::unistd::geteuid().is_root() {
        let user = nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .ok_or_else(|| {
                format!(
                    "running as root, and there is no `postgres` user to run initdb as; create \
                     one or set {ENV}"
                )
            })?;
        Some((user.uid.as_raw(), user.gid.as_raw()))
    } else {
        None
    };
    let dir = std::env::temp_dir().join(format!(
        "agentctl-pg-{}-{}",
        std::process::id(),
        random_hex(4)
    ));
    std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot set the mode of {}: {e}", dir.display()))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(|e| format!("cannot give {} to postgres: {e}", dir.display()))?;
    }
    // From here on the watchdog removes the directory, whatever happens.
    watchdog(&dir)?;
    let data = dir.join("data");
    let as_owner = |prog: &str| {
        let mut c = Command::new(bin.join(prog));
        c.current_dir(&dir)
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .env_remove("PGHOST")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = owner {
            c.uid(uid).gid(gid);
        }
        c
    };
    let out = as_owner("initdb")
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
        .output()
        .map_err(|e| format!("cannot run initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let fast = match durability {
        Durability::Fast => " -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
        Durability::Default => "",
    };
    let log = dir.join("postgres.log");
    let mut last_err = String::new();
    // A free port may be taken between finding it and binding it: retry.
    for _ in 0..3 {
        let port = free_port().map_err(|e| format!("cannot find a free port: {e}"))?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200{fast}",
            dir.display()
        );
        let out = as_owner("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .stdout(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if out.status.success() {
            return Ok(PgServer {
                url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                origin: format!("a throwaway cluster in {}", dir.display()),
            });
        }
        last_err = format!(
            "pg_ctl start failed ({}): {}; {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            tail(&log)
        );
    }
    Err(last_err)
}

/// A server setting (`SHOW name`), e.g. `fsync` or `server_version`.
pub async fn show(url: &str, name: &str) -> Result<String, String> {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", crate::url::redact(url)))?;
    let v: String = sqlx::query_scalar(&format!("SHOW \"{name}\""))
        .fetch_one(&mut conn)
        .await
        .map_err(|e| format!("SHOW {name}: {e}"))?;
    let _ = conn.close().await;
    Ok(v)
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" / ")
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A process, in a session of its own (so that the terminal's Ctrl-C does
/// not take it down), that waits for this process to exit, then stops the
/// cluster in `dir` and removes `dir`.
fn watchdog(dir: &Path) -> Result<(), String> {
    const SCRIPT: &str = r#"
while kill -0 "$1" 2>/dev/null; do sleep 1; done
pidfile="$2/data/postmaster.pid"
if [ -f "$pidfile" ]; then
  pid=$(head -n 1 "$pidfile")
  kill -INT "$pid" 2>/dev/null
  i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  kill -QUIT "$pid" 2>/dev/null
fi
rm -rf "$2"
"#;
    Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("agentctl-pg-watchdog")
        .arg(std::process::id().to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
        .map_err(|e| format!("cannot start the cluster's watchdog: {e}"))
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom is readable");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A database of its own on a [`PgServer`], dropped by [`finish`] or,
/// failing that, when the value is dropped.
///
/// [`finish`]: TestDatabase::finish
pub struct TestDatabase {
    /// The URL to hand to `SessionStore::connect`.
    pub url: String,
    pub name: String,
    admin_url: String,
    dropped: bool,
}

impl TestDatabase {
    /// Creates `agentctl_test_<random>` on `server`.
    pub async fn create(server: &PgServer) -> Result<TestDatabase, String> {
        let name = format!("agentctl_test_{}", random_hex(8));
        let mut conn = sqlx::PgConnection::connect(&server.url)
            .await
            .map_err(|e| {
                format!(
                    "cannot connect to {} ({}): {e}",
                    crate::url::redact(&server.url),
                    server.origin
                )
            })?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("cannot create database {name}: {e}"))?;
        let _ = conn.close().await;
        Ok(TestDatabase {
            url: with_database(&server.url, &name),
            name,
            admin_url: server.url.clone(),
            dropped: false,
        })
    }

    /// Drops the database, ending any connection still open to it.
    pub async fn finish(mut self) {
        drop_database(&self.admin_url, &self.name).await;
        self.dropped = true;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // A test that panicked: drop the database from a runtime of our
        // own, on a thread of our own (we may be inside another runtime).
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(drop_database(&admin, &name));
            }
        })
        .join();
    }
}

async fn drop_database(admin_url: &str, name: &str) {
    let Ok(mut conn) = sqlx::PgConnection::connect(admin_url).await else {
        return;
    };
    // WITH (FORCE) (Postgres 13) ends the connections still open.
    let forced = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await;
    if forced.is_err() {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\""))
            .execute(&mut conn)
            .await;
    }
    let _ = conn.close().await;
}

/// `url` with its database (the path) replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let (scheme, rest) = base.split_once("://").unwrap_or(("postgres", base));
    let authority = rest.split('/').next().unwrap_or(rest);
    let mut out = format!("{scheme}://{authority}/{name}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Brings the Postgres store at `url` up to migration `version` and no
/// further: the schema an earlier agentctl left, for tests of upgrades.
pub async fn migrate_postgres_through(url: &str, version: i64) -> Result<(), String> {
    let migrator = crate::migrations::Schema::Postgres
        .migrator(Some(version))
        .await
        .map_err(|e| format!("cannot read the migrations: {e}"))?;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", crate::url::redact(url)))?;
    migrator
        .run(&mut conn)
        .await
        .map_err(|e| format!("cannot migrate through {version}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database() {
        assert_eq!(
            with_database("postgres://u:p@h:1/postgres", "x"),
            "postgres://u:p@h:1/x"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(
            with_database("postgresql://h/d?sslmode=disable", "x"),
            "postgresql://h/x?sslmode=disable"
        );
    }
}
