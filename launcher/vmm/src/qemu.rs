//! QEMU as the VMM: q35 with virtio-pci (Debian's kernels find their
//! devices there without a custom config; `-M microvm` needs
//! virtio-mmio devices on the command line, which they do not read),
//! nothing QEMU would add by default, no network device unless asked (then
//! QEMU's user-mode network on virtio-net, IPv4 only), host directories
//! over 9p with read-only enforced by QEMU, the agent's channel on a
//! virtio-serial port, and QMP for control.

use std::ffi::OsString;

use crate::{Accel, VmConfig, VmmDriver, VmmError};

/// The virtio-serial port name the guest agent opens
/// (`/dev/virtio-ports/<name>`).
pub const AGENT_PORT: &str = "agentctl.agent";

pub struct Qemu {
    /// `qemu-system-x86_64`, or a path to it.
    pub program: OsString,
}

impl Default for Qemu {
    fn default() -> Qemu {
        Qemu {
            program: "qemu-system-x86_64".into(),
        }
    }
}

/// QEMU's option syntax: a comma in a value is written twice.
fn opt_value(s: &std::path::Path) -> Result<String, VmmError> {
    let s = s
        .to_str()
        .ok_or_else(|| VmmError::Config(format!("{} is not UTF-8", s.display())))?;
    Ok(s.replace(',', ",,"))
}

impl VmmDriver for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn command(&self, cfg: &VmConfig) -> Result<Vec<OsString>, VmmError> {
        if cfg.vcpus == 0 || cfg.memory_mib < 64 {
            return Err(VmmError::Config(format!(
                "{} vCPUs and {} MiB: a VM needs at least 1 vCPU and 64 MiB",
                cfg.vcpus, cfg.memory_mib
            )));
        }
        let mut a: Vec<String> = vec![
            "-M".into(),
            "q35".into(),
            "-accel".into(),
            match cfg.accel {
                Accel::Kvm => "kvm".into(),
                Accel::Tcg => format!("tcg,tb-size={}", crate::TCG_CODE_CACHE_MIB),
            },
            "-cpu".into(),
            match cfg.accel {
                Accel::Kvm => "host".into(),
                Accel::Tcg => "max".into(),
            },
            "-m".into(),
            format!("{}M", cfg.memory_mib),
            "-smp".into(),
            cfg.vcpus.to_string(),
            // Nothing but what is asked: no default NIC, no VGA, no
            // floppy, no user config files; the guest's reboot ends QEMU.
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-nographic".into(),
            "-no-reboot".into(),
            // QEMU's own seccomp filter: no new processes, no privileges.
            "-sandbox".into(),
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny".into(),
            "-kernel".into(),
            opt_path(&cfg.kernel)?,
            "-initrd".into(),
            opt_path(&cfg.initrd)?,
            "-append".into(),
            format!("console=ttyS0 {}", cfg.cmdline),
            "-chardev".into(),
            format!("file,id=console,path={}", opt_value(&cfg.console_log)?),
            "-serial".into(),
            "chardev:console".into(),
            "-device".into(),
            "virtio-serial-pci,id=vser".into(),
            "-chardev".into(),
            format!(
                "socket,id=agent,path={},server=on,wait=off",
                opt_value(&cfg.agent_socket)?
            ),
            "-device".into(),
            format!("virtserialport,bus=vser.0,chardev=agent,name={AGENT_PORT}"),
            "-qmp".into(),
            format!(
                "unix:{},server=on,wait=off",
                opt_value(&cfg.control_socket)?
            ),
        ];
        for (i, s) in cfg.shares.iter().enumerate() {
            if s.tag.is_empty()
                || s.tag.len() > 31
                || !s
                    .tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(VmmError::Config(format!(
                    "share tag {:?}: 1 to 31 letters, digits, _ or -",
                    s.tag
                )));
            }
            a.push("-fsdev".into());
            // multidevs=remap: the tree spans several host file systems
            // (binds, tmpfs); without it their inode numbers collide in
            // the guest's 9p client, which then takes one file for
            // another (a working directory "nonexistent").
            a.push(format!(
                "local,id=fs{i},path={},security_model=none,multidevs=remap{}",
                opt_value(&s.host_path)?,
                if s.read_only { ",readonly=on" } else { "" }
            ));
            a.push("-device".into());
            a.push(format!("virtio-9p-pci,fsdev=fs{i},mount_tag={}", s.tag));
        }
        if cfg.user_net {
            use crate::user_net::*;
            a.push("-netdev".into());
            // No IPv6 (the sandbox's other networks have none either), no
            // TFTP, SMB or forwarded ports: only what the guest dials.
            a.push(format!(
                "user,id=net0,ipv6=off,net={NETWORK}/{PREFIX},host={GATEWAY},dns={DNS},dhcpstart={GUEST}"
            ));
            a.push("-device".into());
            // No option ROM: the guest boots its kernel directly.
            a.push("virtio-net-pci,netdev=net0,romfile=".into());
        }
        let mut out = vec![self.program.clone()];
        out.extend(a.into_iter().map(OsString::from));
        Ok(out)
    }
}

fn opt_path(p: &std::path::Path) -> Result<String, VmmError> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| VmmError::Config(format!("{} is not UTF-8", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Share;

    fn cfg() -> VmConfig {
        VmConfig {
            kernel: "/k/vmlinuz".into(),
            initrd: "/k/initrd".into(),
            cmdline: "quiet".into(),
            memory_mib: 512,
            vcpus: 2,
            accel: Accel::Tcg,
            shares: vec![
                Share {
                    tag: "workspace".into(),
                    host_path: "/w,odd".into(),
                    read_only: false,
                },
                Share {
                    tag: "usr".into(),
                    host_path: "/usr".into(),
                    read_only: true,
                },
            ],
            agent_socket: "/run/s/agent.sock".into(),
            control_socket: "/run/s/qmp.sock".into(),
            console_log: "/run/s/console.log".into(),
            user_net: false,
        }
    }

    #[test]
    fn the_command_has_no_network_and_enforces_read_only_shares() {
        let argv: Vec<String> = Qemu::default()
            .command(&cfg())
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = argv.join(" ");
        assert!(joined.contains("-nodefaults"), "{joined}");
        assert!(
            !joined.contains("-netdev") && !joined.contains("-nic"),
            "{joined}"
        );
        assert!(
            joined.contains("-accel tcg,tb-size=256 -cpu max"),
            "{joined}"
        );
        assert!(
            joined
                .contains("local,id=fs0,path=/w,,odd,security_model=none,multidevs=remap -device"),
            "{joined}"
        );
        assert!(
            joined
                .contains("local,id=fs1,path=/usr,security_model=none,multidevs=remap,readonly=on"),
            "{joined}"
        );
        assert!(joined.contains(&format!("name={AGENT_PORT}")), "{joined}");
        assert!(joined.contains("-append console=ttyS0 quiet"), "{joined}");
    }

    #[test]
    fn a_user_network_is_virtio_ipv4_only() {
        let mut c = cfg();
        c.user_net = true;
        let argv: Vec<String> = Qemu::default()
            .command(&c)
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = argv.join(" ");
        assert!(
            joined.contains(
                "-netdev user,id=net0,ipv6=off,net=10.0.2.0/24,host=10.0.2.2,dns=10.0.2.3"
            ),
            "{joined}"
        );
        assert!(joined.contains("virtio-net-pci,netdev=net0"), "{joined}");
        assert!(
            !joined.contains("hostfwd") && !joined.contains("tftp"),
            "{joined}"
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut c = cfg();
        c.shares[0].tag = "a tag".into();
        assert!(Qemu::default().command(&c).is_err());
        let mut c = cfg();
        c.vcpus = 0;
        assert!(Qemu::default().command(&c).is_err());
    }
}
