//! What every store test needs: a fresh database of each kind, raw SQL to
//! tamper with it, sessions to record, and [`both!`], which turns one test
//! body into a SQLite test and a Postgres test.
//!
//! Postgres comes from `AGENTCTL_TEST_POSTGRES` or from a throwaway cluster
//! this test binary starts (see `store::testing`); each test gets a
//! database of its own, dropped afterwards. Without either, the Postgres
//! tests skip with a loud `*** SKIPPED ***`, and fail under CI=true.
#![allow(dead_code)]

use std::path::PathBuf;

use sqlx::Connection;
use store::testing::{self, TestDatabase};
use store::{Backend, NewEvent, NewSession, Session, SessionStore};

pub enum Db {
    Sqlite {
        dir: tempfile::TempDir,
        path: PathBuf,
        url: String,
    },
    Postgres(TestDatabase),
}

impl Db {
    pub fn sqlite() -> Db {
        let dir = tempfile::Builder::new()
            .prefix("agentctl-store-test-")
            .tempdir()
            .unwrap();
        let path = dir.path().join("agentctl.db");
        let url = format!("sqlite://{}", path.display());
        Db::Sqlite { dir, path, url }
    }

    /// A fresh database on the test server, or `None` after a loud skip.
    pub async fn postgres(test: &str) -> Option<Db> {
        let server = match testing::server() {
            Ok(s) => s,
            Err(why) => {
                testing::skip(test, &format!("no PostgreSQL server: {why}"));
                return None;
            }
        };
        match TestDatabase::create(server).await {
            Ok(db) => Some(Db::Postgres(db)),
            Err(why) => {
                testing::skip(test, &why);
                None
            }
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Db::Sqlite { url, .. } => url,
            Db::Postgres(db) => &db.url,
        }
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self, Db::Sqlite { .. })
    }

    pub async fn store(&self) -> SessionStore {
        SessionStore::connect(self.url())
            .await
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.url()))
    }

    /// Runs `sql` directly on the database, behind the store's back.
    pub async fn exec(&self, sql: &str) -> u64 {
        match self {
            Db::Sqlite { path, .. } => {
                let opts = sqlx_sqlite::SqliteConnectOptions::new().filename(path);
                let mut c = sqlx_sqlite::SqliteConnection::connect_with(&opts)
                    .await
                    .unwrap();
                let n = sqlx::query(sql)
                    .execute(&mut c)
                    .await
                    .unwrap()
                    .rows_affected();
                c.close().await.unwrap();
                n
            }
            Db::Postgres(db) => {
                let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
                let n = sqlx::query(sql)
                    .execute(&mut c)
                    .await
                    .unwrap()
                    .rows_affected();
                c.close().await.unwrap();
                n
            }
        }
    }

    /// `SELECT COUNT(*) ...`, directly.
    pub async fn count(&self, sql: &str) -> i64 {
        match self {
            Db::Sqlite { path, .. } => {
                let opts = sqlx_sqlite::SqliteConnectOptions::new().filename(path);
                let mut c = sqlx_sqlite::SqliteConnection::connect_with(&opts)
                    .await
                    .unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
            }
            Db::Postgres(db) => {
                let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
            }
        }
    }

    pub async fn finish(self) {
        match self {
            Db::Sqlite { .. } => {}
            Db::Postgres(db) => db.finish().await,
        }
    }
}

/// One test body, run on SQLite (`NAME::sqlite`) and on Postgres
/// (`NAME::postgres`). The body is `async fn NAME(db: &Db)`.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let db = $crate::common::Db::sqlite();
                super::$name(&db).await;
                db.finish().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let test = concat!(module_path!(), "::postgres");
                let Some(db) = $crate::common::Db::postgres(test).await else {
                    return;
                };
                super::$name(&db).await;
                db.finish().await;
            }
        }
    )*};
}

/// A fresh session id.
pub fn new_id() -> String {
    testing::random_hex(16)
}

/// `prefix` followed by random hex digits, 32 in all.
pub fn id_with_prefix(prefix: &str) -> String {
    let mut id = prefix.to_string();
    id.push_str(&testing::random_hex(16)[..32 - prefix.len()]);
    id
}

pub const POLICY: &str = r#"{"profile":"generic","network":"none","masks":[".env"]}"#;

pub fn session(id: &str) -> NewSession {
    NewSession {
        id: id.to_string(),
        profile: "generic".into(),
        backend: Backend::Native,
        image: None,
        workspace: "/home/alice/project".into(),
        command: vec!["bash".into(), "-c".into(), "echo 'hi there' ✓".into()],
        user: "alice".into(),
        uid: 1000,
        host: "build-1".into(),
        created_at: None,
        detached: false,
        policy: POLICY.into(),
        policy_sha256: store::chain::sha256_hex(POLICY.as_bytes()),
    }
}

pub fn created() -> NewEvent {
    NewEvent::new("created").actor("uid 1000 (alice)")
}

/// Records session `id` created at `at`.
pub async fn create_at(store: &SessionStore, id: &str, at: i64) -> Session {
    let mut s = session(id);
    s.created_at = Some(at);
    store.create_session(&s, created()).await.unwrap()
}
