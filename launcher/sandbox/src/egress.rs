//! Where the `allowlist` network's ways out sit inside the sandbox, the
//! same for every backend that plants them in the sandbox's own network
//! namespace: the backend creates these listeners there and agentctl's
//! egress proxy serves them from outside (see `egress` and
//! docs/NETWORK.md).

use std::net::{Ipv4Addr, SocketAddrV4};

use policy::egress::{Allowlist, Pattern};

/// The HTTP proxy (CONNECT and absolute-form `http://`).
pub const HTTP_PROXY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 3128);
/// SOCKS5, CONNECT only.
pub const SOCKS_PROXY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1080);
/// The DNS stub (UDP): allowed names get a fake address in 127.1.0.0/16.
pub const DNS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 53);

/// The ports with a transparent listener (on 0.0.0.0, so every fake
/// address of the DNS stub reaches it): 80, 443, and every port a name
/// rule allows, but the proxy's own, which a tool reaches through the
/// proxy instead.
pub fn transparent_ports(allow: &Allowlist) -> Vec<u16> {
    let mut ports = vec![80, 443];
    for r in &allow.rules {
        if !matches!(r.pattern, Pattern::Cidr(..)) {
            ports.push(r.port);
        }
    }
    ports.retain(|p| ![HTTP_PROXY.port(), SOCKS_PROXY.port(), DNS.port()].contains(p));
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The variables that send tools to the proxy: the usual ones in both
/// cases, and those of tools that read only their own.
pub fn proxy_env() -> Vec<(&'static str, String)> {
    let http = format!("http://{HTTP_PROXY}");
    let socks = format!("socks5h://{SOCKS_PROXY}");
    let no_proxy = "localhost,127.0.0.1,::1".to_string();
    let mut vars = Vec::new();
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        // npm, yarn (berry) and pip read these as well as, or instead of,
        // the usual ones.
        "npm_config_proxy",
        "npm_config_https_proxy",
        "YARN_HTTP_PROXY",
        "YARN_HTTPS_PROXY",
        "PIP_PROXY",
    ] {
        vars.push((name, http.clone()));
    }
    vars.push(("ALL_PROXY", socks.clone()));
    vars.push(("all_proxy", socks));
    vars.push(("NO_PROXY", no_proxy.clone()));
    vars.push(("no_proxy", no_proxy));
    // Node 24+ (and 22.14+) use HTTP_PROXY for fetch only when asked.
    vars.push(("NODE_USE_ENV_PROXY", "1".to_string()));
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transparent_ports_are_the_web_and_each_named_port_but_the_proxys() {
        let a = Allowlist::parse(&[
            "api.example.com",
            "example.org:22",
            "example.org:3128",
            "203.0.113.0/24:8443",
            "http://example.net",
        ])
        .unwrap();
        assert_eq!(transparent_ports(&a), [22, 80, 443]);
    }

    #[test]
    fn proxy_variables_point_at_the_listeners() {
        let env = proxy_env();
        let get = |n: &str| env.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        assert_eq!(get("HTTPS_PROXY").unwrap(), "http://127.0.0.1:3128");
        assert_eq!(get("ALL_PROXY").unwrap(), "socks5h://127.0.0.1:1080");
        assert_eq!(get("NO_PROXY").unwrap(), "localhost,127.0.0.1,::1");
    }
}
