//! Migrations are append-only. A store that applied a migration records its
//! checksum and refuses to open if the embedded file changed, so editing a
//! committed migration would lock every existing store out.
//!
//! To change the schema, do not edit a file below: add the next numbered
//! file to both migrations/sqlite/ and migrations/postgres/, and append its
//! two lines to `COMMITTED`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every committed migration, relative to migrations/, and the sha256 of
/// its content. Append only.
const COMMITTED: &[(&str, &str)] = &[
    (
        "sqlite/0001_sessions.sql",
        "37e1f0144670246eef1c7b0ac95fe9a0c57d0f90f66c66fda1849929356f301c",
    ),
    (
        "postgres/0001_sessions.sql",
        "2bc638cd8b8db13ad24f804339f731b5222e60b84423f7d9abbfbbd8f5f091a4",
    ),
    (
        "sqlite/0002_event_indexes.sql",
        "01f10740ea7006bc629d03976d4af431841762549d93a07672a538b41799073e",
    ),
    (
        "postgres/0002_event_indexes.sql",
        "01f10740ea7006bc629d03976d4af431841762549d93a07672a538b41799073e",
    ),
    (
        "sqlite/0003_sessions_status_ended.sql",
        "2ad781977b8602428636bf2d97cb619df3669b9d62db0ead306ebc2425c94c11",
    ),
    (
        "postgres/0003_sessions_status_ended.sql",
        "2ad781977b8602428636bf2d97cb619df3669b9d62db0ead306ebc2425c94c11",
    ),
    (
        "sqlite/0004_accounts.sql",
        "31e69701d125c0b4f054a8d7142dfad87a5bbc5295b3e9d94670e29c04800412",
    ),
    (
        "postgres/0004_accounts.sql",
        "32ec7706b4f18c781040714a6206d2f003e4913b6ca66bcc4937d3dddddf5cc7",
    ),
    (
        "sqlite/0005_output_samples.sql",
        "2d0f76a9045312820c3fbcc7f5c74c00ac0649cf38fe512e1a261f9a415224ae",
    ),
    (
        "postgres/0005_output_samples.sql",
        "bdbc434b628d63d72981bc94d5d3be6734dee0275203e9a259a0e1140cf27225",
    ),
    (
        "sqlite/0006_event_kind_at.sql",
        "55fc05d8c3c1baa7b0322e77c2f5f8ef85c98f25f60666b16330d6eee8cc189e",
    ),
    (
        "postgres/0006_event_kind_at.sql",
        "55fc05d8c3c1baa7b0322e77c2f5f8ef85c98f25f60666b16330d6eee8cc189e",
    ),
    (
        "sqlite/0007_team_queue.sql",
        "723f38d6aa2ab68ec3626f4638b2163992ea233248d6e821cea47044d3b2f749",
    ),
    (
        "postgres/0007_team_queue.sql",
        "df7bf7301b180203c8b870a5933cd77a1137525f16a07d7f1078f5687fd98417",
    ),
    (
        "sqlite/0008_vm_backend.sql",
        "dd21c78f847de62b995e6575769fbc45261c60bc34d55b504e43000a6ee739d1",
    ),
    (
        "postgres/0008_vm_backend.sql",
        "6dffea8afea16c720053b3bfef55888601ec5ce73e92d7bc29b3295236003068",
    ),
];

fn migrations_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations")
}

/// The .sql files of migrations/sqlite and migrations/postgres.
fn files() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for db in ["sqlite", "postgres"] {
        for e in std::fs::read_dir(migrations_dir().join(db)).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".sql") {
                out.insert(format!("{db}/{name}"));
            }
        }
    }
    out
}

#[test]
fn committed_migrations_never_change() {
    for (file, want) in COMMITTED {
        let path = migrations_dir().join(file);
        let text = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "migrations/{file} is gone ({e}); committed migrations are never removed, \
                 restore it"
            )
        });
        let got = store::chain::sha256_hex(&text);
        assert_eq!(
            &got, want,
            "migrations/{file} changed after it was committed; restore it and put the change in \
             a new migration (append, never edit)"
        );
    }
}

#[test]
fn every_migration_is_listed() {
    let listed: BTreeSet<String> = COMMITTED.iter().map(|(f, _)| f.to_string()).collect();
    for file in files() {
        assert!(
            listed.contains(&file),
            "migrations/{file} is not in COMMITTED; append it with its sha256 (`sha256sum \
             migrations/{file}`)"
        );
    }
}

#[test]
fn both_databases_have_the_same_versions() {
    let versions = |db: &str| -> BTreeSet<String> {
        files()
            .iter()
            .filter_map(|f| f.strip_prefix(&format!("{db}/")))
            .map(|f| f.split('_').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        versions("sqlite"),
        versions("postgres"),
        "each migration needs a SQLite and a Postgres file with the same number"
    );
}
