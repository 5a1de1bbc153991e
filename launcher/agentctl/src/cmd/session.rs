//! Commands on one session: logs, stop, rm, exec, audit; and gc.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::json;
use store::{NewEvent, Session, Status};

use crate::record::{self, StoreUrl, block_on};

/// Reconciles, then finds the session by id or unique prefix.
fn find(id: &str, store_url: &StoreUrl) -> Result<Session> {
    record::reconcile(store_url)?;
    block_on(async {
        let store = store_url.open().await?;
        let s = store.get(id).await?;
        store.close().await;
        anyhow::Ok(s)
    })
}

pub fn logs(id: &str, follow: bool, raw: bool, store_url: &StoreUrl) -> Result<u8> {
    use std::io::IsTerminal;
    let s = find(id, store_url)?;
    let backend = super::backend_for(s.backend);
    let stdout = std::io::stdout();
    let to_terminal = stdout.is_terminal();
    let mut out = stdout.lock();
    if to_terminal && !raw {
        let mut filtered =
            sandbox::termfilter::FilterWriter::new(&mut out, sandbox::termfilter::Mode::Text);
        backend.logs(&record::handle(&s), follow, &mut filtered)?;
    } else {
        backend.logs(&record::handle(&s), follow, &mut out)?;
    }
    Ok(0)
}

pub fn stop(id: &str, secs: u64, store_url: &StoreUrl) -> Result<u8> {
    let s = find(id, store_url)?;
    if !s.status.is_live() {
        println!("{} is not running ({})", s.short_id(), s.status);
        return Ok(0);
    }
    // Recorded first, so whoever records the end knows it was a stop.
    block_on(async {
        let store = store_url.open().await?;
        store
            .append_event(
                &s.id,
                NewEvent::new("stop_requested")
                    .actor(record::actor())
                    .data(json!({"signal": "SIGTERM", "timeout_secs": secs})),
            )
            .await?;
        store.close().await;
        anyhow::Ok(())
    })?;
    let backend = super::backend_for(s.backend);
    backend.stop(&record::handle(&s), Duration::from_secs(secs))?;
    super::proxy::stop_session_proxy(&s.id);
    // Whatever the backend knows about the end goes on record now.
    record::reconcile(store_url)?;
    println!("{}", s.id);
    Ok(0)
}

pub fn rm(id: &str, force: bool, store_url: &StoreUrl) -> Result<u8> {
    let s = find(id, store_url)?;
    if s.status.is_live() {
        if !force {
            bail!(
                "session {} is {}; stop it first, or use `agentctl rm -f`",
                s.short_id(),
                s.status
            );
        }
        stop(&s.id, 0, store_url)?;
    }
    super::backend_for(s.backend).remove(&record::handle(&s))?;
    block_on(async {
        let store = store_url.open().await?;
        store.remove(&s.id).await?;
        store.close().await;
        anyhow::Ok(())
    })?;
    println!("{}", s.id);
    Ok(0)
}

pub fn exec(id: &str, no_tty: bool, command: Vec<String>, store_url: &StoreUrl) -> Result<u8> {
    let s = find(id, store_url)?;
    if s.status != Status::Running {
        bail!("session {} is not running ({})", s.short_id(), s.status);
    }
    let tty = !no_tty && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    block_on(async {
        let store = store_url.open().await?;
        store
            .append_event(
                &s.id,
                NewEvent::new("exec")
                    .actor(record::actor())
                    .data(json!({"command": command})),
            )
            .await?;
        store.close().await;
        anyhow::Ok(())
    })?;
    let status = super::backend_for(s.backend).exec(&record::handle(&s), &command, tty)?;
    Ok(status.code().clamp(0, 255) as u8)
}

pub fn audit(id: &str, verify: bool, json_out: bool, store_url: &StoreUrl) -> Result<u8> {
    let (s, events, verification) = block_on(async {
        let store = store_url.open().await?;
        let s = store.get(id).await?;
        let events = store.events(&s.id).await?;
        let v = if verify {
            Some(store.verify(&s.id).await?)
        } else {
            None
        };
        store.close().await;
        anyhow::Ok((s, events, v))
    })?;
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "session": s.id,
                "events": events,
                "verification": verification,
            }))?
        );
    } else {
        println!("session {} ({}, {})", s.id, s.profile, s.status);
        for e in &events {
            println!(
                "{:>4}  {}  {:<8}  {}  {}",
                e.seq,
                super::ps::when(e.at),
                e.kind,
                e.actor.as_deref().unwrap_or("-"),
                e.data
            );
        }
    }
    match verification {
        Some(v) if !v.ok => {
            let broken = v
                .broken
                .as_ref()
                .map(|b| format!("event {}: {}", b.seq, b.reason))
                .unwrap_or_else(|| "the chain does not verify".into());
            eprintln!(
                "agentctl: audit trail of {} is broken at {broken}",
                s.short_id()
            );
            Ok(1)
        }
        Some(v) => {
            if !json_out {
                println!("verified: {} events, chain intact", v.events);
            }
            Ok(0)
        }
        None => Ok(0),
    }
}

pub fn gc(store_url: &StoreUrl) -> Result<u8> {
    record::reconcile(store_url)?;
    let orphans = super::ps::find_orphans(store_url)?;
    for (backend, o) in &orphans {
        let kind = if *backend == "docker" {
            store::Backend::Docker
        } else {
            store::Backend::Native
        };
        super::backend_for(kind).remove(&sandbox::Handle {
            session: o.session.clone(),
            ..sandbox::Handle::default()
        })?;
        println!("removed {}", o.what);
    }
    if orphans.is_empty() {
        println!("nothing to remove");
    }
    Ok(0)
}

/// Called by a detached session's helper after the session ended.
pub fn session_exit(id: &str, store_url: &StoreUrl) -> Result<u8> {
    let code: i32 = std::env::var("AGENTCTL_EXIT_CODE")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(backend_native::LAUNCHER_FAILURE);
    block_on(async {
        let store = store_url.open().await?;
        record::record_end(&store, id, code).await?;
        let files = sandbox::hostrun::from_recorded_plan(&store.get(id).await?.policy);
        record::release_placeholders(&store, id, &files).await;
        store.close().await;
        anyhow::Ok(())
    })?;
    backend_native::forget_exit(&super::native_backend(), id);
    super::proxy::stop_session_proxy(id);
    Ok(0)
}
