//! A client for the Docker Registry HTTP API v2 (what every OCI registry
//! serves): manifests, blobs, anonymous bearer tokens.
//!
//! Plain http is used for loopback registries (`localhost`, `127.0.0.0/8`,
//! `[::1]`) and for the hosts listed in `AGENTCTL_INSECURE_REGISTRIES`
//! (comma separated, `host` or `host:port`); https for everything else.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use ureq::Agent;
use ureq::http::Response;
use ureq::tls::RootCerts;

use crate::Progress;
use crate::digest::Digest;
use crate::error::ImageError;
use crate::manifest::{self, MANIFEST_ACCEPT, MAX_MANIFEST, Parsed};
use crate::reference::Reference;
use crate::store::{ImageCache, Resolved};

pub(crate) const INSECURE_ENV: &str = "AGENTCTL_INSECURE_REGISTRIES";

/// `host` without its port (and without the brackets of an IPv6 address).
fn hostname(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    }
}

/// Whether `host` (`name[:port]`) is this machine.
fn is_loopback(host: &str) -> bool {
    let hostname = hostname(host);
    hostname == "localhost"
        || hostname.ends_with(".localhost")
        || hostname.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `host` (`name[:port]`) is spoken to over plain http.
pub(crate) fn is_insecure(host: &str, insecure_list: Option<&str>) -> bool {
    if is_loopback(host) {
        return true;
    }
    let hostname = hostname(host);
    insecure_list
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .any(|s| s == host || s == hostname)
}

/// Whether the registry at `registry` (`host[:port]`, spoken to over
/// https unless `registry_insecure`) may send agentctl to `realm` for a
/// token. The realm is named by the registry's answer, so a hostile
/// registry could aim agentctl's request at this machine or the cloud's
/// metadata service: the realm must be https (http only when the registry
/// itself is), and may be on loopback or link-local addresses only when
/// the registry is on loopback too. `resolve` maps a host name to its
/// addresses (the DNS, outside tests).
pub(crate) fn realm_allowed(
    realm: &str,
    registry: &str,
    registry_insecure: bool,
    resolve: &dyn Fn(&str, u16) -> Vec<IpAddr>,
) -> Result<(), String> {
    let (scheme, rest) = realm
        .split_once("://")
        .ok_or_else(|| "its token realm is not a URL".to_string())?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => 443,
        "http" if registry_insecure => 80,
        "http" => return Err("its token realm is plain http while the registry is https".into()),
        other => return Err(format!("its token realm has the scheme {other}")),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = hostname(authority);
    if host.is_empty() {
        return Err("its token realm names no host".into());
    }
    // Only to resolve the name; the address family is what matters.
    let port = default_port;
    if is_loopback(registry) {
        return Ok(());
    }
    let local = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_link_local())
        }
    };
    if host == "localhost" || host.ends_with(".localhost") {
        return Err(format!("its token realm is on this machine ({host})"));
    }
    let addrs = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => resolve(host, port),
    };
    if let Some(ip) = addrs.iter().find(|ip| local(ip)) {
        return Err(format!(
            "its token realm {host} is a loopback or link-local address ({ip})"
        ));
    }
    Ok(())
}

/// A parsed `WWW-Authenticate` challenge: the scheme and its parameters.
pub(crate) fn parse_challenge(header: &str) -> Option<(String, HashMap<String, String>)> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    Some((scheme.to_ascii_lowercase(), params))
}

/// The CA bundle of the system (`SSL_CERT_FILE`, else Debian's
/// `/etc/ssl/certs/ca-certificates.crt`), which holds the CAs an
/// administrator added (a TLS-inspecting proxy's, a private registry's);
/// Mozilla's roots, built in, when there is none.
fn trusted_roots() -> RootCerts {
    static ROOTS: OnceLock<RootCerts> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let path = std::env::var_os("SSL_CERT_FILE")
                .map_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE), PathBuf::from);
            load_roots(&path).unwrap_or(RootCerts::WebPki)
        })
        .clone()
}

const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The certificates of a PEM bundle, if it has any.
fn load_roots(path: &Path) -> Option<RootCerts> {
    let pem = std::fs::read(path).ok()?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    tracing::debug!(bundle = %path.display(), certificates = certs.len(), "trusted roots");
    (!certs.is_empty()).then(|| RootCerts::new_with_certs(&certs))
}

pub(crate) struct Client {
    agent: Agent,
    base: String,
    host: String,
    reference: Reference,
    token: Option<String>,
}

impl Client {
    pub(crate) fn new(reference: &Reference) -> Client {
        let host = reference.api_host().to_owned();
        let insecure = std::env::var(INSECURE_ENV).ok();
        let scheme = if is_insecure(&host, insecure.as_deref()) {
            "http"
        } else {
            "https"
        };
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(trusted_roots())
            .build();
        let mut config = Agent::config_builder().tls_config(tls);
        if is_loopback(&host) {
            // Never through a proxy (as Go's clients, docker's included).
            config = config.proxy(None);
        }
        let agent: Agent = config
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .user_agent(format!(
                "agentctl-image-store/{}",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .into();
        Client {
            agent,
            base: format!("{scheme}://{host}"),
            host,
            reference: reference.clone(),
            token: None,
        }
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> ImageError {
        ImageError::RegistryUnreachable {
            host: self.host.clone(),
            detail: e.to_string(),
        }
    }

    fn unauthorized(&self, detail: String) -> ImageError {
        ImageError::Unauthorized {
            host: self.host.clone(),
            reference: self.reference.to_string(),
            detail,
        }
    }

    /// GET `/v2/<repository>/<path>`, answering one bearer challenge.
    fn get(
        &mut self,
        path: &str,
        accept: Option<&str>,
    ) -> Result<Response<ureq::Body>, ImageError> {
        let url = format!("{}/v2/{}/{path}", self.base, self.reference.repository);
        // One (new) token per request: the first 401 gets a token, and a
        // 401 with a token (it expired during a long pull) gets a new one.
        let mut fresh_token = false;
        loop {
            let mut request = self.agent.get(&url);
            if let Some(a) = accept {
                request = request.header("Accept", a);
            }
            if let Some(t) = &self.token {
                request = request.header("Authorization", format!("Bearer {t}"));
            }
            tracing::debug!(%url, "GET");
            let response = request.call().map_err(|e| self.unreachable(e))?;
            let status = response.status().as_u16();
            if status == 401 && !fresh_token {
                let challenge = response
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                self.token = Some(self.fetch_token(&challenge)?);
                fresh_token = true;
                continue;
            }
            if status == 401 || status == 403 {
                let detail = error_detail(response);
                return Err(self.unauthorized(detail));
            }
            return Ok(response);
        }
    }

    /// Gets an anonymous token for the challenge of a 401 answer.
    fn fetch_token(&self, challenge: &str) -> Result<String, ImageError> {
        let Some((scheme, params)) = parse_challenge(challenge) else {
            return Err(self.unauthorized(String::new()));
        };
        if scheme != "bearer" {
            return Err(self.unauthorized(format!(" (it asks for {scheme} authentication)")));
        }
        let Some(realm) = params.get("realm").filter(|r| r.starts_with("http")) else {
            return Err(self.unauthorized(" (its bearer challenge names no token realm)".into()));
        };
        let resolve = |host: &str, port: u16| -> Vec<IpAddr> {
            use std::net::ToSocketAddrs;
            (host, port)
                .to_socket_addrs()
                .map(|a| a.map(|s| s.ip()).collect())
                .unwrap_or_default()
        };
        let insecure = self.base.starts_with("http://");
        if let Err(why) = realm_allowed(realm, &self.host, insecure, &resolve) {
            return Err(self.unauthorized(format!(" ({why}; agentctl does not follow it)")));
        }
        let scope = params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", self.reference.repository));
        let mut request = self.agent.get(realm).query("scope", &scope);
        if let Some(service) = params.get("service") {
            request = request.query("service", service);
        }
        tracing::debug!(%realm, %scope, "requesting an anonymous token");
        let response = request
            .call()
            .map_err(|e| ImageError::RegistryUnreachable {
                host: realm.clone(),
                detail: e.to_string(),
            })?;
        if response.status().as_u16() != 200 {
            let status = response.status().as_u16();
            let detail = error_detail(response);
            return Err(
                self.unauthorized(format!(" (its token service answered {status}{detail})"))
            );
        }
        let body = response
            .into_body()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| self.unreachable(e))?;
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token: Token = serde_json::from_slice(&body).map_err(|e| ImageError::Registry {
            host: realm.clone(),
            status: 200,
            request: "a token request".into(),
            detail: format!(": not a token ({e})"),
        })?;
        token
            .token
            .or(token.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.unauthorized(" (its token service sent no token)".into()))
    }

    fn unexpected(
        &self,
        status: u16,
        request: String,
        response: Response<ureq::Body>,
    ) -> ImageError {
        ImageError::Registry {
            host: self.host.clone(),
            status,
            request,
            detail: error_detail(response),
        }
    }

    /// A manifest or index by tag or digest: its bytes and Content-Type.
    pub(crate) fn manifest(
        &mut self,
        reference: &str,
    ) -> Result<(Vec<u8>, Option<String>), ImageError> {
        let response = self.get(&format!("manifests/{reference}"), Some(MANIFEST_ACCEPT))?;
        match response.status().as_u16() {
            200 => {}
            404 => {
                let shown = if reference.starts_with("sha256:") {
                    format!("{}@{reference}", self.reference.name())
                } else {
                    self.reference.to_string()
                };
                return Err(ImageError::NotFound {
                    reference: shown,
                    location: format!("registry {}", self.host),
                });
            }
            status => {
                return Err(self.unexpected(
                    status,
                    format!("the manifest request for {reference}"),
                    response,
                ));
            }
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response
            .into_body()
            .with_config()
            .limit(MAX_MANIFEST)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => ImageError::invalid(
                    "manifest",
                    format!("{reference} is larger than {MAX_MANIFEST} bytes"),
                ),
                e => self.unreachable(e),
            })?;
        Ok((bytes, content_type))
    }

    /// A blob's content as a stream.
    pub(crate) fn blob(
        &mut self,
        digest: &Digest,
    ) -> Result<ureq::BodyReader<'static>, ImageError> {
        let response = self.get(&format!("blobs/{digest}"), None)?;
        match response.status().as_u16() {
            200 => Ok(response.into_body().into_reader()),
            status => {
                Err(self.unexpected(status, format!("the request for blob {digest}"), response))
            }
        }
    }

    fn read_error(&self, what: String) -> Box<dyn Fn(io::Error) -> ImageError> {
        let host = self.host.clone();
        Box::new(move |e| ImageError::RegistryUnreachable {
            host: host.clone(),
            detail: format!("the connection failed while downloading {what}: {e}"),
        })
    }
}

/// `: CODE message` from a registry's JSON error body, if it has one.
fn error_detail(response: Response<ureq::Body>) -> String {
    let Ok(body) = response
        .into_body()
        .with_config()
        .limit(64 * 1024)
        .read_to_vec()
    else {
        return String::new();
    };
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Errors>(&body) {
        Ok(errors) if !errors.errors.is_empty() => {
            let parts: Vec<String> = errors
                .errors
                .iter()
                .map(|e| format!("{} {}", e.code, e.message).trim().to_owned())
                .collect();
            format!(": {}", parts.join("; "))
        }
        _ => {
            let text = String::from_utf8_lossy(&body);
            let text = text.trim();
            if text.is_empty() {
                String::new()
            } else {
                format!(": {}", text.chars().take(200).collect::<String>())
            }
        }
    }
}

/// Reads a manifest (from the store when pinned by a digest it has, else
/// from the registry), checks it against `digest` if given and stores it.
fn fetch_manifest(
    store: &ImageCache,
    client: &mut Client,
    reference: &str,
    digest: Option<&Digest>,
) -> Result<(Vec<u8>, Option<String>, Digest), ImageError> {
    if let Some(d) = digest
        && store.has_blob(d)
    {
        let bytes = store.read_blob(d, MAX_MANIFEST, "manifest")?;
        return Ok((bytes, None, d.clone()));
    }
    let (bytes, content_type) = client.manifest(reference)?;
    let actual = Digest::of(&bytes);
    if let Some(d) = digest
        && *d != actual
    {
        return Err(ImageError::DigestMismatch {
            what: "manifest".into(),
            expected: d.to_string(),
            actual: actual.to_string(),
        });
    }
    store.put_blob(&actual, &bytes)?;
    Ok((bytes, content_type, actual))
}

/// Resolves a reference to one image manifest and brings its config and
/// layers into the store.
pub(crate) fn pull(
    store: &ImageCache,
    reference: &Reference,
    progress: &dyn Progress,
) -> Result<Resolved, ImageError> {
    let mut client = Client::new(reference);
    let shown = reference.to_string();
    let pinned = match &reference.digest {
        Some(d) => Some(Digest::parse(d).map_err(|r| ImageError::InvalidReference {
            reference: shown.clone(),
            reason: r,
        })?),
        None => None,
    };
    progress.message(&format!("resolving {shown}"));
    let (bytes, content_type, top) = fetch_manifest(
        store,
        &mut client,
        reference.manifest_ref(),
        pinned.as_ref(),
    )?;
    let (index, manifest_digest, manifest) =
        match manifest::parse(&bytes, content_type.as_deref(), "manifest")? {
            Parsed::Manifest(m) => (None, top, m),
            Parsed::Index(index) => {
                let desc = manifest::select_platform(&index, &manifest::host_platform(), &shown)?;
                let digest = desc.digest()?;
                let (bytes, content_type, _) =
                    fetch_manifest(store, &mut client, digest.as_str(), Some(&digest))?;
                match manifest::parse(&bytes, content_type.as_deref(), "manifest")? {
                    Parsed::Manifest(m) => (Some(top), digest, m),
                    Parsed::Index(_) => {
                        return Err(ImageError::invalid(
                            "index",
                            format!("{} points to another index, not to an image manifest", top),
                        ));
                    }
                }
            }
        };
    manifest::check_config(&manifest.config)?;
    let config = manifest.config.digest()?;
    if !store.has_blob(&config) {
        let mut body = client.blob(&config)?;
        let on_error = client.read_error(format!("the config {config}"));
        store.ingest(
            Some(&config),
            Some(manifest.config.size),
            &mut body,
            None,
            &on_error,
        )?;
    }
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for desc in &manifest.layers {
        manifest::check_layer(desc)?;
        layers.push(desc.digest()?);
    }
    let missing: Vec<usize> = (0..layers.len())
        .filter(|&i| !store.has_blob(&layers[i]))
        .collect();
    if missing.is_empty() {
        progress.message("all layers are in the store already");
    } else {
        progress.phase(crate::Phase::Fetching);
    }
    for (i, desc) in manifest.layers.iter().enumerate() {
        let digest = &layers[i];
        if !missing.contains(&i) {
            continue;
        }
        let _lock = store.lock(&format!("blob-{}", digest.hex()), true, progress)?;
        if store.has_blob(digest) {
            // Another process fetched it while we waited.
            continue;
        }
        progress.layer_started(digest.as_str(), Some(desc.size));
        let mut body = client.blob(digest)?;
        let on_error = client.read_error(format!("layer {digest}"));
        store.ingest(
            Some(digest),
            Some(desc.size),
            &mut body,
            Some((progress, digest.as_str())),
            &on_error,
        )?;
        progress.layer_done(digest.as_str());
    }
    tracing::debug!(reference = %shown, manifest = %manifest_digest, %config, "resolved");
    Ok(Resolved {
        name: shown,
        index,
        manifest: Some(manifest_digest),
        config,
        layers,
        source: "registry".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_realms_cannot_aim_at_this_machine() {
        let dns = |host: &str, _: u16| -> Vec<IpAddr> {
            match host {
                "auth.docker.io" => vec!["3.1.2.3".parse().unwrap()],
                "rebind.example" => vec!["8.8.8.8".parse().unwrap(), "127.0.0.1".parse().unwrap()],
                _ => vec![],
            }
        };
        let ok = |realm: &str, registry: &str, insecure: bool| {
            realm_allowed(realm, registry, insecure, &dns)
        };
        assert!(
            ok(
                "https://auth.docker.io/token",
                "registry-1.docker.io",
                false
            )
            .is_ok()
        );
        for bad in [
            "https://127.0.0.1:5000/token",
            "https://169.254.169.254/latest/meta-data",
            "https://localhost/token",
            "https://[::1]/token",
            "https://[fe80::1]/token",
            "https://rebind.example/token",
            "http://auth.docker.io/token",
            "https://user@127.0.0.1/x",
        ] {
            assert!(ok(bad, "registry.example", false).is_err(), "{bad}");
        }
        // A local registry may keep its token service next to it.
        assert!(ok("http://127.0.0.1:5001/token", "127.0.0.1:5000", true).is_ok());
    }

    #[test]
    fn plain_http_only_for_loopback_and_listed_hosts() {
        assert!(is_insecure("localhost:5000", None));
        assert!(is_insecure("localhost", None));
        assert!(is_insecure("127.0.0.1:5000", None));
        assert!(is_insecure("127.1.2.3", None));
        assert!(is_insecure("[::1]:5000", None));
        assert!(!is_insecure("registry-1.docker.io", None));
        assert!(!is_insecure("ghcr.io", Some("")));
        assert!(!is_insecure("10.0.0.5:5000", None));
        let list = Some(" reg.internal:5000 , other.example");
        assert!(is_insecure("reg.internal:5000", list));
        assert!(!is_insecure("reg.internal:5001", list));
        assert!(is_insecure("other.example:443", list));
        assert!(is_insecure("other.example", list));
        assert!(!is_insecure("third.example", list));
    }

    #[test]
    fn parses_bearer_challenges() {
        let (scheme, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull,push""#,
        )
        .unwrap();
        assert_eq!(scheme, "bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/debian:pull,push");
        let (scheme, p) = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(scheme, "basic");
        assert_eq!(p["realm"], "Registry Realm");
        let (_, p) = parse_challenge(
            r#"Bearer realm=https://x/token, service=x, error="insufficient_scope""#,
        )
        .unwrap();
        assert_eq!(p["realm"], "https://x/token");
        assert_eq!(p["service"], "x");
        assert_eq!(p["error"], "insufficient_scope");
        let (_, p) = parse_challenge(r#"Bearer realm="a\"b""#).unwrap();
        assert_eq!(p["realm"], "a\"b");
    }

    #[test]
    fn trusts_the_system_bundle_when_there_is_one() {
        let t = tempfile::tempdir().unwrap();
        let empty = t.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        assert!(load_roots(&empty).is_none());
        assert!(load_roots(&t.path().join("missing.pem")).is_none());
        if Path::new(SYSTEM_CA_BUNDLE).exists() {
            match load_roots(Path::new(SYSTEM_CA_BUNDLE)) {
                Some(RootCerts::Specific(certs)) => assert!(certs.len() > 10),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn unreachable_registry_names_the_host() {
        // A port nothing listens on: connection refused at once.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let r = Reference::parse(&format!("127.0.0.1:{port}/nothing:here")).unwrap();
        let mut c = Client::new(&r);
        let err = c.manifest("here").unwrap_err();
        assert!(
            matches!(err, ImageError::RegistryUnreachable { .. }),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot reach registry 127.0.0.1:{port}")),
            "{text}"
        );
    }
}
