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

    /// Adds a name (or an address; an IPv6 address in brackets).
    pub fn allow(&mut self, name: &str) {
        let name = name.trim().to_ascii_lowercase();
        if !name.is_empty() && !self.names.contains(&name) {
            self.names.push(name);
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
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
            format!(
                "this server answers only for {}; a name of your own needs `agentctl serve --allow-host NAME`\n",
                hosts.names.join(", ")
            ),
        )
            .into_response(),
    }
}

/// Refuses a state-changing request that a browser says came from another
/// site (cross-site request forgery): tower-http's check of
/// `Sec-Fetch-Site` and `Origin` (the scheme of Go 1.25's net/http). A
/// request with neither header comes from no browser (curl, a script),
/// which no other site can make the user send. It trusts the Host header,
/// which is why the Host allow-list runs first.
pub fn csrf()
-> tower_http::csrf::CsrfLayer<impl tower_http::csrf::ResponseForProtectionError<axum::body::Body>>
{
    tower_http::csrf::CsrfLayer::new().with_rejection_response(|_| {
        let mut resp = axum::http::Response::new(axum::body::Body::from(
            "refused: this request came from another site\n",
        ));
        *resp.status_mut() = StatusCode::FORBIDDEN;
        resp
    })
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
