//! The store's API, on SQLite and on a real Postgres: every test below
//! runs twice, as `NAME::sqlite` and `NAME::postgres`.

mod common;

use common::*;
use serde_json::json;
use store::{
    Backend, ListQuery, NewEvent, Problem, SessionStore, SessionUpdate, Status, StoreError,
};

both!(
    create_get_list,
    prefixes,
    updates,
    removal,
    with_status,
    refusals,
    migrations_are_idempotent,
    chain_verifies,
    record_is_one_transaction,
    record_if_only_while_the_status_holds,
    tamper_edit,
    tamper_edit_and_rehash,
    tamper_delete_middle,
    tamper_delete_last,
    tamper_swap_seqs,
    concurrent_appends,
    concurrent_appends_from_processes,
    concurrent_creates,
    a_store_from_before_the_vm_backend_takes_vm_sessions,
);

/// A store made before the microVM backend (its check allows only native
/// and docker) opens, keeps every session and event, and takes `vm`
/// sessions. SQLite's table is rebuilt with foreign keys off: the events
/// must not cascade away with the old table.
async fn a_store_from_before_the_vm_backend_takes_vm_sessions(db: &Db) {
    let store = db.store().await;
    let old = new_id();
    create_at(&store, &old, 1_000).await;
    store
        .append_event(&old, NewEvent::new("started"))
        .await
        .unwrap();
    drop(store);
    // Back to the schema of migration 7.
    if let Db::Sqlite { path, .. } = db {
        use sqlx::Connection;
        let opts = sqlx_sqlite::SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(false);
        let mut c = sqlx_sqlite::SqliteConnection::connect_with(&opts)
            .await
            .unwrap();
        let table: String =
            sqlx::query_scalar("SELECT sql FROM sqlite_schema WHERE name = 'sessions'")
                .fetch_one(&mut c)
                .await
                .unwrap();
        let narrowed = table
            .replace("CREATE TABLE \"sessions\"", "CREATE TABLE sessions")
            .replacen(
                "CREATE TABLE sessions",
                "CREATE TABLE sessions_old_check",
                1,
            )
            .replace("'native', 'docker', 'vm'", "'native', 'docker'");
        assert!(narrowed.contains("('native', 'docker')"), "{narrowed}");
        for step in [
            narrowed.as_str(),
            "INSERT INTO sessions_old_check SELECT * FROM sessions",
            "DROP TABLE sessions",
            "ALTER TABLE sessions_old_check RENAME TO sessions",
        ] {
            sqlx::query(step).execute(&mut c).await.unwrap();
        }
        c.close().await.unwrap();
    } else {
        for t in ["sessions", "workers", "session_requests"] {
            db.exec(&format!(
                "ALTER TABLE {t} DROP CONSTRAINT {t}_backend_check, \
                 ADD CONSTRAINT {t}_backend_check CHECK (backend IN ('native', 'docker'))"
            ))
            .await;
        }
        db.exec("DELETE FROM _sqlx_migrations WHERE version = 8")
            .await;
    }
    let mut vm = session(&new_id());
    vm.backend = Backend::Vm;
    // The old check refuses a vm session, as the upgrade must fix.
    let refused = match db {
        Db::Sqlite { path, .. } => {
            use sqlx::Connection;
            let opts = sqlx_sqlite::SqliteConnectOptions::new().filename(path);
            let mut c = sqlx_sqlite::SqliteConnection::connect_with(&opts)
                .await
                .unwrap();
            sqlx::query(
                    "INSERT INTO sessions (id, profile, backend, workspace, command, user_name, uid, host, created_at, status, detached, policy_sha256, events_count, events_head) \
                     SELECT ?, profile, 'vm', workspace, command, user_name, uid, host, created_at, status, detached, policy_sha256, 0, events_head FROM sessions LIMIT 1",
                )
                .bind(&vm.id)
                .execute(&mut c)
                .await
                .is_err()
        }
        Db::Postgres(_) => true,
    };
    assert!(refused, "the narrowed table took a vm session");

    let store = db.store().await;
    let s = store.create_session(&vm, created()).await.unwrap();
    assert_eq!(s.backend, Backend::Vm);
    assert_eq!(store.get(&vm.id).await.unwrap().backend, Backend::Vm);
    let events = store.events(&old).await.unwrap();
    assert_eq!(events.len(), 2, "the old session's events survived");
    assert_eq!(store.get(&old).await.unwrap().backend, Backend::Native);
    // The references still hold and still cascade.
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM session_events WHERE session_id NOT IN (SELECT id FROM sessions)"
        )
        .await,
        0
    );
}

async fn create_get_list(db: &Db) {
    let store = db.store().await;
    let (a, b, c) = (new_id(), new_id(), new_id());
    let sa = create_at(&store, &a, 1_000).await;
    let mut nb = session(&b);
    nb.created_at = Some(2_000);
    nb.backend = Backend::Docker;
    nb.image = Some("agentctl/claude-code:latest".into());
    nb.uid = u32::MAX;
    nb.detached = true;
    let sb = store.create_session(&nb, created()).await.unwrap();
    create_at(&store, &c, 3_000).await;
    store
        .update(
            &c,
            &SessionUpdate {
                status: Some(Status::Exited),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    // What create returned is what get reads back, field for field.
    assert_eq!(store.get(&a).await.unwrap(), sa);
    let got = store.get(&b).await.unwrap();
    assert_eq!(got, sb);
    assert_eq!(got.backend, Backend::Docker);
    assert_eq!(got.uid, u32::MAX);
    assert!(got.detached);
    assert_eq!(got.command[2], "echo 'hi there' ✓");
    assert_eq!(got.policy, POLICY);
    assert_eq!((got.status, got.events_count), (Status::Created, 1));
    assert_eq!(store.get(&b[..12]).await.unwrap().id, b);

    let ids = |v: Vec<store::Session>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    // Newest first; the default page hides ended sessions.
    assert_eq!(
        ids(store.list(&ListQuery::default()).await.unwrap()),
        [b.clone(), a.clone()]
    );
    let all = ListQuery {
        all: true,
        ..Default::default()
    };
    assert_eq!(
        ids(store.list(&all).await.unwrap()),
        [c.clone(), b.clone(), a.clone()]
    );
    let page = ListQuery {
        all: true,
        limit: 1,
        offset: 1,
    };
    assert_eq!(
        ids(store.list(&page).await.unwrap()),
        std::slice::from_ref(&b)
    );
    assert_eq!(store.count().await.unwrap(), 3);

    // The JSON the CLI prints: the policy as JSON, enums in lowercase.
    let printed = serde_json::to_value(&got).unwrap();
    assert_eq!(printed["policy"]["network"], "none");
    assert_eq!(printed["backend"], "docker");
    assert_eq!(printed["status"], "created");
    store.close().await;
}

async fn prefixes(db: &Db) {
    let store = db.store().await;
    let p = &new_id()[..6];
    let one = id_with_prefix(&format!("{p}0"));
    let two = id_with_prefix(&format!("{p}1"));
    let three = id_with_prefix(&format!("{p}2"));
    for id in [&one, &two, &three] {
        create_at(&store, id, 1).await;
    }
    assert_eq!(store.get(&one[..7]).await.unwrap().id, one);
    assert_eq!(store.get(&one).await.unwrap().id, one);

    match store.get(p).await {
        Err(StoreError::Ambiguous { prefix, candidates }) => {
            assert_eq!(prefix, p);
            let mut want = vec![one.clone(), two.clone(), three.clone()];
            want.sort();
            assert_eq!(candidates, want);
        }
        other => panic!("{p} is ambiguous, got {other:?}"),
    }
    let e = store.get(p).await.unwrap_err().to_string();
    assert!(e.contains("give more of the id"), "{e}");

    // A prefix that sorts right after the others, and a missing full id.
    let missing = format!("{p}3");
    assert!(matches!(
        store.get(&missing).await,
        Err(StoreError::NotFound { id }) if id == missing
    ));
    assert!(matches!(
        store.get(&id_with_prefix(&missing)).await,
        Err(StoreError::NotFound { .. })
    ));
    for bad in ["", "ABC", "abcg", "0123456789abcdef0123456789abcdef0"] {
        let e = store.get(bad).await.unwrap_err();
        assert!(matches!(e, StoreError::Invalid { .. }), "{bad}: {e:?}");
        assert!(e.to_string().contains("lowercase hex"), "{e}");
    }
}

async fn updates(db: &Db) {
    let store = db.store().await;
    let id = new_id();
    let before = create_at(&store, &id, 5).await;
    store
        .update(
            &id,
            &SessionUpdate {
                status: Some(Status::Running),
                started_at: Some(10),
                helper_pid: Some(4242),
                container_id: Some("c0ffee".into()),
                log_path: Some("/var/log/agentctl/x.log".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let s = store.get(&id).await.unwrap();
    assert_eq!(s.status, Status::Running);
    assert_eq!(s.started_at, Some(10));
    assert_eq!(s.helper_pid, Some(4242));
    assert_eq!(s.container_id.as_deref(), Some("c0ffee"));
    assert_eq!(s.log_path.as_deref(), Some("/var/log/agentctl/x.log"));
    assert_eq!((s.ended_at, s.exit_code), (None, None));

    // Only the given fields change.
    store
        .update(
            &id,
            &SessionUpdate {
                status: Some(Status::Exited),
                ended_at: Some(20),
                exit_code: Some(-3),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let s = store.get(&id).await.unwrap();
    assert_eq!(
        (s.status, s.started_at, s.ended_at, s.exit_code),
        (Status::Exited, Some(10), Some(20), Some(-3))
    );
    assert_eq!(s.helper_pid, Some(4242));
    assert_eq!(
        (s.profile, s.created_at),
        (before.profile, before.created_at)
    );

    let missing = new_id();
    assert!(matches!(
        store.update(&missing, &SessionUpdate::default()).await,
        Err(StoreError::NotFound { id }) if id == missing
    ));
    assert!(matches!(
        store.update(&id[..12], &SessionUpdate::default()).await,
        Err(StoreError::Invalid { .. })
    ));
}

async fn removal(db: &Db) {
    let store = db.store().await;
    let (gone, kept) = (new_id(), new_id());
    create_at(&store, &gone, 1).await;
    create_at(&store, &kept, 2).await;
    for id in [&gone, &kept] {
        store
            .append_event(id, NewEvent::new("started"))
            .await
            .unwrap();
    }
    store.remove(&gone).await.unwrap();

    assert!(matches!(
        store.get(&gone).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.events(&gone).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.verify(&gone).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.remove(&gone).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM session_events WHERE session_id = '{gone}'"
        ))
        .await,
        0
    );
    assert_eq!(store.count().await.unwrap(), 1);
    assert_eq!(store.events(&kept).await.unwrap().len(), 2);
    assert!(store.verify(&kept).await.unwrap().ok);
}

async fn with_status(db: &Db) {
    let store = db.store().await;
    let mut by_status = Vec::new();
    for (i, st) in Status::ALL.into_iter().enumerate() {
        let id = new_id();
        create_at(&store, &id, i as i64).await;
        store
            .update(
                &id,
                &SessionUpdate {
                    status: Some(st),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        by_status.push((st, id));
    }
    let live = store
        .with_status(&[Status::Running, Status::Created])
        .await
        .unwrap();
    let live: Vec<(Status, String)> = live.into_iter().map(|s| (s.status, s.id)).collect();
    // Newest first: running was created after created.
    assert_eq!(live, [by_status[1].clone(), by_status[0].clone()]);
    let lost = store.with_status(&[Status::Lost]).await.unwrap();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].id, by_status[5].1);
    assert!(store.with_status(&[]).await.unwrap().is_empty());
}

async fn refusals(db: &Db) {
    let store = db.store().await;
    let id = new_id();
    create_at(&store, &id, 1).await;
    assert!(matches!(
        store.create_session(&session(&id), created()).await,
        Err(StoreError::AlreadyExists { id: dup }) if dup == id
    ));

    let other = new_id();
    let e = store
        .create_session(&session(&other), NewEvent::new("started"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("first event is \"created\""), "{e}");

    let mut bad_hash = session(&other);
    bad_hash.policy_sha256 = "0".repeat(64);
    let e = store
        .create_session(&bad_hash, created())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("sha256 of the policy text"), "{e}");

    let mut bad_id = session("not-an-id");
    bad_id.id = "XYZ".into();
    assert!(matches!(
        store.create_session(&bad_id, created()).await,
        Err(StoreError::Invalid { .. })
    ));
    // Nothing of the refused sessions was written.
    assert_eq!(store.count().await.unwrap(), 1);

    for bad in ["exploded", "other:", "other:Upper", "CREATED"] {
        let e = store
            .append_event(&id, NewEvent::new(bad))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("other:NAME"), "{bad}: {e}");
    }
    let ev = store
        .append_event(&id, NewEvent::new("other:checkpoint.v2"))
        .await
        .unwrap();
    assert_eq!(ev.seq, 2);
    assert!(matches!(
        store.append_event(&new_id(), NewEvent::new("signal")).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn migrations_are_idempotent(db: &Db) {
    // Three processes opening a new store at once: all migrate it, or find
    // it migrated.
    let (a, b, c) = tokio::join!(
        SessionStore::connect(db.url()),
        SessionStore::connect(db.url()),
        SessionStore::connect(db.url())
    );
    for s in [a, b, c] {
        s.unwrap().close().await;
    }
    let id = new_id();
    {
        let store = db.store().await;
        create_at(&store, &id, 1).await;
        store.close().await;
    }
    // Again, twice at once, as two agentctl processes would.
    let (s1, s2) = tokio::join!(
        SessionStore::connect(db.url()),
        SessionStore::connect(db.url())
    );
    let (s1, s2) = (s1.unwrap(), s2.unwrap());
    assert_eq!(s1.get(&id).await.unwrap().id, id);
    assert_eq!(s2.count().await.unwrap(), 1);
    let dir = if db.is_sqlite() { "sqlite" } else { "postgres" };
    let files = std::fs::read_dir(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../migrations")
            .join(dir),
    )
    .unwrap()
    .filter(|e| {
        e.as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".sql")
    })
    .count();
    assert_eq!(
        db.count("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
            .await,
        files as i64
    );
}

/// A session with `n` events in all (the first is `created`).
async fn chain_of(store: &SessionStore, n: u64) -> String {
    let id = new_id();
    create_at(store, &id, 100).await;
    for i in 2..=n {
        let ev = NewEvent::new(if i % 2 == 0 { "signal" } else { "other:note" })
            .data(json!({"i": i, "z": [1, 2], "a": {"y": null, "x": "✓"}}));
        store.append_event(&id, ev).await.unwrap();
    }
    id
}

async fn chain_verifies(db: &Db) {
    let store = db.store().await;
    let id = new_id();
    create_at(&store, &id, 100).await;
    let mut appended = Vec::new();
    for i in 2..=10u64 {
        let mut ev = NewEvent::new("signal").data(json!({"signal": "SIGWINCH", "n": i}));
        if i % 3 == 0 {
            ev = ev.actor(format!("uid {i} (user{i})"));
        }
        let e = store.append_event(&id, ev).await.unwrap();
        assert_eq!(e.seq, i);
        appended.push(e);
    }
    let events = store.events(&id).await.unwrap();
    assert_eq!(events.len(), 10);
    assert_eq!(&events[1..], &appended[..]);
    assert_eq!(events[0].kind, "created");
    assert_eq!(events[0].prev_hash, store::chain::GENESIS);
    assert_eq!(events[0].at, 100);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        if i > 0 {
            assert_eq!(e.prev_hash, events[i - 1].hash);
        }
        // The documented formula, recomputed here.
        let again = store::chain::event_hash(
            &e.prev_hash,
            &store::chain::Fields {
                session: &e.session,
                seq: e.seq,
                at: e.at,
                kind: &e.kind,
                actor: e.actor.as_deref(),
                data: &e.data,
            },
        );
        assert_eq!(again, e.hash);
    }
    let s = store.get(&id).await.unwrap();
    assert_eq!(s.events_count, 10);
    assert_eq!(s.events_head, events[9].hash);

    let v = store.verify(&id).await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!((v.events, v.intact_through, v.broken), (10, 10, None));
    // Stored data has sorted keys and no whitespace.
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM session_events WHERE session_id = '{id}' \
             AND data = '{{\"n\":2,\"signal\":\"SIGWINCH\"}}'"
        ))
        .await,
        1
    );
}

/// Two processes judging one session (a reconcile and the session's
/// supervisor) race to record its end: exactly one of them writes.
async fn record_if_only_while_the_status_holds(db: &Db) {
    let store = db.store().await;
    let id = new_id();
    create_at(&store, &id, 100).await;
    let end = |code| SessionUpdate {
        status: Some(Status::Exited),
        exit_code: Some(code),
        ..Default::default()
    };
    let first = store
        .record_if(
            &id,
            &[Status::Created, Status::Running],
            vec![NewEvent::new("exited").data(json!({"code": 1}))],
            &end(1),
        )
        .await
        .unwrap();
    assert_eq!(first.map(|e| e.len()), Some(1));
    let second = store
        .record_if(
            &id,
            &[Status::Created, Status::Running],
            vec![NewEvent::new("lost")],
            &end(2),
        )
        .await
        .unwrap();
    assert!(second.is_none(), "the status had moved on");
    let s = store.get(&id).await.unwrap();
    assert_eq!(
        (s.status, s.exit_code, s.events_count),
        (Status::Exited, Some(1), 2)
    );
    assert_eq!(store.events(&id).await.unwrap().len(), 2);
    // Concurrently: of eight writers expecting `created`, one wins.
    let id = new_id();
    create_at(&store, &id, 100).await;
    let tries = (0..8).map(|i| {
        let store = store.clone();
        let id = id.clone();
        tokio::spawn(async move {
            store
                .record_if(
                    &id,
                    &[Status::Created],
                    vec![NewEvent::new("exited").data(json!({"code": i}))],
                    &SessionUpdate {
                        status: Some(Status::Exited),
                        exit_code: Some(i),
                        ..Default::default()
                    },
                )
                .await
                .unwrap()
                .is_some()
        })
    });
    let mut wins = 0;
    for t in tries {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
    assert_eq!(store.events(&id).await.unwrap().len(), 2);
    store.verify(&id).await.unwrap();
}

async fn record_is_one_transaction(db: &Db) {
    let store = db.store().await;
    let id = new_id();
    create_at(&store, &id, 100).await;
    let written = store
        .record(
            &id,
            vec![
                NewEvent::new("started").data(json!({"pid": 7})),
                NewEvent::new("signal").data(json!({"signal": "SIGINT"})),
                NewEvent::new("exited").data(json!({"code": 130})),
            ],
            &SessionUpdate {
                status: Some(Status::Exited),
                started_at: Some(150),
                ended_at: Some(200),
                exit_code: Some(130),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        written
            .iter()
            .map(|e| (e.seq, e.kind.as_str()))
            .collect::<Vec<_>>(),
        [(2, "started"), (3, "signal"), (4, "exited")]
    );
    assert_eq!(store.events(&id).await.unwrap()[1..], written[..]);
    let s = store.get(&id).await.unwrap();
    assert_eq!(
        (s.status, s.started_at, s.ended_at, s.exit_code),
        (Status::Exited, Some(150), Some(200), Some(130))
    );
    assert_eq!(
        (s.events_count, s.events_head.as_str()),
        (4, written[2].hash.as_str())
    );
    assert!(store.verify(&id).await.unwrap().ok);

    // One bad kind refuses the whole batch: nothing of it is written.
    let refused = store
        .record(
            &id,
            vec![NewEvent::new("signal"), NewEvent::new("not a kind")],
            &SessionUpdate {
                status: Some(Status::Lost),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Invalid { .. })),
        "{refused:?}"
    );
    let s = store.get(&id).await.unwrap();
    assert_eq!((s.status, s.events_count), (Status::Exited, 4));

    let missing = new_id();
    assert!(matches!(
        store.record(&missing, vec![NewEvent::new("signal")], &SessionUpdate::default()).await,
        Err(StoreError::NotFound { id }) if id == missing
    ));
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM session_events WHERE session_id = '{missing}'"
        ))
        .await,
        0
    );
}

async fn assert_broken(store: &SessionStore, id: &str, seq: u64, problem: Problem) {
    let v = store.verify(id).await.unwrap();
    assert!(!v.ok, "{v:?}");
    let b = v.broken.as_ref().unwrap();
    assert_eq!((b.seq, b.problem), (seq, problem), "{}", b.reason);
    assert!(b.reason.contains(&seq.to_string()), "{}", b.reason);
    assert_eq!(v.intact_through, seq - 1, "{v:?}");
}

async fn tamper_edit(db: &Db) {
    let store = db.store().await;
    let id = chain_of(&store, 6).await;
    let n = db
        .exec(&format!(
            "UPDATE session_events SET data = '{{\"i\":3,\"sneaky\":true}}' \
             WHERE session_id = '{id}' AND seq = 3"
        ))
        .await;
    assert_eq!(n, 1);
    assert_broken(&store, &id, 3, Problem::Edited).await;
    // The reader still gets the edited log; only verify can tell.
    assert_eq!(store.events(&id).await.unwrap()[2].data["sneaky"], true);
}

async fn tamper_edit_and_rehash(db: &Db) {
    let store = db.store().await;
    let id = chain_of(&store, 6).await;
    // A careful forger edits event 2 and recomputes its hash; event 3 still
    // points at the old one.
    let e2 = store.events(&id).await.unwrap()[1].clone();
    let forged_data = json!({"i": 2, "forged": true});
    let forged = store::chain::event_hash(
        &e2.prev_hash,
        &store::chain::Fields {
            data: &forged_data,
            session: &e2.session,
            seq: 2,
            at: e2.at,
            kind: &e2.kind,
            actor: e2.actor.as_deref(),
        },
    );
    db.exec(&format!(
        "UPDATE session_events SET data = '{}', hash = '{forged}' \
         WHERE session_id = '{id}' AND seq = 2",
        store::chain::canonical_json(&forged_data)
    ))
    .await;
    assert_broken(&store, &id, 3, Problem::Reordered).await;
}

async fn tamper_delete_middle(db: &Db) {
    let store = db.store().await;
    let id = chain_of(&store, 6).await;
    let n = db
        .exec(&format!(
            "DELETE FROM session_events WHERE session_id = '{id}' AND seq = 4"
        ))
        .await;
    assert_eq!(n, 1);
    assert_broken(&store, &id, 4, Problem::Deleted).await;
}

async fn tamper_delete_last(db: &Db) {
    let store = db.store().await;
    let id = chain_of(&store, 6).await;
    db.exec(&format!(
        "DELETE FROM session_events WHERE session_id = '{id}' AND seq = 6"
    ))
    .await;
    let v = store.verify(&id).await.unwrap();
    let b = v.broken.as_ref().unwrap();
    assert_eq!((b.seq, b.problem), (6, Problem::Truncated), "{}", b.reason);
    assert!(b.reason.contains("event 6 was deleted"), "{}", b.reason);
    assert_eq!(v.intact_through, 5);
}

async fn tamper_swap_seqs(db: &Db) {
    let store = db.store().await;
    let id = chain_of(&store, 6).await;
    // Swap events 2 and 5 (through a free seq: the key is unique).
    for (from, to) in [(2, 1000), (5, 2), (1000, 5)] {
        db.exec(&format!(
            "UPDATE session_events SET seq = {to} WHERE session_id = '{id}' AND seq = {from}"
        ))
        .await;
    }
    assert_broken(&store, &id, 2, Problem::Reordered).await;
    let reason = store.verify(&id).await.unwrap().broken.unwrap().reason;
    assert!(reason.contains("written as event 5"), "{reason}");
}

/// Checks that `id`'s log is exactly seqs 1..=n and verifies.
async fn assert_whole_chain(store: &SessionStore, id: &str, n: u64) {
    let events = store.events(id).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
    let v = store.verify(id).await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.events, n);
}

async fn concurrent_appends(db: &Db) {
    // Three pools, as three processes would have, four tasks on each.
    let stores = [db.store().await, db.store().await, db.store().await];
    let id = new_id();
    create_at(&stores[0], &id, 1).await;
    let stores: Vec<std::sync::Arc<SessionStore>> = stores.into_iter().map(Into::into).collect();
    let mut tasks = Vec::new();
    for (s, store) in stores.iter().enumerate() {
        for t in 0..4 {
            let (store, id) = (store.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..20 {
                    let ev = NewEvent::new("signal").data(json!({"pool": s, "task": t, "i": i}));
                    store.append_event(&id, ev).await.unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_whole_chain(&stores[1], &id, 1 + 3 * 4 * 20).await;
}

/// The body of `concurrent_appends_from_processes`' child processes.
#[test]
#[ignore = "a helper that concurrent_appends_from_processes runs in child processes"]
fn append_child() {
    let (Ok(url), Ok(id), Ok(n)) = (
        std::env::var("STORE_CHILD_URL"),
        std::env::var("STORE_CHILD_ID"),
        std::env::var("STORE_CHILD_EVENTS"),
    ) else {
        return;
    };
    let n: u32 = n.parse().unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = SessionStore::connect(&url).await.unwrap();
        let pid = std::process::id();
        let task = |t: u32| {
            let (store, id) = (&store, &id);
            async move {
                for i in 0..n / 2 {
                    let ev = NewEvent::new("signal").data(json!({"pid": pid, "t": t, "i": i}));
                    store.append_event(id, ev).await.unwrap();
                }
            }
        };
        // Two writers at once in each process, as well as across processes.
        tokio::join!(task(0), task(1));
        store.close().await;
    });
}

async fn concurrent_appends_from_processes(db: &Db) {
    let store = db.store().await;
    let id = new_id();
    create_at(&store, &id, 1).await;
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["--exact", "append_child", "--ignored", "--test-threads=1"])
                .env("STORE_CHILD_URL", db.url())
                .env("STORE_CHILD_ID", &id)
                .env("STORE_CHILD_EVENTS", "30")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // And this process appends at the same time.
    for i in 0..30 {
        let ev = NewEvent::new("signal").data(json!({"parent": i}));
        store.append_event(&id, ev).await.unwrap();
    }
    for child in children {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(
            out.status.success(),
            "child failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "the child ran no test: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert_whole_chain(&store, &id, 1 + 30 + 3 * 30).await;
}

async fn concurrent_creates(db: &Db) {
    let store = std::sync::Arc::new(db.store().await);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = new_id();
                create_at(&store, &id, i).await;
                id
            })
        })
        .collect();
    let mut created = Vec::new();
    for t in tasks {
        created.push(t.await.unwrap());
    }
    assert_eq!(store.count().await.unwrap(), 50);
    let all = store
        .list(&ListQuery {
            all: true,
            limit: 100,
            offset: 0,
        })
        .await
        .unwrap();
    let mut listed: Vec<String> = all.iter().map(|s| s.id.clone()).collect();
    listed.sort();
    listed.dedup();
    created.sort();
    assert_eq!(listed, created);
    for id in &created {
        assert!(store.verify(id).await.unwrap().ok);
    }
    assert_eq!(db.count("SELECT COUNT(*) FROM session_events").await, 50);
    assert_eq!(db.count("SELECT COUNT(*) FROM policies").await, 1);
}

both!(find_filters_and_pages_by_keyset);

/// `find`: each filter alone and together, a search that treats LIKE's
/// characters literally, "live or ended since", and pages that neither
/// repeat nor skip a session when two share a creation time.
async fn find_filters_and_pages_by_keyset(db: &common::Db) {
    use store::{SessionFilter, SessionUpdate, Status};
    let store = db.store().await;
    let mut ids = Vec::new();
    for i in 0..7u32 {
        let id = format!("{:032x}", 0xa000 + i);
        let mut s = common::session(&id);
        // Two pairs share a creation time: the id breaks the tie.
        s.created_at = Some(1_000 + i64::from(i / 2) * 10);
        s.user = if i % 2 == 0 {
            "alice".into()
        } else {
            "bob".into()
        };
        s.workspace = format!("/home/x/proj_{i}%");
        store.create_session(&s, common::created()).await.unwrap();
        ids.push(id);
    }
    // 0..3 ended at 5_000 + i, the rest stay live.
    for (i, id) in ids.iter().enumerate().take(3) {
        store
            .record(
                id,
                vec![],
                &SessionUpdate {
                    status: Some(Status::Exited),
                    ended_at: Some(5_000 + i as i64),
                    exit_code: Some(0),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    let find = |f: SessionFilter| {
        let store = &store;
        async move {
            store
                .find(&SessionFilter { limit: 100, ..f })
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.id)
                .collect::<Vec<_>>()
        }
    };
    let mut newest_first = ids.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(find(SessionFilter::default()).await, newest_first);
    let alice = find(SessionFilter {
        user: Some("alice".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(alice.len(), 4);
    let exited = find(SessionFilter {
        status: Some(Status::Exited),
        ..Default::default()
    })
    .await;
    assert_eq!(exited.len(), 3);
    assert_eq!(
        find(SessionFilter {
            status: Some(Status::Exited),
            user: Some("bob".into()),
            ..Default::default()
        })
        .await,
        [ids[1].clone()]
    );
    // `proj_3%` literally: `_` and `%` are no wildcards, case is ignored.
    assert_eq!(
        find(SessionFilter {
            search: Some("PROJ_3%".into()),
            ..Default::default()
        })
        .await,
        [ids[3].clone()]
    );
    assert!(
        find(SessionFilter {
            search: Some("proj%3".into()),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    // An id (a prefix of itself; the ids here share their first 31).
    assert_eq!(
        find(SessionFilter {
            search: Some(ids[5].clone()),
            ..Default::default()
        })
        .await,
        [ids[5].clone()]
    );
    // Live, or ended at or after 5_001: all but ids[0].
    let recent = find(SessionFilter {
        live_or_ended_since: Some(5_001),
        ..Default::default()
    })
    .await;
    assert_eq!(recent.len(), 6);
    assert!(!recent.contains(&ids[0]));
    // Pages of two along the keyset: every session once, in order.
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .find(&SessionFilter {
                before: before.clone(),
                limit: 2,
                ..Default::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        let last = page.last().unwrap();
        before = Some((last.created_at, last.id.clone()));
        paged.extend(page.into_iter().map(|s| s.id));
    }
    assert_eq!(paged, newest_first);
}

both!(find_events_across_sessions);

/// `find_events`: by session prefix, actor, kind and time, newest first,
/// and pages along the keyset without repeats or gaps.
async fn find_events_across_sessions(db: &common::Db) {
    use store::{EventFilter, NewEvent};
    let store = db.store().await;
    let a = format!("{:032x}", 0xaa01);
    let b = format!("{:032x}", 0xbb02);
    for id in [&a, &b] {
        let mut s = common::session(id);
        if id == &b {
            s.user = "carol".into();
        }
        store.create_session(&s, common::created()).await.unwrap();
        for i in 0..4 {
            let actor = if i % 2 == 0 { "alice" } else { "bob" };
            store
                .append_event(id, NewEvent::new("exec").actor(actor))
                .await
                .unwrap();
        }
    }
    let find = |f: EventFilter| {
        let store = &store;
        async move {
            store
                .find_events(&EventFilter { limit: 100, ..f })
                .await
                .unwrap()
        }
    };
    let all = find(EventFilter::default()).await;
    assert_eq!(all.len(), 10);
    assert!(
        all.windows(2)
            .all(|w| (w[0].at, &w[0].session, w[0].seq) >= (w[1].at, &w[1].session, w[1].seq))
    );
    let of_a = find(EventFilter {
        session: Some(a[..30].to_string()),
        ..Default::default()
    })
    .await;
    assert_eq!(of_a.len(), 5);
    assert!(of_a.iter().all(|e| e.session == a));
    let bob = find(EventFilter {
        actor: Some("bob".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(bob.len(), 4);
    let of_carol = find(EventFilter {
        user: Some("carol".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(of_carol.len(), 5);
    assert!(of_carol.iter().all(|e| e.session == b));
    let created = find(EventFilter {
        kind: Some("created".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(created.len(), 2);
    assert!(
        find(EventFilter {
            session: Some("not-hex%".into()),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    assert!(
        find(EventFilter {
            since: Some(all[0].at + 1),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .find_events(&EventFilter {
                before: before.clone(),
                limit: 3,
                ..Default::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        before = Some((last.at, last.session.clone(), last.seq));
        paged.extend(page.into_iter().map(|e| (e.session, e.seq)));
    }
    let want: Vec<_> = all.into_iter().map(|e| (e.session, e.seq)).collect();
    assert_eq!(paged, want);
}

both!(accounts);

/// Users, tokens and logins: what a login or a token finds, and what ends
/// them (a password or role change ends logins; removing a user ends
/// everything of theirs; a revoked token finds nobody).
async fn accounts(db: &Db) {
    use store::Role;
    let store = db.store().await;
    let h = |c: char| c.to_string().repeat(64);
    assert!(!store.has_users().await.unwrap());
    store
        .add_user("alice", Role::Admin, "$argon2id$fake", 1)
        .await
        .unwrap();
    store
        .add_user("bob", Role::Viewer, "$argon2id$fake2", 2)
        .await
        .unwrap();
    assert!(store.has_users().await.unwrap());
    assert!(matches!(
        store.add_user("alice", Role::Viewer, "x", 3).await,
        Err(StoreError::UserExists { .. })
    ));
    for bad in ["", "Alice", "1abc", "a b", "a/b", &"a".repeat(33)] {
        assert!(matches!(
            store.add_user(bad, Role::Viewer, "x", 3).await,
            Err(StoreError::Invalid { .. })
        ));
    }
    let names: Vec<_> = store
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| (u.name, u.role))
        .collect();
    assert_eq!(
        names,
        [("alice".into(), Role::Admin), ("bob".into(), Role::Viewer)]
    );
    let (u, pw) = store.user_with_password("bob").await.unwrap().unwrap();
    assert_eq!((u.role, pw.as_str()), (Role::Viewer, "$argon2id$fake2"));
    assert!(store.user_with_password("carol").await.unwrap().is_none());
    assert!(
        store
            .user_with_password("Not A Name")
            .await
            .unwrap()
            .is_none()
    );

    // Logins: found until they expire; a role change ends them.
    store.add_login(&h('1'), "bob", 10, 100).await.unwrap();
    assert_eq!(
        store.login_user(&h('1'), 50).await.unwrap().map(|u| u.name),
        Some("bob".into())
    );
    assert!(store.login_user(&h('1'), 100).await.unwrap().is_none());
    assert!(store.login_user(&h('2'), 50).await.unwrap().is_none());
    assert!(store.login_user("not hex", 50).await.unwrap().is_none());
    store.set_role("bob", Role::Operator, 60).await.unwrap();
    assert!(store.login_user(&h('1'), 70).await.unwrap().is_none());
    store.add_login(&h('3'), "bob", 80, 1000).await.unwrap();
    store
        .set_password("bob", "$argon2id$new", 90)
        .await
        .unwrap();
    assert!(store.login_user(&h('3'), 95).await.unwrap().is_none());
    assert!(matches!(
        store.add_login(&h('4'), "carol", 1, 2).await,
        Err(StoreError::NoSuchUser { .. })
    ));
    store.add_login(&h('5'), "bob", 100, 1000).await.unwrap();
    store.remove_login(&h('5')).await.unwrap();
    assert!(store.login_user(&h('5'), 110).await.unwrap().is_none());

    // Tokens: found by their hash until revoked; last use noted.
    store
        .add_token("t1", "bob", "ci", store::Scope::Run, &h('a'), 100)
        .await
        .unwrap();
    assert!(matches!(
        store
            .add_token("t2", "carol", "x", store::Scope::Read, &h('b'), 100)
            .await,
        Err(StoreError::NoSuchUser { .. })
    ));
    let (u, t) = store.token_user(&h('a'), 200).await.unwrap().unwrap();
    assert_eq!(
        (u.name.as_str(), u.role, t.id.as_str()),
        ("bob", Role::Operator, "t1")
    );
    let listed = store.tokens(Some("bob")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_used_at, Some(200));
    assert!(store.tokens(Some("alice")).await.unwrap().is_empty());
    let revoked = store.revoke_token("t1", 300).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(300));
    assert_eq!(
        store.revoke_token("t1", 400).await.unwrap().revoked_at,
        Some(300)
    );
    assert!(store.token_user(&h('a'), 500).await.unwrap().is_none());
    assert!(matches!(
        store.revoke_token("nope", 1).await,
        Err(StoreError::NoSuchToken { .. })
    ));

    // Removing a user removes their tokens and logins.
    store
        .add_token("t3", "bob", "ci", store::Scope::Admin, &h('c'), 600)
        .await
        .unwrap();
    store.add_login(&h('6'), "bob", 600, 10_000).await.unwrap();
    store.remove_user("bob").await.unwrap();
    assert!(store.token_user(&h('c'), 700).await.unwrap().is_none());
    assert!(store.login_user(&h('6'), 700).await.unwrap().is_none());
    assert!(store.tokens(None).await.unwrap().is_empty());
    assert!(matches!(
        store.remove_user("bob").await,
        Err(StoreError::NoSuchUser { .. })
    ));

    // The accounts' trail, newest first.
    for (i, kind) in ["user_added", "login", "logout"].iter().enumerate() {
        store
            .append_account_event(
                "alice",
                kind,
                Some("bob"),
                &serde_json::json!({"i": i}),
                i as i64,
            )
            .await
            .unwrap();
    }
    let trail = store.account_events(2).await.unwrap();
    assert_eq!(
        trail.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["logout", "login"]
    );
    assert_eq!(trail[0].data, serde_json::json!({"i": 2}));
}

both!(output_and_samples);

/// Output in order, read from any point; the cap drops the oldest chunks
/// and counts the bytes dropped; a heartbeat with a sample; removing the
/// session removes them all.
async fn output_and_samples(db: &Db) {
    use store::Sample;
    let store = db.store().await;
    let id = new_id();
    store
        .create_session(&session(&id), created())
        .await
        .unwrap();
    let st = store.output_state(&id).await.unwrap();
    assert_eq!(
        (st.bytes, st.dropped, st.first_seq, st.last_seq),
        (0, 0, 1, 0)
    );
    for i in 1..=5u8 {
        let seq = store
            .append_output(&id, i64::from(i), &[i; 10], 35)
            .await
            .unwrap();
        assert_eq!(seq, u64::from(i));
    }
    // 50 bytes written, a cap of 35: chunks 1 and 2 went.
    let st = store.output_state(&id).await.unwrap();
    assert_eq!(
        (st.bytes, st.dropped, st.first_seq, st.last_seq),
        (30, 20, 3, 5)
    );
    let all = store.output_after(&id, 0, usize::MAX).await.unwrap();
    assert_eq!(all.iter().map(|c| c.seq).collect::<Vec<_>>(), [3, 4, 5]);
    assert_eq!(all[0].data, vec![3u8; 10]);
    let later = store.output_after(&id, 4, usize::MAX).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].data, vec![5u8; 10]);
    // At least one chunk, however small the budget.
    assert_eq!(store.output_after(&id, 0, 1).await.unwrap().len(), 1);
    let tail = store.output_tail(&id, 15).await.unwrap();
    assert_eq!(tail.iter().map(|c| c.seq).collect::<Vec<_>>(), [4, 5]);
    assert_eq!(store.output_tail(&id, 1).await.unwrap()[0].seq, 5);
    // A chunk bigger than the cap is kept alone.
    store.append_output(&id, 9, &[7u8; 100], 35).await.unwrap();
    let st = store.output_state(&id).await.unwrap();
    assert_eq!((st.bytes, st.dropped, st.first_seq), (100, 50, 6));
    assert!(store.append_output(&id, 9, &[], 35).await.is_err());
    // Binary output survives as it was.
    let bytes: Vec<u8> = (0..=255).collect();
    store.append_output(&id, 10, &bytes, 1 << 20).await.unwrap();
    let last = store.output_after(&id, 6, usize::MAX).await.unwrap();
    assert_eq!(last[0].data, bytes);

    assert_eq!(store.get(&id).await.unwrap().heartbeat_at, None);
    for at in [1000, 2000, 3000] {
        let s = Sample {
            at,
            cpu_usec: Some(at as u64 * 10),
            memory_bytes: Some(1 << 20),
            pids: Some(3),
        };
        store.heartbeat(&id, at, Some(&s)).await.unwrap();
    }
    store.heartbeat(&id, 4000, None).await.unwrap();
    assert_eq!(store.get(&id).await.unwrap().heartbeat_at, Some(4000));
    // Stalled: live, and its last heartbeat before the given time.
    let stalled = |before: i64| store::SessionFilter {
        stalled_before: Some(before),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.count_stalled(4001).await.unwrap(), 1);
    assert_eq!(store.count_stalled(4000).await.unwrap(), 0);
    assert_eq!(store.find(&stalled(4001)).await.unwrap().len(), 1);
    let seen = store.attention(0, 4001, None).await.unwrap();
    assert_eq!((seen.running, seen.stalled, seen.failed), (0, 1, 0));
    assert_eq!(
        store
            .attention(0, 4001, Some("alice"))
            .await
            .unwrap()
            .stalled,
        1
    );
    assert_eq!(
        store.attention(0, 4001, Some("bob")).await.unwrap().stalled,
        0
    );
    assert!(store.find(&stalled(3999)).await.unwrap().is_empty());
    let samples = store.samples(&id, 2000).await.unwrap();
    assert_eq!(
        samples.iter().map(|s| s.at).collect::<Vec<_>>(),
        [2000, 3000]
    );
    assert_eq!(samples[1].cpu_usec, Some(30_000));

    store.remove(&id).await.unwrap();
    assert!(
        store
            .output_after(&id, 0, usize::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.samples(&id, 0).await.unwrap().is_empty());
    assert_eq!(store.output_state(&id).await.unwrap().bytes, 0);
}

both!(nul_in_a_filter_matches_nothing, the_queue);

/// A NUL in a filter's text matches no session (Postgres stores none and
/// cannot compare one): an empty answer, never a database error.
async fn nul_in_a_filter_matches_nothing(db: &Db) {
    use store::{EventFilter, SessionFilter};
    let store = db.store().await;
    let id = new_id();
    store
        .create_session(&session(&id), created())
        .await
        .unwrap();
    for f in [
        SessionFilter {
            search: Some("a\0b".into()),
            limit: 10,
            ..Default::default()
        },
        SessionFilter {
            profile: Some("\0".into()),
            limit: 10,
            ..Default::default()
        },
        SessionFilter {
            user: Some("u\0".into()),
            limit: 10,
            ..Default::default()
        },
    ] {
        assert!(store.find(&f).await.unwrap().is_empty(), "{f:?}");
        assert!(store.find_summaries(&f).await.unwrap().is_empty(), "{f:?}");
    }
    let f = EventFilter {
        actor: Some("\0".into()),
        limit: 10,
        ..Default::default()
    };
    assert!(store.find_events(&f).await.unwrap().is_empty());
    store.close().await;
}

/// The team queue: Postgres only; oldest first, labels and backend
/// matched, nothing claimed twice, a silent worker's claims given back and
/// its started sessions lost, a gone worker claims nothing.
async fn the_queue(db: &Db) {
    use store::queue::{NewRequest, NewWorker, RequestState, WorkerState, WorkspaceSource};
    let store = db.store().await;
    let ask = |id: &str, labels: &[(&str, &str)], at: i64| NewRequest {
        id: id.into(),
        user: "alice".into(),
        actor: "alice".into(),
        profile: "generic".into(),
        workspace: WorkspaceSource::Path { path: "p".into() },
        command: vec!["true".into()],
        image: None,
        backend: None,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        created_at: at,
    };
    if db.is_sqlite() {
        assert!(!store.has_queue());
        let e = store.enqueue(&ask(&new_id(), &[], 1)).await.unwrap_err();
        assert!(matches!(e, StoreError::NeedsPostgres { .. }), "{e}");
        store.close().await;
        return;
    }
    let worker = |labels: &[(&str, &str)]| NewWorker {
        id: new_id(),
        name: "w".into(),
        host: "h".into(),
        backend: Backend::Native,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        capacity: 2,
    };
    let (plain, gpu) = (worker(&[]), worker(&[("gpu", "1")]));
    store.register_worker(&plain, 1000).await.unwrap();
    store.register_worker(&gpu, 1000).await.unwrap();
    let (a, b, c) = (new_id(), new_id(), new_id());
    store.enqueue(&ask(&a, &[("gpu", "1")], 10)).await.unwrap();
    store.enqueue(&ask(&b, &[], 20)).await.unwrap();
    store.enqueue(&ask(&c, &[], 30)).await.unwrap();
    assert!(matches!(
        store.enqueue(&ask(&c, &[], 30)).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    // The plain worker skips what needs a GPU; the GPU worker takes the
    // oldest.
    let got = store.claim_request(&plain.id, 1001).await.unwrap().unwrap();
    assert_eq!(got.id, b);
    assert_eq!(got.state, RequestState::Claimed);
    let got = store.claim_request(&gpu.id, 1001).await.unwrap().unwrap();
    assert_eq!(got.id, a);
    assert!(store.start_request(&a, &gpu.id, 1002).await.unwrap());
    assert!(
        !store.start_request(&b, &gpu.id, 1002).await.unwrap(),
        "not its claim"
    );
    // The GPU worker goes silent: its started request is lost, and its
    // session with it.
    store.create_session(&session(&a), created()).await.unwrap();
    store.heartbeat_worker(&plain.id, 5000).await.unwrap();
    let reaped = store.reap_workers(4000, 5000).await.unwrap();
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].worker, gpu.id);
    assert_eq!(reaped[0].lost, vec![a.clone()]);
    assert_eq!(store.get(&a).await.unwrap().status, Status::Lost);
    assert_eq!(store.request(&a).await.unwrap().state, RequestState::Lost);
    assert_eq!(
        store.heartbeat_worker(&gpu.id, 6000).await.unwrap(),
        WorkerState::Gone
    );
    // The plain worker goes silent holding a claim: it returns.
    let reaped = store.reap_workers(6000, 7000).await.unwrap();
    assert_eq!(reaped[0].requeued, vec![b.clone()]);
    assert_eq!(store.request(&b).await.unwrap().state, RequestState::Queued);
    // A gone worker claims nothing; one registered again does.
    assert!(
        store
            .claim_request(&plain.id, 7001)
            .await
            .unwrap()
            .is_none()
    );
    store.register_worker(&plain, 7002).await.unwrap();
    let got = store.claim_request(&plain.id, 7003).await.unwrap().unwrap();
    assert_eq!((got.id.as_str(), got.attempts), (b.as_str(), 2));
    let claims = store.claims().await.unwrap();
    assert_eq!(claims.iter().filter(|c| c.0 == b).count(), 2);
    // Withdrawn only while queued.
    assert!(store.cancel_request(&c, "no", 7004).await.unwrap());
    assert!(!store.cancel_request(&b, "no", 7004).await.unwrap());
    let stats = store.queue_stats(7005).await.unwrap();
    assert_eq!((stats.queued, stats.claimed), (0, 1));
    store.close().await;
}
