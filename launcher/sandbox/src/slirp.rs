//! The `bridge` network's way out, shared by the backends that give a
//! network namespace of their own a user-mode network: slirp4netns, run
//! unprivileged, told not to reach the host's loopback (a bridged agent
//! reaches the internet, not the services on the host's 127.0.0.1).

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The address slirp4netns's DNS forwarder answers on.
pub const DNS: &str = "10.0.2.3";

/// The slirp4netns binary on PATH (or /usr/bin, /usr/local/bin).
pub fn find() -> Option<PathBuf> {
    crate::find_program("slirp4netns")
}

/// A running slirp4netns serving one network namespace. Killed when
/// dropped, and when the thread that started it ends (parent-death
/// signal): it must not outlive its session.
pub struct Slirp {
    child: Child,
}

impl Slirp {
    /// Starts slirp4netns for the network namespace of `pid` (entering the
    /// user namespace of `pid` first when `join_userns`: a rootless starter
    /// may enter the network namespace only from the user namespace that
    /// owns it) and waits until `tap0` inside is configured. Its log goes
    /// to `dir/slirp4netns.log`.
    pub fn start(binary: &Path, pid: i32, join_userns: bool, dir: &Path) -> Result<Slirp, String> {
        let (ready_r, ready_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
        let ready_fd = ready_w.as_raw_fd();
        let log = dir.join("slirp4netns.log");
        let mut cmd = Command::new(binary);
        cmd.args([
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            "--enable-sandbox",
            "--enable-seccomp",
        ]);
        if join_userns {
            cmd.arg(format!("--userns-path=/proc/{pid}/ns/user"));
        }
        cmd.arg(format!("--ready-fd={ready_fd}"))
            .arg(pid.to_string())
            .arg("tap0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).map(Stdio::from).unwrap_or(Stdio::null()));
        // SAFETY: the closure clears FD_CLOEXEC on an fd we own and sets the
        // parent-death signal: both async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                let flags = libc::fcntl(ready_fd, libc::F_GETFD);
                libc::fcntl(ready_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        drop(ready_w);
        let mut byte = [0u8; 1];
        let mut ready = File::from(ready_r);
        match ready.read(&mut byte) {
            Ok(1) => Ok(Slirp { child }),
            _ => {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let mut slirp = Slirp { child };
                slirp.stop();
                if text.contains("/dev/net/tun") {
                    return Err(format!(
                        "slirp4netns cannot open /dev/net/tun ({}); most distributions make it \
                         mode 0666 for rootless networking: `sudo chmod 0666 /dev/net/tun`, \
                         or use --network none",
                        text.lines().next().unwrap_or("")
                    ));
                }
                Err(format!(
                    "slirp4netns did not come up: {}",
                    text.lines().collect::<Vec<_>>().join(" / ")
                ))
            }
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Slirp {
    fn drop(&mut self) {
        self.stop();
    }
}
