//! What every request passes before a handler: the Host allow-list, and
//! the security headers on every answer.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The names a request's `Host` may give. A page served on loopback is
/// reachable from any web page the user opens, under any name that
/// resolves to 127.0.0.1 (DNS rebinding); only these names are answered.
#[derive(Clone, Debug)]
pub struct HostAllowList {
    names: Vec<String>,
}

impl HostAllowList {
    /// `localhost`, `127.0.0.1` and `[::1]`, with any port.
    pub fn loopback() -> HostAllowList {
        HostAllowList {
            names: vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()],
        }
    }

    /// True when `host` (a Host header: a name or an address, with an
    /// optional port) is one of the allowed names, case-insensitively.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let name = match host.rsplit_once(':') {
            // `[::1]:7878`, `localhost:7878`; not the colons inside `[::1]`.
            Some((name, port))
                if !port.is_empty()
                    && port.bytes().all(|b| b.is_ascii_digit())
                    && (!name.starts_with('[') || name.ends_with(']')) =>
            {
                name.to_string()
            }
            _ => host,
        };
        self.names.contains(&name)
    }
}

pub async fn allowed_host(
    State(hosts): State<Arc<HostAllowList>>,
    req: Request,
    next: Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    match host {
        Some(h) if hosts.allows(h) => next.run(req).await,
        _ => (
            StatusCode::FORBIDDEN,
            "this server answers only for localhost, 127.0.0.1 and [::1]\n",
        )
            .into_response(),
    }
}

/// Refuses a state-changing request that a browser says came from another
/// site (cross-site request forgery): `Sec-Fetch-Site` must be
/// `same-origin` or `none`; a browser too old to send it must send an
/// `Origin` naming this host. A request with neither header comes from no
/// browser (curl, a script), which no other site can make the user send.
pub async fn same_origin(req: Request, next: Next) -> Response {
    let safe = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if safe {
        return next.run(req).await;
    }
    let h = req.headers();
    let text = |name: header::HeaderName| h.get(name).and_then(|v| v.to_str().ok());
    let fetch_site = h.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let allowed = match (fetch_site, text(header::ORIGIN)) {
        (Some(site), _) => matches!(site, "same-origin" | "none"),
        (None, Some(origin)) => {
            let host = text(header::HOST).unwrap_or_default();
            origin
                .split_once("://")
                .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host))
        }
        (None, None) => true,
    };
    if allowed {
        next.run(req).await
    } else {
        (
            StatusCode::FORBIDDEN,
            "refused: this request came from another site\n",
        )
            .into_response()
    }
}

/// A strict policy: nothing but this server's own files, no inline script
/// or style, no framing, forms only to this server.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

#[cfg(test)]
mod tests {
    use super::HostAllowList;

    #[test]
    fn loopback_names_with_or_without_a_port() {
        let l = HostAllowList::loopback();
        for ok in [
            "localhost",
            "LOCALHOST:7878",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:7878",
        ] {
            assert!(l.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "evil.example:7878",
            "localhost:x",
            "::1",
            "",
        ] {
            assert!(!l.allows(bad), "{bad}");
        }
    }
}
