//! Profiles as the store knows them: the ones sessions ran under, and for
//! each, the policy its newest session recorded and its sessions. The web
//! crate reads no profile files (they live on whichever host ran the
//! session).

use askama::Template;
use askama_web::WebTemplate;
use axum::Extension;
use axum::extract::{Path, State};
use store::SessionFilter;

use crate::AppState;
use crate::auth::Principal;
use crate::error::WebError;
use crate::view::{Masked, Mount, Nav, Plan, Row, when};

#[derive(Template, WebTemplate)]
#[template(path = "profiles.html")]
pub struct ProfilesPage {
    pub nav: Nav,
    pub profiles: Vec<(String, u64, String)>,
}

pub async fn list(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<ProfilesPage, WebError> {
    Ok(ProfilesPage {
        nav: Nav::of(&who),
        profiles: st
            .store
            .profiles_in_use(who.only_user().as_deref())
            .await?
            .into_iter()
            .map(|(name, n, at)| (name, n, when(at)))
            .collect(),
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "profile.html")]
pub struct ProfilePage {
    pub nav: Nav,
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
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<ProfilePage, WebError> {
    let sessions = st
        .store
        .find(&SessionFilter {
            profile: Some(name.clone()),
            user: who.only_user(),
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
        nav: Nav::of(&who),
        newest: newest.id.clone(),
        newest_short: newest.short_id().to_string(),
        name,
        plan,
        writable,
        masked,
        rows: sessions.iter().map(|s| Row::of(s, now)).collect(),
    })
}
