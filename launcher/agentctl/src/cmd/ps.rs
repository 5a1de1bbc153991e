use anyhow::Result;
use store::ListQuery;

use crate::cli::PsArgs;
use crate::record::{self, StoreUrl, block_on};

pub fn ps(args: PsArgs, store_url: &StoreUrl) -> Result<u8> {
    if args.orphans {
        return orphans(args.json, store_url);
    }
    record::reconcile(store_url)?;
    let sessions = block_on(async {
        let store = store_url.open().await?;
        let list = store
            .list(&ListQuery {
                all: args.all,
                limit: args.limit,
                offset: 0,
            })
            .await?;
        store.close().await;
        anyhow::Ok(list)
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

fn orphans(json: bool, store_url: &StoreUrl) -> Result<u8> {
    let found = find_orphans(store_url)?;
    if json {
        let list: Vec<_> = found
            .iter()
            .map(|(b, o)| serde_json::json!({"backend": b, "session": o.session, "what": o.what}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if found.is_empty() {
        println!("no orphaned sandboxes");
    } else {
        for (b, o) in &found {
            println!(
                "{:<12}  {b:<6}  {}",
                &o.session[..o.session.len().min(12)],
                o.what
            );
        }
    }
    Ok(0)
}

/// Sandboxes of either backend that no session record claims.
pub fn find_orphans(store_url: &StoreUrl) -> Result<Vec<(&'static str, sandbox::Orphan)>> {
    let mut candidates = Vec::new();
    for (name, kind) in [
        ("native", store::Backend::Native),
        ("docker", store::Backend::Docker),
    ] {
        for o in super::backend_for(kind).orphans(&|_| false)? {
            candidates.push((name, o));
        }
    }
    block_on(async {
        let store = store_url.open().await?;
        let mut out = Vec::new();
        for (name, o) in candidates {
            match store.get(&o.session).await {
                Ok(s) if s.id == o.session => {}
                _ => out.push((name, o)),
            }
        }
        store.close().await;
        anyhow::Ok(out)
    })
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

/// A UTC timestamp, from unix milliseconds.
pub fn when(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::when(0), "1970-01-01 00:00:00");
        assert_eq!(super::when(1_763_769_600_000), "2025-11-22 00:00:00");
    }
}
