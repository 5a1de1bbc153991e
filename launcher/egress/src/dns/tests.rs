use super::*;

fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend(l.as_bytes());
    }
    q.push(0);
    q.extend(qtype.to_be_bytes());
    q.extend(CLASS_IN.to_be_bytes());
    q
}

fn stub() -> Stub {
    Stub::new(Allowlist::parse(&["api.example.com", "*.cdn.example", "github.com:22"]).unwrap())
}

fn rcode(r: &[u8]) -> u8 {
    r[3] & 0x0f
}

fn answers(r: &[u8]) -> u16 {
    u16::from_be_bytes([r[6], r[7]])
}

fn a_record(r: &[u8]) -> Ipv4Addr {
    let n = r.len();
    Ipv4Addr::new(r[n - 4], r[n - 3], r[n - 2], r[n - 1])
}

#[test]
fn allowed_names_get_a_fake_address_of_their_own() {
    let s = stub();
    let (r1, o) = s.answer(&query(7, "api.example.com", TYPE_A)).unwrap();
    assert_eq!(o, Outcome::Answered("api.example.com".into()));
    assert_eq!(&r1[..2], &7u16.to_be_bytes(), "the id is echoed");
    assert_eq!(rcode(&r1), 0);
    assert_eq!(answers(&r1), 1);
    let ip = a_record(&r1);
    assert_eq!(ip.octets()[..2], [127, 1]);
    // Sticky, and the same whatever the spelling.
    let (r2, _) = s.answer(&query(8, "API.Example.COM", TYPE_A)).unwrap();
    assert_eq!(a_record(&r2), ip);
    let (r3, _) = s.answer(&query(9, "x.cdn.example", TYPE_A)).unwrap();
    assert_ne!(a_record(&r3), ip);
    assert_eq!(s.fakes.lock().unwrap().name_of(ip), Some("api.example.com"));
    // A port-22 rule makes the name resolvable too.
    assert_eq!(
        rcode(&s.answer(&query(1, "github.com", TYPE_A)).unwrap().0),
        0
    );
    // AAAA and TXT of an allowed name: no data, no error.
    for t in [28u16, 16] {
        let (r, _) = s.answer(&query(10, "api.example.com", t)).unwrap();
        assert_eq!((rcode(&r), answers(&r)), (0, 0), "type {t}");
    }
}

#[test]
fn every_other_name_is_refused_and_nothing_is_forwarded() {
    let s = stub();
    let tunnel = format!(
        "{}.{}.exfil.evil.test",
        "a".repeat(63),
        "mzxw6ytboi2tgmzqgezdgnbvgy3tqojq"
    );
    for (name, t) in [
        ("evil.test", TYPE_A),
        ("cdn.example", TYPE_A),
        ("api.example.com.evil.test", TYPE_A),
        ("xapi.example.com", TYPE_A),
        (tunnel.as_str(), 16),
        ("dns.google", TYPE_A),
        ("1.0.0.127.in-addr.arpa", 12),
        ("localhost", TYPE_A),
    ] {
        let (r, o) = s.answer(&query(3, name, t)).unwrap();
        assert_eq!(rcode(&r), RCODE_REFUSED, "{name}");
        assert_eq!(answers(&r), 0, "{name}");
        assert!(matches!(o, Outcome::Refused(_)), "{name}");
    }
    // No refused name got an address.
    assert!(s.fakes.lock().unwrap().by_name.is_empty());
}

#[test]
fn malformed_queries_get_formerr_or_nothing() {
    let s = stub();
    // A label of 64 bytes, a compression pointer, a dot inside a label,
    // two questions, a name cut short.
    let mut long = query(1, "x.example.com", TYPE_A);
    long[12] = 64;
    let mut pointer = query(1, "api.example.com", TYPE_A);
    pointer[12] = 0xc0;
    let mut dotted = query(1, "api.example.com", TYPE_A);
    dotted[14] = b'.';
    let mut two = query(1, "api.example.com", TYPE_A);
    two[5] = 2;
    let cut = query(1, "api.example.com", TYPE_A)[..20].to_vec();
    for (what, q) in [
        ("64", long),
        ("pointer", pointer),
        ("dot", dotted),
        ("two", two),
        ("cut", cut),
    ] {
        let (r, o) = s.answer(&q).unwrap();
        assert_eq!(rcode(&r), RCODE_FORMERR, "{what}");
        assert_eq!(o, Outcome::Malformed);
    }
    // Not a query: a response, a short packet, another opcode.
    let mut response = query(1, "api.example.com", TYPE_A);
    response[2] |= 0x80;
    assert!(s.answer(&response).is_none());
    assert!(s.answer(&[0u8; 5]).is_none());
    let mut update = query(1, "api.example.com", TYPE_A);
    update[2] |= 5 << 3;
    assert_eq!(rcode(&s.answer(&update).unwrap().0), RCODE_NOTIMP);
}

#[tokio::test]
async fn it_answers_over_udp() {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let refused = std::sync::Arc::new(Mutex::new(Vec::new()));
    let r2 = refused.clone();
    tokio::spawn(serve_udp(
        sock,
        std::sync::Arc::new(stub()),
        std::sync::Arc::new(move |n| r2.lock().unwrap().push(n)),
    ));
    let c = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.connect(addr).await.unwrap();
    let mut buf = [0u8; 512];
    c.send(&query(42, "api.example.com", TYPE_A)).await.unwrap();
    let n = c.recv(&mut buf).await.unwrap();
    assert_eq!(rcode(&buf[..n]), 0);
    assert_eq!(a_record(&buf[..n]).octets()[..2], [127, 1]);
    c.send(&query(43, "leak.evil.test", TYPE_A)).await.unwrap();
    let n = c.recv(&mut buf).await.unwrap();
    assert_eq!(rcode(&buf[..n]), RCODE_REFUSED);
    assert_eq!(refused.lock().unwrap().as_slice(), ["leak.evil.test"]);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_packets_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = stub().answer(&bytes);
        }
    }
}
