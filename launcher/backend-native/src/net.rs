//! The sandbox's network: the loopback interface, and for `bridge` a
//! user-mode network from slirp4netns. slirp4netns runs unprivileged, so
//! the same mode works for root and for rootless sessions, and it is told
//! not to reach the host's loopback: a bridged agent reaches the internet,
//! not the services listening on the host's 127.0.0.1.

use crate::error::{Context as _, NativeError};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use nix::sched::{CloneFlags, setns};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

/// The address slirp4netns's DNS forwarder answers on.
pub const SLIRP_DNS: &str = sandbox::slirp::DNS;

/// Finds the slirp4netns binary.
pub fn find_slirp4netns() -> Option<PathBuf> {
    sandbox::slirp::find()
}

/// Brings up `lo` inside the network namespace of `pid`. Joining a network
/// namespace is process-wide: root joins and comes back; a rootless helper
/// could not come back to the host's namespace, so it forks a child to go.
pub fn loopback_up(pid: i32) -> Result<(), NativeError> {
    let net = File::open(format!("/proc/{pid}/ns/net"))
        .ctx("cannot open the sandbox's network namespace")?;
    if nix::unistd::geteuid().is_root()
        && !in_userns()
        && let Ok(home) = File::open("/proc/self/ns/net")
    {
        setns(&net, CloneFlags::CLONE_NEWNET).ctx("cannot enter the sandbox's network")?;
        let up = set_up("lo");
        setns(&home, CloneFlags::CLONE_NEWNET).ctx("cannot leave the sandbox's network")?;
        return up
            .map_err(|e| format!("cannot bring up the loopback interface: {}", e.desc()).into());
    }
    // SAFETY: the helper is single-threaded; the child only makes syscalls
    // and exits.
    match unsafe { fork() }.ctx("fork")? {
        ForkResult::Child => {
            let code = (|| -> Result<(), nix::Error> {
                setns(&net, CloneFlags::CLONE_NEWNET)?;
                set_up("lo")
            })()
            .map(|()| 0)
            .unwrap_or_else(|e| e as i32);
            // SAFETY: leaving the forked child without running destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) => Ok(()),
            Ok(WaitStatus::Exited(_, errno)) => Err(NativeError::check(format!(
                "cannot bring up the loopback interface: {}",
                nix::errno::Errno::from_raw(errno).desc()
            ))),
            other => Err(NativeError::check(format!(
                "loopback setup ended with {other:?}"
            ))),
        },
    }
}

fn in_userns() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| m.split_whitespace().nth(2) != Some("4294967295"))
        .unwrap_or(true)
}

fn set_up(name: &str) -> Result<(), nix::Error> {
    // SAFETY: plain socket(2); the fd is owned immediately.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: `sock` is a fresh, valid descriptor.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: ifreq is plain data; zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let cname = CString::new(name).expect("interface name");
    for (dst, src) in req.ifr_name.iter_mut().zip(cname.as_bytes_with_nul()) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(nix::Error::last());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(nix::Error::last());
        }
    }
    Ok(())
}

/// Makes the `allowlist` network's listeners inside the network namespace
/// of `pid` (whose `lo` must be up), in a short-lived child that hands them
/// back over a socket pair: a socket belongs to the namespace it was made
/// in, so the egress proxy serves them from outside and nothing of agentctl
/// runs inside. In [`sandbox::egress::EgressPlan`] order.
pub fn plant_listeners(pid: i32, transparent_ports: &[u16]) -> Result<Vec<OwnedFd>, NativeError> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let net = File::open(format!("/proc/{pid}/ns/net"))
        .ctx("cannot open the sandbox's network namespace")?;
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .ctx("socketpair")?;
    let want = 3 + transparent_ports.len();
    // SAFETY: the helper is single-threaded; the child makes sockets,
    // sends them and exits without returning into the parent's code.
    match unsafe { fork() }.ctx("fork")? {
        ForkResult::Child => {
            drop(ours);
            let code = (|| -> Result<(), String> {
                setns(&net, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
                let fds = sandbox::egress::make_listeners(transparent_ports)?;
                sandbox::egress::send_fds(theirs.as_raw_fd(), &fds)
                    .map_err(|e| format!("cannot hand over the listeners: {e}"))
            })();
            let status = match code {
                Ok(()) => 0,
                Err(e) => {
                    // The parent reads this as the reason.
                    let _ = nix::unistd::write(&theirs, e.as_bytes());
                    1
                }
            };
            // SAFETY: leaving the forked child without running destructors.
            unsafe { libc::_exit(status) }
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            let got = sandbox::egress::recv_fds(ours.as_raw_fd());
            let _ = waitpid(child, None);
            match got {
                Ok((fds, _)) if fds.len() == want => Ok(fds),
                Ok((fds, text)) => Err(NativeError::check(format!(
                    "cannot make the allowlist network's listeners inside the sandbox: {}",
                    if text.is_empty() || text == "L" {
                        format!("{} of {want} came back", fds.len())
                    } else {
                        text
                    }
                ))),
                Err(e) => Err(NativeError::check(format!(
                    "cannot make the allowlist network's listeners inside the sandbox: {e}"
                ))),
            }
        }
    }
}
