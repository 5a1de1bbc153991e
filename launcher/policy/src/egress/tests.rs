use super::*;

fn list(rules: &[&str]) -> Allowlist {
    Allowlist::parse(rules).unwrap()
}

fn name(n: &str) -> Host {
    Host::Name(n.to_string())
}

#[test]
fn a_name_without_a_port_is_443_and_http_is_80() {
    let l = list(&[
        "registry.npmjs.org",
        "http://deb.example.org",
        "github.com:22",
    ]);
    assert!(l.decide(&name("registry.npmjs.org"), 443).allowed());
    assert!(!l.decide(&name("registry.npmjs.org"), 80).allowed());
    assert!(l.decide(&name("deb.example.org"), 80).allowed());
    assert!(!l.decide(&name("deb.example.org"), 443).allowed());
    assert!(l.decide(&name("github.com"), 22).allowed());
    assert!(!l.decide(&name("github.com"), 443).allowed());
    // The refusal teaches the rule to add.
    let Decision::Deny(why) = l.decide(&name("registry.npmjs.org"), 8443) else {
        panic!()
    };
    assert!(why.contains("add \"registry.npmjs.org:8443\""), "{why}");
    let Decision::Deny(why) = l.decide(&name("evil.test"), 443) else {
        panic!()
    };
    assert!(why.contains("add \"evil.test\""), "{why}");
}

#[test]
fn wildcards_match_whole_labels_only() {
    let l = list(&["*.githubusercontent.example", "**.pkg.example"]);
    assert!(
        l.decide(&name("raw.githubusercontent.example"), 443)
            .allowed()
    );
    assert!(
        l.decide(&name("a.b.githubusercontent.example"), 443)
            .allowed()
    );
    for n in [
        "githubusercontent.example",
        "evilgithubusercontent.example",
        "githubusercontent.example.evil.test",
        "raw.githubusercontent.example.evil.test",
    ] {
        assert!(!l.decide(&name(n), 443).allowed(), "{n}");
    }
    assert!(l.decide(&name("pkg.example"), 443).allowed());
    assert!(l.decide(&name("x.pkg.example"), 443).allowed());
    assert!(!l.decide(&name("xpkg.example"), 443).allowed());
}

#[test]
fn wildcards_over_names_one_operator_owns_are_accepted() {
    // Nobody gets a name of their own below these: the operator's servers
    // are the only ones a wildcard can reach.
    for rule in [
        "*.githubusercontent.com",
        "**.npmjs.org",
        "*.pythonhosted.org",
    ] {
        parse_rule(rule).unwrap_or_else(|e| panic!("{rule}: {e}"));
    }
}

#[test]
fn rules_that_allow_too_much_or_mean_something_else_are_refused() {
    for (rule, needle) in [
        ("*", "bare *"),
        ("*.*", "bare *"),
        ("**.com", "public suffix"),
        ("*.co.uk", "public suffix"),
        ("*.workers.dev", "public suffix"),
        ("*.github.io", "public suffix"),
        ("*.s3.amazonaws.com", "public suffix"),
        ("a*.example.com", "whole first label"),
        ("user:pw@example.com", "no user"),
        ("example.com%2f", "%-escapes"),
        ("example.com/path", "not a path"),
        ("example..com", "empty label"),
        ("example.com:0", "port"),
        ("example.com:99999", "port"),
        ("example.com:http", "port"),
        ("ftp://example.com", "only http"),
        ("10.0.0.0/8", "needs a port"),
        ("0.0.0.0/0:443", "/0 allows every address"),
        ("203.0.113.7", "needs a port"),
        ("2001:db8::1:443", "in brackets"),
        ("localhost.", "single-label"),
        ("intranet", "single-label"),
        ("", "empty"),
    ] {
        let e = parse_rule(rule)
            .err()
            .unwrap_or_else(|| panic!("{rule:?} was accepted"));
        assert!(e.to_string().contains(needle), "{rule:?}: {e}");
        assert!(e.to_string().contains(&format!("{rule:?}")), "{e}");
    }
}

#[test]
fn host_spellings_are_read_the_way_resolvers_read_them() {
    for (raw, want) in [
        ("API.Anthropic.COM.", name("api.anthropic.com")),
        ("2130706433", Host::Ip("127.0.0.1".parse().unwrap())),
        ("0x7f.1", Host::Ip("127.0.0.1".parse().unwrap())),
        ("127.1", Host::Ip("127.0.0.1".parse().unwrap())),
        ("017700000001", Host::Ip("127.0.0.1".parse().unwrap())),
        ("0x7f000001", Host::Ip("127.0.0.1".parse().unwrap())),
        (
            "169.254.43518",
            Host::Ip("169.254.169.254".parse().unwrap()),
        ),
        (
            "[::ffff:7f00:1]",
            Host::Ip("::ffff:7f00:1".parse().unwrap()),
        ),
        ("bücher.example", name("xn--bcher-kva.example")),
    ] {
        assert_eq!(normalize_host(raw).unwrap(), want, "{raw}");
    }
    for raw in [
        "user@example.com",
        "example.com%00",
        "a..b",
        ".",
        "",
        "1.2.3.4.5",
        "example.0x1",
        "example.123",
        "exa mple.com",
        "[::1",
        "a/b",
    ] {
        assert!(normalize_host(raw).is_err(), "{raw:?} was read as a host");
    }
}

#[test]
fn ip_targets_need_an_address_rule_whatever_the_spelling() {
    let l = list(&[
        "api.example.com",
        "203.0.113.0/24:8443",
        "[2001:db8:5::/48]:443",
    ]);
    for raw in [
        "2130706433",
        "0x7f.1",
        "[::ffff:7f00:1]",
        "127.0.0.1",
        "[::1]",
        "93.184.216.34",
    ] {
        let h = normalize_host(raw).unwrap();
        let d = l.decide(&h, 443);
        assert!(!d.allowed(), "{raw}");
    }
    assert!(
        l.decide(&normalize_host("203.0.113.9").unwrap(), 8443)
            .allowed()
    );
    assert!(
        !l.decide(&normalize_host("203.0.113.9").unwrap(), 443)
            .allowed()
    );
    assert!(
        l.decide(&normalize_host("[2001:db8:5::7]").unwrap(), 443)
            .allowed()
    );
    // An IPv6 spelling of an allowed IPv4 is that IPv4.
    assert!(
        l.decide(&normalize_host("[::ffff:203.0.113.9]").unwrap(), 8443)
            .allowed()
    );
    // A name rule never matches an address, nor the reverse.
    assert!(
        !list(&["93.184.216.34/32:443"])
            .decide(&name("example.com"), 443)
            .allowed()
    );
}

#[test]
fn no_name_leads_to_a_special_address_in_any_spelling() {
    let l = list(&["api.example.com"]);
    let host: Vec<IpAddr> = vec!["198.51.100.77".parse().unwrap()];
    for ip in [
        "127.0.0.1",
        "127.5.6.7",
        "0.0.0.0",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "100.64.0.1",
        "100.100.100.200",
        "169.254.169.254",
        "192.0.0.192",
        "168.63.129.16",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fd00:ec2::254",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "::10.0.0.1",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::1",
        "2002:7f00:1::",
        "2002:a9fe:a9fe::1",
        "2001:0:4136:e378::1",
        "2001:db8::1",
        "198.51.100.77",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        let d = l.decide_resolved("api.example.com", ip, 443, &host);
        assert!(!d.allowed(), "{ip} was allowed");
    }
    for ip in [
        "93.184.216.34",
        "2606:2800:220:1:248:1893:25c8:1946",
        "64:ff9b::5db8:d822",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        assert!(
            l.decide_resolved("api.example.com", ip, 443, &host)
                .allowed(),
            "{ip}"
        );
    }
    // Only an address rule reaches a special address.
    let lab = list(&["api.example.com", "10.0.0.0/8:443"]);
    assert!(
        lab.decide_resolved("api.example.com", "10.9.9.9".parse().unwrap(), 443, &[])
            .allowed()
    );
    assert!(
        !lab.decide_resolved("api.example.com", "10.9.9.9".parse().unwrap(), 80, &[])
            .allowed()
    );
}

#[test]
fn a_wildcard_never_opens_a_dns_resolver() {
    // A wildcard over a top-level domain is refused outright.
    assert!(parse_rule("*.google").is_err());
    let l = list(&["**.dns.google", "**.quad9.net", "cloudflare-dns.com"]);
    assert!(!l.decide(&name("dns.google"), 443).allowed());
    assert!(!l.decide(&name("dns.quad9.net"), 443).allowed());
    assert!(
        l.decide(&name("cloudflare-dns.com"), 443).allowed(),
        "named exactly"
    );
    assert!(l.decide(&name("www.quad9.net"), 443).allowed());
    // DoT's port needs its own rule.
    assert!(!l.decide(&name("cloudflare-dns.com"), 853).allowed());
}

#[test]
fn the_dns_stub_knows_only_allowed_names() {
    let l = list(&["api.example.com", "*.cdn.example", "github.com:22"]);
    assert!(l.knows_name("api.example.com"));
    assert!(l.knows_name("a.cdn.example"));
    assert!(l.knows_name("github.com"));
    assert!(!l.knows_name("cdn.example"));
    assert!(!l.knows_name("exfil.evil.test"));
}

#[test]
fn loose_ipv4_agrees_with_inet_aton_on_the_edges() {
    assert_eq!(parse_ipv4_loose("1.2.3.4"), Some(Ipv4Addr::new(1, 2, 3, 4)));
    assert_eq!(parse_ipv4_loose("1.2.772"), Some(Ipv4Addr::new(1, 2, 3, 4)));
    assert_eq!(
        parse_ipv4_loose("1.131844"),
        Some(Ipv4Addr::new(1, 2, 3, 4))
    );
    assert_eq!(parse_ipv4_loose("0"), Some(Ipv4Addr::new(0, 0, 0, 0)));
    assert_eq!(
        parse_ipv4_loose("4294967295"),
        Some(Ipv4Addr::new(255, 255, 255, 255))
    );
    assert_eq!(parse_ipv4_loose("4294967296"), None);
    assert_eq!(parse_ipv4_loose("256.1.1.1"), None);
    assert_eq!(parse_ipv4_loose("1.2.3.256"), None);
    assert_eq!(parse_ipv4_loose("08.1.1.1"), None, "8 is no octal digit");
    assert_eq!(parse_ipv4_loose("example"), None);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every IPv6 spelling of an IPv4 address is judged as that
        /// address: special or not, the same.
        #[test]
        fn ipv6_spellings_of_ipv4_are_judged_as_ipv4(bits in any::<u32>()) {
            let v4 = Ipv4Addr::from(bits);
            let [a, b, c, d] = v4.octets();
            let want = special(IpAddr::V4(v4)).is_some();
            let spellings = [
                v4.to_ipv6_mapped(),
                Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])),
                Ipv6Addr::new(0x2002, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]), 0, 0, 0, 0, 1),
            ];
            for s in spellings {
                prop_assert_eq!(canonical(IpAddr::V6(s)), IpAddr::V4(v4), "{}", s);
                prop_assert_eq!(special(IpAddr::V6(s)).is_some(), want, "{}", s);
            }
        }

        /// The numeric spellings of an address read as the address.
        #[test]
        fn numeric_ipv4_spellings_read_as_the_address(bits in any::<u32>()) {
            let v4 = Ipv4Addr::from(bits);
            let want = Host::Ip(IpAddr::V4(v4));
            prop_assert_eq!(normalize_host(&bits.to_string()).unwrap(), want.clone());
            prop_assert_eq!(normalize_host(&format!("0x{bits:x}")).unwrap(), want.clone());
            let [a, b, c, d] = v4.octets();
            prop_assert_eq!(normalize_host(&format!("0x{a:x}.{b}.0{c:o}.{d}")).unwrap(), want);
        }

        /// A name a wildcard matches ends with the wildcard's name at a
        /// label boundary.
        #[test]
        fn wildcards_match_at_label_boundaries(prefix in "[a-z]{1,8}(\\.[a-z]{1,8}){0,2}", glue in "[a-z.-]{0,3}") {
            let l = Allowlist::parse(&["*.pkg.example"]).unwrap();
            let candidate = format!("{prefix}{glue}pkg.example");
            let ok = l.decide(&Host::Name(candidate.clone()), 443).allowed();
            prop_assert_eq!(ok, glue.ends_with('.') && !glue.ends_with("..") && !candidate.starts_with('.'), "{}", candidate);
        }
    }
}
