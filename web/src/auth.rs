//! Who is asking: a browser login (a cookie), an API token (a bearer
//! header), or, on a loopback server whose store has no users, whoever
//! runs the server.
//!
//! Secrets never reach the store: it keeps Argon2id hashes of passwords
//! and the sha256 of each token's and login's secret (both are 256 random
//! bits, so a fast hash is enough for them; a password is not).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};
use store::{Role, Scope, Session, User};

use crate::AppState;

/// The cookie of a browser login. With TLS it takes the `__Host-` prefix,
/// which browsers accept only from a secure origin, with `Path=/` and no
/// `Domain`: no other host or plain-HTTP page can set or shadow it.
const COOKIE: &str = "agentctl_login";
const SECURE_COOKIE: &str = "__Host-agentctl_login";
/// How long a browser login lasts.
pub const LOGIN_TTL: Duration = Duration::from_secs(12 * 3600);
/// How often the server looks again whether the store has users.
const USERS_RECHECK_MS: i64 = 2_000;

/// Who a request acts as.
#[derive(Clone, Debug)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub via: Via,
    /// What the credential may do within the role: a token's scope; a
    /// browser login or the local user can do all the role allows.
    pub scope: Scope,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// A loopback server with no users: the user who runs it, as admin.
    Local,
    /// A browser login.
    Login,
    /// An API token (its id).
    Token(String),
}

impl Principal {
    /// The actor written into audit events.
    pub fn actor(&self) -> String {
        match &self.via {
            Via::Local => self.name.clone(),
            Via::Login => format!("{} (dashboard)", self.name),
            Via::Token(id) => format!("{} (api token {id})", self.name),
        }
    }

    /// Admins see every session; everyone else their own (a session's
    /// user is the Unix user who started it: a dashboard user of the same
    /// name sees it).
    pub fn sees_all(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn may_see(&self, s: &Session) -> bool {
        self.sees_all() || s.user == self.name
    }

    pub fn may_stop(&self, s: &Session) -> bool {
        self.may_run() && self.may_see(s)
    }

    /// Starts sessions (and stops its own): an operator or admin whose
    /// credential has the run scope.
    pub fn may_run(&self) -> bool {
        self.role >= Role::Operator && self.scope >= Scope::Run
    }

    /// Manages users and deletes sessions: an admin whose credential has
    /// the admin scope.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin && self.scope == Scope::Admin
    }

    /// The user filter a listing must apply: `None` for admins.
    pub fn only_user(&self) -> Option<String> {
        (!self.sees_all()).then(|| self.name.clone())
    }
}

/// How this server authenticates, fixed at start.
pub struct AuthConfig {
    /// Who acts on a loopback server with no users.
    pub local_actor: String,
    /// The user that sessions asked for on such a server run for: the
    /// Unix user who runs the server.
    pub local_user: String,
    /// Cookies get `Secure` (TLS here or at a trusted proxy).
    pub secure_cookies: bool,
    /// The reverse proxy whose `X-Forwarded-For` names the client.
    pub trusted_proxy: Option<IpAddr>,
    /// Sticky: once the store has had users, logins are required even if
    /// every user is removed later.
    users_seen: AtomicBool,
    checked_at: AtomicI64,
    pub(crate) limiter: LoginLimiter,
}

impl AuthConfig {
    pub fn new(local_actor: String) -> AuthConfig {
        AuthConfig {
            local_actor,
            local_user: "local".into(),
            secure_cookies: false,
            trusted_proxy: None,
            users_seen: AtomicBool::new(false),
            checked_at: AtomicI64::new(i64::MIN),
            limiter: LoginLimiter::new(10, Duration::from_secs(60)),
        }
    }

    pub(crate) fn cookie_name(&self) -> &'static str {
        if self.secure_cookies {
            SECURE_COOKIE
        } else {
            COOKIE
        }
    }

    /// Whether requests must log in: the store has (or had) users. Looked
    /// up at most every two seconds; an error counts as "yes".
    pub(crate) async fn required(&self, store: &store::SessionStore) -> bool {
        if self.users_seen.load(Ordering::Relaxed) {
            return true;
        }
        let now = store::now_ms();
        let last = self.checked_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) < USERS_RECHECK_MS {
            return false;
        }
        let has = store.has_users().await.unwrap_or(true);
        self.checked_at.store(now, Ordering::Relaxed);
        if has {
            self.users_seen.store(true, Ordering::Relaxed);
        }
        has
    }
}

/// Hex of sha256: how a token's or a login's secret is kept.
pub fn sha256_hex(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` random bytes from the kernel, hex.
pub fn random_hex(n: usize) -> Result<String, AuthError> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(hex(&buf))
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the kernel gave no random bytes: {0}")]
    Random(String),
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("a password needs at least {MIN_PASSWORD} characters")]
    TooShort,
}

pub const MIN_PASSWORD: usize = 12;

/// An Argon2id hash of `password` (PHC string), with the crate's default
/// cost (19 MiB, 2 passes: OWASP's recommendation).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(AuthError::TooShort);
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| AuthError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hash(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// A hash nobody's password matches, checked when the user does not
/// exist, so that a wrong name takes as long as a wrong password.
static DECOY: LazyLock<String> =
    LazyLock::new(|| hash_password("decoy password that matches nothing").unwrap_or_default());

/// Whether `password` matches `hash` (a PHC string); `None` checks the
/// decoy and fails.
pub fn verify_password(password: &str, hash: Option<&str>) -> bool {
    let decoy = DECOY.as_str();
    let Ok(parsed) = PasswordHash::new(hash.unwrap_or(decoy)) else {
        return false;
    };
    let ok = argon2::Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && hash.is_some()
}

/// An API token: `agt_<id>_<secret>`. The id is public (lists, revoke);
/// the store keeps the sha256 of the whole token.
pub struct NewToken {
    pub id: String,
    pub token: String,
}

pub fn new_token() -> Result<NewToken, AuthError> {
    let id = random_hex(6)?;
    let secret = random_hex(32)?;
    Ok(NewToken {
        token: format!("agt_{id}_{secret}"),
        id,
    })
}

/// At most `max` login attempts per client address in `window`.
pub(crate) struct LoginLimiter {
    max: usize,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

/// How many addresses the limiter remembers before it refuses everyone
/// it cannot remember (a flood of addresses must not switch it off).
const LIMITER_ADDRESSES: usize = 100_000;

impl LoginLimiter {
    pub(crate) fn new(max: usize, window: Duration) -> LoginLimiter {
        LoginLimiter {
            max,
            window,
            seen: Mutex::default(),
        }
    }

    /// Counts an attempt from `addr`; `Err(wait)` when over the limit.
    pub(crate) fn attempt(&self, addr: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= LIMITER_ADDRESSES && !seen.contains_key(&addr) {
            seen.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.duration_since(*t) < self.window)
            });
            if seen.len() >= LIMITER_ADDRESSES {
                return Err(self.window);
            }
        }
        let q = seen.entry(addr).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            q.pop_front();
        }
        if q.len() >= self.max {
            let oldest = *q.front().expect("a full window");
            return Err(self.window.saturating_sub(now.duration_since(oldest)));
        }
        q.push_back(now);
        Ok(())
    }
}

/// The client's address: the peer, or what the trusted proxy says the
/// peer was (the last `X-Forwarded-For` entry: the one it added).
pub(crate) fn client_addr(
    req_headers: &HeaderMap,
    peer: Option<IpAddr>,
    cfg: &AuthConfig,
) -> IpAddr {
    let unknown = IpAddr::from([0, 0, 0, 0]);
    let Some(peer) = peer else { return unknown };
    if cfg.trusted_proxy == Some(peer) {
        let forwarded = req_headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .next_back();
        return forwarded.unwrap_or(peer);
    }
    peer
}

pub(crate) fn peer(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The value of cookie `name` in the request.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Paths anyone may ask for: the login page and the assets it needs, the
/// health check (a load balancer asks it), and the API's document (it says
/// how to authenticate, and holds no data).
fn public(path: &str) -> bool {
    matches!(
        path,
        "/login" | "/healthz" | "/static/app.css" | "/static/live.js" | "/api/v1/openapi.json"
    )
}

fn wants_json(path: &str) -> bool {
    path.starts_with("/api/") || path == "/metrics"
}

/// Finds who is asking and puts the [`Principal`] in the request, or
/// answers 401 (the API) or sends the browser to `/login`.
pub async fn authenticate(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    if !st.auth.required(&st.store).await {
        req.extensions_mut().insert(Principal {
            name: st.auth.local_actor.clone(),
            role: Role::Admin,
            via: Via::Local,
            scope: Scope::Admin,
        });
        return next.run(req).await;
    }
    let now = store::now_ms();
    let path = req.uri().path().to_string();
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let found: Result<Option<Principal>, store::StoreError> = if let Some(token) = bearer {
        // A token given is a token checked: a wrong one is refused even
        // if a cookie would have passed.
        match st.store.token_user(&sha256_hex(token), now).await {
            Ok(Some((user, t))) => {
                let mut p = principal(user, Via::Token(t.id));
                p.scope = t.scope;
                Ok(Some(p))
            }
            Ok(None) => return unauthorized(&path, "the API token is unknown or revoked"),
            Err(e) => Err(e),
        }
    } else if let Some(secret) = cookie(req.headers(), st.auth.cookie_name()) {
        st.store
            .login_user(&sha256_hex(secret), now)
            .await
            .map(|u| u.map(|u| principal(u, Via::Login)))
    } else {
        Ok(None)
    };
    match found {
        Ok(Some(p)) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Ok(None) if public(&path) => next.run(req).await,
        Ok(None) => unauthorized(&path, "log in first"),
        Err(e) => crate::error::WebError::from(e).into_response(),
    }
}

fn principal(user: User, via: Via) -> Principal {
    Principal {
        name: user.name,
        role: user.role,
        via,
        scope: Scope::Admin,
    }
}

fn unauthorized(path: &str, why: &str) -> Response {
    if wants_json(path) {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({ "error": format!("{why}: send Authorization: Bearer <token> (agentctl admin token create --scope read|run|admin)") })),
        )
            .into_response()
    } else {
        let next = crate::pages::query_string(&[("next", path)]);
        Redirect::to(&format!("/login?{next}")).into_response()
    }
}

/// A role is missing: 403 with what is needed.
pub fn forbidden(what: &str, need: Role) -> crate::error::WebError {
    crate::error::WebError::Forbidden(format!("{what} needs the {need} role"))
}

/// `Ok` if `who` may start sessions (and withdraw or stop their own);
/// otherwise the 403 for `what`.
pub fn need_run(who: &Principal, what: &str) -> Result<(), crate::error::WebError> {
    if who.may_run() {
        Ok(())
    } else {
        Err(refuse(who, what, Role::Operator, Scope::Run))
    }
}

/// 403 naming what `who` lacks for `what`: the role, or the token's scope.
pub fn refuse(who: &Principal, what: &str, role: Role, scope: Scope) -> crate::error::WebError {
    if who.role < role {
        forbidden(what, role)
    } else {
        crate::error::WebError::Forbidden(format!(
            "{what} needs a token with the {scope} scope; this one has {}: make one with \
             `agentctl admin token create --scope {scope}`",
            who.scope
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_wrong_ones_do_not() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", Some(&h)));
        assert!(!verify_password("correct horse batterY", Some(&h)));
        assert!(!verify_password("correct horse battery", None));
        assert!(!verify_password("x", Some("not a phc string")));
        assert!(matches!(hash_password("short"), Err(AuthError::TooShort)));
    }

    #[test]
    fn the_limiter_counts_per_address_and_forgets() {
        let l = LoginLimiter::new(3, Duration::from_millis(200));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            l.attempt(a).unwrap();
        }
        assert!(l.attempt(a).is_err());
        l.attempt(b).unwrap();
        std::thread::sleep(Duration::from_millis(250));
        l.attempt(a).unwrap();
    }

    #[test]
    fn only_the_trusted_proxy_names_the_client() {
        let mut cfg = AuthConfig::new("me".into());
        let proxy: IpAddr = "10.0.0.9".parse().unwrap();
        cfg.trusted_proxy = Some(proxy);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4, 5.6.7.8".parse().unwrap());
        assert_eq!(
            client_addr(&h, Some(proxy), &cfg),
            "5.6.7.8".parse::<IpAddr>().unwrap()
        );
        let other: IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(client_addr(&h, Some(other), &cfg), other);
    }

    #[test]
    fn tokens_are_distinct_and_hash_to_hex() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a.token, b.token);
        assert!(a.token.starts_with(&format!("agt_{}_", a.id)));
        assert_eq!(sha256_hex(&a.token).len(), 64);
    }
}
