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

pub fn egress(
    session_dir: &Path,
    ready_fd: RawFd,
    hold_fd: Option<RawFd>,
    store: StoreLocation,
) -> Result<u8> {
    let plan = sandbox::egress::EgressPlan::load(session_dir)
        .with_context(|| format!("cannot read {}/egress.json", session_dir.display()))?;
    let allow = policy::egress::Allowlist::parse(&plan.allow)?;
    let mut planted = take_planted(&plan.transparent_ports)?;
    if let Some(net) = plan.fake_net {
        planted.fake_net = net;
    }
    // SAFETY: the starter passed the ready pipe (and the descriptor to hold)
    // at these numbers, and nothing else in this process owns them.
    let ready = unsafe { OwnedFd::from_raw_fd(ready_fd) };
    let _hold = hold_fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    let session = plan.session.clone();
    let plan_owns_dir = plan.owns_dir;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the egress proxy's runtime")?;
    let served = runtime.block_on(async move {
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
            // The starter holds this process's stdin, and may say on it
            // which process is the sandbox: this one ends with it, or with
            // the starter when it says nothing.
            end = sandbox_end() => {
                tracing::debug!("egress: {end}");
                Ok(())
            }
        }
    });
    if plan_owns_dir {
        let _ = std::fs::remove_dir_all(session_dir);
    }
    served?;
    Ok(0)
}

/// Reads the sandbox's pid from stdin and waits until that process is
/// gone; returns when stdin closes without one (the starter is gone).
async fn sandbox_end() -> String {
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    if stdin.read_line(&mut line).await.unwrap_or(0) == 0 {
        return "the session's starter is gone".into();
    }
    let Ok(pid) = line.trim().parse::<i32>() else {
        return format!("not a pid: {line:?}");
    };
    // SAFETY: pidfd_open with a plain pid; the result is a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return format!("process {pid} is gone");
    }
    // SAFETY: a fresh descriptor from pidfd_open, owned here.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // A pidfd turns readable when its process exits.
    let _ = tokio::task::spawn_blocking(move || {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        while let Err(nix::errno::Errno::EINTR) = poll(&mut fds, PollTimeout::NONE) {}
    })
    .await;
    format!("process {pid} exited")
}

/// `agentctl __egress-plant`: inside the Docker backend's netns holder,
/// makes the listeners here, sends them to `send_to`, and stays (holding
/// the sandbox's network namespace) until the other end closes.
pub fn plant(send_to: &Path, ports: &[u16]) -> Result<u8> {
    use std::io::Read;
    let fds = sandbox::egress::make_listeners(ports).map_err(anyhow::Error::msg)?;
    let mut conn = std::os::unix::net::UnixStream::connect(send_to)
        .with_context(|| format!("cannot reach the launcher at {}", send_to.display()))?;
    sandbox::egress::send_fds(std::os::fd::AsRawFd::as_raw_fd(&conn), &fds)
        .context("cannot hand over the listeners")?;
    drop(fds);
    let mut byte = [0u8; 1];
    // Blocks until the other end closes.
    let _ = conn.read(&mut byte);
    Ok(0)
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
        fake_net: egress::dns::DEFAULT_FAKE_NET,
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
