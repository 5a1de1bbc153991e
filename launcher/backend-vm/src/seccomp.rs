//! The session's seccomp profile compiled to classic BPF on the host (by
//! libseccomp, as the native backend's runtime does), for the guest agent
//! to install: the guest carries no libseccomp, and the filter it applies
//! is exactly the one a container of the same plan gets.

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use policy::seccomp::{Action, Op, SeccompProfile};

#[derive(Debug, thiserror::Error)]
#[error("cannot compile the seccomp filter: {0}")]
pub struct SeccompError(String);

fn action(a: Action) -> ScmpAction {
    match a {
        Action::Allow => ScmpAction::Allow,
        Action::Errno(e) => ScmpAction::Errno(e as i32),
    }
}

/// The filter as `struct sock_filter` records. Calls of another
/// architecture (32-bit `int 0x80`) kill the process, as in containers.
pub fn to_bpf(profile: &SeccompProfile) -> Result<Vec<u8>, SeccompError> {
    let err = |e: libseccomp::error::SeccompError| SeccompError(e.to_string());
    let default = ScmpAction::Errno(profile.default_errno as i32);
    let mut ctx = ScmpFilterContext::new(default).map_err(err)?;
    ctx.set_act_badarch(ScmpAction::KillProcess).map_err(err)?;
    // no_new_privs is the guest agent's to set (it sets it just before).
    ctx.set_ctl_nnp(false).map_err(err)?;
    let native = ScmpArch::native();
    for rule in &profile.rules {
        let act = action(rule.action);
        if act == default {
            continue;
        }
        for name in &rule.names {
            // A name this libseccomp does not know is a call this
            // architecture does not have: nothing to allow.
            let Ok(call) = ScmpSyscall::from_name_by_arch(name, native) else {
                continue;
            };
            let conds: Vec<ScmpArgCompare> = rule
                .args
                .iter()
                .map(|a| {
                    let op = match a.op {
                        Op::Eq => ScmpCompareOp::Equal,
                        Op::Ne => ScmpCompareOp::NotEqual,
                        Op::Lt => ScmpCompareOp::Less,
                        Op::MaskedEq { mask } => ScmpCompareOp::MaskedEqual(mask),
                    };
                    ScmpArgCompare::new(a.index, op, a.value)
                })
                .collect();
            let r = if conds.is_empty() {
                ctx.add_rule(act, call)
            } else {
                ctx.add_rule_conditional(act, call, &conds)
            };
            r.map_err(|e| SeccompError(format!("{name}: {e}")))?;
        }
    }
    let mut file = tempfile_in_memory()?;
    ctx.export_bpf(&file).map_err(err)?;
    use std::io::{Read, Seek};
    file.rewind().map_err(|e| SeccompError(e.to_string()))?;
    let mut bpf = Vec::new();
    file.read_to_end(&mut bpf)
        .map_err(|e| SeccompError(e.to_string()))?;
    if bpf.is_empty() || !bpf.len().is_multiple_of(8) {
        return Err(SeccompError(format!(
            "libseccomp wrote {} bytes",
            bpf.len()
        )));
    }
    Ok(bpf)
}

/// A memfd: export_bpf writes to a descriptor.
fn tempfile_in_memory() -> Result<std::fs::File, SeccompError> {
    // SAFETY: a NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"agentctl-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(SeccompError(format!(
            "memfd_create: {}",
            std::io::Error::last_os_error()
        )));
    }
    use std::os::fd::FromRawFd;
    // SAFETY: a descriptor just made, owned by nobody else.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_profile_compiles_to_whole_records() {
        let bpf = to_bpf(&policy::seccomp::default_profile()).unwrap();
        assert!(bpf.len().is_multiple_of(8));
        // Far more than a trivial filter: one check per allowed call.
        assert!(bpf.len() / 8 > 200, "{} records", bpf.len() / 8);
    }
}
