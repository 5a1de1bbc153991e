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

/// The most sessions one verification reads (newest first).
const VERIFY_AT_MOST: u32 = 1000;
/// How many chains between two progress lines.
const VERIFY_STEP: usize = 50;

/// Text for HTML.
fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Every chain the viewer may see verified, newest first, the page written
/// as it goes: a progress line every 50 chains, then the verdict and
/// every broken chain. Plain HTML streamed, so it needs no script.
pub async fn verify(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<axum::response::Response, WebError> {
    use axum::response::IntoResponse;
    let sessions = st
        .store
        .find_summaries(&SessionFilter {
            user: who.only_user(),
            limit: VERIFY_AT_MOST + 1,
            ..SessionFilter::default()
        })
        .await?;
    let more = sessions.len() > VERIFY_AT_MOST as usize;
    let ids: Vec<String> = sessions
        .into_iter()
        .take(VERIFY_AT_MOST as usize)
        .map(|s| s.id)
        .collect();
    let total = ids.len();
    let head = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Chains · agentctl</title><link rel=\"stylesheet\" href=\"/static/app.css\"></head>\
         <body><header><a class=\"brand\" href=\"/\">agentctl</a> <nav><a href=\"/\">Sessions</a> \
         <a href=\"/audit\">Audit</a> <a href=\"/profiles\">Profiles</a></nav></header><main>\
         <h1>Audit chains</h1><ol class=\"progress\" id=\"verify-progress\">\n",
    );
    let store = st.store.clone();
    let stream = futures_util::stream::unfold(
        (
            Some(head),
            0usize,
            0usize,
            Vec::<(String, String)>::new(),
            false,
        ),
        move |(head, done, intact, mut broken, finished)| {
            let (store, ids) = (store.clone(), ids.clone());
            async move {
                if let Some(h) = head {
                    return Some((
                        Ok::<_, std::convert::Infallible>(h),
                        (None, done, intact, broken, finished),
                    ));
                }
                if finished {
                    return None;
                }
                if done >= total {
                    let class = if broken.is_empty() { "ok" } else { "bad" };
                    let mut end = format!(
                        "</ol><p class=\"{class}\" id=\"verify-result\">{total} sessions checked{}: {intact} intact, {} broken.</p>\
                         <table><thead><tr><th>Session</th><th>Where it breaks</th></tr></thead><tbody>",
                        if more {
                            format!(" (the newest {total}; there are more)")
                        } else {
                            String::new()
                        },
                        broken.len()
                    );
                    for (id, why) in &broken {
                        end.push_str(&format!(
                            "<tr><td><a href=\"/sessions/{id}\"><code>{id}</code></a></td><td class=\"bad\">{}</td></tr>",
                            escape(why)
                        ));
                    }
                    end.push_str("</tbody></table></main></body></html>\n");
                    return Some((Ok(end), (None, done, intact, broken, true)));
                }
                let mut ok = intact;
                let step = ids[done..].iter().take(VERIFY_STEP);
                let mut n = done;
                for id in step {
                    n += 1;
                    match store.verify(id).await {
                        Ok(v) if v.ok => ok += 1,
                        Ok(v) => broken.push((
                            escape(id),
                            v.broken
                                .map(|b| format!("#{}: {}", b.seq, b.reason))
                                .unwrap_or_else(|| "the chain does not verify".into()),
                        )),
                        Err(e) => {
                            tracing::error!("session store: {e}");
                            broken.push((
                                escape(id),
                                "the store failed to read it; see the server's log".into(),
                            ));
                        }
                    }
                }
                let line = format!(
                    "<li>checked {n} of {total}: {ok} intact, {} broken</li>\n",
                    broken.len()
                );
                Some((Ok(line), (None, n, ok, broken, false)))
            }
        },
    );
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
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
