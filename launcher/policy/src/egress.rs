//! The `allowlist` network mode's one decision: may the sandbox reach this
//! destination? Pure: the egress proxy, the DNS stub and every listener
//! ask it, before any DNS lookup (the name) and again after it (each
//! address the resolver gave).
//!
//! Rules, as a profile writes them:
//! - `api.anthropic.com:443`, `registry.npmjs.org` (no port: 443 only),
//!   `http://example.org` (port 80);
//! - `*.githubusercontent.com`: subdomains only, matched per label;
//!   `**.example.org`: the name itself and its subdomains;
//! - `203.0.113.0/24:8443`, `[2001:db8::/32]:443`: IP targets, which name
//!   rules never match; a port is required.
//!
//! Refused when the profile loads: a bare `*`, a wildcard over a public
//! suffix (`*.com`, `*.co.uk`, `*.workers.dev`), userinfo, `%`, empty labels.
//!
//! Whatever the rules say, a name never leads to a loopback, private,
//! link-local, multicast, metadata or otherwise special address, in any
//! IPv4 or IPv6 spelling (mapped, compatible, NAT64, 6to4 decoded); only
//! an explicit CIDR rule reaches such an address. Known DNS-over-HTTPS and
//! DNS-over-TLS resolvers are out of a wildcard's reach (a wildcard over
//! one is an open resolver, hence a DNS tunnel); port 853 needs a rule that
//! names it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A rule that cannot be used, with what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("network allow rule {rule:?}: {why}")]
pub struct RuleError {
    pub rule: String,
    pub why: String,
}

/// A host as the proxy was asked for it, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// Lowercase ASCII (punycode), no trailing dot.
    Name(String),
    Ip(IpAddr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Exactly this name.
    Exact(String),
    /// `*.x`: names below `x`, not `x` itself.
    Below(String),
    /// `**.x`: `x` and the names below it.
    AtOrBelow(String),
    /// An address range (IP targets only).
    Cidr(IpAddr, u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// As the profile wrote it, for messages and the audit trail.
    pub text: String,
    pub pattern: Pattern,
    pub port: u16,
}

/// The rules of a session, in the profile's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by this rule.
    Allow(String),
    /// Refused, with why (for the audit trail and the agent's error).
    Deny(String),
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// Resolvers reachable over HTTPS or TLS, which a wildcard must not open
/// up (exact rules may name them).
const RESOLVERS: &[&str] = &[
    "dns.google",
    "dns.google.com",
    "8888.google",
    "cloudflare-dns.com",
    "mozilla.cloudflare-dns.com",
    "one.one.one.one",
    "1dot1dot1dot1.cloudflare-dns.com",
    "dns.quad9.net",
    "dns9.quad9.net",
    "dns10.quad9.net",
    "dns11.quad9.net",
    "doh.opendns.com",
    "dns.opendns.com",
    "doh.familyshield.opendns.com",
    "dns.nextdns.io",
    "dns.adguard.com",
    "dns.adguard-dns.com",
    "doh.cleanbrowsing.org",
    "doh.mullvad.net",
    "dns.mullvad.net",
    "doh.dns.sb",
    "dns.switch.ch",
    "freedns.controld.com",
];

/// Suffixes under which anyone can get a name (public suffixes and
/// hosting platforms where users publish their own servers): a wildcard
/// over one of them allows the world, or an attacker's relay.
const OPEN_SUFFIXES: &[&str] = &[
    "com",
    "net",
    "org",
    "io",
    "dev",
    "app",
    "co",
    "ai",
    "xyz",
    "info",
    "biz",
    "me",
    "sh",
    "cloud",
    "site",
    "online",
    "tech",
    "page",
    "run",
    "us",
    "uk",
    "co.uk",
    "org.uk",
    "de",
    "fr",
    "eu",
    "jp",
    "cn",
    "ru",
    "br",
    "in",
    "au",
    "com.au",
    "ca",
    "nl",
    "ch",
    "se",
    "no",
    "it",
    "es",
    "pl",
    "github.io",
    "gitlab.io",
    "workers.dev",
    "pages.dev",
    "vercel.app",
    "netlify.app",
    "netlify.com",
    "herokuapp.com",
    "fly.dev",
    "onrender.com",
    "glitch.me",
    "repl.co",
    "replit.dev",
    "ngrok.io",
    "ngrok-free.app",
    "trycloudflare.com",
    "appspot.com",
    "web.app",
    "firebaseapp.com",
    "azurewebsites.net",
    "cloudfront.net",
    "amazonaws.com",
    "s3.amazonaws.com",
    "blob.core.windows.net",
    "storage.googleapis.com",
    "run.app",
    "deno.dev",
    "surge.sh",
    "now.sh",
    "r2.dev",
];

impl Allowlist {
    /// Parses the profile's rules; every bad rule is an error naming it.
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<Allowlist, RuleError> {
        let mut out = Vec::new();
        for r in rules {
            out.push(parse_rule(r.as_ref())?);
        }
        Ok(Allowlist { rules: out })
    }

    /// The decision for `host:port` before anything is resolved: a name
    /// against the name rules, an IP against the CIDR rules and the
    /// addresses no rule but a CIDR may reach.
    pub fn decide(&self, host: &Host, port: u16) -> Decision {
        match host {
            Host::Ip(ip) => self.decide_ip(*ip, port),
            // Built by hand rather than by `normalize_host`: only its
            // normal form can match (the matching relies on whole labels).
            Host::Name(name) if normalize_host(name).as_ref() != Ok(&Host::Name(name.clone())) => {
                Decision::Deny(format!("{name:?} is not a host name in its normal form"))
            }
            Host::Name(name) => {
                let mut matched_other_port = None;
                for r in &self.rules {
                    if !name_matches(&r.pattern, name) {
                        continue;
                    }
                    if r.port != port {
                        matched_other_port.get_or_insert(r);
                        continue;
                    }
                    // A wildcard never reaches a known resolver.
                    if !matches!(r.pattern, Pattern::Exact(_)) && RESOLVERS.contains(&name.as_str())
                    {
                        return Decision::Deny(format!(
                            "{name} is a DNS-over-HTTPS/TLS resolver, which the wildcard {:?} does not open; name it exactly to allow it",
                            r.text
                        ));
                    }
                    return Decision::Allow(r.text.clone());
                }
                match matched_other_port {
                    Some(r) => Decision::Deny(format!(
                        "{name}:{port} is not allowed ({:?} allows port {} only); add \"{name}:{port}\"",
                        r.text, r.port
                    )),
                    None => Decision::Deny(format!(
                        "{name}:{port} is not in the allowlist; add \"{}\"",
                        suggest(name, port)
                    )),
                }
            }
        }
    }

    /// The decision for an address the resolver gave for a name that
    /// `rule` allowed: special addresses are refused (DNS rebinding to
    /// loopback, the host, the cloud's metadata, a private network),
    /// unless a CIDR rule names them; `host_addresses` are this host's
    /// own, refused the same way.
    pub fn decide_resolved(
        &self,
        name: &str,
        ip: IpAddr,
        port: u16,
        host_addresses: &[IpAddr],
    ) -> Decision {
        let ip = canonical(ip);
        if let Some(r) = self.cidr_rule(ip, port) {
            return Decision::Allow(r.text.clone());
        }
        if let Some(why) = special(ip) {
            return Decision::Deny(format!("{name} resolved to {ip}, {why}"));
        }
        if host_addresses.iter().any(|h| canonical(*h) == ip) {
            return Decision::Deny(format!("{name} resolved to {ip}, an address of this host"));
        }
        Decision::Allow(name.to_string())
    }

    fn decide_ip(&self, ip: IpAddr, port: u16) -> Decision {
        let ip = canonical(ip);
        match self.cidr_rule(ip, port) {
            Some(r) => Decision::Allow(r.text.clone()),
            None => Decision::Deny(format!(
                "{ip}:{port} is an address; name rules never match one, and no address rule covers it (add \"{}\" if you mean it)",
                match ip {
                    IpAddr::V4(_) => format!("{ip}/32:{port}"),
                    IpAddr::V6(_) => format!("[{ip}/128]:{port}"),
                }
            )),
        }
    }

    fn cidr_rule(&self, ip: IpAddr, port: u16) -> Option<&Rule> {
        self.rules.iter().find(|r| {
            r.port == port && matches!(r.pattern, Pattern::Cidr(net, len) if in_cidr(ip, net, len))
        })
    }

    /// Whether any rule could allow `name` on some port: the DNS stub
    /// answers only such names.
    pub fn knows_name(&self, name: &str) -> bool {
        self.rules.iter().any(|r| name_matches(&r.pattern, name))
    }
}

fn suggest(name: &str, port: u16) -> String {
    if port == 443 {
        name.to_string()
    } else {
        format!("{name}:{port}")
    }
}

fn name_matches(p: &Pattern, name: &str) -> bool {
    // Names are normalised (lowercase, no trailing dot); matching the
    // suffix with its dot keeps it per label: `*.b.com` matches `a.b.com`,
    // never `ab.com` or `b.com.evil.test`.
    match p {
        Pattern::Exact(x) => name == x,
        Pattern::Below(x) => name.len() > x.len() + 1 && name.ends_with(&format!(".{x}")),
        Pattern::AtOrBelow(x) => name == x || name.ends_with(&format!(".{x}")),
        Pattern::Cidr(..) => false,
    }
}

/// One rule of a profile.
pub fn parse_rule(text: &str) -> Result<Rule, RuleError> {
    let bad = |why: &str| RuleError {
        rule: text.to_string(),
        why: why.to_string(),
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(bad(
            "empty; write a host name like \"api.example.com\" or \"api.example.com:8443\"",
        ));
    }
    let (default_port, rest) = if let Some(r) = t.strip_prefix("http://") {
        (80, r)
    } else if let Some(r) = t.strip_prefix("https://") {
        (443, r)
    } else if t.contains("://") {
        return Err(bad(
            "only http:// and https:// are understood; for another protocol write host:port",
        ));
    } else {
        (443, t)
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') && !rest.contains('[') && !looks_like_cidr(rest) {
        return Err(bad("a rule names a host and a port, not a path"));
    }
    if rest.contains('@') {
        return Err(bad("no user or password in a rule"));
    }
    if rest.contains('%') {
        return Err(bad("no %-escapes or IPv6 zones in a rule"));
    }
    // [v6/len]:port, or v4/len:port, or host[:port].
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (inner, after) = r.split_once(']').ok_or_else(|| bad("an unclosed '['"))?;
        let port = after
            .strip_prefix(':')
            .map(|p| parse_port(p).ok_or_else(|| bad("the port is not a number from 1 to 65535")))
            .transpose()?;
        (inner.to_string(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (
                h.to_string(),
                Some(parse_port(p).ok_or_else(|| bad("the port is not a number from 1 to 65535"))?),
            ),
            Some(_) => {
                return Err(bad(
                    "an IPv6 address goes in brackets: \"[2001:db8::/32]:443\"",
                ));
            }
            None => (rest.to_string(), None),
        }
    };
    // Address rules.
    if let Some((addr, len)) = host.split_once('/') {
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| bad("not an address range (write 203.0.113.0/24:443)"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| bad(&format!("the prefix length must be 0 to {max}")))?;
        let port = port.ok_or_else(|| bad("an address rule needs a port: 203.0.113.0/24:443"))?;
        if len == 0 {
            return Err(bad("/0 allows every address; name the range you need"));
        }
        return Ok(Rule {
            text: text.to_string(),
            pattern: Pattern::Cidr(canonical(ip), len),
            port,
        });
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        let port = port.ok_or_else(|| bad("an address rule needs a port"))?;
        let ip = canonical(ip);
        return Ok(Rule {
            text: text.to_string(),
            pattern: Pattern::Cidr(ip, if ip.is_ipv4() { 32 } else { 128 }),
            port,
        });
    }
    let port = port.unwrap_or(default_port);
    let (kind, name) = if let Some(n) = host.strip_prefix("**.") {
        (2, n)
    } else if let Some(n) = host.strip_prefix("*.") {
        (1, n)
    } else {
        (0, host.as_str())
    };
    if name == "*" || name.is_empty() || host == "*" {
        return Err(bad(
            "a bare * allows everything; name the hosts the agent needs",
        ));
    }
    if name.contains('*') {
        return Err(bad(
            "a wildcard is a whole first label: \"*.example.com\" or \"**.example.com\"",
        ));
    }
    let name = match normalize_host(name).map_err(|why| bad(&why))? {
        Host::Name(n) => n,
        Host::Ip(_) => {
            return Err(bad(
                "an address rule needs a port and a prefix: 203.0.113.7/32:443",
            ));
        }
    };
    if kind > 0 && is_open_suffix(&name) {
        return Err(bad(&format!(
            "{name} is a public suffix or a platform where anyone can publish a server; a wildcard over it allows them all. Name the hosts"
        )));
    }
    if !name.contains('.') {
        return Err(bad(
            "a single-label name; write the full name (a service of this host is an address rule: 127.0.0.1/32:PORT)",
        ));
    }
    Ok(Rule {
        text: text.to_string(),
        pattern: match kind {
            0 => Pattern::Exact(name),
            1 => Pattern::Below(name),
            _ => Pattern::AtOrBelow(name),
        },
        port,
    })
}

fn looks_like_cidr(s: &str) -> bool {
    s.split(':')
        .next()
        .and_then(|h| h.split_once('/'))
        .is_some_and(|(a, l)| a.parse::<IpAddr>().is_ok() && l.parse::<u8>().is_ok())
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|p| *p > 0)
}

fn is_open_suffix(name: &str) -> bool {
    OPEN_SUFFIXES.contains(&name) || !name.contains('.')
}

/// A host as a client sent it (CONNECT's authority, SOCKS' domain, a
/// `Host` header, an SNI), normalised the way browsers read URLs: IPv4 in
/// any of its numeric spellings (`2130706433`, `0x7f.1`, `127.1`), IPv6 in
/// brackets, names lowercased, internationalised names as punycode, one
/// trailing dot dropped. Userinfo, `%`, empty labels and characters no
/// host name holds are refused.
pub fn normalize_host(raw: &str) -> Result<Host, String> {
    if raw.is_empty() {
        return Err("an empty host".into());
    }
    if raw.contains('@') || raw.contains('%') || raw.contains('/') || raw.contains('\\') {
        return Err(format!("{raw:?} is not a host name"));
    }
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| format!("{raw:?}: an unclosed '['"))?;
        let ip: Ipv6Addr = inner
            .parse()
            .map_err(|_| format!("{raw:?} is not an IPv6 address"))?;
        return Ok(Host::Ip(IpAddr::V6(ip)));
    }
    if let Ok(ip) = raw.parse::<Ipv6Addr>() {
        return Ok(Host::Ip(IpAddr::V6(ip)));
    }
    let trimmed = raw.strip_suffix('.').unwrap_or(raw);
    if trimmed.is_empty() || trimmed.split('.').any(str::is_empty) {
        return Err(format!("{raw:?} has an empty label"));
    }
    if let Some(ip) = parse_ipv4_loose(trimmed) {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    let ascii =
        idna::domain_to_ascii(trimmed).map_err(|_| format!("{raw:?} is not a host name"))?;
    if ascii.is_empty()
        || ascii.len() > 253
        || ascii.split('.').any(|l| {
            l.is_empty()
                || l.len() > 63
                || !l
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    {
        return Err(format!("{raw:?} is not a host name"));
    }
    // A name whose last label is numeric is an IPv4 spelling to a URL
    // parser (and to getaddrinfo): never a name.
    if ascii
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()) || l.starts_with("0x"))
    {
        return Err(format!("{raw:?} is not a valid IPv4 address or host name"));
    }
    Ok(Host::Name(ascii))
}

/// IPv4 as inet_aton and the WHATWG URL parser read it: one to four parts,
/// each decimal, octal (leading 0) or hexadecimal (0x), the last filling
/// the remaining bytes.
fn parse_ipv4_loose(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(parts.len());
    for p in &parts {
        let v = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
            if h.is_empty() {
                0
            } else {
                u64::from_str_radix(h, 16).ok()?
            }
        } else if p.len() > 1 && p.starts_with('0') {
            u64::from_str_radix(&p[1..], 8).ok()?
        } else {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse::<u64>().ok()?
        };
        nums.push(v);
    }
    let last = *nums.last()?;
    let n = nums.len();
    for v in &nums[..n - 1] {
        if *v > 255 {
            return None;
        }
    }
    if last >= 1u64 << (8 * (5 - n)) {
        return None;
    }
    let mut addr: u64 = last;
    for (i, v) in nums[..n - 1].iter().enumerate() {
        addr |= v << (8 * (3 - i));
    }
    Some(Ipv4Addr::from(addr as u32))
}

/// The address an IPv6 spelling of IPv4 really is (mapped `::ffff:a.b.c.d`,
/// compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`),
/// else the address itself.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let o = v6.octets();
            let v4 = |a: u8, b: u8, c: u8, d: u8| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
            if let Some(v4m) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4m);
            }
            // ::a.b.c.d (deprecated compatible form), but not :: or ::1.
            if s[..6] == [0; 6] && (s[6] != 0 || s[7] > 1) {
                return v4(o[12], o[13], o[14], o[15]);
            }
            // NAT64 well-known prefix 64:ff9b::/96.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return v4(o[12], o[13], o[14], o[15]);
            }
            // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
            if s[0] == 0x2002 {
                return v4(o[2], o[3], o[4], o[5]);
            }
            ip
        }
    }
}

/// Why an address is never reached through a name, if it is one of those:
/// the sandbox's way back into the host, a private network, the cloud's
/// metadata service, or anything not a unicast address on the internet.
pub fn special(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            Some(match (a, b, c, d) {
                (0, ..) => "an unspecified address (0.0.0.0/8)",
                (127, ..) => "a loopback address",
                (10, ..) | (172, 16..=31, ..) | (192, 168, ..) => "a private address (RFC 1918)",
                (100, 64..=127, ..) => {
                    "a carrier-grade NAT address (100.64.0.0/10; Alibaba's metadata is here)"
                }
                (169, 254, ..) => "a link-local address (cloud metadata lives at 169.254.169.254)",
                (192, 0, 0, _) => {
                    "an IETF protocol address (192.0.0.0/24; Oracle's metadata is 192.0.0.192)"
                }
                (192, 0, 2, _) | (198, 51, 100, _) | (203, 0, 113, _) => {
                    "a documentation address (TEST-NET)"
                }
                (198, 18..=19, ..) => "a benchmarking address (198.18.0.0/15)",
                (168, 63, 129, 16) => "Azure's metadata and DNS address",
                (224..=239, ..) => "a multicast address",
                (240..=255, ..) => "a reserved or broadcast address",
                _ => return None,
            })
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(if v6.is_unspecified() {
                "an unspecified address (::)"
            } else if v6.is_loopback() {
                "a loopback address (::1)"
            } else if s[0] & 0xffc0 == 0xfe80 {
                "a link-local address (fe80::/10)"
            } else if s[0] & 0xffc0 == 0xfec0 {
                "a site-local address (fec0::/10)"
            } else if s[0] & 0xfe00 == 0xfc00 {
                "a unique local address (fc00::/7; AWS's metadata is fd00:ec2::254)"
            } else if s[0] & 0xff00 == 0xff00 {
                "a multicast address"
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                "a documentation address (2001:db8::/32)"
            } else if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
                "a local NAT64 address (64:ff9b:1::/48), whose IPv4 cannot be told"
            } else if s[0] == 0x2001 && s[1] == 0 {
                "a Teredo address (2001::/32), whose IPv4 is hidden"
            } else if s[0] == 0x100 && s[1..4] == [0, 0, 0] {
                "a discard-only address (100::/64)"
            } else if s[..6] == [0; 6] {
                "an IPv4-compatible address"
            } else {
                return None;
            })
        }
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
