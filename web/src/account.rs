//! Logging in and out, the admin's users page, and deleting an ended
//! session. Every action here is an entry in the accounts' audit trail
//! with its actor.

use askama::Template;
use askama_web::WebTemplate;
use axum::Extension;
use axum::Form;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;
use store::Role;

use crate::AppState;
use crate::auth::{self, Principal, Via};
use crate::error::WebError;
use crate::view::{Nav, when};

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub nav: Nav,
    pub next: String,
    pub error: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct Next {
    pub next: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    pub user: String,
    pub password: String,
    #[serde(default)]
    pub next: String,
}

/// Where to go after logging in: a path on this server, nothing else (a
/// `next` of `//evil.example` or `https://…` would send the user away).
fn local_path(next: &str) -> String {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control());
    if ok { next.to_string() } else { "/".into() }
}

pub async fn login_page(State(st): State<AppState>, Query(q): Query<Next>) -> Response {
    if !st.auth.required(&st.store).await {
        return Redirect::to("/").into_response();
    }
    LoginPage {
        nav: Nav::default(),
        next: local_path(q.next.as_deref().unwrap_or("/")),
        error: String::new(),
    }
    .into_response()
}

pub async fn login(State(st): State<AppState>, req: Request) -> Response {
    let addr = auth::client_addr(req.headers(), auth::peer(&req), &st.auth);
    let Ok(Form(form)) = Form::<LoginForm>::from_request(req, &()).await else {
        return (
            StatusCode::BAD_REQUEST,
            "a login needs the fields user and password\n",
        )
            .into_response();
    };
    let next = local_path(&form.next);
    let again = |status: StatusCode, error: &str| {
        (
            status,
            LoginPage {
                nav: Nav::default(),
                next: next.clone(),
                error: error.to_string(),
            },
        )
            .into_response()
    };
    if !st.auth.required(&st.store).await {
        return Redirect::to("/").into_response();
    }
    if let Err(wait) = st.auth.limiter.attempt(addr) {
        let mut resp = again(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts from your address; wait a minute and try again.",
        );
        if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let now = store::now_ms();
    let found = match st.store.user_with_password(form.user.trim()).await {
        Ok(f) => f,
        Err(e) => return WebError::from(e).into_response(),
    };
    let (user, hash) = match found {
        Some((u, h)) => (Some(u), Some(h)),
        None => (None, None),
    };
    let password = form.password;
    // Argon2 takes tens of milliseconds of CPU: off the async threads.
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, hash.as_deref()))
        .await
        .unwrap_or(false);
    let name = form.user.trim().chars().take(64).collect::<String>();
    let Some(user) = user.filter(|_| ok) else {
        let _ = st
            .store
            .append_account_event(
                &name,
                "login_failed",
                Some(&name),
                &json!({"from": addr.to_string()}),
                now,
            )
            .await;
        return again(StatusCode::UNAUTHORIZED, "Wrong user name or password.");
    };
    let secret = match auth::random_hex(32) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("login: {e}");
            return again(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server cannot log you in now.",
            );
        }
    };
    let expires = now + auth::LOGIN_TTL.as_millis() as i64;
    if let Err(e) = st
        .store
        .add_login(&auth::sha256_hex(&secret), &user.name, now, expires)
        .await
    {
        return WebError::from(e).into_response();
    }
    let _ = st
        .store
        .append_account_event(
            &format!("{} (dashboard)", user.name),
            "login",
            Some(&user.name),
            &json!({"from": addr.to_string()}),
            now,
        )
        .await;
    let mut resp = Redirect::to(&next).into_response();
    set_cookie(&mut resp, &st, &secret, auth::LOGIN_TTL.as_secs());
    resp
}

fn set_cookie(resp: &mut Response, st: &AppState, value: &str, max_age: u64) {
    let secure = if st.auth.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}",
        st.auth.cookie_name()
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

pub async fn logout(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
) -> Response {
    if let Some(secret) = auth::cookie(&headers, st.auth.cookie_name()) {
        let _ = st.store.remove_login(&auth::sha256_hex(secret)).await;
    }
    if who.via == Via::Login {
        let _ = st
            .store
            .append_account_event(
                &who.actor(),
                "logout",
                Some(&who.name),
                &json!({}),
                store::now_ms(),
            )
            .await;
    }
    let mut resp = Redirect::to("/login").into_response();
    set_cookie(&mut resp, &st, "", 0);
    resp
}

pub struct UserRow {
    pub name: String,
    pub role: String,
    pub created: String,
}

pub struct TokenRow {
    pub id: String,
    pub user: String,
    pub label: String,
    pub created: String,
    pub last_used: String,
    pub revoked: String,
}

pub struct TrailRow {
    pub at: String,
    pub actor: String,
    pub kind: String,
    pub subject: String,
    pub data: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "users.html")]
pub struct UsersPage {
    pub nav: Nav,
    pub users: Vec<UserRow>,
    pub tokens: Vec<TokenRow>,
    pub trail: Vec<TrailRow>,
}

/// Users, tokens and the accounts' trail: admins only.
pub async fn users(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<UsersPage, WebError> {
    if !who.is_admin() {
        return Err(auth::refuse(
            &who,
            "the users page",
            Role::Admin,
            store::Scope::Admin,
        ));
    }
    let users = st.store.users().await?;
    let tokens = st.store.tokens(None).await?;
    let trail = st.store.account_events(200).await?;
    Ok(UsersPage {
        nav: Nav::of(&who),
        users: users
            .into_iter()
            .map(|u| UserRow {
                name: u.name,
                role: u.role.to_string(),
                created: when(u.created_at),
            })
            .collect(),
        tokens: tokens
            .into_iter()
            .map(|t| TokenRow {
                id: t.id,
                user: t.user,
                label: t.label,
                created: when(t.created_at),
                last_used: t.last_used_at.map(when).unwrap_or_default(),
                revoked: t.revoked_at.map(when).unwrap_or_default(),
            })
            .collect(),
        trail: trail
            .into_iter()
            .map(|e| TrailRow {
                at: when(e.at),
                actor: e.actor,
                kind: e.kind,
                subject: e.subject.unwrap_or_default(),
                data: e.data.to_string(),
            })
            .collect(),
    })
}

/// Deletes an ended session's record and audit log: admins only. A live
/// session is stopped first (by its supervisor), never deleted.
pub async fn delete_session(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Redirect, WebError> {
    if !who.is_admin() {
        return Err(auth::refuse(
            &who,
            "deleting a session",
            Role::Admin,
            store::Scope::Admin,
        ));
    }
    let s = st.store.get(&id).await?;
    if s.status.is_live() {
        return Err(WebError::Live(s.short_id().to_string()));
    }
    st.store.remove(&s.id).await?;
    let _ = st
        .store
        .append_account_event(
            &who.actor(),
            "session_deleted",
            Some(&s.id),
            &json!({"status": s.status.as_str(), "user": s.user, "events": s.events_count}),
            store::now_ms(),
        )
        .await;
    Ok(Redirect::to("/"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn after_login_only_a_local_path() {
        for (next, want) in [
            ("/sessions/ab", "/sessions/ab"),
            ("/", "/"),
            ("//evil.example", "/"),
            ("/\\evil.example", "/"),
            ("https://evil.example/", "/"),
            ("javascript:alert(1)", "/"),
            ("/a\nb", "/"),
            ("", "/"),
        ] {
            assert_eq!(super::local_path(next), want, "{next:?}");
        }
    }
}
