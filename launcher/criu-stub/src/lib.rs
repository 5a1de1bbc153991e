//! A stand-in for the `rust-criu` crate that libcontainer links for
//! checkpoint and restore, which agentctl never does.
//!
//! The real crate generates and compiles CRIU's protobuf schema at build
//! time (protobuf twice, once for the build host, its code generator and
//! parser): about 45 s of CPU in a clean release build of agentctl, for
//! code no path reaches. This crate has the part of its API libcontainer
//! 0.7.0 calls, and [`Criu::new`] always fails, so a checkpoint that were
//! ever asked for would be refused with [`CriuError`]'s message, never run
//! half-built. The workspace's `[patch.crates-io]` puts it in place; a
//! libcontainer upgrade that calls more of the API fails to compile here
//! first.

use std::fmt;
use std::os::unix::io::RawFd;

/// How CRIU treats the container's cgroups (libcontainer keeps one in its
/// checkpoint options).
#[derive(Clone, Debug)]
pub enum CgMode {
    IGNORE = 0,
    NONE = 1,
    PROPS = 2,
    SOFT = 3,
    FULL = 4,
    STRICT = 5,
    DEFAULT = 6,
}

impl CgMode {
    /// The mode of a number as CRIU writes it; unknown numbers are DEFAULT.
    pub fn from(value: i32) -> CgMode {
        match value {
            0 => Self::IGNORE,
            1 => Self::NONE,
            2 => Self::PROPS,
            3 => Self::SOFT,
            4 => Self::FULL,
            5 => Self::STRICT,
            _ => Self::DEFAULT,
        }
    }
}

/// The one error: checkpointing is not part of this build.
#[derive(Debug)]
pub struct CriuError;

impl fmt::Display for CriuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("agentctl is built without CRIU: checkpoint and restore are not supported")
    }
}

impl std::error::Error for CriuError {}

/// Never made: [`Criu::new`] refuses.
pub struct Criu {
    _never: (),
}

impl Criu {
    pub fn new() -> Result<Self, CriuError> {
        Err(CriuError)
    }

    pub fn get_criu_version(&mut self) -> Result<u32, CriuError> {
        Err(CriuError)
    }

    pub fn dump(&mut self) -> Result<(), CriuError> {
        Err(CriuError)
    }

    pub fn restore(&mut self) -> Result<(), CriuError> {
        Err(CriuError)
    }

    // The options libcontainer sets before dump or restore. Unreachable
    // (there is no Criu to call them on); kept so its code compiles.
    pub fn set_pid(&mut self, _: i32) {}
    pub fn set_images_dir_fd(&mut self, _: RawFd) {}
    pub fn set_work_dir_fd(&mut self, _: RawFd) {}
    pub fn set_log_level(&mut self, _: i32) {}
    pub fn set_log_file(&mut self, _: String) {}
    pub fn set_external_mount(&mut self, _: String, _: String) {}
    pub fn add_external(&mut self, _: String) {}
    pub fn set_orphan_pts_master(&mut self, _: bool) {}
    pub fn set_root(&mut self, _: String) {}
    pub fn set_leave_running(&mut self, _: bool) {}
    pub fn set_ext_unix_sk(&mut self, _: bool) {}
    pub fn set_shell_job(&mut self, _: bool) {}
    pub fn set_tcp_established(&mut self, _: bool) {}
    pub fn set_file_locks(&mut self, _: bool) {}
    pub fn set_manage_cgroups(&mut self, _: bool) {}
    pub fn cgroups_mode(&mut self, _: CgMode) {}
    pub fn set_link_remap(&mut self, _: bool) {}
}

/// CRIU's key for an external namespace: "extRoot" + the name capitalized +
/// "NS", as runc spells it.
pub fn criu_ns_to_key(name: &str) -> String {
    let mut chars = name.chars();
    let first: String = chars
        .next()
        .map(|c| c.to_uppercase().collect())
        .unwrap_or_default();
    format!("extRoot{first}{}NS", chars.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_checkpointed() {
        let e = Criu::new().err().expect("Criu::new refuses");
        assert!(e.to_string().contains("without CRIU"), "{e}");
    }

    #[test]
    fn namespace_keys_are_runcs() {
        assert_eq!(criu_ns_to_key("net"), "extRootNetNS");
        assert_eq!(criu_ns_to_key(""), "extRootNS");
    }
}
