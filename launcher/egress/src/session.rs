//! One session's egress: the listeners a backend planted in the sandbox's
//! network namespace, served from outside it. Everything a session needs
//! is here, so that a backend hands over sockets and rules and nothing
//! else.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use policy::egress::Allowlist;
use tokio::net::{TcpListener, UdpSocket};

use crate::dns::{self, Stub};
use crate::proxy::{self, Config, Denial, Resolve};

/// Listening sockets made inside the sandbox's network namespace. They
/// belong to that namespace wherever they are served from.
pub struct Planted {
    pub http: std::net::TcpListener,
    pub socks: std::net::TcpListener,
    pub dns: std::net::UdpSocket,
    pub transparent: Vec<std::net::TcpListener>,
    /// The /16 the DNS stub's fake addresses come from: local in the
    /// namespace the listeners were made in, so connections to them reach
    /// the transparent listeners (`dns::DEFAULT_FAKE_NET` for containers).
    pub fake_net: std::net::Ipv4Addr,
}

/// How long a client has to send its request or its ClientHello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves every planted listener until the returned future is dropped.
/// Call inside a tokio runtime with the net and time drivers.
pub async fn serve(
    planted: Planted,
    allow: Allowlist,
    resolver: Arc<dyn Resolve>,
    on_denied: Arc<dyn Fn(Denial, &'static str) + Send + Sync>,
) -> std::io::Result<()> {
    let mut tls_ports = vec![443];
    // Every rule on a port conventionally spoken over TLS is checked for a
    // ClientHello naming the host.
    for r in &allow.rules {
        if [443, 8443, 853, 993, 995, 465, 636, 6443].contains(&r.port) {
            tls_ports.push(r.port);
        }
    }
    tls_ports.sort_unstable();
    tls_ports.dedup();
    let tunnels = Arc::new(tokio::sync::Semaphore::new(proxy::MAX_TUNNELS));
    let config = |via: &'static str| {
        let on_denied = on_denied.clone();
        let tunnels = tunnels.clone();
        Arc::new(Config {
            allow: allow.clone(),
            host_addresses,
            resolver: resolver.clone(),
            tls_ports: tls_ports.clone(),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            on_denied: Arc::new(move |d| on_denied(d, via)),
            tunnels,
        })
    };
    let stub = Arc::new(Stub::with_fake_net(allow.clone(), planted.fake_net));
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(proxy::serve(listener(planted.http)?, config("http")));
    tasks.spawn(proxy::serve_socks(
        listener(planted.socks)?,
        config("socks"),
    ));
    for l in planted.transparent {
        tasks.spawn(proxy::serve_transparent(
            listener(l)?,
            config("transparent"),
            stub.fakes.clone(),
        ));
    }
    planted.dns.set_nonblocking(true)?;
    let dns_socket = UdpSocket::from_std(planted.dns)?;
    let refused = on_denied.clone();
    tasks.spawn(dns::serve_udp(
        dns_socket,
        stub,
        Arc::new(move |name| {
            refused(
                Denial {
                    host: name,
                    port: 53,
                    reason: "not an allowed name: the DNS stub refused it (nothing was forwarded)"
                        .into(),
                },
                "dns",
            )
        }),
    ));
    // The servers loop until dropped; one ending is a bug worth a log line.
    while let Some(r) = tasks.join_next().await {
        tracing::warn!("an egress listener stopped: {r:?}");
    }
    Ok(())
}

fn listener(l: std::net::TcpListener) -> std::io::Result<TcpListener> {
    l.set_nonblocking(true)?;
    TcpListener::from_std(l)
}

/// Every address on this host's interfaces (a name must never lead back
/// to the host). Read from the kernel when the session starts.
pub fn host_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    // SAFETY: getifaddrs fills a list we free below; we only read it.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut cur = list;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match (*addr).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_addresses_include_loopback() {
        let a = host_addresses();
        assert!(a.contains(&IpAddr::from([127, 0, 0, 1])), "{a:?}");
    }
}
