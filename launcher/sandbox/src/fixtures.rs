//! A fixed [`SandboxSpec`] for tests of the backends' translations: the
//! same plan, so their snapshots can be compared. Only built with the
//! `fixtures` feature.

use std::path::PathBuf;

use policy::NetworkMode;
use policy::env::{EnvSource, Redacted};

use crate::SandboxSpec;
use crate::spec::{
    EnvEntry, Identity, LimitsPlan, MaskKind, MaskReason, Masked, MountPlan, MountPurpose,
    MountSource, ScanStats, SessionId,
};

/// A session of user `dev` (1000:1000) in `/home/dev/project`, on the host
/// root filesystem, with `.env` and `/etc/shadow` masked.
pub fn spec(network: NetworkMode) -> SandboxSpec {
    let bind =
        |dest: &str, src: &str, writable: bool, purpose: MountPurpose, file: bool| MountPlan {
            destination: dest.into(),
            source: MountSource::Bind {
                path: src.into(),
                file,
            },
            writable,
            purpose,
        };
    SandboxSpec {
        session: SessionId::parse("0123456789abcdef0123456789abcdef").unwrap(),
        profile: "generic".into(),
        profile_chain: vec!["builtin:generic".into()],
        policy_sha256: "0".repeat(64),
        command: vec!["sh".into(), "-c".into(), "echo hi".into()],
        cwd: "/home/dev/project".into(),
        workspace: "/home/dev/project".into(),
        hostname: "agentctl-0123456789ab".into(),
        env: vec![
            EnvEntry {
                name: "HOME".into(),
                value: Redacted("/home/dev".into()),
                source: EnvSource::Base,
            },
            EnvEntry {
                name: "PATH".into(),
                value: Redacted("/usr/bin:/bin".into()),
                source: EnvSource::Base,
            },
        ],
        env_refused: vec![],
        image: None,
        backend: None,
        rootfs_binds: vec!["/usr".into(), "/etc".into()],
        rootfs_symlinks: vec![(PathBuf::from("/bin"), PathBuf::from("usr/bin"))],
        mounts: vec![
            bind("/usr", "/usr", false, MountPurpose::Rootfs, false),
            bind("/etc", "/etc", false, MountPurpose::Rootfs, false),
            MountPlan {
                destination: "/tmp".into(),
                source: MountSource::Tmpfs {
                    size: None,
                    mode: 0o1777,
                },
                writable: true,
                purpose: MountPurpose::Tmp,
            },
            MountPlan {
                destination: "/home/dev".into(),
                source: MountSource::Tmpfs {
                    size: None,
                    mode: 0o700,
                },
                writable: true,
                purpose: MountPurpose::FreshHome,
            },
            bind(
                "/home/dev/.gitconfig",
                "/home/dev/.gitconfig",
                false,
                MountPurpose::HomeGrant,
                true,
            ),
            bind(
                "/home/dev/project",
                "/home/dev/project",
                true,
                MountPurpose::Workspace,
                false,
            ),
        ],
        masked: vec![
            Masked {
                path: "/etc/shadow".into(),
                kind: MaskKind::File,
                reason: MaskReason::System {
                    what: "password hashes".into(),
                },
            },
            Masked {
                path: "/home/dev/project/.env".into(),
                kind: MaskKind::File,
                reason: MaskReason::NameRule {
                    rule: "dotenv file".into(),
                },
            },
        ],
        symlink_aliases: vec![],
        host_run: vec![],
        prepare: Vec::new(),
        skipped: vec![],
        notes: vec![],
        docker: false,
        network,
        network_allow: Vec::new(),
        network_reason: None,
        limits: LimitsPlan {
            pids: 512,
            memory_bytes: 1 << 30,
            cpu_millis: 1500,
            containers: 20,
        },
        identity: Identity {
            host_uid: 1000,
            host_gid: 1000,
            invoker_uid: 1000,
            user_name: "dev".into(),
            home: "/home/dev".into(),
        },
        seccomp: policy::seccomp::default_profile(),
        masked_proc_paths: policy::secrets::PROC_MASKED
            .iter()
            .map(PathBuf::from)
            .collect(),
        readonly_proc_paths: policy::secrets::PROC_READONLY
            .iter()
            .map(PathBuf::from)
            .collect(),
        scan: ScanStats::default(),
    }
}
