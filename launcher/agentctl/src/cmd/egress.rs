//! `agentctl __egress`: the process that serves an allowlist session's
//! listeners from outside its sandbox. The native helper made them inside
//! the sandbox's network namespace and passes them as descriptors 3, 4,
//! ... (HTTP proxy, SOCKS5, DNS stub, then the transparent ports in the
//! plan's order); this process decides every connection with
//! `policy::egress` and records every refusal in the session's audit trail.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};
use lifecycle::StoreLocation;

/// Refusals recorded per session; past this only a count is kept in the
/// log, so an agent looping on a denied host cannot fill the store.
const MAX_RECORDED: u32 = 1000;

pub fn egress(session_dir: &Path, ready_fd: RawFd, store: StoreLocation) -> Result<u8> {
    let plan = sandbox::egress::EgressPlan::load(session_dir)
        .with_context(|| format!("cannot read {}/egress.json", session_dir.display()))?;
    let allow = policy::egress::Allowlist::parse(&plan.allow)?;
    let planted = take_planted(&plan.transparent_ports)?;
    // SAFETY: the helper passed the ready pipe at this number, and nothing
    // else in this process owns it.
    let ready = unsafe { OwnedFd::from_raw_fd(ready_fd) };
    let session = plan.session.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the egress proxy's runtime")?;
    runtime.block_on(async move {
        let record = lifecycle::events_to_record(store, session);
        let recorded = AtomicU32::new(0);
        let on_denied = Arc::new(move |d: egress::proxy::Denial, via: &'static str| {
            let host = for_the_record(&d.host);
            tracing::info!(host, port = d.port, via, reason = %d.reason, "refused");
            let n = recorded.fetch_add(1, Ordering::Relaxed);
            if n < MAX_RECORDED {
                record(
                    store::NewEvent::new("egress_denied").data(serde_json::json!({
                        "host": host,
                        "port": d.port,
                        "via": via,
                        "reason": d.reason,
                    })),
                );
            } else if n == MAX_RECORDED {
                record(
                    store::NewEvent::new("egress_denied").data(serde_json::json!({
                        "host": "",
                        "port": 0,
                        "via": via,
                        "reason": format!(
                            "more than {MAX_RECORDED} refusals: later ones are counted in the \
                             session's egress.log only"
                        ),
                    })),
                );
            }
        });
        let serving = tokio::spawn(egress::session::serve(
            planted,
            allow,
            Arc::new(egress::proxy::SystemResolver),
            on_denied,
        ));
        // The listeners listen already (their backlog holds what comes
        // before this); the helper starts the agent once it reads this.
        let _ = nix::unistd::write(&ready, b"R");
        drop(ready);
        tokio::select! {
            r = serving => match r {
                Ok(r) => r.context("the egress proxy stopped"),
                Err(e) => Err(anyhow::anyhow!("the egress proxy failed: {e}")),
            },
            // The helper holds this process's stdin: when it is gone, so
            // is whoever would stop this process.
            end = sandbox_end() => {
                tracing::debug!("egress: {end}");
                Ok(())
            }
        }
    })?;
    Ok(0)
}

/// Returns when stdin closes: the process that started this one (the
/// session's helper) is gone, and no one is left to stop this one.
async fn sandbox_end() -> String {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while stdin.read(&mut buf).await.unwrap_or(0) > 0 {}
    "the session's helper is gone".into()
}

/// The descriptors from 3 up, each checked to be the socket it should be
/// (a listening TCP socket on the expected port, or the DNS stub's UDP
/// socket): a mix-up must not serve the wrong protocol on a port.
fn take_planted(transparent: &[u16]) -> Result<egress::session::Planted> {
    use nix::sys::socket::{SockType, getsockopt, sockopt};
    let take = |fd: RawFd, ty: SockType| -> Result<OwnedFd> {
        // SAFETY: the helper passed these numbers for us alone.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let got = getsockopt(&owned, sockopt::SockType)
            .with_context(|| format!("descriptor {fd} is not a socket"))?;
        if got != ty {
            bail!("descriptor {fd} is not a {ty:?} socket");
        }
        Ok(owned)
    };
    let port_is = |fd: RawFd, got: std::io::Result<std::net::SocketAddr>, port: u16| match got {
        Ok(a) if a.port() == port => Ok(()),
        _ => Err(anyhow::anyhow!(
            "descriptor {fd} is not the listener for port {port}"
        )),
    };
    let tcp = |fd: RawFd, port: u16| -> Result<std::net::TcpListener> {
        let l = std::net::TcpListener::from(take(fd, SockType::Stream)?);
        port_is(fd, l.local_addr(), port)?;
        Ok(l)
    };
    let dns = std::net::UdpSocket::from(take(5, SockType::Datagram)?);
    port_is(5, dns.local_addr(), sandbox::egress::DNS.port())?;
    Ok(egress::session::Planted {
        http: tcp(3, sandbox::egress::HTTP_PROXY.port())?,
        socks: tcp(4, sandbox::egress::SOCKS_PROXY.port())?,
        dns,
        transparent: transparent
            .iter()
            .enumerate()
            .map(|(i, p)| tcp(6 + i as RawFd, *p))
            .collect::<Result<_>>()?,
    })
}

/// A refused name as the audit trail keeps it: a label long enough to
/// carry data (a DNS tunnel's payload, perhaps a secret) is cut to its
/// first characters and its length, so the record shows the attempt
/// without storing what it tried to send.
fn for_the_record(host: &str) -> String {
    host.split('.')
        .map(|l| {
            if l.chars().count() > 24 {
                format!(
                    "{}…({} chars)",
                    l.chars().take(8).collect::<String>(),
                    l.len()
                )
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
        .chars()
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_labels_are_cut_in_the_record() {
        let secret = "AKIAIOSFODNN7EXAMPLEAKIAIOSFODNN7EXAMPLE";
        let got = super::for_the_record(&format!("{secret}.exfil.example"));
        assert_eq!(got, "AKIAIOSF…(40 chars).exfil.example");
        assert_eq!(super::for_the_record("api.example.com"), "api.example.com");
    }
}
