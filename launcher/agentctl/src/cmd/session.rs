//! Commands on one session: logs, stop, rm, exec, audit; gc; and the end
//! of a detached session. The lifecycle does the work; this prints.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Result;
use lifecycle::{Lifecycle, StopRequest, Stopped};
use serde_json::json;

use store::utc as when;

pub fn logs(id: &str, follow: bool, raw: bool, lc: &Lifecycle) -> Result<u8> {
    let stdout = std::io::stdout();
    let to_terminal = stdout.is_terminal();
    let mut out = stdout.lock();
    if to_terminal && !raw {
        let mut filtered =
            sandbox::termfilter::FilterWriter::new(&mut out, sandbox::termfilter::Mode::Text);
        lc.follow(id, follow, &mut filtered)?;
    } else {
        lc.follow(id, follow, &mut out)?;
    }
    Ok(0)
}

pub fn stop(id: &str, secs: u64, lc: &Lifecycle) -> Result<u8> {
    let req = StopRequest {
        actor: lc.actor.clone(),
        reason: None,
        grace: Duration::from_secs(secs),
    };
    match lc.stop(id, &req)? {
        Stopped::Stopped(s) => println!("{}", s.id),
        Stopped::NotRunning(s) => println!("{} is not running ({})", s.short_id(), s.status),
    }
    Ok(0)
}

pub fn rm(id: &str, force: bool, lc: &Lifecycle) -> Result<u8> {
    let s = lc.remove(id, force, &lc.actor)?;
    println!("{}", s.id);
    Ok(0)
}

pub fn exec(id: &str, no_tty: bool, command: Vec<String>, lc: &Lifecycle) -> Result<u8> {
    let tty = !no_tty && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let code = lc.exec(id, &command, tty)?;
    Ok(code.clamp(0, 255) as u8)
}

pub fn audit(id: &str, verify: bool, json_out: bool, lc: &Lifecycle) -> Result<u8> {
    let (s, events, verification) = lc.audit(id, verify)?;
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
                when(e.at),
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

pub fn gc(lc: &Lifecycle) -> Result<u8> {
    let removed = lc.collect_orphans()?;
    for o in &removed {
        println!("removed {}", o.orphan.what);
    }
    if removed.is_empty() {
        println!("nothing to remove");
    }
    Ok(0)
}

/// Called by a detached session's helper after the session ended.
pub fn session_exit(id: &str, lc: &Lifecycle) -> Result<u8> {
    let code = std::env::var("AGENTCTL_EXIT_CODE")
        .ok()
        .and_then(|c| c.parse().ok());
    lc.session_exit(id, code)?;
    Ok(0)
}
