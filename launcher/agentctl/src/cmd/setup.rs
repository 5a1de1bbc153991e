use anyhow::{Context, Result, bail};
use backend_native::cgroup::{self, Hierarchy};

use crate::cli::SetupArgs;

/// Delegates a cgroup subtree to a user so that their sessions get limits.
pub fn setup(args: SetupArgs) -> Result<u8> {
    if !nix::unistd::geteuid().is_root() {
        bail!("setup changes cgroup ownership and must run as root; try `sudo agentctl setup`");
    }
    let name = args
        .user
        .or_else(|| std::env::var("SUDO_USER").ok())
        .context("name the user to set up: `agentctl setup --user NAME`")?;
    let user = nix::unistd::User::from_name(&name)
        .ok()
        .flatten()
        .with_context(|| format!("unknown user \"{name}\""))?;
    match cgroup::detect().context("cannot read the cgroup layout")? {
        Hierarchy::V1 { mounts } => {
            let made = cgroup::setup_v1(&mounts, user.uid.as_raw(), user.gid.as_raw())
                .context("cannot delegate the cgroup subtree")?;
            println!(
                "delegated cgroup v1 subtree /agentctl/{} to {name} in {} hierarchies",
                user.uid,
                made.len()
            );
            println!("(cgroup v1 state does not survive a reboot: run setup again after one)");
        }
        Hierarchy::V2 => {
            let dropin =
                std::path::Path::new("/etc/systemd/system/user@.service.d/agentctl-delegate.conf");
            std::fs::create_dir_all(dropin.parent().expect("has parent"))?;
            std::fs::write(dropin, "[Service]\nDelegate=pids memory cpu cpuset io\n")
                .with_context(|| format!("cannot write {}", dropin.display()))?;
            let _ = std::process::Command::new("systemctl")
                .arg("daemon-reload")
                .status();
            println!(
                "wrote {}: systemd now delegates pids, memory and cpu to user sessions; \
                 {name} must log in again for it to apply",
                dropin.display()
            );
        }
    }
    Ok(0)
}
