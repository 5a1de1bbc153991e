//! A process by descriptor (pidfd): a signal sent through it reaches that
//! process or none, never one that reused its pid.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub struct PidFd(OwnedFd);

impl PidFd {
    pub fn open(pid: i32) -> io::Result<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new
        // descriptor, which we own from here on.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor the kernel just gave us.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Sends `signal`; `Ok` when it was delivered, ESRCH when the process
    /// has ended.
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        // SAFETY: a descriptor we own, a signal number, no siginfo.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
