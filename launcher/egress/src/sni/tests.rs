use super::*;

/// A ClientHello handshake message with these extensions.
fn hello_msg(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend([7u8; 32]);
    body.push(0); // session id
    body.extend([0, 2, 0x13, 0x01]); // one cipher suite
    body.extend([1, 0]); // null compression
    let mut e = Vec::new();
    for (kind, data) in exts {
        e.extend(kind.to_be_bytes());
        e.extend((data.len() as u16).to_be_bytes());
        e.extend(data);
    }
    body.extend((e.len() as u16).to_be_bytes());
    body.extend(e);
    let mut msg = vec![1];
    msg.extend(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend(body);
    msg
}

fn sni(names: &[&str]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for n in names {
        list.push(0);
        list.extend((n.len() as u16).to_be_bytes());
        list.extend(n.as_bytes());
    }
    let mut data = (list.len() as u16).to_be_bytes().to_vec();
    data.extend(list);
    (0, data)
}

/// The message in records of at most `size` bytes.
fn records(msg: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in msg.chunks(size) {
        out.extend([22, 3, 1]);
        out.extend((chunk.len() as u16).to_be_bytes());
        out.extend(chunk);
    }
    out
}

#[test]
fn the_name_is_read_whole_records_or_split() {
    let msg = hello_msg(&[
        (10, vec![0, 2, 0, 29]),
        sni(&["api.example.com"]),
        (43, vec![2, 3, 4]),
    ]);
    for size in [msg.len(), 100, 7, 1] {
        let wire = records(&msg, size);
        assert_eq!(
            parse(&wire),
            Hello::Name("api.example.com".into()),
            "records of {size}"
        );
        // Every prefix asks for more, never a verdict on half a hello.
        for cut in 0..wire.len() {
            assert_eq!(
                parse(&wire[..cut]),
                Hello::NeedMore,
                "records of {size}, {cut} bytes"
            );
        }
    }
}

#[test]
fn anything_but_one_plain_host_name_is_refused() {
    for (exts, why) in [
        (vec![], "without a server name"),
        (vec![(10, vec![0, 0])], "without a server name"),
        (vec![sni(&["a.example", "b.example"])], "exactly one"),
        (vec![sni(&[])], "exactly one"),
        (vec![sni(&["a.example"]), sni(&["b.example"])], "repeated"),
        (
            vec![sni(&["a.example"]), (0xfe0d, vec![0; 8])],
            "Encrypted Client Hello",
        ),
        (
            vec![sni(&["a.example"]), (0xfd00, vec![0; 8])],
            "Encrypted Client Hello",
        ),
        (vec![sni(&["ex\u{e4}mple.com"])], "not ASCII"),
        (vec![(0, vec![0, 4, 1, 0, 1, b'x'])], "not a host name"),
    ] {
        let wire = records(&hello_msg(&exts), 1000);
        match parse(&wire) {
            Hello::Refused(r) => assert!(r.contains(why), "{exts:?}: {r}"),
            other => panic!("{exts:?}: {other:?}"),
        }
    }
}

#[test]
fn what_is_not_a_client_hello_is_refused() {
    assert!(matches!(
        parse(b"GET / HTTP/1.1\r\n\r\n"),
        Hello::Refused(_)
    ));
    assert!(matches!(
        parse(b"SSH-2.0-OpenSSH_9.2\r\n"),
        Hello::Refused(_)
    ));
    // A ServerHello, an alert, a bad record length.
    assert!(matches!(
        parse(&records(&[2, 0, 0, 0], 100)),
        Hello::Refused(_)
    ));
    assert!(matches!(parse(&[21, 3, 3, 0, 2, 2, 40]), Hello::Refused(_)));
    assert!(matches!(parse(&[22, 3, 1, 0, 0]), Hello::Refused(_)));
    // A length that runs past the message.
    let mut msg = hello_msg(&[sni(&["a.example"])]);
    let n = msg.len();
    msg[n - 1] = b'x';
    msg.truncate(n - 3);
    let len = (msg.len() - 4) as u32;
    msg[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
    assert!(matches!(parse(&records(&msg, 100)), Hello::Refused(_)));
}

#[test]
fn an_endless_hello_is_refused_not_waited_for() {
    let mut msg = vec![1, 0xff, 0xff, 0xff];
    msg.extend([0u8; 64]);
    assert_eq!(
        parse(&records(&msg, 100)),
        Hello::Refused("a ClientHello too large")
    );
    // Records that never complete a message: refused once past the cap.
    let big = records(
        &[1, 0, 0x40, 0x00]
            .iter()
            .copied()
            .chain([0u8; 20000])
            .collect::<Vec<_>>(),
        16000,
    );
    assert!(matches!(parse(&big), Hello::Refused(_)));
}

/// The ClientHello a real client (rustls) sends for `name`; the proxy's
/// tests use it too.
pub(crate) fn client_hello(name: &str) -> Vec<u8> {
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut wire = Vec::new();
    conn.write_tls(&mut wire).unwrap();
    wire
}

#[test]
fn a_real_clients_hello_names_its_server() {
    let wire = client_hello("registry.npmjs.org");
    assert_eq!(parse(&wire), Hello::Name("registry.npmjs.org".into()));
    // A byte at a time.
    for cut in 0..wire.len() {
        assert_eq!(parse(&wire[..cut]), Hello::NeedMore);
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// No input makes the parser panic, and whatever it answers for a
        /// prefix it answers NeedMore or the same refusal class.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&bytes);
        }
    }
}
