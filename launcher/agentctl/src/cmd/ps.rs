//! `agentctl ps`: sessions on record, and sandboxes no record claims.

use anyhow::Result;
use lifecycle::Lifecycle;
use store::ListQuery;

use crate::cli::PsArgs;
use store::utc as when;

pub fn ps(args: PsArgs, lc: &Lifecycle) -> Result<u8> {
    if args.orphans {
        return orphans(args.json, lc);
    }
    let sessions = lc.list(&ListQuery {
        all: args.all,
        limit: args.limit,
        offset: 0,
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&sessions)?);
        return Ok(0);
    }
    println!(
        "{:<12}  {:<8}  {:<6}  {:<12}  {:<6}  {:<19}  COMMAND",
        "SESSION", "STATUS", "EXIT", "PROFILE", "BACKEND", "CREATED"
    );
    for s in sessions {
        println!(
            "{:<12}  {:<8}  {:<6}  {:<12}  {:<6}  {:<19}  {}",
            s.short_id(),
            s.status.to_string(),
            s.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            truncate(&s.profile, 12),
            s.backend.to_string(),
            when(s.created_at),
            truncate(&s.command.join(" "), 40),
        );
    }
    Ok(0)
}

fn orphans(json: bool, lc: &Lifecycle) -> Result<u8> {
    let found = lc.orphans()?;
    if json {
        let list: Vec<_> = found
            .iter()
            .map(|f| {
                serde_json::json!({
                    "backend": f.backend.to_string(),
                    "session": f.orphan.session,
                    "what": f.orphan.what,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if found.is_empty() {
        println!("no orphaned sandboxes");
    } else {
        for f in &found {
            let o = &f.orphan;
            println!(
                "{:<12}  {:<6}  {}",
                &o.session[..o.session.len().min(12)],
                f.backend.to_string(),
                o.what
            );
        }
    }
    Ok(0)
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}
