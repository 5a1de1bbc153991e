//! The audit trail across sessions (`/audit`), filtered, newest first,
//! and every chain verified at once (`/audit/verify`).

use askama::Template;
use askama_web::WebTemplate;
use axum::Extension;
use axum::extract::{Query, State};
use serde::Deserialize;
use store::{EventFilter, SessionFilter};

use crate::AppState;
use crate::auth::Principal;
use crate::error::WebError;
use crate::pages::query_string;
use crate::view::{Nav, when};

#[derive(Debug, Default, Deserialize)]
pub struct Filter {
    pub session: Option<String>,
    pub actor: Option<String>,
    pub kind: Option<String>,
    /// `YYYY-MM-DD` (UTC), the day's start.
    pub since: Option<String>,
    pub before_at: Option<i64>,
    pub before_session: Option<String>,
    pub before_seq: Option<u64>,
}

pub struct Row {
    pub at: String,
    pub session: String,
    pub short: String,
    pub seq: u64,
    pub kind: String,
    pub actor: String,
    pub data: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub nav: Nav,
    pub events: Vec<Row>,
    pub f_session: String,
    pub f_actor: String,
    pub f_kind: String,
    pub f_since: String,
    pub problem: String,
    pub next: Option<String>,
}

const PAGE: u32 = 100;

/// `YYYY-MM-DD` as unix ms at 00:00 UTC.
fn day_start(day: &str) -> Option<i64> {
    let mut parts = day.trim().splitn(3, '-');
    let (y, m, d): (i64, i64, i64) = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400_000)
}

fn wanted(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

pub async fn page(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Query(f): Query<Filter>,
) -> Result<AuditPage, WebError> {
    let since_text = wanted(&f.since).unwrap_or_default();
    let since = day_start(&since_text);
    let problem = if !since_text.is_empty() && since.is_none() {
        format!("\"{since_text}\" is not a date; give one like 2026-12-04")
    } else {
        String::new()
    };
    let filter = EventFilter {
        session: wanted(&f.session),
        actor: wanted(&f.actor),
        kind: wanted(&f.kind),
        user: who.only_user(),
        since,
        until: None,
        before: match (f.before_at, &f.before_session, f.before_seq) {
            (Some(at), Some(s), Some(seq)) => Some((at, s.clone(), seq)),
            _ => None,
        },
        limit: PAGE,
    };
    let events = if problem.is_empty() {
        st.store.find_events(&filter).await?
    } else {
        Vec::new()
    };
    let next = (events.len() == PAGE as usize).then(|| {
        let last = events.last().expect("a full page");
        let (at, seq) = (last.at.to_string(), last.seq.to_string());
        query_string(&[
            ("session", filter.session.as_deref().unwrap_or_default()),
            ("actor", filter.actor.as_deref().unwrap_or_default()),
            ("kind", filter.kind.as_deref().unwrap_or_default()),
            ("since", &since_text),
            ("before_at", &at),
            ("before_session", &last.session),
            ("before_seq", &seq),
        ])
    });
    Ok(AuditPage {
        nav: Nav::of(&who),
        events: events
            .iter()
            .map(|e| Row {
                at: when(e.at),
                short: e.session[..e.session.len().min(12)].to_string(),
                session: e.session.clone(),
                seq: e.seq,
                kind: e.kind.clone(),
                actor: e.actor.clone().unwrap_or_default(),
                data: e.data.to_string(),
            })
            .collect(),
        f_session: filter.session.unwrap_or_default(),
        f_actor: filter.actor.unwrap_or_default(),
        f_kind: filter.kind.unwrap_or_default(),
        f_since: since_text,
        problem,
        next,
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "verify.html")]
pub struct VerifyPage {
    pub nav: Nav,
    pub checked: usize,
    pub verified: usize,
    pub more: bool,
    pub broken: Vec<(String, String)>,
}

/// The most sessions one verification reads (newest first).
const VERIFY_AT_MOST: u32 = 1000;

pub async fn verify(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<VerifyPage, WebError> {
    let sessions = st
        .store
        .find(&SessionFilter {
            user: who.only_user(),
            limit: VERIFY_AT_MOST + 1,
            ..SessionFilter::default()
        })
        .await?;
    let more = sessions.len() > VERIFY_AT_MOST as usize;
    let mut verified = 0;
    let mut broken = Vec::new();
    for s in sessions.iter().take(VERIFY_AT_MOST as usize) {
        let v = st.store.verify(&s.id).await?;
        if v.ok {
            verified += 1;
        } else {
            let why = v
                .broken
                .map(|b| format!("#{}: {}", b.seq, b.reason))
                .unwrap_or_else(|| "the chain does not verify".into());
            broken.push((s.id.clone(), why));
        }
    }
    Ok(VerifyPage {
        nav: Nav::of(&who),
        checked: sessions.len().min(VERIFY_AT_MOST as usize),
        verified,
        more,
        broken,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn days_start_at_midnight_utc() {
        assert_eq!(super::day_start("1970-01-01"), Some(0));
        assert_eq!(super::day_start("2025-11-22"), Some(1_763_769_600_000));
        assert_eq!(super::day_start("2025-13-01"), None);
        assert_eq!(super::day_start("yesterday"), None);
    }
}
