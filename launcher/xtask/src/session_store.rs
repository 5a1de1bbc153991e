//! `cargo xtask bench-store`: the session store (launcher/store) through
//! its public API, on SQLite and on Postgres side by side: how fast events
//! are appended to audit chains, and how long `list` and friends take with
//! 100,000 sessions in the store.
//!
//! Nothing here runs a command: every operation is timed in this process
//! with a clock around the awaited call, round trip to the database
//! included. Postgres is `AGENTCTL_TEST_POSTGRES` (a fresh database on it)
//! or a throwaway cluster with the server's default settings.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;
use store::testing::{self, Durability, TestDatabase};
use store::{Backend, ListQuery, NewEvent, NewSession, SessionStore, SessionUpdate, Status};
use tokio::task::JoinSet;

use crate::stats::Summary;

pub const DEFAULT_SESSIONS: usize = 100_000;
pub const MIN_SESSIONS: usize = 1_000;
/// Appends per round in each append benchmark.
pub const DEFAULT_EVENTS: usize = 1_000;
pub const MIN_EVENTS: usize = 100;
/// Concurrent writers (tasks) in the concurrent benchmarks, and while
/// recording the sessions; the store's pool has as many connections.
pub const WRITERS: usize = 8;
/// One session in this many stays live (created or running).
pub const LIVE_EVERY: usize = 100;
/// The goal for `list`'s default page with [`DEFAULT_SESSIONS`] sessions.
pub const LIST_GOAL_MS: f64 = 100.0;

/// One database's numbers.
pub struct DbReport {
    /// "SQLite 3.46.0", "PostgreSQL 15.14".
    pub version: String,
    /// Seconds to record every session.
    pub populate_secs: f64,
    /// Events per second in each round: one writer on one session, every
    /// writer on one session, every writer on a session of its own.
    pub one_writer: Vec<f64>,
    pub contended: Vec<f64>,
    pub spread: Vec<f64>,
    /// One append, one writer: every append of every round.
    pub append: Summary,
    pub list_live: Summary,
    pub list_all: Summary,
    pub get_prefix: Summary,
    pub count: Summary,
    pub verify: Summary,
}

pub struct StoreReport {
    pub sessions: usize,
    pub live: usize,
    pub events: usize,
    pub runs: usize,
    pub rounds: usize,
    pub writers: usize,
    /// Where the SQLite file was, and its file system.
    pub sqlite_fs: String,
    /// Where Postgres came from, and its durability settings.
    pub postgres_origin: String,
    pub postgres_settings: String,
    pub sqlite: DbReport,
    pub postgres: DbReport,
    pub load: (String, String),
}

pub fn check_sizes(sessions: usize, events: usize) -> Result<()> {
    ensure!(
        sessions >= MIN_SESSIONS,
        "--sessions {sessions}: at least {MIN_SESSIONS}"
    );
    ensure!(
        events >= MIN_EVENTS && events % WRITERS == 0,
        "--events {events}: at least {MIN_EVENTS}, a multiple of {WRITERS} (the writers share \
         them)"
    );
    Ok(())
}

/// Fails early, before any other benchmark runs, when there is no way to
/// get a Postgres server.
pub fn preflight() -> Result<()> {
    if std::env::var(testing::ENV).is_ok_and(|v| !v.is_empty()) {
        return Ok(());
    }
    ensure!(
        testing::bin_dir().is_some(),
        "the session store benchmark needs PostgreSQL: install its server programs (on Debian \
         `apt-get install postgresql`) or set {} to the URL of a server where it may create a \
         database",
        testing::ENV
    );
    Ok(())
}

pub fn bench_store(
    sessions: usize,
    events: usize,
    runs: usize,
    rounds: usize,
) -> Result<StoreReport> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")?;
    rt.block_on(run(sessions, events, runs, rounds))
}

/// The two stores under test, and what keeps their databases alive.
struct Stores {
    sqlite: Arc<SessionStore>,
    postgres: Arc<SessionStore>,
    _sqlite_dir: tempfile::TempDir,
    postgres_db: TestDatabase,
}

async fn run(sessions: usize, events: usize, runs: usize, rounds: usize) -> Result<StoreReport> {
    let dir = tempfile::Builder::new()
        .prefix("agentctl-bench-store-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let sqlite_path = dir.path().join("agentctl.db");
    let mut sqlite_fs = crate::machine::fs_type(dir.path());
    if crate::machine::ext4_without_journal(dir.path()) {
        sqlite_fs.push_str(" without a journal");
    }

    let (server, postgres_origin) = match std::env::var(testing::ENV) {
        Ok(url) if !url.is_empty() => (
            testing::PgServer {
                url,
                origin: testing::ENV.into(),
            },
            format!("the server at {} (a fresh database)", testing::ENV),
        ),
        _ => {
            eprintln!("xtask: starting a throwaway PostgreSQL cluster");
            let server = testing::start_cluster(Durability::Default).map_err(anyhow::Error::msg)?;
            (
                server,
                "a throwaway cluster with the server's default settings".to_string(),
            )
        }
    };
    let postgres_db = TestDatabase::create(&server)
        .await
        .map_err(anyhow::Error::msg)?;
    let stores = Stores {
        sqlite: Arc::new(
            SessionStore::connect(&format!("sqlite://{}", sqlite_path.display())).await?,
        ),
        postgres: Arc::new(SessionStore::connect(&postgres_db.url).await?),
        _sqlite_dir: dir,
        postgres_db,
    };
    let postgres_settings = pg_settings(&stores.postgres_db.url).await?;
    let both = [&stores.sqlite, &stores.postgres];

    let load_before = crate::machine::loadavg();
    // The sessions first, so that the appends and reads below run against
    // a store of that size.
    // The same sessions in both stores.
    let ids: Arc<Vec<String>> = Arc::new((0..sessions).map(|_| testing::random_hex(16)).collect());
    let mut populate = Vec::new();
    for store in both {
        eprintln!(
            "xtask: recording {sessions} sessions in {}",
            store.version().await?
        );
        populate.push(populate_store(store.clone(), ids.clone()).await?);
    }
    let live = sessions.div_ceil(LIVE_EVERY);

    // Appends: per round, each benchmark on each database in turn.
    let mut appends: [Appends; 2] = Default::default();
    for r in 1..=rounds {
        eprintln!("xtask: appends, round {r} of {rounds}");
        for (store, a) in both.iter().zip(appends.iter_mut()) {
            a.round(store, events).await?;
        }
    }

    // Reads: per round, `runs` of each operation on each database in turn.
    let mut reads: [Reads; 2] = Default::default();
    for r in 1..=rounds {
        eprintln!("xtask: reads, round {r} of {rounds}");
        for ((store, rd), a) in both.iter().zip(reads.iter_mut()).zip(&appends) {
            rd.round(store, runs, &ids, &a.chain, sessions, live)
                .await?;
        }
    }
    let load_after = crate::machine::loadavg();

    let mut reports = Vec::new();
    for (((store, secs), a), rd) in both.iter().zip(populate).zip(appends).zip(reads) {
        reports.push(DbReport {
            version: store.version().await?,
            populate_secs: secs,
            one_writer: a.one_writer,
            contended: a.contended,
            spread: a.spread,
            append: Summary::from_millis(&a.latencies)?,
            list_live: Summary::from_millis(&rd.list_live)?,
            list_all: Summary::from_millis(&rd.list_all)?,
            get_prefix: Summary::from_millis(&rd.get_prefix)?,
            count: Summary::from_millis(&rd.count)?,
            verify: Summary::from_millis(&rd.verify)?,
        });
    }
    stores.sqlite.close().await;
    stores.postgres.close().await;
    stores.postgres_db.finish().await;
    let postgres = reports.pop().expect("two reports");
    let sqlite = reports.pop().expect("two reports");
    Ok(StoreReport {
        sessions,
        live,
        events,
        runs,
        rounds,
        writers: WRITERS,
        sqlite_fs,
        postgres_origin,
        postgres_settings,
        sqlite,
        postgres,
        load: (load_before, load_after),
    })
}

/// "fsync on, synchronous_commit on".
async fn pg_settings(url: &str) -> Result<String> {
    let mut out = Vec::new();
    for setting in ["fsync", "synchronous_commit"] {
        let v = testing::show(url, setting)
            .await
            .map_err(anyhow::Error::msg)?;
        out.push(format!("{setting} {v}"));
    }
    Ok(out.join(", "))
}

const POLICY: &str = r#"{"profile":"generic","network":"none","limits":{"pids":512}}"#;

fn new_session(id: String, created_at: i64) -> NewSession {
    NewSession {
        id,
        profile: "generic".into(),
        backend: Backend::Native,
        image: None,
        workspace: "/home/bench/project".into(),
        command: vec!["claude".into(), "--resume".into()],
        user: "bench".into(),
        uid: 1000,
        host: "bench-host".into(),
        created_at: Some(created_at),
        detached: false,
        policy: POLICY.into(),
        policy_sha256: store::chain::sha256_hex(POLICY.as_bytes()),
    }
}

fn created() -> NewEvent {
    NewEvent::new("created").actor("uid 1000 (bench)")
}

/// Records the sessions `ids`, one a minute apart, through the API from
/// [`WRITERS`] tasks: one in [`LIVE_EVERY`] stays created or running,
/// every other one is updated to an end status. The seconds it took.
pub(crate) async fn populate_store(store: Arc<SessionStore>, ids: Arc<Vec<String>>) -> Result<f64> {
    let n = ids.len();
    let start = Instant::now();
    let base = store::now_ms() - n as i64 * 60_000;
    let ended = [
        Status::Exited,
        Status::Failed,
        Status::Stopped,
        Status::Lost,
    ];
    let mut tasks = JoinSet::new();
    for w in 0..WRITERS {
        let (store, ids) = (store.clone(), ids.clone());
        tasks.spawn(async move {
            for i in (w..n).step_by(WRITERS) {
                let id = &ids[i];
                store
                    .create_session(
                        &new_session(id.clone(), base + i as i64 * 60_000),
                        created(),
                    )
                    .await?;
                let status = match i % LIVE_EVERY {
                    0 if (i / LIVE_EVERY) % 2 == 0 => Status::Running,
                    0 => continue,
                    k => ended[k % ended.len()],
                };
                store
                    .update(
                        id,
                        &SessionUpdate {
                            status: Some(status),
                            ..Default::default()
                        },
                    )
                    .await?;
            }
            Ok::<_, store::StoreError>(())
        });
    }
    join(tasks).await?;
    let secs = start.elapsed().as_secs_f64();
    ensure!(
        store.count().await? == n as u64,
        "the store does not hold the {n} sessions just recorded"
    );
    Ok(secs)
}

/// Waits for every task; the first error, if any.
async fn join(mut tasks: JoinSet<Result<(), store::StoreError>>) -> Result<()> {
    while let Some(r) = tasks.join_next().await {
        r.context("a benchmark task panicked")??;
    }
    Ok(())
}

fn event(i: usize) -> NewEvent {
    NewEvent::new("signal")
        .actor("uid 1000 (bench)")
        .data(json!({"signal": "SIGWINCH", "rows": 50, "cols": 200, "i": i}))
}

#[derive(Default)]
struct Appends {
    one_writer: Vec<f64>,
    contended: Vec<f64>,
    spread: Vec<f64>,
    latencies: Vec<f64>,
    /// The one-writer session of the last round, kept for `verify`.
    chain: Option<String>,
}

impl Appends {
    async fn round(&mut self, store: &Arc<SessionStore>, events: usize) -> Result<()> {
        let now = store::now_ms();
        let fresh = |k: usize| new_session(testing::random_hex(16), now + k as i64);

        // One writer, one session, each append timed.
        let one = fresh(0);
        store.create_session(&one, created()).await?;
        let start = Instant::now();
        for i in 0..events {
            let t = Instant::now();
            store.append_event(&one.id, event(i)).await?;
            self.latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        self.one_writer
            .push(events as f64 / start.elapsed().as_secs_f64());

        // Every writer on one session: one chain, contended.
        let shared = fresh(1);
        store.create_session(&shared, created()).await?;
        let per = events / WRITERS;
        let start = Instant::now();
        let mut tasks = JoinSet::new();
        for w in 0..WRITERS {
            let (store, id) = (store.clone(), shared.id.clone());
            tasks.spawn(async move {
                for i in 0..per {
                    store.append_event(&id, event(w * per + i)).await?;
                }
                Ok(())
            });
        }
        join(tasks).await?;
        self.contended
            .push(events as f64 / start.elapsed().as_secs_f64());

        // Every writer on a session of its own.
        let own: Vec<NewSession> = (0..WRITERS).map(|w| fresh(2 + w)).collect();
        for s in &own {
            store.create_session(s, created()).await?;
        }
        let start = Instant::now();
        let mut tasks = JoinSet::new();
        for s in &own {
            let (store, id) = (store.clone(), s.id.clone());
            tasks.spawn(async move {
                for i in 0..per {
                    store.append_event(&id, event(i)).await?;
                }
                Ok(())
            });
        }
        join(tasks).await?;
        self.spread
            .push(events as f64 / start.elapsed().as_secs_f64());

        // Every chain must hold; then the store goes back to its size,
        // but for the one chain `verify` is timed on.
        for s in std::iter::once(&one).chain([&shared]).chain(&own) {
            let v = store.verify(&s.id).await?;
            if !v.ok {
                bail!("session {}'s audit chain is broken: {:?}", s.id, v.broken);
            }
        }
        for s in std::iter::once(&shared).chain(&own) {
            store.remove(&s.id).await?;
        }
        if let Some(previous) = self.chain.replace(one.id.clone()) {
            store.remove(&previous).await?;
        }
        // Ended, so that the live sessions stay those recorded first.
        store
            .update(
                &one.id,
                &SessionUpdate {
                    status: Some(Status::Exited),
                    ..Default::default()
                },
            )
            .await?;
        Ok(())
    }
}

#[derive(Default)]
struct Reads {
    list_live: Vec<f64>,
    list_all: Vec<f64>,
    get_prefix: Vec<f64>,
    count: Vec<f64>,
    verify: Vec<f64>,
}

impl Reads {
    async fn round(
        &mut self,
        store: &SessionStore,
        runs: usize,
        ids: &[String],
        chain: &Option<String>,
        sessions: usize,
        live: usize,
    ) -> Result<()> {
        let chain = chain.as_deref().context("no chain to verify")?;
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
        let page = ListQuery::default();
        let all = ListQuery {
            all: true,
            ..Default::default()
        };
        for i in 0..runs {
            let t = Instant::now();
            let got = store.list(&page).await?;
            self.list_live.push(ms(t));
            ensure!(
                got.len() == (store::DEFAULT_PAGE as usize).min(live),
                "list returned {} sessions",
                got.len()
            );

            let t = Instant::now();
            let got = store.list(&all).await?;
            self.list_all.push(ms(t));
            ensure!(got.len() == store::DEFAULT_PAGE as usize);

            // A different session each run, by its short id.
            let id = &ids[(i * 7919) % ids.len()];
            let t = Instant::now();
            let got = store.get(&id[..12]).await?;
            self.get_prefix.push(ms(t));
            ensure!(&got.id == id);

            let t = Instant::now();
            let n = store.count().await?;
            self.count.push(ms(t));
            // The sessions, and the one chain kept for this.
            ensure!(n == sessions as u64 + 1, "count returned {n}");

            let t = Instant::now();
            let v = store.verify(chain).await?;
            self.verify.push(ms(t));
            ensure!(v.ok);
        }
        Ok(())
    }
}
