//! The schema's migrations, embedded at build time (see build.rs), and the
//! sqlx migrators made from them.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};

/// One migration file, as build.rs found it.
pub(crate) struct Embedded {
    pub(crate) version: i64,
    pub(crate) description: &'static str,
    pub(crate) sql: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// Which of the two schemas.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Schema {
    Sqlite,
    Postgres,
}

impl Schema {
    fn files(self) -> &'static [Embedded] {
        match self {
            Schema::Sqlite => SQLITE,
            Schema::Postgres => POSTGRES,
        }
    }

    /// The versions this agentctl knows, in order.
    pub(crate) fn versions(self) -> Vec<i64> {
        self.files().iter().map(|m| m.version).collect()
    }

    /// A migrator of the migrations up to `through` (all with `None`).
    pub(crate) async fn migrator(self, through: Option<i64>) -> Result<Migrator, MigrateError> {
        Migrator::new(Source {
            schema: self,
            through,
        })
        .await
    }
}

#[derive(Debug)]
struct Source {
    schema: Schema,
    through: Option<i64>,
}

impl MigrationSource<'static> for Source {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        let migrations = self
            .schema
            .files()
            .iter()
            .filter(|m| self.through.is_none_or(|t| m.version <= t))
            .map(|m| {
                Migration::new(
                    m.version,
                    Cow::Borrowed(m.description),
                    MigrationType::Simple,
                    Cow::Borrowed(m.sql),
                    // sqlx's marker for a migration run outside a transaction.
                    m.sql.starts_with("-- no-transaction"),
                )
            })
            .collect();
        Box::pin(std::future::ready(Ok(migrations)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What stores made by earlier agentctls (sqlx's migrate! macro)
    /// recorded for each migration in `_sqlx_migrations`: version,
    /// description and the SHA-384 of the SQL, hex. A store opens only if
    /// these still match, so an edit to an applied migration file, or a
    /// change in how the files are read, fails here rather than on users'
    /// stores. New migrations are added to the list once released.
    const RECORDED: &str = include_str!("../tests/recorded-migrations.txt");

    #[tokio::test]
    async fn migrations_match_what_earlier_stores_recorded() {
        let mut checked = 0;
        for line in RECORDED
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        {
            let mut parts = line.splitn(4, '\t');
            let (schema, version, checksum, description) = (
                parts.next().unwrap(),
                parts.next().unwrap().parse::<i64>().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            let schema = match schema {
                "sqlite" => Schema::Sqlite,
                "postgres" => Schema::Postgres,
                other => panic!("unknown schema {other}"),
            };
            let migrator = schema.migrator(None).await.unwrap();
            let m = migrator
                .iter()
                .find(|m| m.version == version)
                .unwrap_or_else(|| panic!("{schema:?} migration {version} is gone"));
            let hex: String = m.checksum.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, checksum, "{schema:?} migration {version} changed");
            assert_eq!(m.description, description);
            assert!(!m.no_tx);
            checked += 1;
        }
        assert_eq!(
            checked, 16,
            "every released migration of both schemas is listed"
        );
    }

    #[tokio::test]
    async fn a_migrator_can_stop_at_a_version() {
        let all = Schema::Postgres.migrator(None).await.unwrap();
        let some = Schema::Postgres.migrator(Some(3)).await.unwrap();
        assert!(all.iter().count() > 3);
        assert_eq!(
            some.iter().map(|m| m.version).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }
}
