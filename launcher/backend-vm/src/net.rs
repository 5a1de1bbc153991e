//! The VM's network, on the host: QEMU's user-mode network makes the
//! guest's connections with QEMU's own sockets, and QEMU connects the
//! guest's gateway to its own loopback. So QEMU runs in a network
//! namespace of its own (made with its user namespace, `helper.rs`), and
//! that namespace decides where the guest can go:
//!
//! - `bridge`: slirp4netns gives it a way out with the host's loopback
//!   cut off, as it does a container's;
//! - `allowlist`: no way out at all, only the egress proxy's listeners on
//!   its loopback (made here, served from outside by `agentctl __egress`),
//!   and the /16 of the DNS stub's fake addresses made local, so a
//!   connection the guest makes to one reaches the transparent listeners
//!   with the address it dialled.
//!
//! Everything here runs in the forked child, inside those namespaces,
//! before it gives up its capabilities.

use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(s) })
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if c.as_bytes_with_nul().len() > libc::IFNAMSIZ {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: ifreq is plain data; zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(c.as_bytes_with_nul()) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    // SAFETY: sockaddr_in is plain data; zero is valid.
    let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_addr.s_addr = u32::from(a).to_be();
    // SAFETY: the two have the same size; the kernel reads a sockaddr_in
    // through the sockaddr of an AF_INET request.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(s) }
}

fn ioctl(sock: &OwnedFd, req: libc::c_ulong, arg: &mut libc::ifreq, what: &str) -> io::Result<()> {
    // SAFETY: `arg` is an ifreq we own, as these requests expect.
    if unsafe { libc::ioctl(sock.as_raw_fd(), req, arg as *mut libc::ifreq) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

/// Brings up the namespace's `lo`.
pub fn loopback_up() -> io::Result<()> {
    let sock = ioctl_socket()?;
    let mut req = ifreq("lo")?;
    ioctl(&sock, libc::SIOCGIFFLAGS, &mut req, "reading lo's flags")?;
    // SAFETY: the flags member of the union SIOCGIFFLAGS filled in.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    ioctl(&sock, libc::SIOCSIFFLAGS, &mut req, "bringing up lo")
}

/// Makes every address of `net`/`prefix` local: an address on the
/// loopback device makes its whole prefix a local route.
pub fn local_net(net: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let sock = ioctl_socket()?;
    let mut req = ifreq("lo:1")?;
    req.ifr_ifru.ifru_addr = sockaddr(Ipv4Addr::from(u32::from(net) | 1));
    ioctl(
        &sock,
        libc::SIOCSIFADDR,
        &mut req,
        "adding the fake addresses",
    )?;
    let mut req = ifreq("lo:1")?;
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    req.ifr_ifru.ifru_netmask = sockaddr(Ipv4Addr::from(mask));
    ioctl(
        &sock,
        libc::SIOCSIFNETMASK,
        &mut req,
        "sizing the fake addresses",
    )
}

/// The allowlist's listeners, made here and sent to the helper over
/// `to`, or why not (sent instead, as the text of the message).
pub fn plant_listeners(transparent_ports: &[u16], to: RawFd) -> Result<(), String> {
    local_net(sandbox::egress::VM_FAKE_NET, 16).map_err(|e| e.to_string())?;
    let fds = sandbox::egress::make_listeners(transparent_ports)?;
    sandbox::egress::send_fds(to, &fds).map_err(|e| format!("cannot hand over the listeners: {e}"))
}
