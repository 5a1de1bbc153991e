//! Where the `allowlist` network's ways out sit inside the sandbox, the
//! same for every backend that plants them in the sandbox's own network
//! namespace: the backend creates these listeners there and agentctl's
//! egress proxy serves them from outside (see `egress` and
//! docs/NETWORK.md).

use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use policy::egress::{Allowlist, Pattern};
use serde::{Deserialize, Serialize};

/// What an allowlist session's egress process serves, written as
/// `egress.json` in the directory its command is given.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EgressPlan {
    /// The session's id, for its audit trail.
    #[serde(default)]
    pub session: String,
    /// The session's allow rules (`policy::egress` syntax).
    pub allow: Vec<String>,
    /// Ports with a transparent listener, in the order their descriptors
    /// are passed.
    pub transparent_ports: Vec<u16>,
    /// The program and arguments that serve them (`agentctl [--store S]
    /// __egress`); the directory and `--ready-fd N` are appended.
    pub command: Vec<String>,
    /// The egress process removes its directory when it ends (the Docker
    /// backend's, which nothing else outlives to remove).
    #[serde(default)]
    pub owns_dir: bool,
    /// The /16 the DNS stub gives fake addresses from; None: 127.1.0.0/16,
    /// local in a container's own network namespace. A VM's guest routes
    /// its loopback range nowhere, so the vm backend names one its
    /// VMM's namespace makes local ([`VM_FAKE_NET`]).
    #[serde(default)]
    pub fake_net: Option<Ipv4Addr>,
}

impl EgressPlan {
    pub const FILE: &'static str = "egress.json";

    /// Listeners passed: HTTP, SOCKS, DNS and one per transparent port.
    pub fn listeners(&self) -> usize {
        3 + self.transparent_ports.len()
    }

    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::write(
            dir.join(Self::FILE),
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )
    }

    pub fn load(dir: &Path) -> std::io::Result<EgressPlan> {
        let text = std::fs::read(dir.join(Self::FILE))?;
        serde_json::from_slice(&text).map_err(std::io::Error::other)
    }
}

impl EgressPlan {
    /// The plan of `spec`'s session when its network is `allowlist`
    /// (None for other networks), served by `command` (`agentctl
    /// __egress`), or why the allowlist cannot be served: no rules, a rule
    /// that does not parse, no command. Refused, never run open.
    pub fn for_spec(
        spec: &crate::spec::SandboxSpec,
        command: &[String],
        fake_net: Option<Ipv4Addr>,
    ) -> Result<Option<EgressPlan>, crate::backend::BackendError> {
        if spec.network != policy::NetworkMode::Allowlist {
            return Ok(None);
        }
        let refuse = |reason: String| crate::backend::BackendError::Control {
            control: "network",
            reason,
            fix: "check the profile's network.allow rules (`agentctl explain`)".into(),
        };
        let allow = Allowlist::parse(&spec.network_allow).map_err(|e| refuse(e.to_string()))?;
        if allow.rules.is_empty() {
            return Err(refuse("the allowlist network has no rules".into()));
        }
        if command.is_empty() {
            return Err(refuse(
                "this launcher cannot serve the allowlist network (no egress command)".into(),
            ));
        }
        Ok(Some(EgressPlan {
            session: spec.session.to_string(),
            allow: spec.network_allow.clone(),
            transparent_ports: transparent_ports(&allow),
            command: command.to_vec(),
            owns_dir: false,
            fake_net,
        }))
    }
}

/// Makes the listeners in the calling thread's network namespace, in the
/// order [`EgressPlan`] passes them. Errors say which address failed.
pub fn make_listeners(transparent_ports: &[u16]) -> Result<Vec<OwnedFd>, String> {
    let tcp = |addr: SocketAddrV4| {
        std::net::TcpListener::bind(addr)
            .map(OwnedFd::from)
            .map_err(|e| format!("cannot listen on {addr} in the sandbox: {e}"))
    };
    let mut fds = vec![
        tcp(HTTP_PROXY)?,
        tcp(SOCKS_PROXY)?,
        std::net::UdpSocket::bind(DNS)
            .map(OwnedFd::from)
            .map_err(|e| format!("cannot listen on the DNS stub's port: {e}"))?,
    ];
    for p in transparent_ports {
        fds.push(tcp(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, *p))?);
    }
    Ok(fds)
}

/// Sends descriptors over a unix socket (one message, `SCM_RIGHTS`).
pub fn send_fds(sock: RawFd, fds: &[OwnedFd]) -> std::io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    sendmsg::<()>(
        sock,
        &[std::io::IoSlice::new(b"L")],
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::empty(),
        None,
    )
    .map(|_| ())
    .map_err(std::io::Error::from)
}

/// Receives what [`send_fds`] sent, and the text that came with it (a
/// sender that failed sends its reason instead).
pub fn recv_fds(sock: RawFd) -> std::io::Result<(Vec<OwnedFd>, String)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut buf = [0u8; 512];
    let mut cmsg = nix::cmsg_space!([RawFd; 256]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(std::io::Error::from)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel just installed these descriptors in this
            // process; nothing else owns them.
            fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
        }
    }
    let n = msg.bytes;
    Ok((fds, String::from_utf8_lossy(&buf[..n]).into_owned()))
}

/// The process serving a session's planted listeners (`agentctl
/// __egress`), outside the sandbox: it holds the only copies of them.
pub struct EgressProcess {
    /// None once stopped.
    child: Option<Child>,
    /// Its stdin, held open: the process ends when it closes (when its
    /// starter is gone).
    _stdin: Option<ChildStdin>,
}

impl EgressProcess {
    /// Starts the plan's command with `dir` (where `egress.json` is) and
    /// `--ready-fd N`, the listeners at descriptors 3, 4, ... and `hold`
    /// (a descriptor it keeps open for as long as it lives: the Docker
    /// backend's netns holder ends when it closes) after them, and waits
    /// until it serves.
    pub fn start(
        plan: &EgressPlan,
        listeners: Vec<OwnedFd>,
        hold: Option<OwnedFd>,
        dir: &Path,
    ) -> Result<EgressProcess, String> {
        let (program, args) = plan
            .command
            .split_first()
            .ok_or("no egress command configured")?;
        if listeners.len() != plan.listeners() {
            return Err(format!(
                "{} listeners for a plan of {}",
                listeners.len(),
                plan.listeners()
            ));
        }
        let (ready_r, ready_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
        let mut fds = listeners;
        fds.push(ready_w);
        let with_hold = hold.is_some();
        fds.extend(hold);
        // Copies above any descriptor the child will be given, so that the
        // renumbering below never overwrites one it has yet to move.
        let high: Vec<OwnedFd> = fds
            .iter()
            .map(|f| {
                nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(100))
                    // SAFETY: a descriptor fcntl just made for us.
                    .map(|r| unsafe { OwnedFd::from_raw_fd(r) })
            })
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cannot pass the listeners: {e}"))?;
        drop(fds);
        let ready_fd = 3 + plan.listeners() as i32;
        let raw: Vec<i32> = high.iter().map(|f| f.as_raw_fd()).collect();
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join("egress.log"))
            .map(Stdio::from)
            .unwrap_or(Stdio::null());
        let mut cmd = Command::new(program);
        cmd.args(args)
            .arg(dir)
            .arg("--ready-fd")
            .arg(ready_fd.to_string());
        if with_hold {
            cmd.arg("--hold-fd").arg((ready_fd + 1).to_string());
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(log);
        // SAFETY: dup2 is async-signal-safe, and the targets (3, 4, ...)
        // are below every source (100 and up).
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                for (i, fd) in raw.iter().enumerate() {
                    if libc::dup2(*fd, 3 + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the egress proxy {program}: {e}"))?;
        drop(high);
        let stdin = child.stdin.take();
        let mut egress = EgressProcess {
            child: Some(child),
            _stdin: stdin,
        };
        let mut byte = [0u8; 1];
        match File::from(ready_r).read(&mut byte) {
            Ok(1) => Ok(egress),
            _ => {
                egress.stop();
                let log = std::fs::read_to_string(dir.join("egress.log")).unwrap_or_default();
                Err(format!(
                    "the allowlist network's proxy did not start: {}",
                    log.lines().rev().take(3).collect::<Vec<_>>().join(" / ")
                ))
            }
        }
    }

    /// Tells the process the sandbox's init on this host: it serves until
    /// that process is gone, then ends, with no one left to stop it.
    pub fn watch(&mut self, pid: u32) -> std::io::Result<()> {
        use std::io::Write;
        let mut stdin = self._stdin.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
        writeln!(stdin, "{pid}")
    }

    /// Leaves the process running on its own (after [`Self::watch`]).
    pub fn release(mut self) {
        self.child.take();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for EgressProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The fake addresses of a VM's allowlist network: 198.18.0.0/15 is set
/// aside for benchmarking (RFC 2544) and routed nowhere real, so nothing
/// the agent could mean is shadowed.
pub const VM_FAKE_NET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);

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
    proxy_env_at(*HTTP_PROXY.ip())
}

/// [`proxy_env`] with the proxies at `host` instead of the sandbox's
/// loopback (a VM's guest reaches them through its gateway).
pub fn proxy_env_at(host: Ipv4Addr) -> Vec<(&'static str, String)> {
    let http = format!("http://{host}:{}", HTTP_PROXY.port());
    let socks = format!("socks5h://{host}:{}", SOCKS_PROXY.port());
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
