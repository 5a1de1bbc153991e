//! Profiles as the store knows them: the ones sessions ran under, and for
//! each, the policy its newest session recorded and its sessions. The web
//! crate reads no profile files (they live on whichever host ran the
//! session).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use store::SessionFilter;

use crate::AppState;
use crate::error::WebError;
use crate::view::{Masked, Mount, Plan, Row, when};

#[derive(Template, WebTemplate)]
#[template(path = "profiles.html")]
pub struct ProfilesPage {
    pub profiles: Vec<(String, u64, String)>,
}

pub async fn list(State(st): State<AppState>) -> Result<ProfilesPage, WebError> {
    Ok(ProfilesPage {
        profiles: st
            .store
            .profiles_in_use()
            .await?
            .into_iter()
            .map(|(name, n, at)| (name, n, when(at)))
            .collect(),
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "profile.html")]
pub struct ProfilePage {
    pub name: String,
    pub newest: String,
    pub newest_short: String,
    pub plan: Plan,
    pub writable: Vec<Mount>,
    pub masked: Vec<Masked>,
    pub rows: Vec<Row>,
}

pub async fn one(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<ProfilePage, WebError> {
    let sessions = st
        .store
        .find(&SessionFilter {
            profile: Some(name.clone()),
            limit: 20,
            ..SessionFilter::default()
        })
        .await?;
    let Some(newest) = sessions.first() else {
        return Err(WebError::NoSuchProfile(name));
    };
    let mut plan = Plan::read(&newest.policy);
    let writable = plan
        .mounts
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.writable && m.from_host)
        .collect();
    let masked = plan.masked.take().unwrap_or_default();
    let now = store::now_ms();
    Ok(ProfilePage {
        newest: newest.id.clone(),
        newest_short: newest.short_id().to_string(),
        name,
        plan,
        writable,
        masked,
        rows: sessions.iter().map(|s| Row::of(s, now)).collect(),
    })
}
